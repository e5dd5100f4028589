// What the long-running services (the Docker plugin, the containerd snapshotter) share with their operators:
// a log of one line per event with a time and a level, as text or JSON, and systemd's readiness
// notification (sd_notify: a datagram to $NOTIFY_SOCKET, sent through libc, as Node has no unix datagram
// sockets), so that a `Type=notify` unit is started only once its socket answers.
import { createRequire } from 'node:module';
import { bytes, struct, u16 } from '@lcow/binary';
import { DriverError } from './errors.ts';
import type { Metrics } from './metrics.ts';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Writes one event: `message` at `level` (default `info`). */
export type ServiceLog = (message: string, level?: LogLevel) => void;

/**
 * A log that writes events at `level` and above to `write` (default standard error), one line each:
 * `2026-12-07T21:10:00.123Z info  MESSAGE` as text, `{"time":…,"level":…,"msg":…}` as JSON. Control
 * characters in a message (a client's layer id with a newline) are escaped, so one event is one line.
 */
export function serviceLog(
  opts: { level?: LogLevel; format?: LogFormat; write?: (line: string) => void } = {},
): ServiceLog {
  const min = LOG_LEVELS.indexOf(opts.level ?? 'info');
  const write = opts.write ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const json = opts.format === 'json';
  return (message, level = 'info') => {
    if (LOG_LEVELS.indexOf(level) > min) return;
    const time = new Date().toISOString();
    if (json) write(JSON.stringify({ time, level, msg: message }));
    else write(`${time} ${level.padEnd(5)} ${oneLine(message)}`);
  };
}

function oneLine(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1));
}

/** `--log-level` and `--log-format` as given (undefined: the defaults), checked: `ERR_USAGE` naming the choices. */
export function logOptions(
  level: string | undefined,
  format: string | undefined,
): { level: LogLevel; format: LogFormat } {
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level))
    throw new DriverError('ERR_USAGE', `--log-level ${JSON.stringify(level)}: one of ${LOG_LEVELS.join(', ')}`);
  if (format !== undefined && !(LOG_FORMATS as readonly string[]).includes(format))
    throw new DriverError('ERR_USAGE', `--log-format ${JSON.stringify(format)}: one of ${LOG_FORMATS.join(', ')}`);
  return { level: (level ?? 'info') as LogLevel, format: (format ?? 'text') as LogFormat };
}

type KoffiFn = (...args: unknown[]) => number;

const AF_UNIX = 1;
/** struct sockaddr_un — sys/un.h (Linux: a 108-byte path). */
const SockaddrUn = struct('sockaddr_un', 'le', { family: u16, path: bytes(108) });

/**
 * Tells systemd `state` (`READY=1`, `STOPPING=1`, `STATUS=…`) when the process runs under a unit with
 * `NotifyAccess` (`Type=notify`): a datagram to the unix socket named by $NOTIFY_SOCKET (a path, or `@name`
 * in the abstract namespace). Returns false when there is no such socket (not under systemd), true once
 * sent; a socket that cannot be reached is `ERR_HOST_COMMAND` (systemd would wait for a readiness that
 * never comes, then fail the unit: better said at once).
 */
export function notifySystemd(state: string, env: Record<string, string | undefined> = process.env): boolean {
  const path = env.NOTIFY_SOCKET;
  if (!path) return false;
  if (path.length < 2 || Buffer.byteLength(path) > 107 || !(path.startsWith('/') || path.startsWith('@')))
    throw new DriverError('ERR_INVALID_ARGUMENT', `NOTIFY_SOCKET ${JSON.stringify(path)}: not a unix socket path`);
  const koffi = createRequire(import.meta.url)('koffi') as {
    load(path: string): { func(proto: string): KoffiFn };
    errno(): number;
  };
  const libc = koffi.load('libc.so.6');
  const socket = libc.func('int socket(int domain, int type, int protocol)');
  const sendto = libc.func(
    'long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)',
  );
  const close = libc.func('int close(int fd)');
  // `@` stands for the abstract namespace's leading NUL; a path is NUL-terminated.
  const name = Buffer.from(path.startsWith('@') ? `\0${path.slice(1)}` : `${path}\0`);
  const path108 = new Uint8Array(108);
  path108.set(name);
  const addr = SockaddrUn.encode({ family: AF_UNIX, path: path108 });
  const addrLength = SockaddrUn.offsetOf('path') + name.length;
  const SOCK_DGRAM_CLOEXEC = 2 | 0o2000000;
  const fd = socket(AF_UNIX, SOCK_DGRAM_CLOEXEC, 0);
  if (fd < 0) throw new DriverError('ERR_HOST_COMMAND', `sd_notify: socket() failed (errno ${koffi.errno()})`);
  try {
    const msg = Buffer.from(state);
    if (sendto(fd, msg, msg.length, 0, addr, addrLength) < 0)
      throw new DriverError('ERR_HOST_COMMAND', `sd_notify to ${path}: sendto() failed (errno ${koffi.errno()})`);
    return true;
  } finally {
    close(fd);
  }
}

