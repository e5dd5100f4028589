import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hex } from '@lcow/testkit';
import { VhdError } from '../errors.ts';
import {
  chsGeometry,
  createFixedFooter,
  encodeFooter,
  footerChecksum,
  geometryAlignedSize,
  geometrySize,
  parseFooter,
} from './footer.ts';
import { Footer } from './format.ts';

const fixed = {
  timestamp: new Date('2026-01-02T03:04:05Z'),
  uniqueId: '0123456789abcdef0123456789abcdef'.replace(/(.{8})(.{4})(.{4})(.{4})(.{12})/, '$1-$2-$3-$4-$5'),
};

describe('VHD footer layout', () => {
  it('is 512 bytes with the fields where the spec puts them', () => {
    expect(Footer.size).toBe(512);
    expect(Footer.offsetOf('timestamp')).toBe(24);
    expect(Footer.offsetOf('originalSize')).toBe(40);
    expect(Footer.offsetOf('cylinders')).toBe(56);
    expect(Footer.offsetOf('checksum')).toBe(64);
    expect(Footer.offsetOf('uniqueId')).toBe(68);
    expect(Footer.offsetOf('savedState')).toBe(84);
  });

  it('encodes a golden vector (1 GiB fixed disk)', () => {
    const b = createFixedFooter(1 << 30, fixed);
    // 2026-01-02T03:04:05Z is 820 638 245 s after 2000-01-01 = 0x30e9f225.
    const expected = hex`
      636f6e6563746978 00000002 00010000 ffffffffffffffff 30e9f225
      77696e20 000a0000 5769326b 0000000040000000 0000000040000000
      0820 10 3f 00000002 ${footerChecksum(b).toString(16).padStart(8, '0')}
      0123456789abcdef0123456789abcdef 00`;
    expect(b.subarray(0, 85)).toEqual(expected);
    expect(b.subarray(85).every((x) => x === 0)).toBe(true);
    // Independent sum: one's complement of all bytes except the checksum field.
    let sum = 0;
    b.forEach((x, i) => (sum += i >= 64 && i < 68 ? 0 : x));
    expect(Footer.get(b, 'checksum')).toBe(~sum >>> 0);
  });
});

describe('CHS geometry (spec appendix)', () => {
  it.each([
    [1 << 20, 30, 4, 17],
    [10 << 20, 301, 4, 17],
    [127 << 20, 1019, 15, 17],
    [1 << 30, 2080, 16, 63],
    [20 * 2 ** 30, 41610, 16, 63],
    [128 * 2 ** 30, 65535, 16, 255],
    [2040 * 2 ** 30, 65535, 16, 255],
  ])('%d bytes → %d/%d/%d', (size, c, h, s) => {
    expect(chsGeometry(size)).toEqual({ cylinders: c, heads: h, sectorsPerTrack: s });
  });

  it('never describes more than the disk, and caps at 65535/16/255 (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2040 * 2 ** 21 }), (sectors) => {
        const g = chsGeometry(sectors * 512);
        expect(geometrySize(g)).toBeLessThanOrEqual(sectors * 512);
        expect(g.cylinders).toBeLessThanOrEqual(65535);
        expect(g.heads).toBeLessThanOrEqual(16);
        expect(g.sectorsPerTrack).toBeLessThanOrEqual(255);
      }),
    );
  });

  it('geometryAlignedSize finds the next size the geometry describes exactly (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1 << 16, max: 65535 * 16 * 255 - 70000 }), (sectors) => {
        const s = geometryAlignedSize(sectors * 512);
        expect(s).toBeGreaterThanOrEqual(sectors * 512);
        expect(geometrySize(chsGeometry(s))).toBe(s);
        expect(s - sectors * 512).toBeLessThan(16 * 255 * 512 * 2);
      }),
    );
  });
});

describe('parseFooter', () => {
  it('round-trips what createFixedFooter writes (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2040 * 2 ** 21 }),
        fc.uuid(),
        fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        (sectors, uniqueId, t) => {
          const timestamp = new Date((946_684_800 + t) * 1000);
          const f = parseFooter(createFixedFooter(sectors * 512, { timestamp, uniqueId }));
          expect(f).toMatchObject({
            type: 'fixed',
            currentSize: sectors * 512,
            originalSize: sectors * 512,
            uniqueId,
            timestamp: t,
          });
          expect(f.date.getTime()).toBe(timestamp.getTime());
        },
      ),
    );
  });

  it('names the wrong field', () => {
    const good = createFixedFooter(1 << 20, fixed);
    const cookie = good.slice();
    cookie[0] = 0x43;
    expect(() => parseFooter(cookie, 'x.vhd')).toThrow(/x\.vhd: footer cookie is "Conectix"/);
    const flipped = good.slice();
    flipped[48] = flipped[48]! ^ 1; // current size
    expect(() => parseFooter(flipped)).toThrow(/footer checksum is 0x[0-9a-f]{8}, expected 0x[0-9a-f]{8}/);
    // A zero checksum field is no excuse: the sum must still match what the rest says.
    const zeroed = flipped.slice();
    Footer.set(zeroed, 'checksum', 0);
    expect(() => parseFooter(zeroed)).toThrow(/footer checksum is 0x00000000, expected 0x[0-9a-f]{8}/);
    const type = Footer.decode(good);
    expect(() => parseFooter(encodeFooter({ ...type, diskType: 5 }))).toThrow(/footer diskType is 5/);
    expect(() => parseFooter(encodeFooter({ ...type, formatVersion: 0x20000 }))).toThrow(/formatVersion/);
    expect(() => parseFooter(encodeFooter({ ...type, dataOffset: 512n }))).toThrow(/dataOffset/);
    expect(() => parseFooter(good.subarray(0, 100))).toThrow(VhdError);
    const huge = good.slice();
    huge.fill(0xff, 48, 56);
    huge.set(new Uint8Array(4), 64);
    Footer.set(huge, 'checksum', footerChecksum(huge));
    expect(() => parseFooter(huge)).toThrow(expect.objectContaining({ code: 'ERR_VHD_FORMAT' }));
  });

  it('accepts dynamic and differencing footers', () => {
    const f = Footer.decode(createFixedFooter(1 << 20, fixed));
    expect(parseFooter(encodeFooter({ ...f, diskType: 3, dataOffset: 512n })).type).toBe('dynamic');
    expect(parseFooter(encodeFooter({ ...f, diskType: 4, dataOffset: 512n })).type).toBe('differencing');
  });

  it('refuses bad arguments with ERR_INVALID_ARGUMENT', () => {
    for (const size of [0, 511, 1000, -512, 2041 * 2 ** 30, Number.NaN]) {
      expect(() => createFixedFooter(size)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
    }
    expect(() => createFixedFooter(512, { creatorApplication: 'toolong' })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => createFixedFooter(512, { timestamp: new Date('1999-01-01') })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('fuzz: any 512 bytes give a footer or a VhdError, never another error', () => {
    const good = createFixedFooter(1 << 30, fixed);
    const mutated = fc
      .tuple(fc.array(fc.tuple(fc.nat(511), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.boolean())
      .map(([edits, fixSum]) => {
        const b = good.slice();
        for (const [i, v] of edits) b[i] = v;
        if (fixSum) Footer.set(b, 'checksum', footerChecksum(b));
        return b;
      });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ minLength: 0, maxLength: 600 }), mutated), (bytes) => {
        try {
          parseFooter(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(VhdError);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
