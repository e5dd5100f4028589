// A private containerd for the tests (Debian's 1.6): its own root, state and sockets, the CRI plugin off
// unless asked, proxy snapshotters as given; stopped, with its tasks, whatever happens. Never the machine's own.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { client, startDaemon } from './daemon.ts';

export interface Containerd {
  /** Its gRPC socket. */
  address: string;
  /** Runs `ctr --address … args…`; resolves with stdout, rejects with stderr. */
  ctr(...args: string[]): Promise<string>;
  /** The last 20 kB of its output. */
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts containerd under `dir` with `proxies` (name → socket of a proxy snapshotter) and waits until it
 * answers. `toml` is appended to its config (e.g. a CRI section).
 */
export async function startContainerd(
  dir: string,
  proxies: Record<string, string>,
  opts: { cri?: boolean; toml?: string } = {},
): Promise<Containerd> {
  await mkdir(dir, { recursive: true });
  const address = join(dir, 'containerd.sock');
  const config = [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    opts.cri ? '' : 'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${JSON.stringify(address)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
    '[proxy_plugins]',
    ...Object.entries(proxies).flatMap(([name, socket]) => [
      `  [proxy_plugins.${name}]`,
      '    type = "snapshot"',
      `    address = ${JSON.stringify(socket)}`,
    ]),
    opts.toml ?? '',
  ].join('\n');
  await writeFile(join(dir, 'config.toml'), `${config}\n`);
  const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
  const ctr = client('ctr', ['--address', address], env);
  const daemon = await startDaemon('containerd', 'containerd', ['--config', join(dir, 'config.toml')], env, () =>
    ctr('version'),
  );
  return {
    address,
    ctr,
    log: daemon.log,
    stop: async () => {
      if (daemon.child.exitCode !== null) return;
      for (const t of (await ctr('tasks', 'ls', '-q').catch(() => '')).split('\n').filter(Boolean))
        await ctr('tasks', 'kill', '-s', 'SIGKILL', t).catch(() => {});
      await daemon.stop();
    },
  };
}
