// A minimal client of the plugin protocol, speaking as dockerd's plugin client does: POST, JSON in and
// out, raw tar for Diff and ApplyDiff.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { run } from '@lcow/testkit';

export interface Answer {
  status: number;
  body: Record<string, unknown>;
}

export function call(socket: string, method: string, body: unknown = {}): Promise<Answer> {
  return send(socket, `/${method}`, JSON.stringify(body)).then(({ status, bytes }) => ({
    status,
    body: JSON.parse(bytes.toString() || '{}') as Record<string, unknown>,
  }));
}

/** `GraphDriver.ApplyDiff?id=&parent=` with the tar as the body. */
export async function applyDiff(
  socket: string,
  id: string,
  parent: string,
  tar: Uint8Array | Readable,
): Promise<Answer> {
  const { status, bytes } = await send(socket, `/GraphDriver.ApplyDiff?id=${id}&parent=${parent}`, tar);
  return { status, body: JSON.parse(bytes.toString() || '{}') as Record<string, unknown> };
}

/** `GraphDriver.Diff`: the raw answer (a tar on 200). */
export function diff(socket: string, id: string, parent = ''): Promise<{ status: number; bytes: Buffer }> {
  return send(socket, '/GraphDriver.Diff', JSON.stringify({ ID: id, Parent: parent }));
}

export function send(
  socket: string,
  path: string,
  body: string | Uint8Array | Readable,
  method = 'POST',
): Promise<{ status: number; bytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socket, path, method, headers: { Accept: 'application/vnd.docker.plugins.v1.2+json' } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes: Buffer.concat(parts) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (typeof body === 'string' || body instanceof Uint8Array) req.end(body);
    else body.pipe(req);
  });
}

/** The plugin command (from the sources, under tsx) in a child process; resolves once it serves. */
export function startPlugin(args: string[]): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--conditions=@lcow/source', '--import', 'tsx', join(import.meta.dirname, 'plugin-bin.ts'), ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('serving')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`plugin exited ${code}: ${err}`)));
  });
}

/**
 * After a dockerd test, whatever happened: every mount left under `folder` unmounted (deepest first), then
 * `lcow cleanup` of the plugin's data root (loop devices, unions of dead processes, half-made layers).
 */
export async function releaseLeftovers(folder: string, dataRoot: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(folder))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m]).catch(() => {});
  await run(process.execPath, [
    '--conditions=@lcow/source',
    '--import',
    'tsx',
    join(import.meta.dirname, '..', '..', 'driver', 'test', 'lcow-bin.ts'),
    '--root',
    dataRoot,
    'cleanup',
  ]).catch(() => {});
}
