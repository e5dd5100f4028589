// ext4 → tar, witnessed by tar-stream (an independent parser), GNU tar (list and extract) and, as root,
// by the kernel: what it wrote into one of our mkfs filesystems must come back out entry by entry.
import { createHash } from 'node:crypto';
import { mkdir, symlink, writeFile, link, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { execFile } from 'node:child_process';
import fc from 'fast-check';
import { extract, type Header } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  makeTar,
  mountLoop,
  oracle,
  pseudoRandomBytes,
  rootWithLoop,
  run,
  snapshotTree,
  tempDir,
  type FsEntry,
  type TarSpec,
} from '@lcow/testkit';
import { Ext4Fs, convert, exportChunks, exportTar, mkfs } from '../src/index.ts';
import { encodeTarHeader } from '../src/tar/encode.ts';
import { compareTrees } from './helpers.ts';

const execFileP = promisify(execFile);
const hasTar = oracle('tar');
const asRoot = oracle('getfattr') && rootWithLoop();
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-export-');
});
afterAll(() => dir?.cleanup());

interface Parsed {
  header: Header;
  body: Buffer;
}

/** Parses a tar with tar-stream. */
async function parseTar(bytes: Uint8Array): Promise<Map<string, Parsed>> {
  const out = new Map<string, Parsed>();
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (header, stream, next) => {
      const parts: Buffer[] = [];
      stream.on('data', (c: unknown) => void parts.push(c as Buffer));
      stream.on('end', () => {
        out.set(header.name.replace(/\/$/, ''), { header, body: Buffer.concat(parts) });
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  Readable.from([Buffer.from(bytes)]).pipe(ex);
  await done;
  return out;
}

async function exportBytes(fs: Ext4Fs, opts: Parameters<typeof exportChunks>[1] = {}): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of exportChunks(fs, opts)) parts.push(c);
  return Buffer.concat(parts);
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('round trip: tar → our writer → our export (property)', () => {
  const name = fc.stringMatching(/^[a-zA-Z0-9_-][a-zA-Z0-9._ -]{0,14}$/).filter((s) => !s.startsWith('.wh.'));
  type Kind =
    | { kind: 'file'; body: Uint8Array; mode: number; xattr: string | null }
    | { kind: 'dir'; mode: number; opaque: boolean }
    | { kind: 'symlink'; target: string }
    | { kind: 'fifo' | 'chr' | 'blk'; major: number; minor: number }
    | { kind: 'whiteout' }
    | { kind: 'hardlink' };
  const kind: fc.Arbitrary<Kind> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('file' as const),
        body: fc.uint8Array({ maxLength: 6000 }),
        mode: fc.integer({ min: 1, max: 0o7777 }),
        xattr: fc.option(fc.stringMatching(/^[a-z]{1,300}$/)),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('dir' as const),
        mode: fc.integer({ min: 0o500, max: 0o7777 }),
        opaque: fc.boolean(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('symlink' as const), target: fc.stringMatching(/^[a-z/.]{1,150}$/) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constantFrom('fifo' as const, 'chr' as const, 'blk' as const),
        major: fc.integer({ min: 1, max: 4095 }),
        minor: fc.nat(1 << 19),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('whiteout' as const) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('hardlink' as const) }) },
  );
  const tree = fc.uniqueArray(
    fc.tuple(
      fc.array(name, { minLength: 1, maxLength: 4 }),
      kind,
      fc.record({ sec: fc.integer({ min: 0, max: 2 ** 33 }), nsec: fc.integer({ min: 0, max: 999_999_999 }) }),
      fc.oneof(fc.nat(70000), fc.integer({ min: 2 ** 21, max: 2 ** 31 })),
    ),
    { selector: ([p]) => p.join('/').toLowerCase(), maxLength: 40 },
  );

  it('every entry comes back: type, mode, owner, size, contents, target, devices, xattrs, mtime to the ns, whiteouts, links', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(tree, fc.boolean(), async (items, inlineData) => {
        // A consistent tree: parents are directories declared first; hard links point to an earlier file.
        const specs: TarSpec[] = [];
        const kinds = new Map<string, Kind['kind']>();
        const files: string[] = [];
        const want = new Map<
          string,
          {
            type: string;
            mode?: number;
            uid: number;
            mtime: { sec: number; nsec: number };
            sha?: string;
            target?: string;
            dev?: [number, number];
            xattr?: string | null;
            linkTo?: string;
          }
        >();
        for (const [parts, k, mtime, uid] of items) {
          const p = parts.join('/');
          if (parts.slice(0, -1).some((_, i) => kinds.get(parts.slice(0, i + 1).join('/')) !== 'dir')) continue;
          if (kinds.has(p)) continue;
          const common = { path: p, uid, gid: uid, mtime: mtime.sec, mtimeNs: mtime.nsec };
          if (k.kind === 'file') {
            specs.push({
              ...common,
              body: k.body,
              mode: k.mode,
              pax: k.xattr ? { 'SCHILY.xattr.user.t': k.xattr } : {},
            });
            want.set(p, { type: 'file', mode: k.mode, uid, mtime, sha: sha(k.body), xattr: k.xattr });
            files.push(p);
          } else if (k.kind === 'dir') {
            specs.push({ ...common, type: 'dir', mode: k.mode });
            want.set(p, { type: 'dir', mode: k.mode, uid, mtime });
            if (k.opaque) {
              specs.push({ path: `${p}/.wh..wh..opq`, body: '' });
              want.set(`${p}/.wh..wh..opq`, { type: 'file', uid: 0, mtime, sha: sha(new Uint8Array()) });
            }
          } else if (k.kind === 'symlink') {
            specs.push({ ...common, type: 'symlink', linkname: k.target });
            want.set(p, { type: 'symlink', uid, mtime, target: k.target });
          } else if (k.kind === 'whiteout') {
            const wh = [...parts.slice(0, -1), `.wh.${parts.at(-1)}`].join('/');
            specs.push({ ...common, path: wh, body: '' });
            want.set(wh, { type: 'file', mode: 0o600, uid, mtime, sha: sha(new Uint8Array()) });
          } else if (k.kind === 'hardlink') {
            const to = files[files.length - 1];
            if (!to) continue;
            specs.push({ ...common, type: 'link', linkname: to });
            want.set(p, { ...want.get(to)!, linkTo: to });
          } else {
            specs.push({ ...common, type: k.kind, mode: 0o640, devmajor: k.major, devminor: k.minor });
            want.set(p, { type: k.kind, mode: 0o640, uid, mtime, dev: [k.major, k.minor] });
          }
          kinds.set(p, k.kind);
        }
        const tarPath = join(dir.path, `rt${n}.tar`);
        await writeFile(tarPath, makeTar(specs));
        const image = join(dir.path, `rt${n++}.img`);
        await convert(tarPath, image, { convertWhiteouts: true, inlineData });
        const fs = await Ext4Fs.open(image);
        const out = await exportBytes(fs);
        await fs.close();
        const got = await parseTar(out);
        const links = [...got.values()].filter((e) => e.header.type === 'link');
        expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
        for (const [p, w] of want) {
          const g = got.get(p)!;
          const h = g.header;
          const pax = h.pax as Record<string, string> | undefined;
          const paxTime = pax?.mtime;
          const [sec, frac = ''] = (paxTime ?? String(Math.floor(h.mtime!.getTime() / 1000))).split('.');
          if (!p.endsWith('.wh..wh..opq')) {
            // tar-stream applies only path and linkpath from pax records; the others are read here.
            const uid = pax?.uid ? Number(pax.uid) : h.uid;
            expect({ p, sec: Number(sec), nsec: Number(frac.padEnd(9, '0')), uid }).toEqual({
              p,
              sec: w.mtime.sec,
              nsec: w.mtime.nsec,
              uid: w.uid,
            });
          }
          if (w.mode !== undefined && h.type !== 'link') expect({ p, mode: h.mode }).toEqual({ p, mode: w.mode });
          if (w.linkTo) {
            // One of the group is the file, the others link to it: compare through the group.
            const t = h.type === 'link' ? got.get(h.linkname!)! : g;
            expect(sha(t.body)).toBe(w.sha);
            continue;
          }
          if (w.type === 'file') {
            // A hard link's attributes travel with the entry it links to.
            const file = h.type === 'link' ? got.get(h.linkname!)! : g;
            expect({ p, sha: sha(file.body) }).toEqual({ p, sha: w.sha });
            const filePax = file.header.pax as Record<string, string> | undefined;
            if (w.xattr) expect(filePax?.['SCHILY.xattr.user.t']).toBe(w.xattr);
          } else if (w.type === 'dir') expect(h.type).toBe('directory');
          else if (w.type === 'symlink') expect(h).toMatchObject({ type: 'symlink', linkname: w.target });
          else if (w.dev) {
            expect(h).toMatchObject({
              type: w.type === 'chr' ? 'character-device' : w.type === 'blk' ? 'block-device' : 'fifo',
            });
            if (w.type !== 'fifo') expect([h.devmajor, h.devminor]).toEqual(w.dev);
          }
        }
        for (const l of links) expect(got.get(l.header.linkname!)?.header.type).toBe('file');
      }),
      { numRuns: 100 },
    );
  }, 600_000);

  it.skipIf(!hasTar)('GNU tar lists and extracts the export (long names, big ids, pax times and xattrs)', async () => {
    const long = `${'d'.repeat(120)}/${'e'.repeat(120)}/${'f'.repeat(200)}`;
    const specs: TarSpec[] = [
      { path: long.split('/').slice(0, 1).join('/'), type: 'dir' },
      { path: long.split('/').slice(0, 2).join('/'), type: 'dir' },
      { path: long, body: 'deep and long', uid: 3_000_000, gid: 4_000_000, mtimeNs: 123456789 },
      { path: 'link', type: 'symlink', linkname: 'x'.repeat(300) },
      { path: 'attr', body: 'a', pax: { 'SCHILY.xattr.user.big': 'v'.repeat(2000) } },
    ];
    const tarPath = join(dir.path, 'gnu.tar');
    await writeFile(tarPath, makeTar(specs));
    const image = join(dir.path, 'gnu.img');
    await convert(tarPath, image, {});
    const fs = await Ext4Fs.open(image);
    const out = join(dir.path, 'gnu-out.tar');
    await writeFile(out, await exportBytes(fs));
    await fs.close();
    const listing = await run('tar', ['--numeric-owner', '--full-time', '-tvf', out]);
    expect(listing).toContain(long);
    expect(listing).toMatch(/3000000\/4000000/);
    expect(listing).toContain(`link -> ${'x'.repeat(300)}`);
    const x = join(dir.path, 'gnu-x');
    await mkdir(x);
    await run('tar', ['--xattrs', '--xattrs-include=*', '-xf', out, '-C', x]);
    expect(await readFile(join(x, long), 'utf8')).toBe('deep and long');
    expect((await run('getfattr', ['--only-values', '-n', 'user.big', join(x, 'attr')])).length).toBe(2000);
  });

  it('pax records where ustar cannot hold a value', () => {
    const h = encodeTarHeader({
      path: Buffer.from('f'),
      type: '0',
      mode: 0o644,
      uid: 1,
      gid: 1,
      size: 9 * 2 ** 30,
      mtime: { sec: -5, nsec: 500_000_000 },
    });
    const text = Buffer.from(h).toString('latin1');
    expect(text).toContain(' size=9663676416\n');
    expect(text).toContain(' mtime=-4.5\n');
    expect(h.length).toBe(3 * 512);
  });
});

