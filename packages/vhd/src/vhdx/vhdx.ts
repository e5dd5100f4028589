import { randomUUID } from 'node:crypto';
import { BinaryError } from '@lcow/binary';
import { VhdError } from '../errors.ts';
import { isZero, openTarget, readAt, type RandomAccessFile } from '../file.ts';
import { BAT_ENTRY_SIZE, decodeBatEntry, encodeBatEntry, type BatEntry } from './format/bat.ts';
import {
  BitmapState,
  FileParameterFlags,
  Layout,
  Limits,
  MetadataFlags,
  MetadataGuid,
  PayloadState,
  RegionGuid,
  Signature,
} from './format/constants.ts';
import {
  FileParameters,
  FileTypeIdentifier,
  Header,
  LogEntryHeader,
  MetadataTableEntry,
  MetadataTableHeader,
  RegionTableEntry,
  RegionTableHeader,
  SectorSize,
  VirtualDiskId,
  VirtualDiskSize,
} from './format/structs.ts';
import {
  batEntryCount,
  batIndex,
  checksumWithZeroField,
  chunkRatio,
  isPowerOfTwo,
  payloadBlockCount,
  roundUp,
} from './layout.ts';

const MiB = 1024 * 1024;
const NIL_GUID = '00000000-0000-0000-0000-000000000000';
/** BAT entries per cached page. */
const PAGE_ENTRIES = 512;
/** At most this many 4 KiB BAT pages (16 MiB) stay cached, whatever the disk size. */
const MAX_CACHED_PAGES = 4096;

/** Options of {@link openVhdx}. */
export interface OpenVhdxOptions {
  /** Open for writing: headers get a new FileWriteGuid at once, and a new DataWriteGuid on the first write. */
  writable?: boolean;
}

/** A region of the file, for overlap checks and for `info`. */
export interface FileRegion {
  name: string;
  offset: number;
  length: number;
}

/** How a disk's blocks are allocated, from a full scan of its BAT. */
export interface VhdxAllocation {
  totalBlocks: number;
  /** Blocks whose data is in the file (FULLY_PRESENT). */
  presentBlocks: number;
  /** Blocks that read as zeros (NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED). */
  absentBlocks: number;
  /**
   * When every block is present and block `b` sits at `offset + b × blockSize`, the file range that holds the
   * whole virtual disk: a loop device with this offset and `virtualSize` as size limit shows the disk.
   */
  contiguous: { offset: number; length: number } | null;
}

/** The parsed, validated description of a VHDX. */
export interface VhdxInfo {
  format: 'vhdx';
  file: string;
  fileSize: number;
  creator: string;
  virtualSize: number;
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  diskId: string;
  leaveBlocksAllocated: boolean;
  header: {
    current: 1 | 2;
    sequenceNumber: bigint;
    fileWriteGuid: string;
    dataWriteGuid: string;
    logGuid: string;
    logOffset: number;
    logLength: number;
  };
  regions: FileRegion[];
  batEntries: number;
  chunkRatio: number;
}

interface BlockState {
  present: boolean;
  fileOffset: number;
  state: number;
  index: number;
}

interface Parsed {
  info: VhdxInfo;
  header: Header;
  batOffset: number;
}

function formatError(file: string, what: string, cause?: unknown): VhdError {
  return new VhdError('ERR_VHD_FORMAT', `${file}: ${what}`, cause === undefined ? undefined : { cause });
}

function isNil(g: string): boolean {
  return g === NIL_GUID;
}

function overlaps(a: FileRegion, b: FileRegion): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

/** Reads `length` bytes at `offset`, failing with ERR_VHD_FORMAT naming `what` when the file is shorter. */
async function readExact(file: RandomAccessFile, offset: number, length: number, what: string): Promise<Uint8Array> {
  const b = await readAt(file, offset, length);
  if (b.length !== length) throw formatError(file.name, `${what} at offset ${offset} is truncated (file ends early)`);
  return b;
}

