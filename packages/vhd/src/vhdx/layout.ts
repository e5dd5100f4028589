import { crc32c } from '@lcow/binary';
import { Limits } from './format/constants.ts';

/** The parameters that fix a VHDX's BAT shape. */
export interface BatShape {
  virtualSize: number;
  blockSize: number;
  logicalSectorSize: number;
}

/** Payload blocks per sector bitmap block (2.4): 2^23 × logical sector size ÷ block size. */
export function chunkRatio(s: BatShape): number {
  return (Limits.SECTORS_PER_BITMAP * s.logicalSectorSize) / s.blockSize;
}

/** Number of payload blocks. */
export function payloadBlockCount(s: BatShape): number {
  return Math.ceil(s.virtualSize / s.blockSize);
}

/** BAT entries of a fixed or dynamic disk (2.5): payload entries plus the interleaved bitmap entries between them. */
export function batEntryCount(s: BatShape): number {
  const n = payloadBlockCount(s);
  return n + Math.floor((n - 1) / chunkRatio(s));
}

/** Index in the BAT of payload block `block`: after every `ratio` payload entries comes one bitmap entry. */
export function batIndex(block: number, ratio: number): number {
  return block + Math.floor(block / ratio);
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** CRC-32C of a structure with its 4-byte checksum field at `at` counted as zero. */
export function checksumWithZeroField(bytes: Uint8Array, at: number): number {
  const copy = bytes.slice();
  copy.fill(0, at, at + 4);
  return crc32c(copy);
}
