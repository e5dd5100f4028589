// tryLstat: the probing form of lstat — null for what is not there, the same answer as lstat otherwise,
// and still an error for a damaged image.
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeTar, tempDir } from '@lcow/testkit';
import { Ext4Fs, convert, encodeTarHeader, TAR_END, tarPadding } from '../src/index.ts';

let dir: { path: string; cleanup: () => Promise<void> };
let img: string;
beforeAll(async () => {
  dir = await tempDir('lcow-trylstat-');
  img = join(dir.path, 'l.img');
  const tar = makeTar([
    { path: 'etc/passwd', body: 'root' },
    { path: 'link', type: 'symlink', linkname: 'etc' },
  ]);
  await convert(Readable.from([tar]), img);
});
afterAll(() => dir?.cleanup());

it('answers as lstat where something is there, null where nothing is', async () => {
  const fs = await Ext4Fs.open(img);
  try {
    expect(await fs.tryLstat('/etc/passwd')).toEqual(await fs.lstat('/etc/passwd'));
    expect((await fs.tryLstat('/link'))?.type).toBe('symlink');
    expect((await fs.tryLstat('/link/passwd'))?.type).toBe('file'); // a symlink in the middle is followed
    expect(await fs.tryLstat('/nope')).toBeNull();
    expect(await fs.tryLstat('/etc/passwd/under')).toBeNull(); // through a file
    await expect(fs.lstat('/nope')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    await expect(fs.tryLstat('a\0b')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  } finally {
    await fs.close();
  }
});

it('the exported tar encoder writes what a reader of tars reads back', async () => {
  const body = Buffer.from('hello');
  const tar = Buffer.concat([
    encodeTarHeader({
      path: Buffer.from('d/'),
      type: '5',
      mode: 0o755,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: { sec: 1, nsec: 0 },
    }),
    encodeTarHeader({
      path: Buffer.from(`d/${'x'.repeat(150)}`),
      type: '0',
      mode: 0o600,
      uid: 3_000_000,
      gid: 7,
      size: body.length,
      mtime: { sec: 2, nsec: 500 },
      xattrs: new Map([['user.k', Buffer.from([0, 1, 2])]]),
    }),
    body,
    tarPadding(body.length),
    TAR_END,
  ]);
  const out = join(dir.path, 'enc.img');
  await convert(Readable.from([tar]), out);
  const fs = await Ext4Fs.open(out);
  try {
    const st = await fs.lstat(`/d/${'x'.repeat(150)}`);
    expect([st.mode, st.uid, st.gid, st.size, st.mtime]).toEqual([0o600, 3_000_000, 7, 5, { sec: 2, nsec: 500 }]);
    expect((await fs.listXattrs(`/d/${'x'.repeat(150)}`)).get('user.k')).toEqual(new Uint8Array([0, 1, 2]));
  } finally {
    await fs.close();
  }
});

it('lookups that start from a remembered directory agree with a fresh reader, through links and ".." too', async () => {
  // A tree 600 directories deep, a link into its middle, and names that differ only past the shared prefix.
  const specs: Parameters<typeof makeTar>[0] = [];
  let p = '';
  for (let i = 0; i < 600; i++) {
    p += `d${i % 7}/`;
    specs.push({ path: p, type: 'dir' }, { path: `${p}f`, body: String(i) });
  }
  specs.push({ path: 'mid', type: 'symlink', linkname: p.split('/').slice(0, 300).join('/') });
  specs.push({ path: 'up', type: 'symlink', linkname: '../../..' });
  const deep = join(dir.path, 'deep.img');
  await convert(Readable.from([makeTar(specs)]), deep);
  const warm = await Ext4Fs.open(deep);
  const paths: string[] = [];
  let q = '';
  for (let i = 0; i < 600; i++) {
    q += `/d${i % 7}`;
    paths.push(q, `${q}/f`, `${q}/../f`, `${q}/./f`, `${q}/nope`);
  }
  paths.push('/mid/f', '/mid/d6/f', '/mid/../f', '/up/d0/f', '/mid/d6/../../f');
  try {
    // Walk order first (what fills the cache), then every path once more against a reader that cached nothing.
    const seen = [];
    for (const x of paths) seen.push(await warm.tryLstat(x));
    const cold = await Ext4Fs.open(deep);
    for (const [i, x] of paths.entries()) {
      // The first paths, the links, and every 50th: each against a reader that has cached nothing.
      if (i > 60 && i < paths.length - 10 && i % 50 !== 0) continue;
      const fresh = await Ext4Fs.open(deep);
      expect(seen[i], x).toEqual(await fresh.tryLstat(x));
      await fresh.close();
    }
    // And all of them, in reverse order, against one cold reader: a different fill of its cache.
    for (let i = paths.length - 1; i >= 0; i--) expect(await cold.tryLstat(paths[i]!), paths[i]).toEqual(seen[i]);
    await cold.close();
    expect((await warm.readFile(`${q}/f`).toArray()).join('')).toBe('599');
    expect((await warm.stat('/mid/f')).size).toBe(3);
  } finally {
    await warm.close();
  }
});