async function readHeaders(file: RandomAccessFile): Promise<{ header: Header; current: 1 | 2 }> {
  const problems: string[] = [];
  const valid: { header: Header; current: 1 | 2 }[] = [];
  for (const [n, at] of [
    [1, Layout.HEADER_1],
    [2, Layout.HEADER_2],
  ] as const) {
    const b = await readAt(file, at, Layout.HEADER_SIZE);
    if (b.length < Layout.HEADER_SIZE) {
      problems.push(`header ${n} truncated`);
      continue;
    }
    const h = Header.decode(b);
    const sum = checksumWithZeroField(b, Header.offsetOf('checksum'));
    if (h.signature !== Signature.HEADER) problems.push(`header ${n} signature ${JSON.stringify(h.signature)}`);
    else if (h.checksum !== sum)
      problems.push(`header ${n} checksum 0x${h.checksum.toString(16)} (computed 0x${sum.toString(16)})`);
    else if (h.version !== 1) problems.push(`header ${n} version ${h.version}`);
    else valid.push({ header: h, current: n });
  }
  const best = valid.sort((a, b) => (a.header.sequenceNumber > b.header.sequenceNumber ? -1 : 1))[0];
  if (!best) throw formatError(file.name, `no valid VHDX header (${problems.join('; ')})`);
  return best;
}

async function readRegions(file: RandomAccessFile, fileSize: number): Promise<FileRegion[]> {
  const problems: string[] = [];
  for (const [n, at] of [
    [1, Layout.REGION_TABLE_1],
    [2, Layout.REGION_TABLE_2],
  ] as const) {
    const b = await readAt(file, at, Layout.REGION_TABLE_SIZE);
    if (b.length < Layout.REGION_TABLE_SIZE) {
      problems.push(`region table ${n} truncated`);
      continue;
    }
    const h = RegionTableHeader.decode(b);
    const sum = checksumWithZeroField(b, RegionTableHeader.offsetOf('checksum'));
    if (h.signature !== Signature.REGION) problems.push(`region table ${n} signature ${JSON.stringify(h.signature)}`);
    else if (h.checksum !== sum)
      problems.push(`region table ${n} checksum 0x${h.checksum.toString(16)} (computed 0x${sum.toString(16)})`);
    else if (h.entryCount > Layout.MAX_REGION_ENTRIES)
      problems.push(`region table ${n} has ${h.entryCount} entries (max 2047)`);
    else {
      const regions: FileRegion[] = [];
      for (let i = 0; i < h.entryCount; i++) {
        const e = RegionTableEntry.decode(b, RegionTableHeader.size + i * RegionTableEntry.size);
        const name = e.guid === RegionGuid.BAT ? 'bat' : e.guid === RegionGuid.METADATA ? 'metadata' : undefined;
        if (!name) {
          if (e.required & 1)
            throw new VhdError('ERR_VHD_UNSUPPORTED', `${file.name}: unknown required region ${e.guid}`);
          continue;
        }
        if (regions.some((r) => r.name === name))
          throw formatError(file.name, `region table ${n} lists the ${name} region twice`);
        if (
          e.fileOffset < Layout.HEADER_SECTION ||
          e.fileOffset % Layout.ALIGNMENT !== 0 ||
          e.length === 0 ||
          e.length % Layout.ALIGNMENT !== 0
        ) {
          throw formatError(
            file.name,
            `${name} region at ${e.fileOffset} length ${e.length} is not on 1 MiB boundaries after the header section`,
          );
        }
        if (e.fileOffset + e.length > fileSize) {
          throw formatError(
            file.name,
            `${name} region ends at ${e.fileOffset + e.length}, past the end of the file (${fileSize})`,
          );
        }
        regions.push({ name, offset: e.fileOffset, length: e.length });
      }
      for (const need of ['bat', 'metadata']) {
        if (!regions.some((r) => r.name === need))
          throw formatError(file.name, `region table ${n} has no ${need} region`);
      }
      return regions;
    }
  }
  throw formatError(file.name, `no valid region table (${problems.join('; ')})`);
}

interface Metadata {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  virtualSize: number;
  diskId: string;
  logicalSectorSize: number;
  physicalSectorSize: number;
}

/** The metadata region: its table walked, then the items the disk's geometry is read from. */
async function readMetadata(file: RandomAccessFile, region: FileRegion): Promise<Metadata> {
  return checkedMetadata(file.name, await readMetadataItems(file, region));
}

/**
 * The metadata table's known items, read: each entry checked (size, inside the region, no overlap); an
 * unknown required item or a parent locator (a differencing disk) is unsupported.
 */
