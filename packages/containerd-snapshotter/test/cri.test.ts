// Kubernetes' path without a kubelet: containerd's CRI plugin with `snapshotter = "lcow"` and snapshot
// annotations on, driven by a small CRI client doing what kubelet does — pull from a registry, run a pod
// (host network; a pause image whose `/bin/sh` is a static pause program), create and start a container,
// wait for it to exit, read its log, ask for the image filesystem, remove everything. The pulls go through
// containerd's own unpacker, so the fast path (the layer converted from containerd's content store,
// `ALREADY_EXISTS` answered) is what is under test here, beside way (a) for a blob not downloaded yet.
import type { ChildProcess } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
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
  type Registry,
} from '@lcow/testkit';
import { lcowCleanup, startSnapshotter, stopChild } from './child.ts';
import { criClient, criToml, hostsFor } from './cri-client.ts';
import { client } from './client.ts';

const ready =
  process.platform === 'linux' &&
  rootWithLoop() &&
  oracle('containerd') &&
  oracle('ctr') &&
  oracle('cc') &&
  oracle('skopeo') &&
  oracle('docker-registry');
if (!ready && !inCI)
  console.warn('[containerd-snapshotter cri] skipping: needs root, containerd, ctr, cc, skopeo, docker-registry');
if (!ready && inCI)
  throw new Error('CI=true: the CRI test needs root, containerd, ctr, cc, skopeo and docker-registry');

const PAUSE_C = `#include <signal.h>
#include <unistd.h>
static void done(int s) { (void)s; _exit(0); }
int main(void) { signal(SIGTERM, done); signal(SIGINT, done); for (;;) pause(); }
`;

let dir: { path: string; cleanup: () => Promise<void> };
let ctd: Containerd | null = null;
let snap: ChildProcess | null = null;
let reg: Registry | null = null;
let cri: ReturnType<typeof criClient> | null = null;
let root: string;
let socket: string;
let hostsDir: string;

const lcow = (...a: string[]): Promise<string> =>
  ctd!.ctr('--namespace', 'k8s.io', 'snapshots', '--snapshotter', 'lcow', ...a);

/** Committed lcow snapshots as containerd names them (the chain ids). */
async function committed(): Promise<string[]> {
  return (await lcow('ls'))
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.at(-1) === 'Committed')
    .map((f) => f[0]!)
    .sort();
}

/** The committed snapshots as the snapshotter itself names them, asked on its own socket. */
async function backend(): Promise<{ name: string; parent: string; labels: Record<string, string> }[]> {
  const c = client(socket);
  try {
    return (
      (await c.list([])) as { name: string; parent: string; kind: string; labels: Record<string, string> }[]
    ).filter((s) => s.kind === 'COMMITTED');
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  if (!ready) return;
  dir = await tempDir('lcow-cri-');
  const ctdDir = join(dir.path, 'containerd');
  // Where the CRI reports the image filesystem: containerd's root, then io.containerd.snapshotter.v1.NAME.
  root = join(ctdDir, 'root', 'io.containerd.snapshotter.v1.lcow');
  socket = join(dir.path, 'lcow.sock');
  reg = await startRegistry(join(dir.path, 'registry'), 'basic');
  hostsDir = join(dir.path, 'hosts.d');
  await hostsFor(hostsDir, reg.host, join(reg.certDir, 'ca.crt'));
  // The images: pause (its /bin/sh a static pause), and the parity image twice under two names.
  await writeFile(join(dir.path, 'pause.c'), PAUSE_C);
  await run('cc', ['-static', '-O2', '-o', join(dir.path, 'pause'), join(dir.path, 'pause.c')]);
  const pause = makeTar([
    { path: 'bin/', type: 'dir' },
    { path: 'bin/sh', body: await readFile(join(dir.path, 'pause')), mode: 0o755 },
  ]);
  await dockerSave(join(dir.path, 'pause.tar'), [pause], 'lcow/pause:1');
  const parity = parityLayers(await buildOps(dir.path));
  await dockerSave(join(dir.path, 'parity.tar'), parity, 'parity/cri:1');
  // Below the parity layers, a layer of its own: chains none of the cold image's.
  const own = makeTar([
    { path: 'srv/', type: 'dir' },
    { path: 'srv/first', body: 'fetched first' },
  ]);
  await dockerSave(join(dir.path, 'fetched.tar'), [own, ...parity], 'parity/fetched:1');
  await skopeoCopy(reg, `docker-archive:${join(dir.path, 'pause.tar')}`, 'lcow/pause:1');
  await skopeoCopy(reg, `docker-archive:${join(dir.path, 'parity.tar')}`, 'parity/cold:1');
  await skopeoCopy(reg, `docker-archive:${join(dir.path, 'fetched.tar')}`, 'parity/fetched:1', [
    '--dest-compress-format',
    'zstd',
  ]);
  snap = await startSnapshotter(socket, root, ['--containerd-address', join(ctdDir, 'containerd.sock')]);
  ctd = await startContainerd(
    ctdDir,
    { lcow: socket },
    {
      cri: true,
      toml: criToml(dir.path, `${reg.host}/lcow/pause:1`, hostsDir),
    },
  );
  cri = criClient(ctd.address);
}, 300_000);

