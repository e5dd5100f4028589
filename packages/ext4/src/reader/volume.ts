// The filesystem as a set of checked structures: superblock, group descriptors, inodes, blocks. Every
// number read from the image is validated before it is used as an offset, a count or a size, so corrupt
// bytes become an ERR_EXT4_CORRUPT naming the structure — never a huge allocation or a read elsewhere.
import { BinaryError } from '@lcow/binary';
import {
  fsSeed,
  groupDescChecksum,
  inodeChecksum,
  inodeHasCsumHi,
  inodeSeed,
  storedInodeChecksum,
  superblockChecksum,
} from '../csum.ts';
import { Ext4Error } from '../errors.ts';
import { CHECKSUM_CRC32C, Compat, Incompat, RoCompat } from '../format/constants.ts';
import { DESC_SIZE_32, GroupDesc, GroupDesc64, GroupFlags } from '../format/group.ts';
import { GOOD_OLD_INODE_SIZE, I_BLOCK_SIZE, Inode, InodeFlags } from '../format/inode.ts';
import { SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSET, Superblock } from '../format/superblock.ts';
import type { ByteSource } from './source.ts';

/** What to do when a metadata checksum does not match. */
export type ChecksumPolicy = 'strict' | 'warn' | 'off';

/** A recoverable finding while reading (a checksum mismatch under `'warn'`, an entry skipped). */
export interface ReadWarning {
  code: string;
  message: string;
}

export interface VolumeOptions {
  checksums?: ChecksumPolicy;
  onWarning?: (w: ReadWarning) => void;
}

/** Incompatible features this reader understands; any other bit refuses the filesystem. */
const READABLE_INCOMPAT =
  Incompat.filetype |
  Incompat.extent |
  Incompat['64bit'] |
  Incompat.flex_bg |
  Incompat.meta_bg |
  Incompat.inline_data |
  Incompat.ea_inode |
  Incompat.large_dir |
  Incompat.metadata_csum_seed |
  Incompat.mmp |
  Incompat.casefold |
  Incompat.encrypt;

const INCOMPAT_WHY: Record<number, string> = {
  [Incompat.needs_recovery]:
    'needs_recovery: its journal holds changes not yet written to the filesystem (mount it once, or run e2fsck, to replay them)',
  [Incompat.journal_dev]: 'journal_dev: this is an external journal device, not a filesystem',
  [Incompat.compression]: 'compression (never finished in ext4)',
  [Incompat.dirdata]: 'dirdata (Lustre directory data)',
};

/** Inodes kept decoded per open filesystem (about 1 KiB each). */
const INODE_CACHE = 8192;

/** One time stamp: seconds since the epoch (may be negative) and nanoseconds. */
export interface Time {
  sec: number;
  nsec: number;
}

/** An inode as read: decoded fields plus the raw bytes for the parts other modules interpret. */
export interface InodeRecord {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  flags: number;
  generation: number;
  /** i_blocks in 512-byte units (converted when huge_file counts in filesystem blocks). */
  blocks512: number;
  fileAcl: number;
  atime: Time;
  mtime: Time;
  ctime: Time;
  crtime: Time | null;
  /** The 60 bytes of i_block. */
  iblock: Uint8Array;
  /** In-inode extended attribute area (after i_extra_isize), possibly empty. */
  ibody: Uint8Array;
  /** Seed for this inode's directory, extent and htree checksums (metadata_csum). */
  csumSeed: number;
}

interface Group {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  flags: number;
  itableUnused: number;
}

const MAX_CACHED_BLOCKS = 2048;
/** Reads up to this size use the source's synchronous read when it has one. */
const SYNC_READ = 64 << 10;
const MAX_CACHED_GROUPS = 65536;
/** Inode-table read-ahead, in blocks: a walk reads inodes roughly in order. */
const ITABLE_READAHEAD = 16;

const hex = (n: number): string => `0x${n.toString(16)}`;

