// HostFs over a plain folder: every path stays inside the root whatever symlinks say, the file
// handle's read/write/seek, special files, and an archive round trip.
import { lstat, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootWithLoop, tempDir } from '@lcow/testkit';
import { HostFs } from './host-fs.ts';

let dir: { path: string; cleanup: () => Promise<void> };
let root: string;
let fs: HostFs;
beforeAll(async () => {
  dir = await tempDir('lcow-hostfs-');
  root = join(dir.path, 'root');
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(join(dir.path, 'outside'), 'secret');
  await writeFile(join(root, 'etc', 'passwd'), 'root');
  // Every way out we know of: absolute and relative symlinks, chains of them, `..` past the root.
  await symlink('/etc', join(root, 'abs'));
  await symlink('../../outside', join(root, 'etc', 'rel'));
  await symlink('../outside', join(root, 'up'));
  await symlink('/../../../outside', join(root, 'absup'));
  await symlink('loop2', join(root, 'loop1'));
  await symlink('loop1', join(root, 'loop2'));
  fs = new HostFs(root);
});
afterAll(() => dir?.cleanup());

describe('HostFs', () => {
  it('resolves every symlink and .. inside the root', async () => {
    expect(await fs.resolveScopedPath('/abs/passwd')).toBe('/etc/passwd');
    expect(await fs.resolveScopedPath('/etc/rel')).toBe('/outside');
    expect(await fs.resolveScopedPath('/up')).toBe('/outside');
    expect(await fs.resolveScopedPath('/absup')).toBe('/outside');
    expect(await fs.resolveScopedPath('../../../etc/./passwd')).toBe('/etc/passwd');
    for (const p of ['/etc/rel', '/up', '/absup', '/../outside'])
      await expect(fs.readFile(p), p).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    await expect(fs.stat('/loop1')).rejects.toMatchObject({ code: 'ERR_SYMLINK_LOOP' });
    // Writing through a symlink that points out lands inside.
    await fs.writeFile('/up', 'inside now');
    expect(await readFile(join(dir.path, 'outside'), 'utf8')).toBe('secret');
    expect(await readFile(join(root, 'outside'), 'utf8')).toBe('inside now');
    // lstat, readlink and remove act on the link itself.
    expect((await fs.lstat('/abs')).type).toBe('symlink');
    expect(await fs.readlink('/abs')).toBe('/etc');
    await expect(fs.removeAll('/')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(fs.removeAll('/..')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });

  it('open: read, write, seek and append; exact modes whatever the umask', async () => {
    const f = await fs.open('/data', 'w+', 0o640);
    expect(await f.write(Buffer.from('hello world'))).toBe(11);
    expect(await f.seek(-5, 2)).toBe(6);
    const b = Buffer.alloc(5);
    expect(await f.read(b)).toBe(5);
    expect(b.toString()).toBe('world');
    expect(await f.seek(0, 0)).toBe(0);
    await f.write(Buffer.from('J'), 0);
    expect(await f.read(b)).toBe(5);
    expect(b.toString()).toBe('Jello');
    await f.close();
    const a = await fs.open('/data', 'a');
    await a.write(Buffer.from('!'));
    await a.close();
    expect((await fs.readFile('/data')).toString()).toBe('Jello world!');
    expect((await fs.stat('/data')).mode).toBe(0o640);
    await fs.writeFile('/suid', 'x', 0o4755);
    expect((await lstat(join(root, 'suid'))).mode & 0o7777).toBe(0o4755);
    await fs.mkdirAll('/a/b/c', 0o711);
    expect((await fs.stat('/a/b')).mode).toBe(0o711);
    await expect(fs.mkdirAll('/data/x')).rejects.toMatchObject({ code: 'ERR_NOT_A_DIRECTORY' });
    await fs.link('/data', '/a/hard');
    expect((await fs.stat('/a/hard')).nlink).toBe(2);
    await fs.lchmod('/abs', 0o600); // a symlink: nothing to change on Linux
    expect((await fs.lstat('/abs')).type).toBe('symlink');
    await expect(fs.remove('/a')).rejects.toMatchObject({ code: 'ERR_NOT_EMPTY' });
    await expect(fs.mkdir('/a')).rejects.toMatchObject({ code: 'ERR_EXISTS' });
  });

  it.skipIf(!rootWithLoop())('mknod, mkfifo and lchown (root; under CI=true a missing privilege fails)', async () => {
    await fs.mknod('/null', 'chr', 0o666, 1, 3);
    expect(await fs.lstat('/null')).toMatchObject({ type: 'chr', mode: 0o666, rdev: { major: 1, minor: 3 } });
    await fs.mkfifo('/pipe', 0o600);
    expect(await fs.lstat('/pipe')).toMatchObject({ type: 'fifo', mode: 0o600 });
    await fs.lchown('/abs', 7, 8);
    expect(await fs.lstat('/abs')).toMatchObject({ uid: 7, gid: 8 });
  });

  it('archivePath → extractArchive reproduces a tree elsewhere in the root', async () => {
    await fs.mkdirAll('/src/sub', 0o750);
    await fs.writeFile('/src/sub/f', 'file', 0o604);
    await fs.symlink('sub/f', '/src/l');
    await fs.link('/src/sub/f', '/src/h');
    const tar = fs.archivePath('/src');
    await fs.extractArchive(tar, '/dst');
    expect((await fs.readFile('/dst/src/sub/f')).toString()).toBe('file');
    expect((await fs.stat('/dst/src/sub/f')).mode).toBe(0o604);
    expect((await fs.stat('/dst/src/sub')).mode).toBe(0o750);
    expect(await fs.readlink('/dst/src/l')).toBe('sub/f');
    expect((await fs.stat('/dst/src/h')).ino).toBe((await fs.stat('/dst/src/sub/f')).ino);
  });
});
