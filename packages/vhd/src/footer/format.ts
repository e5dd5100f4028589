// Virtual Hard Disk Image Format Specification (Microsoft, 2006), "Hard Disk Footer Format" and
// "Dynamic Disk Header Format". Every field is big-endian.
import { ascii, pad, struct, u16, u32, u64, u64n, u8, uuid, type Infer } from '@lcow/binary';

/** The 512-byte footer at the end of every VHD (and copied at offset 0 of dynamic ones). */
export const Footer = struct('VhdFooter', 'be', {
  cookie: ascii(8),
  features: u32,
  formatVersion: u32,
  dataOffset: u64,
  timestamp: u32,
  creatorApplication: ascii(4),
  creatorVersion: u32,
  creatorHostOs: ascii(4),
  originalSize: u64n,
  currentSize: u64n,
  cylinders: u16,
  heads: u8,
  sectorsPerTrack: u8,
  diskType: u32,
  checksum: u32,
  uniqueId: uuid,
  savedState: u8,
  _reserved: pad(427),
});
export type Footer = Infer<typeof Footer>;

/** The 1024-byte header of a dynamic or differencing VHD, at the footer copy's `dataOffset`. */
export const DynamicHeader = struct('VhdDynamicHeader', 'be', {
  cookie: ascii(8),
  dataOffset: u64,
  tableOffset: u64n,
  headerVersion: u32,
  maxTableEntries: u32,
  blockSize: u32,
  checksum: u32,
  parentUniqueId: uuid,
  parentTimestamp: u32,
  _reserved1: pad(4),
  _parentName: pad(512),
  _parentLocators: pad(8 * 24),
  _reserved2: pad(256),
});
export type DynamicHeader = Infer<typeof DynamicHeader>;

export const FOOTER_COOKIE = 'conectix';
export const DYNAMIC_COOKIE = 'cxsparse';
/** Features: bit 1 is reserved and must always be set; bit 0 marks a temporary disk. */
export const Features = { TEMPORARY: 0x1, RESERVED: 0x2 } as const;
export const FORMAT_VERSION = 0x0001_0000;
/** `dataOffset` of a fixed disk: all ones. */
export const NO_DATA_OFFSET = 0xffff_ffff_ffff_ffffn;
export const DiskType = { NONE: 0, FIXED: 2, DYNAMIC: 3, DIFFERENCING: 4 } as const;
export type DiskType = (typeof DiskType)[keyof typeof DiskType];
/** Seconds between the Unix epoch and the VHD epoch, 2000-01-01T00:00:00Z. */
export const VHD_EPOCH_SECONDS = 946_684_800;
export const SECTOR_SIZE = 512;
/** The largest CHS geometry the spec allows: 65535 cylinders × 16 heads × 255 sectors (≈ 127.5 GiB). */
export const MAX_CHS_SECTORS = 65535 * 16 * 255;
