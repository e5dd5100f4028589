// struct ext4_dir_entry_2 — fs/ext4/ext4.h; kernel docs "Linear (Classic) Directories". The name follows
// the 8-byte header; records are padded to 4 bytes and the last one in a block runs to its end.
import { struct, u16, u32, u8, type Infer } from '@lcow/binary';

export const DirEntryHeader = struct('Ext4DirEntry2', 'le', { inode: u32, recLen: u16, nameLen: u8, fileType: u8 });
export type DirEntryHeader = Infer<typeof DirEntryHeader>;

/** ext4_dir_entry_2.file_type values. */
export const DirFileType = { UNKNOWN: 0, REG: 1, DIR: 2, CHR: 3, BLK: 4, FIFO: 5, SOCK: 6, LNK: 7 } as const;
