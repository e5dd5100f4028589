// HTTP for the registry client: TLS as skopeo configures it (a certificate folder per registry,
// `--tls-verify=false`), proxies from the environment as Go programs read them (HTTPS_PROXY, HTTP_PROXY,
// NO_PROXY; never for loopback), redirects, and retries with backoff for what a retry can fix.
import { readdirSync, readFileSync } from 'node:fs';
import type * as Http from 'node:http';
import type * as Https from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as Tls from 'node:tls';
import { ImageError } from '../errors.ts';

// Loaded at the first request: commands that read only local images (`lcow image roothash FILE`) would
// otherwise pay for http, https and tls at every start (≈ 15–20 ms on a 2-core VM).
let http: typeof Http;
let https: typeof Https;
let tls: typeof Tls;
let loading: Promise<void> | undefined;
function loadNet(): Promise<void> {
  return (loading ??= Promise.all([import('node:http'), import('node:https'), import('node:tls')]).then(([a, b, c]) => {
    http = a;
    https = b;
    tls = c;
  }));
}

/** How to reach registries. */
export interface TransportOptions {
  /** Verify registry certificates (default true). Off: any certificate, and plain HTTP if HTTPS fails. */
  tlsVerify?: boolean;
  /**
   * A folder of `*.crt` (CA certificates) and `*.cert`/`*.key` pairs (client certificate), as skopeo's
   * `--cert-dir`; default `/etc/containers/certs.d/HOST[:PORT]` and `/etc/docker/certs.d/HOST[:PORT]`.
   */
  certDir?: string;
  /** Attempts for a request that failed in a way a retry can fix (default 5). */
  attempts?: number;
  /** First wait between attempts, doubled each time up to 8 s (default 250 ms). */
  backoffMs?: number;
  /** A connection that sends nothing for this long is dropped and retried (default 30 s). */
  idleTimeoutMs?: number;
  /**
   * From a request (its proxy tunnel and TLS handshake included) to the answer's headers, at most this long;
   * past it the attempt is dropped and retried (default 30 s).
   */
  requestTimeoutMs?: number;
  /**
   * A blob arriving slower than this, averaged over {@link TransportOptions.slowTimeoutMs}, ends the pull
   * with `ERR_TIMEOUT` (default 1024 bytes a second; 0: no floor), as curl's `--speed-limit`.
   */
  minBytesPerSecond?: number;
  /** The window of {@link TransportOptions.minBytesPerSecond} (default 60 s), as curl's `--speed-time`. */
  slowTimeoutMs?: number;
  /**
   * Everything the client does for one image — manifests, config, every blob — ends with `ERR_TIMEOUT`
   * past this (default none: a large image on a slow link may take hours; the floors above end a stalled one).
   */
  timeoutMs?: number;
  /** The environment for proxy settings (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

interface TlsFiles {
  ca?: Buffer[];
  cert?: Buffer;
  key?: Buffer;
}

const tlsCache = new Map<string, TlsFiles>();

/** The CA and client certificate files for `host` (`host:port`), read once. */
export function tlsFilesFor(host: string, certDir?: string): TlsFiles {
  const key = `${certDir ?? ''}|${host}`;
  const known = tlsCache.get(key);
  if (known) return known;
  const dirs = certDir
    ? [certDir]
    : [
        join('/etc/containers/certs.d', host),
        join('/etc/docker/certs.d', host),
        join(homedir(), '.config/containers/certs.d', host),
      ];
  const out: TlsFiles = {};
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      continue;
    }
    for (const n of names) {
      if (n.endsWith('.crt')) (out.ca ??= []).push(readFileSync(join(dir, n)));
      else if (n.endsWith('.cert')) {
        const keyName = `${n.slice(0, -'.cert'.length)}.key`;
        if (!names.includes(keyName))
          throw new ImageError('ERR_TLS', `${join(dir, n)}: client certificate without its key ${keyName}`);
        out.cert = readFileSync(join(dir, n));
        out.key = readFileSync(join(dir, keyName));
      }
    }
    if (certDir || out.ca || out.cert) break;
  }
  tlsCache.set(key, out);
  return out;
}

/** The proxy for `url`, from HTTPS_PROXY/HTTP_PROXY and NO_PROXY; none for loopback hosts. */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv = process.env): URL | null {
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || /^127\./.test(host) || host === '::1') return null;
  const raw = url.protocol === 'https:' ? (env.HTTPS_PROXY ?? env.https_proxy) : (env.HTTP_PROXY ?? env.http_proxy);
  if (!raw) return null;
  const noProxy = (env.NO_PROXY ?? env.no_proxy ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  for (const rule of noProxy) {
    if (rule === '*') return null;
    const [h, p] = rule.startsWith('[') ? [rule.slice(0, rule.indexOf(']') + 1), rule.split(']:')[1]] : rule.split(':');
    if (p && p !== port) continue;
    const name = h!.replace(/^\*?\./, '');
    if (host === name || host.endsWith(`.${name}`)) return null;
  }
  try {
    return new URL(raw.includes('://') ? raw : `http://${raw}`);
  } catch {
    throw new ImageError('ERR_NETWORK', `proxy ${JSON.stringify(raw)} from the environment is not a URL`);
  }
}

