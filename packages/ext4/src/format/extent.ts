// Extent tree — fs/ext4/ext4_extents.h; kernel docs filesystems/ext4 "Extent Tree".
import { struct, u16, u32, type Infer } from '@lcow/binary';

export const ExtentHeader = struct('Ext4ExtentHeader', 'le', {
  magic: u16,
  entries: u16,
  max: u16,
  depth: u16,
  generation: u32,
});
export type ExtentHeader = Infer<typeof ExtentHeader>;
/** A leaf entry: `len` blocks from logical `block` at physical `startHi:startLo`. */
export const Extent = struct('Ext4Extent', 'le', { block: u32, len: u16, startHi: u16, startLo: u32 });
export type Extent = Infer<typeof Extent>;
/** An index entry: the subtree for logical blocks from `block` is in block `leafHi:leafLo`. */
export const ExtentIndex = struct('Ext4ExtentIndex', 'le', { block: u32, leafLo: u32, leafHi: u16, unused: u16 });
export type ExtentIndex = Infer<typeof ExtentIndex>;

export const EXTENT_MAGIC = 0xf30a;
/** Longest initialized extent, in blocks. */
export const MAX_EXTENT_LEN = 32768;

/** Under metadata_csum, an extent block's checksum follows its `max` entries. */
export const ExtentTail = struct('Ext4ExtentTail', 'le', { checksum: u32 });
/** Longest unwritten extent: lengths above {@link MAX_EXTENT_LEN} mean unwritten, minus 32768. */
export const MAX_UNWRITTEN_LEN = 32767;
/** The kernel refuses extent trees deeper than this (EXT4_MAX_EXTENT_DEPTH). */
export const MAX_EXTENT_DEPTH = 5;
