// The reader on hostile bytes: systematic corruption of real images (mkfs.ext4 in several feature sets,
// our own writer's and mkfs's output) in every kind of metadata, random flips anywhere, and a fast-check
// fuzz target. Every case must end in a result or an Ext4Error, quickly, without large allocations.
import { execFile } from 'node:child_process';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, oracle, pseudoRandomBytes, run, tempDir } from '@lcow/testkit';
import { Ext4Fs, convert, memorySource, mkfs } from '../src/index.ts';
import { exercise, type Outcome } from './hostile.ts';

const execFileP = promisify(execFile);
const ready = oracle('mkfs.ext4') && oracle('debugfs') && oracle('dumpe2fs') && oracle('e2fsck');
const MAX_CASE_MS = 5000;
let dir: { path: string; cleanup: () => Promise<void> };

interface Base {
  name: string;
  bytes: Uint8Array;
  /** Byte ranges of each kind of metadata, found with dumpe2fs and debugfs. */
  regions: Record<string, [number, number][]>;
}
const bases: Base[] = [];

/** A small tree that gives every metadata kind: many entries (htree after e2fsck -D), xattrs, links, holes. */
async function smallTree(root: string): Promise<void> {
  await mkdir(join(root, 'd/e'), { recursive: true });
  await mkdir(join(root, 'many'));
  for (let i = 0; i < 300; i++) await writeFile(join(root, 'many', `name-${i}-${'x'.repeat(i % 40)}`), String(i));
  await writeFile(join(root, 'small'), 'small file');
  await writeFile(join(root, 'tiny'), 'tiny');
  await writeFile(join(root, 'big.bin'), pseudoRandomBytes(300_000, 3));
  await writeFile(join(root, 'd/e/f'), 'nested');
  await symlink('small', join(root, 'fast'));
  await symlink('d/e/'.repeat(30) + 'f', join(root, 'slow'));
  await execFileP('setfattr', ['-n', 'user.a', '-v', 'A', join(root, 'small')]);
  await execFileP('setfattr', ['-n', 'user.block', '-v', `0x${'42'.repeat(600)}`, join(root, 'big.bin')]);
}

/** Finds the metadata of an image: superblock, descriptors, inode tables, directory, xattr and tree blocks. */
async function regionsOf(image: string): Promise<Record<string, [number, number][]>> {
  const { stdout: dump } = await execFileP('dumpe2fs', [image], { maxBuffer: 1 << 26 });
  const bs = Number(/Block size:\s+(\d+)/.exec(dump)![1]);
  const blk = (b: number): [number, number] => [b * bs, (b + 1) * bs];
  const gdt = /Group descriptors? at (\d+)-(\d+)/.exec(dump)!;
  const itable = /Inode table at (\d+)-(\d+)/.exec(dump)!;
  const regions: Record<string, [number, number][]> = {
    superblock: [[1024, 2048]],
    descriptors: [[Number(gdt[1]) * bs, (Number(gdt[2]) + 1) * bs]],
    // The first 64 inodes hold everything these small trees use.
    inodes: [[Number(itable[1]) * bs, Number(itable[1]) * bs + 64 * 256]],
    directories: [],
    xattrs: [],
    trees: [],
  };
  const paths = ['/', '/d', '/d/e', '/many', '/small', '/big.bin', '/slow', '/lost+found'];
  const cmds = join(dir.path, 'stat.cmds');
  await writeFile(cmds, paths.map((p) => `stat "${p}"`).join('\n') + '\n');
  const { stdout } = await execFileP('debugfs', ['-f', cmds, image], { maxBuffer: 1 << 26 });
  for (const part of stdout.split(/^debugfs: /m).slice(1)) {
    const isDir = /Type: directory/.test(part);
    const acl = /File ACL: (\d+)/.exec(part);
    if (acl && acl[1] !== '0') regions.xattrs!.push(blk(Number(acl[1])));
    for (const m of part.matchAll(/\((ETB\d*|IND|DIND|TIND)\):(\d+)/g)) regions.trees!.push(blk(Number(m[2])));
    if (isDir) {
      for (const m of part.matchAll(/\(\d+(?:-\d+)?\):(\d+)(?:-(\d+))?/g)) {
        const a = Number(m[1]);
        const b = m[2] ? Number(m[2]) : a;
        for (let x = a; x <= b && x < a + 8; x++) regions.directories!.push(blk(x));
      }
    }
  }
  return regions;
}

async function addBase(name: string, image: string): Promise<void> {
  await run('e2fsck', ['-fn', image]);
  bases.push({ name, bytes: new Uint8Array(await readFile(image)), regions: await regionsOf(image) });
}