describe.skipIf(!asRoot || !hasTar)('what the kernel wrote comes back', () => {
  it('mkfs → mount rw → a container tree (whiteouts, opaque dir, links, xattrs, ns times) → unmount → export → GNU tar extract: the same tree', async () => {
    const image = join(dir.path, 'kern.img');
    await mkfs(image, { size: 1 << 30 });
    const mnt = join(dir.path, 'kern-mnt');
    await mkdir(mnt);
    let unmount = await mountLoop(image, mnt);
    try {
      const u = join(mnt, 'upper');
      await mkdir(join(u, 'etc/opaque'), { recursive: true });
      await mkdir(join(mnt, 'work'));
      await writeFile(join(u, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
      await writeFile(join(u, 'etc/opaque/kept'), 'k');
      await writeFile(join(u, 'big.bin'), pseudoRandomBytes(5 << 20, 11));
      await link(join(u, 'big.bin'), join(u, 'big.hard'));
      await symlink('etc/passwd', join(u, 'pw'));
      await writeFile(join(u, 'n'.repeat(250)), 'long');
      await execFileP('mknod', [join(u, 'etc/deleted'), 'c', '0', '0']);
      await execFileP('mknod', [join(u, 'ttyS9'), 'c', '4', '73']);
      await execFileP('mkfifo', [join(u, 'pipe')]);
      await execFileP('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(u, 'etc/opaque')]);
      await execFileP('setfattr', [
        '-n',
        'security.capability',
        '-v',
        '0x0100000200200000000000000000000000000000',
        join(u, 'big.bin'),
      ]);
      await execFileP('setfattr', ['-n', 'user.note', '-v', 'hello', join(u, 'etc/passwd')]);
      await execFileP('chown', ['-h', '1000:1000', join(u, 'pw')]);
      await execFileP('touch', ['-h', '-d', '2023-04-05 06:07:08.123456789', join(u, 'etc/passwd')]);
    } finally {
      await unmount();
    }
    await run('e2fsck', ['-fn', image]);
    unmount = await mountLoop(image, mnt, { readOnly: true });
    let kernel: Map<string, FsEntry>;
    try {
      kernel = await snapshotTree(join(mnt, 'upper'));
    } finally {
      await unmount();
    }
    // What the OCI form of that tree is: whiteout devices become .wh. files, the opaque xattr a marker file.
    const want = new Map<string, FsEntry>();
    for (const [p, e] of kernel) {
      if (e.type === 'chr' && e.rdev?.[0] === 0 && e.rdev[1] === 0) {
        const i = p.lastIndexOf('/');
        const wh = `${p.slice(0, i + 1)}.wh.${p.slice(i + 1)}`;
        want.set(wh, { ...e, type: 'file', mode: 0o600, size: 0, sha256: sha(new Uint8Array()), rdev: null, nlink: 1 });
        continue;
      }
      const xattrs = { ...e.xattrs };
      if (xattrs['trusted.overlay.opaque']) {
        delete xattrs['trusted.overlay.opaque'];
        want.set(`${p}/.wh..wh..opq`, {
          type: 'file',
          mode: e.mode & 0o777,
          uid: e.uid,
          gid: e.gid,
          size: 0,
          sha256: sha(new Uint8Array()),
          target: null,
          rdev: null,
          xattrs: {},
          mtimeNs: e.mtimeNs,
          nlink: 1,
        });
      }
      want.set(p, { ...e, xattrs });
    }
    const fs = await Ext4Fs.open(image);
    const tarFile = join(dir.path, 'kern.tar');
    const chunks: Buffer[] = [];
    for await (const c of exportTar(fs, { root: 'upper' })) chunks.push(c as Buffer);
    await fs.close();
    await writeFile(tarFile, Buffer.concat(chunks));
    const x = join(dir.path, 'kern-x');
    await mkdir(x);
    await run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-p', '-xf', tarFile, '-C', x]);
    const got = await snapshotTree(x);
    compareTrees(got, want, { nlink: true });
  });
});
