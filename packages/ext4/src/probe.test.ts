import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { oracle, run, tempDir } from '@lcow/testkit';
import { Ext4Error, Superblock, probeExt4, type ReadAt } from './index.ts';

const hasTools = oracle('mkfs.ext4') && oracle('dumpe2fs');
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-ext4-');
});
afterAll(() => dir?.cleanup());

const fromBytes =
  (b: Uint8Array): ReadAt =>
  async (offset, length) =>
    b.subarray(offset, offset + length);

function dumpe2fsField(out: string, name: string): string {
  return new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(out)?.[1]?.trim() ?? '';
}

describe('superblock table', () => {
  it('is 1024 bytes with fields at the kernel offsets', () => {
    expect(Superblock.size).toBe(1024);
    expect(Superblock.offsetOf('magic')).toBe(0x38);
    expect(Superblock.offsetOf('uuid')).toBe(0x68);
    expect(Superblock.offsetOf('descSize')).toBe(0xfe);
    expect(Superblock.offsetOf('blocksCountHi')).toBe(0x150);
    expect(Superblock.offsetOf('checksumSeed')).toBe(0x270);
    expect(Superblock.offsetOf('orphanFileInum')).toBe(0x280);
    expect(Superblock.offsetOf('checksum')).toBe(0x3fc);
  });
});

describe.skipIf(!hasTools)('probeExt4 agrees with dumpe2fs', () => {
  it.each([
    ['default (metadata_csum, 64bit, journal)', ['-T', 'default'], 64],
    ['ext2-like, 1 KiB blocks', ['-t', 'ext2', '-b', '1024'], 16],
    [
      'LCOW layer features, no journal',
      ['-O', '^has_journal,^metadata_csum,^64bit,^resize_inode,sparse_super2', '-I', '256', '-L', 'layer'],
      32,
    ],
  ])('%s', async (_name, opts, mib) => {
    const img = join(dir.path, `fs${mib}.img`);
    await run('truncate', ['-s', `${mib}M`, img]);
    await run('mkfs.ext4', ['-q', '-F', ...opts, img]);
    const s = await probeExt4(fromBytes(new Uint8Array(await readFile(img))), img);
    const d = await run('dumpe2fs', ['-h', img]);
    expect(s.blockSize).toBe(Number(dumpe2fsField(d, 'Block size')));
    expect(s.blocksCount).toBe(Number(dumpe2fsField(d, 'Block count')));
    expect(s.inodesCount).toBe(Number(dumpe2fsField(d, 'Inode count')));
    expect(s.freeBlocks).toBe(Number(dumpe2fsField(d, 'Free blocks')));
    expect(s.uuid).toBe(dumpe2fsField(d, 'Filesystem UUID'));
    expect(s.label).toBe(dumpe2fsField(d, 'Filesystem volume name').replace('<none>', ''));
    expect([...s.features].sort()).toEqual(dumpe2fsField(d, 'Filesystem features').split(/\s+/).sort());
    expect(s.state).toBe(dumpe2fsField(d, 'Filesystem state'));
    expect(s.checksumValid).toBe(s.features.includes('metadata_csum') ? true : null);
  });

  it('reports a wrong superblock checksum', async () => {
    const img = join(dir.path, 'csum.img');
    await run('truncate', ['-s', '16M', img]);
    await run('mkfs.ext4', ['-q', '-F', img]);
    const fh = await open(img, 'r+');
    await fh.write(Uint8Array.of(0x55), 0, 1, 1024 + 0x78); // a byte of the volume name
    await fh.close();
    expect((await probeExt4(fromBytes(new Uint8Array(await readFile(img))))).checksumValid).toBe(false);
  });
});

describe('probeExt4 on bad input', () => {
  it('names the problem', async () => {
    await expect(probeExt4(fromBytes(new Uint8Array(100)), 'x.img')).rejects.toThrow(/x\.img: superblock truncated/);
    await expect(probeExt4(fromBytes(new Uint8Array(4096)), 'x.img')).rejects.toThrow(/magic is 0x0, expected 0xef53/);
    const b = new Uint8Array(4096);
    Superblock.set(b, 'magic', 0xef53, 1024);
    Superblock.set(b, 'logBlockSize', 40, 1024);
    await expect(probeExt4(fromBytes(b))).rejects.toMatchObject({
      code: 'ERR_EXT4_CORRUPT',
      message: expect.stringMatching(/log block size 40/),
    });
  });

  it('fuzz: any bytes with the magic give a summary or an Ext4Error', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 2048, maxLength: 2048 }), async (b) => {
        Superblock.set(b, 'magic', 0xef53, 1024);
        try {
          await probeExt4(fromBytes(b));
        } catch (e) {
          expect(e).toBeInstanceOf(Ext4Error);
        }
      }),
      { numRuns: 500 },
    );
  });
});