/** Parsed superblock facts the rest of the reader uses. */
export class Volume {
  readonly source: ByteSource;
  readonly sb: Superblock;
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly inodesCount: number;
  readonly inodeSize: number;
  readonly inodesPerGroup: number;
  readonly blocksPerGroup: number;
  readonly firstDataBlock: number;
  readonly groupCount: number;
  readonly descSize: number;
  readonly csum: 'metadata_csum' | 'gdt_csum' | null;
  readonly seed: number;
  readonly uuidBytes: Uint8Array;
  /** Largest file size the format can describe at this block size (bounds i_size). */
  readonly maxFileSize: number;
  readonly #policy: ChecksumPolicy;
  readonly #warn: (w: ReadWarning) => void;
  readonly #blocks = new Map<number, Uint8Array>();
  readonly #groups = new Map<number, Group>();
  /** Decoded inodes, most recent last: path walks revisit the same directories over and over. */
  readonly #inodes = new Map<number, InodeRecord>();

  private constructor(source: ByteSource, sb: Superblock, sbBytes: Uint8Array, opts: VolumeOptions) {
    this.source = source;
    this.sb = sb;
    this.#policy = opts.checksums ?? 'strict';
    this.#warn = opts.onWarning ?? (() => {});
    const bad = (why: string): Ext4Error => this.corrupt(`superblock: ${why}`);
    const incompat = sb.featureIncompat >>> 0;
    const roCompat = sb.featureRoCompat >>> 0;
    if (sb.logBlockSize > 6) throw bad(`s_log_block_size ${sb.logBlockSize} (blocks above 64 KiB)`);
    this.blockSize = 1024 << sb.logBlockSize;
    const is64 = (incompat & Incompat['64bit']) !== 0;
    this.blocksCount = sb.blocksCountLo + (is64 ? sb.blocksCountHi * 2 ** 32 : 0);
    this.inodesCount = sb.inodesCount;
    this.inodeSize = sb.revLevel === 0 ? GOOD_OLD_INODE_SIZE : sb.inodeSize;
    this.inodesPerGroup = sb.inodesPerGroup;
    this.blocksPerGroup = sb.blocksPerGroup;
    this.firstDataBlock = sb.firstDataBlock;
    if (
      this.inodeSize < GOOD_OLD_INODE_SIZE ||
      this.inodeSize > this.blockSize ||
      this.inodeSize & (this.inodeSize - 1)
    )
      throw bad(`s_inode_size ${this.inodeSize}`);
    // bigalloc: a group's bitmap counts clusters, so it spans 8 × block size clusters of 2^n blocks.
    if (sb.logClusterSize < sb.logBlockSize || sb.logClusterSize - sb.logBlockSize > 16)
      throw bad(`s_log_cluster_size ${sb.logClusterSize} with s_log_block_size ${sb.logBlockSize}`);
    const clusterRatio = 2 ** (roCompat & RoCompat.bigalloc ? sb.logClusterSize - sb.logBlockSize : 0);
    if (this.blocksPerGroup < 8 || this.blocksPerGroup > 8 * this.blockSize * clusterRatio || this.blocksPerGroup % 8)
      throw bad(`s_blocks_per_group ${this.blocksPerGroup}`);
    if (this.inodesPerGroup < 1 || this.inodesPerGroup > 8 * this.blockSize)
      throw bad(`s_inodes_per_group ${this.inodesPerGroup}`);
    if (this.firstDataBlock > 1 || this.firstDataBlock >= this.blocksCount)
      throw bad(`s_first_data_block ${this.firstDataBlock} of ${this.blocksCount} blocks`);
    if (this.blocksCount > 2 ** 48) throw bad(`s_blocks_count ${this.blocksCount} (beyond 2^48)`);
    this.groupCount = Math.ceil((this.blocksCount - this.firstDataBlock) / this.blocksPerGroup);
    if (this.inodesCount < 11 || this.inodesCount > this.groupCount * this.inodesPerGroup)
      throw bad(`s_inodes_count ${this.inodesCount} for ${this.groupCount} groups of ${this.inodesPerGroup}`);
    if (sb.revLevel > 0 && (sb.firstIno < 11 || sb.firstIno > this.inodesCount))
      throw bad(`s_first_ino ${sb.firstIno}`);
    this.descSize = is64 ? sb.descSize : DESC_SIZE_32;
    if (is64 && (this.descSize < 64 || this.descSize > 1024 || this.descSize & (this.descSize - 1)))
      throw bad(`s_desc_size ${sb.descSize} with the 64bit feature`);
    // Features: unknown or unreadable incompat bits refuse the filesystem; ro_compat bits do not matter
    // to a reader (that is what ro_compat means).
    const unknown = incompat & ~READABLE_INCOMPAT;
    if (unknown) {
      const bit = unknown & -unknown;
      throw new Ext4Error(
        'ERR_EXT4_UNSUPPORTED',
        `${source.name}: feature ${INCOMPAT_WHY[bit] ?? `incompat ${hex(bit >>> 0)} (unknown to this reader)`}`,
      );
    }
    this.uuidBytes = sbBytes.slice(Superblock.offsetOf('uuid'), Superblock.offsetOf('uuid') + 16);
    if (roCompat & RoCompat.metadata_csum) {
      if (sb.checksumType !== CHECKSUM_CRC32C) throw bad(`s_checksum_type ${sb.checksumType} (only 1, crc32c, exists)`);
      this.csum = 'metadata_csum';
      const stored = sb.checksum >>> 0;
      const want = superblockChecksum(sbBytes);
      if (stored !== want) this.checksumMismatch(`superblock: checksum ${hex(stored)}, computed ${hex(want)}`);
    } else this.csum = roCompat & RoCompat.uninit_bg ? 'gdt_csum' : null;
    this.seed = fsSeed(this.uuidBytes, incompat & Incompat.metadata_csum_seed ? sb.checksumSeed >>> 0 : null);
    // Extents address 2^32 logical blocks; block maps fewer. Either way no file exceeds this.
    this.maxFileSize = 2 ** 32 * this.blockSize;
  }

