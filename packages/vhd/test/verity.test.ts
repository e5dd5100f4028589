// dm-verity, judged by veritysetup (cryptsetup-bin): it must accept our trees, compute our roots, and
// reject what we reject.
import { copyFile, open, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anchor as referenceTool, oracle, pseudoRandomBytes, run, tempDir } from '@lcow/testkit';
import { createHash } from 'node:crypto';
import { LeafHasher, VhdError, appendVerity, checkVerity, levelSizes, readVerity, verityDigest } from '../src/index.ts';

const hasVeritysetup = oracle('veritysetup');
const SALT0 = '0'.repeat(64);
let dir: { path: string; cleanup: () => Promise<void> };
let n = 0;
beforeAll(async () => {
  dir = await tempDir('lcow-verity-');
});
afterAll(() => dir?.cleanup());

async function dataFile(blocks: number, seed: number): Promise<string> {
  const p = join(dir.path, `d${n++}.img`);
  await writeFile(p, pseudoRandomBytes(blocks * 4096, seed));
  return p;
}

async function flip(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  const b = new Uint8Array(1);
  await fh.read(b, 0, 1, at);
  b[0] = b[0]! ^ 0x40;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

describe('tree shape', () => {
  it('levels of 128 digests per 4 KiB block', () => {
    expect(levelSizes(1)).toEqual([]);
    expect(levelSizes(128)).toEqual([1]);
    expect(levelSizes(129)).toEqual([2, 1]);
    expect(levelSizes(128 * 128 + 1)).toEqual([129, 2, 1]);
    expect(() => levelSizes(0)).toThrow(VhdError);
  });
});

describe.skipIf(!hasVeritysetup)('veritysetup agrees', () => {
  it.each([1, 127, 128, 129, 2563, 16385])(
    '%d data blocks: same root as veritysetup format; veritysetup verify accepts ours',
    async (blocks) => {
      const data = await dataFile(blocks, blocks);
      const copy = join(dir.path, `c${n++}.img`);
      await copyFile(data, copy);
      const r = await appendVerity(data, blocks * 4096);
      const theirs = await run('veritysetup', ['format', copy, `${copy}.hash`, `--salt=${SALT0}`]);
      expect(/Root hash:\s+([0-9a-f]{64})/.exec(theirs)?.[1]).toBe(r.rootDigest);
      await run('veritysetup', ['verify', data, data, r.rootDigest, `--hash-offset=${blocks * 4096}`]);
      const dump = await run('veritysetup', ['dump', data, `--hash-offset=${blocks * 4096}`]);
      expect(dump).toMatch(new RegExp(`Data blocks:\\s+${blocks}\\n`));
      expect(dump).toMatch(/Hash type:\s+1\n/);
      expect(dump).toMatch(/Hash algorithm:\s+sha256\n/);
      expect(dump).toMatch(new RegExp(`Salt:\\s+${SALT0}`));
      expect((await stat(data)).size).toBe(blocks * 4096 + r.hashSize);
      expect(await verityDigest(copy, blocks * 4096)).toBe(r.rootDigest);
      async function* chunks() {
        const all = pseudoRandomBytes(blocks * 4096, blocks);
        for (let i = 0; i < all.length; i += 3000) yield all.subarray(i, i + 3000);
      }
      expect(await verityDigest(chunks(), blocks * 4096)).toBe(r.rootDigest);
      expect(await checkVerity(data, blocks * 4096, r.rootDigest)).toEqual({ ok: true, rootDigest: r.rootDigest });
    },
  );

  it('a flipped data or tree byte fails veritysetup and our check, which names the first bad block', async () => {
    const blocks = 300;
    const data = await dataFile(blocks, 7);
    const r = await appendVerity(data, blocks * 4096);
    const info = await readVerity(data, blocks * 4096);
    await flip(data, 200 * 4096 + 5); // data block 200 → leaf hash block 1
    await expect(
      run('veritysetup', ['verify', data, data, r.rootDigest, `--hash-offset=${blocks * 4096}`]),
    ).rejects.toThrow();
    const bad = await checkVerity(data, blocks * 4096, r.rootDigest);
    expect(bad).toMatchObject({ ok: false, firstBad: { level: 0, block: 1 } });
    await flip(data, 200 * 4096 + 5);
    await flip(data, info.levelOffsets[0]! + 10); // a digest in the first leaf block
    await expect(
      run('veritysetup', ['verify', data, data, r.rootDigest, `--hash-offset=${blocks * 4096}`]),
    ).rejects.toThrow();
    expect(await checkVerity(data, blocks * 4096, r.rootDigest)).toMatchObject({
      ok: false,
      firstBad: { level: 0, block: 0 },
    });
    await flip(data, info.levelOffsets[0]! + 10);
    expect(await checkVerity(data, blocks * 4096, '00'.repeat(32))).toMatchObject({
      ok: false,
      firstBad: { level: 'root' },
    });
  });
});

describe('LeafHasher', () => {
  it('gives each block H(salt ‖ block), however the blocks are handed over, with reused buffers', async () => {
    const salt = pseudoRandomBytes(32, 7);
    const data = pseudoRandomBytes(5 * 1024 * 1024 + 3 * 4096, 11);
    const blocks = data.length / 4096;
    const got = new Uint8Array(blocks * 32);
    const h = new LeafHasher(salt, (first, d) => got.set(d, first * 32), 2);
    try {
      // Pieces of 4 KiB, 1 MiB + 8 KiB (split across jobs) and the rest; a block handed over twice keeps the later bytes.
      await h.hash(0, data.subarray(0, 4096));
      await h.hash(1, data.subarray(4096, 4096 + (1 << 20) + 8192));
      const rest = 1 + 256 + 2;
      await h.hash(rest, data.subarray(rest * 4096));
      await h.hash(3, new Uint8Array(4096));
      await h.drain();
    } finally {
      await h.close();
    }
    const want = (b: number): string =>
      createHash('sha256')
        .update(salt)
        .update(b === 3 ? new Uint8Array(4096) : data.subarray(b * 4096, (b + 1) * 4096))
        .digest('hex');
    for (let b = 0; b < blocks; b++)
      expect(Buffer.from(got.subarray(b * 32, b * 32 + 32)).toString('hex'), `block ${b}`).toBe(want(b));
    await expect(h.hash(0, new Uint8Array(4096))).rejects.toThrow(VhdError);
    const other = new LeafHasher(salt, () => {});
    await expect(other.hash(0, new Uint8Array(100))).rejects.toThrow(/whole blocks/);
    await other.close();
  });
});

describe('corrupt or truncated verity areas give a typed error', () => {
  it.each([
    ['signature', 0, 'ERR_VHD_FORMAT'],
    ['version', 8, 'ERR_VHD_UNSUPPORTED'],
    ['hash type', 12, 'ERR_VHD_UNSUPPORTED'],
    ['algorithm', 32, 'ERR_VHD_UNSUPPORTED'],
    ['data block count', 75, 'ERR_VHD_FORMAT'],
    ['salt size', 80, 'ERR_VHD_FORMAT'],
  ])('%s', async (_name, at, code) => {
    const blocks = 200;
    const data = await dataFile(blocks, 3);
    await appendVerity(data, blocks * 4096);
    await flip(data, blocks * 4096 + at + (at === 80 ? 1 : 0));
    await expect(readVerity(data, blocks * 4096)).rejects.toMatchObject({ code });
  });

  it('truncated tree, missing superblock, bad arguments', async () => {
    const blocks = 200;
    const data = await dataFile(blocks, 4);
    await appendVerity(data, blocks * 4096);
    const fh = await open(data, 'r+');
    await fh.truncate(blocks * 4096 + 4096 + 100);
    await fh.close();
    await expect(readVerity(data, blocks * 4096)).rejects.toThrow(/the tree needs/);
    await expect(readVerity(data, 999 * 4096)).rejects.toMatchObject({ code: 'ERR_VHD_FORMAT' });
    await expect(appendVerity(data, 1000)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });
});

const anchor = referenceTool('hcsshim-tar2ext4') ?? '';
describe.skipIf(!anchor || !hasVeritysetup)('hcsshim as a witness (when ../shared/anchors is present)', () => {
  it('our reader and checker accept hcsshim -verity images with its -digest', async () => {
    const tar = join(dir.path, 'h.tar');
    await run('tar', ['-C', resolve(import.meta.dirname, '..'), '-cf', tar, 'src']);
    const img = join(dir.path, 'h.img');
    await run(anchor, ['-i', tar, '-o', img, '-overlay', '-verity', '-max-size', String(128 * 2 ** 30)]);
    const digest = (await run(anchor, ['-i', tar, '-digest'])).trim();
    const blocks = Number(/Block count:\s+(\d+)/.exec(await run('dumpe2fs', ['-h', img]))?.[1]);
    expect(await checkVerity(img, blocks * 4096, digest)).toEqual({ ok: true, rootDigest: digest });
    expect(await verityDigest(img, blocks * 4096)).toBe(digest);
  });
});
