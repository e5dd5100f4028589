import { BinaryError, crc32cUpdate } from '@lcow/binary';
import { Ext4Error } from './errors.ts';
import { CHECKSUM_CRC32C, Compat, Incompat, RoCompat } from './format/constants.ts';
import { SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSET, Superblock } from './format/superblock.ts';

/** Reads `length` bytes at `offset` of the filesystem (a plain image, or a disk through `@lcow/vhd`). */
export type ReadAt = (offset: number, length: number) => Promise<Uint8Array>;

/** What the primary superblock says about a filesystem. */
export interface Ext4Summary {
  blockSize: number;
  blocksCount: number;
  inodesCount: number;
  freeBlocks: number;
  freeInodes: number;
  inodeSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  uuid: string;
  label: string;
  /** Feature names as e2fsprogs prints them, compat then incompat then ro_compat; unknown bits as `0x…`. */
  features: string[];
  /** `clean` when the filesystem was unmounted cleanly; else the raw state flags. */
  state: 'clean' | 'not clean' | 'errors';
  /** `null` without metadata_csum; else whether the superblock checksum matches. */
  checksumValid: boolean | null;
  /** Bytes the filesystem spans: blocksCount × blockSize. */
  size: number;
}

function names(bits: number, table: Record<string, number>): string[] {
  const out: string[] = [];
  let rest = bits >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if (rest & bit) {
      out.push(name);
      rest &= ~bit;
    }
  }
  for (let b = 0; b < 32; b++) if (rest & (1 << b)) out.push(`0x${((1 << b) >>> 0).toString(16)}`);
  return out;
}

/** Whether the primary superblock's place holds the ext2/3/4 magic (nothing else is checked: see {@link probeExt4}). */
export async function hasExt4Magic(read: ReadAt): Promise<boolean> {
  const bytes = await read(SUPERBLOCK_OFFSET, Superblock.size);
  return bytes.length === Superblock.size && Superblock.get(bytes, 'magic') === SUPERBLOCK_MAGIC;
}

/**
 * Reads and checks the primary superblock: the magic, a sane block size, the checksum when metadata_csum is
 * on. Throws `ERR_EXT4_CORRUPT` naming `source` and the field when the bytes are not an ext4 superblock.
 */
export async function probeExt4(read: ReadAt, source = 'ext4 image'): Promise<Ext4Summary> {
  const bytes = await read(SUPERBLOCK_OFFSET, Superblock.size);
  const bad = (why: string): Ext4Error => new Ext4Error('ERR_EXT4_CORRUPT', `${source}: superblock ${why}`);
  if (bytes.length < Superblock.size) throw bad(`truncated (${bytes.length} of ${Superblock.size} bytes)`);
  let sb: Superblock;
  try {
    sb = Superblock.decode(bytes);
  } catch (e) {
    if (e instanceof BinaryError) throw bad(e.message);
    throw e;
  }
  if (sb.magic !== SUPERBLOCK_MAGIC) throw bad(`magic is 0x${sb.magic.toString(16)}, expected 0xef53 (not ext2/3/4)`);
  if (sb.logBlockSize > 6) throw bad(`log block size ${sb.logBlockSize} (block size above 64 KiB)`);
  const is64 = (sb.featureIncompat & Incompat['64bit']) !== 0;
  const blocksCount = sb.blocksCountLo + (is64 ? sb.blocksCountHi * 2 ** 32 : 0);
  const freeBlocks = sb.freeBlocksCountLo + (is64 ? sb.freeBlocksCountHi * 2 ** 32 : 0);
  let checksumValid: boolean | null = null;
  if (sb.featureRoCompat & RoCompat.metadata_csum) {
    if (sb.checksumType !== CHECKSUM_CRC32C) throw bad(`checksum type ${sb.checksumType}, expected 1 (crc32c)`);
    // ext4_superblock_csum: crc32c seeded with ~0 over the bytes before s_checksum, without final inversion.
    checksumValid = crc32cUpdate(0xffff_ffff, bytes.subarray(0, Superblock.offsetOf('checksum'))) === sb.checksum;
  }
  const blockSize = 1024 << sb.logBlockSize;
  return {
    blockSize,
    blocksCount,
    inodesCount: sb.inodesCount,
    freeBlocks,
    freeInodes: sb.freeInodesCount,
    inodeSize: sb.revLevel === 0 ? 128 : sb.inodeSize,
    blocksPerGroup: sb.blocksPerGroup,
    inodesPerGroup: sb.inodesPerGroup,
    uuid: sb.uuid,
    label: sb.volumeName,
    features: [
      ...names(sb.featureCompat, Compat),
      ...names(sb.featureIncompat, Incompat),
      ...names(sb.featureRoCompat, RoCompat),
    ],
    state: sb.state & 0x2 ? 'errors' : sb.state & 0x1 ? 'clean' : 'not clean',
    checksumValid,
    size: blocksCount * blockSize,
  };
}
