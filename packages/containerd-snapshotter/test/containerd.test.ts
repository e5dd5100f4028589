// A real containerd (Debian's 1.6, private: its own root, state and socket) with our snapshotter as its proxy
// plugin `lcow`, beside its own `overlayfs`: the same image imported into both and the same containers run on
// both, what the container sees compared entry by entry (testkit's parity image and its static `/ops`); then
// `ctr snapshots` verb by verb, containerd's garbage collection, and a restart of the snapshotter while a
// container runs.
import type { ChildProcess } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PARITY_MTIME,
  buildOps,
  dockerSave,
  inCI,
  makeTar,
  oracle,
  parityLayers,
  rootWithLoop,
  run,
  skopeoCopy,
  startContainerd,
  startRegistry,
  tempDir,
  type Containerd,
} from '@lcow/testkit';
import { lcowCleanup, startSnapshotter as start } from './child.ts';

const ready = process.platform === 'linux' && rootWithLoop() && oracle('containerd') && oracle('ctr') && oracle('cc');
if (!ready && !inCI) console.warn('[containerd-snapshotter] skipping: needs Linux, root, containerd, ctr and cc');
if (!ready && inCI)
  throw new Error('CI=true: the containerd tests need root with loop devices, containerd, ctr and cc');

const IMAGE = 'docker.io/parity/every-kind:1';

let dir: { path: string; cleanup: () => Promise<void> };
let ctd: Containerd | null = null;
let snap: ChildProcess | null = null;
let socket: string;
let root: string;

const startSnapshotter = (): Promise<ChildProcess> => start(socket, root);

// Snapshots made with `ctr snapshots prepare|view|commit` hold no lease (and a view not even ctr's GC root label):
// containerd's GC collects them at its next run, which any deletion starts at once (deletion_threshold 0). The
// ctr snapshots case would race it (it lost on a busy CI machine: "snapshot a view does not exist"), so this
// daemon collects only when a case asks (`ctr images rm --sync`), which every case that removes an image does,
// and that case roots its views itself (a collection still ran there once, beside a second full run).
const startOurContainerd = (): Promise<Containerd> =>
  startContainerd(
    join(dir.path, 'containerd'),
    { lcow: socket },
    {
      toml: [
        '[plugins."io.containerd.gc.v1.scheduler"]',
        '  deletion_threshold = 1000000',
        '  mutation_threshold = 1000000',
      ].join('\n'),
    },
  );

async function stopSnapshotter(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const c = snap;
  snap = null;
  if (!c || c.exitCode !== null) return;
  const done = new Promise((r) => c.once('exit', r));
  c.kill(signal);
  await done;
}

beforeAll(async () => {
  if (!ready) return;
  dir = await tempDir('lcow-containerd-');
  socket = join(dir.path, 'lcow.sock');
  root = join(dir.path, 'lcow-root');
  snap = await startSnapshotter();
  ctd = await startOurContainerd();
  const image = join(dir.path, 'image.tar');
  await dockerSave(image, parityLayers(await buildOps(dir.path)), 'parity/every-kind:1');
  for (const sn of ['lcow', 'overlayfs']) await ctd.ctr('images', 'import', '--snapshotter', sn, image);
}, 300_000);

afterAll(async () => {
  await ctd?.stop().catch(() => {});
  await stopSnapshotter().catch(() => {});
  // Whatever a failed case left: our unions and loop devices (the snapshotter's folder under /run/lcow).
  if (ready) await lcowCleanup(root);
  await dir?.cleanup();
}, 120_000);

/** `ops ARGS…` in a fresh container of the image on `snapshotter`; its stdout. */
async function runOps(snapshotter: string, ...args: string[]): Promise<string> {
  if (args[0] === 'walk' && args.length === 1) return walk(snapshotter, IMAGE);
  const id = `t-${snapshotter}-${Math.random().toString(16).slice(2, 10)}`;
  return ctd!.ctr('run', '--rm', '--snapshotter', snapshotter, IMAGE, id, '/ops', ...args);
}

/**
 * `ops walk` in a fresh container of `ref` on `snapshotter`. A walk always lists `/`; on a saturated machine
 * (CI beside a second full run) `ctr run --rm` once gave back nothing at all — on containerd's own
 * overlayfs side, the container having run — so an empty answer is asked again, three times at most.
 */