/** The options every service takes beside its own, for `node:util` parseArgs. */
export const SERVICE_ARGS = {
  'metrics-address': { type: 'string' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  version: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * What every service does with {@link SERVICE_ARGS} before it starts: `--help` (its `usage`) and `--version`
 * print and end (the status to exit with is returned), a bad `--log-level`/`--log-format` is a usage error
 * (status 2); otherwise the log they ask for.
 */
export function serviceCommon(
  values: { help?: boolean; version?: boolean; 'log-level'?: string; 'log-format'?: string },
  usage: string,
  version: () => string,
): number | ServiceLog {
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  try {
    return serviceLog(logOptions(values['log-level'], values['log-format']));
  } catch (e) {
    process.stderr.write(`lcow: ERR_USAGE: ${(e as Error).message}\n`);
    return 2;
  }
}

/** Their help lines, for a service's usage text. */
export const SERVICE_HELP = `  --metrics-address HOST:PORT
                       serve Prometheus metrics at http://HOST:PORT/metrics (calls, durations,
                       errors by code, bytes converted, layers, unions mounted); default: none
  --log-level LEVEL    error, warn, info (default) or debug
  --log-format FORMAT  text (default: "TIME LEVEL message") or json (one object a line)
  --version            print the version and exit
  -h, --help           this text

Under systemd (Type=notify) it reports READY=1 once the socket answers, STOPPING=1 when it stops.`;

/**
 * Runs a started service until SIGTERM, SIGINT or SIGHUP: tells systemd it is ready (a notification that
 * cannot be sent stops it at once: status 1), then on the signal says it is stopping, closes the server and
 * resolves with status 0.
 */
export async function serveUntilSignal(
  server: { socket: string; close(): Promise<void> },
  log: ServiceLog,
  name: string,
  metrics: { address: string | undefined; metrics: Metrics } | null = null,
): Promise<number> {
  let exporter: { url: string; close(): Promise<void> } | null = null;
  if (metrics?.address !== undefined) {
    try {
      exporter = await serveMetrics(metrics.address, metrics.metrics);
    } catch (e) {
      log(`${name}: ${(e as Error).message}`, 'error');
      await server.close();
      return (e as DriverError).code === 'ERR_USAGE' ? 2 : 1;
    }
    log(`${name}: metrics at ${exporter.url}`);
  }
  log(`${name}: serving ${server.socket}`);
  try {
    notifySystemd(`READY=1\nSTATUS=serving ${server.socket}\nMAINPID=${process.pid}`);
  } catch (e) {
    log(`${name}: cannot tell systemd it is ready: ${(e as Error).message}`, 'error');
    await exporter?.close();
    await server.close();
    return 1;
  }
  const signal = await new Promise<'SIGTERM' | 'SIGINT' | 'SIGHUP'>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  log(`${name}: ${signal}, stopping`);
  notifySystemd('STOPPING=1');
  await exporter?.close();
  await server.close();
  log(`${name}: stopped`);
  // A stop asked for is a clean end whatever the signal (containerd exits 0 on SIGINT too, and containerd's
  // snapshotter test harness stops a proxy with it and counts any other status as a failed cleanup).
  return 0;
}

/**
 * Serves `metrics` at `http://ADDRESS/metrics` in Prometheus' text format (`HOST:PORT`, `[v6]:PORT`; opt-in:
 * a service starts none unless asked). Anything else is 404. Resolves once listening, with its `close`.
 */
export async function serveMetrics(
  address: string,
  metrics: Metrics,
): Promise<{ url: string; close(): Promise<void> }> {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535))
    throw new DriverError('ERR_USAGE', `--metrics-address ${JSON.stringify(address)}: HOST:PORT (127.0.0.1:9323)`);
  const host = m[1] ?? (m[2] || '127.0.0.1');
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    metrics.render().then(
      (text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text),
      (e: unknown) => res.writeHead(500).end(String(e)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(
        new DriverError('ERR_HOST_COMMAND', `--metrics-address ${address}: ${(e as Error).message}`, { cause: e }),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as { port: number };
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${bound.port}/metrics`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
