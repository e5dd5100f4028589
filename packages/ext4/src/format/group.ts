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
