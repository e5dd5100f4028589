// The snapshotter command from the sources in a child process, as the tests that restart or kill it need it.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { run } from '@lcow/testkit';

/** Starts `snapshotter-bin.ts --socket SOCKET --root ROOT EXTRA…`; resolves once it says it serves. */
export function startSnapshotter(socket: string, root: string, extra: readonly string[] = []): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      '--conditions=@lcow/source',
      '--import',
      'tsx',
      join(import.meta.dirname, 'snapshotter-bin.ts'),
      '--socket',
      socket,
      '--root',
      root,
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (process.env.LCOW_DEBUG) process.stderr.write(d);
      if (err.includes('serving')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`snapshotter exited ${code}: ${err}`)));
  });
}

/** Stops a snapshotter child with `signal` (SIGTERM: it stops cleanly) and waits for it to exit. */
export async function stopChild(child: ChildProcess | null, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await gone;
}

/** `lcow --root ROOT cleanup`: whatever a failed case left of our unions and loop devices under `root`. */
export async function lcowCleanup(root: string): Promise<void> {
  await run(process.execPath, [
    '--conditions=@lcow/source',
    '--import',
    'tsx',
    join(import.meta.dirname, '../../driver/test/lcow-bin.ts'),
    '--root',
    root,
    'cleanup',
  ]).catch(() => {});
}
