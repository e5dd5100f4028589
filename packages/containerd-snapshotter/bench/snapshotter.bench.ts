// pnpm bench (in packages/containerd-snapshotter, or from the root): the snapshotter beside containerd's own
// overlayfs snapshotter, in one private containerd 1.6 (CRI on, lcow its snapshotter) and one run:
//  1. unpacking an image whose blobs are in containerd's content store (fetched just before, untimed): the
//     embedded example image (two layers) and a single-layer image of about 1 GB (a tar of /usr/share,
//     as the driver's bench) — overlayfs (`ctr images pull`), lcow by way (a) (`ctr images pull`: containerd's applier
//     writes into a sandbox, Commit converts it) and by way (b) (the CRI's PullImage: the fast path converts
//     the blob, nothing is extracted); the disk each leaves;
//  2. `ctr run --rm IMAGE /true` on each snapshotter, 20 runs each, interleaved: median and 90th percentile;
//  3. the snapshotter's memory idle and under 10 parallel cold pulls through the CRI (its own process, and
//     the peak of its process tree with the converter children).
// Needs root, containerd, ctr, docker-registry and skopeo (scripts/setup.sh installs them); says so otherwise.
import { type ChildProcess, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  dockerSave,
  makeTar,
  oracle,
  printTable,
  pseudoRandomBytes,
  run,
  skopeoCopy,
  startContainerd,
  startRegistry,
  tarOfTrees,
  treeRssKiB,
  type Containerd,
  type Registry,
} from '@lcow/testkit';
import { writeExampleImage } from '../../driver/src/cli/example-image.ts';
import { lcowCleanup, startSnapshotter, stopChild } from '../test/child.ts';
import { criClient, criToml, hostsFor } from '../test/cri-client.ts';

const runs = Number(process.env.LCOW_BENCH_RUNS ?? 3);
const bigTrees = (process.env.LCOW_BENCH_SNAPSHOTTER_TREES ?? '/usr/share').split(/\s+/).filter(Boolean);
const RUNS_CTR = Number(process.env.LCOW_BENCH_CTR_RUNS ?? 20);
/** Which parts run (`unpack run memory`, the default all three): `LCOW_BENCH_PARTS=run` for container starts alone. */
const parts = new Set((process.env.LCOW_BENCH_PARTS ?? 'unpack run memory').split(/[\s,]+/).filter(Boolean));
const NS = 'k8s.io';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number): number =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const sec = (s: number): string => (s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);
const mb = (b: number): string => `${(b / 1e6).toFixed(b < 1e7 ? 1 : 0)} MB`;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
}

/** Bytes allocated under `dir` (du), 0 when it does not exist. */
function du(dir: string, exclude: string[] = []): number {
  let out: string;
  try {
    out = execFileSync('du', ['-s', '--block-size=1', ...exclude.map((e) => `--exclude=${e}`), dir], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch (e) {
    // du says what it could read even when something vanished under it (a sandbox being removed).
    out = String((e as { stdout?: unknown }).stdout ?? '');
  }
  const n = Number(out.split('\t')[0]);
  return Number.isFinite(n) ? n : 0;
}

const rssOf = (pid: number, field: 'VmRSS' | 'VmHWM'): number =>
  Number(
    new RegExp(`${field}:\\s+(\\d+)`).exec(execFileSync('cat', [`/proc/${pid}/status`], { encoding: 'utf8' }))![1],
  );

/** A `docker save` archive of one layer that is the file `tar` (hashed as a stream, linked, not copied). */
async function singleLayerArchive(tar: string, out: string, tag: string, work: string): Promise<void> {
  const h = createHash('sha256');
  for await (const c of createReadStream(tar)) h.update(c as Buffer);
  const diffId = `sha256:${h.digest('hex')}`;
  const d = join(work, 'archive');
  await mkdir(join(d, 'l0'), { recursive: true });
  await link(tar, join(d, 'l0', 'layer.tar'));
  const cfg = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/true'] },
    rootfs: { type: 'layers', diff_ids: [diffId] },
  });
  const cfgName = `${createHash('sha256').update(cfg).digest('hex')}.json`;
  await writeFile(join(d, cfgName), cfg);
  await writeFile(
    join(d, 'manifest.json'),
    JSON.stringify([{ Config: cfgName, RepoTags: [tag], Layers: ['l0/layer.tar'] }]),
  );
  await run('tar', ['-cf', out, '-C', d, '.']);
  await rm(d, { recursive: true });
}

