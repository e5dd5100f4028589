import { DriverError } from '../errors.ts';

const UNITS = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 } as const;

/** A value from the command line as an error message quotes it: JSON, and no more than 60 characters of it. */
export function quoted(value: string): string {
  return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
}

/** Parses `20G`, `512M`, `1.5T`, `4096` (binary units; an optional `i`/`iB`/`B` suffix is accepted). */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT])?(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new DriverError('ERR_USAGE', `${what} ${quoted(text)}: expected a size such as 20G, 512M or 1048576`);
  const unit = m[2] ? UNITS[m[2].toUpperCase() as keyof typeof UNITS] : 1;
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n))
    throw new DriverError('ERR_USAGE', `${what} ${quoted(text)}: not a whole number of bytes`);
  return n;
}

const DURATION_UNITS = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as const;

/**
 * Parses a duration as Go programs (skopeo, dockerd) write one — `90s`, `5m`, `1h30m`, `250ms` — or bare
 * seconds (`30`); milliseconds out. Zero means none.
 */
export function parseDuration(text: string, what: string): number {
  const t = text.trim();
  const bad = (): DriverError =>
    new DriverError('ERR_USAGE', `${what} ${quoted(text)}: expected a duration such as 30s, 5m or 1h30m`);
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  if (!/^(\d+(\.\d+)?(h|ms|m|s))+$/.test(t)) throw bad();
  let ms = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s)/g))
    ms += Number(m[1]) * DURATION_UNITS[m[2] as keyof typeof DURATION_UNITS];
  if (!Number.isSafeInteger(Math.round(ms))) throw bad();
  return Math.round(ms);
}

/** `20 GiB`, `1.5 MiB`, `512 B`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? Math.round(v) : Number.isInteger(v) ? v : v.toFixed(2)} ${units[u]}`;
}

/** JSON with bigints as decimal strings and dates as ISO strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

/** Aligned `label: value` lines. */
export function table(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w)}${v}`).join('\n');
}

const C_ESCAPES: Record<string, string> = { '\n': '\\n', '\t': '\\t', '\r': '\\r', '\\': '\\\\' };

/**
 * A file name for a line of text output: a backslash and every control character escaped (`\n`, `\t`,
 * `\r`, `\ooo`), as `ls -b` does, so a name cannot forge another line. `--json` output needs none of it.
 */
export function escapeName(name: string): string {
  // eslint-disable-next-line no-control-regex
  return name.replace(/[\x00-\x1f\x7f\\]/g, (c) => C_ESCAPES[c] ?? `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/**
 * The time an output records: `--timestamp` (seconds since 1970, or an ISO date), else `SOURCE_DATE_EPOCH`
 * (seconds, as reproducible-builds.org defines it), else undefined (now). A value that does not parse is a
 * usage error, not a silent "now".
 */
export function outputTime(given: string | undefined, env: Record<string, string | undefined>): Date | undefined {
  const [text, what] = given !== undefined ? [given, '--timestamp'] : [env.SOURCE_DATE_EPOCH, 'SOURCE_DATE_EPOCH'];
  if (text === undefined || text === '') return undefined;
  const d = /^\d+$/.test(text)
    ? new Date(Number(text) * 1000)
    : what === '--timestamp'
      ? new Date(text)
      : new Date(Number.NaN);
  if (Number.isNaN(d.getTime()))
    throw new DriverError(
      'ERR_USAGE',
      `${what} ${quoted(text)}: expected seconds since 1970${what === '--timestamp' ? ' or an ISO date' : ''}`,
    );
  return d;
}

/** The times a VHD footer can hold (seconds since 2000 in 32 bits) and an ext4 superblock (32-bit seconds). */
export const TIME_RANGES = {
  vhd: [Date.UTC(2000, 0, 1), Date.UTC(2000, 0, 1) + (2 ** 32 - 1) * 1000],
  ext4: [0, (2 ** 32 - 1) * 1000],
} as const;

/** Refuses, before any work, a time the output format cannot hold. */
export function checkTime(t: Date | undefined, format: keyof typeof TIME_RANGES, what = '--timestamp'): void {
  if (!t) return;
  const [lo, hi] = TIME_RANGES[format];
  if (t.getTime() < lo || t.getTime() > hi)
    throw new DriverError(
      'ERR_USAGE',
      `${what} ${t.toISOString()}: outside what a ${format === 'vhd' ? 'VHD footer' : 'ext4 superblock'} can hold (${new Date(lo).toISOString().slice(0, 10)} to ${new Date(hi).toISOString().slice(0, 10)})`,
    );
}

/** Refuses `-` where an output cannot be a pipe, before any work. */
export function fileOutput(out: string, why: string): string {
  if (out === '-') throw new DriverError('ERR_USAGE', `-o -: ${why}, so it cannot go to standard output`);
  return out;
}
