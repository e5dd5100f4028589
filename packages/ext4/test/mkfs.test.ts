// mkfs, witnessed by e2fsck, dumpe2fs, qemu-img and the kernel (mounted read-write, used, unmounted, checked).
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oracle, pseudoRandomBytes, rootWithLoop, run, snapshotTree, tempDir } from '@lcow/testkit';
import { openVhdx } from '@lcow/vhd';
import { Ext4Error, Ext4Fs, mkfs } from '../src/index.ts';
import { planLayout, BLOCKS_PER_GROUP } from '../src/mkfs/layout.ts';
import { compareTrees, readerTree } from './helpers.ts';

const GiB = 2 ** 30;
const hasE2fs = oracle('e2fsck') && oracle('dumpe2fs');
const hasQemu = oracle('qemu-img');
const asRoot = hasE2fs && rootWithLoop();
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-mkfs-');
});
afterAll(() => dir?.cleanup());

const FEATURES_CSUM =
  'ext_attr dir_index sparse_super2 filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum';

describe('layout', () => {
  it('allocations stay inside the filesystem, clear of superblock backups and of each other (property)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: 16 * 2 ** 20, max: 64 * GiB }), fc.integer({ min: 16 * 2 ** 20, max: 4 * 2 ** 40 })),
        fc.constantFrom(4096, 16384, 65536, 1 << 20),
        (size, ratio) => {
          let layout;
          try {
            layout = planLayout(size, ratio);
          } catch (e) {
            // Only a too-dense inode ratio may fail, and it says so.
            expect(e).toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringMatching(/inodeRatio/) });
            return;
          }
          const { blocks, groups, gdtBlocks } = layout;
          expect(blocks).toBeLessThanOrEqual(Math.floor(size / 4096));
          expect(groups).toBe(Math.ceil(blocks / BLOCKS_PER_GROUP));
          const runs: [number, number][] = [];
          let used = 0;
          for (const g of layout.group) {
            if (g.hasSuper) runs.push([g.first, g.first + 1 + gdtBlocks]);
            for (const e of g.used) {
              expect(e.start).toBeGreaterThanOrEqual(g.first);
              expect(e.start + e.count).toBeLessThanOrEqual(g.first + g.blocks);
              runs.push([e.start, e.start + e.count]);
              used += e.count;
            }
            used += g.hasSuper ? 1 + gdtBlocks : 0;
            expect(g.blockUninit && g.used.length > 0).toBe(false);
          }
          runs.sort((a, b) => a[0] - b[0]);
          for (let i = 1; i < runs.length; i++) expect(runs[i]![0]).toBeGreaterThanOrEqual(runs[i - 1]![1]);
          expect(layout.freeBlocks).toBe(blocks - used);
          expect(layout.backupGroups.every((g) => g < groups)).toBe(true);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('refuses sizes outside 16 MiB … 64 TiB and bad options, naming them', async () => {
    await expect(mkfs(join(dir.path, 'x.img'), { size: 2 ** 20 })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/size 1048576/),
    });
    await expect(mkfs(join(dir.path, 'x.img'), { size: 2 ** 30, label: 'x'.repeat(17) })).rejects.toBeInstanceOf(
      Ext4Error,
    );
    await expect(mkfs(join(dir.path, 'x.img'), { size: 2 ** 30, uuid: 'nope' })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
    expect(await readdir(dir.path)).toEqual([]);
  });
});

