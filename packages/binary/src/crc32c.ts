// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by VHDX headers and ext4 metadata_csum.
// Slicing-by-8: eight 256-entry tables let the loop consume 8 bytes per step.

const POLY = 0x82f63b78;
const TABLES: Uint32Array[] = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  const t0 = t[0]!;
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) {
      const prev = t[s - 1]![i]!;
      t[s]![i] = (prev >>> 8) ^ t0[prev & 0xff]!;
    }
  }
  return t;
})();

/**
 * Continues a raw CRC-32C register over `data` (no pre- or post-inversion). Use it to chain pieces, as
 * ext4's `ext4_chksum` does with its seed; {@link crc32c} is the usual one-shot form.
 */
export function crc32cUpdate(crc: number, data: Uint8Array): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  let c = crc >>> 0;
  let i = 0;
  const end8 = data.length - (data.length % 8);
  for (; i < end8; i += 8) {
    const a = (c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    c =
      t7[a & 0xff]! ^
      t6[(a >>> 8) & 0xff]! ^
      t5[(a >>> 16) & 0xff]! ^
      t4[a >>> 24]! ^
      t3[data[i + 4]!]! ^
      t2[data[i + 5]!]! ^
      t1[data[i + 6]!]! ^
      t0[data[i + 7]!]!;
  }
  for (; i < data.length; i++) c = t0[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** The standard CRC-32C of `data` (initial value and final XOR 0xFFFFFFFF). `crc32c("123456789") = 0xE3069283`. */
export function crc32c(data: Uint8Array): number {
  return (crc32cUpdate(0xffff_ffff, data) ^ 0xffff_ffff) >>> 0;
}
