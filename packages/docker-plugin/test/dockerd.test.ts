// A real Docker engine on lcow: Debian's dockerd 20.10 started privately (its own data root, exec root,
// socket and managed containerd; no iptables, no bridge) with `--experimental -s <our plugin>`, our plugin
// process serving that name. `docker load` of an image with a static program, `docker run` of it, a
// container's writes seen by `docker diff` (Changes) and carried by `docker commit` (Diff → ApplyDiff),
// parallel runs, `docker rm`/`rmi` (Put, Remove), and a plugin restart while dockerd runs. Everything is
// stopped whatever happens.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { releaseLeftovers, startPlugin } from './client.ts';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inCI, makeTar, oracle, rootWithLoop, run, tempDir } from '@lcow/testkit';

const DOCKER = '/usr/bin/docker';
const execFileP = promisify(execFile);
// Under CI=true a missing capability throws here (testkit), so the suite cannot pass without dockerd.
const ready = process.platform === 'linux' && rootWithLoop() && oracle('dockerd') && oracle('cc');
if (!ready && !inCI) console.warn('[docker-plugin] skipping the dockerd tests: they need Linux, root, dockerd and cc');

const NAME = `lcowtest${randomBytes(4).toString('hex')}`;
const SOCKET = `/run/docker/plugins/${NAME}.sock`;
let dir: { path: string; cleanup: () => Promise<void> };
let plugin: ChildProcess | null = null;
let dockerd: ChildProcess | null = null;
let dockerdLog = '';
let host = '';

function startOurPlugin(): Promise<ChildProcess> {
  return startPlugin(['--socket', SOCKET, '--state', join(dir.path, 'plugin.init')]);
}

function stop(child: ChildProcess | null, ms = 30_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function docker(...args: string[]): Promise<string> {
  return run(DOCKER, ['-H', host, ...args]);
}

/** A docker-save image of one layer holding a static program that prints and writes what it is told. */
async function image(tag: string): Promise<string> {
  const src = join(dir.path, 'hello.c');
  const bin = join(dir.path, 'hello');
  await writeFile(
    src,
    [
      '#include <stdio.h>',
      '#include <stdlib.h>',
      '#include <string.h>',
      '#include <unistd.h>',
      'int main(int argc, char **argv) {',
      '  if (argc > 2 && !strcmp(argv[1], "sleep")) { sleep(atoi(argv[2])); return 0; }',
      '  printf("hello from lcow: %s\\n", argc > 1 ? argv[1] : "-");',
      '  if (argc > 2) { FILE *f = fopen(argv[2], "w"); if (!f) return 3; fputs(argv[1], f); fclose(f); }',
      '  return 0;',
      '}',
    ].join('\n'),
  );
  await run('cc', ['-static', '-O2', '-o', bin, src]);
  const layer = makeTar([
    { path: 'hello', body: await readFile(bin), mode: 0o755 },
    { path: 'etc/', type: 'dir' },
    { path: 'etc/os-release', body: 'ID=lcow-dockerd-test\n' },
    { path: 'tmp/', type: 'dir', mode: 0o1777 },
  ]);
  const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/hello'], Env: ['PATH=/'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] },
    }),
  );
  const tar = join(dir.path, 'image.tar');
  await writeFile(
    tar,
    makeTar([
      { path: `${sha(config)}.json`, body: config },
      { path: 'l0/', type: 'dir' },
      { path: 'l0/layer.tar', body: layer },
      {
        path: 'manifest.json',
        body: JSON.stringify([{ Config: `${sha(config)}.json`, RepoTags: [tag], Layers: ['l0/layer.tar'] }]),
      },
    ]),
  );
  return tar;
}

