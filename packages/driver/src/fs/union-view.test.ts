// The inproc union against the kernel's overlayfs over the same converted layers: every entry (type, mode,
// owner, size, contents, link target, mtime) must be what the kernel shows.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, oracle, rootWithLoop, run, snapshotTree, tempDir, withLoopMount, type FsEntry } from '@lcow/testkit';
import { Ext4Fs, convert, type ConvertResult } from '@lcow/ext4';
import { UnionView } from './union-view.ts';

const ready = oracle('getfattr') && rootWithLoop();
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-union-');
});
afterAll(() => dir?.cleanup());

const LAYERS = [
  // bottom
  [
    { path: 'etc/', type: 'dir' as const },
    { path: 'etc/passwd', body: 'root:x:0:0\n' },
    { path: 'etc/gone', body: 'bottom' },
    { path: 'opt/', type: 'dir' as const },
    { path: 'opt/old/a', body: 'old a' },
    { path: 'opt/old/b', body: 'old b' },
    { path: 'lib/x', body: 'x' },
    { path: 'bin/sh', type: 'symlink' as const, linkname: '/lib/x' },
    { path: 'replaced', body: 'a file below' },
  ],
  // middle
  [
    { path: 'etc/.wh.gone', body: '' },
    { path: 'etc/hosts', body: '127.0.0.1 localhost\n', mode: 0o600, uid: 10, gid: 20 },
    { path: 'opt/old/.wh..wh..opq', body: '' },
    { path: 'opt/old/c', body: 'new c' },
    { path: 'replaced/', type: 'dir' as const },
    { path: 'replaced/inner', body: 'dir now' },
  ],
  // top
  [
    { path: 'etc/passwd', body: 'root:x:0:0\nuser:x:1000:1000\n' },
    { path: '.wh.lib', body: '' },
    { path: 'new/deep/file', body: 'deep', mtime: 1_600_000_000 },
  ],
];

async function unionTree(u: UnionView): Promise<Map<string, Partial<FsEntry>>> {
  const out = new Map<string, Partial<FsEntry>>();
  const walk = async (rel: string): Promise<void> => {
    const st = await u.lstat(`/${rel}`);
    let sha256: string | null = null;
    if (st.type === 'file') {
      const h = createHash('sha256');
      for await (const c of await u.readFile(`/${rel}`)) h.update(c as Buffer);
      sha256 = h.digest('hex');
    }
    out.set(rel, {
      type: st.type,
      mode: st.mode,
      uid: st.uid,
      gid: st.gid,
      size: st.type === 'file' || st.type === 'symlink' ? st.size : null,
      sha256,
      target: st.type === 'symlink' ? await u.readlink(`/${rel}`) : null,
      mtimeNs: BigInt(st.mtime.sec) * 10n ** 9n + BigInt(st.mtime.nsec),
    });
    if (st.type === 'dir') for (const e of await u.readdir(`/${rel}`)) await walk(rel ? `${rel}/${e.name}` : e.name);
  };
  await walk('');
  return out;
}

describe('UnionView', () => {
  it.skipIf(!ready)(
    'equals overlayfs over the same layers, entry by entry; whiteouts and opaque directories honoured',
    async () => {
      const images: string[] = [];
      const results: ConvertResult[] = [];
      for (const [i, specs] of LAYERS.entries()) {
        const tar = join(dir.path, `l${i}.tar`);
        await writeFile(tar, makeTar(specs));
        const image = join(dir.path, `l${i}.img`);
        results.push(await convert(tar, image, { convertWhiteouts: true }));
        images.push(image);
      }
      const fss = await Promise.all(images.map((p) => Ext4Fs.open(p)));
      const u = new UnionView([...fss].reverse().map((fs) => ({ fs })));
      const ours = await unionTree(u);
      // The kernel's view of the same stack.
      const mnts = images.map((_, i) => join(dir.path, `m${i}`));
      const merged = join(dir.path, 'merged');
      await mkdir(merged, { recursive: true });
      const mountAll = async (i: number): Promise<Map<string, FsEntry>> => {
        if (i === images.length) {
          await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${[...mnts].reverse().join(':')}`, merged]);
          try {
            return await snapshotTree(merged, { xattrs: false });
          } finally {
            await run('umount', [merged]);
          }
        }
        return withLoopMount(images[i]!, results[i]!.bytes, mnts[i]!, () => mountAll(i + 1));
      };
      const kernel = await mountAll(0);
      for (const fs of fss) await fs.close();
      // The layers' lost+found is our writer's, for e2fsck alone: the union leaves it out (the host backend
      // whites it out above the layers), so a container's root holds only what the image holds.
      expect(kernel.has('lost+found')).toBe(true);
      expect(ours.has('lost+found')).toBe(false);
      kernel.delete('lost+found');
      expect([...ours.keys()].sort()).toEqual([...kernel.keys()].sort());
      for (const [p, k] of kernel) {
        const { nlink: _n, xattrs: _x, rdev: _r, ...want } = k;
        const got = ours.get(p)!;
        if (p === '') {
          // The root directory's own attributes come from the top layer in both; its mtime is the converter's.
          expect(got.type).toBe('dir');
          continue;
        }
        expect({ p, ...got }).toEqual({ p, ...want });
      }
      expect(ours.has('etc/gone')).toBe(false);
      expect(ours.has('opt/old/a')).toBe(false);
      expect(ours.get('opt/old/c')?.size).toBe(5);
      expect(ours.has('lib')).toBe(false);
      expect(ours.get('replaced')?.type).toBe('dir');
      // bin/sh points at /lib/x, whited out above: the link stays, its target does not resolve.
      await expect(u.stat('/bin/sh')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
      expect(() => u.refuseWrite('mkdir', '/x')).toThrow(/read-only/);
    },
  );
});
