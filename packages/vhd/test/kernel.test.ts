// The kernel as witness: a fixed VHDX's payload, and a fixed VHD's, mounted through a loop device.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oracle, rootWithLoop, run, tempDir } from '@lcow/testkit';
import { appendFixedFooter, createVhdx, openVhdx, readFooter } from '../src/index.ts';

const MiB = 1 << 20;
const ready = rootWithLoop() && oracle('mkfs.ext4') && oracle('e2fsck') && oracle('debugfs') && oracle('qemu-img');
let dir: { path: string; cleanup: () => Promise<void> };

beforeAll(async () => {
  dir = await tempDir('lcow-kernel-');
});
afterAll(() => dir?.cleanup());

/** Attaches `file` at `offset` for `size` bytes, runs `fn` with the device, always detaches. */
async function withLoop<T>(file: string, offset: number, size: number, fn: (dev: string) => Promise<T>): Promise<T> {
  const dev = (
    await run('losetup', ['--find', '--show', '--offset', String(offset), '--sizelimit', String(size), file])
  ).trim();
  try {
    return await fn(dev);
  } finally {
    await run('losetup', ['--detach', dev]);
  }
}

async function withMount<T>(dev: string, mnt: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(mnt, { recursive: true });
  await run('mount', ['-t', 'ext4', dev, mnt]);
  try {
    return await fn();
  } finally {
    await run('umount', [mnt]);
  }
}

describe.skipIf(!ready)('loop devices over our disks', () => {
  it('a fixed VHDX payload mounts through a loop device with an offset, and qemu sees what the kernel wrote', async () => {
    const vhdx = join(dir.path, 'sandbox.vhdx');
    await createVhdx(vhdx, { size: 64 * MiB, type: 'fixed' });
    const disk = await openVhdx(vhdx);
    const { contiguous } = await disk.allocation();
    await disk.close();
    expect(contiguous).not.toBeNull();
    const mnt = join(dir.path, 'mnt');
    await withLoop(vhdx, contiguous!.offset, contiguous!.length, async (dev) => {
      expect((await run('blockdev', ['--getsize64', dev])).trim()).toBe(String(64 * MiB));
      await run('mkfs.ext4', ['-q', '-F', dev]);
      await withMount(dev, mnt, () => writeFile(join(mnt, 'hello.txt'), 'written by the kernel\n'));
    });
    // Independent witnesses: qemu's raw view of the VHDX is a clean ext4 with that file.
    const raw = join(dir.path, 'sandbox.raw');
    await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', vhdx, raw]);
    await run('e2fsck', ['-fn', raw]);
    expect(await run('debugfs', ['-R', 'cat /hello.txt', raw])).toBe('written by the kernel\n');
    // And our reader sees the ext4 superblock magic (0xEF53 at 1024 + 56).
    const d = await openVhdx(vhdx);
    const sb = await d.read(1024 + 56, 2);
    await d.close();
    expect(sb[0]! | (sb[1]! << 8)).toBe(0xef53);
  });

  it('a layer.vhd (ext4 + footer) mounts with a size limit that hides the footer', async () => {
    const img = join(dir.path, 'layer.vhd');
    await run('truncate', ['-s', String(32 * MiB + 4096), img]);
    await run('mkfs.ext4', ['-q', '-F', '-d', join(import.meta.dirname, '..', 'src'), img]);
    const { payloadSize } = await appendFixedFooter(img);
    expect((await readFooter(img)).currentSize).toBe(payloadSize);
    await run('e2fsck', ['-fn', img]); // the footer after the filesystem does not disturb e2fsck
    const mnt = join(dir.path, 'mnt2');
    await withLoop(img, 0, payloadSize, (dev) =>
      withMount(dev, mnt, async () => {
        expect(await readFile(join(mnt, 'index.ts'), 'utf8')).toBe(
          await readFile(join(import.meta.dirname, '..', 'src', 'index.ts'), 'utf8'),
        );
      }),
    );
  });
});
