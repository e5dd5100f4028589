import { BinaryError } from './errors.ts';

/** Byte order of a whole struct: it belongs to the format, never to the call site. */
export type Endian = 'le' | 'be';

/** One field's type: how many bytes it takes and how its value is read and written. */
export interface FieldType<T> {
  readonly size: number;
  /** Pad fields are written as zeros and left out of the decoded object. */
  readonly pad?: true;
  /**
   * The unsigned integers are tagged, so that a struct's encoder and decoder handle them inline, with no
   * call per field: encoding one inode table entry per file is on the converter's hot path.
   */
  readonly int?: 'u8' | 'u16' | 'u32';
  /** Raw bytes (and pad), likewise copied inline: a typed-array view per field costs more than the copy. */
  readonly raw?: true;
  read(view: DataView, offset: number, le: boolean): T;
  write(view: DataView, offset: number, value: T, le: boolean, field: string): void;
}

type Fields = Record<string, FieldType<unknown>>;
type ValueOf<F> = F extends FieldType<infer T> ? T : never;
type DataKeys<F extends Fields> = { [K in keyof F]: F[K] extends { readonly pad: true } ? never : K }[keyof F];

/** The decoded value of a struct table, inferred from the table itself. */
export type Infer<S> = S extends Struct<infer F> ? { [K in DataKeys<F>]: ValueOf<F[K]> } : never;
type Value<F extends Fields> = { [K in DataKeys<F>]: ValueOf<F[K]> };

function checkInt(field: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new BinaryError('ERR_OUT_OF_RANGE', `${field}: ${value} does not fit (0..${max})`);
  }
}

/** Unsigned 8-bit integer. */
export const u8: FieldType<number> = {
  size: 1,
  int: 'u8',
  read: (v, o) => v.getUint8(o),
  write: (v, o, x, _le, f) => (checkInt(f, x, 0xff), v.setUint8(o, x)),
};
/** Unsigned 16-bit integer. */
export const u16: FieldType<number> = {
  size: 2,
  int: 'u16',
  read: (v, o, le) => v.getUint16(o, le),
  write: (v, o, x, le, f) => (checkInt(f, x, 0xffff), v.setUint16(o, x, le)),
};
/** Unsigned 32-bit integer. */
export const u32: FieldType<number> = {
  size: 4,
  int: 'u32',
  read: (v, o, le) => v.getUint32(o, le),
  write: (v, o, x, le, f) => (checkInt(f, x, 0xffff_ffff), v.setUint32(o, x, le)),
};
/** Unsigned 64-bit integer as a `bigint`, for fields that use all 64 bits (flags, sentinels). */
export const u64: FieldType<bigint> = {
  size: 8,
  read: (v, o, le) => v.getBigUint64(o, le),
  write: (v, o, x, le, f) => {
    if (x < 0n || x > 0xffff_ffff_ffff_ffffn)
      throw new BinaryError('ERR_OUT_OF_RANGE', `${f}: ${x} does not fit in 64 bits`);
    v.setBigUint64(o, x, le);
  },
};
/**
 * Unsigned 64-bit integer as a `number`, for sizes and offsets. Decoding a value above 2^53 − 1 throws
 * `ERR_OUT_OF_RANGE`: on disk such a size is corrupt, and silently rounding it would be worse.
 */
export const u64n: FieldType<number> = {
  size: 8,
  read: (v, o, le) => {
    const x = v.getBigUint64(o, le);
    if (x > BigInt(Number.MAX_SAFE_INTEGER))
      throw new BinaryError('ERR_OUT_OF_RANGE', `64-bit value ${x} is above 2^53`);
    return Number(x);
  },
  write: (v, o, x, le, f) => (checkInt(f, x, Number.MAX_SAFE_INTEGER), v.setBigUint64(o, BigInt(x), le)),
};

function bytesAt(view: DataView, offset: number, length: number): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset + offset, length);
}

/** `n` raw bytes, decoded as a copy. */
export function bytes(n: number): FieldType<Uint8Array> {
  return {
    size: n,
    raw: true,
    read: (v, o) => bytesAt(v, o, n).slice(),
    write: (v, o, x, _le, f) => {
      if (x.length !== n) throw new BinaryError('ERR_OUT_OF_RANGE', `${f}: expected ${n} bytes, got ${x.length}`);
      bytesAt(v, o, n).set(x);
    },
  };
}

