import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { makeTar } from '@lcow/testkit';
import { readTarTree } from './tar-tree.ts';

const tarOf = (...specs: Parameters<typeof makeTar>[0]): Readable => Readable.from([Buffer.from(makeTar(specs))]);

describe('readTarTree', () => {
  it('reads a layer tar as the sandbox would hold it: whiteouts, opaque folders, links, xattrs', async () => {
    const t = await readTarTree(
      tarOf(
        { path: 'etc/', type: 'dir', mode: 0o750, uid: 7 },
        { path: 'etc/conf', body: 'x'.repeat(10), mode: 0o600, pax: { 'SCHILY.xattr.user.k': 'v' } },
        { path: 'etc/hard', type: 'link', linkname: 'etc/conf' },
        { path: 'etc/.wh.gone' },
        { path: 'etc/.wh..wh.plnk' },
        { path: 'var/cache/.wh..wh..opq' },
        { path: 'dev/null', type: 'chr', devmajor: 1, devminor: 3 },
        { path: 'lnk', type: 'symlink', linkname: '/etc/conf' },
      ),
      'layer L',
    );
    expect((await t.readdir('/')).map((e) => e.name)).toEqual(['dev', 'etc', 'lnk', 'var']);
    expect((await t.readdir('/etc')).map((e) => e.name)).toEqual(['conf', 'gone', 'hard']); // no AUFS metadata
    expect(await t.lstat('/etc')).toMatchObject({ type: 'dir', mode: 0o750, uid: 7 });
    const conf = await t.lstat('/etc/conf');
    expect(conf).toMatchObject({ type: 'file', size: 10, mode: 0o600, nlink: 2 });
    expect((await t.lstat('/etc/hard')).ino).toBe(conf.ino);
    expect(await t.lstat('/etc/gone')).toMatchObject({ type: 'chr', rdev: { major: 0, minor: 0 } });
    expect(Buffer.from((await t.listXattrs('/etc/conf')).get('user.k')!).toString()).toBe('v');
    expect(Buffer.from((await t.listXattrs('/var/cache')).get('trusted.overlay.opaque')!).toString()).toBe('y');
    expect(await t.lstat('/var')).toMatchObject({ type: 'dir', mode: 0o755 }); // implied by its contents
    expect(await t.lstat('/dev/null')).toMatchObject({ type: 'chr', rdev: { major: 1, minor: 3 } });
    expect(await t.readlink('/lnk')).toBe('/etc/conf');
    expect(await t.tryLstat('/nothing')).toBeNull();
    await expect(t.lstat('/nothing')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
  });

  it('keeps every name inside the layer; refuses a hard link to nothing, naming the layer', async () => {
    const t = await readTarTree(tarOf({ path: '../../x', body: 'up' }, { path: 'a/../../b/', type: 'dir' }), 'layer L');
    expect((await t.readdir('/')).map((e) => e.name)).toEqual(['b', 'x']);
    await expect(readTarTree(tarOf({ path: 'a', type: 'link', linkname: 'b' }), 'layer L')).rejects.toMatchObject({
      code: 'ERR_APPLY',
      message: expect.stringMatching(/layer L: hard link \/a to a missing b/),
    });
  });

  it('a source that fails or an abort ends the read instead of leaving it waiting', async () => {
    const broken = new PassThrough();
    broken.write(Buffer.from(makeTar([{ path: 'a', body: 'x' }], { end: false })).subarray(0, 700));
    setTimeout(() => broken.destroy(new Error('the guest went away')), 20);
    await expect(readTarTree(broken, 'layer L')).rejects.toThrow(/guest went away/);
    const slow = new PassThrough();
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stopped')), 20);
    await expect(readTarTree(slow, 'layer L', ac.signal)).rejects.toThrow(/stopped/);
  });
});
