// pnpm bench, part 2: the reader and mkfs.
// - Export: a large real layer image (our writer's conversion of a GNU tar of /usr/share and /usr/local)
//   back to a tar with @lcow/ext4, beside `tar -c` of the same image mounted by the kernel (root only) and
//   a plain copy of the image.
// - mkfs: an empty 20 GiB and 1 TiB filesystem with @lcow/ext4 (raw and VHDX), beside mkfs.ext4 with the
//   original driver's sandbox options on a sparse file, and `cp --sparse` of a 20 GiB sandbox (what the
//   original did with its cached copy when it had one).
// Each case runs in its own process, in rounds; the table shows best and median wall time and peak RSS.
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { printTable, runMeasured } from '@lcow/testkit';

const here = import.meta.dirname;
const dist = JSON.stringify(resolve(here, '../dist/index.js'));
const trees = (process.env.LCOW_BENCH_TREES ?? '/usr/share /usr/local').split(/\s+/).filter(Boolean);
const runs = Number(process.env.LCOW_BENCH_RUNS ?? 3);
const outRoot = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
const root = process.getuid?.() === 0;

interface Sample {
  seconds: number;
  rssKiB: number;
}

const sh = (cmd: string): void => void execFileSync('sh', ['-c', cmd], { stdio: 'ignore', env });

async function rounds(cases: [string, () => Promise<Sample>, () => Promise<void>][]): Promise<Map<string, Sample[]>> {
  const samples = new Map<string, Sample[]>(cases.map(([name]) => [name, []]));
  for (let i = 0; i < runs; i++) {
    for (const [name, run, after] of cases) {
      execFileSync('sync');
      samples.get(name)!.push(await run());
      await after();
    }
  }
  return samples;
}

function rows(samples: Map<string, Sample[]>, bytes: number | null, refName: string): string[][] {
  const out: string[][] = [];
  const best = (n: string): number => Math.min(...samples.get(n)!.map((s) => s.seconds));
  const ref = samples.has(refName) ? best(refName) : 0;
  for (const [name, got] of samples) {
    const times = got.map((s) => s.seconds).sort((a, b) => a - b);
    const b = times[0]!;
    const fmt = (t: number): string => (t < 1 ? `${(t * 1000).toFixed(0)} ms` : `${t.toFixed(2)} s`);
    out.push([
      name,
      fmt(b),
      fmt(times[Math.floor(times.length / 2)]!),
      ...(bytes ? [`${(bytes / 1e6 / b).toFixed(0)} MB/s`] : []),
      `${(Math.max(...got.map((s) => s.rssKiB)) / 1024).toFixed(0)} MB`,
      ref ? `${(ref / b).toFixed(2)}×` : '',
    ]);
  }
  return out;
}