async function walk(snapshotter: string, ref: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const id = `w-${snapshotter}-${Math.random().toString(16).slice(2, 10)}`;
    const out = await ctd!.ctr('run', '--rm', '--snapshotter', snapshotter, ref, id, '/ops', 'walk');
    if (out.trim() !== '' || attempt === 3) return out;
  }
}

/**
 * A walk's lines by path (tab-separated: path, type and mode, owner, size, device, mtime, links, target,
 * xattrs). An entry changed by the run gets the time it ran, which two runs do not share: compared as "now".
 */
const byPath = (text: string): Record<string, string> =>
  Object.fromEntries(
    text
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const f = l.split('\t');
        if (f[5] !== String(PARITY_MTIME)) f[5] = 'now';
        return [f[0]!, f.join('\t')];
      }),
  );

describe.runIf(ready)('containerd with lcow as a proxy snapshotter, beside its own overlayfs', () => {
  it('ctr plugins ls shows lcow ok', async () => {
    const line = (await ctd!.ctr('plugins', 'ls'))
      .split('\n')
      .find((l) => /io\.containerd\.snapshotter\.v1\s+lcow\s/.test(l));
    expect(line).toMatch(/\sok\s*$/);
  });

  it('a container sees the same root on lcow as on overlayfs, entry by entry (whiteouts, opaque folder, every kind)', async () => {
    const [a, b] = await Promise.all([runOps('lcow', 'walk'), runOps('overlayfs', 'walk')]);
    expect(Object.keys(byPath(a)).length).toBeGreaterThan(30);
    expect(byPath(a)).toEqual(byPath(b));
    expect(a).not.toMatch(/^\/srv\/gone\t/m);
    expect(a).not.toMatch(/^\/lost\+found\t/m);
  });

  it('a container writes, deletes and links on lcow as on overlayfs; the image is untouched after', async () => {
    const ops = [
      'w',
      '/srv/new/file',
      'hello',
      'r',
      '/srv/data2',
      'h',
      '/srv/data',
      '/srv/data.h2',
      'l',
      'data',
      '/srv/l2',
      'f',
      '/srv/f2',
      'walk',
    ];
    const [a, b] = await Promise.all([runOps('lcow', ...ops), runOps('overlayfs', ...ops)]);
    expect(byPath(a)).toEqual(byPath(b));
    expect(a).toMatch(/^\/srv\/new\/file\t/m);
    expect(await runOps('lcow', 'walk')).not.toMatch(/^\/srv\/new\t/m);
  });

  it('ctr snapshots: prepare, mounts, commit, view, label, usage, ls, info and rm, with keys of spaces and unicode', async () => {
    const s = (...a: string[]): Promise<string> => ctd!.ctr('snapshots', '--snapshotter', 'lcow', ...a);
    const layers = (await s('ls')).split('\n').filter((l) => /Committed\s*$/.test(l));
    expect(layers).toHaveLength(2);
    const top = layers.find((l) => l.trim().split(/\s+/).length === 3)!.split(/\s+/)[0]!;
    const key = 'my key/ünïcödé ✓';
    await s('prepare', key, top);
    expect(await s('mounts', '/mnt/x', key)).toMatch(/^mount -t bind \S+ \/mnt\/x -o rbind,rw/);
    await expect(s('prepare', key, top)).rejects.toThrow(/already exists/);
    await s('commit', 'committed name', key);
    const info = JSON.parse(await s('info', 'committed name')) as {
      Kind: string;
      Parent: string;
      Labels: Record<string, string>;
    };
    expect(info).toMatchObject({ Kind: 'Committed', Parent: top });
    expect(info.Labels['containerd.io/snapshot/lcow.verity.roothash']).toMatch(/^[0-9a-f]{64}$/);
    // ctr gives prepared and committed snapshots a GC root label, views none: a collection containerd runs
    // meanwhile (any sync delete, on a busy machine late) would take the view. Rooted at once.
    const gcRoot = 'containerd.io/gc.root=lcow-test';
    await s('view', 'a view', 'committed name');
    await s('label', 'a view', 'team=lcow', gcRoot);
    expect(await s('mounts', '/mnt/y', 'a view')).toMatch(/-o rbind,ro/);
    expect(JSON.parse(await s('info', 'a view'))).toMatchObject({ Kind: 'View', Labels: { team: 'lcow' } });
    expect(await s('usage', 'committed name')).toMatch(/committed name\s+\d/);
    await expect(s('rm', 'committed name')).rejects.toThrow(/child/);
    await expect(s('info', 'nothing here')).rejects.toThrow(/not found|does not exist/);
    // A view of one layer is its union too (read-only): the layer's ext4 as it is would show the lost+found
    // e2fsck needs, which containerd's own view of the layer does not have.
    const base = layers.find((l) => l.trim().split(/\s+/).length === 2)!.split(/\s+/)[0]!;
    await s('view', 'base view', base);
    await s('label', 'base view', gcRoot);
    const m = /^mount -t bind (\S+) \/mnt\/z -o (\S+)$/m.exec(await s('mounts', '/mnt/z', 'base view'));
    expect(m?.[2]).toBe('rbind,ro');
    expect(await readFile(join(m![1]!, 'etc/motd'), 'utf8')).toBe('welcome\n');
    await expect(readdir(join(m![1]!, 'lost+found'))).rejects.toThrow(/ENOENT/);
    await s('rm', 'base view');
    await s('rm', 'a view');
    await s('rm', 'committed name');
    expect(await s('ls')).not.toMatch(/committed name|a view|my key/);
  });

  it('the snapshotter SIGKILLed while a container runs: the container goes on; started again, the next run works', async () => {
    // Container ids are unique per run: runc keeps its state by id machine-wide, whichever containerd asks.
    const id = `long-running-${Math.random().toString(16).slice(2, 10)}`;
    await ctd!.ctr('run', '-d', '--snapshotter', 'lcow', IMAGE, id, '/ops', 's', '120');
    try {
      await stopSnapshotter('SIGKILL');
      snap = await startSnapshotter();
      expect((await ctd!.ctr('tasks', 'ls')).split('\n').find((l) => l.startsWith(id))).toMatch(/RUNNING/);
      const out = await ctd!.ctr('tasks', 'exec', '--exec-id', 'e1', id, '/ops', 'walk');
      expect(out).toMatch(/^\/etc\/motd\t/m);
      // containerd redials a proxy plugin with gRPC's backoff (about a second, growing): wait for it to be back.
      for (let i = 0; ; i++) {
        const back = await ctd!.ctr('snapshots', '--snapshotter', 'lcow', 'ls').then(
          () => true,
          () => false,
        );
        if (back) break;
        if (i > 60) throw new Error('containerd did not reconnect to the restarted snapshotter in 30 s');
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(await runOps('lcow', 'walk')).toMatch(/^\/srv\/added\t/m);
    } finally {
      await ctd!.ctr('tasks', 'kill', '-s', 'SIGKILL', id).catch(() => {});
      for (let i = 0; i < 50; i++) {
        if (!(await ctd!.ctr('tasks', 'ls')).includes(id)) break;
        await ctd!.ctr('tasks', 'rm', '-f', id).catch(() => {});
        await new Promise((r) => setTimeout(r, 200));
      }
      await ctd!.ctr('containers', 'rm', id).catch(() => {});
    }
  }, 120_000);

  it('ctr images pull from a registry over TLS with a login (distribution 2.8, filled by skopeo): gzip and zstd layers', async () => {
    const reg = await startRegistry(join(dir.path, 'registry'), 'basic');
    try {
      const archive = `docker-archive:${join(dir.path, 'image.tar')}`;
      await skopeoCopy(reg, archive, 'parity/gzip:1');
      await skopeoCopy(reg, archive, 'parity/zstd:1', ['--dest-compress-format', 'zstd']);
      // containerd takes a loopback registry for plain HTTP unless its hosts.toml says otherwise.
      const hostsDir = join(dir.path, 'hosts.d');
      await mkdir(join(hostsDir, reg.host), { recursive: true });
      await writeFile(
        join(hostsDir, reg.host, 'hosts.toml'),
        `server = "https://${reg.host}"\n[host."https://${reg.host}"]\n  capabilities = ["pull", "resolve"]\n  ca = ${JSON.stringify(join(reg.certDir, 'ca.crt'))}\n`,
      );
      for (const name of ['gzip', 'zstd']) {
        const ref = `${reg.host}/parity/${name}:1`;
        for (const sn of ['lcow', 'overlayfs'])
          await ctd!.ctr(
            'images',
            'pull',
            '--snapshotter',
            sn,
            '--user',
            `${reg.user}:${reg.password}`,
            '--hosts-dir',
            hostsDir,
            ref,
          );
        const [a, b] = await Promise.all(['lcow', 'overlayfs'].map((sn) => walk(sn, ref)));
        expect(byPath(a!)).toEqual(byPath(b!));
        expect(a).toMatch(/^\/srv\/added\t/m);
        await ctd!.ctr('images', 'rm', '--sync', ref);
      }
    } finally {
      await reg.stop();
    }
  }, 300_000);

  it('two images sharing a base imported at once: the base is one layer, both run; containerd restarted, all still there', async () => {
    const [base, top] = parityLayers(await buildOps(dir.path));
    const other = makeTar([{ path: 'srv/other', body: 'second image' }]);
    const a = join(dir.path, 'shared-a.tar');
    const b = join(dir.path, 'shared-b.tar');
    await dockerSave(a, [base!, top!], 'shared/a:1');
    await dockerSave(b, [base!, other], 'shared/b:1');
    await Promise.all([a, b].map((f) => ctd!.ctr('images', 'import', '--snapshotter', 'lcow', f)));
    const committed = async (): Promise<string[]> =>
      (await ctd!.ctr('snapshots', '--snapshotter', 'lcow', 'ls'))
        .split('\n')
        .filter((l) => /Committed\s*$/.test(l))
        .map((l) => l.split(/\s+/)[0]!)
        .sort();
    // The parity image's two layers (its top equals a's) and b's own top: three, the base once.
    const before = await committed();
    expect(before).toHaveLength(3);
    await ctd!.stop();
    ctd = await startOurContainerd();
    expect(await committed()).toEqual(before);
    expect(
      await ctd.ctr(
        'run',
        '--rm',
        '--snapshotter',
        'lcow',
        'docker.io/shared/b:1',
        `shared-b-${Math.random().toString(16).slice(2, 10)}`,
        '/ops',
        'walk',
      ),
    ).toMatch(/^\/srv\/other\t/m);
    expect(await runOps('lcow', 'walk')).toMatch(/^\/srv\/added\t/m);
    for (const ref of ['docker.io/shared/a:1', 'docker.io/shared/b:1']) await ctd.ctr('images', 'rm', '--sync', ref);
  }, 300_000);

  it('an image of 128 layers: imported, run, and seen as overlayfs sees it', async () => {
    const [base] = parityLayers(await buildOps(dir.path));
    const layers = [
      base!,
      ...Array.from({ length: 127 }, (_, i) =>
        makeTar([
          { path: 'deep/', type: 'dir', mtime: PARITY_MTIME },
          { path: `deep/layer-${String(i + 1).padStart(3, '0')}`, body: `${i + 1}\n`, mtime: PARITY_MTIME },
          ...(i > 0 ? [{ path: `deep/.wh.layer-${String(i).padStart(3, '0')}`, body: '', mtime: PARITY_MTIME }] : []),
        ]),
      ),
    ];
    const file = join(dir.path, 'deep.tar');
    await dockerSave(file, layers, 'deep/128:1');
    const t0 = Date.now();
    await ctd!.ctr('images', 'import', '--snapshotter', 'lcow', file);
    const importMs = Date.now() - t0;
    await ctd!.ctr('images', 'import', '--snapshotter', 'overlayfs', file);
    const ref = 'docker.io/deep/128:1';
    const [a, b] = await Promise.all(['lcow', 'overlayfs'].map((sn) => walk(sn, ref)));
    expect(byPath(a!)).toEqual(byPath(b!));
    // Each layer whited out the one below: only the top's file is left.
    expect(Object.keys(byPath(a!)).filter((p) => p.startsWith('/deep/'))).toEqual(['/deep/layer-127']);
    console.log(`[containerd-snapshotter] 128-layer image imported into lcow in ${importMs} ms`);
    await ctd!.ctr('images', 'rm', '--sync', ref);
  }, 1_500_000);

  it('ctr images rm and garbage collection: every lcow snapshot, layer and mount goes', async () => {
    await ctd!.ctr('images', 'rm', '--sync', IMAGE);
    expect((await ctd!.ctr('snapshots', '--snapshotter', 'lcow', 'ls')).trim().split('\n')).toHaveLength(1); // header
    const layerDirs = (await readdir(root, { withFileTypes: true })).filter(
      (e) => e.isDirectory() && !['tmp', 'cache', 'scratch'].includes(e.name),
    );
    expect(layerDirs.map((e) => e.name)).toEqual([]);
    const mounts = (await run('findmnt', ['-rn', '-o', 'SOURCE,TARGET'])).split('\n');
    expect(mounts.filter((m) => m.includes(root))).toEqual([]);
    const loops = await run('losetup', ['-nl', '-O', 'BACK-FILE']);
    expect(loops.split('\n').filter((l) => l.includes(root))).toEqual([]);
  }, 120_000);
});
