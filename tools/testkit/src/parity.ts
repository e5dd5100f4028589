// The parity image: two layers holding every kind of entry an image can store — files, setuid and setgid,
// owners, a hard link, symlinks (one dangling), a FIFO, character and block devices, `security.capability` and
// `user.*` xattrs, unicode and long names, a sticky /tmp, a 0700 folder — then a whiteout and an opaque folder.
// Its first layer carries `/ops` (c/ops.c, built static: the images have no shell), which makes a user's changes
// inside a container and prints what a user sees. Docker's and containerd's parity tests load it into lcow and
// into the engine's own storage and compare.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './index.ts';
import { makeTar } from './tar.ts';

/** Every time in the image. */
export const PARITY_MTIME = 1_600_000_000;
/** vfs_cap_data v2: cap_net_bind_service, effective. */
export const PARITY_CAP = '0100000200040000000000000000000000000000';

/** Builds `/ops` (static) into `dir`; returns its bytes. */
export async function buildOps(dir: string): Promise<Uint8Array> {
  const bin = join(dir, 'ops');
  await run('cc', ['-static', '-O2', '-o', bin, join(import.meta.dirname, '..', 'c', 'ops.c')]);
  return readFile(bin);
}

/** The image's two layer tars, bottom first. */
export function parityLayers(ops: Uint8Array): Uint8Array[] {
  const M = PARITY_MTIME;
  const CAP = PARITY_CAP;
  const t = { mtime: M };
  const layer0 = makeTar([
    { path: 'ops', body: ops, mode: 0o755, ...t },
    { path: 'etc/', type: 'dir', ...t },
    { path: 'etc/motd', body: 'welcome\n', ...t },
    { path: 'etc/passwd', body: 'root:x:0:0::/:/ops\n', ...t },
    { path: 'var/', type: 'dir', ...t },
    { path: 'var/cache/', type: 'dir', ...t },
    { path: 'var/cache/apt/', type: 'dir', ...t },
    { path: 'var/cache/apt/archives/', type: 'dir', mode: 0o700, ...t },
    { path: 'var/cache/apt/pkgcache.bin', body: 'cache', ...t },
    { path: 'srv/', type: 'dir', ...t },
    { path: 'srv/tool', body: 'setuid', mode: 0o4755, ...t },
    { path: 'srv/sgid', body: 'setgid', mode: 0o2755, gid: 50, ...t },
    { path: 'srv/owned', body: 'owned', mode: 0o640, uid: 1, gid: 1, ...t },
    { path: 'srv/data', body: 'data\n', ...t },
    { path: 'srv/data.hard', type: 'link', linkname: 'srv/data', ...t },
    { path: 'srv/data2', body: 'old contents\n', ...t },
    { path: 'srv/link', type: 'symlink', linkname: 'data', mode: 0o644, ...t },
    { path: 'srv/dangling', type: 'symlink', linkname: '/nowhere/at/all', ...t },
    { path: 'srv/fifo', type: 'fifo', mode: 0o600, ...t },
    { path: 'srv/null', type: 'chr', devmajor: 1, devminor: 3, mode: 0o666, ...t },
    { path: 'srv/loop', type: 'blk', devmajor: 7, devminor: 200, mode: 0o660, ...t },
    {
      path: 'srv/capfile',
      body: 'cap',
      mode: 0o755,
      pax: { 'SCHILY.xattr.security.capability': Buffer.from(CAP, 'hex') },
      ...t,
    },
    { path: 'srv/userx', body: 'x', pax: { 'SCHILY.xattr.user.note': 'kept' }, ...t },
    { path: 'srv/empty', body: '', ...t },
    { path: 'srv/ünïcödé ✓', body: 'utf-8 name', ...t },
    { path: `srv/${'long-name-'.repeat(12)}`, body: 'long', ...t },
    { path: 'srv/.hidden', body: 'dot', ...t },
    { path: 'srv/gone', body: 'deleted by the next layer', ...t },
    { path: 'tmp/', type: 'dir', mode: 0o1777, ...t },
    { path: 'private/', type: 'dir', mode: 0o700, uid: 1000, gid: 1000, ...t },
    { path: 'private/f', body: 'p', mode: 0o600, uid: 1000, gid: 1000, ...t },
    { path: 'opaque/', type: 'dir', ...t },
    { path: 'opaque/old1', body: 'old1', ...t },
    { path: 'opaque/sub/', type: 'dir', ...t },
    { path: 'opaque/sub/old2', body: 'old2', ...t },
  ]);
  const layer1 = makeTar([
    { path: 'srv/', type: 'dir', ...t },
    { path: 'srv/.wh.gone', body: '', ...t },
    { path: 'srv/added', body: 'second layer', ...t },
    { path: 'opaque/', type: 'dir', ...t },
    { path: 'opaque/.wh..wh..opq', body: '', ...t },
    { path: 'opaque/keep', body: 'keep', ...t },
    { path: 'opaque/new', body: 'new', ...t },
  ]);
  return [layer0, layer1];
}
