// ext4 metadata checksums — kernel docs filesystems/ext4 "Checksums". Under metadata_csum every structure
// is protected by CRC-32C (raw register, no final inversion) seeded with the filesystem seed; under
// uninit_bg (gdt_csum) only group descriptors are, by CRC-16. One module, used to verify (reader) and to
// write (mkfs), so both sides agree by construction and the oracle tests (e2fsck, the kernel) check both.
import { crc32cUpdate } from '@lcow/binary';
import { DirEntryTail } from './format/dirent.ts';
import { Inode } from './format/inode.ts';
import { XattrBlockHeader } from './format/xattr.ts';

const le32 = (n: number): Uint8Array => Uint8Array.of(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
const le64 = (n: number): Uint8Array => {
  const b = new Uint8Array(8);
  b.set(le32(n % 2 ** 32), 0);
  b.set(le32(Math.floor(n / 2 ** 32)), 4);
  return b;
};

/** The raw CRC-32C register after `parts`, starting from `seed` (ext4_chksum). */
export function chksum(seed: number, ...parts: Uint8Array[]): number {
  let c = seed;
  for (const p of parts) c = crc32cUpdate(c, p);
  return c >>> 0;
}

/** The filesystem seed: s_checksum_seed with metadata_csum_seed, else crc32c(~0, uuid). */
export function fsSeed(uuidBytes: Uint8Array, checksumSeed: number | null): number {
  return checksumSeed ?? chksum(0xffff_ffff, uuidBytes);
}

/** Per-inode seed, used for the inode itself and for its directory, extent and xattr blocks. */
export function inodeSeed(seed: number, ino: number, generation: number): number {
  return chksum(seed, le32(ino), le32(generation));
}

const CSUM_LO = Inode.offsetOf('checksumLo');
const CSUM_HI = Inode.offsetOf('checksumHi');
const EXTRA_ISIZE_AT = Inode.offsetOf('extraIsize');

/** Whether an inode of `inodeSize` bytes stores the high 16 checksum bits (i_extra_isize covers them). */
export function inodeHasCsumHi(raw: Uint8Array, inodeSize: number): boolean {
  if (inodeSize <= 128) return false;
  const extra = raw[EXTRA_ISIZE_AT]! | (raw[EXTRA_ISIZE_AT + 1]! << 8);
  return 128 + extra >= CSUM_HI + 2;
}

/**
 * ext4_inode_csum: CRC-32C of the whole on-disk inode with both checksum fields taken as zero. Returns the
 * full 32 bits; an inode without room for the high half stores and compares only the low 16.
 */
export function inodeChecksum(seed: number, ino: number, raw: Uint8Array, inodeSize: number): number {
  const generation = raw[100]! | (raw[101]! << 8) | (raw[102]! << 16) | (raw[103]! << 24);
  const copy = raw.slice(0, inodeSize);
  copy[CSUM_LO] = 0;
  copy[CSUM_LO + 1] = 0;
  if (inodeHasCsumHi(raw, inodeSize)) {
    copy[CSUM_HI] = 0;
    copy[CSUM_HI + 1] = 0;
  }
  return chksum(inodeSeed(seed, ino, generation >>> 0), copy);
}

/** The checksum an inode stores: low 16 bits, plus the high 16 when it has room for them. */
export function storedInodeChecksum(raw: Uint8Array, inodeSize: number): number {
  const lo = raw[CSUM_LO]! | (raw[CSUM_LO + 1]! << 8);
  if (!inodeHasCsumHi(raw, inodeSize)) return lo;
  return (lo | ((raw[CSUM_HI]! | (raw[CSUM_HI + 1]! << 8)) << 16)) >>> 0;
}

/** Writes the checksum of an inode into its checksum fields, in place. */
export function setInodeChecksum(seed: number, ino: number, raw: Uint8Array, inodeSize: number): void {
  const c = inodeChecksum(seed, ino, raw, inodeSize);
  raw[CSUM_LO] = c & 0xff;
  raw[CSUM_LO + 1] = (c >>> 8) & 0xff;
  if (inodeHasCsumHi(raw, inodeSize)) {
    raw[CSUM_HI] = (c >>> 16) & 0xff;
    raw[CSUM_HI + 1] = (c >>> 24) & 0xff;
  }
}

/** CRC-16 (polynomial 0x8005, reflected, as e2fsprogs' lib/ext2fs/crc16.c) for uninit_bg descriptors. */
const CRC16_TABLE = Uint16Array.from({ length: 256 }, (_, i) => {
  let c = i;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1;
  return c;
});

export function crc16(crc: number, data: Uint8Array): number {
  let c = crc & 0xffff;
  for (const b of data) c = (c >>> 8) ^ CRC16_TABLE[(c ^ b) & 0xff]!;
  return c;
}

/** Offset of bg_checksum in every descriptor form. */
const DESC_CSUM_AT = 0x1e;

/**
 * ext4_group_desc_csum over the first `descSize` bytes of a descriptor: with metadata_csum the low 16 bits
 * of CRC-32C(seed, group, desc without its checksum); with gdt_csum CRC-16(~0, uuid, group, desc minus the
 * checksum field).
 */
export function groupDescChecksum(
  kind: 'metadata_csum' | 'gdt_csum',
  seed: number,
  uuidBytes: Uint8Array,
  group: number,
  desc: Uint8Array,
): number {
  if (kind === 'metadata_csum') {
    const copy = desc.slice();
    copy[DESC_CSUM_AT] = 0;
    copy[DESC_CSUM_AT + 1] = 0;
    return chksum(seed, le32(group), copy) & 0xffff;
  }
  let c = crc16(0xffff, uuidBytes);
  c = crc16(c, le32(group));
  c = crc16(c, desc.subarray(0, DESC_CSUM_AT));
  if (desc.length > DESC_CSUM_AT + 2) c = crc16(c, desc.subarray(DESC_CSUM_AT + 2));
  return c;
}

/** A leaf directory block's checksum: over everything before its 12-byte tail. */
export function dirBlockChecksum(seedOfInode: number, block: Uint8Array): number {
  return chksum(seedOfInode, block.subarray(0, block.length - DirEntryTail.size));
}

/** An htree node's checksum: the entries in use (to `count`), dx_tail's reserved word, a zero checksum. */
export function dxChecksum(
  seedOfInode: number,
  block: Uint8Array,
  countOffset: number,
  count: number,
  tailAt: number,
): number {
  return chksum(
    seedOfInode,
    block.subarray(0, countOffset + count * 8),
    block.subarray(tailAt, tailAt + 4),
    new Uint8Array(4),
  );
}

/** An extent block's checksum: header and `max` entry slots (the tail follows them). */
export function extentBlockChecksum(seedOfInode: number, block: Uint8Array, tailAt: number): number {
  return chksum(seedOfInode, block.subarray(0, tailAt));
}

const XATTR_CSUM_AT = XattrBlockHeader.offsetOf('checksum');

/** An xattr block's checksum: CRC-32C(seed, block number as le64, block with h_checksum zero). */
export function xattrBlockChecksum(seed: number, blockNr: number, block: Uint8Array): number {
  const copy = block.slice();
  copy.fill(0, XATTR_CSUM_AT, XATTR_CSUM_AT + 4);
  return chksum(seed, le64(blockNr), copy);
}

/** A block or inode bitmap's checksum (CRC-32C over its meaningful bytes). */
export function bitmapChecksum(seed: number, bitmap: Uint8Array): number {
  return chksum(seed, bitmap);
}

/** The superblock checksum: CRC-32C(~0) over the bytes before s_checksum. */
export function superblockChecksum(sb: Uint8Array): number {
  return chksum(0xffff_ffff, sb.subarray(0, 1020));
}
