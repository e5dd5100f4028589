// Images of the Docker daemon, through its Engine API (a unix socket, or tcp:// without TLS; DOCKER_HOST
// honoured). `docker save` output names its layers only in the manifest at its end, in an order of its
// own, so the export is copied to a temporary file first and read as a docker-save archive (the copy goes
// when the image is closed).
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ImageError } from './errors.ts';
import { openLocal } from './local.ts';
import type { DaemonReference } from './reference.ts';
import type { Image, Platform } from './types.ts';

export interface DaemonOptions {
  /** `unix:///var/run/docker.sock` (default: DOCKER_HOST, else that) or `tcp://HOST:PORT`. */
  host?: string;
  /** Where the export is copied while the image is open (default the system's temporary folder). */
  tmpDir?: string;
  platform: Platform;
  signal?: AbortSignal;
}

function endpoint(host: string): { socketPath?: string; host?: string; port?: number } {
  if (host.startsWith('unix://')) return { socketPath: host.slice('unix://'.length) };
  if (host.startsWith('tcp://') || host.startsWith('http://')) {
    const u = new URL(host.replace(/^tcp:/, 'http:'));
    return { host: u.hostname, port: Number(u.port || 2375) };
  }
  if (host.startsWith('/')) return { socketPath: host };
  throw new ImageError('ERR_INVALID_REFERENCE', `DOCKER_HOST ${JSON.stringify(host)}: unix:// or tcp:// (without TLS)`);
}

function call(host: string, path: string, signal?: AbortSignal): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...endpoint(host), path, method: 'GET', signal, headers: { host: 'docker' } });
    req.once('response', resolve);
    req.once('error', (e) =>
      reject(
        e.name === 'AbortError'
          ? new ImageError('ERR_ABORTED', `docker daemon at ${host}: aborted`, { cause: e })
          : new ImageError('ERR_NETWORK', `docker daemon at ${host}: ${e.message}`, { cause: e }),
      ),
    );
    req.end();
  });
}

async function text(res: http.IncomingMessage): Promise<string> {
  let s = '';
  for await (const c of res as AsyncIterable<Buffer>) {
    s += c.toString();
    if (s.length > 1 << 20) break;
  }
  return s;
}

/** Opens `docker-daemon:NAME`: asks the daemon what it is, copies its export, reads that. */
export async function openDaemonImage(ref: DaemonReference, opts: DaemonOptions): Promise<Image> {
  const host = opts.host ?? process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
  const name = encodeURIComponent(ref.name);
  const info = await call(host, `/images/${name}/json`, opts.signal);
  if (info.statusCode === 404) {
    info.resume();
    throw new ImageError('ERR_IMAGE_NOT_FOUND', `docker-daemon:${ref.name}: no such image in the daemon at ${host}`);
  }
  if (info.statusCode !== 200)
    throw new ImageError('ERR_REGISTRY', `docker-daemon:${ref.name}: ${info.statusCode} ${(await text(info)).trim()}`);
  await text(info);
  const dir = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'lcow-daemon-'));
  try {
    const res = await call(host, `/images/get?names=${name}`, opts.signal);
    if (res.statusCode !== 200)
      throw new ImageError(
        'ERR_REGISTRY',
        `docker-daemon:${ref.name}: export answered ${res.statusCode} ${(await text(res)).trim()}`,
      );
    const file = join(dir, 'image.tar');
    await pipeline(res, createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal: opts.signal });
    const image = await openLocal({ transport: 'docker-archive', path: file, ref: null }, { platform: opts.platform });
    return {
      ...image,
      reference: ref,
      name: `docker-daemon:${ref.name}`,
      format: 'docker-daemon',
      close: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
