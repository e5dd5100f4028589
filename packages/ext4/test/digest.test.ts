// rootDigest: the dm-verity root of the image a tar converts to, computed without writing the image. It
// must equal the digest of the image convert() writes (itself checked by veritysetup and hcsshim elsewhere)
// for every layout and input form, and fail as convert() does.
import { gzipSync } from 'node:zlib';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, pseudoRandomBytes, tempDir } from '@lcow/testkit';
import { convert, rootDigest } from '../src/index.ts';
import { CASES, caseTar } from './hcsshim/cases.ts';

/** One buffer as a stream. */
const bytes = (b: Uint8Array): AsyncIterable<Uint8Array> =>
  (async function* () {
    yield b;
  })();

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-digest-');
});
afterAll(() => dir?.cleanup());

/** Many files and one large, odd-sized one: buffer flushes end inside blocks. */
function mixedTar(): Uint8Array {
  const entries: Parameters<typeof makeTar>[0] = [{ path: 'd/', type: 'dir' }];
  for (let i = 0; i < 3000; i++) entries.push({ path: `d/f${i}`, body: pseudoRandomBytes((i * 977) % 9000, i) });
  entries.push({ path: 'big', body: pseudoRandomBytes((9 << 20) + 123, 7) });
  entries.push(
    { path: 'd/.wh.f3', body: '' },
    { path: 'x', body: 'x', pax: { 'SCHILY.xattr.user.a': 'b'.repeat(3000) } },
  );
  return makeTar(entries);
}

describe('rootDigest', () => {
  for (const layout of ['lcow', 'hcsshim'] as const) {
    it(`equals the digest of the written image, layout ${layout}: every case, plain and gzip`, async () => {
      const tars: [string, Uint8Array][] = [
        ...Object.keys(CASES).map((n): [string, Uint8Array] => [n, caseTar(n)]),
        ['mixed', mixedTar()],
      ];
      let compared = 0;
      for (const [name, tar] of tars) {
        const opts = { layout, convertWhiteouts: true, maximumDiskSize: 128 * 2 ** 30 };
        const written = await convert(bytes(tar), join(dir.path, `${name}.img`), {
          ...opts,
          verity: true,
          fsync: false,
        }).then(
          (r) => r.rootDigest!,
          (e: { code?: string }) => `error ${e.code}`,
        );
        // gzip for two of them: the decompression path is the same for all.
        const inputs = name === 'mixed' || name === 'types' ? [tar, gzipSync(tar)] : [tar];
        for (const input of inputs) {
          const only = await rootDigest(bytes(input), opts).then(
            (r) => r.rootDigest,
            (e: { code?: string }) => `error ${e.code}`,
          );
          expect(only, `${name}`).toBe(written);
        }
        if (!written.startsWith('error')) compared++;
      }
      expect(compared).toBeGreaterThan(5);
    }, 300_000);
  }

  // The leaf table is kept in chunks of 128 MiB of image: a file across a chunk's end, small files, a
  // whiteout and an attribute block after it, so that the metadata written at the end lands in the
  // second chunk and the head (written last) in the first. Every block differs (its index is in it), so
  // a digest stored in the wrong place changes the root.
  it('equals the digest of the written image past 128 MiB of image, both layouts', async () => {
    const body = new Uint8Array(140 * 2 ** 20 + 123);
    const view = Buffer.from(body.buffer);
    for (let b = 0; b * 4096 < body.length - 8; b++) view.writeUInt32LE(b + 1, b * 4096 + 8);
    const entries: Parameters<typeof makeTar>[0] = [{ path: 'a/', type: 'dir' }];
    for (let i = 0; i < 500; i++) entries.push({ path: `a/f${i}`, body: pseudoRandomBytes(i * 37, i) });
    entries.push({ path: 'big', body });
    for (let i = 0; i < 500; i++) entries.push({ path: `b/g${i}`, body: pseudoRandomBytes(5000 + i, i) });
    entries.push(
      { path: 'a/.wh.gone', body: '' },
      { path: 'x', body: 'x', pax: { 'SCHILY.xattr.user.a': 'b'.repeat(3000) } },
    );
    const tar = makeTar(entries);
    for (const layout of ['lcow', 'hcsshim'] as const) {
      const opts = { layout, convertWhiteouts: true, maximumDiskSize: 128 * 2 ** 30 };
      const written = await convert(bytes(tar), join(dir.path, `chunks-${layout}.img`), {
        ...opts,
        verity: true,
        fsync: false,
      });
      expect(written.bytes, layout).toBeGreaterThan(130 * 2 ** 20);
      const only = await rootDigest(bytes(tar), opts);
      expect(only.rootDigest, layout).toBe(written.rootDigest);
      expect(only.dataBytes, layout).toBe(written.bytes);
    }
  }, 300_000);

  it('takes a path, a salt, and writes no file', async () => {
    const tar = join(dir.path, 'p.tar');
    await writeFile(tar, mixedTar());
    const salt = new Uint8Array(32).fill(7);
    const a = await rootDigest(tar, { salt });
    const b = await convert(tar, join(dir.path, 'p.img'), { verity: { salt }, fsync: false });
    expect(a.rootDigest).toBe(b.rootDigest);
    expect(a.dataBytes).toBe(b.bytes);
    expect(a.tarBytes).toBe(b.tarBytes);
  });

  it('refuses a bad tar with the converter’s error and stops on abort', async () => {
    await expect(rootDigest(bytes(makeTar([{ path: '../escape', body: 'x' }])))).rejects.toMatchObject({
      code: 'ERR_TAR_FORMAT',
    });
    const ac = new AbortController();
    ac.abort();
    await expect(rootDigest(bytes(mixedTar()), { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });
});
