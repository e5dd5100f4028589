// pnpm bench (in packages/docker-plugin, or from the root): what a Docker user waits for, on our plugin beside
// overlay2 — two private dockerds (Debian's 20.10) in one run, the same images, interleaved trials:
//  1. `docker run --rm IMAGE /true` and `docker create IMAGE` (median and 90th percentile);
//  2. `docker load` of a 250 MB two-layer image, and a classic-builder `docker build` of three steps;
//  3. where a container start goes on the plugin: every graph-driver call of `docker run` with its duration
//     (the plugin's `--trace-calls`), and the plugin's peak memory.
// Run and create are also timed on a third dockerd whose storage driver is the protocol's floor
// (floor-plugin.ts: overlay2's design served as a plugin): what being a plugin costs by itself.
// Needs root, dockerd and cc (scripts/setup.sh installs them); says so otherwise.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  dockerSave,
  makeTar,
  oracle,
  printTable,
  pseudoRandomBytes,
  run,
  startDockerd,
  type Dockerd,
} from '@lcow/testkit';
import { releaseLeftovers } from '../test/client.ts';
import { startFloorPlugin } from './floor-plugin.ts';

const BIN = join(import.meta.dirname, '..', 'bin.js');
const BUILT = join(import.meta.dirname, '..', 'dist', 'main.js');
const runs = Number(process.env.LCOW_BENCH_RUNS ?? 3);
const RUNS_START = Number(process.env.LCOW_BENCH_DOCKER_RUNS ?? 15);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number): number =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const sec = (s: number): string => (s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
}

/** The plugin from the sources with `--trace-calls`; its stderr lines are collected in `lines`. */
async function startTracedPlugin(socket: string, state: string, lines: string[]): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      // The built plugin when there is one (as installed: its converter child is the bundled one), else the
      // sources under tsx, whose every converter child compiles its sources again (most of a second a layer).
      ...(existsSync(BUILT)
        ? [BIN]
        : ['--conditions=@lcow/source', '--import', 'tsx', join(import.meta.dirname, '..', 'test', 'plugin-bin.ts')]),
      '--socket',
      socket,
      '--state',
      state,
      '--trace-calls',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts);
      if (parts.some((l) => l.includes('serving'))) resolve();
    });
    child.on('exit', (code) => reject(new Error(`plugin exited ${code}: ${lines.join('\n')}`)));
  });
  return child;
}

