// [MS-VHDX] Virtual Hard Disk v2 (VHDX) File Format, section 2. Every field is little-endian; GUIDs use
// the Microsoft mixed-endian layout.
import { ascii, guid, pad, struct, u16, u32, u64, u64n, utf16le, type Infer } from '@lcow/binary';

/** 2.2.1 File Type Identifier, at offset 0. */
export const FileTypeIdentifier = struct('VhdxFileTypeIdentifier', 'le', {
  signature: ascii(8),
  creator: utf16le(512),
});
export type FileTypeIdentifier = Infer<typeof FileTypeIdentifier>;

/** 2.2.2 Headers: two 4 KiB copies at 64 KiB and 128 KiB; the valid one with the higher sequence number wins. */
export const Header = struct('VhdxHeader', 'le', {
  signature: ascii(4),
  checksum: u32,
  sequenceNumber: u64,
  fileWriteGuid: guid,
  dataWriteGuid: guid,
  logGuid: guid,
  logVersion: u16,
  version: u16,
  logLength: u32,
  logOffset: u64n,
  _reserved: pad(4016),
});
export type Header = Infer<typeof Header>;

/** 2.2.3.1 Region Table Header: two 64 KiB copies at 192 KiB and 256 KiB. */
export const RegionTableHeader = struct('VhdxRegionTableHeader', 'le', {
  signature: ascii(4),
  checksum: u32,
  entryCount: u32,
  _reserved: pad(4),
});
export type RegionTableHeader = Infer<typeof RegionTableHeader>;

/** 2.2.3.2 Region Table Entry. */
export const RegionTableEntry = struct('VhdxRegionTableEntry', 'le', {
  guid: guid,
  fileOffset: u64n,
  length: u32,
  required: u32,
});
export type RegionTableEntry = Infer<typeof RegionTableEntry>;

/** 2.3.1.1 Log Entry Header (only read, to tell whether a log needs replay). */
export const LogEntryHeader = struct('VhdxLogEntryHeader', 'le', {
  signature: ascii(4),
  checksum: u32,
  entryLength: u32,
  tail: u32,
  sequenceNumber: u64,
  descriptorCount: u32,
  _reserved: pad(4),
  logGuid: guid,
  flushedFileOffset: u64,
  lastFileOffset: u64,
});
export type LogEntryHeader = Infer<typeof LogEntryHeader>;

/** 2.6.1.1 Metadata Table Header, at the start of the metadata region. */
export const MetadataTableHeader = struct('VhdxMetadataTableHeader', 'le', {
  signature: ascii(8),
  _reserved: pad(2),
  entryCount: u16,
  _reserved2: pad(20),
});
export type MetadataTableHeader = Infer<typeof MetadataTableHeader>;

/** 2.6.1.2 Metadata Table Entry; `offset` is relative to the metadata region. */
export const MetadataTableEntry = struct('VhdxMetadataTableEntry', 'le', {
  itemId: guid,
  offset: u32,
  length: u32,
  flags: u32,
  _reserved: pad(4),
});
export type MetadataTableEntry = Infer<typeof MetadataTableEntry>;

/** 2.6.2.1 File Parameters. */
export const FileParameters = struct('VhdxFileParameters', 'le', { blockSize: u32, flags: u32 });
/** 2.6.2.2 Virtual Disk Size. */
export const VirtualDiskSize = struct('VhdxVirtualDiskSize', 'le', { size: u64n });
/** 2.6.2.3 Virtual Disk ID. */
export const VirtualDiskId = struct('VhdxVirtualDiskId', 'le', { id: guid });
/** 2.6.2.4 Logical Sector Size and 2.6.2.5 Physical Sector Size. */
export const SectorSize = struct('VhdxSectorSize', 'le', { size: u32 });
