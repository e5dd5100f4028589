export { Ext4Error, type Ext4ErrorCode } from './errors.ts';
export { Compat, Incompat, RoCompat } from './format/constants.ts';
export { SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSET, Superblock } from './format/superblock.ts';
export { hasExt4Magic, probeExt4, type Ext4Summary, type ReadAt } from './probe.ts';
export { SYNTHETIC_LOST_FOUND } from './writer/writer.ts';
export { convert, type ConvertOptions, type ConvertProgress, type ConvertResult } from './convert.ts';
export { rootDigest, type RootDigestOptions, type RootDigestResult } from './digest.ts';
export { DMVERITY_VHD } from './presets.ts';
export { encodeTarHeader, tarPadding, TAR_END, type TarHeaderSpec } from './tar/encode.ts';
export {
  isOverlayOpaque,
  isOverlayWhiteout,
  OPAQUE_WHITEOUT,
  OVERLAY_OPAQUE_VALUE,
  OVERLAY_OPAQUE_XATTR,
  tarWhiteout,
  whiteoutName,
  WHITEOUT_PREFIX,
  type TarWhiteout,
} from './tar/whiteouts.ts';
export { TarParser, type TarEntry, type TarHandler, type EntryType, type SparseRegion } from './tar/parser.ts';
export {
  Ext4Fs,
  type ChecksumPolicy,
  type Ext4Dirent,
  type Ext4Stat,
  type FileType,
  type OpenOptions,
  type PathLike,
  type ReadWarning,
  type Time,
  type WalkEntry,
} from './reader/ext4fs.ts';
export { openImageSource, memorySource, type ByteSource } from './reader/source.ts';
export { exportTar, exportChunks, type ExportOptions, type ExportProgress } from './reader/export.ts';
export { mkfs, mkfsWrites, type MkfsOptions, type MkfsResult, type MkfsWrite } from './mkfs/mkfs.ts';