function peakRssMb(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+)/.exec(text)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const missing = ['dockerd', 'cc'].filter((t) => !oracle(t));
  if (process.getuid?.() !== 0 || missing.length > 0) {
    console.log(`docker bench: skipped (needs root and ${missing.join(', ') || 'nothing else'})`);
    return;
  }
  const work = await mkdtemp('/var/tmp/lcow-bench-docker-');
  const name = `lcowbench${randomBytes(4).toString('hex')}`;
  const socket = `/run/docker/plugins/${name}.sock`;
  const trace: string[] = [];
  let plugin: ChildProcess | null = null;
  let floorPlugin: { close(): Promise<void> } | null = null;
  const floorName = `${name}floor`;
  const daemons: Dockerd[] = [];
  try {
    // A static /true in a two-layer image (the second layer a file), and a 250 MB two-layer image.
    await writeFile(join(work, 'true.c'), 'int main(void) { return 0; }\n');
    await run('cc', ['-static', '-O2', '-o', join(work, 'true'), join(work, 'true.c')]);
    const trueLayer = makeTar([{ path: 'true', body: await readFile(join(work, 'true')), mode: 0o755 }]);
    const etc = makeTar([{ path: 'etc/hostname', body: 'bench\n' }]);
    await dockerSave(join(work, 'true.tar'), [trueLayer, etc], 'bench/true:1');
    await dockerSave(
      join(work, 'big.tar'),
      [0, 1].map((i) => makeTar([{ path: `data${i}`, body: pseudoRandomBytes(125 << 20, i) }])),
      'bench/big:1',
    );
    await mkdir(join(work, 'ctx'));
    await writeFile(join(work, 'ctx', 'payload'), pseudoRandomBytes(4 << 20, 9));
    await writeFile(
      join(work, 'ctx', 'Dockerfile'),
      'FROM bench/true:1\nCOPY payload /payload\nRUN ["/true"]\nENV BENCH=1\n',
    );

    console.log(
      `the plugin: ${existsSync(BUILT) ? 'built (bin.js, bundled converter child)' : 'from the sources (tsx)'}`,
    );
    plugin = await startTracedPlugin(socket, join(work, 'plugin.init'), trace);
    floorPlugin = await startFloorPlugin(`/run/docker/plugins/${floorName}.sock`);
    const [lcow, overlay, floor] = await Promise.all([
      startDockerd(join(work, 'lcow'), ['--experimental', '--storage-driver', name]),
      startDockerd(join(work, 'overlay2'), ['--storage-driver', 'overlay2']),
      startDockerd(join(work, 'floor'), ['--experimental', '--storage-driver', floorName]),
    ]);
    daemons.push(lcow, overlay, floor);
    const sides = [
      ['overlay2', overlay],
      ['lcow', lcow],
    ] as const;
    const startSides = [...sides, ['floor', floor] as const];
    for (const [, d] of startSides) await d.docker('load', '-i', join(work, 'true.tar'));

    // 1. Container start and create.
    const times = new Map<string, number[]>();
    const add = (k: string, t: number): void => void (times.get(k) ?? times.set(k, []).get(k)!).push(t);
    for (const [, d] of startSides) await d.docker('run', '--rm', '--network', 'none', 'bench/true:1', '/true'); // warm
    const traceFrom = trace.length;
    for (let i = 0; i < RUNS_START; i++)
      for (const [side, d] of startSides) {
        add(`run ${side}`, await timed(() => d.docker('run', '--rm', '--network', 'none', 'bench/true:1', '/true')));
        let id = '';
        add(
          `create ${side}`,
          await timed(async () => void (id = (await d.docker('create', 'bench/true:1', '/true')).trim())),
        );
        await d.docker('rm', id);
      }
    const runTrace = trace.slice(traceFrom);

    // 2. Load and build.
    for (let r = 0; r < runs; r++)
      for (const [side, d] of sides) {
        await run('sync', []);
        add(`load ${side}`, await timed(() => d.docker('load', '-i', join(work, 'big.tar'))));
        await d.docker('rmi', 'bench/big:1');
        const tag = `bench/built:${r}`;
        add(`build ${side}`, await timed(() => d.docker('build', '-q', '--no-cache', '-t', tag, join(work, 'ctx'))));
        await d.docker('rmi', tag);
      }

    const row = (label: string, key: string): string[] => {
      const o = times.get(`${key} overlay2`)!;
      const l = times.get(`${key} lcow`)!;
      const f = times.get(`${key} floor`);
      return [
        label,
        sec(median(o)),
        f ? `${sec(median(f))} (${(median(f) / median(o)).toFixed(2)}×)` : '—',
        sec(median(l)),
        sec(pct(l, 0.9)),
        `${(median(l) / median(o)).toFixed(2)}×`,
      ];
    };
    console.log(
      `\n1–2. What a Docker user waits for: medians (start and create: ${RUNS_START} each; load and build: ${runs})`,
    );
    printTable(
      ['what', 'overlay2', 'plugin floor (/ overlay2)', 'lcow', 'lcow p90', 'lcow / overlay2'],
      [
        row('docker run --rm IMAGE /true', 'run'),
        row('docker create IMAGE', 'create'),
        row('docker load, 250 MB in two layers', 'load'),
        row('docker build, 3 steps (classic builder)', 'build'),
      ],
    );

    // 3. Where a start goes: each graph-driver call of the runs above, by method.
    const calls = new Map<string, number[]>();
    for (const l of runTrace) {
      const m = / call (\S+) \S+ ([\d.]+) ms/.exec(l);
      if (m) (calls.get(m[1]!) ?? calls.set(m[1]!, []).get(m[1]!)!).push(Number(m[2]));
    }
    const perRun = (xs: number[]): string => (xs.length / (RUNS_START * 2)).toFixed(1);
    console.log('\n3. The plugin’s calls during those runs and creates (per container; duration median and p90)');
    printTable(
      ['call', 'per container', 'median', 'p90', 'total per container'],
      [...calls]
        .sort((a, b) => b[1].reduce((x, y) => x + y, 0) - a[1].reduce((x, y) => x + y, 0))
        .map(([m, xs]) => [
          m,
          perRun(xs),
          `${median(xs).toFixed(1)} ms`,
          `${pct(xs, 0.9).toFixed(1)} ms`,
          `${(xs.reduce((x, y) => x + y, 0) / (RUNS_START * 2)).toFixed(1)} ms`,
        ]),
    );
    console.log(`the plugin’s peak RSS: ${peakRssMb(plugin.pid!).toFixed(0)} MB`);
  } finally {
    for (const d of daemons) await d.stop().catch(() => {});
    await floorPlugin?.close().catch(() => {});
    await rm(`/run/docker/plugins/${floorName}.sock`, { force: true });
    if (plugin && plugin.exitCode === null) {
      const exited = new Promise((r) => plugin!.once('exit', r));
      plugin.kill('SIGTERM');
      await exited;
    }
    await releaseLeftovers(work, join(work, 'lcow', 'data', name)).catch(() => {});
    await rm(work, { recursive: true, force: true }).catch(() => {});
  }
}

await main();