async function readMetadataItems(file: RandomAccessFile, region: FileRegion): Promise<Map<string, Uint8Array>> {
  const table = await readExact(file, region.offset, Layout.METADATA_TABLE_SIZE, 'metadata table');
  const h = MetadataTableHeader.decode(table);
  if (h.signature !== Signature.METADATA)
    throw formatError(file.name, `metadata table signature ${JSON.stringify(h.signature)}`);
  if (h.entryCount > Layout.MAX_METADATA_ENTRIES)
    throw formatError(file.name, `metadata table has ${h.entryCount} entries (max 2047)`);
  const items = new Map<string, Uint8Array>();
  const used: FileRegion[] = [];
  for (let i = 0; i < h.entryCount; i++) {
    const e = MetadataTableEntry.decode(table, MetadataTableHeader.size + i * MetadataTableEntry.size);
    const where = `metadata item ${e.itemId}`;
    if (e.length > Layout.MAX_METADATA_ITEM) throw formatError(file.name, `${where} is ${e.length} bytes (max 1 MiB)`);
    if (e.length > 0 && (e.offset < Layout.METADATA_TABLE_SIZE || e.offset + e.length > region.length)) {
      throw formatError(file.name, `${where} at ${e.offset}+${e.length} lies outside the metadata region`);
    }
    const range = { name: e.itemId, offset: e.offset, length: e.length };
    if (e.length > 0 && used.some((u) => overlaps(u, range)))
      throw formatError(file.name, `${where} overlaps another item`);
    used.push(range);
    const known = Object.values(MetadataGuid).includes(e.itemId as never) && !(e.flags & MetadataFlags.IS_USER);
    if (!known) {
      if (e.flags & MetadataFlags.IS_REQUIRED)
        throw new VhdError('ERR_VHD_UNSUPPORTED', `${file.name}: unknown required ${where}`);
      continue;
    }
    if (e.itemId === MetadataGuid.PARENT_LOCATOR) {
      throw new VhdError(
        'ERR_VHD_UNSUPPORTED',
        `${file.name}: differencing VHDX (parent locator present) is not supported`,
      );
    }
    items.set(e.itemId, await readExact(file, region.offset + e.offset, e.length, where));
  }
  return items;
}

/** The disk's geometry from its metadata items, each required one present and every value in range. */
function checkedMetadata(fileName: string, items: ReadonlyMap<string, Uint8Array>): Metadata {
  const item = <T>(id: string, name: string, decode: (b: Uint8Array) => T): T => {
    const b = items.get(id);
    if (!b) throw formatError(fileName, `required metadata item ${name} is missing`);
    try {
      return decode(b);
    } catch (e) {
      if (e instanceof BinaryError) throw formatError(fileName, `metadata item ${name}: ${e.message}`, e);
      throw e;
    }
  };
  const params = item(MetadataGuid.FILE_PARAMETERS, 'FileParameters', (b) => FileParameters.decode(b));
  const virtualSize = item(MetadataGuid.VIRTUAL_DISK_SIZE, 'VirtualDiskSize', (b) => VirtualDiskSize.decode(b).size);
  const diskId = item(MetadataGuid.VIRTUAL_DISK_ID, 'VirtualDiskId', (b) => VirtualDiskId.decode(b).id);
  const logicalSectorSize = item(
    MetadataGuid.LOGICAL_SECTOR_SIZE,
    'LogicalSectorSize',
    (b) => SectorSize.decode(b).size,
  );
  const physicalSectorSize = item(
    MetadataGuid.PHYSICAL_SECTOR_SIZE,
    'PhysicalSectorSize',
    (b) => SectorSize.decode(b).size,
  );
  if (params.flags & FileParameterFlags.HAS_PARENT) {
    throw new VhdError('ERR_VHD_UNSUPPORTED', `${fileName}: differencing VHDX (HasParent) is not supported`);
  }
  if (
    !isPowerOfTwo(params.blockSize) ||
    params.blockSize < Limits.MIN_BLOCK_SIZE ||
    params.blockSize > Limits.MAX_BLOCK_SIZE
  ) {
    throw formatError(fileName, `block size ${params.blockSize} is not a power of two from 1 MiB to 256 MiB`);
  }
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096)
    throw formatError(fileName, `logical sector size ${logicalSectorSize}`);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096)
    throw formatError(fileName, `physical sector size ${physicalSectorSize}`);
  if (virtualSize <= 0 || virtualSize > Limits.MAX_VIRTUAL_SIZE || virtualSize % logicalSectorSize !== 0) {
    throw formatError(
      fileName,
      `virtual disk size ${virtualSize} is not a multiple of ${logicalSectorSize} up to 64 TiB`,
    );
  }
  return {
    blockSize: params.blockSize,
    leaveBlocksAllocated: (params.flags & FileParameterFlags.LEAVE_BLOCKS_ALLOCATED) !== 0,
    virtualSize,
    diskId,
    logicalSectorSize,
    physicalSectorSize,
  };
}

