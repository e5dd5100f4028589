// struct ext4_dir_entry_2 — fs/ext4/ext4.h; kernel docs "Linear (Classic) Directories". The name follows
// the 8-byte header; records are padded to 4 bytes and the last one in a block runs to its end.
import { struct, u16, u32, u8, type Infer } from '@lcow/binary';
import { FileMode } from './inode.ts';

export const DirEntryHeader = struct('Ext4DirEntry2', 'le', { inode: u32, recLen: u16, nameLen: u8, fileType: u8 });
export type DirEntryHeader = Infer<typeof DirEntryHeader>;

/** ext4_dir_entry_2.file_type values. */
export const DirFileType = { UNKNOWN: 0, REG: 1, DIR: 2, CHR: 3, BLK: 4, FIFO: 5, SOCK: 6, LNK: 7 } as const;

/** Bytes of a record holding a `nameLen`-byte name: the header and the name, padded to 4 (EXT4_DIR_REC_LEN). */
export const direntSize = (nameLen: number): number => (DirEntryHeader.size + nameLen + 3) & ~3;

const FILE_TYPE_OF_MODE: Readonly<Record<number, number>> = {
  [FileMode.REG]: DirFileType.REG,
  [FileMode.DIR]: DirFileType.DIR,
  [FileMode.LNK]: DirFileType.LNK,
  [FileMode.CHR]: DirFileType.CHR,
  [FileMode.BLK]: DirFileType.BLK,
  [FileMode.FIFO]: DirFileType.FIFO,
  [FileMode.SOCK]: DirFileType.SOCK,
};

/** The file_type of an entry for an inode of i_mode `mode` (fs/ext4 ext4_type_by_mode). */
export const dirFileType = (mode: number): number => FILE_TYPE_OF_MODE[mode & 0xf000] ?? DirFileType.UNKNOWN;

/**
 * struct ext4_dir_entry_tail — the 12-byte fake entry that ends a leaf block under metadata_csum: inode 0,
 * rec_len 12, name_len 0, file_type 0xDE, then the block's checksum.
 */
export const DirEntryTail = struct('Ext4DirEntryTail', 'le', {
  inode: u32,
  recLen: u16,
  nameLen: u8,
  fileType: u8,
  checksum: u32,
});
export const DIR_TAIL_FILE_TYPE = 0xde;

/** Hash-tree (htree) directories — kernel docs "Hash Tree Directories". */
export const DxRootInfo = struct('Ext4DxRootInfo', 'le', {
  reservedZero: u32,
  hashVersion: u8,
  infoLength: u8,
  indirectLevels: u8,
  unusedFlags: u8,
});
export const DxCountLimit = struct('Ext4DxCountLimit', 'le', { limit: u16, count: u16 });
/** One index entry: hash, then the logical block of the child (the first entry's hash is the count/limit). */
export const DxEntry = struct('Ext4DxEntry', 'le', { hash: u32, block: u32 });
export const DxTail = struct('Ext4DxTail', 'le', { reserved: u32, checksum: u32 });
/** Offset of count/limit in the root block: ".", ".." (12 bytes each with their rec_len) and dx_root_info. */
export const DX_ROOT_COUNT_OFFSET = 12 + 12 + DxRootInfo.size;
/** Offset of count/limit in an interior node: a fake entry spanning the block. */
export const DX_NODE_COUNT_OFFSET = 8;
