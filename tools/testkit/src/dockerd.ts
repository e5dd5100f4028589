// A private Docker engine for the tests (Debian's dockerd 20.10): its own data root, exec root and unix
// socket, no iptables, no bridge; stopped, with its containers, whatever happens.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { client, startDaemon } from './daemon.ts';

export interface Dockerd {
  /** `unix://…/docker.sock`, for DOCKER_HOST. */
  host: string;
  /** Runs the docker client against this daemon; resolves with stdout. */
  docker(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** Starts dockerd under `dir` with `extra` arguments (e.g. `--storage-driver vfs`) and waits until it answers. */
export async function startDockerd(dir: string, extra: string[] = []): Promise<Dockerd> {
  const exec = join(dir, 'exec');
  await mkdir(exec, { recursive: true });
  const host = `unix://${join(dir, 'docker.sock')}`;
  const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
  const docker = client('docker', ['-H', host], env);
  const daemon = await startDaemon(
    'dockerd',
    'dockerd',
    [
      '--data-root',
      join(dir, 'data'),
      '--exec-root',
      exec,
      '--pidfile',
      join(dir, 'docker.pid'),
      '-H',
      host,
      '--iptables=false',
      '--ip-masq=false',
      '--bridge=none',
      ...extra,
    ],
    env,
    () => docker('info'),
  );
  return {
    host,
    docker,
    stop: async () => {
      if (daemon.child.exitCode !== null) return;
      const ids = (await docker('ps', '-aq').catch(() => '')).split('\n').filter(Boolean);
      if (ids.length) await docker('rm', '-f', ...ids).catch(() => {});
      await daemon.stop();
    },
  };
}
