import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { lcow } from '../../test/lcow.ts';
import { caseTar } from '../../../ext4/test/hcsshim/cases.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, oracle, pseudoRandomBytes, run, tempDir } from '@lcow/testkit';
import { parseSize } from './format.ts';

const hasMkfs = oracle('mkfs.ext4');
const hasE2fsck = oracle('e2fsck');
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-cli-');
});
afterAll(() => dir?.cleanup());

describe('lcow vhd', () => {
  it('create → info --json for a dynamic and a fixed VHDX and a fixed VHD', async () => {
    const dyn = join(dir.path, 'a.vhdx');
    const r = await lcow('vhd', 'create', dyn, '--size', '20G', '--json');
    expect(r).toMatchObject({ status: 0, err: '' });
    const info = JSON.parse((await lcow('vhd', 'info', dyn, '--json')).out);
    expect(info).toMatchObject({
      verdict: 'ok',
      disk: { format: 'vhdx', virtualSize: 20 * 2 ** 30, blockSize: 2 ** 20, allocation: { presentBlocks: 0 } },
    });
    const fixed = join(dir.path, 'b.vhdx');
    expect((await lcow('vhd', 'create', fixed, '--size=64M', '--fixed', '--block-size', '2M')).status).toBe(0);
    const fi = JSON.parse((await lcow('vhd', 'info', fixed, '--json')).out);
    expect(fi.disk.allocation.contiguous).toEqual({ offset: 4 * 2 ** 20, length: 64 * 2 ** 20 });
    const vhd = join(dir.path, 'c.vhd');
    const v = await lcow('vhd', 'create', vhd, '--size', '10M');
    expect(v.out).toMatch(/format:\s+VHD \(fixed\)/);
    expect((await stat(vhd)).size).toBe(10 * 2 ** 20 + 512);
  });

  it.skipIf(!hasMkfs)('convert a raw image to .vhd and .vhdx; info shows the ext4 inside', async () => {
    const raw = join(dir.path, 'fs.raw');
    await run('truncate', ['-s', '24M', raw]);
    await run('mkfs.ext4', ['-q', '-F', '-L', 'cli-test', raw]);
    for (const out of ['fs.vhd', 'fs.vhdx']) {
      const r = await lcow('vhd', 'convert', raw, join(dir.path, out), '--json');
      expect(r.status).toBe(0);
      const rep = JSON.parse(r.out);
      expect(rep.contents).toMatchObject({ type: 'ext4', label: 'cli-test', blockSize: expect.any(Number) });
      expect(rep.disk.virtualSize).toBe(24 * 2 ** 20);
    }
  });

  it('errors print "lcow: CODE: message" and exit non-zero', async () => {
    const junk = join(dir.path, 'junk.vhd');
    await writeFile(junk, pseudoRandomBytes(4096, 1));
    const r = await lcow('vhd', 'info', junk);
    expect(r.status).toBe(1);
    expect(r.err).toMatch(
      new RegExp(`^lcow: ERR_VHD_FORMAT: ${junk.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: footer cookie`),
    );
    // An operating-system error becomes one of our codes, its errno named once at the end.
    expect((await lcow('vhd', 'info', join(dir.path, 'missing.vhdx'))).err).toMatch(
      /^lcow: ERR_NOT_FOUND: no such file or directory, open '[^']*missing\.vhdx' \(ENOENT\)\n$/,
    );
    expect(await lcow('vhd', 'create', join(dir.path, 'x.vhdx'))).toMatchObject({
      status: 2,
      err: expect.stringMatching(/^lcow: ERR_USAGE: --size is required/),
    });
    expect((await lcow('vhd', 'create', join(dir.path, 'x.vhdx'), '--size', '1000')).err).toMatch(
      /^lcow: ERR_INVALID_ARGUMENT: size 1000/,
    );
    expect((await lcow('vhd', 'create', join(dir.path, 'x.img'), '--size', '1M')).err).toMatch(
      /must end in \.vhd or \.vhdx/,
    );
    expect((await lcow('vhd', 'info', 'a', '--bogus')).status).toBe(2);
    expect((await lcow('nope')).status).toBe(2);
    expect((await lcow('--help')).out).toMatch(/lcow vhd info FILE/);
    const dup = join(dir.path, 'dup.vhdx');
    await lcow('vhd', 'create', dup, '--size', '1M');
    expect((await lcow('vhd', 'create', dup, '--size', '1M')).err).toMatch(/already exists/);
    expect((await lcow('vhd', 'create', dup, '--size', '2M', '--force')).status).toBe(0);
  });

  it('demo runs end to end and verifies every disk', async () => {
    const r = await lcow('demo', '--dir', join(dir.path, 'demo'), '--json');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.verified).toBe(true);
    expect(j.layer).toMatchObject({ entries: 10, whiteouts: 2, hardlinks: 1 });
    expect(j.reports.map((x: { disk: { format: string } }) => x.disk.format)).toEqual(['vhd', 'vhdx', 'vhdx']);
    expect(j.readBack).toEqual({ entries: expect.any(Number), differing: [] });
    expect(j.reports[2].contents).toMatchObject({ type: 'ext4', size: 20 * 2 ** 30 });
    if (hasE2fsck) await run('e2fsck', ['-fn', join(dir.path, 'demo', 'layer.img')]);
  });
});