describe.runIf(ready)('dockerd 20.10 with lcow as its storage driver', () => {
  let data: string;
  beforeAll(async () => {
    dir = await tempDir('lcow-dockerd-');
    data = join(dir.path, 'data');
    const exec = join(dir.path, 'exec');
    await mkdir(exec, { recursive: true });
    host = `unix://${join(dir.path, 'docker.sock')}`;
    plugin = await startOurPlugin();
    dockerd = spawn(
      'dockerd',
      [
        '--experimental',
        '--storage-driver',
        NAME,
        '--data-root',
        data,
        '--exec-root',
        exec,
        '--pidfile',
        join(dir.path, 'docker.pid'),
        '-H',
        host,
        '--iptables=false',
        '--ip-masq=false',
        '--bridge=none',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } },
    );
    dockerd.stdout!.on('data', (d: Buffer) => (dockerdLog += d.toString()));
    dockerd.stderr!.on('data', (d: Buffer) => (dockerdLog += d.toString()));
    for (let i = 0; ; i++) {
      if (dockerd.exitCode !== null) throw new Error(`dockerd exited: ${dockerdLog.slice(-3000)}`);
      try {
        await docker('info');
        break;
      } catch (e) {
        if (i > 120) throw new Error(`dockerd did not answer in 60 s: ${dockerdLog.slice(-3000)}`, { cause: e });
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }, 600_000);

  afterAll(async () => {
    // Whatever happened: containers gone, dockerd stopped, then the plugin, then anything left mounted.
    if (dockerd?.exitCode === null)
      await docker('rm', '-f', ...(await docker('ps', '-aq')).split('\n').filter(Boolean)).catch(() => {});
    await stop(dockerd);
    await stop(plugin);
    await rm(SOCKET, { force: true });
    if (dir) await releaseLeftovers(dir.path, join(data, NAME));
    if (process.env.LCOW_KEEP_DOCKERD_LOG) console.log(dockerdLog);
    await dir?.cleanup();
  }, 600_000);

  it('reports lcow as its storage driver', async () => {
    expect((await docker('info', '--format', '{{.Driver}}')).trim()).toBe(NAME);
  });

  it('docker load, docker run, docker diff, docker commit, parallel runs, rm and rmi', async () => {
    const tag = 'lcow-test/hello:1';
    expect(await docker('load', '-i', await image(tag))).toContain(tag);
    expect(await docker('run', '--rm', '--network', 'none', tag, '/hello', 'run')).toBe('hello from lcow: run\n');
    // The image's layer is an ext4 layer.vhd in the plugin's data root.
    const layers = join(data, NAME);
    const withVhd = [];
    for (const d of await readdir(layers, { withFileTypes: true }))
      if (d.isDirectory() && (await readdir(join(layers, d.name))).includes('layer.vhd')) withVhd.push(d.name);
    expect(withVhd.length).toBeGreaterThanOrEqual(1);
    // A container that writes: docker diff (Changes), docker commit (Diff, then ApplyDiff), run the commit.
    const ctr = (await docker('run', '-d', '--network', 'none', tag, '/hello', 'kept', '/tmp/note')).trim();
    expect((await docker('wait', ctr)).trim()).toBe('0');
    expect(await docker('diff', ctr)).toContain('A /tmp/note');
    await docker('commit', ctr, 'lcow-test/committed:1');
    expect(
      await docker(
        'run',
        '--rm',
        '--network',
        'none',
        '--entrypoint',
        '/hello',
        'lcow-test/committed:1',
        'again',
        '/tmp/note',
      ),
    ).toBe('hello from lcow: again\n');
    await docker('rm', ctr);
    // Parallel container starts and removals.
    const outs = await Promise.all(
      Array.from({ length: 4 }, (_, i) => docker('run', '--rm', '--network', 'none', tag, '/hello', `p${i}`)),
    );
    expect(outs.sort()).toEqual([0, 1, 2, 3].map((i) => `hello from lcow: p${i}\n`));
    await docker('rmi', 'lcow-test/committed:1');
  }, 600_000);

  it('storage options: unknown ones refused, size= honoured as the sandbox size', async () => {
    const tag = 'lcow-test/hello:1';
    const bad = await docker('create', '--storage-opt', 'bogus=1', tag).catch((e: Error) => e);
    expect(bad).toBeInstanceOf(Error);
    expect(String(bad)).toMatch(/unknown storage option "bogus"; known: size, lcow\.sandboxsize/);
    const small = await docker('create', '--storage-opt', 'size=1G', '--network', 'none', tag).catch((e: Error) => e);
    expect(small, String(small)).not.toBeInstanceOf(Error);
    // The container's sandbox, read by qemu-img: 1 GiB (the others are the default 20 GiB).
    const sizes: number[] = [];
    const layers = join(data, NAME);
    for (const d of await readdir(layers)) {
      const vhdx = join(layers, d, 'sandbox.vhdx');
      const info = await run('qemu-img', ['info', '--output=json', vhdx]).catch(() => null);
      if (info) sizes.push((JSON.parse(info) as { 'virtual-size': number })['virtual-size']);
    }
    expect(sizes).toContain(2 ** 30);
    await docker('rm', String(small).trim());
    // Daemon-wide: an unknown key stops dockerd from starting on lcow, naming the key and the known ones.
    const other = join(dir.path, 'other');
    await mkdir(join(other, 'exec'), { recursive: true });
    const refused = await execFileP(
      'dockerd',
      [
        '--experimental',
        '--storage-driver',
        NAME,
        '--storage-opt',
        'lcow.bogus=1',
        '--data-root',
        join(other, 'data'),
        '--exec-root',
        join(other, 'exec'),
        '--pidfile',
        join(other, 'docker.pid'),
        '-H',
        `unix://${join(other, 'docker.sock')}`,
        '--iptables=false',
        '--ip-masq=false',
        '--bridge=none',
      ],
      { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` }, timeout: 120_000 },
    ).catch((e: Error & { stderr?: string }) => e);
    expect(refused).toBeInstanceOf(Error);
    expect((refused as { stderr?: string }).stderr).toMatch(
      /unknown option \\?"lcow\.bogus\\?"; known: lcow\.sandboxsize/,
    );
    // Refused before anything changed: the dockerd this plugin serves still runs containers.
    expect(await docker('run', '--rm', '--network', 'none', tag, '/hello', 'still')).toBe('hello from lcow: still\n');
  }, 600_000);

  it('docker info counts a container that runs across a plugin restart; its status lines', async () => {
    const tag = 'lcow-test/hello:1';
    const ctr = (await docker('run', '-d', '--network', 'none', tag, '/hello', 'sleep', '60')).trim();
    const status = async (): Promise<Record<string, string>> =>
      Object.fromEntries(JSON.parse(await docker('info', '--format', '{{json .DriverStatus}}')) as [string, string][]);
    const before = await status();
    expect(Number(before.Mounted)).toBeGreaterThanOrEqual(1);
    await stop(plugin);
    plugin = await startOurPlugin();
    const after = await status();
    expect(after.Mounted).toBe(before.Mounted);
    expect(after).toMatchObject({
      'Backing Filesystem': expect.stringMatching(/^(extfs|xfs|btrfs|tmpfs|overlayfs|zfs)$/),
      'Sandbox size': '20 GiB (fixed VHDX)',
      Plugin: expect.stringMatching(/^lcow-docker-plugin \d+\.\d+\.\d+/),
    });
    await docker('rm', '-f', ctr);
  }, 600_000);

  it('the plugin restarts while dockerd runs: a running container keeps its root, and is removed after', async () => {
    const tag = 'lcow-test/hello:1';
    const ctr = (await docker('create', '--network', 'none', tag, '/hello', 'late')).trim();
    await docker('start', ctr);
    await docker('wait', ctr);
    await stop(plugin);
    plugin = await startOurPlugin();
    // dockerd reconnects to the plugin by name; the old process's mounts are put by the new one.
    expect(await docker('start', '-a', ctr)).toBe('hello from lcow: late\n');
    await docker('rm', ctr);
    await docker('rmi', tag);
    expect((await docker('images', '-q')).trim()).toBe('');
  }, 600_000);
});
