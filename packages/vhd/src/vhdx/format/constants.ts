// [MS-VHDX] constants: signatures, region and metadata GUIDs, BAT states, layout limits.

const KiB = 1024;
const MiB = 1024 * KiB;

export const Signature = {
  FILE: 'vhdxfile',
  HEADER: 'head',
  REGION: 'regi',
  LOG_ENTRY: 'loge',
  METADATA: 'metadata',
} as const;

export const Layout = {
  HEADER_1: 64 * KiB,
  HEADER_2: 128 * KiB,
  HEADER_SIZE: 4 * KiB,
  REGION_TABLE_1: 192 * KiB,
  REGION_TABLE_2: 256 * KiB,
  REGION_TABLE_SIZE: 64 * KiB,
  /** Everything below 1 MiB is the header section. */
  HEADER_SECTION: MiB,
  METADATA_TABLE_SIZE: 64 * KiB,
  /** Regions, the log and blocks are placed on 1 MiB boundaries. */
  ALIGNMENT: MiB,
  MAX_REGION_ENTRIES: 2047,
  MAX_METADATA_ENTRIES: 2047,
  MAX_METADATA_ITEM: MiB,
} as const;

/** 2.2.3.2 Known regions. */
export const RegionGuid = {
  BAT: '2dc27766-f623-4200-9d64-115e9bfd4a08',
  METADATA: '8b7ca206-4790-4b9a-b8fe-575f050f886e',
} as const;

/** 2.6.2 Known metadata items. */
export const MetadataGuid = {
  FILE_PARAMETERS: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  VIRTUAL_DISK_SIZE: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  VIRTUAL_DISK_ID: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  LOGICAL_SECTOR_SIZE: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  PHYSICAL_SECTOR_SIZE: 'cda348c7-445d-4471-9cc9-e9885251c556',
  PARENT_LOCATOR: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
} as const;

/** 2.6.1.2 Metadata table entry flags. */
export const MetadataFlags = { IS_USER: 0x1, IS_VIRTUAL_DISK: 0x2, IS_REQUIRED: 0x4 } as const;
/** 2.6.2.1 File parameter flags. */
export const FileParameterFlags = { LEAVE_BLOCKS_ALLOCATED: 0x1, HAS_PARENT: 0x2 } as const;

/** 2.5.1.1 Payload block states (4 and 5 are reserved). */
export const PayloadState = {
  NOT_PRESENT: 0,
  UNDEFINED: 1,
  ZERO: 2,
  UNMAPPED: 3,
  FULLY_PRESENT: 6,
  PARTIALLY_PRESENT: 7,
} as const;
export type PayloadState = (typeof PayloadState)[keyof typeof PayloadState];
/** 2.5.1.2 Sector bitmap block states. */
export const BitmapState = { NOT_PRESENT: 0, PRESENT: 6 } as const;

export const Limits = {
  MIN_BLOCK_SIZE: MiB,
  MAX_BLOCK_SIZE: 256 * MiB,
  MAX_VIRTUAL_SIZE: 64 * 1024 ** 4,
  /** 2^23 sectors are described by one sector bitmap block. */
  SECTORS_PER_BITMAP: 2 ** 23,
} as const;
