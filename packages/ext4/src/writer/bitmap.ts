/** Bits set in each byte value. */
const POPCOUNT = Uint8Array.from({ length: 256 }, (_, i) => {
  let n = 0;
  for (let v = i; v; v >>= 1) n += v & 1;
  return n;
});

/** A bitmap in ext4's order: bit `i` is bit `i % 8` of byte `i / 8`. */
export class Bitmap {
  readonly bytes: Uint8Array;
  constructor(bits: number) {
    this.bytes = new Uint8Array(Math.ceil(bits / 8));
  }

  /** Sets bits [first, first + count), whole bytes at a time in the middle. */
  setRange(first: number, count: number): void {
    let b = first;
    const end = first + count;
    for (; b < end && b & 7; b++) this.bytes[b >>> 3]! |= 1 << (b & 7);
    const wholeEnd = end & ~7;
    if (b < wholeEnd) {
      this.bytes.fill(0xff, b >>> 3, wholeEnd >>> 3);
      b = wholeEnd;
    }
    for (; b < end; b++) this.bytes[b >>> 3]! |= 1 << (b & 7);
  }
}

/** Number of set bits in `bytes`. */
export function popcount(bytes: Uint8Array): number {
  let n = 0;
  for (const b of bytes) n += POPCOUNT[b]!;
  return n;
}
