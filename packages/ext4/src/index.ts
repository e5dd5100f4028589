export { Ext4Error, type Ext4ErrorCode } from './errors.ts';
export { Compat, Incompat, RoCompat } from './format/constants.ts';
export { SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSET, Superblock } from './format/superblock.ts';
export { probeExt4, type Ext4Summary, type ReadAt } from './probe.ts';
export { convert, type ConvertOptions, type ConvertProgress, type ConvertResult } from './convert.ts';
export { TarParser, type TarEntry, type TarHandler, type EntryType, type SparseRegion } from './tar/parser.ts';