/** `n` reserved bytes: written as zeros, not part of the decoded value. */
export function pad(n: number): FieldType<undefined> & { readonly pad: true } {
  return {
    size: n,
    pad: true,
    raw: true,
    read: () => undefined,
    write: (v, o) => {
      for (let i = 0; i < n; i++) v.setUint8(o + i, 0);
    },
  };
}

/**
 * A fixed-width ASCII string (a signature or creator code). Decoding keeps every byte except trailing NULs,
 * so `"win "` keeps its space; encoding pads with NULs.
 */
export function ascii(n: number): FieldType<string> {
  return {
    size: n,
    read: (v, o) => {
      const b = bytesAt(v, o, n);
      let end = n;
      while (end > 0 && b[end - 1] === 0) end--;
      return String.fromCharCode(...b.subarray(0, end));
    },
    write: (v, o, x, _le, f) => {
      if (x.length > n || [...x].some((c) => c.charCodeAt(0) > 0x7f))
        throw new BinaryError('ERR_OUT_OF_RANGE', `${f}: ${JSON.stringify(x)} is not ${n} ASCII bytes`);
      const b = bytesAt(v, o, n);
      b.fill(0);
      for (let i = 0; i < x.length; i++) b[i] = x.charCodeAt(i);
    },
  };
}

/** A UTF-16LE string in `n` bytes, NUL-terminated when shorter. */
export function utf16le(n: number): FieldType<string> {
  return {
    size: n,
    read: (v, o) => {
      let s = '';
      for (let i = 0; i + 1 < n; i += 2) {
        const c = v.getUint16(o + i, true);
        if (c === 0) break;
        s += String.fromCharCode(c);
      }
      return s;
    },
    write: (v, o, x, _le, f) => {
      if (x.length * 2 > n)
        throw new BinaryError('ERR_OUT_OF_RANGE', `${f}: ${JSON.stringify(x)} is longer than ${n / 2} UTF-16 units`);
      bytesAt(v, o, n).fill(0);
      for (let i = 0; i < x.length; i++) v.setUint16(o + i * 2, x.charCodeAt(i), true);
    },
  };
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const GUID_RE = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i;

function hexOf(b: Uint8Array, order: readonly number[]): string {
  let s = '';
  for (const [k, i] of order.entries()) {
    if (k === 4 || k === 6 || k === 8 || k === 10) s += '-';
    s += HEX[b[i]!];
  }
  return s;
}

// Microsoft GUIDs store Data1, Data2 and Data3 little-endian and Data4 as bytes ([MS-DTYP] 2.3.4.2).
const MS_ORDER = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15] as const;
const RFC_ORDER = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] as const;

function guidField(order: readonly number[]): FieldType<string> {
  return {
    size: 16,
    read: (v, o) => hexOf(bytesAt(v, o, 16), order),
    write: (v, o, x, _le, f) => {
      const m = GUID_RE.exec(x);
      if (!m) throw new BinaryError('ERR_OUT_OF_RANGE', `${f}: ${JSON.stringify(x)} is not a GUID`);
      const hex = m.slice(1).join('');
      const b = bytesAt(v, o, 16);
      for (const [k, i] of order.entries()) b[i] = Number.parseInt(hex.slice(k * 2, k * 2 + 2), 16);
    },
  };
}

/** A GUID in Microsoft's mixed-endian layout, as text `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`. */
export const guid: FieldType<string> = guidField(MS_ORDER);
/** A UUID stored in RFC 4122 byte order, as text. */
export const uuid: FieldType<string> = guidField(RFC_ORDER);

/** A struct table: the single declaration of an on-disk layout. */
export interface Struct<F extends Fields> {
  readonly name: string;
  readonly endian: Endian;
  readonly fields: F;
  /** Total encoded size in bytes. */
  readonly size: number;
  /** Byte offset of a field from the start of the struct. */
  offsetOf(field: keyof F & string): number;
  /** Decodes the struct at `offset` of `buf`; throws `ERR_SHORT_BUFFER` when `buf` is too short. */
  decode(buf: Uint8Array, offset?: number): Value<F>;
  /** A new value with every field zero (what an all-zero buffer decodes to): a start for a partial record. */
  zero(): Value<F>;
  /** Encodes into a new buffer of {@link Struct.size} bytes. */
  encode(value: Value<F>): Uint8Array;
  /** Encodes into `buf` at `offset`. */
  encodeInto(value: Value<F>, buf: Uint8Array, offset?: number): void;
  /** Reads one field in place. */
  get<K extends DataKeys<F> & string>(buf: Uint8Array, field: K, offset?: number): ValueOf<F[K]>;
  /** Writes one field in place (checksum patching). */
  set<K extends DataKeys<F> & string>(buf: Uint8Array, field: K, value: ValueOf<F[K]>, offset?: number): void;
}