describe('lcow tar2ext4', () => {
  it('converts a tar file to a layer.vhd; --json reports bytes, entries, seconds', async () => {
    const tar = join(dir.path, 'layer.tar');
    await writeFile(
      tar,
      makeTar([
        { path: 'etc/os-release', body: 'ID=lcow\n' },
        { path: '.wh.gone', body: '' },
      ]),
    );
    const out = join(dir.path, 'layer.vhd');
    const r = await lcow('tar2ext4', '-i', tar, '-o', out, '--vhd', '--whiteouts', '--json');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.out);
    expect(j).toMatchObject({ bytes: (await stat(out)).size, entries: 2, whiteouts: 1, seconds: expect.any(Number) });
    const info = JSON.parse((await lcow('vhd', 'info', out, '--json')).out);
    expect(info).toMatchObject({
      verdict: 'ok',
      disk: { format: 'vhd', virtualSize: j.filesystemBytes },
      contents: { type: 'ext4' },
    });
  });

  it('a bad tar prints the error code and the entry, and leaves no output', async () => {
    const tar = join(dir.path, 'bad.tar');
    await writeFile(tar, makeTar([{ path: '../escape', body: 'x' }]));
    const out = join(dir.path, 'bad.img');
    const r = await lcow('tar2ext4', '-i', tar, '-o', out);
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^lcow: ERR_TAR_FORMAT: tar entry "\.\.\/escape": path contains "\.\."/);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await lcow('tar2ext4', '-i', tar)).status).toBe(2);
  });

  it('an existing output is kept without --force (ERR_EXISTS) and replaced with it', async () => {
    const tar = join(dir.path, 'f.tar');
    await writeFile(tar, makeTar([{ path: 'f', body: 'new' }]));
    const out = join(dir.path, 'f.img');
    await writeFile(out, 'precious');
    const r = await lcow('tar2ext4', '-i', tar, '-o', out);
    expect(r.status).toBe(1);
    expect(r.err).toBe(`lcow: ERR_EXISTS: ${out}: already exists\n`);
    expect(await readFile(out, 'utf8')).toBe('precious');
    expect((await lcow('tar2ext4', '-i', tar, '-o', out, '--force')).status).toBe(0);
    expect((await stat(out)).size).toBeGreaterThanOrEqual(1 << 20);
  });

  it('arguments are checked before any work: -o -, a bad --uuid (exit 2, even with a missing input)', async () => {
    const missing = join(dir.path, 'missing.tar');
    const pipe = await lcow('tar2ext4', '-i', missing, '-o', '-');
    expect(pipe.status).toBe(2);
    expect(pipe.err).toMatch(/^lcow: ERR_USAGE: -o -: an ext4 image is written by position/);
    const uuid = await lcow('tar2ext4', '-i', missing, '-o', join(dir.path, 'u.img'), '--uuid', 'not-a-uuid');
    expect(uuid.status).toBe(2);
    expect(uuid.err).toBe('lcow: ERR_USAGE: --uuid "not-a-uuid": not a UUID\n');
  });

  it('an empty input and a zstd, xz or bzip2 one are refused by name; no output is left', async () => {
    const out = join(dir.path, 'e.img');
    const empty = join(dir.path, 'empty.tar');
    await writeFile(empty, '');
    const e = await lcow('tar2ext4', '-i', empty, '-o', out);
    expect(e.status).toBe(1);
    expect(e.err).toMatch(/^lcow: ERR_TAR_FORMAT: empty input/);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
    const heads: Record<string, number[]> = {
      zstd: [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0],
      xz: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0],
      bzip2: [0x42, 0x5a, 0x68, 0x39, 0x31, 0x41, 0x59, 0x26, 0x53, 0x59],
    };
    for (const [name, head] of Object.entries(heads)) {
      const f = join(dir.path, `c.${name}`);
      await writeFile(f, Buffer.concat([Buffer.from(head), Buffer.alloc(600)]));
      const r = await lcow('tar2ext4', '-i', f, '-o', out);
      expect(r.status, name).toBe(1);
      expect(r.err).toMatch(
        new RegExp(`^lcow: ERR_TAR_FORMAT: unsupported compression: the input is ${name}-compressed`),
      );
      await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
    }
  });
});

