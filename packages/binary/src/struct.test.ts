import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hex } from '@lcow/testkit';
import {
  BinaryError,
  ascii,
  bytes,
  crc32c,
  crc32cUpdate,
  guid,
  pad,
  struct,
  u16,
  u32,
  u64,
  u64n,
  u8,
  utf16le,
  uuid,
  type Infer,
} from './index.ts';

const Sample = struct('Sample', 'be', {
  sig: ascii(4),
  a: u8,
  b: u16,
  c: u32,
  d: u64,
  e: u64n,
  _r: pad(3),
  id: guid,
  raw: bytes(2),
});
type Sample = Infer<typeof Sample>;

describe('struct', () => {
  it('derives size and offsets from the table', () => {
    expect(Sample.size).toBe(4 + 1 + 2 + 4 + 8 + 8 + 3 + 16 + 2);
    expect(Sample.offsetOf('c')).toBe(7);
    expect(Sample.offsetOf('id')).toBe(30);
  });

  it('encodes a golden vector in the struct byte order', () => {
    const v: Sample = {
      sig: 'ab ',
      a: 1,
      b: 0x0203,
      c: 0x04050607,
      d: 0x08090a0b0c0d0e0fn,
      e: 2 ** 40,
      id: '00112233-4455-6677-8899-aabbccddeeff',
      raw: Uint8Array.of(9, 8),
    };
    expect(Sample.encode(v)).toEqual(
      hex`61622000 01 0203 04050607 08090a0b0c0d0e0f 0000010000000000 000000
          33221100 5544 7766 8899aabbccddeeff 0908`,
    );
    expect(Sample.decode(Sample.encode(v))).toEqual(v);
  });

  it('little-endian structs and in-place field access', () => {
    const S = struct('S', 'le', { x: u32, y: u16 });
    const buf = S.encode({ x: 1, y: 2 });
    expect(buf).toEqual(hex`01000000 0200`);
    S.set(buf, 'y', 0xbeef);
    expect(S.get(buf, 'y')).toBe(0xbeef);
    expect(buf[4]).toBe(0xef);
  });

  it('rejects values that do not fit and short buffers with a BinaryError', () => {
    const S = struct('S', 'le', { x: u16, s: ascii(2), g: uuid, w: utf16le(4) });
    const ok = { x: 1, s: 'ab', g: '00000000-0000-0000-0000-000000000001', w: 'hi' };
    expect(() => S.encode({ ...ok, x: 0x10000 })).toThrow(/S\.x: 65536 does not fit/);
    expect(() => S.encode({ ...ok, x: -1 })).toThrow(BinaryError);
    expect(() => S.encode({ ...ok, s: 'abc' })).toThrow(BinaryError);
    expect(() => S.encode({ ...ok, g: 'nope' })).toThrow(BinaryError);
    expect(() => S.encode({ ...ok, w: 'toolong' })).toThrow(BinaryError);
    expect(() => S.decode(new Uint8Array(3))).toThrow(expect.objectContaining({ code: 'ERR_SHORT_BUFFER' }));
    expect(() => S.decode(new Uint8Array(100), 90)).toThrow(BinaryError);
  });

  it('u64n refuses values above 2^53 instead of rounding', () => {
    const S = struct('S', 'be', { n: u64n });
    const buf = new Uint8Array(8).fill(0xff);
    expect(() => S.decode(buf)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
  });

  it('round-trips any value (property)', () => {
    const arb = fc.record({
      sig: fc
        .string({ maxLength: 4, unit: fc.integer({ min: 1, max: 127 }).map((c) => String.fromCharCode(c)) })
        .filter((s) => !s.endsWith('\0')),
      a: fc.integer({ min: 0, max: 0xff }),
      b: fc.integer({ min: 0, max: 0xffff }),
      c: fc.integer({ min: 0, max: 0xffffffff }),
      d: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      e: fc.maxSafeNat(),
      id: fc.uuid(),
      raw: fc.uint8Array({ minLength: 2, maxLength: 2 }),
    });
    fc.assert(
      fc.property(arb, (v) => {
        expect(Sample.decode(Sample.encode(v))).toEqual(v);
      }),
    );
  });
});

describe('struct encoders: small and large buffers', () => {
  // Buffers of at most 64 bytes go through byte stores, larger ones through a DataView: the same bytes.
  const Le = struct('Le', 'le', { a: u8, b: u16, c: u32, raw: bytes(3), _p: pad(1), d: u32 });
  const Be = struct('Be', 'be', { a: u8, b: u16, c: u32, raw: bytes(3), _p: pad(1), d: u32 });
  const arb = fc.record({
    a: fc.integer({ min: 0, max: 0xff }),
    b: fc.integer({ min: 0, max: 0xffff }),
    c: fc.integer({ min: 0, max: 0xffffffff }),
    raw: fc.uint8Array({ minLength: 3, maxLength: 3 }),
    d: fc.integer({ min: 0, max: 0xffffffff }),
  });
  it('encode and decode alike at any offset of either size, in both byte orders (property)', () => {
    fc.assert(
      fc.property(arb, fc.integer({ min: 0, max: 40 }), (v, at) => {
        for (const S of [Le, Be]) {
          const small = new Uint8Array(S.size + at).fill(0xaa);
          const large = new Uint8Array(4096).fill(0xaa);
          S.encodeInto(v, small, at);
          S.encodeInto(v, large, at);
          expect(large.subarray(at, at + S.size)).toEqual(small.subarray(at, at + S.size));
          expect(S.decode(small, at)).toEqual(v);
          expect(S.decode(large, at)).toEqual(v);
          // The bytes around the struct are untouched.
          expect(large[at + S.size]).toBe(0xaa);
          if (at > 0) expect(small[at - 1]).toBe(0xaa);
        }
      }),
    );
  });
  it('a golden vector of each byte order, through both paths', () => {
    const v = { a: 1, b: 0x0203, c: 0x04050607, raw: new Uint8Array([8, 9, 10]), d: 0xfffffffe };
    const le = hex`01 0302 07060504 08090a 00 feffffff`;
    const be = hex`01 0203 04050607 08090a 00 fffffffe`;
    for (const [S, want] of [
      [Le, le],
      [Be, be],
    ] as const) {
      const large = new Uint8Array(128);
      S.encodeInto(v, large, 64);
      expect(S.encode(v)).toEqual(want);
      expect(large.subarray(64, 64 + S.size)).toEqual(want);
    }
  });
});

describe('crc32c', () => {
  it('matches the standard check values', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
  });

  it('chains: any split gives the same CRC as one pass (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(), (data, cut) => {
        const k = cut % (data.length + 1);
        const chained = crc32cUpdate(crc32cUpdate(0xffffffff, data.subarray(0, k)), data.subarray(k)) ^ 0xffffffff;
        expect(chained >>> 0).toBe(crc32c(data));
      }),
    );
  });
});