/** Largest log entry whose checksum is computed; Hyper-V writes entries of a few MiB at most. */
const MAX_LOG_ENTRY = 32 * MiB;

/**
 * Why the log must be replayed before the file can be read, or null: an entry at a 4 KiB boundary with
 * the header's LogGuid, a sane length and a valid CRC-32C (2.3.1.1) — reading it without replay would show
 * stale metadata, so such a file is refused rather than misread. Checking is linear in the log's size:
 * a log of overlapping would-be entries that costs more than twice its length to check, or an entry
 * larger than {@link MAX_LOG_ENTRY}, cannot be shown clean and is refused the same way.
 */
async function logReplayReason(file: RandomAccessFile, h: Header): Promise<string | null> {
  const chunk = MiB;
  let budget = 2 * h.logLength + MiB;
  for (let base = 0; base < h.logLength; base += chunk) {
    const buf = await readExact(file, h.logOffset + base, Math.min(chunk, h.logLength - base), 'log');
    for (let at = 0; at + LogEntryHeader.size <= buf.length; at += 4096) {
      const e = LogEntryHeader.decode(buf, at);
      if (e.signature !== Signature.LOG_ENTRY || e.logGuid !== h.logGuid) continue;
      if (e.entryLength === 0 || e.entryLength % 4096 !== 0 || base + at + e.entryLength > h.logLength) continue;
      if (e.entryLength > MAX_LOG_ENTRY)
        return `a log entry at ${base + at} of ${e.entryLength} bytes (more than a writer makes) cannot be checked`;
      budget -= e.entryLength;
      if (budget < 0) return 'its log entries overlap beyond what a writer makes and cannot be checked';
      const entry = await readExact(file, h.logOffset + base + at, e.entryLength, 'log entry');
      if (checksumWithZeroField(entry, LogEntryHeader.offsetOf('checksum')) === e.checksum)
        return 'the log holds entries that need replay';
    }
  }
  return null;
}

/** Validates the whole structure; a field that cannot even be decoded (a 64-bit size above 2^53) is ERR_VHD_FORMAT. */
async function parse(file: RandomAccessFile): Promise<Parsed> {
  try {
    return await parseStructure(file);
  } catch (e) {
    if (e instanceof BinaryError) throw formatError(file.name, e.message, e);
    throw e;
  }
}

async function parseStructure(file: RandomAccessFile): Promise<Parsed> {
  const fileSize = await file.size();
  if (fileSize < Layout.HEADER_SECTION)
    throw formatError(file.name, `${fileSize} bytes, smaller than a VHDX header section (1 MiB)`);
  const id = FileTypeIdentifier.decode(await readExact(file, 0, FileTypeIdentifier.size, 'file type identifier'));
  if (id.signature !== Signature.FILE)
    throw formatError(file.name, `signature ${JSON.stringify(id.signature)}, expected "vhdxfile" (not a VHDX)`);
  const { header, current } = await readHeaders(file);
  if (
    header.logLength % MiB !== 0 ||
    (header.logLength > 0 && (header.logOffset < MiB || header.logOffset % MiB !== 0))
  ) {
    throw formatError(file.name, `log at ${header.logOffset} length ${header.logLength} is not on 1 MiB boundaries`);
  }
  if (header.logOffset + header.logLength > fileSize) throw formatError(file.name, `log ends past the end of the file`);
  if (!isNil(header.logGuid)) {
    if (header.logVersion !== 0)
      throw new VhdError('ERR_VHD_UNSUPPORTED', `${file.name}: log version ${header.logVersion}`);
    const replay = await logReplayReason(file, header);
    if (replay)
      throw new VhdError(
        'ERR_VHD_UNSUPPORTED',
        `${file.name}: ${replay} (open it once with Hyper-V or qemu-img check -r all)`,
      );
  }
  const regions = await readRegions(file, fileSize);
  const log: FileRegion = { name: 'log', offset: header.logOffset, length: header.logLength };
  const all = header.logLength > 0 ? [...regions, log] : regions;
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      if (overlaps(all[i]!, all[j]!)) throw formatError(file.name, `${all[i]!.name} region overlaps ${all[j]!.name}`);
    }
  }
  const metadataRegion = regions.find((r) => r.name === 'metadata')!;
  const bat = regions.find((r) => r.name === 'bat')!;
  const meta = await readMetadata(file, metadataRegion);
  const shape = { virtualSize: meta.virtualSize, blockSize: meta.blockSize, logicalSectorSize: meta.logicalSectorSize };
  const entries = batEntryCount(shape);
  if (entries * BAT_ENTRY_SIZE > bat.length) {
    throw formatError(
      file.name,
      `BAT region of ${bat.length} bytes cannot hold the ${entries} entries a ${meta.virtualSize}-byte disk needs`,
    );
  }
  return {
    header,
    batOffset: bat.offset,
    info: {
      format: 'vhdx',
      file: file.name,
      fileSize,
      creator: id.creator,
      ...meta,
      header: {
        current,
        sequenceNumber: header.sequenceNumber,
        fileWriteGuid: header.fileWriteGuid,
        dataWriteGuid: header.dataWriteGuid,
        logGuid: header.logGuid,
        logOffset: header.logOffset,
        logLength: header.logLength,
      },
      regions: all,
      batEntries: entries,
      chunkRatio: chunkRatio(shape),
    },
  };
}

