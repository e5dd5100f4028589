// Images of the Docker daemon, through its Engine API (a unix socket, or tcp:// without TLS; DOCKER_HOST
// honoured). `docker save` output names its layers only in the manifest at its end, in an order of its
// own, so the export is copied to a temporary file first and read as a docker-save archive (the copy goes
// when the image is closed).
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, statfs } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ImageError, quoteRemote } from './errors.ts';
import { openLocal } from './local.ts';
import { readPrefix } from './registry/http.ts';
import type { DaemonReference } from './reference.ts';
import type { Image, Platform } from './types.ts';

export interface DaemonOptions {
  /** `unix:///var/run/docker.sock` (default: DOCKER_HOST, else that) or `tcp://HOST:PORT`. */
  host?: string;
  /** Where the export is copied while the image is open (default the system's temporary folder). */
  tmpDir?: string;
  platform: Platform;
  signal?: AbortSignal;
  /** A daemon that sends nothing for this long, before or during its answer, is given up (default 60 s). */
  idleTimeoutMs?: number;
  /** The whole export at most this long (default none: the idle timeout ends a stalled daemon). */
  timeoutMs?: number;
  /**
   * Largest export copied (default: what the temporary folder's filesystem can take while keeping 1 GiB,
   * or 5 % of a smaller one, free). An export that passes it ends with `ERR_INVALID_IMAGE`, its copy deleted.
   */
  maxBytes?: number;
}

function endpoint(host: string): { socketPath?: string; host?: string; port?: number } {
  if (host.startsWith('unix://')) return { socketPath: host.slice('unix://'.length) };
  if (host.startsWith('tcp://') || host.startsWith('http://')) {
    const u = new URL(host.replace(/^tcp:/, 'http:'));
    return { host: u.hostname, port: Number(u.port || 2375) };
  }
  if (host.startsWith('/')) return { socketPath: host };
  throw new ImageError(
    'ERR_INVALID_REFERENCE',
    `DOCKER_HOST ${quoteRemote(host, 200)}: unix:// or tcp:// (without TLS)`,
  );
}

/** One GET to the daemon: resolves with the answer (body unread), which goes quiet for `idleMs` at most. */
async function call(host: string, path: string, idleMs: number, signal?: AbortSignal): Promise<IncomingMessage> {
  // Loaded here, not at the top: only this source needs it, and every `lcow` start would pay for it.
  const http = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = http.request({ ...endpoint(host), path, method: 'GET', signal, headers: { host: 'docker' } });
    const quiet = (): void =>
      void req.destroy(new ImageError('ERR_TIMEOUT', `docker daemon at ${host}: silent for ${idleMs / 1000} s`));
    req.setTimeout(idleMs, quiet);
    req.once('response', (res) => {
      res.setTimeout?.(idleMs, () =>
        res.destroy(new ImageError('ERR_TIMEOUT', `docker daemon at ${host}: stopped sending for ${idleMs / 1000} s`)),
      );
      resolve(res);
    });
    req.once('error', (e) => reject(daemonError(host, e, signal)));
    req.end();
  });
}

function daemonError(host: string, e: unknown, signal?: AbortSignal): ImageError {
  if (e instanceof ImageError) return e;
  const err = e as Error;
  const reason = signal?.aborted ? (signal.reason as { name?: string } | undefined) : undefined;
  if (reason?.name === 'TimeoutError')
    return new ImageError('ERR_TIMEOUT', `docker daemon at ${host}: past the deadline`, { cause: e });
  if (err?.name === 'AbortError' || signal?.aborted)
    return new ImageError('ERR_ABORTED', `docker daemon at ${host}: aborted`, { cause: e });
  return new ImageError('ERR_NETWORK', `docker daemon at ${host}: ${err?.message ?? String(e)}`, { cause: e });
}

/** What the daemon said in an error answer: its JSON `message`, else its text, quoted and cut. */
async function said(res: IncomingMessage): Promise<string> {
  const body = await readPrefix(res, 16 << 10);
  let text = body.trim();
  try {
    const doc = JSON.parse(body) as { message?: unknown };
    if (typeof doc?.message === 'string') text = doc.message;
  } catch {
    // not JSON (or cut): the text as it is
  }
  return text ? quoteRemote(text) : '(no message)';
}

/** The default bound of an export: the temporary folder's free space less a reserve. */
async function roomIn(dir: string): Promise<number> {
  const st = await statfs(dir);
  const total = st.blocks * st.bsize;
  return Math.max(0, st.bavail * st.bsize - Math.min(1 << 30, Math.floor(total / 20)));
}

/** Counts an export as it passes; past `max` bytes it ends with an error. */
function bounded(max: number, what: string): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      n += chunk.length;
      if (n > max)
        return done(new ImageError('ERR_INVALID_IMAGE', `${what}: the export passed ${max} bytes (its size bound)`));
      done(null, chunk);
    },
  });
}

/** Opens `docker-daemon:NAME`: asks the daemon what it is, copies its export, reads that. */
export async function openDaemonImage(ref: DaemonReference, opts: DaemonOptions): Promise<Image> {
  const host = opts.host ?? process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
  const name = encodeURIComponent(ref.name);
  const what = `docker-daemon:${ref.name}`;
  const idleMs = opts.idleTimeoutMs ?? 60_000;
  const deadline = opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : null;
  const signal = deadline && opts.signal ? AbortSignal.any([opts.signal, deadline]) : (deadline ?? opts.signal);
  const info = await call(host, `/images/${name}/json`, idleMs, signal);
  if (info.statusCode === 404) {
    info.resume();
    throw new ImageError('ERR_IMAGE_NOT_FOUND', `${what}: no such image in the daemon at ${host}`);
  }
  if (info.statusCode !== 200) throw new ImageError('ERR_REGISTRY', `${what}: ${info.statusCode} ${await said(info)}`);
  info.resume();
  const tmp = opts.tmpDir ?? tmpdir();
  const max = opts.maxBytes ?? (await roomIn(tmp));
  const dir = await mkdtemp(join(tmp, 'lcow-daemon-'));
  try {
    const res = await call(host, `/images/get?names=${name}`, idleMs, signal);
    if (res.statusCode !== 200)
      throw new ImageError('ERR_REGISTRY', `${what}: export answered ${res.statusCode} ${await said(res)}`);
    const declared = Number(res.headers['content-length'] ?? -1);
    if (declared > max) {
      res.destroy();
      throw new ImageError(
        'ERR_INVALID_IMAGE',
        `${what}: an export of ${declared} bytes, more than its bound of ${max}`,
      );
    }
    const file = join(dir, 'image.tar');
    try {
      await pipeline(res, bounded(max, what), createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal });
    } catch (e) {
      throw daemonError(host, e, signal);
    }
    const image = await openLocal({ transport: 'docker-archive', path: file, ref: null }, { platform: opts.platform });
    return {
      ...image,
      reference: ref,
      name: what,
      format: 'docker-daemon',
      close: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