  /** Reads and validates the primary superblock. */
  static async open(source: ByteSource, opts: VolumeOptions = {}): Promise<Volume> {
    let bytes: Uint8Array;
    try {
      bytes = await source.read(SUPERBLOCK_OFFSET, Superblock.size);
    } catch (e) {
      throw Volume.wrap(source.name, e);
    }
    if (bytes.length < Superblock.size)
      throw new Ext4Error(
        'ERR_EXT4_CORRUPT',
        `${source.name}: too small for an ext4 superblock (${source.size} bytes)`,
      );
    let sb: Superblock;
    try {
      sb = Superblock.decode(bytes);
    } catch (e) {
      if (e instanceof BinaryError) throw new Ext4Error('ERR_EXT4_CORRUPT', `${source.name}: superblock: ${e.message}`);
      throw e;
    }
    if (sb.magic !== SUPERBLOCK_MAGIC)
      throw new Ext4Error(
        'ERR_EXT4_CORRUPT',
        `${source.name}: no ext2/3/4 superblock (magic ${hex(sb.magic)}, expected 0xef53)`,
      );
    return new Volume(source, sb, bytes, opts);
  }

  /** Errors other than ours (a VHDX whose block table is damaged) become ERR_EXT4_CORRUPT. */
  static wrap(name: string, e: unknown): Error {
    if (e instanceof Ext4Error) return e;
    if ((e as Error | null)?.name === 'AbortError')
      return new Ext4Error('ERR_ABORTED', `${name}: aborted`, { cause: e });
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_VHD'))
      return new Ext4Error('ERR_EXT4_CORRUPT', `${name}: ${(e as Error).message}`, { cause: e });
    return e as Error;
  }

  corrupt(what: string): Ext4Error {
    return new Ext4Error('ERR_EXT4_CORRUPT', `${this.source.name}: ${what}`);
  }