/**
 * Opens a tunnel through `proxy` to `host:port` (HTTP CONNECT) and starts TLS in it. Returns `cancel`: the
 * caller's request timer and signal end a tunnel that a proxy never answers, or a TLS handshake that never
 * finishes, with their error (Node's request cannot: it has no socket to destroy until the tunnel gives one).
 */
function tunnel(
  proxy: URL,
  target: URL,
  tlsOpts: Tls.ConnectionOptions,
  done: (err: Error | null, socket?: Duplex) => void,
): (err: Error) => void {
  const port = target.port || '443';
  const auth = proxy.username
    ? {
        'proxy-authorization': `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}`,
      }
    : {};
  let settled = false;
  let open: Duplex | null = null;
  const finish = (err: Error | null, socket?: Duplex): void => {
    if (settled) return;
    settled = true;
    done(err, socket);
  };
  const req = http.request({
    host: proxy.hostname,
    port: proxy.port || 80,
    method: 'CONNECT',
    path: `${target.hostname}:${port}`,
    headers: { host: `${target.hostname}:${port}`, ...auth },
  });
  req.once('connect', (res, socket) => {
    open = socket;
    if (res.statusCode !== 200) {
      socket.destroy();
      finish(new ImageError('ERR_NETWORK', `proxy ${proxy.host}: CONNECT ${target.host} answered ${res.statusCode}`));
      return;
    }
    const t = tls.connect({ ...tlsOpts, socket, servername: target.hostname });
    open = t;
    t.once('secureConnect', () => finish(null, t));
    t.once('error', (e) => finish(e));
  });
  req.once('error', (e) => finish(e));
  req.end();
  return (err) => {
    if (settled) return;
    req.destroy();
    open?.destroy();
    finish(err);
  };
}

export interface Request {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** One HTTP exchange (no retry, no redirect): resolves with the response, body unread. */
export async function send(url: URL, req: Request, opts: TransportOptions): Promise<Http.IncomingMessage> {
  await loadNet();
  return new Promise((resolve, reject) => {
    const secure = url.protocol === 'https:';
    const files = secure ? tlsFilesFor(url.host, opts.certDir) : {};
    const tlsOpts: Tls.ConnectionOptions = {
      rejectUnauthorized: opts.tlsVerify !== false,
      ...(files.ca ? { ca: [...tls.rootCertificates, ...files.ca.map((b) => b.toString())] } : {}),
      ...(files.cert ? { cert: files.cert, key: files.key } : {}),
    };
    const proxy = proxyFor(url, opts.env);
    const base: Http.RequestOptions = {
      method: req.method ?? 'GET',
      headers: { 'user-agent': 'lcow', ...req.headers },
      signal: req.signal,
    };
    let r: Http.ClientRequest;
    let cancelTunnel: ((err: Error) => void) | null = null;
    if (proxy && !secure) {
      // A plain-HTTP request through a proxy names the whole URL.
      r = http.request({ ...base, host: proxy.hostname, port: proxy.port || 80, path: url.href });
    } else if (proxy) {
      r = https.request(url, {
        ...base,
        ...tlsOpts,
        // No agent: Node then opens the connection with createConnection (the tunnel).
        createConnection: ((_: unknown, cb: (err: Error | null, s?: Duplex) => void) => {
          cancelTunnel = tunnel(proxy, url, tlsOpts, cb);
          return undefined;
        }) as unknown as Https.RequestOptions['createConnection'],
      });
    } else r = (secure ? https : http).request(url, { ...base, ...(secure ? tlsOpts : {}) });
    const idleMs = opts.idleTimeoutMs ?? 30_000;
    const answerMs = opts.requestTimeoutMs ?? 30_000;
    /** Ends the exchange with `err`, before or after it has a socket. */
    const fail = (err: Error): void => {
      const cancel = cancelTunnel as ((e: Error) => void) | null;
      if (cancel && !r.socket) cancel(err);
      else r.destroy(err);
    };
    // Until the headers are in, the whole exchange (tunnel, handshake, a server trickling its headers) has
    // `answerMs`; after them, the body may take its time as long as it keeps coming.
    const answerTimer = setTimeout(
      () => fail(new ImageError('ERR_NETWORK', `${url.host}: no answer in ${answerMs / 1000} s`)),
      answerMs,
    );
    const onAbort = (): void =>
      fail(new ImageError('ERR_ABORTED', `${url.host}: aborted`, { cause: req.signal?.reason }));
    req.signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      clearTimeout(answerTimer);
      req.signal?.removeEventListener('abort', onAbort);
    };
    r.setTimeout(idleMs, () => fail(new ImageError('ERR_NETWORK', `${url.host}: no answer in ${idleMs / 1000} s`)));
    r.once('response', (res) => {
      done();
      res.setTimeout?.(idleMs, () =>
        res.destroy(new ImageError('ERR_NETWORK', `${url.host}: stopped sending for ${idleMs / 1000} s`)),
      );
      resolve(res);
    });
    r.once('error', (e) => {
      done();
      reject(e);
    });
    r.once('close', done);
    r.end();
  });
}