async function main(): Promise<void> {
  const missing = ['containerd', 'ctr', 'docker-registry', 'skopeo', 'cc'].filter((t) => !oracle(t));
  if (process.getuid?.() !== 0 || missing.length > 0) {
    console.log(`containerd snapshotter bench: skipped (needs root and ${missing.join(', ') || 'nothing else'})`);
    return;
  }
  const work = await mkdtemp('/var/tmp/lcow-bench-snapshotter-');
  let reg: Registry | null = null;
  let ctd: Containerd | null = null;
  let snap: ChildProcess | null = null;
  let cri: ReturnType<typeof criClient> | null = null;
  try {
    // The images, pushed to a private registry (TLS, a login) by skopeo.
    reg = await startRegistry(join(work, 'registry'), 'basic');
    const hostsDir = join(work, 'hosts.d');
    await hostsFor(hostsDir, reg.host, join(reg.certDir, 'ca.crt'));
    await writeFile(join(work, 'true.c'), 'int main(void) { return 0; }\n');
    await run('cc', ['-static', '-O2', '-o', join(work, 'true'), join(work, 'true.c')]);
    const trueLayer = makeTar([{ path: 'true', body: await readFile(join(work, 'true')), mode: 0o755 }]);
    await dockerSave(join(work, 'true.tar'), [trueLayer], 'lcow/true:1');
    await writeExampleImage(join(work, 'example.tar'));
    const push = (file: string, name: string): Promise<void> => skopeoCopy(reg!, `docker-archive:${file}`, name);
    await push(join(work, 'true.tar'), 'lcow/true:1');
    await push(join(work, 'example.tar'), 'lcow/example:1');
    let bigBytes = 0;
    if (parts.has('unpack')) {
      const bigTar = join(work, 'big-layer.tar');
      bigBytes = tarOfTrees(bigTar, bigTrees).bytes;
      await singleLayerArchive(bigTar, join(work, 'big.tar'), 'lcow/big:1', work);
      await rm(bigTar);
      await push(join(work, 'big.tar'), 'lcow/big:1');
    }
    for (let i = 0; i < (parts.has('memory') ? 10 : 0); i++) {
      await dockerSave(
        join(work, `p${i}.tar`),
        [makeTar([{ path: `data${i}`, body: pseudoRandomBytes(16 << 20, i) }])],
        `lcow/p${i}:1`,
      );
      await push(join(work, `p${i}.tar`), `lcow/p${i}:1`);
    }

    const ctdDir = join(work, 'containerd');
    const root = join(ctdDir, 'root', 'io.containerd.snapshotter.v1.lcow');
    const socket = join(work, 'lcow.sock');
    snap = await startSnapshotter(socket, root, ['--containerd-address', join(ctdDir, 'containerd.sock')]);
    ctd = await startContainerd(
      ctdDir,
      { lcow: socket },
      { cri: true, toml: criToml(work, `${reg.host}/lcow/true:1`, hostsDir) },
    );
    cri = criClient(ctd.address);
    const idleRss = rssOf(snap.pid!, 'VmRSS');
    const login = ['--user', `${reg.user}:${reg.password}`, '--hosts-dir', hostsDir];
    const ctr = (...a: string[]): Promise<string> => ctd!.ctr('--namespace', NS, ...a);
    const auth = { username: reg.user, password: reg.password };

    // 1. Unpacking from the content store.
    type Way = 'overlayfs' | 'lcow (a) applier + Commit' | 'lcow (b) fast path';
    const ways: [Way, (ref: string) => Promise<unknown>, string][] = [
      [
        'overlayfs',
        (ref) => ctr('images', 'pull', '--snapshotter', 'overlayfs', ...login, ref),
        join(ctdDir, 'root/io.containerd.snapshotter.v1.overlayfs'),
      ],
      ['lcow (a) applier + Commit', (ref) => ctr('images', 'pull', '--snapshotter', 'lcow', ...login, ref), root],
      ['lcow (b) fast path', (ref) => cri!.image('PullImage', { image: { image: ref }, auth }), root],
    ];
    const rows: string[][] = [];
    const images = [
      ['example (2 layers)', 'lcow/example:1', 0],
      [`big (1 layer, ${mb(bigBytes)} tar)`, 'lcow/big:1', bigBytes],
    ] as const;
    for (const [name, n, bytes] of parts.has('unpack') ? images : []) {
      const ref = `${reg.host}/${n}`;
      const times = new Map<Way, number[]>(ways.map(([w]) => [w, []]));
      const disk = new Map<Way, number>();
      for (let r = 0; r < (bytes > 0 ? Math.min(runs, 2) : runs); r++)
        for (const [way, pull, store] of ways) {
          await ctr('content', 'fetch', ...login, ref);
          const before = du(store, ['tmp', 'scratch']);
          execFileSync('sync');
          times.get(way)!.push(await timed(() => pull(ref)));
          disk.set(way, du(store, ['tmp', 'scratch']) - before);
          // Every name of the image goes (the CRI adds its id and digest as names), so that containerd
          // collects its snapshots and the next trial starts from nothing.
          const names = (await ctr('images', 'ls', '-q')).split('\n').filter(Boolean);
          await ctr('images', 'rm', '--sync', ...names);
          const left = (await ctr('snapshots', '--snapshotter', store === root ? 'lcow' : 'overlayfs', 'ls'))
            .split('\n')
            .slice(1)
            .filter(Boolean);
          if (left.length > 0) throw new Error(`bench: snapshots left after removing ${ref}: ${left.join('; ')}`);
        }
      const ref0 = median(times.get('overlayfs')!);
      for (const [way] of ways) {
        const t = median(times.get(way)!);
        rows.push([
          name,
          way,
          sec(t),
          way === 'overlayfs' ? '1.00×' : `${(t / ref0).toFixed(2)}×`,
          mb(disk.get(way) ?? 0),
        ]);
      }
    }
    if (rows.length > 0)
      console.log(
        `\n1. Unpack from containerd's content store (blobs fetched before, untimed); median of ${runs} (big: ${Math.min(runs, 2)})`,
      );
    if (rows.length > 0) printTable(['image', 'snapshotter', 'time', 'vs overlayfs', 'disk added'], rows);

    // 2. ctr run --rm IMAGE /true
    const trueRef = `${reg.host}/lcow/true:1`;
    await ctd.ctr('images', 'pull', '--snapshotter', 'overlayfs', ...login, trueRef);
    await ctd.ctr('images', 'pull', '--snapshotter', 'lcow', ...login, trueRef);
    const lat = new Map<string, number[]>([
      ['overlayfs', []],
      ['lcow', []],
    ]);
    for (let i = 0; i < (parts.has('run') ? RUNS_CTR : 0); i++)
      for (const sn of ['overlayfs', 'lcow'])
        lat
          .get(sn)!
          .push(
            await timed(() =>
              ctd!.ctr('run', '--rm', '--snapshotter', sn, trueRef, `bench-${sn}-${process.pid}-${i}`, '/true'),
            ),
          );
    const o = median(lat.get('overlayfs')!);
    if (parts.has('run')) console.log(`\n2. ctr run --rm IMAGE /true, ${RUNS_CTR} runs each, interleaved`);
    if (parts.has('run'))
      printTable(
        ['snapshotter', 'median', 'p90', 'vs overlayfs'],
        [...lat].map(([sn, xs]) => [sn, sec(median(xs)), sec(pct(xs, 0.9)), `${(median(xs) / o).toFixed(2)}×`]),
      );

    if (parts.has('memory')) {
      // 3. Memory: idle, and 10 cold pulls through the CRI at once.
      let treePeak = 0;
      const sampler = setInterval(() => {
        try {
          treePeak = Math.max(treePeak, treeRssKiB(snap!.pid!));
        } catch {
          // between samples
        }
      }, 50);
      const parallel = await timed(() =>
        Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            cri!.image('PullImage', { image: { image: `${reg!.host}/lcow/p${i}:1` }, auth }),
          ),
        ),
      );
      clearInterval(sampler);
      console.log('\n3. The snapshotter’s memory');
      printTable(
        ['state', 'snapshotter RSS', 'with its converter children'],
        [
          ['idle, after start', `${(idleRss / 1024).toFixed(0)} MB`, '—'],
          [
            `10 cold CRI pulls at once (16 MiB layers, ${sec(parallel)})`,
            `${(rssOf(snap.pid!, 'VmHWM') / 1024).toFixed(0)} MB peak`,
            `${(treePeak / 1024).toFixed(0)} MB peak`,
          ],
        ],
      );
    }
  } finally {
    cri?.close();
    await ctd?.stop().catch(() => {});
    await stopChild(snap);
    await reg?.stop().catch(() => {});
    await lcowCleanup(join(work, 'containerd', 'root', 'io.containerd.snapshotter.v1.lcow'));
    await rm(work, { recursive: true, force: true });
  }
}

await main();
