// POSIX.1-2001 pax extended header records: "<length> <key>=<value>\n", length counting the whole record.
import { tarError } from './header.ts';

/** Largest pax or GNU long-name body we hold in memory. */
export const MAX_META_BYTES = 1 << 20;

/** Parses pax records; keys and values are latin1 byte strings (values are UTF-8 bytes per the standard). */
export function parsePax(body: Uint8Array, entry: string): Map<string, string> {
  const out = new Map<string, string>();
  // One Buffer view for the whole body: keys and values decode from it in place.
  const text = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.length);
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
    let eq = sp + 1;
    while (eq < at + len - 1 && body[eq] !== 0x3d) eq++;
    if (eq === sp + 1 || eq === at + len - 1) throw tarError(entry, `pax record at byte ${at} has no key`);
    out.set(text.toString('latin1', sp + 1, eq), text.toString('latin1', eq + 1, at + len - 1));
    at += len;
  }
  return out;
}

/** A pax time value "seconds[.fraction]" (may be negative) → whole seconds and nanoseconds. */
export function paxTime(value: string, key: string, entry: string): { sec: number; nsec: number } {
  // Read by hand, not with a regular expression: every entry of a pax tar carries up to three times.
  const neg = value.charCodeAt(0) === 0x2d;
  let at = neg ? 1 : 0;
  let whole = 0;
  const start = at;
  while (at < value.length) {
    const c = value.charCodeAt(at) - 0x30;
    if (c < 0 || c > 9) break;
    whole = whole * 10 + c;
    at++;
  }
  let frac = 0;
  let digits = 0;
  const bad = (): never => {
    throw tarError(entry, `pax ${key} ${JSON.stringify(value)} is not a time`);
  };
  if (at === start) bad();
  if (at < value.length) {
    if (value.charCodeAt(at) !== 0x2e || at + 1 === value.length) bad();
    for (at++; at < value.length; at++) {
      const c = value.charCodeAt(at) - 0x30;
      if (c < 0 || c > 9) bad();
      if (digits < 9) {
        frac = frac * 10 + c;
        digits++;
      }
    }
    for (; digits < 9; digits++) frac *= 10;
  }
  if (!Number.isSafeInteger(whole)) throw tarError(entry, `pax ${key} is out of range`);
  if (neg) return frac === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1e9 - frac };
  return { sec: whole, nsec: frac };
}

/** A pax decimal integer. */
export function paxInt(value: string, key: string, entry: string): number {
  if (!/^\d+$/.test(value)) throw tarError(entry, `pax ${key} ${JSON.stringify(value)} is not a non-negative integer`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw tarError(entry, `pax ${key} is out of range`);
  return n;
}
