// struct ext4_inode — fs/ext4/ext4.h; kernel docs filesystems/ext4 "Index Nodes". 256-byte inodes: the
// 128-byte base, 32 bytes of extra fields (i_extra_isize = 32), then in-inode extended attributes.
import { bytes, struct, u16, u32, type Infer } from '@lcow/binary';

export const Inode = struct('Ext4Inode', 'le', {
  mode: u16,
  uidLo: u16,
  sizeLo: u32,
  atime: u32,
  ctime: u32,
  mtime: u32,
  dtime: u32,
  gidLo: u16,
  linksCount: u16,
  blocksLo: u32,
  flags: u32,
  version: u32,
  block: bytes(60),
  generation: u32,
  fileAclLo: u32,
  sizeHi: u32,
  obsoFaddr: u32,
  blocksHi: u16,
  fileAclHi: u16,
  uidHi: u16,
  gidHi: u16,
  checksumLo: u16,
  reserved: u16,
  extraIsize: u16,
  checksumHi: u16,
  ctimeExtra: u32,
  mtimeExtra: u32,
  atimeExtra: u32,
  crtime: u32,
  crtimeExtra: u32,
  versionHi: u32,
  projid: u32,
});
export type Inode = Infer<typeof Inode>;

export const INODE_SIZE = 256;
/** i_extra_isize: the bytes of extra fields after the 128-byte base. */
export const EXTRA_ISIZE = Inode.size - 128;

/** i_flags — EXT4_*_FL. */
export const InodeFlags = {
  COMPR: 0x4,
  ENCRYPT: 0x800,
  INDEX: 0x1000,
  HUGE_FILE: 0x40000,
  EXTENTS: 0x80000,
  VERITY: 0x100000,
  EA_INODE: 0x200000,
  INLINE_DATA: 0x10000000,
  CASEFOLD: 0x40000000,
} as const;

/** The 128-byte inode of revision 0 filesystems; i_extra_isize counts from here. */
export const GOOD_OLD_INODE_SIZE = 128;
/** Bytes of i_block: 15 block pointers, an extent root, inline data or a fast symlink. */
export const I_BLOCK_SIZE = 60;
/** Legacy block maps: 12 direct pointers, then single, double and triple indirect blocks. */
export const DIRECT_BLOCKS = 12;

/** File type bits of i_mode (S_IFMT). */
export const FileMode = {
  FIFO: 0x1000,
  CHR: 0x2000,
  DIR: 0x4000,
  BLK: 0x6000,
  REG: 0x8000,
  LNK: 0xa000,
  SOCK: 0xc000,
} as const;

/** EXT4_LINK_MAX: the most links an inode (or subdirectories a directory) may have. */
export const LINK_MAX = 65000;

/** Reserved inode numbers. */
export const Ino = { ROOT: 2, LOST_FOUND: 11, FIRST: 11 } as const;

/** i_block of a device inode: the old 16-bit encoding, or the new 32-bit one in the second word. */
export const DeviceNumbers = struct('Ext4DeviceNumbers', 'le', { old: u32, new: u32, zero: u32 });