describe('lcow verity', () => {
  it('tar2ext4 --verity, then info, digest (of the tar and of the image) and check agree', async () => {
    const tar = join(dir.path, 'v.tar');
    await writeFile(
      tar,
      makeTar([
        { path: 'a', body: pseudoRandomBytes(70_000, 5) },
        { path: '.wh.b', body: '' },
      ]),
    );
    const out = join(dir.path, 'v.vhd');
    const r = await lcow('tar2ext4', '-i', tar, '-o', out, '--vhd', '--whiteouts', '--verity', '--json');
    expect(r.status).toBe(0);
    const { rootDigest } = JSON.parse(r.out);
    expect(rootDigest).toMatch(/^[0-9a-f]{64}$/);
    expect(r.err.trim()).toBe(rootDigest);
    const info = JSON.parse((await lcow('verity', 'info', out, '--json')).out);
    expect(info).toMatchObject({ algorithm: 'sha256', hashType: 1, salt: '0'.repeat(64) });
    expect((await lcow('verity', 'digest', tar)).out.trim()).toBe(rootDigest);
    expect((await lcow('verity', 'digest', out)).out.trim()).toBe(rootDigest);
    expect(await lcow('verity', 'check', out, rootDigest)).toMatchObject({
      status: 0,
      out: expect.stringMatching(/OK/),
    });
    const bad = await lcow('verity', 'check', out, '0'.repeat(64));
    expect(bad).toMatchObject({ status: 1, err: expect.stringMatching(/^lcow: ERR_VERIFICATION: .*root digest is/) });
    expect((await lcow('verity', 'check', out, 'xyz')).status).toBe(2);
  });
});