/**
 * An open VHDX: random-access reads and writes of the virtual disk through the BAT. Reads of blocks that
 * are not present return zeros; writes to them allocate a block at the end of the file (dynamic disks).
 * The BAT is read in 4 KiB pages on demand, with a bounded cache, so memory does not grow with disk size.
 *
 * Metadata updates: a block allocation writes the payload, then its 8-byte BAT entry in place. An 8-byte
 * aligned write cannot tear within a sector, so a crash leaves either the old entry (an unused block at the
 * end of the file) or the new one; the log is not used and the LogGuid stays zero.
 */
export class Vhdx {
  readonly info: VhdxInfo;
  readonly writable: boolean;
  #file: RandomAccessFile;
  #header: Header;
  #batOffset: number;
  #pages = new Map<number, Uint8Array>();
  #end: number;
  #protected: FileRegion[];
  #dataWriteGuidUpdated = false;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;
  #ratio: number;

  private constructor(file: RandomAccessFile, parsed: Parsed, writable: boolean) {
    this.#file = file;
    this.info = parsed.info;
    this.#header = parsed.header;
    this.#batOffset = parsed.batOffset;
    this.writable = writable;
    this.#end = roundUp(parsed.info.fileSize, MiB);
    this.#protected = [{ name: 'header section', offset: 0, length: Layout.HEADER_SECTION }, ...parsed.info.regions];
    this.#ratio = parsed.info.chunkRatio;
  }