  /** Applies the checksum policy to a mismatch. */
  checksumMismatch(what: string): void {
    if (this.#policy === 'strict') throw this.corrupt(`${what} (metadata_csum mismatch)`);
    if (this.#policy === 'warn') this.#warn({ code: 'EXT4_CHECKSUM', message: `${this.source.name}: ${what}` });
  }

  get verifiesChecksums(): boolean {
    return this.csum === 'metadata_csum' && this.#policy !== 'off';
  }

  warn(code: string, message: string): void {
    this.#warn({ code, message: `${this.source.name}: ${message}` });
  }

  /** Throws unless blocks [start, start + count) lie inside the filesystem. */
  checkRange(start: number, count: number, what: string): void {
    if (!(start >= this.firstDataBlock && count >= 0 && start + count <= this.blocksCount))
      throw this.corrupt(`${what}: blocks ${start}+${count} outside the filesystem (${this.blocksCount} blocks)`);
  }

  /** Reads exactly `length` bytes at `offset` of the filesystem; a short read is corruption (truncation). */
  async readBytes(offset: number, length: number, what: string): Promise<Uint8Array> {
    let b: Uint8Array;
    try {
      // Small reads of a local file go synchronously (see ByteSource.readSync): an export of many small
      // files is otherwise bound by thread-pool round trips, not by the disk.
      b =
        length <= SYNC_READ && this.source.readSync
          ? this.source.readSync(offset, length)
          : await this.source.read(offset, length);
    } catch (e) {
      throw Volume.wrap(this.source.name, e);
    }
    if (b.length !== length)
      throw this.corrupt(
        `${what}: bytes ${offset}+${length} are past the end of the image (${this.source.size} bytes; truncated?)`,
      );
    return b;
  }

  /** One metadata block, through a bounded cache. Callers must not modify it. */
  async block(nr: number, what: string): Promise<Uint8Array> {
    const hit = this.#blocks.get(nr);
    if (hit) return hit;
    this.checkRange(nr, 1, what);
    const b = await this.readBytes(nr * this.blockSize, this.blockSize, what);
    this.#cache(nr, b);
    return b;
  }

  #cache(nr: number, b: Uint8Array): void {
    if (this.#blocks.size >= MAX_CACHED_BLOCKS) this.#blocks.delete(this.#blocks.keys().next().value!);
    this.#blocks.set(nr, b);
  }

  /** Whether group `g` holds a superblock backup (sparse_super, sparse_super2, or every group). */
  hasSuper(g: number): boolean {
    if (g === 0) return true;
    if (this.sb.featureCompat & Compat.sparse_super2) return g === this.sb.backupBgs0 || g === this.sb.backupBgs1;
    if (g <= 1 || !(this.sb.featureRoCompat & RoCompat.sparse_super)) return true;
    if (g % 2 === 0) return false;
    for (const p of [3, 5, 7]) {
      let n = p;
      while (n < g) n *= p;
      if (n === g) return true;
    }
    return false;
  }

  /** Byte offset of group `g`'s descriptor (meta_bg puts them in the first group of each meta group). */
  #descOffset(g: number): number {
    const perBlock = this.blockSize / this.descSize;
    const metaBg = (this.sb.featureIncompat & Incompat.meta_bg) !== 0;
    if (!metaBg || g < this.sb.firstMetaBg * perBlock) {
      // The table starts in the block after the superblock's (block 2 with 1 KiB blocks, else 1).
      return (Math.floor(SUPERBLOCK_OFFSET / this.blockSize) + 1) * this.blockSize + g * this.descSize;
    }
    const first = Math.floor(g / perBlock) * perBlock;
    let skip = this.hasSuper(first) ? 1 : 0;
    // 1 KiB blocks with s_first_data_block 0 (bigalloc): block 0 is the boot block, the superblock block 1.
    if (this.blockSize === 1024 && first === 0 && this.firstDataBlock === 0) skip++;
    const block = this.firstDataBlock + first * this.blocksPerGroup + skip;
    return block * this.blockSize + (g % perBlock) * this.descSize;
  }

  /** Group `g`'s descriptor, checked (checksum, table locations) on first use. */
  async group(g: number): Promise<Group> {
    const hit = this.#groups.get(g);
    if (hit) return hit;
    if (!(g >= 0 && g < this.groupCount)) throw this.corrupt(`group ${g} does not exist (${this.groupCount} groups)`);
    const off = this.#descOffset(g);
    const blockNr = Math.floor(off / this.blockSize);
    const blk = await this.block(blockNr, `group ${g} descriptor`);
    const raw = blk.subarray(off % this.blockSize, (off % this.blockSize) + this.descSize);
    const lo = GroupDesc.decode(raw);
    const hi = this.descSize >= 64 ? GroupDesc64.decode(raw) : null;
    // An all-zero descriptor is checked too: a zero checksum matching is improbable, so it is caught.
    if (this.csum && this.#policy !== 'off') {
      const want = groupDescChecksum(this.csum, this.seed, this.uuidBytes, g, raw);
      if (want !== lo.checksum)
        this.checksumMismatch(`group ${g} descriptor: checksum ${hex(lo.checksum)}, computed ${hex(want)}`);
    }
    const group: Group = {
      blockBitmap: lo.blockBitmapLo + (hi ? hi.blockBitmapHi * 2 ** 32 : 0),
      inodeBitmap: lo.inodeBitmapLo + (hi ? hi.inodeBitmapHi * 2 ** 32 : 0),
      inodeTable: lo.inodeTableLo + (hi ? hi.inodeTableHi * 2 ** 32 : 0),
      // Without checksums the kernel ignores the uninit flags (e2fsprogs may leave them set).
      flags: this.csum ? lo.flags : 0,
      itableUnused: this.csum ? lo.itableUnusedLo + (hi ? hi.itableUnusedHi * 2 ** 16 : 0) : 0,
    };
    this.checkRange(group.inodeTable, this.itableBlocks, `group ${g} inode table`);
    if (this.#groups.size >= MAX_CACHED_GROUPS) this.#groups.clear();
    this.#groups.set(g, group);
    return group;
  }

  get itableBlocks(): number {
    return Math.ceil((this.inodesPerGroup * this.inodeSize) / this.blockSize);
  }

  /** The raw bytes of inode `ino`, or null when its group says it is unused (uninitialised table). */
  async rawInode(ino: number): Promise<Uint8Array | null> {
    if (!(Number.isInteger(ino) && ino >= 1 && ino <= this.inodesCount))
      throw this.corrupt(`inode ${ino} out of range (1…${this.inodesCount})`);
    const g = Math.floor((ino - 1) / this.inodesPerGroup);
    const index = (ino - 1) % this.inodesPerGroup;
    const group = await this.group(g);
    if (group.flags & GroupFlags.INODE_UNINIT) return null;
    if (this.csum && index >= this.inodesPerGroup - group.itableUnused) return null;
    const off = index * this.inodeSize;
    const nr = group.inodeTable + Math.floor(off / this.blockSize);
    let blk = this.#blocks.get(nr);
    if (!blk) {
      // Read ahead within this group's table: neighbouring inodes are usually wanted next.
      const tableEnd = group.inodeTable + this.itableBlocks;
      const count = Math.min(ITABLE_READAHEAD, tableEnd - nr);
      const run = await this.readBytes(nr * this.blockSize, count * this.blockSize, `inode ${ino}`);
      for (let i = 0; i < count; i++) this.#cache(nr + i, run.subarray(i * this.blockSize, (i + 1) * this.blockSize));
      blk = this.#blocks.get(nr)!;
    }
    const at = off % this.blockSize;
    return blk.subarray(at, at + this.inodeSize);
  }

  /**
   * Inode `ino`, decoded and checked: checksum (metadata_csum), i_extra_isize, size within the format's
   * limit. `what` names how it was reached (a path) for messages. An unused inode is corruption here:
   * callers reach inodes through directory entries, which must not name free ones.
   */
  async inode(ino: number, what: string): Promise<InodeRecord> {
    const known = this.#inodes.get(ino);
    if (known) return known;
    const rec = await this.#readInode(ino, what);
    this.#inodes.set(ino, rec);
    if (this.#inodes.size > INODE_CACHE) this.#inodes.delete(this.#inodes.keys().next().value!);
    return rec;
  }

  async #readInode(ino: number, what: string): Promise<InodeRecord> {
    const raw = await this.rawInode(ino);
    const where = `inode ${ino} (${what})`;
    if (!raw) throw this.corrupt(`${where}: a directory entry names an inode its group marks unused`);
    const full = new Uint8Array(Inode.size);
    full.set(raw.subarray(0, Math.min(raw.length, Inode.size)));
    const d = Inode.decode(full);
    if (d.mode === 0 && d.linksCount === 0) throw this.corrupt(`${where}: not in use (mode 0, no links)`);
    let extra = 0;
    if (this.inodeSize > GOOD_OLD_INODE_SIZE) {
      extra = d.extraIsize;
      if (extra % 4 || GOOD_OLD_INODE_SIZE + extra > this.inodeSize)
        throw this.corrupt(`${where}: i_extra_isize ${extra} does not fit a ${this.inodeSize}-byte inode`);
    }
    if (this.verifiesChecksums && this.sb.creatorOs === 0) {
      const full32 = inodeChecksum(this.seed, ino, raw, this.inodeSize);
      const want = inodeHasCsumHi(raw, this.inodeSize) ? full32 : full32 & 0xffff;
      const stored = storedInodeChecksum(raw, this.inodeSize);
      if (want !== stored) this.checksumMismatch(`${where}: checksum ${hex(stored)}, computed ${hex(want)}`);
    }
    const size = d.sizeLo + d.sizeHi * 2 ** 32;
    if (size > this.maxFileSize) throw this.corrupt(`${where}: i_size ${size} beyond the format's limit`);
    const fits = (field: keyof typeof Inode.fields): boolean =>
      GOOD_OLD_INODE_SIZE + extra >= Inode.offsetOf(field) + 4;
    const time = (sec: number, extraField: number | null): Time => {
      const signed = sec >= 2 ** 31 ? sec - 2 ** 32 : sec;
      if (extraField === null) return { sec: signed, nsec: 0 };
      const nsec = extraField >>> 2;
      return { sec: signed + (extraField & 3) * 2 ** 32, nsec: nsec < 1e9 ? nsec : 0 };
    };
    const hugeBlocks = (this.sb.featureRoCompat & RoCompat.huge_file) !== 0;
    let blocks = d.blocksLo + (hugeBlocks ? d.blocksHi * 2 ** 32 : 0);
    if (hugeBlocks && d.flags & InodeFlags.HUGE_FILE) blocks *= this.blockSize / 512;
    const ibodyStart = GOOD_OLD_INODE_SIZE + extra;
    return {
      ino,
      mode: d.mode,
      uid: d.uidLo + d.uidHi * 2 ** 16,
      gid: d.gidLo + d.gidHi * 2 ** 16,
      size,
      links: d.linksCount,
      flags: d.flags >>> 0,
      generation: d.generation >>> 0,
      blocks512: blocks,
      fileAcl: d.fileAclLo + (this.sb.featureIncompat & Incompat['64bit'] ? d.fileAclHi * 2 ** 32 : 0),
      atime: time(d.atime, fits('atimeExtra') ? d.atimeExtra : null),
      mtime: time(d.mtime, fits('mtimeExtra') ? d.mtimeExtra : null),
      ctime: time(d.ctime, fits('ctimeExtra') ? d.ctimeExtra : null),
      crtime: fits('crtime') ? time(d.crtime, fits('crtimeExtra') ? d.crtimeExtra : null) : null,
      iblock: raw.slice(40, 40 + I_BLOCK_SIZE),
      ibody: this.inodeSize > ibodyStart ? raw.slice(ibodyStart, this.inodeSize) : new Uint8Array(0),
      csumSeed: this.csum === 'metadata_csum' ? inodeSeed(this.seed, ino, d.generation >>> 0) : 0,
    };
  }
}
