// The tars the hcsshim-layout tests convert, built in code so that every machine makes the same bytes
// (golden.json records what hcsshim's converter made of them; make-golden.ts regenerates it).
import { makeTar, pseudoRandomBytes, type TarSpec } from '@lcow/testkit';

const T = 1_700_000_000;
const d = (path: string, extra: Partial<TarSpec> = {}): TarSpec => ({
  path,
  type: 'dir',
  mode: 0o755,
  mtime: T,
  ...extra,
});
const caps = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

export const CASES: Record<string, () => TarSpec[]> = {
  types: () => [
    d('a/'),
    { path: 'a/f', body: 'hello', mtime: T, mtimeNs: 123_456_789 },
    { path: 'a/l', type: 'symlink', linkname: 'f', mtime: T },
    { path: 'a/long', type: 'symlink', linkname: 'x'.repeat(300), mtime: T },
    { path: 'a/h', type: 'link', linkname: 'a/f' },
    { path: 'a/c', type: 'chr', devmajor: 1, devminor: 3, mode: 0o666 },
    { path: 'a/b', type: 'blk', devmajor: 8, devminor: 300, mode: 0o660 },
    { path: 'a/p', type: 'fifo', mode: 0o600 },
    { path: 'a/suid', body: 'x', mode: 0o4755, uid: 70_000, gid: 80_000 },
    { path: 'big', body: pseudoRandomBytes(3 << 20, 1) },
    { path: 'empty', body: '' },
    { path: 'old', body: 'o', mtime: 0, pax: { mtime: '-5.25', atime: '-1' } },
    { path: 'future', body: 'f', mtime: 0, pax: { mtime: '8589934592.5', ctime: '17179869184' } },
  ],
  whiteouts: () => [
    d('etc/'),
    { path: 'etc/passwd', body: 'root' },
    { path: 'etc/.wh.passwd', body: '' },
    { path: 'etc/.wh.gone', body: '' },
    d('opt/', { pax: { 'SCHILY.xattr.user.keep': 'kept' } }),
    { path: 'opt/.wh..wh..opq', body: '' },
    { path: 'opt/x', body: 'x' },
    { path: '.wh.top', body: '' },
    { path: '.wh..wh..opq', body: '' },
  ],
  xattrs: () => [
    { path: 'x1', body: 'a', pax: { 'SCHILY.xattr.user.a': 'short' } },
    {
      path: 'x2',
      body: 'b',
      pax: {
        'SCHILY.xattr.user.big': 'v'.repeat(2000),
        'SCHILY.xattr.security.capability': caps,
        'SCHILY.xattr.user.z': 'zz',
        'SCHILY.xattr.trusted.t': 'tt',
      },
    },
    d('xd/', { pax: { 'SCHILY.xattr.user.dir': 'd'.repeat(90) } }),
    d('xd/', { pax: { 'SCHILY.xattr.user.second': 's'.repeat(3000) } }),
  ],
  inline: () => Array.from({ length: 140 }, (_, i) => ({ path: `i${i}`, body: 'q'.repeat(i), mtime: T })),
  overwrite: () => [
    d('a/'),
    d('a/', { mode: 0o700, uid: 5 }),
    { path: 'f', body: '' },
    { path: 'f', body: '' },
    { path: 'g', type: 'symlink', linkname: 'x' },
    { path: 'g', type: 'symlink', linkname: 'y' },
    { path: 'h1', body: 'linked' },
    { path: 'h2', type: 'link', linkname: 'h1' },
    { path: 'h2', type: 'symlink', linkname: 'elsewhere' },
  ],
  parents: () => [
    { path: 'no/parents/here/file', body: 'deep' },
    d('no/', { mode: 0o700, uid: 3 }),
    { path: 'no/other/file', body: 'made under the updated parent' },
  ],
  slashes: () => [
    { path: 'win\\dir\\file', body: 'w' },
    { path: 'win\\link', type: 'symlink', linkname: 'dir\\file' },
  ],
  wide: () => [
    d('w/'),
    ...Array.from({ length: 100_000 }, (_, i) => ({ path: `w/file-${i}`, body: i % 7 ? '' : 'z', mtime: T })),
  ],
  deep: () => Array.from({ length: 60 }, (_, i) => d(`${Array.from({ length: i + 1 }, (_, j) => `d${j}`).join('/')}/`)),
  // Times at hcsshim's edges: clamped above (nanoseconds dropped) and below, Go's zero time, negative times
  // read back through Stat (an opaque directory) and through MakeParents (a missing child directory).
  times: () => [
    d('neg/', { mtime: 0, pax: { mtime: '-100.5', atime: '-1.25', ctime: '-7' } }),
    { path: 'neg/.wh..wh..opq', body: '' },
    { path: 'neg/made/by/parents', body: 'p' },
    { path: 'huge', body: 'h', mtime: 0, pax: { mtime: '20000000000.75', atime: '17179869183.5' } },
    { path: 'edge', body: 'e', mtime: 0, pax: { mtime: '15032385535.999999999' } },
    { path: 'gozero', body: 'z', mtime: 0, pax: { mtime: '-62135596800' } },
    { path: 'ancient', body: 'a', mtime: 0, pax: { mtime: '-3000000000.5' } },
    d('later/', { mtime: 0, pax: { mtime: '17000000000.25' } }),
    { path: 'later/x/y', body: 'y' },
  ],
  // Hostile input, where hcsshim refuses or copes: a path out of the root (cleaned into it), a write through
  // a symlinked directory (refused), more attributes than fit (refused), a 10 000-deep tree (made).
  escape: () => [
    { path: '../../etc/evil', body: 'x' },
    { path: 'a', type: 'symlink', linkname: '/etc' },
    { path: 'a/passwd', body: 'pwn' },
  ],
  xattrflood: () => [
    {
      path: 'many',
      body: 'x',
      pax: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`SCHILY.xattr.user.k${i}`, 'v'.repeat(200)])),
    },
  ],
  depth: () => [{ path: `${Array.from({ length: 10_000 }, () => 'd').join('/')}/f`, body: 'deep' }],
  manyextents: () => [{ path: 'huge', body: new Uint8Array(600 << 20) }],
};

/** hcsshim-tar2ext4 flags ↔ our options, as the tests run them. */
export const FLAG_SETS: {
  flags: string[];
  opts: { convertWhiteouts?: boolean; inlineData?: boolean; convertSlash?: boolean };
}[] = [
  { flags: ['-overlay'], opts: { convertWhiteouts: true } },
  { flags: ['-overlay', '-inline'], opts: { convertWhiteouts: true, inlineData: true } },
  { flags: [], opts: {} },
  { flags: ['-overlay', '-convert-slash'], opts: { convertWhiteouts: true, convertSlash: true } },
];

export function caseTar(name: string): Uint8Array {
  return makeTar(CASES[name]!());
}
