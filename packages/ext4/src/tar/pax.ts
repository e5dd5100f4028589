// POSIX.1-2001 pax extended header records: "<length> <key>=<value>\n", length counting the whole record.
import { tarError } from './header.ts';

/** Largest pax or GNU long-name body we hold in memory. */
export const MAX_META_BYTES = 1 << 20;

/** Parses pax records; keys and values are latin1 byte strings (values are UTF-8 bytes per the standard). */
export function parsePax(body: Uint8Array, entry: string): Map<string, string> {
  const out = new Map<string, string>();
  let at = 0;
  while (at < body.length) {
    if (body[at] === 0) break; // NUL padding after the last record
    let sp = at;
    let len = 0;
    while (sp < body.length && body[sp] !== 0x20) {
      const c = body[sp]!;
      if (c < 0x30 || c > 0x39) throw tarError(entry, `pax record at byte ${at} has a bad length`);
      len = len * 10 + (c - 0x30);
      sp++;
    }
    if (len === 0 || at + len > body.length || body[at + len - 1] !== 0x0a) {
      throw tarError(entry, `pax record at byte ${at} has a bad length or no newline`);
    }
    const record = Buffer.from(body.buffer, body.byteOffset + sp + 1, at + len - 1 - (sp + 1)).toString('latin1');
    const eq = record.indexOf('=');
    if (eq <= 0) throw tarError(entry, `pax record at byte ${at} has no key`);
    out.set(record.slice(0, eq), record.slice(eq + 1));
    at += len;
  }
  return out;
}

/** A pax time value "seconds[.fraction]" (may be negative) → whole seconds and nanoseconds. */
export function paxTime(value: string, key: string, entry: string): { sec: number; nsec: number } {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(value);
  if (!m) throw tarError(entry, `pax ${key} ${JSON.stringify(value)} is not a time`);
  const whole = Number(m[2]);
  const frac = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (!Number.isSafeInteger(whole)) throw tarError(entry, `pax ${key} is out of range`);
  if (m[1] === '-') return frac === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1e9 - frac };
  return { sec: whole, nsec: frac };
}

/** A pax decimal integer. */
export function paxInt(value: string, key: string, entry: string): number {
  if (!/^\d+$/.test(value)) throw tarError(entry, `pax ${key} ${JSON.stringify(value)} is not a non-negative integer`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw tarError(entry, `pax ${key} is out of range`);
  return n;
}
