// pnpm bench (in packages/driver, or from the root): the confidential-container job — each layer's
// dm-verity root hash of a large multi-layer image — by `lcow image roothash` beside hcsshim's
// dmverity-vhd (what Azure's policy tooling runs), on the same docker-save archive made here at bench time
// from real trees (one layer per tree), plus a plain read of the archive for what the disk allows. Each
// case runs in its own process tree; the table gives best and median wall time, throughput over the
// image's size, the peak RSS of the biggest single process and of the whole tree together.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { printTable, runMeasured, type Measured } from '@lcow/testkit';

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

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'lcow-bench-image-'));
  try {
    process.stderr.write(`bench: making a ${trees.length}-layer image from ${trees.join(' ')} …\n`);
    const layers: string[] = [];
    for (const [i, t] of trees.entries()) {
      const name = `layer${i}.tar`;
      execFileSync('tar', ['--format=posix', '-C', '/', '-cf', join(work, name), t.replace(/^\//, '')], {
        stdio: 'ignore',
      });
      layers.push(name);
    }
    const diffIds = await Promise.all(layers.map((l) => sha256File(join(work, l))));
    const config = JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: diffIds },
    });
    const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
    await writeFile(join(work, configName), config);
    await writeFile(
      join(work, 'manifest.json'),
      JSON.stringify([{ Config: configName, RepoTags: ['bench/image:1'], Layers: layers }]),
    );
    const image = join(work, 'image.tar');
    execFileSync('tar', ['-C', work, '-cf', image, 'manifest.json', configName, ...layers]);
    for (const l of layers) await rm(join(work, l));
    const bytes = statSync(image).size;
    const lcow = existsSync(resolve(here, '../dist/cli/main.js'))
      ? [resolve(here, '../bin.js')]
      : ['--conditions=@lcow/source', '--import', 'tsx', resolve(here, '../test/lcow-bin.ts')];
    const cases: [string, string, string[]][] = [
      ['lcow image roothash (layers in parallel)', process.execPath, [...lcow, 'image', 'roothash', image]],
    ];
    if (existsSync(dmverity))
      cases.push([
        'dmverity-vhd --tarball … roothash',
        dmverity,
        ['--tarball', image, 'roothash', '-i', 'bench/image:1'],
      ]);
    else process.stderr.write(`bench: ${dmverity} absent: no dmverity-vhd row\n`);
    cases.push(['cat image.tar > /dev/null (the disk)', 'sh', ['-c', `cat '${image}' > /dev/null`]]);
    const results = new Map<string, Measured[]>();
    const outputs = new Map<string, string>();
    for (let r = 0; r < runs; r++)
      for (const [name, cmd, args] of cases) {
        const m = await runMeasured(cmd, args, env, { tree: true });
        results.set(name, [...(results.get(name) ?? []), m]);
        outputs.set(name, m.stdout.trim());
      }
    const ours = outputs.get(cases[0]![0])!;
    const theirs = outputs.get('dmverity-vhd --tarball … roothash');
    if (theirs !== undefined && theirs !== ours) throw new Error(`root hashes differ:\n${ours}\n---\n${theirs}`);
    const ref = results.get('dmverity-vhd --tarball … roothash');
    console.log(
      `\nRoot hashes of a ${layers.length}-layer image, ${(bytes / 1e9).toFixed(2)} GB (${trees.join(', ')}), ${runs} runs` +
        `${theirs !== undefined ? '; both tools printed the same lines' : ''}:\n`,
    );
    printTable(
      ['case', 'best s', 'median s', 'MB/s (best)', 'vs dmverity-vhd', 'peak RSS MiB (process / tree)'],
      [...results].map(([name, ms]) => {
        const b = best(ms.map((m) => m.seconds));
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
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