const outcomes: Record<string, number> = {};
let cases = 0;
let slowest = 0;
function record(o: Outcome): void {
  cases++;
  outcomes[o.result] = (outcomes[o.result] ?? 0) + 1;
  slowest = Math.max(slowest, o.ms);
  expect(o.ms, o.message).toBeLessThan(MAX_CASE_MS);
}

beforeAll(async () => {
  dir = await tempDir('lcow-corrupt-');
  if (!ready) return;
  const tree = join(dir.path, 'tree');
  await mkdir(tree);
  await smallTree(tree);
  const combos: [string, string[]][] = [
    ['ext4 metadata_csum', ['-t', 'ext4']],
    ['ext2 block maps 1K', ['-t', 'ext2', '-b', '1024']],
    ['ext4 inline_data', ['-t', 'ext4', '-O', 'inline_data']],
    ['ext4 128-byte inodes, uninit_bg', ['-t', 'ext4', '-I', '128', '-O', '^metadata_csum,uninit_bg,^64bit']],
  ];
  for (const [name, args] of combos) {
    const image = join(dir.path, `${bases.length}.img`);
    await run('mkfs.ext4', ['-q', '-F', ...args, '-d', tree, image, '8M']);
    // e2fsck -D indexes the directories (htree), so corruption reaches hash-tree nodes too.
    await execFileP('e2fsck', ['-fyD', image]).catch(() => {});
    await addBase(name, image);
  }
  const ours = join(dir.path, 'ours.img');
  const specs = [
    ...Array.from({ length: 200 }, (_, i) => ({ path: `many/n${i}`, body: String(i) })),
    { path: 'x/.wh.gone', body: '' },
    { path: 'big', body: pseudoRandomBytes(100_000, 4) },
    { path: 'link', type: 'symlink' as const, linkname: 'big' },
    { path: 'attr', body: 'a', pax: { 'SCHILY.xattr.user.k': 'v'.repeat(300) } },
  ];
  await writeFile(join(dir.path, 'ours.tar'), makeTar(specs));
  await convert(join(dir.path, 'ours.tar'), ours, { convertWhiteouts: true });
  await addBase('our writer', ours);
  const empty = join(dir.path, 'mkfs.img');
  await mkfs(empty, { size: 16 << 20, uuid: '0f0e0d0c-0b0a-4908-8706-050403020100', timestamp: new Date(0) });
  await addBase('our mkfs', empty);
}, 600_000);

afterAll(async () => {
  if (cases > 0)
    console.log(`[corruption] ${cases} cases: ${JSON.stringify(outcomes)}; slowest ${slowest.toFixed(0)} ms`);
  await dir?.cleanup();
});

