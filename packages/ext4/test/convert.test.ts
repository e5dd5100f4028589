import { createHash } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, oracle, pseudoRandomBytes, rootWithLoop, run, tempDir, type TarSpec } from '@lcow/testkit';
import { readFooter, verityDigest } from '@lcow/vhd';
import { convert, probeExt4 } from '../src/index.ts';
import { convertChecked, mountedTree } from './helpers.ts';

const tools = oracle('e2fsck') && oracle('debugfs') && oracle('getfattr');
const kernel = tools && rootWithLoop();
const hasQemu = oracle('qemu-img');
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-t2e-');
});
afterAll(() => dir?.cleanup());

const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');
const cap = Uint8Array.of(1, 0, 0, 2, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0); // cap_net_bind_service, v2
const big = pseudoRandomBytes(5 * 4096 + 123, 9);
const longName = 'n'.repeat(255);
const longTarget = `/${'t'.repeat(300)}`;

/** One tar with every kind of entry a layer holds. */
const kitchenSink: TarSpec[] = [
  { path: 'etc/', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
  { path: 'etc/hostname', body: 'lcow\n', mode: 0o644, uid: 1000, gid: 1000 },
  { path: 'empty', body: '' },
  { path: 'big.bin', body: big, mode: 0o600, mtime: 1_650_000_000, mtimeNs: 123_456_789 },
  { path: 'deep/a/b/c/file', body: 'implicit parents' },
  { path: 'deep/a', type: 'dir', mode: 0o711, uid: 7, gid: 8, mtime: 1_500_000_000 }, // after its children
  { path: 'bin/', type: 'dir' },
  { path: 'bin/su', body: 'setuid', mode: 0o4755 },
  { path: 'bin/wall', body: 'setgid', mode: 0o2755, gid: 5 },
  { path: 'tmp/', type: 'dir', mode: 0o1777 },
  { path: 'short-link', type: 'symlink', linkname: 'etc/hostname' },
  { path: 'long-link', type: 'symlink', linkname: longTarget },
  { path: 'hard', type: 'link', linkname: 'etc/hostname' },
  { path: 'dev/null', type: 'chr', devmajor: 1, devminor: 3, mode: 0o666 },
  { path: 'dev/sda', type: 'blk', devmajor: 8, devminor: 0, mode: 0o660 },
  { path: 'dev/big', type: 'chr', devmajor: 300, devminor: 70000 },
  { path: 'fifo', type: 'fifo', mode: 0o644 },
  { path: `names/${longName}`, body: 'long name' },
  { path: 'ids', body: 'x', uid: 3_000_000, gid: 2_100_000 },
  { path: 'caps', body: 'ping', pax: { 'SCHILY.xattr.security.capability': cap, 'SCHILY.xattr.user.note': 'hello' } },
  { path: 'bigattr', body: 'x', pax: { 'SCHILY.xattr.user.big': 'v'.repeat(3000), 'SCHILY.xattr.trusted.t': 'y' } },
  { path: 'replaced', body: 'first version' },
  { path: 'replaced', body: 'second version' },
  { path: 'old-times', body: 'x', mtime: 0 },
  { path: 'future', body: 'x', mtime: 2 ** 33, mtimeNs: 999_999_999 },
];

describe.skipIf(!tools)('convert: every entry type', () => {
  it('writes an image e2fsck accepts and the kernel reads exactly as the tar says', async ({ skip }) => {
    const { image, result } = await convertChecked(dir.path, makeTar(kitchenSink), { appendVhdFooter: true });
    expect(result).toMatchObject({ entries: kitchenSink.length, files: 14, directories: 4, symlinks: 2, hardlinks: 1 });
    const footer = await readFooter(image);
    expect(footer.currentSize).toBe(result.bytes);
    if (hasQemu) {
      const q = JSON.parse(await run('qemu-img', ['info', '-f', 'vpc', '--output=json', image]));
      expect(q['virtual-size']).toBe(result.bytes);
    }
    if (!kernel) return skip('needs root with loop devices to mount the image: e2fsck and debugfs checks only');
    const t = await mountedTree(image, result, join(dir.path, 'mnt'));
    const e = (p: string) => t.get(p)!;
    expect(e('etc')).toMatchObject({ type: 'dir', mode: 0o755, mtimeNs: 1_600_000_000n * 10n ** 9n });
    expect(e('etc/hostname')).toMatchObject({
      type: 'file',
      mode: 0o644,
      uid: 1000,
      gid: 1000,
      size: 5,
      sha256: sha('lcow\n'),
      nlink: 2,
    });
    expect(e('hard')).toMatchObject({ sha256: sha('lcow\n'), nlink: 2 });
    expect(e('empty')).toMatchObject({ type: 'file', size: 0 });
    expect(e('big.bin')).toMatchObject({
      size: big.length,
      sha256: sha(big),
      mode: 0o600,
      mtimeNs: 1_650_000_000_123_456_789n,
    });
    expect(e('deep/a')).toMatchObject({
      type: 'dir',
      mode: 0o711,
      uid: 7,
      gid: 8,
      mtimeNs: 1_500_000_000n * 10n ** 9n,
    });
    expect(e('deep/a/b')).toMatchObject({ type: 'dir', mode: 0o755, uid: 0 });
    expect(e('deep/a/b/c/file').sha256).toBe(sha('implicit parents'));
    expect(e('bin/su').mode).toBe(0o4755);
    expect(e('bin/wall')).toMatchObject({ mode: 0o2755, gid: 5 });
    expect(e('tmp').mode).toBe(0o1777);
    expect(e('short-link')).toMatchObject({ type: 'symlink', target: 'etc/hostname' });
    expect(e('long-link')).toMatchObject({ type: 'symlink', target: longTarget, size: longTarget.length });
    expect(e('dev/null')).toMatchObject({ type: 'chr', rdev: [1, 3], mode: 0o666 });
    expect(e('dev/sda')).toMatchObject({ type: 'blk', rdev: [8, 0] });
    expect(e('dev/big')).toMatchObject({ type: 'chr', rdev: [300, 70000] });
    expect(e('fifo').type).toBe('fifo');
    expect(e(`names/${longName}`).sha256).toBe(sha('long name'));
    expect(e('ids')).toMatchObject({ uid: 3_000_000, gid: 2_100_000 });
    expect(e('caps').xattrs).toEqual({
      'security.capability': Buffer.from(cap).toString('hex'),
      'user.note': Buffer.from('hello').toString('hex'),
    });
    expect(e('bigattr').xattrs).toEqual({
      'user.big': Buffer.from('v'.repeat(3000)).toString('hex'),
      'trusted.t': '79',
    });
    expect(e('replaced').sha256).toBe(sha('second version'));
    expect(e('old-times').mtimeNs).toBe(0n);
    expect(e('future').mtimeNs).toBe(2n ** 33n * 10n ** 9n + 999_999_999n);
    // + the root and the implicit deep, deep/a/b, deep/a/b/c, dev, names
    expect(t.size).toBe(new Set(kitchenSink.map((s) => s.path.replace(/\/$/, ''))).size + 6);
  });

  it('debugfs agrees on inode details', async () => {
    const { image } = await convertChecked(dir.path, makeTar(kitchenSink));
    const host = await run('debugfs', ['-R', 'stat /etc/hostname', image]);
    expect(host).toMatch(/Type: regular\s+Mode:\s+0644/);
    expect(host).toMatch(/Links: 2/);
    expect(host).toMatch(/User:\s+1000\s+Group:\s+1000/);
    const big = await run('debugfs', ['-R', 'stat /big.bin', image]);
    expect(big).toMatch(/Size: 20603/);
    expect(big).toMatch(/EXTENTS:\n\(0-5\):\d+-\d+/);
    expect(await run('debugfs', ['-R', 'cat /deep/a/b/c/file', image])).toBe('implicit parents');
    expect(await run('debugfs', ['-R', 'ea_get /caps security.capability', image])).toMatch(/01 00 00 02 00 04/);
  });

  it('is deterministic: the same tar gives the same bytes', async () => {
    const tar = makeTar(kitchenSink);
    const a = await convertChecked(dir.path, tar);
    const b = await convertChecked(dir.path, tar);
    expect(sha(await readFile(a.image))).toBe(sha(await readFile(b.image)));
    const c = await convertChecked(dir.path, tar, {
      uuid: '12345678-1234-5678-9abc-def012345678',
      timestamp: new Date('2025-01-01Z'),
      label: 'layer',
    });
    const s = await probeExt4(async (o, l) => (await readFile(c.image)).subarray(o, o + l));
    expect(s).toMatchObject({ uuid: '12345678-1234-5678-9abc-def012345678', label: 'layer' });
    expect(s.features.sort()).toEqual([
      'dir_nlink',
      'ext_attr',
      'extent',
      'extra_isize',
      'filetype',
      'flex_bg',
      'huge_file',
      'large_file',
      'read-only',
      'sparse_super2',
    ]);
  });

  it('accepts gzip, a Readable or any async iterable, fed one byte at a time or in 321-byte chunks', async () => {
    const tar = makeTar(kitchenSink.slice(0, 8));
    const want = (await convertChecked(dir.path, tar)).image;
    const wantSha = sha(await readFile(want));
    const gz = gzipSync(tar);
    const r1 = await convert(Readable.from([gz]), join(dir.path, 'gz.img'));
    expect(r1.gzip).toBe(true);
    expect(sha(await readFile(join(dir.path, 'gz.img')))).toBe(wantSha);
    async function* pieces(b: Uint8Array, size: number) {
      for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
    }
    for (const size of [1, 321]) {
      await convert(pieces(tar, size), join(dir.path, `p${size}.img`));
      expect(sha(await readFile(join(dir.path, `p${size}.img`)))).toBe(wantSha);
    }
  });

  it('a tar file path (read through reused buffers) gives the same bytes as a stream', async () => {
    const specs: TarSpec[] = [
      { path: 'small', body: pseudoRandomBytes(5000, 1) },
      { path: 'odd', body: pseudoRandomBytes((5 << 20) + 123, 3) },
      { path: 'after', body: 'x' },
      { path: 'big', body: pseudoRandomBytes(9 << 20, 4) },
    ];
    const tar = makeTar(specs);
    const tarPath = join(dir.path, 'path.tar');
    await writeFile(tarPath, tar);
    await convert(tarPath, join(dir.path, 'from-path.img'));
    await convert(Readable.from([tar]), join(dir.path, 'from-stream.img'));
    expect(sha(await readFile(join(dir.path, 'from-path.img')))).toBe(
      sha(await readFile(join(dir.path, 'from-stream.img'))),
    );
    await writeFile(tarPath, tar.subarray(0, tar.length - (5 << 20)));
    await expect(convert(tarPath, join(dir.path, 'cut.img'))).rejects.toMatchObject({ code: 'ERR_TAR_FORMAT' });
    await expect(stat(join(dir.path, 'cut.img'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it.skipIf(!oracle('veritysetup'))(
    'verity: a hash tree after the filesystem, before the footer, that veritysetup verifies',
    async () => {
      const { image, result } = await convertChecked(dir.path, makeTar(kitchenSink), {
        verity: true,
        appendVhdFooter: true,
        convertWhiteouts: true,
      });
      expect(result.rootDigest).toMatch(/^[0-9a-f]{64}$/);
      expect((await readFooter(image)).currentSize).toBe(result.bytes + result.verityHashSize!);
      await run('veritysetup', [
        'verify',
        image,
        image,
        result.rootDigest!,
        `--hash-offset=${result.bytes}`,
        `--data-blocks=${result.blocks}`,
      ]);
      const plain = await convertChecked(dir.path, makeTar(kitchenSink), { convertWhiteouts: true });
      expect(await verityDigest(plain.image, plain.result.bytes)).toBe(result.rootDigest);
    },
  );

  it('stores tiny files inline with inlineData', async ({ skip }) => {
    const { image, result } = await convertChecked(
      dir.path,
      makeTar([
        { path: 'a', body: 'tiny' },
        { path: 'b', body: 'x'.repeat(60) },
        { path: 'c', body: 'x'.repeat(61) },
      ]),
      { inlineData: true },
    );
    expect(await run('debugfs', ['-R', 'stat /a', image])).toMatch(/Size of inline data: 60/);
    expect(await run('debugfs', ['-R', 'stat /a', image])).toMatch(/Size: 4\n/);
    if (!kernel) return skip('needs root with loop devices to mount the image: e2fsck and debugfs checks only');
    const t = await mountedTree(image, result, join(dir.path, 'mnt'));
    expect(t.get('a')).toMatchObject({ size: 4, sha256: sha('tiny') });
    expect(t.get('b')).toMatchObject({ size: 60, sha256: sha('x'.repeat(60)) });
    expect(t.get('c')).toMatchObject({ size: 61, sha256: sha('x'.repeat(61)) });
  });

  it('a 600 MiB file spans five extents through an extent leaf block', async () => {
    const size = 600 * 2 ** 20;
    const head = makeTar([{ path: 'huge', body: new Uint8Array(0) }], { end: false });
    // Patch the size field to 600 MiB and stream the body without holding it.
    const hdr = head.slice(0, 512);
    hdr.set(new TextEncoder().encode(size.toString(8).padStart(11, '0')), 124);
    hdr.fill(0x20, 148, 156);
    const sum = hdr.reduce((a, b) => a + b, 0);
    hdr.set(new TextEncoder().encode(sum.toString(8).padStart(6, '0') + '\0 '), 148);
    async function* body() {
      yield hdr;
      const chunk = new Uint8Array(4 << 20).fill(0x5a);
      for (let i = 0; i < size / chunk.length; i++) yield chunk;
      yield new Uint8Array(1024);
    }
    const image = join(dir.path, 'huge.img');
    const result = await convert(body(), image);
    await run('e2fsck', ['-fn', image]);
    expect(await run('debugfs', ['-R', 'stat /huge', image])).toMatch(/\(ETB0\):\d+, \(0-32767\)/);
    expect(result.bytes).toBeGreaterThan(size);
    expect((await stat(image)).size).toBe(result.size);
  }, 600_000);
});
