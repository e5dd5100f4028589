// Loop devices and mounts by system call, checked against what the kernel and util-linux's own tools say:
// /proc/self/mountinfo, `losetup -j` and `findmnt`, and the files read back through the mounts.
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unionMountArgs } from '@lcow/svm-pool';
import { oracle, rootWithLoop, run, tempDir } from '@lcow/testkit';
import { loopMount, loopsOf, mountFs, parseMountArgv, splitOptions, unmount } from './linux.ts';

describe('mount options as mount(2) takes them', () => {
  it('splits flags from the filesystem data, as mount(8) does', () => {
    expect(splitOptions(['ro', 'nodev', 'nosuid', 'lowerdir=/a:/b', 'redirect_dir=off'])).toEqual({
      flags: 1 | 4 | 2,
      data: 'lowerdir=/a:/b,redirect_dir=off',
    });
    expect(splitOptions(['rw'])).toEqual({ flags: 0, data: '' });
  });

  it('reads every argument vector unionMountArgs makes, and nothing else', () => {
    expect(parseMountArgv(unionMountArgs('/t', ['/l1', '/l0'], '/s', ['nodev']))).toEqual({
      source: 'overlay',
      target: '/t',
      fstype: 'overlay',
      options: ['lowerdir=/l1:/l0', 'upperdir=/s/upper', 'workdir=/s/work', 'nodev'],
    });
    expect(parseMountArgv(unionMountArgs('/t', ['/l0'], undefined, ['nodev', 'nosuid']))).toEqual({
      source: '/l0',
      target: '/t',
      fstype: null,
      options: ['bind', 'ro', 'nodev', 'nosuid'],
    });
    expect(parseMountArgv(unionMountArgs('/t', [], '/s'))).toEqual({
      source: '/s/upper',
      target: '/t',
      fstype: null,
      options: ['bind'],
    });
    expect(() => parseMountArgv(['mount', '--make-rshared', '/a', '/b'])).toThrow(/not an option we make/);
    expect(() => parseMountArgv(['mount', '-o', 'ro', '/a'])).toThrow(/a source and a target/);
  });
});

const ready = process.platform === 'linux' && rootWithLoop() && oracle('mkfs.ext4') && oracle('findmnt');

describe.runIf(ready)('loop devices and mounts by system call (root)', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let image: string;
  const OFFSET = 1 << 20;
  beforeAll(async () => {
    dir = await tempDir('lcow-linux-');
    const tree = join(dir.path, 'tree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'sub', 'file'), 'through the loop\n');
    // An ext4 payload behind 1 MiB of other bytes, as a sandbox's sits inside its VHDX.
    const fs = join(dir.path, 'fs.ext4');
    await run('mkfs.ext4', ['-q', '-d', tree, fs, '8M']);
    image = join(dir.path, 'disk.img');
    await writeFile(image, Buffer.concat([Buffer.alloc(OFFSET, 0xee), await readFile(fs)]));
  });
  afterAll(async () => {
    for (const line of (await run('findmnt', ['-rn', '-o', 'TARGET'])).split('\n').reverse())
      if (line.startsWith(dir.path)) await unmount(line, { lazy: true }).catch(() => {});
    await dir?.cleanup();
  });

  it('attaches at an offset with a size limit, mounts read-only, and lets the device go at unmount', async () => {
    const at = join(dir.path, 'ro');
    await mkdir(at);
    await loopMount(image, at, 'ext4', { offset: OFFSET, size: 8 << 20, readOnly: true, options: ['nodev', 'nosuid'] });
    try {
      expect(await readFile(join(at, 'sub', 'file'), 'utf8')).toBe('through the loop\n');
      const loops = await loopsOf(image);
      expect(loops).toHaveLength(1);
      // util-linux sees the same device over the same file, at that offset.
      expect(await run('losetup', ['-j', image])).toContain(`${loops[0]}:`);
      expect(await run('losetup', ['-j', image])).toContain(`offset ${OFFSET}`);
      const opts = (await run('findmnt', ['-rn', '-o', 'OPTIONS', at])).trim().split(',');
      expect(opts).toEqual(expect.arrayContaining(['ro', 'nodev', 'nosuid']));
      await expect(writeFile(join(at, 'new'), 'x')).rejects.toThrow(/EROFS/);
    } finally {
      await unmount(at);
    }
    expect(await run('findmnt', ['-rn', at]).catch(() => '')).toBe('');
    for (let i = 0; i < 50 && (await loopsOf(image)).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await loopsOf(image)).toEqual([]);
  });

  it('read-write, many at once: each on its own device (the race for a free one is retried)', async () => {
    const copies = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const p = join(dir.path, `copy${i}.img`);
        await writeFile(p, await readFile(image));
        const at = join(dir.path, `rw${i}`);
        await mkdir(at);
        return { p, at };
      }),
    );
    await Promise.all(
      copies.map((c) => loopMount(c.p, c.at, 'ext4', { offset: OFFSET, size: 8 << 20, readOnly: false, options: [] })),
    );
    try {
      const devices = await Promise.all(copies.map((c) => loopsOf(c.p)));
      expect(devices.every((d) => d.length === 1)).toBe(true);
      expect(new Set(devices.flat()).size).toBe(copies.length);
      await Promise.all(copies.map((c, i) => writeFile(join(c.at, 'mine'), `copy ${i}`)));
    } finally {
      for (const c of copies) await unmount(c.at, { flush: true });
    }
    // Written back through the loop device into each file: mounted again, each has its own.
    const c = copies[7]!;
    await loopMount(c.p, c.at, 'ext4', { offset: OFFSET, size: 8 << 20, readOnly: true, options: [] });
    expect(await readFile(join(c.at, 'mine'), 'utf8')).toBe('copy 7');
    await unmount(c.at);
  });

  it('errors are typed and name what failed; a failed mount leaves no loop device behind', async () => {
    const at = join(dir.path, 'bad');
    await mkdir(at);
    // Not ext4 where we point: the kernel refuses, the device clears itself.
    await expect(
      loopMount(image, at, 'ext4', { offset: 0, size: 8 << 20, readOnly: true, options: [] }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringContaining(at) });
    for (let i = 0; i < 50 && (await loopsOf(image)).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await loopsOf(image)).toEqual([]);
    await expect(
      loopMount(join(dir.path, 'absent'), at, 'ext4', { offset: 0, size: 1, readOnly: true, options: [] }),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(unmount(at)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: /umount .*bad: EINVAL/ });
    await expect(unmount(join(dir.path, 'nowhere'))).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
  });

  it('overlay and read-only bind mounts, as the unions use them', async () => {
    const [low, up, work, u, b] = ['low', 'up', 'work', 'u', 'b'].map((n) => join(dir.path, n)) as [
      string,
      string,
      string,
      string,
      string,
    ];
    for (const d of [low, up, work, u, b]) await mkdir(d);
    await writeFile(join(low, 'below'), 'low');
    mountFs('overlay', u, 'overlay', [`lowerdir=${low}`, `upperdir=${up}`, `workdir=${work}`, 'nodev']);
    try {
      await writeFile(join(u, 'above'), 'up');
      expect((await readdir(u)).sort()).toEqual(['above', 'below']);
      expect(await readdir(up)).toEqual(['above']);
    } finally {
      await unmount(u);
    }
    mountFs(low, b, null, ['bind', 'ro', 'nodev', 'nosuid']);
    try {
      expect(await readFile(join(b, 'below'), 'utf8')).toBe('low');
      await expect(writeFile(join(b, 'x'), 'x')).rejects.toThrow(/EROFS/);
    } finally {
      await unmount(b);
    }
  });
});