// Encoding many structs into one buffer (an inode table, a directory block) reuses its DataView. The view is
// remembered per ArrayBuffer in a WeakMap, so no buffer is kept alive by this cache.
const views = new WeakMap<ArrayBufferLike, DataView>();

function viewOf(buf: Uint8Array): DataView {
  // A view over the whole ArrayBuffer serves every Uint8Array on it; offsets are shifted by byteOffset.
  let view = views.get(buf.buffer);
  if (view === undefined) {
    view = new DataView(buf.buffer);
    views.set(buf.buffer, view);
  }
  return view;
}

interface Entry {
  key: string;
  type: FieldType<unknown>;
  offset: number;
  label: string;
}

type EncodeAt = (b: Uint8Array, at: number, value: Record<string, unknown>) => void;
type DecodeAt = (b: Uint8Array, at: number) => Record<string, unknown>;

const IDENT = /^[A-Za-z_$][\w$]*$/;
const INT_BYTES = { u8: 1, u16: 2, u32: 4 } as const;
const INT_ACCESS = { u8: 'Uint8', u16: 'Uint16', u32: 'Uint32' } as const;
/** V8 keeps typed arrays of at most 64 bytes on its own heap (`typed_array_max_size_in_heap`). */
const SMALL = 64;

/**
 * Turns a table into straight-line encode and decode functions: a property access per field by name and a
 * DataView call at a constant offset, instead of a loop with a call through each field type and a dynamic
 * key. Converting a tar encodes an inode and a directory entry per file; the loop form took 2–3× as long
 * (measured in the converter, 55 000 inodes; byte-by-byte stores were slower still). Only the table's own
 * keys, checked to be identifiers, and numbers enter the generated code.
 */
function compile(entries: readonly Entry[], le: boolean): { encodeAt: EncodeAt; decodeAt: DecodeAt } {
  // Two forms of each integer access: a DataView call (large buffers: one bounds check per field), and byte
  // stores (small buffers, which V8 keeps on its own heap: reaching their ArrayBuffer for a DataView moves
  // them off it, ≈ 1 µs per buffer — the hcsshim writer makes one per directory entry and extent list).
  const enc: [view: string[], bytes: string[]] = [['let x;'], ['let x;']];
  const dec: [view: string[], bytes: string[]] = [[], []];
  entries.forEach((e, i) => {
    if (!IDENT.test(e.key)) throw new BinaryError('ERR_OUT_OF_RANGE', `${e.label}: field names must be identifiers`);
    const int = e.type.int;
    if (int !== undefined) {
      const n = INT_BYTES[int];
      const max = 2 ** (8 * n) - 1;
      const acc = INT_ACCESS[int];
      const order = n === 1 ? '' : `, ${le}`;
      const check = `if (!(x >= 0 && x <= ${max} && Number.isInteger(x))) checkInt(E[${i}].label, x, ${max});`;
      enc[0].push(`x = v.${e.key};`, check, `d.set${acc}(o + ${e.offset}, x${order});`);
      dec[0].push(`${e.key}: d.get${acc}(o + ${e.offset}${order}),`);
      enc[1].push(`x = v.${e.key};`, check);
      const parts: string[] = [];
      for (let k = 0; k < n; k++) {
        const shift = 8 * (le ? k : n - 1 - k);
        enc[1].push(`b[at + ${e.offset + k}] = ${shift === 0 ? 'x' : `x >>> ${shift}`};`);
        parts.push(`b[at + ${e.offset + k}] * ${2 ** shift}`);
      }
      dec[1].push(`${e.key}: ${parts.join(' + ')},`);
      return;
    }
    if (e.type.raw && e.type.pad) {
      const fill = `b.fill(0, at + ${e.offset}, at + ${e.offset + e.type.size});`;
      enc[0].push(fill);
      enc[1].push(fill);
      return;
    }
    if (e.type.raw) {
      const n = e.type.size;
      // Its own variable: a variable that holds numbers elsewhere makes V8 treat every byte load as generic.
      const r = `r${i}`;
      const lines = [
        `const ${r} = v.${e.key};`,
        `if (!(${r} instanceof Uint8Array) || ${r}.length !== ${n}) E[${i}].type.write(V(b), b.byteOffset + at + ${e.offset}, ${r}, ${le}, E[${i}].label);`,
        // Copying from a small array V8 keeps on its heap (`new Uint8Array(60)`) takes ~1 µs whatever the
        // method (Node 20); from a Buffer or an array over an ArrayBuffer, 30 ns. Hot callers pass those.
        `b.set(${r}, at + ${e.offset});`,
      ];
      enc[0].push(...lines);
      enc[1].push(...lines);
      const slice = `${e.key}: b.slice(at + ${e.offset}, at + ${e.offset + n}),`;
      dec[0].push(slice);
      dec[1].push(slice);
      return;
    }
    const write = `E[${i}].type.write(V(b), b.byteOffset + at + ${e.offset}, v.${e.key}, ${le}, E[${i}].label);`;
    enc[0].push(write);
    enc[1].push(write);
    if (!e.type.pad) {
      const read = `${e.key}: E[${i}].type.read(V(b), b.byteOffset + at + ${e.offset}, ${le}),`;
      dec[0].push(read);
      dec[1].push(read);
    }
  });
  const make = new Function(
    'E',
    'checkInt',
    'V',
    `const small = ${SMALL};
  return [
    function encodeAt(b, at, v) {
      if (b.length <= small) { ${enc[1].join('\n')} return; }
      const d = V(b); const o = b.byteOffset + at; ${enc[0].join('\n')}
    },
    function decodeAt(b, at) {
      if (b.length <= small) return { ${dec[1].join('\n')} };
      const d = V(b); const o = b.byteOffset + at; return { ${dec[0].join('\n')} };
    },
  ];`,
  ) as (e: readonly Entry[], c: typeof checkInt, v: typeof viewOf) => [EncodeAt, DecodeAt];
  const [encodeAt, decodeAt] = make(entries, checkInt, viewOf);
  return { encodeAt, decodeAt };
}

