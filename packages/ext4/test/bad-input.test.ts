import { open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertSameBytes, makeTar, oracle, pseudoRandomBytes, run, tempDir, type TarSpec, cpuMs } from '@lcow/testkit';
import { Ext4Error, Ext4Fs, convert, type ConvertOptions } from '../src/index.ts';

const hasE2fsck = oracle('e2fsck');
let dir: { path: string; cleanup: () => Promise<void> };
let n = 0;
beforeAll(async () => {
  dir = await tempDir('lcow-bad-');
});
afterAll(() => dir?.cleanup());

/** Converts and expects a typed error; checks that nothing is left at the output path. */
async function rejects(tar: Uint8Array, code: string, message: RegExp, opts: ConvertOptions = {}): Promise<void> {
  const out = join(dir.path, `bad${n++}.img`);
  const err = await convert(Readable.from([tar]), out, opts).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Ext4Error);
  expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
  await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
  expect((await readdir(dir.path)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
}

const ok: TarSpec[] = [
  { path: 'a/', type: 'dir' },
  { path: 'a/file', body: 'hello world' },
];

describe('bad tars give a typed error naming the entry and leave no output', () => {
  it('truncated in the middle of a file', async () => {
    const tar = makeTar([...ok, { path: 'a/big', body: new Uint8Array(10_000) }]);
    await rejects(
      tar.subarray(0, tar.length - 1024 - 3000),
      'ERR_TAR_FORMAT',
      /"a\/big": archive is truncated \(\d+ bytes of its data missing\)/,
    );
    await rejects(tar.subarray(0, 700), 'ERR_TAR_FORMAT', /archive is truncated/);
  });

  it('bad header checksum', async () => {
    await rejects(
      makeTar([...ok, { path: 'a/x', body: 'y', mangle: (h) => (h[0] = 0x42) }]),
      'ERR_TAR_FORMAT',
      /header checksum is \d+, computed \d+/,
    );
  });

  it('non-octal and absurd numbers', async () => {
    const nonOctal = (h: Uint8Array) => h.set(new TextEncoder().encode('0000009'), 100);
    await rejects(
      makeTar([{ path: 'm', body: 'x', mangle: nonOctal, rechecksum: true }]),
      'ERR_TAR_FORMAT',
      /"m": mode is not an octal number/,
    );
    const huge = (h: Uint8Array) =>
      h.set(Uint8Array.of(0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 124);
    await rejects(
      makeTar([{ path: 's', body: '', mangle: huge, rechecksum: true }]),
      'ERR_TAR_FORMAT',
      /"s": size is too large/,
    );
    const negative = (h: Uint8Array) =>
      h.set(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe), 124);
    await rejects(
      makeTar([{ path: 's', body: '', mangle: negative, rechecksum: true }]),
      'ERR_TAR_FORMAT',
      /size is negative/,
    );
    await rejects(
      makeTar([{ path: 'p', body: 'x', pax: { size: '12x' } }]),
      'ERR_TAR_FORMAT',
      /pax size "12x" is not a non-negative integer/,
    );
  });

  it('unsafe or impossible paths', async () => {
    await rejects(makeTar([{ path: 'a/../../etc/passwd', body: 'x' }]), 'ERR_TAR_FORMAT', /path contains "\.\."/);
    await rejects(makeTar([{ path: `d/${'x'.repeat(256)}`, body: 'x' }]), 'ERR_TAR_FORMAT', /longer than 255/);
    await rejects(makeTar([{ path: 'x', body: 'x', pax: { path: 'a\0b' } }]), 'ERR_TAR_FORMAT', /path contains NUL/);
    await rejects(
      makeTar([
        { path: 'link', type: 'symlink', linkname: '/etc' },
        { path: 'link/passwd', body: 'x' },
      ]),
      'ERR_TAR_FORMAT',
      /parent "link" is a symlink/,
    );
    await rejects(
      makeTar([
        { path: 'f', body: 'x' },
        { path: 'f/g', body: 'x' },
      ]),
      'ERR_TAR_FORMAT',
      /parent "f" is not a directory/,
    );
  });

  it('hard links to missing targets or directories', async () => {
    await rejects(
      makeTar([{ path: 'h', type: 'link', linkname: 'nowhere' }]),
      'ERR_TAR_FORMAT',
      /"h": hard link to "nowhere", which no earlier entry created/,
    );
    await rejects(
      makeTar([...ok, { path: 'h', type: 'link', linkname: 'a' }]),
      'ERR_TAR_FORMAT',
      /hard link to directory "a"/,
    );
  });

  it('replacing a non-empty directory with a file', async () => {
    await rejects(
      makeTar([...ok, { path: 'a', body: 'file now' }]),
      'ERR_TAR_FORMAT',
      /"a": cannot replace a non-empty directory/,
    );
  });

  it('more data than maximumDiskSize allows: ERR_DISK_FULL naming the entry', async () => {
    await rejects(
      makeTar([...ok, { path: 'a/big', body: new Uint8Array(2 << 20) }]),
      'ERR_DISK_FULL',
      /"a\/big": needs 512 more blocks/,
      { maximumDiskSize: 1 << 20 },
    );
    await expect(
      convert(Readable.from([makeTar(ok)]), join(dir.path, 'x.img'), { maximumDiskSize: 1000 }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });

  it('sizeLimit: ERR_DISK_FULL naming the entry, and the layout of what fits is unchanged', async () => {
    await rejects(
      makeTar([...ok, { path: 'a/big', body: new Uint8Array(2 << 20) }]),
      'ERR_DISK_FULL',
      /"a\/big": needs 512 more blocks; the filesystem would exceed the size limit \(1048576 bytes\)/,
      { sizeLimit: 1 << 20 },
    );
    const tar = makeTar(ok);
    const plain = join(dir.path, `limit${n++}.img`);
    const limited = join(dir.path, `limit${n++}.img`);
    await convert(Readable.from([tar]), plain);
    await convert(Readable.from([tar]), limited, { sizeLimit: 2 << 20 });
    expect(Buffer.compare(await readFile(plain), await readFile(limited))).toBe(0);
  });

  it('whiteouts of "." and "..": refused, naming the entry', async () => {
    for (const name of ['.wh..', '.wh...'])
      await rejects(
        makeTar([...ok, { path: `a/${name}`, body: '' }]),
        'ERR_TAR_FORMAT',
        new RegExp(`"a/${name.replace(/\./g, '\\.')}": whiteout of`),
        { convertWhiteouts: true },
      );
  });

  it('global pax headers: at most 64 KiB of keys an entry reads; unknown keys ignored; an empty value deletes', async () => {
    const specs: TarSpec[] = [];
    for (let g = 0; g < 20; g++) {
      const pax: Record<string, string> = {};
      for (let k = 0; k < 200; k++) pax[`SCHILY.xattr.user.g${g}k${k}`] = 'v'.repeat(16);
      specs.push({ path: `g${g}`, type: 'global', pax }, { path: `f${g}`, body: 'x' });
    }
    await rejects(makeTar(specs), 'ERR_TAR_FORMAT', /global pax headers hold \d+ bytes .*limit 65536/);
    // Unknown keys (megabytes of them) cost nothing; a global uid applies until an empty value removes it.
    const big: Record<string, string> = {};
    for (let k = 0; k < 15_000; k++) big[`vendor.k${k}`] = 'v'.repeat(30); // 0.8 MiB, under the per-header limit
    const out = join(dir.path, `global${n++}.img`);
    await convert(
      Readable.from([
        makeTar([
          { path: 'g', type: 'global', pax: { ...big, uid: '4242' } },
          { path: 'owned', body: 'x' },
          { path: 'g2', type: 'global', pax: { uid: '' } },
          { path: 'plain', body: 'y', uid: 7 },
        ]),
      ]),
      out,
    );
    const fs = await Ext4Fs.open(out);
    expect((await fs.stat('/owned')).uid).toBe(4242);
    expect((await fs.stat('/plain')).uid).toBe(7);
    await fs.close();
  });

  it.runIf(hasE2fsck)('a tar that replaces lost+found gives an image e2fsck -fn passes', async () => {
    for (const specs of [
      [{ path: 'lost+found', body: 'file' }],
      [{ path: 'lost+found', type: 'symlink', linkname: 'x' }],
      [{ path: '.wh.lost+found', body: '' }],
    ] as TarSpec[][]) {
      const out = join(dir.path, `lf${n++}.img`);
      await convert(Readable.from([makeTar(specs)]), out, { convertWhiteouts: true });
      await run('e2fsck', ['-fn', out]);
    }
  });

  it('a gzip stream that is not gzip after all', async () => {
    await rejects(Uint8Array.of(0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9), 'ERR_TAR_FORMAT', /gzip stream/);
  });

  it('abort stops the conversion and removes the output', async () => {
    const ac = new AbortController();
    const tar = makeTar([...ok, { path: 'a/big', body: new Uint8Array(8 << 20) }]);
    async function* slow() {
      for (let i = 0; i < tar.length; i += 1 << 20) {
        if (i > 2 << 20) ac.abort();
        yield tar.subarray(i, i + (1 << 20));
      }
    }
    const out = join(dir.path, 'aborted.img');
    await expect(convert(slow(), out, { signal: ac.signal })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('an endless input after the end marker: read up to 1 MiB past it, then left unread with a warning', async () => {
    const tar = makeTar(ok);
    let pulled = 0;
    // The archive, then zeros for ever (as `cat /dev/zero` after a tar on a pipe): the conversion must end.
    const endless = (async function* () {
      yield tar;
      const zeros = new Uint8Array(64 << 10);
      for (;;) {
        pulled += zeros.length;
        yield zeros;
      }
    })();
    const warnings: string[] = [];
    const out = join(dir.path, `trailing${n++}.img`);
    const r = await convert(endless, out, { onWarning: (w) => warnings.push(w.code) });
    expect(r.entries).toBe(2);
    expect(warnings).toContain('TAR_TRAILING_DATA');
    expect(pulled).toBeLessThan(2 << 20);
    // The usual record padding (10 KiB of zeros) is read quietly and changes nothing.
    const padded = new Uint8Array(tar.length + 10240);
    padded.set(tar);
    const quiet: string[] = [];
    const out2 = join(dir.path, `trailing${n++}.img`);
    await convert(Readable.from([padded]), out2, { onWarning: (w) => quiet.push(w.code) });
    expect(quiet).toEqual([]);
    assertSameBytes(await readFile(out2), await readFile(out), 'image with and without trailing data');
  });

  it('writes to an open file descriptor, and empties it on failure', async () => {
    const p = join(dir.path, 'fd.img');
    const fh = await open(p, 'w+');
    const r = await convert(Readable.from([makeTar(ok)]), fh.fd);
    expect((await fh.stat()).size).toBe(r.size);
    await expect(convert(Readable.from([makeTar([{ path: '../x', body: '' }])]), fh.fd)).rejects.toBeInstanceOf(
      Ext4Error,
    );
    expect((await fh.stat()).size).toBe(0);
    await fh.close();
  });

  it('documented safe handling: leading "/" and "./" are dropped, an unknown type is refused', async () => {
    const out = join(dir.path, 'abs.img');
    const r = await convert(
      Readable.from([
        makeTar([
          { path: '/abs/file', body: 'x' },
          { path: './rel', body: 'y' },
        ]),
      ]),
      out,
    );
    expect(r.files).toBe(2);
    await rejects(
      makeTar([{ path: 'weird', body: 'x', mangle: (h) => (h[156] = 0x5a), rechecksum: true }]),
      'ERR_TAR_FORMAT',
      /unsupported entry type "Z"/,
    );
  });
});

describe('fuzz', () => {
  // A plain Uint8Array: Buffer#slice would share memory and let mutations pile up across runs.
  const base = new Uint8Array(
    makeTar([
      { path: 'dir/', type: 'dir' },
      { path: 'dir/file', body: pseudoRandomBytes(3000, 1) },
      { path: 'dir/link', type: 'symlink', linkname: 'file' },
      { path: 'dir/hard', type: 'link', linkname: 'dir/file' },
      { path: 'x'.repeat(120), body: 'long', pax: { 'SCHILY.xattr.user.a': 'b' } },
    ]),
  );

  const headerOffsets: number[] = [];
  for (let at = 0; at + 512 <= base.length; at += 512) {
    if (Buffer.from(base.subarray(at + 257, at + 263)).toString('latin1') === 'ustar\0') headerOffsets.push(at);
  }
  const fixChecksum = (h: Uint8Array): void => {
    h.fill(0x20, 148, 156);
    const sum = h.reduce((a, b) => a + b, 0);
    h.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, '0')}\0 `), 148);
  };

  it('mutated tars convert or fail with an Ext4Error, quickly', async () => {
    let converted = 0;
    let rejected = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.noBias(fc.nat(base.length - 1025)), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 3,
        }),
        fc.oneof(fc.constant(base.length), fc.noBias(fc.nat(base.length))),
        fc.boolean(),
        async (edits, cut, fixSums) => {
          const tar = base.slice(0, Math.max(cut, 512));
          for (const [i, v] of edits) if (i < tar.length) tar[i] = v;
          // Mostly, let the damage past the header checksums so it reaches the deeper checks.
          if (fixSums)
            for (const at of headerOffsets) if (at + 512 <= tar.length) fixChecksum(tar.subarray(at, at + 512));
          const started = cpuMs();
          try {
            const out = join(dir.path, `fz${n++}.img`);
            await convert(Readable.from([tar]), out, { convertWhiteouts: true, maximumDiskSize: 64 << 20 });
            // Whatever a damaged tar still converts to must be a clean filesystem.
            if (hasE2fsck) await run('e2fsck', ['-fn', out]);
            await rm(out);
            converted++;
          } catch (e) {
            if (!(e instanceof Ext4Error)) throw e;
            rejected++;
          }
          expect(cpuMs() - started, 'CPU time of one case').toBeLessThan(5000);
        },
      ),
      { numRuns: 500 },
    );
    console.log(`[fuzz] tar mutations: ${converted} converted, ${rejected} rejected with Ext4Error`);
    expect(rejected).toBeGreaterThan(50);
    expect(converted).toBeGreaterThan(50);
  }, 600_000);
});
