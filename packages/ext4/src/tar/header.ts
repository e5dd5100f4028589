// POSIX ustar and GNU tar headers: 512-byte blocks of ASCII fields (POSIX.1-2001 "pax Interchange Format",
// GNU tar manual "Basic Tar Format"). Numbers are octal text, or base-256 when the first byte has bit 7 set.
import { Ext4Error } from '../errors.ts';

export const BLOCK = 512;

/** Field offsets of the ustar header, and the GNU extensions that reuse the prefix area. */
export const Field = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
  gnuAtime: [345, 12],
  gnuCtime: [357, 12],
  gnuSparse: [386, 96],
  gnuIsExtended: [482, 1],
  gnuRealSize: [483, 12],
} as const satisfies Record<string, readonly [number, number]>;

/** A parsed header block, before PAX and GNU long-name records are applied. */
export interface RawHeader {
  /** Path bytes as a latin1 string (one char per byte), prefix joined for ustar. */
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  type: string;
  linkname: string;
  devmajor: number;
  devminor: number;
  gnu: boolean;
}

/** Bytes up to the first NUL, as a latin1 string. */
export function cstring(b: Uint8Array, [at, len]: readonly [number, number]): string {
  let end = at;
  const stop = at + len;
  while (end < stop && b[end] !== 0) end++;
  if (end === at) return '';
  // A Buffer decodes in place; any other array gets a Buffer view first (the parser hands in a Buffer).
  const buf = Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.length);
  return buf.toString('latin1', at, end);
}

/** Parses a numeric field: octal text (spaces/NULs around it), or GNU base-256. */
export function number(
  b: Uint8Array,
  [at, len]: readonly [number, number],
  field: string,
  entry: () => string,
): number {
  const first = b[at]!;
  if (first & 0x80) {
    if (first === 0xff) throw tarError(entry(), `${field} is negative (base-256)`);
    let v = first & 0x7f;
    for (let i = at + 1; i < at + len; i++) {
      v = v * 256 + b[i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw tarError(entry(), `${field} is too large`);
    }
    return v;
  }
  let i = at;
  const end = at + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = b[i]!;
    if (c === 0x20 || c === 0) break;
    if (c < 0x30 || c > 0x37) {
      throw tarError(entry(), `${field} is not an octal number (${JSON.stringify(cstring(b, [at, len]))})`);
    }
    v = v * 8 + (c - 0x30);
    digits++;
  }
  for (; i < end; i++) {
    if (b[i] !== 0x20 && b[i] !== 0) throw tarError(entry(), `${field} has text after its number`);
  }
  return digits === 0 ? 0 : v;
}

/** Whether a 512-byte block is all zeros (end-of-archive marker). */
export function isZeroBlock(b: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** Verifies the header checksum: unsigned byte sum with the field as spaces (signed sums are accepted too). */
export function checkChecksum(b: Uint8Array, entry: () => string): void {
  const [field, width] = Field.chksum;
  let unsigned = 0x20 * width;
  for (let i = 0; i < field; i++) unsigned += b[i]!;
  for (let i = field + width; i < BLOCK; i++) unsigned += b[i]!;
  const stored = number(b, Field.chksum, 'checksum', entry);
  if (stored === unsigned) return;
  // Old writers summed signed chars: each byte above 127 counts 256 less (the rare case, computed only here).
  let signed = unsigned;
  for (let i = 0; i < BLOCK; i++) if ((i < field || i >= field + width) && b[i]! > 127) signed -= 256;
  if (stored !== signed) {
    throw tarError(
      entry(),
      `header checksum is ${stored.toString(8)}, computed ${unsigned.toString(8)} (corrupt or not a tar)`,
    );
  }
}

export function parseHeader(b: Uint8Array, entry: () => string): RawHeader {
  checkChecksum(b, entry);
  const magic = cstring(b, Field.magic);
  const version = String.fromCharCode(b[Field.version[0]]!, b[Field.version[0] + 1]!);
  const ustar = magic === 'ustar' && version === '00';
  const gnu = magic === 'ustar ' || (magic === 'ustar' && version === ' \0');
  const name = cstring(b, Field.name);
  const prefix = ustar ? cstring(b, Field.prefix) : '';
  const typeByte = b[156]!;
  return {
    name: prefix ? `${prefix}/${name}` : name,
    mode: number(b, Field.mode, 'mode', entry),
    uid: number(b, Field.uid, 'uid', entry),
    gid: number(b, Field.gid, 'gid', entry),
    size: number(b, Field.size, 'size', entry),
    mtime: number(b, Field.mtime, 'mtime', entry),
    type: typeByte === 0 ? '0' : String.fromCharCode(typeByte),
    linkname: cstring(b, Field.linkname),
    devmajor: ustar || gnu ? number(b, Field.devmajor, 'devmajor', entry) : 0,
    devminor: ustar || gnu ? number(b, Field.devminor, 'devminor', entry) : 0,
    gnu,
  };
}

/** Display form of a byte-string path (latin1 chars → the UTF-8 they encode, when valid). */
export function displayName(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

export function tarError(entry: string, why: string): Ext4Error {
  return new Ext4Error('ERR_TAR_FORMAT', `tar entry ${JSON.stringify(displayName(entry))}: ${why}`);
}
