// Writing tar headers: ustar where the values fit, a pax extended header ('x') before the entry for what
// does not (long names and link targets, ids ≥ 2^21, sizes ≥ 8 GiB, sub-second or negative times,
// xattrs as SCHILY.xattr.*). Names and values are raw bytes: a name that is not UTF-8 stays as it was.
import { BLOCK, Field } from './header.ts';

/** What the encoder needs of an entry. */
export interface TarHeaderSpec {
  /** Path bytes (no leading slash; directories end in '/'). */
  path: Uint8Array;
  type: '0' | '1' | '2' | '3' | '4' | '5' | '6';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: { sec: number; nsec: number };
  linkname?: Uint8Array;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes by latin1 byte-string name. */
  xattrs?: Map<string, Uint8Array>;
}

const enc = new TextEncoder();
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

/** `v` as zero-padded octal digits filling the field, then a NUL (ASCII written directly: this is hot). */
function octal(h: Uint8Array, [at, len]: readonly [number, number], v: number): void {
  let n = v;
  for (let i = at + len - 2; i >= at; i--) {
    h[i] = 0x30 + (n % 8);
    n = Math.floor(n / 8);
  }
  h[at + len - 1] = 0;
}

const USTAR_MAGIC = new TextEncoder().encode('ustar\x0000');

function paxRecord(key: string, value: Uint8Array): Uint8Array {
  // "LEN key=value\n", where LEN counts itself: find the fixed point of its digit count.
  const rest = 1 + Buffer.byteLength(key, 'latin1') + 1 + value.length + 1;
  let len = rest + 1;
  while (len !== rest + String(len).length) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${key}=`, 'latin1'), value, Buffer.from('\n')]);
}

function timeText(t: { sec: number; nsec: number }): string {
  if (t.nsec === 0) return String(t.sec);
  // Negative times with a fraction: pax wants the value itself, e.g. -1.5 for sec -2, nsec 5e8.
  const total = BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec);
  const neg = total < 0n;
  const abs = neg ? -total : total;
  const frac = (abs % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${abs / 1_000_000_000n}${frac ? `.${frac}` : ''}`;
}

/** Splits a path into ustar prefix (≤ 155) and name (≤ 100) at a slash, or returns null. */
function splitUstar(p: Uint8Array): [Uint8Array, Uint8Array] | null {
  if (p.length <= 100) return [new Uint8Array(0), p];
  if (p.length > 256) return null;
  for (let i = Math.max(0, p.length - 101); i < p.length && i <= 155; i++) {
    if (p[i] === 0x2f && i > 0 && p.length - i - 1 <= 100 && p.length - i - 1 > 0)
      return [p.subarray(0, i), p.subarray(i + 1)];
  }
  return null;
}

function header(spec: TarHeaderSpec, name: Uint8Array, prefix: Uint8Array, size: number, type: string): Uint8Array {
  const h = new Uint8Array(BLOCK);
  h.set(name.subarray(0, 100), Field.name[0]);
  octal(h, Field.mode, spec.mode & 0o7777);
  octal(h, Field.uid, Math.min(spec.uid, MAX_OCTAL_7));
  octal(h, Field.gid, Math.min(spec.gid, MAX_OCTAL_7));
  octal(h, Field.size, Math.min(size, MAX_OCTAL_11));
  octal(h, Field.mtime, Math.max(0, Math.min(spec.mtime.sec, MAX_OCTAL_11)));
  h[Field.typeflag[0]] = type.charCodeAt(0);
  if (spec.linkname) h.set(spec.linkname.subarray(0, 100), Field.linkname[0]);
  h.set(USTAR_MAGIC, Field.magic[0]);
  octal(h, Field.devmajor, Math.min(spec.devmajor ?? 0, MAX_OCTAL_7));
  octal(h, Field.devminor, Math.min(spec.devminor ?? 0, MAX_OCTAL_7));
  h.set(prefix.subarray(0, 155), Field.prefix[0]);
  h.fill(0x20, Field.chksum[0], Field.chksum[0] + 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  octal(h, [Field.chksum[0], 7], sum);
  return h;
}

function padTo512(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

/**
 * The header blocks of one entry: a pax header and its records when needed, then the ustar header. The
 * entry's body (spec.size bytes, for type '0') and its padding ({@link tarPadding}) follow.
 */
export function encodeTarHeader(spec: TarHeaderSpec): Uint8Array {
  const pax: Uint8Array[] = [];
  const split = splitUstar(spec.path);
  if (!split) pax.push(paxRecord('path', spec.path));
  if (spec.linkname && spec.linkname.length > 100) pax.push(paxRecord('linkpath', spec.linkname));
  if (spec.uid > MAX_OCTAL_7) pax.push(paxRecord('uid', enc.encode(String(spec.uid))));
  if (spec.gid > MAX_OCTAL_7) pax.push(paxRecord('gid', enc.encode(String(spec.gid))));
  if (spec.size > MAX_OCTAL_11) pax.push(paxRecord('size', enc.encode(String(spec.size))));
  if (spec.mtime.nsec !== 0 || spec.mtime.sec < 0 || spec.mtime.sec > MAX_OCTAL_11)
    pax.push(paxRecord('mtime', enc.encode(timeText(spec.mtime))));
  for (const [k, v] of spec.xattrs ?? []) pax.push(paxRecord(`SCHILY.xattr.${k}`, v));
  const [prefix, name] = split ?? [new Uint8Array(0), spec.path.subarray(0, 100)];
  const main = header(spec, name, prefix, spec.type === '0' ? spec.size : 0, spec.type);
  if (pax.length === 0) return main;
  const records = Buffer.concat(pax);
  // The pax header's own name is informational; keep it short and ASCII, as GNU tar does.
  const paxHeader = header(
    {
      ...spec,
      linkname: undefined,
      devmajor: 0,
      devminor: 0,
      mtime: { sec: Math.max(0, Math.min(spec.mtime.sec, MAX_OCTAL_11)), nsec: 0 },
    },
    enc.encode('PaxHeaders/entry'),
    new Uint8Array(0),
    records.length,
    'x',
  );
  return Buffer.concat([paxHeader, records, new Uint8Array(padTo512(records.length)), main]);
}

/** Zero bytes that pad a body of `size` bytes to the next 512-byte block. */
export function tarPadding(size: number): Uint8Array {
  return new Uint8Array(padTo512(size));
}

/** The end of an archive: two zero blocks. */
export const TAR_END: Uint8Array = new Uint8Array(2 * BLOCK);