describe.skipIf(!hasE2fs)('e2fsck and dumpe2fs', () => {
  for (const [size, label] of [
    [16 * 2 ** 20, '16 MiB'],
    [20 * GiB, '20 GiB'],
    [2 ** 40, '1 TiB'],
  ] as const) {
    for (const checksums of ['metadata_csum', 'uninit_bg'] as const) {
      it(`${label}, ${checksums}: clean, sparse, the documented features`, async () => {
        const image = join(dir.path, `fs-${size}-${checksums}.img`);
        const r = await mkfs(image, { size, checksums, label: 'sandbox' });
        const st = await stat(image);
        expect(st.size).toBe(r.size);
        // Metadata only: a few MiB at most are allocated (1 TiB: its bitmaps and descriptors).
        expect(st.blocks * 512).toBeLessThan(size >= 2 ** 40 ? 16 << 20 : 2 << 20);
        await run('e2fsck', ['-fn', image]);
        const head = await run('dumpe2fs', ['-h', image]);
        const want =
          checksums === 'metadata_csum' ? FEATURES_CSUM : FEATURES_CSUM.replace('metadata_csum', 'uninit_bg');
        expect(/Filesystem features:\s+(.*)/.exec(head)![1]!.split(' ').sort()).toEqual(want.split(' ').sort());
        expect(head).toMatch(/Filesystem state:\s+clean/);
        expect(head).toMatch(/Filesystem volume name:\s+sandbox/);
        expect(Number(/Block count:\s+(\d+)/.exec(head)![1])).toBe(r.blocks);
        expect(Number(/Free blocks:\s+(\d+)/.exec(head)![1])).toBe(r.freeBlocks);
        expect(Number(/Reserved block count:\s+(\d+)/.exec(head)![1])).toBe(Math.floor(r.blocks * 0.05));
        const fs = await Ext4Fs.open(image);
        expect((await fs.readdir('/')).map((e) => e.name)).toEqual(['lost+found']);
        expect((await fs.stat('lost+found')).size).toBe(16384);
        await fs.close();
      }, 600_000);
    }
  }

  it('16 TiB on tmpfs: clean in about a second', async () => {
    const image = '/dev/shm/lcow-mkfs-16t.img';
    try {
      const t = performance.now();
      const r = await mkfs(image, { size: 16 * 2 ** 40, overwrite: true, fsync: false });
      console.log(
        `[mkfs] 16 TiB: ${(performance.now() - t).toFixed(0)} ms, ${(r.bytesWritten / 2 ** 20).toFixed(1)} MiB written`,
      );
      expect(r.blocks).toBe(2 ** 32);
      await run('e2fsck', ['-fn', image]);
    } finally {
      await run('rm', ['-f', image]);
    }
  }, 600_000);

  it('same uuid and timestamp: the same bytes', async () => {
    const opts = {
      size: 64 * 2 ** 20,
      uuid: '11111111-2222-4333-8444-555555555555',
      timestamp: new Date('2024-01-01T00:00:00Z'),
    };
    const a = join(dir.path, 'same-a.img');
    const b = join(dir.path, 'same-b.img');
    await mkfs(a, opts);
    await mkfs(b, opts);
    const hash = async (p: string) =>
      createHash('sha256')
        .update(await readFile(p))
        .digest('hex');
    expect(await hash(a)).toBe(await hash(b));
    expect((await run('dumpe2fs', ['-h', a])).match(/Filesystem UUID:\s+(\S+)/)![1]).toBe(opts.uuid);
  });

  it('an existing file is not replaced without overwrite; an abort leaves nothing', async () => {
    const p = join(dir.path, 'keep.img');
    await writeFile(p, 'precious');
    await expect(mkfs(p, { size: 2 ** 30 })).rejects.toMatchObject({ code: 'ERR_EXISTS' });
    expect(await readFile(p, 'utf8')).toBe('precious');
    const ac = new AbortController();
    ac.abort();
    const sub = join(dir.path, 'abort');
    await mkdir(sub);
    await expect(mkfs(join(sub, 'a.vhdx'), { size: 2 ** 30, signal: ac.signal })).rejects.toMatchObject({
      code: 'ERR_ABORTED',
    });
    expect(await readdir(sub)).toEqual([]);
  });
});

describe.skipIf(!hasE2fs || !hasQemu)('inside a VHDX', () => {
  for (const type of ['dynamic', 'fixed'] as const) {
    it(`${type}: qemu-img check clean, the payload e2fsck-clean, our reader reads it`, async () => {
      const image = join(dir.path, `sandbox-${type}.vhdx`);
      const r = await mkfs(image, { size: 20 * GiB, vhdxType: type });
      expect(r.format).toBe('vhdx');
      await run('qemu-img', ['check', image]);
      const info = JSON.parse(await run('qemu-img', ['info', '--output=json', image]));
      expect(info).toMatchObject({ format: 'vhdx', 'virtual-size': 20 * GiB });
      expect((await stat(image)).blocks * 512).toBeLessThan(8 << 20);
      if (type === 'dynamic') {
        const raw = join(dir.path, `sandbox-${type}.raw`);
        await run('qemu-img', ['convert', '-O', 'raw', image, raw]);
        await run('e2fsck', ['-fn', raw]);
        await run('rm', ['-f', raw]);
      } else {
        // A fixed VHDX's payload is contiguous: e2fsck reads it in place (unix_io's "?offset=").
        const disk = await openVhdx(image);
        const { contiguous } = await disk.allocation();
        await disk.close();
        await run('e2fsck', ['-fn', `${image}?offset=${contiguous!.offset}`]);
      }
      const fs = await Ext4Fs.open(image);
      expect(fs.info.container).toBe('vhdx');
      expect((await fs.readdir('/')).map((e) => e.name)).toEqual(['lost+found']);
      await fs.close();
    }, 600_000);
  }
});