describe.skipIf(!ready)('corrupted real images', () => {
  it('the pristine bases read completely', async () => {
    // Each kind of metadata is present in some base, so the targeted cases below reach it.
    for (const kind of ['trees', 'xattrs', 'directories'])
      expect(bases.filter((b) => b.regions[kind]!.length > 0).length, kind).toBeGreaterThan(1);
    for (const b of bases) {
      const o = await exercise(b.bytes, 'strict', b.name);
      expect(o, b.name).toMatchObject({ result: 'ok' });
      expect(o.entries, b.name).toBeGreaterThan(b.name === 'our mkfs' ? 1 : 200);
      for (const [kind, list] of Object.entries(b.regions)) {
        if (b.name !== 'our mkfs' && ['superblock', 'descriptors', 'inodes', 'directories'].includes(kind))
          expect(list.length, `${b.name} ${kind}`).toBeGreaterThan(0);
      }
    }
  });

  it('targeted corruption of every metadata kind, with checksums verified and ignored', async () => {
    const SMASH = [0x00, 0xff, 0x7f, 0x80, 0x01];
    let seed = 1;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed;
    };
    const start = cases;
    for (const b of bases) {
      for (const [kind, ranges] of Object.entries(b.regions)) {
        if (ranges.length === 0) continue;
        for (let i = 0; i < 40; i++) {
          const img = b.bytes.slice();
          const [lo, hi] = ranges[rand() % ranges.length]!;
          const at = lo + (rand() % (hi - lo));
          if (i % 4 === 0)
            img[at]! ^= 1 << (rand() % 8); // one bit
          else if (i % 4 === 1)
            img[at] = rand() & 0xff; // one byte
          else if (i % 4 === 2)
            img.fill(SMASH[rand() % SMASH.length]!, at & ~3, (at & ~3) + 4); // a field
          else for (let k = 0; k < 16; k++) img[lo + (rand() % (hi - lo))] = rand() & 0xff; // a burst
          for (const policy of ['strict', 'off'] as const)
            record(await exercise(img, policy, `${b.name} ${kind} #${i}`));
        }
      }
    }
    expect(cases - start).toBeGreaterThan(1000);
  }, 600_000);

  it('random flips anywhere and truncations', async () => {
    for (const b of bases) {
      for (let i = 0; i < 40; i++) {
        const img = b.bytes.slice();
        const noise = pseudoRandomBytes(64, i + 1);
        for (let k = 0; k < 32; k++) {
          const at = ((noise[2 * k]! << 16) | (noise[2 * k + 1]! << 8) | noise[k]!) % img.length;
          img[at] = noise[(k + 7) % 64]!;
        }
        record(await exercise(img, 'off', `${b.name} random #${i}`));
      }
      for (const len of [0, 1000, 2048, 4096, 8192, 65536, b.bytes.length >> 1, b.bytes.length - 4096]) {
        record(await exercise(b.bytes.slice(0, len), 'strict', `${b.name} truncated to ${len}`));
      }
    }
  }, 600_000);

  it('fuzz: mutated images read or fail with Ext4Error (fast-check)', async () => {
    const base = bases[0]!;
    const meta = Object.values(base.regions).flat();
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: meta.length - 1 }), fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 24,
        }),
        fc.constantFrom('strict' as const, 'off' as const),
        async (muts, policy) => {
          const img = base.bytes.slice();
          for (const [r, off, v] of muts) {
            const [lo, hi] = meta[r]!;
            img[lo + (off % (hi - lo))] = v;
          }
          record(await exercise(img, policy));
        },
      ),
      { numRuns: 300 },
    );
  }, 600_000);

  it('corrupt size fields do not turn into allocations', async () => {
    const b = bases[0]!;
    const { inodes } = b.regions;
    const before = process.memoryUsage();
    for (const field of [4, 108, 28]) {
      // i_size_lo, i_size_high, i_blocks: 0xffffffff in every inode of the region.
      const img = b.bytes.slice();
      const [lo, hi] = inodes![0]!;
      for (let at = lo; at < hi; at += 256) img.fill(0xff, at + field, at + field + 4);
      record(await exercise(img, 'off', `inode field ${field}`));
    }
    // A superblock claiming 2^32 − 1 inodes and blocks on an 8 MiB image.
    const img = b.bytes.slice();
    img.fill(0xff, 1024, 1032);
    record(await exercise(img, 'off', 'huge counts'));
    const after = process.memoryUsage();
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(256 << 20);
  });
});

describe.skipIf(!ready)('open refuses what it cannot read', () => {
  it('names the feature: needs_recovery, unknown incompat bits, a non-ext4 file', async () => {
    const b = bases[0]!;
    const flag = (bit: number): Uint8Array => {
      const img = b.bytes.slice();
      img[1024 + 0x60]! |= bit & 0xff;
      img[1024 + 0x61]! |= (bit >> 8) & 0xff;
      img[1024 + 0x62]! |= (bit >> 16) & 0xff;
      return img;
    };
    const open = (img: Uint8Array) => Ext4Fs.open(memorySource(img, 'x.img'), { checksums: 'off' });
    await expect(open(flag(0x4))).rejects.toMatchObject({
      code: 'ERR_EXT4_UNSUPPORTED',
      message: expect.stringMatching(/needs_recovery/),
    });
    await expect(open(flag(0x40000))).rejects.toMatchObject({
      code: 'ERR_EXT4_UNSUPPORTED',
      message: expect.stringMatching(/0x40000/),
    });
    await expect(open(new Uint8Array(1 << 20))).rejects.toMatchObject({
      code: 'ERR_EXT4_CORRUPT',
      message: expect.stringMatching(/x\.img: no ext2\/3\/4 superblock/),
    });
    const bad = b.bytes.slice();
    bad[1024 + 0x78]! ^= 1; // a label byte: only the superblock checksum notices
    await expect(Ext4Fs.open(memorySource(bad, 'x.img'))).rejects.toMatchObject({
      code: 'ERR_EXT4_CORRUPT',
      message: expect.stringMatching(/superblock: checksum/),
    });
    const warned: string[] = [];
    const fs = await Ext4Fs.open(memorySource(bad), { checksums: 'warn', onWarning: (w) => warned.push(w.message) });
    await fs.close();
    expect(warned).toEqual([expect.stringMatching(/superblock: checksum/)]);
  });
});
