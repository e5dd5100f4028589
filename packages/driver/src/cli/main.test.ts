import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { lcow } from '../../test/lcow.ts';
import { caseTar } from '../../../ext4/test/hcsshim/cases.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, oracle, pseudoRandomBytes, run, tempDir } from '@lcow/testkit';
import { parseSize } from './format.ts';
import { synopses } from './main.ts';

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
      err: expect.stringMatching(/^lcow: ERR_USAGE: lcow vhd create: --size is required/),
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
    // The library's names: `size` the file, `bytes` the filesystem in it.
    expect(j).toMatchObject({ size: (await stat(out)).size, entries: 2, whiteouts: 1, seconds: expect.any(Number) });
    expect(j.bytes).toBe(j.size - 512);
    const info = JSON.parse((await lcow('vhd', 'info', out, '--json')).out);
    expect(info).toMatchObject({
      verdict: 'ok',
      disk: { format: 'vhd', virtualSize: j.bytes },
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
    expect(r.err).toBe(`lcow: ERR_EXISTS: ${out}: already exists (--force to replace it)\n`);
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

describe('the command line', () => {
  it("the root README's CLI block is exactly the synopses `lcow --help` prints", async () => {
    const readme = await readFile(join(import.meta.dirname, '..', '..', '..', '..', 'README.md'), 'utf8');
    const block = /## The `lcow` command\n[\s\S]*?```\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBe(`${synopses().join('\n')}\n`);
    const help = (await lcow('--help')).out;
    for (const s of synopses()) expect(help).toContain(`  ${s}\n`);
  });

  it('--version, bare lcow (help on stderr, 2), COMMAND --help with every option and its default', async () => {
    const pkg = JSON.parse(await readFile(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8'));
    expect(await lcow('--version')).toMatchObject({ status: 0, out: `lcow ${pkg.version}\n` });
    expect(await lcow('vhd', 'info', '--version')).toMatchObject({ status: 0, out: `lcow ${pkg.version}\n` });
    const bare = await lcow();
    expect(bare).toMatchObject({ status: 2, out: '' });
    expect(bare.err).toMatch(/^lcow — /);
    const mkfs = await lcow('mkfs', '--help');
    expect(mkfs.status).toBe(0);
    expect(mkfs.out).toMatch(/--inode-ratio BYTES\s+bytes per inode \(default: 16384\)/);
    expect(mkfs.out).toMatch(/--reserved PERCENT\s+blocks reserved for root \(default: 5\)/);
    const vhd = await lcow('vhd', '--help');
    for (const sub of ['info', 'create', 'convert']) expect(vhd.out).toContain(`usage: lcow vhd ${sub} `);
    expect((await lcow('vhd', 'create', '--help')).out).not.toContain('usage: lcow vhd info');
  });

  it('parse forms: --opt=value, a repeated flag, --, a global option after the command, - as an operand', async () => {
    const data = join(dir.path, 'forms-root');
    // --root after the command, and as --root=DIR before it: the same data root.
    expect(await lcow('ls', '--root', data, '--json', '--json')).toMatchObject({ status: 0, out: '[]\n' });
    expect(await lcow(`--root=${data}`, 'status', '--json')).toMatchObject({ status: 0 });
    expect(JSON.parse((await lcow('status', `--root=${data}`, '--json')).out).root).toBe(data);
    // An operand that starts with a dash, after --.
    const dashed = await lcow('vhd', 'info', '--', '-not-an-option');
    expect(dashed.status).toBe(1);
    expect(dashed.err).toMatch(/^lcow: ERR_NOT_FOUND: .*'-not-an-option' \(ENOENT\)\n$/);
    // Without -- it is an unknown option: a usage error naming the command.
    expect(await lcow('vhd', 'info', '-not-an-option')).toMatchObject({
      status: 2,
      err: expect.stringMatching(/^lcow: ERR_USAGE: lcow vhd info: Unknown option '-n'/),
    });
    // - is standard input for verity digest: the tar comes through io.stdin.
    const tar = makeTar([{ path: 'a', body: 'x' }]);
    const file = join(dir.path, 'forms.tar');
    await writeFile(file, tar);
    const fromFile = (await lcow('verity', 'digest', file)).out;
    const { PassThrough } = await import('node:stream');
    const stdin = new PassThrough();
    stdin.end(tar);
    const { lcowWith } = await import('../../test/lcow.ts');
    expect((await lcowWith({ stdin }, 'verity', 'digest', '-')).out).toBe(fromFile);
    // Too many operands, a missing value, an unknown subcommand: status 2 before any work.
    expect((await lcow('vhd', 'info', 'a', 'b')).err).toMatch(/takes FILE: unexpected "b"/);
    expect((await lcow('mkfs', 'x.img', '--size')).err).toMatch(/ERR_USAGE: lcow mkfs: Option '--size <value>'/);
    expect((await lcow('vhd', 'frob')).status).toBe(2);
    expect((await lcow('ls', '--backend', 'vmware')).err).toMatch(/--backend "vmware": host, inproc or hcs/);
  });

  it('-o - and --force alike everywhere: refused at once where the output cannot stream', async () => {
    for (const argv of [
      ['mkfs', '-', '--size', '1G'],
      ['vhd', 'create', '-', '--size', '1G'],
      ['vhd', 'convert', join(dir.path, 'none.raw'), '-'],
      ['tar2ext4', '-i', join(dir.path, 'none.tar'), '-o', '-'],
      ['image', 'create', 'oci:/nowhere', '-o', '-'],
    ]) {
      const r = await lcow(...argv);
      expect(r.status, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toMatch(/^lcow: ERR_USAGE: /);
    }
    // Existing outputs: kept without --force, replaced with it (mkfs, vhd create, ext4 export, demo).
    const keep = join(dir.path, 'keep.out');
    for (const argv of [
      ['mkfs', keep, '--size', '64M'],
      ['vhd', 'create', `${keep}.vhd`, '--size', '1M'],
    ]) {
      const target = argv[1] === 'create' ? argv[2]! : argv[1]!;
      await writeFile(target, 'precious');
      const r = await lcow(...argv);
      expect(r, argv.join(' ')).toMatchObject({ status: 1, err: expect.stringMatching(/^lcow: ERR_EXISTS: /) });
      expect(await readFile(target, 'utf8')).toBe('precious');
      expect((await lcow(...argv, '--force')).status, argv.join(' ')).toBe(0);
    }
    const img = join(dir.path, 'export-src.img');
    await writeFile(join(dir.path, 'export.tar'), makeTar([{ path: 'f', body: 'x' }]));
    expect((await lcow('tar2ext4', '-i', join(dir.path, 'export.tar'), '-o', img)).status).toBe(0);
    const tarOut = join(dir.path, 'export-out.tar');
    await writeFile(tarOut, 'precious');
    expect((await lcow('ext4', 'export', img, '-o', tarOut)).err).toMatch(/^lcow: ERR_EXISTS: /);
    expect(await readFile(tarOut, 'utf8')).toBe('precious');
    expect((await lcow('ext4', 'export', img, '-o', tarOut, '--force')).status).toBe(0);
    expect((await stat(tarOut)).size).toBeGreaterThan(1024);
  });

  it("hcsshim's tar2ext4 spellings: its layout and bytes, -digest, -only-vhd", async () => {
    const tar = join(dir.path, 'hcs.tar');
    await writeFile(
      tar,
      makeTar([
        { path: 'etc/', type: 'dir' },
        { path: 'etc/hosts', body: '127.0.0.1 localhost\n' },
        { path: '.wh.gone', body: '' },
      ]),
    );
    const go = join(dir.path, 'go.vhd');
    const r = await lcow('tar2ext4', '-i', tar, '-o', go, '-overlay', '-vhd', '-max-size=1073741824', '--json');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ layout: 'hcsshim', whiteouts: 1 });
    const ours = join(dir.path, 'ours.vhd');
    await lcow('tar2ext4', '-i', tar, '-o', ours, '--whiteouts', '--vhd', '--layout', 'hcsshim', '--max-size', '1G');
    const a = await readFile(go);
    const b = await readFile(ours);
    expect(a.subarray(0, -512).equals(b.subarray(0, -512))).toBe(true);
    // -digest: hcsshim's ConvertAndComputeRootDigest, equal to verity digest --layout hcsshim.
    const digest = await lcow('tar2ext4', '-digest', '-i', tar);
    expect(digest.out).toBe((await lcow('verity', 'digest', tar, '--layout', 'hcsshim')).out);
    expect(digest.out).toMatch(/^[0-9a-f]{64}\n$/);
    // -only-vhd: the input image copied, a footer appended.
    const copy = join(dir.path, 'only.vhd');
    const img = join(dir.path, 'only.img');
    await lcow('tar2ext4', '-i', tar, '-o', img);
    expect((await lcow('tar2ext4', '-i', img, '-only-vhd', '-o', copy)).status).toBe(0);
    const src = await readFile(img);
    const out = await readFile(copy);
    expect(out.length).toBe(src.length + 512);
    expect(out.subarray(0, src.length).equals(src)).toBe(true);
    expect(out.subarray(src.length, src.length + 8).toString()).toBe('conectix');
    expect((await lcow('tar2ext4', '-i', img, '-only-vhd', '-verity', '-o', `${copy}2`)).status).toBe(2);
  });

  it('reproducible: SOURCE_DATE_EPOCH or --timestamp gives the same .vhd byte for byte (verity included)', async () => {
    const tar = join(dir.path, 'repro.tar');
    await writeFile(tar, makeTar([{ path: 'x', body: 'same' }]));
    const outs = [join(dir.path, 'r1.vhd'), join(dir.path, 'r2.vhd'), join(dir.path, 'r3.vhd')];
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    const { lcowWith } = await import('../../test/lcow.ts');
    await lcowWith({ env }, 'tar2ext4', '-i', tar, '-o', outs[0]!, '--vhd', '--verity');
    await new Promise((r) => setTimeout(r, 1100));
    await lcowWith({ env }, 'tar2ext4', '-i', tar, '-o', outs[1]!, '--vhd', '--verity');
    await lcow('tar2ext4', '-i', tar, '-o', outs[2]!, '--vhd', '--verity', '--timestamp', '2023-11-14T22:13:20Z');
    const [a, b, c] = await Promise.all(outs.map((o) => readFile(o)));
    expect(a!.equals(b!)).toBe(true);
    expect(a!.equals(c!)).toBe(true);
    const info = JSON.parse((await lcow('vhd', 'info', outs[0]!, '--json')).out);
    expect(info.disk.footer.date).toBe('2023-11-14T22:13:20.000Z');
    const bad = await lcowWith({ env: { SOURCE_DATE_EPOCH: 'soon' } }, 'tar2ext4', '-i', tar, '-o', outs[0]!);
    expect(bad).toMatchObject({
      status: 2,
      err: 'lcow: ERR_USAGE: SOURCE_DATE_EPOCH "soon": expected seconds since 1970\n',
    });
  });

  it('verity info on an image without a tree says so plainly', async () => {
    const tar = join(dir.path, 'plain.tar');
    await writeFile(tar, makeTar([{ path: 'x', body: 'y' }]));
    const img = join(dir.path, 'plain.vhd');
    await lcow('tar2ext4', '-i', tar, '-o', img, '--vhd');
    const r = await lcow('verity', 'info', img);
    expect(r.status).toBe(1);
    expect(r.err).toMatch(
      /^lcow: ERR_NOT_FOUND: .*plain\.vhd: no dm-verity tree after the ext4 filesystem .*a VHD footer follows.*made without --verity\n$/,
    );
  });
});

describe('progress', () => {
  it('a known total draws a percentage; stdin and gzip (total unknown) draw bytes and rate, never a false 100 %', async () => {
    const { gzipSync } = await import('node:zlib');
    const { PassThrough } = await import('node:stream');
    const { lcowWith } = await import('../../test/lcow.ts');
    const tarBytes = makeTar([{ path: 'big', body: pseudoRandomBytes(4 << 20, 7) }]);
    const plain = join(dir.path, 'p.tar');
    const gz = join(dir.path, 'p.tar.gz');
    await writeFile(plain, tarBytes);
    await writeFile(gz, gzipSync(tarBytes));
    const drawn = async (input: string, stdin?: NodeJS.ReadableStream): Promise<string> => {
      let text = '';
      const sink = new PassThrough();
      sink.on('data', (c: Buffer) => (text += c.toString()));
      const tty = Object.assign(sink, { isTTY: true }) as unknown as NodeJS.WriteStream;
      const out = join(dir.path, `prog-${Math.random().toString(36).slice(2)}.img`);
      const r = await lcowWith({ progress: tty, ...(stdin ? { stdin } : {}) }, 'tar2ext4', '-i', input, '-o', out);
      expect(r.status, r.err).toBe(0);
      return text;
    };
    expect(await drawn(plain)).toMatch(/\] +\d+% /);
    for (const text of [await drawn(gz), await drawn('-', new PassThrough().end(tarBytes))]) {
      expect(text).toMatch(/ \d+(\.\d+)? (B|KiB|MiB) {2}\d+(\.\d+)? (B|KiB|MiB|GiB)\/s/);
      expect(text).not.toMatch(/%/);
    }
  });
});

describe('describeError', () => {
  it('one code, the errno once, and the output rather than a temporary name for a failed rename', async () => {
    const { describeError } = await import('../errors.ts');
    const e = Object.assign(new Error("ENOENT: no such file or directory, rename '/d/.out-p1-abc.tmp' -> '/d/out'"), {
      code: 'ENOENT',
      errno: -2,
      syscall: 'rename',
      path: '/d/.out-p1-abc.tmp',
      dest: '/d/out',
    });
    expect(describeError(e)).toEqual({
      code: 'ERR_NOT_FOUND',
      message: "no such file or directory, rename to '/d/out' (ENOENT)",
    });
  });
});

describe('external commands', () => {
  it('lcow NAME runs lcow-NAME from PATH with the remaining arguments and returns its status', async () => {
    const bin = join(dir.path, 'ext-bin');
    const { mkdir: mkdirP, chmod } = await import('node:fs/promises');
    await mkdirP(bin, { recursive: true });
    const script = join(bin, 'lcow-hello');
    const seen = join(dir.path, 'ext-seen');
    await writeFile(script, `#!/bin/sh\nprintf '%s|' "$@" > '${seen}'\nexit 3\n`);
    await chmod(script, 0o755);
    const saved = process.env.PATH;
    process.env.PATH = `${bin}:${saved ?? ''}`;
    try {
      const r = await lcow('hello', 'a b', '--flag');
      expect(r.status).toBe(3);
      expect(await readFile(seen, 'utf8')).toBe('a b|--flag|');
      // A name that is neither ours nor on PATH: a usage error.
      expect((await lcow('goodbye')).status).toBe(2);
    } finally {
      process.env.PATH = saved;
    }
  });
});