afterAll(async () => {
  cri?.close();
  if (process.env.LCOW_DEBUG) process.stderr.write(ctd?.log() ?? '');
  await ctd?.stop().catch(() => {});
  await stopChild(snap);
  await reg?.stop().catch(() => {});
  if (ready) await lcowCleanup(root);
  await dir?.cleanup();
}, 120_000);

describe.runIf(ready)("containerd's CRI on lcow layers, driven as kubelet drives it", () => {
  const auth = (): object => ({ username: reg!.user, password: reg!.password });

  it('pulls through the unpacker: a blob already in the content store is converted from it (ALREADY_EXISTS), a cold one goes through the applier', async () => {
    expect(await cri!.runtime<{ runtime_name: string }>('Version', { version: 'v1' })).toMatchObject({
      runtime_name: 'containerd',
    });
    // The pause image first, as kubelet's sandbox image (a single layer: the applier unpacks it).
    await cri!.image('PullImage', { image: { image: `${reg!.host}/lcow/pause:1` }, auth: auth() });
    const pause = await backend();
    // Cold: the unpacker asks for the first layer before any download starts, so it is extracted by
    // containerd's applier; the second one's download is under way by then, and the fast path waits for it.
    await cri!.image('PullImage', { image: { image: `${reg!.host}/parity/cold:1` }, auth: auth() });
    const cold = (await backend()).filter((s) => !pause.some((p) => p.name === s.name));
    expect(cold).toHaveLength(2);
    const base = cold.find((s) => s.parent === '')!;
    const top = cold.find((s) => s.parent !== '')!;
    expect(base.name).toMatch(/^k8s\.io\/\d+\/sha256:[0-9a-f]{64}$/); // way (a): containerd's backend key
    expect(top.name).toMatch(/^sha256:[0-9a-f]{64}@[0-9a-f]{16}$/); // way (b): named for its chain
    expect(top.parent).toBe(base.name);
    expect(top.labels['containerd.io/snapshot/cri.layer-digest']).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(top.labels['containerd.io/snapshot/lcow.verity.roothash']).toMatch(/^[0-9a-f]{64}$/);
    const chains = await committed();
    expect(chains).toEqual(expect.arrayContaining([base.name.split('/')[2], top.name.split('@')[0]]));

    // Fetched first (as a pre-pull or another snapshotter's pull leaves it): every layer, the first one
    // too, converted from the store; nothing goes through the applier.
    await ctd!.ctr(
      '--namespace',
      'k8s.io',
      'content',
      'fetch',
      '--user',
      `${reg!.user}:${reg!.password}`,
      '--hosts-dir',
      hostsDir,
      `${reg!.host}/parity/fetched:1`,
    );
    await cri!.image('PullImage', { image: { image: `${reg!.host}/parity/fetched:1` }, auth: auth() });
    const fetched = (await backend()).filter((s) => ![...pause, ...cold].some((c) => c.name === s.name));
    expect(fetched).toHaveLength(3);
    expect(fetched.filter((s) => s.parent === '').map((s) => s.name)).toEqual([
      expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    ]);
    expect(fetched.every((s) => /^sha256:[0-9a-f]{64}(@[0-9a-f]{16})?$/.test(s.name))).toBe(true);
    expect((await committed()).length).toBe(6);
    // The cold image's base went through the applier, but its layer was made at Commit from the blob (in the
    // store by then), not from what the applier wrote: the same bytes as the fetched image's copy of it.
    const digestOf = (x: { labels: Record<string, string> }): string | undefined =>
      x.labels['containerd.io/snapshot/cri.layer-digest'];
    const again = fetched.find((x) => digestOf(x) === digestOf(base));
    expect(digestOf(base)).toMatch(/^sha256:/);
    expect(again!.labels['containerd.io/snapshot/lcow.verity.roothash']).toBe(
      base.labels['containerd.io/snapshot/lcow.verity.roothash'],
    );
  }, 300_000);

  it('a pod and a container on lcow: runs, exits 0, its log is what it saw; ImageFsInfo reports our root', async () => {
    const sandboxConfig = {
      metadata: { name: 'lcow-pod', uid: `uid-${Date.now()}`, namespace: 'default', attempt: 0 },
      log_directory: join(dir.path, 'pods'),
      linux: { security_context: { namespace_options: { network: 'NODE', pid: 'POD', ipc: 'POD' } } },
    };
    await mkdir(sandboxConfig.log_directory, { recursive: true });
    const { pod_sandbox_id: pod } = await cri!.runtime<{ pod_sandbox_id: string }>('RunPodSandbox', {
      config: sandboxConfig,
    });
    try {
      const { container_id: id } = await cri!.runtime<{ container_id: string }>('CreateContainer', {
        pod_sandbox_id: pod,
        config: {
          metadata: { name: 'walk', attempt: 0 },
          image: { image: `${reg!.host}/parity/fetched:1` },
          command: ['/ops'],
          args: ['w', '/srv/written', 'by cri', 'walk'],
          log_path: 'walk.log',
        },
        sandbox_config: sandboxConfig,
      });
      await cri!.runtime('StartContainer', { container_id: id });
      let status: { state: string; exit_code: number; reason: string } = { state: '', exit_code: -1, reason: '' };
      for (let i = 0; i < 300; i++) {
        ({ status } = await cri!.runtime<{ status: typeof status }>('ContainerStatus', { container_id: id }));
        if (status.state === 'CONTAINER_EXITED') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(status).toMatchObject({ state: 'CONTAINER_EXITED', exit_code: 0, reason: 'Completed' });
      // The CRI's log format: TIME STREAM TAG LINE.
      const log = (await readFile(join(sandboxConfig.log_directory, 'walk.log'), 'utf8'))
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' ').slice(3).join(' '));
      expect(log.find((l) => l.startsWith('/srv/written\t'))).toMatch(/\t6\t/); // its size
      expect(log.some((l) => l.startsWith('/srv/added\t'))).toBe(true);
      expect(log.some((l) => l.startsWith('/srv/gone\t'))).toBe(false);
      await cri!.runtime('RemoveContainer', { container_id: id });
    } finally {
      await cri!.runtime('StopPodSandbox', { pod_sandbox_id: pod });
      await cri!.runtime('RemovePodSandbox', { pod_sandbox_id: pod });
    }
    // The CRI sums its snapshots' usage every 10 s: a sum taken while the image was still unpacking is
    // smaller, so wait for one taken after (two periods at most).
    let fs: { fs_id: { mountpoint: string }; used_bytes: { value: number } | null } | undefined;
    for (let i = 0; i < 50; i++) {
      ({
        image_filesystems: [fs],
      } = await cri!.image<{ image_filesystems: NonNullable<typeof fs>[] }>('ImageFsInfo', {}));
      if ((fs?.used_bytes?.value ?? 0) > 1 << 20) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(fs!.fs_id.mountpoint).toBe(root);
    expect(fs!.used_bytes!.value).toBeGreaterThan(1 << 20);
  }, 300_000);

  it('the images removed: containerd collects the snapshots, and no lcow layer, mount or loop device is left', async () => {
    for (const name of ['parity/cold:1', 'parity/fetched:1', 'lcow/pause:1'])
      await cri!.image('RemoveImage', { image: { image: `${reg!.host}/${name}` } });
    for (let i = 0; i < 50 && (await committed()).length > 0; i++) await new Promise((r) => setTimeout(r, 200));
    expect(await committed()).toEqual([]);
    const layerDirs = (await readdir(root, { withFileTypes: true })).filter(
      (e) => e.isDirectory() && !['tmp', 'cache', 'scratch'].includes(e.name),
    );
    expect(layerDirs.map((e) => e.name)).toEqual([]);
    expect((await run('findmnt', ['-rn', '-o', 'TARGET'])).split('\n').filter((m) => m.includes(root))).toEqual([]);
    expect((await run('losetup', ['-nl', '-O', 'BACK-FILE'])).split('\n').filter((l) => l.includes(root))).toEqual([]);
  }, 120_000);
});
