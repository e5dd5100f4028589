// Hostile input and careless concurrent use, through the `lcow` command in a child process with a time
// and a memory limit (the whole process tree is killed past either), a canary folder beside the data
// root. One describe per class of issue #14: hangs and blow-ups; escapes from the data root, the output
// and the host; wrong results from valid-looking input; the data root under concurrent and careless use.
// Every failure must be one line `lcow: ERR_…: message` with exit status 1, and leave nothing behind.
import { spawn } from 'node:child_process';
import { lstat, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { makeTar, oracle, run, runLimited, type TarSpec } from '@lcow/testkit';
import { hostRunDir } from '../src/backends/host.ts';
import {
  canary,
  canaryIntact,
  deepTar,
  dir,
  dockerArchive,
  failed,
  file,
  hasE2fsck,
  host,
  layers,
  lcow,
  lcowArgs,
  leftovers,
  n,
  ok,
  root,
  useHostileRoots,
} from './hostile-kit.ts';

useHostileRoots('lcow-hostile-');

describe('hangs and blow-ups: every bad input ends, quickly, in bounded memory', () => {
  const BAD: [string, TarSpec[], string][] = [
    ['a path with ..', [{ path: 'a/../../etc/x', body: 'x' }], 'a/../../etc/x'],
    ['a NUL in a name', [{ path: 'x', pax: { path: 'a\u0000b' }, body: 'x' }], 'NUL'],
    ['a hard link to nothing', [{ path: 'l', type: 'link', linkname: 'missing' }], 'missing'],
    ['a name longer than 255 bytes', [{ path: `d/${'n'.repeat(300)}`, body: 'x' }], 'nnnn'],
    [
      'a whiteout of ..',
      [
        { path: 'a/', type: 'dir' },
        { path: 'a/.wh...', body: '' },
      ],
      '.wh...',
    ],
    [
      'a whiteout of .',
      [
        { path: 'a/', type: 'dir' },
        { path: 'a/.wh..', body: '' },
      ],
      '.wh..',
    ],
  ];

  for (const [what, specs, names] of BAD) {
    it(`apply -i FILE and -i - refuse ${what} at once, naming the entry; nothing is committed`, async () => {
      const tar = await file('bad.tar', makeTar(specs));
      ok(await lcow(['create', 'L']));
      const r = await lcow(['apply', 'L', '-i', tar], { timeoutMs: 20_000 });
      failed(r, 'ERR_TAR_FORMAT', 'layer L', names);
      const viaStdin = await lcow(['apply', 'L', '-i', '-'], { input: await readFile(tar), timeoutMs: 20_000 });
      failed(viaStdin, 'ERR_TAR_FORMAT', 'layer L', names);
      expect((await layers()).map((l) => [l.id, l.kind])).toEqual([['L', 'empty']]);
      expect(await leftovers()).toEqual([]);
      await canaryIntact();
    });
  }

  it('import of an image whose second layer is bad: an error at once, the first layer whole, no half-made layer', async () => {
    const good = makeTar([
      { path: 'etc/', type: 'dir' },
      { path: 'etc/os-release', body: 'ID=hostile\n' },
    ]);
    const bad = makeTar([{ path: '../escape', body: 'x' }]);
    const image = await file('image.tar', dockerArchive([good, bad]));
    const r = await lcow(['import', image, '--no-sandbox'], { timeoutMs: 30_000 });
    failed(r, 'ERR_TAR_FORMAT', '../escape');
    const ls = await layers();
    expect(ls.map((l) => l.kind)).toEqual(['layer']);
    expect(await leftovers()).toEqual([]);
    // A diff id that does not match: refused, and no layer of it appears.
    const wrong = await file(
      'wrong.tar',
      dockerArchive([good, good], [`sha256:${'0'.repeat(64)}`, `sha256:${'1'.repeat(64)}`]),
    );
    failed(await lcow(['import', wrong, '--no-sandbox']), 'ERR_VERIFICATION', 'diff id');
    expect((await layers()).length).toBe(1);
    expect(await leftovers()).toEqual([]);
  });

  it('pax global headers that keep adding keys: refused in bounded memory; unknown global keys are ignored', async () => {
    const specs: TarSpec[] = [];
    for (let g = 0; g < 200; g++) {
      const pax: Record<string, string> = {};
      for (let k = 0; k < 500; k++) pax[`SCHILY.xattr.user.k${g}_${k}`] = 'v'.repeat(16);
      specs.push({ path: `g${g}`, type: 'global', pax });
      specs.push({ path: `f${g}`, body: 'x' });
    }
    const growing = await file('global.tar', makeTar(specs));
    const r = await lcow(['tar2ext4', '-i', growing, '-o', join(dir.path, `${n}.img`)], { maxRssMiB: 400 });
    failed(r, 'ERR_TAR_FORMAT', 'global pax headers');
    // Many global keys nobody reads: kept out of memory, the conversion goes through.
    const unknown: TarSpec[] = [];
    for (let g = 0; g < 100; g++) {
      const pax: Record<string, string> = {};
      for (let k = 0; k < 1000; k++) pax[`vendor.key${g}_${k}`] = 'v'.repeat(32);
      unknown.push({ path: `g${g}`, type: 'global', pax }, { path: `f${g}`, body: 'x' });
    }
    const quiet = await file('unknown.tar', makeTar(unknown));
    ok(await lcow(['tar2ext4', '-i', quiet, '-o', join(dir.path, `${n}-u.img`)], { maxRssMiB: 400 }));
  });

  it('10 000 nested directories apply; changes of a 1 000-deep tree answers in seconds; deeper paths fail cleanly', async () => {
    const deep = join(dir.path, `${n}-deep.tar`);
    deepTar(deep, 10_000);
    ok(await lcow(['create', 'D']));
    ok(await lcow(['apply', 'D', '-i', deep], { timeoutMs: 60_000 }));
    const tooDeep = await lcow(['changes', 'D'], { timeoutMs: 30_000 });
    failed(tooDeep, 'ERR_INVALID_ARGUMENT', 'longer than 4096');
    const thousand = join(dir.path, `${n}-1000.tar`);
    deepTar(thousand, 1000);
    ok(await lcow(['create', 'T']));
    ok(await lcow(['apply', 'T', '-i', thousand]));
    const r = await lcow(['changes', 'T'], { timeoutMs: 20_000 });
    ok(r);
    expect(r.out.split('\n').filter(Boolean)).toHaveLength(1001); // 1000 folders and the leaf
    expect(r.seconds).toBeLessThan(20);
  }, 600_000);

  it('3 million empty files stream through tar2ext4 in under 1 GiB of memory (the tar is never stored)', async () => {
    const FILES = 3_000_000;
    const PER_DIR = 1000;
    // ustar headers made from one template: name, then the checksum, patched per entry.
    const template = makeTar([{ path: 'd0000/f000000', body: '' }], { end: false });
    const dirTemplate = makeTar([{ path: 'd0000/', type: 'dir' }], { end: false });
    const withName = (t: Uint8Array, name: string): Uint8Array => {
      const h = Buffer.from(t);
      h.fill(0, 0, 100);
      h.write(name, 0, 'latin1');
      h.fill(0x20, 148, 156);
      let sum = 0;
      for (const b of h) sum += b;
      h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
      return h;
    };
    async function* tar(): AsyncGenerator<Uint8Array> {
      for (let d = 0; d < FILES / PER_DIR; d++) {
        const dir = `d${String(d).padStart(4, '0')}`;
        const batch = [withName(dirTemplate, `${dir}/`)];
        for (let f = 0; f < PER_DIR; f++) batch.push(withName(template, `${dir}/f${String(f).padStart(6, '0')}`));
        yield Buffer.concat(batch);
      }
      yield new Uint8Array(1024);
    }
    const img = join(dir.path, `${n}-many.img`);
    const r = await lcow(['tar2ext4', '-i', '-', '-o', img, '--no-fsync', '--json'], {
      input: tar(),
      // 40 s on a quiet machine; the bound catches a hang, with room for two other suites beside it.
      timeoutMs: 480_000,
      maxRssMiB: 1024,
    });
    ok(r);
    expect(JSON.parse(r.out)).toMatchObject({ files: FILES, directories: FILES / PER_DIR });
    console.log(`[hostile] ${FILES} empty files: ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`);
    await rm(img);
  }, 600_000);

  it('a gzip bomb stops at lcow.maxlayersize: ERR_DISK_FULL naming the entry, nothing committed', async () => {
    // 1.25 GiB of zeros in one file, about 1.3 MB compressed.
    const size = 1.25 * 2 ** 30;
    const header = makeTar([{ path: 'zeros', body: '' }], { end: false });
    header.set(Buffer.from(size.toString(8).padStart(11, '0')), 124);
    let sum = 0;
    header.fill(0x20, 148, 156);
    for (const b of header.subarray(0, 512)) sum += b;
    header.set(Buffer.from(`${sum.toString(8).padStart(6, '0')}\0 `), 148);
    const gz = await new Promise<Buffer>((resolve, reject) => {
      const z = spawn('sh', ['-c', `head -c ${size + 1024} /dev/zero | gzip -1`]);
      const parts: Buffer[] = [];
      z.stdout.on('data', (d: Buffer) => parts.push(d));
      z.on('error', reject);
      z.on('close', () => resolve(Buffer.concat(parts)));
    });
    const bomb = await file('bomb.tar.gz', Buffer.concat([gzipSync(header.subarray(0, 512)), gz]));
    ok(await lcow(['create', 'B']));
    const r = await lcow(['--storage-opt', 'lcow.maxlayersize=1', 'apply', 'B', '-i', bomb], { timeoutMs: 120_000 });
    failed(r, 'ERR_DISK_FULL', 'zeros', 'size limit');
    expect((await layers()).map((l) => [l.id, l.kind])).toEqual([['B', 'empty']]);
    expect(await leftovers()).toEqual([]);
    failed(await lcow(['--storage-opt', 'lcow.maxlayersize=0', 'ls']), 'ERR_INVALID_ARGUMENT', 'lcow.maxlayersize');
  }, 600_000);

  it('corrupt images: a self-referencing block map, an extent tree mapping one block a million times', async () => {
    if (!oracle('mkfs.ext2') || !oracle('debugfs')) return;
    // ext2, 1 KiB blocks: /f's single and triple indirect blocks are block 1500, which points at itself.
    const img = join(dir.path, `${n}-map.img`);
    await run('mkfs.ext2', ['-q', '-F', '-b', '1024', img, '2048']);
    await writeFile(join(dir.path, `${n}-f`), 'hello\n');
    await run('debugfs', ['-w', '-R', `write ${join(dir.path, `${n}-f`)} f`, img]);
    for (const c of ['sif /f block[IND] 1500', 'sif /f block[TIND] 1500', 'sif /f size 0x4000000000'])
      await run('debugfs', ['-w', '-R', c, img]);
    const bytes = Buffer.from(await readFile(img));
    for (let i = 0; i < 256; i++) bytes.writeUInt32LE(1500, 1500 * 1024 + i * 4);
    await writeFile(img, bytes);
    failed(await lcow(['ext4', 'cat', img, '/f'], { timeoutMs: 20_000, maxRssMiB: 300 }), 'ERR_EXT4_CORRUPT', '/f');
    // ext4: /g's extent root names 4 leaves; each leaf maps 340 extents of 1000 blocks onto the same blocks:
    // 5.5 GB to read out of an 8 MiB image.
    const ext = join(dir.path, `${n}-ext.img`);
    await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', '^metadata_csum,^has_journal', ext, '8M']);
    await run('debugfs', ['-w', '-R', `write ${join(dir.path, `${n}-f`)} g`, ext]);
    const out = await run('debugfs', ['-R', 'stat /g', ext]);
    const ino = Number(/Inode: (\d+)/.exec(out)![1]);
    const e = Buffer.from(await readFile(ext));
    // Inode table of group 0 (from the descriptor), inode `ino`, i_block at offset 40.
    const itable = e.readUInt32LE(4096 + 8) * 4096;
    const at = itable + (ino - 1) * e.readUInt16LE(1024 + 88) + 40;
    e.writeUInt16LE(0xf30a, at);
    e.writeUInt16LE(4, at + 2);
    e.writeUInt16LE(4, at + 4);
    e.writeUInt16LE(1, at + 6);
    for (let i = 0; i < 4; i++) {
      e.writeUInt32LE(i * 340 * 32768, at + 12 + i * 12);
      e.writeUInt32LE(1000 + i, at + 12 + i * 12 + 4);
      e.writeUInt16LE(0, at + 12 + i * 12 + 8);
      const leaf = (1000 + i) * 4096;
      e.fill(0, leaf, leaf + 4096);
      e.writeUInt16LE(0xf30a, leaf);
      e.writeUInt16LE(340, leaf + 2);
      e.writeUInt16LE(340, leaf + 4);
      for (let k = 0; k < 340; k++) {
        e.writeUInt32LE((i * 340 + k) * 1000, leaf + 12 + k * 12);
        e.writeUInt16LE(1000, leaf + 12 + k * 12 + 4);
        e.writeUInt32LE(100, leaf + 12 + k * 12 + 8);
      }
    }
    // i_size: 8 GiB.
    e.writeUInt32LE(0, itable + (ino - 1) * e.readUInt16LE(1024 + 88) + 4);
    e.writeUInt32LE(2, itable + (ino - 1) * e.readUInt16LE(1024 + 88) + 108);
    await writeFile(ext, e);
    const r = await lcow(['ext4', 'cat', ext, '/g'], { timeoutMs: 20_000, maxRssMiB: 300 });
    failed(r, 'ERR_EXT4_CORRUPT', '/g', 'maps more than');
  });
});

describe('the command line under hostile arguments', () => {
  /** An input that never ends: what a script piping the wrong thing gives. */
  async function* endless(): AsyncGenerator<Uint8Array> {
    const block = new Uint8Array(1 << 20).fill(0x41);
    for (;;) yield block;
  }

  it('arguments are refused before any input is read: an endless stdin does not keep the command', async () => {
    for (const args of [
      ['tar2ext4', '-i', '-', '-o', join(dir.path, 'never.vhd'), '--vhd', '--timestamp', '1'],
      ['tar2ext4', '-i', '-', '-o', join(dir.path, 'never.vhd'), '--uuid', 'zz'],
      ['tar2ext4', '-i', '-', '-o', '-'],
      ['tar2ext4', '-i', '-', '-o', join(dir.path, 'never.vhd'), '--max-size', '12 parsecs'],
    ]) {
      const r = await lcow(args, { input: endless(), timeoutMs: 20_000 });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^lcow: ERR_USAGE: [^\n]+\n$/);
    }
    await expect(stat(join(dir.path, 'never.vhd'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('-only-vhd of an endless input stops at --max-size: nothing written, no temporary file', async () => {
    const out = join(dir.path, 'endless.vhd');
    const r = await lcow(['tar2ext4', '-i', '-', '-only-vhd', '-o', out, '-max-size', '64M'], {
      input: endless(),
      timeoutMs: 30_000,
      maxRssMiB: 512,
    });
    failed(r, 'ERR_INVALID_ARGUMENT', 'standard input', '--max-size');
    expect((await readdir(dir.path)).filter((f) => f.includes('endless'))).toEqual([]);
  });

  it('100 000 operands, a 100 KiB option value (the kernel caps one argument at 128 KiB), an option repeated 10 000 times: usage errors in bounded time', async () => {
    const many = await lcow(['vhd', 'info', ...Array.from({ length: 100_000 }, (_, i) => `f${i}`)], {
      timeoutMs: 20_000,
    });
    expect(many.status).toBe(2);
    expect(many.stderr).toMatch(/^lcow: ERR_USAGE: lcow vhd info takes FILE: unexpected "f1"/);
    const long = await lcow(['tar2ext4', '-o', join(dir.path, 'x.img'), '--uuid', 'u'.repeat(100_000)], {
      timeoutMs: 20_000,
    });
    expect(long.status).toBe(2);
    expect(long.stderr.length).toBeLessThan(300);
    const repeated = await lcow(['ls', ...Array.from({ length: 10_000 }, () => '--json')], { timeoutMs: 20_000 });
    ok(repeated);
  });
});

describe('escapes from the data root, the output and the host', () => {
  const SPECIAL: TarSpec[] = [
    { path: 'zero', type: 'chr', devmajor: 1, devminor: 5, mode: 0o666 },
    { path: 'disk', type: 'blk', devmajor: 7, devminor: 0, mode: 0o666 },
    { path: 'pipe', type: 'fifo', mode: 0o666 },
    { path: 'passwd', type: 'symlink', linkname: '../../../../../../etc/passwd' },
    { path: 'suid', body: '#!/bin/sh\nid -u\n', mode: 0o4755 },
  ];

  it.runIf(host)(
    'lcow mount: run folders 0700, every mount nodev and nosuid; cat never opens a device, a FIFO or a link out',
    async () => {
      const tar = await file('special.tar', makeTar(SPECIAL));
      ok(await lcow(['create', 'base']));
      ok(await lcow(['apply', 'base', '-i', tar]));
      ok(await lcow(['create-rw', 'box', '--parent', 'base']));
      const m = await lcow(['mount', 'box']);
      ok(m);
      const target = m.out.trim();
      try {
        const mounts = (await run('findmnt', ['-rn', '-o', 'TARGET,OPTIONS'])).split('\n');
        // The union at <run dir>/u/box; its disks in the VM's folder beside it.
        const runDir = dirname(dirname(target));
        expect(target).toBe(join(runDir, 'u', 'box'));
        const ours = mounts.filter((l) => l.startsWith(`${runDir}/`));
        expect(ours.length).toBe(3); // the layer, the sandbox, the union
        for (const l of ours) expect(l.split(' ')[1]!.split(',')).toEqual(expect.arrayContaining(['nodev', 'nosuid']));
        for (const d of ['/run/lcow', runDir]) expect((await stat(d)).mode & 0o777, d).toBe(0o700);
        // Another user cannot reach the union at all.
        const nobody = await runLimited(
          'setpriv',
          ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', join(target, 'suid')],
          {
            timeoutMs: 10_000,
            maxRssMiB: 100,
          },
        );
        expect(nobody.status).not.toBe(0);
        expect(nobody.stderr).toMatch(/Permission denied/);
      } finally {
        ok(await lcow(['unmount', 'box']));
      }
      for (const name of ['zero', 'disk', 'pipe'])
        failed(
          await lcow(['cat', 'box', name], { timeoutMs: 20_000 }),
          'ERR_INVALID_ARGUMENT',
          name,
          'not a regular file',
        );
      // The link resolves inside the union, where there is no /etc/passwd.
      failed(await lcow(['cat', 'box', 'passwd']), 'ERR_NOT_FOUND', 'passwd');
      await canaryIntact();
    },
  );

  it('lcow diff -o and ext4 export -o never write through a link planted at a temporary name', async () => {
    const tar = await file('plain.tar', makeTar([{ path: 'a', body: 'data\n' }]));
    ok(await lcow(['create', 'L']));
    ok(await lcow(['apply', 'L', '-i', tar]));
    const outDir = join(dir.path, `${n}-out`);
    await mkdir(outDir);
    // Links at every name the old code could have chosen (pid-based), and at a few plausible others.
    for (let pid = 1; pid < 4200; pid += 1)
      for (const f of ['x.tar', 'y.tar']) await symlink(join(canary, 'file'), join(outDir, `.${f}.${pid}.tmp`));
    ok(await lcow(['diff', 'L', '-o', join(outDir, 'x.tar')]));
    ok(await lcow(['ext4', 'export', join(root, 'L', 'layer.vhd'), '-o', join(outDir, 'y.tar')]));
    expect((await lstat(join(outDir, 'x.tar'))).isFile()).toBe(true);
    expect((await readdir(outDir)).filter((f) => !f.endsWith('.tmp')).sort()).toEqual(['x.tar', 'y.tar']);
    await canaryIntact();
  });

  it('a data root whose tmp/, scratch/ or cache/ is a link is refused, and nothing it points to is touched', async () => {
    for (const sub of ['tmp', 'scratch', 'cache']) {
      await rm(root, { recursive: true, force: true });
      await mkdir(root, { recursive: true });
      await symlink(canary, join(root, sub));
      for (const args of [['ls'], ['cleanup'], ['create', 'x']])
        failed(await lcow(args), 'ERR_DATA_ROOT', `${sub} is a symbolic link`);
      await canaryIntact();
    }
    // A data root that is a file; a layer folder that is a link.
    await rm(root, { recursive: true, force: true });
    await writeFile(root, 'not a folder');
    failed(await lcow(['ls']), 'ERR_DATA_ROOT', 'not a directory');
    await rm(root);
    ok(await lcow(['ls']));
    await symlink(canary, join(root, 'evil'));
    expect(await layers()).toEqual([]);
    failed(await lcow(['create', 'evil']), 'ERR_LAYER_CORRUPT', 'symbolic link');
    ok(await lcow(['rm', 'evil']));
    await canaryIntact();
  });

  it('changes escapes names in text output, so a newline cannot forge an entry (JSON is exact)', async () => {
    const tar = await file(
      'nl.tar',
      makeTar([
        { path: 'evil\nD passwd', body: 'x' },
        { path: 'tab\there', body: 'y' },
      ]),
    );
    ok(await lcow(['create', 'N']));
    ok(await lcow(['apply', 'N', '-i', tar]));
    const text = await lcow(['changes', 'N']);
    ok(text);
    expect(text.out).toBe('A /evil\\nD passwd\nA /tab\\there\n');
    const json = JSON.parse((await lcow(['changes', 'N', '--json'])).out) as { path: string }[];
    expect(json.map((c) => c.path)).toEqual(['/evil\nD passwd', '/tab\there']);
  });
});

describe('wrong results from valid-looking input', () => {
  it.runIf(hasE2fsck)(
    'a tar that replaces lost+found (a file, a link, a whiteout) gives images e2fsck -fn passes',
    async () => {
      const cases: TarSpec[][] = [
        [{ path: 'lost+found', body: 'a file\n' }],
        [{ path: 'lost+found', type: 'symlink', linkname: '/etc' }],
        [
          { path: '.wh.lost+found', body: '' },
          { path: 'x', body: 'y' },
        ],
        [
          { path: 'lost+found/', type: 'dir', mode: 0o755 },
          { path: 'lost+found/f', body: 'kept\n' },
        ],
      ];
      for (const [i, specs] of cases.entries()) {
        const img = join(dir.path, `${n}-lf${i}.img`);
        ok(await lcow(['tar2ext4', '-i', await file(`lf${i}.tar`, makeTar(specs)), '-o', img, '--whiteouts']));
        await run('e2fsck', ['-fn', img]);
      }
    },
  );
});

describe('the data root under concurrent and careless use', () => {
  it('20 parallel creates of one id and of different ids: one of the same wins, every other id is there', async () => {
    ok(await lcow(['ls']));
    const runs = await Promise.all([
      ...Array.from({ length: 10 }, () => lcow(['create', 'same'])),
      ...Array.from({ length: 10 }, (_, i) => lcow(['create', `id${i}`])),
      lcow(['ls']),
      lcow(['create-rw', 'rw']),
    ]);
    const same = runs.slice(0, 10);
    expect(same.filter((r) => r.status === 0)).toHaveLength(1);
    for (const r of same.filter((x) => x.status !== 0)) failed(r, 'ERR_LAYER_EXISTS', 'same');
    for (const r of runs.slice(10)) ok(r);
    expect((await layers()).map((l) => l.id)).toEqual([
      'id0',
      'id1',
      'id2',
      'id3',
      'id4',
      'id5',
      'id6',
      'id7',
      'id8',
      'id9',
      'rw',
      'same',
    ]);
    expect(await leftovers()).toEqual([]);
  }, 600_000);

  it.runIf(host)(
    'a union mounted by another process: rm and apply of it and of its parent are refused until it is unmounted',
    async () => {
      const tar = await file('p.tar', makeTar([{ path: 'p', body: 'parent\n' }]));
      ok(await lcow(['create', 'P']));
      ok(await lcow(['apply', 'P', '-i', tar]));
      ok(await lcow(['create-rw', 'S', '--parent', 'P']));
      ok(await lcow(['mount', 'S']));
      try {
        failed(await lcow(['rm', 'S']), 'ERR_LAYER_BUSY', 'S');
        failed(await lcow(['rm', 'P']), 'ERR_LAYER_BUSY', 'P');
        failed(await lcow(['apply', 'S', '-i', tar]), 'ERR_LAYER_BUSY', 'S');
        failed(await lcow(['apply', 'P', '-i', tar]), 'ERR_LAYER_BUSY', 'P');
        // Opening the root (every command does) leaves the other process's mount alone.
        expect((await layers()).map((l) => l.id)).toEqual(['P', 'S']);
        // This data root's union of S (another run's leftovers elsewhere on the machine do not count).
        const ours = join(hostRunDir(root), 'u', 'S');
        expect((await run('findmnt', ['-rn', '-o', 'TARGET'])).split('\n').filter((l) => l === ours)).toHaveLength(1);
      } finally {
        ok(await lcow(['unmount', 'S']));
      }
      ok(await lcow(['rm', 'S', 'P']));
      expect(await layers()).toEqual([]);
    },
  );

  it('SIGKILL of lcow import at random moments: no empty or partial layer is ever listed; a rerun completes', async () => {
    const tars = Array.from({ length: 3 }, (_, i) =>
      makeTar([
        { path: `layer${i}/`, type: 'dir' },
        { path: `layer${i}/data`, body: Buffer.alloc(4 << 20, i + 1) },
      ]),
    );
    const image = await file('img.tar', dockerArchive(tars));
    const seed = Number(process.env.LCOW_TEST_SEED ?? Date.now() % 100_000);
    console.log(`[hostile] SIGKILL seed ${seed} (LCOW_TEST_SEED to replay)`);
    let s = seed;
    const rand = (): number => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let k = 0; k < 6; k++) {
      const delay = 300 + Math.floor(rand() * 1500);
      await runLimited(process.execPath, lcowArgs(['import', image, '--no-sandbox']), {
        timeoutMs: delay,
        maxRssMiB: 1024,
      });
      const ls = await layers();
      for (const l of ls) expect(l.kind, `after a kill at ${delay} ms`).toBe('layer');
    }
    ok(await lcow(['import', image, '--no-sandbox']));
    expect((await layers()).map((l) => l.kind)).toEqual(['layer', 'layer', 'layer']);
    ok(await lcow(['cleanup']));
    expect(await leftovers()).toEqual([]);
  }, 600_000);

  it('a corrupt layerchain.json is reported by ls, hides nothing else, and rm removes it; bad chains are typed errors', async () => {
    ok(await lcow(['create', 'a']));
    ok(await lcow(['create', 'b', '--parent', 'a']));
    ok(await lcow(['create', 'c']));
    await writeFile(join(root, 'b', 'layerchain.json'), '{not json');
    const ls = await layers();
    expect(ls.map((l) => [l.id, l.kind, l.error?.code])).toEqual([
      ['a', 'empty', undefined],
      ['b', 'broken', 'ERR_LAYER_CHAIN_CORRUPT'],
      ['c', 'empty', undefined],
    ]);
    ok(await lcow(['rm', 'b']));
    // A chain that points outside the root, or is far too deep: typed errors, and nothing created.
    await writeFile(join(root, 'c', 'layerchain.json'), JSON.stringify([canary]));
    failed(await lcow(['create', 'd', '--parent', 'c']), 'ERR_LAYER_CHAIN_CORRUPT', 'not a layer folder');
    await writeFile(
      join(root, 'c', 'layerchain.json'),
      JSON.stringify(Array.from({ length: 10_000 }, () => join(root, 'a'))),
    );
    failed(await lcow(['mount', 'c']), 'ERR_LAYER_CHAIN_CORRUPT', '10000 parents');
    // layer.vhd that is a directory.
    await mkdir(join(root, 'a', 'layer.vhd'));
    failed(await lcow(['cat', 'a', '/x']), 'ERR_LAYER_CORRUPT', 'a directory');
    expect((await readdir(root)).sort()).toEqual(['a', 'c', 'cache', 'scratch', 'tmp']);
    // A chain deeper than 255 parents cannot be made: layers written as the original wrote them, 255 deep.
    const chain: string[] = [];
    for (let i = 0; i < 256; i++) {
      await mkdir(join(root, `deep${i}`));
      await writeFile(join(root, `deep${i}`, 'layerchain.json'), chain.length ? JSON.stringify(chain) : 'null');
      chain.unshift(join(root, `deep${i}`));
    }
    failed(await lcow(['create', 'too-deep', '--parent', 'deep255']), 'ERR_CHAIN_TOO_DEEP', 'at most 255');
    ok(await lcow(['create', 'just-fits', '--parent', 'deep254']));
    await canaryIntact();
  }, 600_000);
});