  /** Opens and validates a VHDX (see {@link openVhdx}). */
  static async open(path: string, opts: OpenVhdxOptions = {}): Promise<Vhdx> {
    const file = await openTarget(path, opts.writable ? 'r+' : 'r');
    try {
      const disk = new Vhdx(file, await parse(file), opts.writable ?? false);
      if (disk.writable) await disk.#updateHeaders(false);
      return disk;
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  /** Virtual disk size in bytes. */
  get size(): number {
    return this.info.virtualSize;
  }

  /** Header update of 2.2.2.1, done twice so both copies are current. */
  async #updateHeaders(newDataWriteGuid: boolean): Promise<void> {
    const fileWriteGuid = randomUUID();
    const dataWriteGuid = newDataWriteGuid ? randomUUID() : this.#header.dataWriteGuid;
    for (let round = 0; round < 2; round++) {
      const seq = this.#header.sequenceNumber + 1n;
      const next: Header = { ...this.#header, sequenceNumber: seq, fileWriteGuid, dataWriteGuid };
      const bytes = Header.encode({ ...next, checksum: 0 });
      Header.set(bytes, 'checksum', checksumWithZeroField(bytes, Header.offsetOf('checksum')));
      const target = this.info.header.current === 1 ? Layout.HEADER_2 : Layout.HEADER_1;
      await this.#file.write(bytes, target);
      await this.#file.sync();
      this.#header = next;
      this.info.header.current = this.info.header.current === 1 ? 2 : 1;
      this.info.header.sequenceNumber = seq;
      this.info.header.fileWriteGuid = fileWriteGuid;
      this.info.header.dataWriteGuid = dataWriteGuid;
    }
  }

  async #page(p: number): Promise<Uint8Array> {
    const cached = this.#pages.get(p);
    if (cached) {
      this.#pages.delete(p);
      this.#pages.set(p, cached);
      return cached;
    }
    const first = p * PAGE_ENTRIES;
    const count = Math.min(PAGE_ENTRIES, this.info.batEntries - first);
    const page = await readExact(this.#file, this.#batOffset + first * BAT_ENTRY_SIZE, count * BAT_ENTRY_SIZE, 'BAT');
    if (this.#pages.size >= MAX_CACHED_PAGES) this.#pages.delete(this.#pages.keys().next().value!);
    this.#pages.set(p, page);
    return page;
  }

  /** The state and file offset of payload block `block`, validated against the file's structure. */
  async #block(block: number): Promise<BlockState> {
    const index = batIndex(block, this.#ratio);
    const page = await this.#page(Math.floor(index / PAGE_ENTRIES));
    return this.#check(block, index, decodeBatEntry(page, index % PAGE_ENTRIES));
  }

  #check(block: number, index: number, e: BatEntry): BlockState {
    const name = this.info.file;
    switch (e.state) {
      case PayloadState.NOT_PRESENT:
      case PayloadState.UNDEFINED:
      case PayloadState.ZERO:
      case PayloadState.UNMAPPED:
        return { present: false, fileOffset: 0, state: e.state, index };
      case PayloadState.FULLY_PRESENT: {
        const range = { name: `block ${block}`, offset: e.offsetMB * MiB, length: this.info.blockSize };
        if (range.offset + range.length > this.info.fileSize) {
          throw formatError(
            name,
            `BAT entry ${index} puts block ${block} at ${range.offset}, past the end of the file (${this.info.fileSize})`,
          );
        }
        const hit = this.#protected.find((r) => overlaps(r, range));
        if (hit)
          throw formatError(name, `BAT entry ${index} puts block ${block} at ${range.offset}, inside the ${hit.name}`);
        return { present: true, fileOffset: range.offset, state: e.state, index };
      }
      case PayloadState.PARTIALLY_PRESENT:
        throw formatError(
          name,
          `BAT entry ${index}: block ${block} is PARTIALLY_PRESENT, which only differencing disks may use`,
        );
      default:
        throw formatError(name, `BAT entry ${index}: reserved block state ${e.state}`);
    }
  }

  #checkRange(offset: number, length: number): void {
    if (this.#closed) throw new VhdError('ERR_INVALID_ARGUMENT', `${this.info.file}: disk is closed`);
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.size
    ) {
      throw new VhdError(
        'ERR_INVALID_ARGUMENT',
        `${this.info.file}: range ${offset}+${length} is outside the ${this.size}-byte disk`,
      );
    }
  }

  /** Splits a range of the virtual disk at block boundaries: block, offset within it, offset in the buffer, length. */
  *#spans(offset: number, length: number): Generator<{ block: number; within: number; at: number; n: number }> {
    const bs = this.info.blockSize;
    for (let at = 0; at < length;) {
      const block = Math.floor((offset + at) / bs);
      const within = offset + at - block * bs;
      const n = Math.min(bs - within, length - at);
      yield { block, within, at, n };
      at += n;
    }
  }