/** Mounts a device read-write, fills it the way a container would, unmounts. */
async function useAsContainer(dev: string, mnt: string): Promise<void> {
  await mkdir(mnt, { recursive: true });
  await run('mount', ['-t', 'ext4', dev, mnt]);
  try {
    await mkdir(join(mnt, 'app/many'), { recursive: true });
    for (let i = 0; i < 3000; i++) await writeFile(join(mnt, 'app/many', `f${i}`), `content ${i}\n`);
    await writeFile(join(mnt, 'app/large.bin'), pseudoRandomBytes(96 << 20, 5));
    await run('sh', [
      '-c',
      `rm ${join(mnt, 'app/many')}/f1* && ln -s many/f2 ${join(mnt, 'app/link')} && mkfifo ${join(mnt, 'app/fifo')}`,
    ]);
    await run('setfattr', ['-n', 'user.k', '-v', 'v', join(mnt, 'app/many/f0')]);
    await run('sync', []);
  } finally {
    await run('umount', [mnt]);
  }
}

describe.skipIf(!asRoot)('the kernel uses it', () => {
  for (const checksums of ['metadata_csum', 'uninit_bg'] as const) {
    it(`raw 20 GiB (${checksums}): mount rw, write and delete thousands of files and a large one, still clean; our reader agrees with the kernel`, async () => {
      const image = join(dir.path, `rw-${checksums}.img`);
      await mkfs(image, { size: 20 * GiB, checksums });
      const dev = (await run('losetup', ['--find', '--show', image])).trim();
      const mnt = join(dir.path, `mnt-${checksums}`);
      try {
        await useAsContainer(dev, mnt);
      } finally {
        await run('losetup', ['--detach', dev]);
      }
      await run('e2fsck', ['-fn', image]);
      const ro = (await run('losetup', ['--find', '--show', '--read-only', image])).trim();
      let kernel;
      try {
        await run('mount', ['-o', 'ro', ro, mnt]);
        kernel = await snapshotTree(mnt, { skip: (p) => p === 'lost+found' });
        await run('umount', [mnt]);
      } finally {
        await run('losetup', ['--detach', ro]);
      }
      expect(kernel.size).toBeGreaterThan(1500);
      const fs = await Ext4Fs.open(image);
      try {
        compareTrees(await readerTree(fs, '/', { skip: (p) => p === 'lost+found' }), kernel, {
          nlink: true,
          rootTime: true,
        });
      } finally {
        await fs.close();
      }
    }, 600_000);
  }

  it('fixed VHDX: the kernel mounts the contiguous payload through a loop offset; qemu-img check stays clean', async () => {
    const image = join(dir.path, 'rw.vhdx');
    await mkfs(image, { size: 20 * GiB, vhdxType: 'fixed' });
    const disk = await openVhdx(image);
    const { contiguous } = await disk.allocation();
    await disk.close();
    expect(contiguous).not.toBeNull();
    const dev = (
      await run('losetup', [
        '--find',
        '--show',
        '--offset',
        String(contiguous!.offset),
        '--sizelimit',
        String(contiguous!.length),
        image,
      ])
    ).trim();
    try {
      await useAsContainer(dev, join(dir.path, 'mnt-vhdx'));
      await run('e2fsck', ['-fn', dev]);
    } finally {
      await run('losetup', ['--detach', dev]);
    }
    await run('qemu-img', ['check', image]);
    const fs = await Ext4Fs.open(image);
    expect((await fs.stat('app/large.bin')).size).toBe(96 << 20);
    expect(Buffer.concat(await fs.readFile('app/many/f7').toArray()).toString()).toBe('content 7\n');
    await fs.close();
  }, 600_000);
});
