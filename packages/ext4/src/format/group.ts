// struct ext4_group_desc, 32-byte form (no 64bit feature) — fs/ext4/ext4.h; kernel docs "Block Group Descriptors".
import { struct, u16, u32, type Infer } from '@lcow/binary';

export const GroupDesc = struct('Ext4GroupDesc', 'le', {
  blockBitmapLo: u32,
  inodeBitmapLo: u32,
  inodeTableLo: u32,
  freeBlocksCountLo: u16,
  freeInodesCountLo: u16,
  usedDirsCountLo: u16,
  flags: u16,
  excludeBitmapLo: u32,
  blockBitmapCsumLo: u16,
  inodeBitmapCsumLo: u16,
  itableUnusedLo: u16,
  checksum: u16,
});
export type GroupDesc = Infer<typeof GroupDesc>;

/**
 * struct ext4_group_desc, 64-byte form (64bit feature, s_desc_size ≥ 64): the 32-byte form followed by
 * the high halves. Descriptors larger than 64 bytes carry only reserved space after these fields.
 */
export const GroupDesc64 = struct('Ext4GroupDesc64', 'le', {
  ...GroupDesc.fields,
  blockBitmapHi: u32,
  inodeBitmapHi: u32,
  inodeTableHi: u32,
  freeBlocksCountHi: u16,
  freeInodesCountHi: u16,
  usedDirsCountHi: u16,
  itableUnusedHi: u16,
  excludeBitmapHi: u32,
  blockBitmapCsumHi: u16,
  inodeBitmapCsumHi: u16,
  reserved: u32,
});
export type GroupDesc64 = Infer<typeof GroupDesc64>;

/** bg_flags. */
export const GroupFlags = { INODE_UNINIT: 0x1, BLOCK_UNINIT: 0x2, ITABLE_ZEROED: 0x4 } as const;

/** Smallest s_desc_size with the 64bit feature, and the size without it. */
export const DESC_SIZE_64 = 64;
export const DESC_SIZE_32 = 32;