  /** Reads `length` bytes of the virtual disk at `offset`. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(out, offset);
    return out;
  }

  /** Reads `buf.length` bytes of the virtual disk at `offset` into `buf`. */
  async readInto(buf: Uint8Array, offset: number): Promise<void> {
    this.#checkRange(offset, buf.length);
    for (const { block, within, at, n } of this.#spans(offset, buf.length)) {
      const dest = buf.subarray(at, at + n);
      const b = await this.#block(block);
      if (b.present) dest.set(await readExact(this.#file, b.fileOffset + within, n, `block ${block}`));
      else dest.fill(0);
    }
  }

  /** Writes `data` to the virtual disk at `offset`, allocating blocks as needed. Writes are serialised. */
  write(offset: number, data: Uint8Array): Promise<void> {
    const run = this.#queue.then(() => this.#write(offset, data));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #write(offset: number, data: Uint8Array): Promise<void> {
    if (!this.writable) throw new VhdError('ERR_READ_ONLY', `${this.info.file}: opened read-only`);
    this.#checkRange(offset, data.length);
    if (data.length === 0) return;
    if (!this.#dataWriteGuidUpdated) {
      await this.#updateHeaders(true);
      this.#dataWriteGuidUpdated = true;
    }
    for (const { block, within, at, n } of this.#spans(offset, data.length)) {
      const piece = data.subarray(at, at + n);
      const b = await this.#block(block);
      if (b.present) await this.#file.write(piece, b.fileOffset + within);
      // Zeros need no block where the state already reads as zeros: NOT_PRESENT (every reader, Hyper-V and
      // qemu included, returns zeros) and ZERO (2.5.1.1: MUST return zeros).
      else if ((b.state === PayloadState.NOT_PRESENT || b.state === PayloadState.ZERO) && isZero(piece)) continue;
      else await this.#allocate(b.index, within, piece);
    }
  }

  /** Appends a zero-filled block at the end of the file, writes `piece` into it, then points the BAT at it. */
  async #allocate(index: number, within: number, piece: Uint8Array): Promise<void> {
    const at = this.#end;
    const bs = this.info.blockSize;
    await this.#file.truncate(at + bs);
    this.#end = at + bs;
    if (!isZero(piece)) await this.#file.write(piece, at + within);
    const entry = new Uint8Array(BAT_ENTRY_SIZE);
    encodeBatEntry(entry, 0, PayloadState.FULLY_PRESENT, at / MiB);
    await this.#file.write(entry, this.#batOffset + index * BAT_ENTRY_SIZE);
    const page = this.#pages.get(Math.floor(index / PAGE_ENTRIES));
    page?.set(entry, (index % PAGE_ENTRIES) * BAT_ENTRY_SIZE);
    this.info.fileSize = this.#end;
  }

  /**
   * Scans the whole BAT, page by page, validating every entry, and reports how blocks are allocated.
   * Time grows with the BAT (64 TiB with 1 MiB blocks: 512 MiB of entries), memory does not.
   */
  async allocation(): Promise<VhdxAllocation> {
    const total = payloadBlockCount(this.info);
    const bs = this.info.blockSize;
    let present = 0;
    let first: number | null = null;
    let contiguous = true;
    for (let p = 0; p * PAGE_ENTRIES < this.info.batEntries; p++) {
      const page = await this.#page(p);
      for (let i = 0; i < page.length / BAT_ENTRY_SIZE; i++) {
        const index = p * PAGE_ENTRIES + i;
        const e = decodeBatEntry(page, i);
        if ((index + 1) % (this.#ratio + 1) === 0) {
          // A sector bitmap entry: fixed and dynamic disks must have none allocated (2.5.1.2).
          if (e.state !== BitmapState.NOT_PRESENT) {
            throw formatError(
              this.info.file,
              `BAT entry ${index}: sector bitmap block state ${e.state} in a non-differencing disk`,
            );
          }
          continue;
        }
        const block = index - Math.floor(index / (this.#ratio + 1));
        if (block >= total) continue;
        const b = this.#check(block, index, e);
        if (!b.present) {
          contiguous = false;
          continue;
        }
        present++;
        if (block === 0) first = b.fileOffset;
        else if (first === null || b.fileOffset !== first + block * bs) contiguous = false;
      }
    }
    return {
      totalBlocks: total,
      presentBlocks: present,
      absentBlocks: total - present,
      contiguous: contiguous && first !== null ? { offset: first, length: this.info.virtualSize } : null,
    };
  }

  /** Flushes written data and metadata to stable storage. */
  async flush(): Promise<void> {
    await this.#queue;
    if (this.writable) await this.#file.sync();
  }

  /** Flushes and closes; safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#closed = true;
    await this.#file.close();
  }
}

/**
 * Opens a VHDX made by anyone (Hyper-V, qemu, us) after validating its headers, region table, metadata
 * and log. Refuses with `ERR_VHD_UNSUPPORTED` what it will not misread: differencing disks, unknown
 * required regions or metadata, a log that needs replay.
 */
export function openVhdx(path: string, opts: OpenVhdxOptions = {}): Promise<Vhdx> {
  return Vhdx.open(path, opts);
}
