// The snapshotter command from the sources in a child process, as the tests that restart or kill it need it.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

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
