// What a private daemon of the tests needs whatever it is (dockerd, containerd): started with its output kept
// (the last 20 kB, for the error that says why it failed), waited for until it answers, stopped with SIGTERM and,
// past 20 s, SIGKILL.
import { execFile, spawn, type ChildProcess } from 'node:child_process';

export interface Daemon {
  child: ChildProcess;
  /** The end of what it printed. */
  log(): string;
  /** SIGTERM, then SIGKILL after 20 s; resolves once it has exited. */
  stop(): Promise<void>;
}

/** Starts `cmd args…` and polls `answers` every 500 ms until it resolves (60 s at most). */
export async function startDaemon(
  name: string,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  answers: () => Promise<unknown>,
): Promise<Daemon> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let log = '';
  const keep = (d: Buffer): void => void (log = (log + d.toString()).slice(-20_000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited: ${log.slice(-3000)}`);
    try {
      await answers();
      break;
    } catch (e) {
      if (i > 120) {
        child.kill('SIGKILL');
        throw new Error(`${name} did not answer in 60 s: ${log.slice(-3000)}`, { cause: e });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return {
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const done = new Promise((r) => child.once('exit', r));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await done;
      clearTimeout(timer);
    },
  };
}

/** A client of a daemon (`docker -H …`, `ctr --address …`): runs `cmd pre… args…`, resolves with stdout. */
export function client(cmd: string, pre: string[], env: NodeJS.ProcessEnv): (...args: string[]) => Promise<string> {
  return (...args) =>
    new Promise((resolve, reject) =>
      execFile(cmd, [...pre, ...args], { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
      ),
    );
}
