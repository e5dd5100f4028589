// A private Docker engine for the tests (Debian's dockerd 20.10): its own data root, exec root and unix
// socket, no iptables, no bridge; stopped, with its containers, whatever happens.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

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
  const child: ChildProcess = spawn(
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
    { stdio: ['ignore', 'pipe', 'pipe'], env },
  );
  let log = '';
  const keep = (d: Buffer): void => void (log = (log + d.toString()).slice(-20_000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const docker = (...args: string[]): Promise<string> =>
    new Promise((resolve, reject) =>
      execFile('docker', ['-H', host, ...args], { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`docker ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
      ),
    );
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`dockerd exited: ${log.slice(-3000)}`);
    try {
      await docker('info');
      break;
    } catch (e) {
      if (i > 120) {
        child.kill('SIGKILL');
        throw new Error(`dockerd did not answer in 60 s: ${log.slice(-3000)}`, { cause: e });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return {
    host,
    docker,
    stop: async () => {
      if (child.exitCode !== null) return;
      const ids = (await docker('ps', '-aq').catch(() => '')).split('\n').filter(Boolean);
      if (ids.length) await docker('rm', '-f', ...ids).catch(() => {});
      child.kill('SIGTERM');
      const done = new Promise((r) => child.once('exit', r));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await done;
      clearTimeout(timer);
    },
  };
}