async function exportBench(work: string, out: string): Promise<void> {
  const tar = join(work, 'input.tar');
  const dirs = trees.filter((t) => existsSync(t)).map((t) => t.replace(/^\//, ''));
  process.stderr.write(
    `bench: making the input: tar of ${dirs.map((d) => `/${d}`).join(' ')}, converted by @lcow/ext4 …\n`,
  );
  execFileSync('tar', ['--format=posix', '-C', '/', '-cf', tar, ...dirs], { stdio: 'ignore' });
  const image = join(out, 'layer.img');
  execFileSync(process.execPath, [
    '-e',
    `import(${dist}).then((m) => m.convert(process.argv[1], process.argv[2], { fsync: false }))`,
    tar,
    image,
  ]);
  await rm(tar);
  const imageBytes = statSync(image).size;
  const ours = `import(${dist}).then(async (m) => {
    const { createWriteStream } = await import('node:fs');
    const { pipeline } = await import('node:stream/promises');
    const fs = await m.Ext4Fs.open(process.argv[1]);
    await pipeline(m.exportTar(fs), createWriteStream(process.argv[2]));
    await fs.close();
  })`;
  const tarOut = join(out, 'out.tar');
  const clean = async (): Promise<void> => void (await rm(tarOut, { force: true }));
  const cases: [string, () => Promise<Sample>, () => Promise<void>][] = [
    ['@lcow/ext4 exportTar (no mount)', () => runMeasured(process.execPath, ['-e', ours, image, tarOut], env), clean],
  ];
  const mnt = join(work, 'mnt');
  if (root) {
    await mkdir(mnt);
    sh(`mount -o loop,ro '${image}' '${mnt}'`);
    cases.push([
      'kernel mount + tar -c --xattrs',
      () =>
        runMeasured('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '-C', mnt, '-cf', tarOut, '.'], env),
      clean,
    ]);
  }
  cases.push(['plain copy of the image (cp)', () => runMeasured('cp', [image, tarOut], env), clean]);
  try {
    const samples = await rounds(cases);
    console.log(
      `\n@lcow/ext4 reader: export of a ${(imageBytes / 1e6).toFixed(0)} MB layer image; ${runs} runs each; outputs on ${outRoot}`,
    );
    if (!root) console.log('(not root: the kernel mount + tar -c row is left out)');
    printTable(
      ['case', 'best', 'median', 'image MB/s (best)', 'peak RSS', 'vs tar -c'],
      rows(samples, imageBytes, 'kernel mount + tar -c --xattrs'),
    );
  } finally {
    if (root) sh(`umount '${mnt}'`);
    await rm(image, { force: true });
  }
}

async function mkfsBench(out: string): Promise<void> {
  const img = join(out, 'fs.img');
  const clean = async (): Promise<void> => {
    await rm(img, { force: true });
    await rm(join(out, 'fs.vhdx'), { force: true });
    await rm(join(out, 'copy.img'), { force: true });
  };
  // The child also reports the time inside mkfs(): what the driver pays, without Node's start-up.
  const inProcess = new Map<string, number[]>();
  const ours = async (size: number, path: string, name: string): Promise<Sample> => {
    const code = `import(${dist}).then(async (m) => { const t = performance.now(); await m.mkfs(process.argv[1], { size: ${size}, fsync: false }); console.log(performance.now() - t); })`;
    const r = await runMeasured(process.execPath, ['-e', code, path], env);
    inProcess.set(name, [...(inProcess.get(name) ?? []), Number(r.stdout.trim())]);
    return r;
  };
  const theirs = (size: number): Promise<Sample> => {
    execFileSync('truncate', ['-s', String(size), img]);
    return runMeasured(
      'mkfs.ext4',
      ['-q', '-F', '-O', '^has_journal,sparse_super2,^resize_inode', '-E', 'lazy_itable_init=1', img],
      env,
    );
  };
  const G = 2 ** 30;
  const cases: [string, () => Promise<Sample>, () => Promise<void>][] = [
    ['@lcow/ext4 mkfs 20 GiB (raw)', () => ours(20 * G, img, '@lcow/ext4 mkfs 20 GiB (raw)'), clean],
    [
      '@lcow/ext4 mkfs 20 GiB (dynamic VHDX)',
      () => ours(20 * G, join(out, 'fs.vhdx'), '@lcow/ext4 mkfs 20 GiB (dynamic VHDX)'),
      clean,
    ],
    ['mkfs.ext4 20 GiB (sparse file)', () => theirs(20 * G), clean],
    [
      'cp --sparse=always of a 20 GiB sandbox',
      async () => {
        execFileSync('truncate', ['-s', String(20 * G), img]);
        sh(`mkfs.ext4 -q -F -O ^has_journal '${img}'`);
        return runMeasured('cp', ['--sparse=always', img, join(out, 'copy.img')], env);
      },
      clean,
    ],
    ['@lcow/ext4 mkfs 1 TiB (raw)', () => ours(1024 * G, img, '@lcow/ext4 mkfs 1 TiB (raw)'), clean],
    ['mkfs.ext4 1 TiB (sparse file)', () => theirs(1024 * G), clean],
  ];
  const samples = await rounds(cases);
  console.log(`\n@lcow/ext4 mkfs: an empty filesystem; ${runs} runs each; outputs on ${outRoot}`);
  const table = rows(samples, null, '');
  // Speed against mkfs.ext4 of the same size.
  for (const r of table) {
    const size = r[0]!.includes('1 TiB') ? '1 TiB' : '20 GiB';
    const ref = Math.min(...samples.get(`mkfs.ext4 ${size} (sparse file)`)!.map((s) => s.seconds));
    const mine = Math.min(...samples.get(r[0]!)!.map((s) => s.seconds));
    r[4] = `${(ref / mine).toFixed(2)}×`;
    const inside = inProcess.get(r[0]!);
    r.push(inside ? `${Math.min(...inside).toFixed(1)} ms` : '–');
  }
  printTable(['case', 'best', 'median', 'peak RSS', 'vs mkfs.ext4 (same size)', 'inside mkfs() (best)'], table);
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'lcow-bench-r-'));
  const out = await mkdtemp(join(outRoot, 'lcow-bench-r-out-'));
  try {
    await exportBench(work, out);
    await mkfsBench(out);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
}

await main();