/**
 * Declares an on-disk struct once. Its TypeScript type, size, field offsets, encoder and decoder all
 * come from this table, so no offset is ever counted by hand.
 *
 * @example
 * const ExtentHeader = struct('ExtentHeader', 'le', { magic: u16, entries: u16, max: u16, depth: u16, generation: u32 });
 * type ExtentHeader = Infer<typeof ExtentHeader>;
 */
export function struct<F extends Fields>(name: string, endian: Endian, fields: F): Struct<F> {
  const le = endian === 'le';
  const offsets = new Map<string, number>();
  let size = 0;
  for (const [key, type] of Object.entries(fields)) {
    offsets.set(key, size);
    size += type.size;
  }
  const entries = Object.entries(fields).map(([key, type]) => ({
    key,
    type,
    offset: offsets.get(key)!,
    label: `${name}.${key}`,
  }));
  const { encodeAt, decodeAt } = compile(entries, le);
  const check = (buf: Uint8Array, offset: number, need: number): void => {
    if (offset < 0 || buf.length - offset < need) {
      throw new BinaryError(
        'ERR_SHORT_BUFFER',
        `${name}: need ${need} bytes at offset ${offset}, buffer has ${buf.length}`,
      );
    }
  };
  const field = (key: string): (typeof entries)[number] => {
    const e = entries.find((x) => x.key === key);
    if (!e) throw new BinaryError('ERR_OUT_OF_RANGE', `${name} has no field ${key}`);
    return e;
  };
  let zero: Value<F> | undefined;
  const s: Struct<F> = {
    name,
    endian,
    fields,
    size,
    offsetOf: (key) => field(key).offset,
    decode(buf, offset = 0) {
      check(buf, offset, size);
      return decodeAt(buf, offset) as Value<F>;
    },
    // Decoded once: a decoder of a wide struct that runs a few times is never optimised (≈ 0.4 ms per
    // superblock, paid per layer of an image); the copy keeps each caller's nested arrays its own.
    zero: () => structuredClone((zero ??= s.decode(new Uint8Array(size)))),
    encode(value) {
      const buf = new Uint8Array(size);
      s.encodeInto(value, buf, 0);
      return buf;
    },
    encodeInto(value, buf, offset = 0) {
      check(buf, offset, size);
      encodeAt(buf, offset, value as Record<string, unknown>);
    },
    get(buf, key, offset = 0) {
      const e = field(key);
      check(buf, offset + e.offset, e.type.size);
      return e.type.read(viewOf(buf), buf.byteOffset + offset + e.offset, le) as never;
    },
    set(buf, key, value, offset = 0) {
      const e = field(key);
      check(buf, offset + e.offset, e.type.size);
      e.type.write(viewOf(buf), buf.byteOffset + offset + e.offset, value, le, e.label);
    },
  };
  return s;
}