const RETRYABLE_ERRNO = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ECONNABORTED',
]);

/** Whether an error of a request (not an answer) is worth another attempt. */
export function retryable(e: unknown): boolean {
  const err = e as NodeJS.ErrnoException;
  if (err?.name === 'AbortError') return false;
  if (err instanceof ImageError) return err.code === 'ERR_NETWORK';
  return RETRYABLE_ERRNO.has(err?.code ?? '') || /socket hang up|aborted|premature close/i.test(err?.message ?? '');
}

/** TLS failures get their own code and a hint; everything else that is not an answer is `ERR_NETWORK`. */
export function networkError(url: URL, e: unknown): ImageError {
  if (e instanceof ImageError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err?.name === 'AbortError') return new ImageError('ERR_ABORTED', `${url.host}: aborted`, { cause: e });
  const code = err?.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL|HOSTNAME/.test(code))
    return new ImageError(
      'ERR_TLS',
      `${url.host}: ${err.message} (trust its CA with --cert-dir, or --tls-verify=false)`,
      { cause: e },
    );
  return new ImageError(
    'ERR_NETWORK',
    `${url.host}: ${err?.message ?? String(e)}${code && !err.message?.includes(code) ? ` (${code})` : ''}`,
    {
      cause: e,
    },
  );
}

/** Waits before attempt `n` (1-based): 250 ms, 500 ms, 1 s… up to 8 s, with a little jitter. */
export async function backoff(n: number, opts: TransportOptions, signal?: AbortSignal): Promise<void> {
  const base = opts.backoffMs ?? 250;
  const ms = Math.min(8000, base * 2 ** (n - 1));
  await sleep(ms * (0.8 + Math.random() * 0.4), undefined, { signal });
}

/**
 * The speed floor of {@link TransportOptions.minBytesPerSecond}: bytes are counted as they arrive, and a
 * window of {@link TransportOptions.slowTimeoutMs} that brought fewer than the floor ends the transfer with
 * `ERR_TIMEOUT`. (Silence is the idle timeout's; this catches a peer that trickles to keep a connection up.)
 */
export class SpeedFloor {
  readonly #floor: number;
  readonly #windowMs: number;
  readonly #what: string;
  #start = performance.now();
  #bytes = 0;
  constructor(opts: TransportOptions, what: string) {
    this.#floor = opts.minBytesPerSecond ?? 1024;
    this.#windowMs = opts.slowTimeoutMs ?? 60_000;
    this.#what = what;
  }
  /** Counts `n` bytes that arrived now; throws when the window just ended below the floor. */
  add(n: number): void {
    this.#bytes += n;
    const elapsed = performance.now() - this.#start;
    if (elapsed < this.#windowMs) return;
    const rate = (this.#bytes * 1000) / elapsed;
    if (this.#floor > 0 && rate < this.#floor)
      throw new ImageError(
        'ERR_TIMEOUT',
        `${this.#what}: ${Math.round(rate)} bytes a second for ${Math.round(elapsed / 1000)} s, below the floor of ${this.#floor}`,
      );
    this.#start = performance.now();
    this.#bytes = 0;
  }
}

/**
 * The first `max` bytes of a body (an error answer, to be quoted), the rest not read; whatever arrived
 * before a failure. Always resolves.
 */
export async function readPrefix(res: Http.IncomingMessage, max: number): Promise<string> {
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of res as AsyncIterable<Buffer>) {
      parts.push(c);
      n += c.length;
      if (n >= max) break;
    }
  } catch {
    // what came before the failure is enough
  } finally {
    res.destroy();
  }
  return Buffer.concat(parts).subarray(0, max).toString('utf8');
}

/** Reads a response body of at most `max` bytes, no slower than the speed floor. */
export async function readBody(
  res: Http.IncomingMessage,
  max: number,
  what: string,
  opts: TransportOptions = {},
): Promise<Buffer> {
  const declared = Number(res.headers['content-length'] ?? -1);
  if (declared > max) {
    res.destroy();
    throw new ImageError('ERR_REGISTRY', `${what}: ${declared} bytes, more than ${max}`);
  }
  const floor = new SpeedFloor(opts, what);
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of res as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > max) throw new ImageError('ERR_REGISTRY', `${what}: more than ${max} bytes`);
      floor.add(c.length);
      parts.push(c);
    }
  } finally {
    res.destroy();
  }
  return Buffer.concat(parts);
}