describe('lcow mkfs and lcow ext4', () => {
  it('mkfs a VHDX sandbox, convert a layer, then ls / cat / export read them back', async () => {
    const sandbox = join(dir.path, 'sandbox.vhdx');
    const m = await lcow('mkfs', sandbox, '--size', '20G', '--json');
    expect(m.status).toBe(0);
    expect(JSON.parse(m.out)).toMatchObject({ format: 'vhdx', size: 20 * 2 ** 30, groups: 160 });
    if (hasE2fsck) {
      const raw = join(dir.path, 'plain.img');
      expect((await lcow('mkfs', raw, '--size', '1G', '--uninit-bg', '--label', 'scratch')).status).toBe(0);
      await run('e2fsck', ['-fn', raw]);
    }
    const ls = JSON.parse((await lcow('ext4', 'ls', sandbox, '--json')).out);
    expect(ls).toEqual([expect.objectContaining({ name: 'lost+found', type: 'dir', mode: 0o700 })]);

    const tar = join(dir.path, 'cli-layer.tar');
    await writeFile(
      tar,
      makeTar([
        { path: 'etc/', type: 'dir' },
        { path: 'etc/motd', body: 'welcome\n' },
        { path: 'etc/with space & "quotes"', body: 'odd name' },
        { path: 'bin/sh', type: 'symlink', linkname: '/usr/bin/dash' },
        { path: 'gone/.wh.old', body: '' },
      ]),
    );
    const layer = join(dir.path, 'cli-layer.vhd');
    expect((await lcow('tar2ext4', '-i', tar, '-o', layer, '--vhd', '--whiteouts')).status).toBe(0);
    const text = (await lcow('ext4', 'ls', layer, '/etc')).out;
    expect(text).toMatch(/^-rw-r--r-- 1 0 0 8 \S+ motd$/m);
    expect((await lcow('ext4', 'ls', layer, 'bin')).out).toMatch(/sh -> \/usr\/bin\/dash/);
    expect((await lcow('ext4', 'cat', layer, 'etc/motd')).bytes.toString()).toBe('welcome\n');
    expect((await lcow('ext4', 'cat', layer, 'etc/with space & "quotes"')).bytes.toString()).toBe('odd name');
    const exported = join(dir.path, 'cli-export.tar');
    const ex = await lcow('ext4', 'export', layer, '-o', exported, '--json');
    expect(ex.status).toBe(0);
    expect(JSON.parse(ex.out)).toMatchObject({ entries: 7, output: exported });
    const listing = await run('tar', ['-tf', exported]);
    expect(listing.split('\n').filter(Boolean).sort()).toEqual(
      // lost+found is the converter's, not the layer's: left out.
      ['bin/', 'bin/sh', 'etc/', 'etc/motd', 'etc/with space & "quotes"', 'gone/', 'gone/.wh.old'],
    );
    const toStdout = await lcow('ext4', 'export', layer, '--root', 'etc');
    expect(toStdout.status).toBe(0);
    expect(toStdout.bytes.length % 512).toBe(0);
    expect(toStdout.bytes.subarray(0, 4).toString()).toBe('motd');
  });

  it('a corrupt image or a missing path: "lcow: CODE: message", exit 1, no stack trace', async () => {
    const layer = join(dir.path, 'corrupt.img');
    const img = Buffer.alloc(4 << 20);
    await writeFile(layer, img);
    const r = await lcow('ext4', 'ls', layer);
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^lcow: ERR_EXT4_CORRUPT: .*corrupt\.img: no ext2\/3\/4 superblock/);
    expect(r.err).not.toMatch(/\n\s+at /);
    const sandbox = join(dir.path, 'sandbox.vhdx');
    const miss = await lcow('ext4', 'cat', sandbox, 'no/such');
    expect(miss).toMatchObject({
      status: 1,
      err: expect.stringMatching(/^lcow: ERR_NOT_FOUND: .*"\/no": no such file/),
    });
    expect((await lcow('ext4', 'cat', sandbox)).status).toBe(2);
    expect((await lcow('mkfs', join(dir.path, 'x.img'))).status).toBe(2);
    expect((await lcow('mkfs', join(dir.path, 'x.img'), '--size', '1M')).err).toMatch(
      /^lcow: ERR_INVALID_ARGUMENT: size/,
    );
  });
});

describe('parseSize', () => {
  it.each([
    ['20G', 20 * 2 ** 30],
    ['512M', 512 * 2 ** 20],
    ['1.5K', 1536],
    ['4096', 4096],
    ['2GiB', 2 * 2 ** 30],
    ['64T', 64 * 2 ** 40],
  ])('%s', (t, n) => expect(parseSize(t, 'size')).toBe(n));
  it.each(['', 'G', '-1', '1X', '0.3'])('refuses %j', (t) =>
    expect(() => parseSize(t, 'size')).toThrow(/ERR_USAGE|expected a size|whole number/),
  );
});

describe('lcow verity digest --layout hcsshim', () => {
  it("prints the digest hcsshim's converter computes (golden values recorded with it)", async () => {
    const golden = JSON.parse(
      await readFile(join(import.meta.dirname, '../../../ext4/test/hcsshim/golden.json'), 'utf8'),
    ) as Record<string, { digest: string }>;
    for (const name of ['xattrs', 'parents', 'slashes']) {
      const tar = join(dir.path, `golden-${name}.tar`);
      await writeFile(tar, caseTar(name));
      const r = await lcow('verity', 'digest', tar, '--layout', 'hcsshim', '--json');
      expect(r.status, r.err).toBe(0);
      expect(JSON.parse(r.out)).toMatchObject({ rootDigest: golden[name]!.digest, source: 'tar', layout: 'hcsshim' });
    }
    // Our own layout gives another image, so another digest.
    const mine = await lcow('verity', 'digest', join(dir.path, 'golden-xattrs.tar'));
    expect(mine.out.trim()).not.toBe(golden.xattrs!.digest);
    expect((await lcow('verity', 'digest', 'x.tar', '--layout', 'windows')).status).toBe(2);
  });
});
