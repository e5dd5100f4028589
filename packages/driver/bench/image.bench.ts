// pnpm bench (in packages/driver, or from the root): the confidential-container job — each layer's
// dm-verity root hash (`roothash`), and each layer's VHD (`create`) — by `lcow image` beside hcsshim's
// dmverity-vhd (what Azure's policy tooling runs), on the same docker-save archives made here at bench time:
// a large image of real trees (one layer per tree) and an image of many small layers (where a fixed cost per
// layer shows), plus a plain read of each archive for what the disk allows. Each case runs in its own process
// tree; the table gives best and median wall time, throughput over the image's size, the peak RSS of the
// biggest single process and of the whole tree together.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { makeTar, printTable, pseudoRandomBytes, runMeasured, type Measured } from '@lcow/testkit';

const here = import.meta.dirname;
const dmverity = resolve(here, '../../../../shared/anchors/dmverity-vhd');
const runs = Number(process.env.LCOW_BENCH_RUNS ?? 3);
const trees = (process.env.LCOW_BENCH_IMAGE_TREES ?? '/usr/share /usr/lib/x86_64-linux-gnu /usr/bin /usr/local')
  .split(/\s+/)
  .filter((t) => t && existsSync(t));
const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
const best = (xs: number[]): number => Math.min(...xs);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** A docker-save archive at `image` of the layer tars `layers` (files in `work`, removed after), tagged `tag`. */
async function archive(work: string, image: string, layers: string[], tag: string): Promise<void> {
  const diffIds = await Promise.all(layers.map((l) => sha256File(join(work, l))));
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } });
  const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
  await writeFile(join(work, configName), config);
  await writeFile(
    join(work, 'manifest.json'),
    JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: layers }]),
  );
  execFileSync('tar', ['-C', work, '-cf', image, 'manifest.json', configName, ...layers]);
  for (const l of [...layers, configName, 'manifest.json']) await rm(join(work, l));
}

/** The large image: one layer per tree of this machine (GNU tar, POSIX format). */
async function treesImage(work: string): Promise<{ image: string; label: string }> {
  process.stderr.write(`bench: making a ${trees.length}-layer image from ${trees.join(' ')} …\n`);
  const layers: string[] = [];
  for (const [i, t] of trees.entries()) {
    const name = `layer${i}.tar`;
    execFileSync('tar', ['--format=posix', '-C', '/', '-cf', join(work, name), t.replace(/^\//, '')], {
      stdio: 'ignore',
    });
    layers.push(name);
  }
  const image = join(work, 'trees.tar');
  await archive(work, image, layers, 'bench/image:1');
  return { image, label: `a ${layers.length}-layer image (${trees.join(', ')})` };
}

/** Many small layers, as images built with a RUN or COPY per step have: 30 layers of 40 files of 1–8 KiB. */
async function smallLayersImage(work: string): Promise<{ image: string; label: string }> {
  const layers: string[] = [];
  for (let i = 0; i < SMALL_LAYERS; i++) {
    const name = `small${i}.tar`;
    const files = Array.from({ length: 40 }, (_, f) => ({
      path: `step${i}/f${f}`,
      body: pseudoRandomBytes(1024 * (1 + ((i + f) % 8)), i * 100 + f),
    }));
    await writeFile(join(work, name), makeTar([{ path: `step${i}/`, type: 'dir' as const }, ...files]));
    layers.push(name);
  }
  const image = join(work, 'small.tar');
  await archive(work, image, layers, 'bench/image:1');
  return { image, label: `an image of ${SMALL_LAYERS} small layers` };
}

const SMALL_LAYERS = 30;

async function compare(work: string, image: string, label: string): Promise<void> {
  const bytes = statSync(image).size;
  const lcow = existsSync(resolve(here, '../dist/cli/main.js'))
    ? [resolve(here, '../bin.js')]
    : ['--conditions=@lcow/source', '--import', 'tsx', resolve(here, '../test/lcow-bin.ts')];
  const out = join(work, 'out');
  const cases: [string, string, string[]][] = [
    ['lcow image roothash (layers in parallel)', process.execPath, [...lcow, 'image', 'roothash', image]],
  ];
  const hasDmverity = existsSync(dmverity);
  if (hasDmverity)
    cases.push([
      'dmverity-vhd --tarball … roothash',
      dmverity,
      ['--tarball', image, 'roothash', '-i', 'bench/image:1'],
    ]);
  else process.stderr.write(`bench: ${dmverity} absent: no dmverity-vhd rows\n`);
  cases.push(['lcow image create -o DIR', process.execPath, [...lcow, 'image', 'create', image, '-o', out, '--force']]);
  if (hasDmverity)
    cases.push([
      'dmverity-vhd --tarball … create -o DIR',
      'sh',
      [
        '-c',
        `rm -rf '${out}' && mkdir '${out}' && exec '${dmverity}' --tarball '${image}' create -i bench/image:1 -o '${out}'`,
      ],
    ]);
  cases.push(['cat image.tar > /dev/null (the disk)', 'sh', ['-c', `cat '${image}' > /dev/null`]]);
  await mkdir(out, { recursive: true });
  const results = new Map<string, Measured[]>();
  const outputs = new Map<string, string>();
  for (let r = 0; r < runs; r++)
    for (const [name, cmd, args] of cases) {
      const m = await runMeasured(cmd, args, env, { tree: true });
      results.set(name, [...(results.get(name) ?? []), m]);
      outputs.set(name, m.stdout.trim());
    }
  await rm(out, { recursive: true, force: true });
  const ours = outputs.get(cases[0]![0])!;
  const theirs = outputs.get('dmverity-vhd --tarball … roothash');
  if (theirs !== undefined && theirs !== ours) throw new Error(`root hashes differ:\n${ours}\n---\n${theirs}`);
  const refOf = (name: string): Measured[] | undefined =>
    results.get(
      name.includes('create') ? 'dmverity-vhd --tarball … create -o DIR' : 'dmverity-vhd --tarball … roothash',
    );
  console.log(
    `\n${label}: ${(bytes / 1e6).toFixed(0)} MB, ${runs} runs` +
      `${theirs !== undefined ? '; both tools printed the same root hashes' : ''}:\n`,
  );
  printTable(
    ['case', 'best s', 'median s', 'MB/s (best)', 'vs dmverity-vhd', 'peak RSS MiB (process / tree)'],
    [...results].map(([name, ms]) => {
      const b = best(ms.map((m) => m.seconds));
      const ref = name.startsWith('lcow') ? refOf(name) : undefined;
      return [
        name,
        b.toFixed(2),
        median(ms.map((m) => m.seconds)).toFixed(2),
        (bytes / 1e6 / b).toFixed(0),
        ref ? `${(best(ref.map((m) => m.seconds)) / b).toFixed(2)}×` : '—',
        `${(Math.max(...ms.map((m) => m.rssKiB)) / 1024).toFixed(0)} / ${(Math.max(...ms.map((m) => m.treeRssKiB ?? 0)) / 1024).toFixed(0)}`,
      ];
    }),
  );
  await rm(image, { force: true });
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'lcow-bench-image-'));
  try {
    for (const make of [treesImage, smallLayersImage]) {
      const { image, label } = await make(work);
      await compare(work, image, label);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
