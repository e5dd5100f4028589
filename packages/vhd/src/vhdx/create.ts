import { randomUUID } from 'node:crypto';
import { access } from 'node:fs/promises';
import { DurableError, DurableFile } from '@lcow/durable';
import { VhdError, throwIfAborted } from '../errors.ts';
import { BAT_ENTRY_SIZE, encodeBatEntry } from './format/bat.ts';
import {
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
  checksumWithZeroField,
  chunkRatio,
  isPowerOfTwo,
  payloadBlockCount,
  roundUp,
} from './layout.ts';

const MiB = 1024 * 1024;
const NIL_GUID = '00000000-0000-0000-0000-000000000000';

/** Options of {@link createVhdx}. */
export interface CreateVhdxOptions {
  /** Virtual disk size in bytes: a multiple of the logical sector size, at most 64 TiB. */
  size: number;
  /**
   * `'dynamic'` (default): blocks are allocated on first write. `'fixed'`: every block is allocated, in
   * order, right after the BAT, so the payload is one contiguous range of the file (see
   * `Vhdx.contiguousPayload`) and can be mounted through a loop device with an offset. The file is sparse.
   */
  type?: 'dynamic' | 'fixed';
  /** Payload block size: a power of two from 1 MiB to 256 MiB; default 1 MiB. */
  blockSize?: number;
  /** 512 (default) or 4096. */
  logicalSectorSize?: 512 | 4096;
  /** 512 or 4096 (default, as Hyper-V). */
  physicalSectorSize?: 512 | 4096;
  /** Log region size, a multiple of 1 MiB; default 1 MiB. The log is created empty. */
  logSize?: number;
  /** Virtual disk id (a GUID); default random. */
  diskId?: string;
  /** Replace an existing file at the path; default false (an existing file is `ERR_INVALID_ARGUMENT`). */
  overwrite?: boolean;
  signal?: AbortSignal;
}

/** The layout a new VHDX gets. */
export interface VhdxLayout {
  logOffset: number;
  logLength: number;
  metadataOffset: number;
  metadataLength: number;
  batOffset: number;
  batLength: number;
  /** First byte after the BAT: where payload blocks start. */
  dataOffset: number;
  batEntries: number;
}

function validate(opts: CreateVhdxOptions): Required<Omit<CreateVhdxOptions, 'signal' | 'diskId' | 'overwrite'>> {
  const blockSize = opts.blockSize ?? MiB;
  const logicalSectorSize = opts.logicalSectorSize ?? 512;
  const physicalSectorSize = opts.physicalSectorSize ?? 4096;
  const logSize = opts.logSize ?? MiB;
  const bad = (m: string): VhdError => new VhdError('ERR_INVALID_ARGUMENT', m);
  if (!isPowerOfTwo(blockSize) || blockSize < Limits.MIN_BLOCK_SIZE || blockSize > Limits.MAX_BLOCK_SIZE) {
    throw bad(`block size ${blockSize}: must be a power of two from 1 MiB to 256 MiB`);
  }
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096)
    throw bad(`logical sector size ${logicalSectorSize}: must be 512 or 4096`);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096)
    throw bad(`physical sector size ${physicalSectorSize}: must be 512 or 4096`);
  if (!Number.isSafeInteger(opts.size) || opts.size <= 0 || opts.size % logicalSectorSize !== 0) {
    throw bad(`size ${opts.size}: must be a positive multiple of the ${logicalSectorSize}-byte logical sector`);
  }
  if (opts.size > Limits.MAX_VIRTUAL_SIZE) throw bad(`size ${opts.size}: above the VHDX maximum of 64 TiB`);
  if (!Number.isSafeInteger(logSize) || logSize < MiB || logSize % MiB !== 0 || logSize > 0xffff_ffff) {
    throw bad(`log size ${logSize}: must be a multiple of 1 MiB below 4 GiB`);
  }
  return { size: opts.size, type: opts.type ?? 'dynamic', blockSize, logicalSectorSize, physicalSectorSize, logSize };
}

/** Where each structure of a new VHDX goes: log, metadata and BAT after the 1 MiB header section, then data. */
export function planLayout(size: number, blockSize: number, logicalSectorSize: number, logSize = MiB): VhdxLayout {
  const batEntries = batEntryCount({ virtualSize: size, blockSize, logicalSectorSize });
  const logOffset = Layout.HEADER_SECTION;
  const metadataOffset = logOffset + logSize;
  const metadataLength = MiB;
  const batOffset = metadataOffset + metadataLength;
  const batLength = roundUp(batEntries * BAT_ENTRY_SIZE, MiB);
  return {
    logOffset,
    logLength: logSize,
    metadataOffset,
    metadataLength,
    batOffset,
    batLength,
    dataOffset: batOffset + batLength,
    batEntries,
  };
}

function headerBytes(seq: bigint, layout: VhdxLayout, fileWriteGuid: string, dataWriteGuid: string): Uint8Array {
  const b = Header.encode({
    signature: Signature.HEADER,
    checksum: 0,
    sequenceNumber: seq,
    fileWriteGuid,
    dataWriteGuid,
    logGuid: NIL_GUID,
    logVersion: 0,
    version: 1,
    logLength: layout.logLength,
    logOffset: layout.logOffset,
  });
  Header.set(b, 'checksum', checksumWithZeroField(b, Header.offsetOf('checksum')));
  return b;
}

function regionTableBytes(layout: VhdxLayout): Uint8Array {
  const b = new Uint8Array(Layout.REGION_TABLE_SIZE);
  RegionTableHeader.encodeInto({ signature: Signature.REGION, checksum: 0, entryCount: 2 }, b, 0);
  RegionTableEntry.encodeInto(
    { guid: RegionGuid.BAT, fileOffset: layout.batOffset, length: layout.batLength, required: 1 },
    b,
    16,
  );
  RegionTableEntry.encodeInto(
    { guid: RegionGuid.METADATA, fileOffset: layout.metadataOffset, length: layout.metadataLength, required: 1 },
    b,
    16 + RegionTableEntry.size,
  );
  RegionTableHeader.set(b, 'checksum', checksumWithZeroField(b, RegionTableHeader.offsetOf('checksum')));
  return b;
}

function metadataBytes(o: ReturnType<typeof validate>, diskId: string, fixed: boolean): Uint8Array {
  const items: [string, number, Uint8Array][] = [
    [
      MetadataGuid.FILE_PARAMETERS,
      MetadataFlags.IS_REQUIRED,
      FileParameters.encode({ blockSize: o.blockSize, flags: fixed ? 1 : 0 }),
    ],
    [
      MetadataGuid.VIRTUAL_DISK_SIZE,
      MetadataFlags.IS_REQUIRED | MetadataFlags.IS_VIRTUAL_DISK,
      VirtualDiskSize.encode({ size: o.size }),
    ],
    [
      MetadataGuid.VIRTUAL_DISK_ID,
      MetadataFlags.IS_REQUIRED | MetadataFlags.IS_VIRTUAL_DISK,
      VirtualDiskId.encode({ id: diskId }),
    ],
    [
      MetadataGuid.LOGICAL_SECTOR_SIZE,
      MetadataFlags.IS_REQUIRED | MetadataFlags.IS_VIRTUAL_DISK,
      SectorSize.encode({ size: o.logicalSectorSize }),
    ],
    [
      MetadataGuid.PHYSICAL_SECTOR_SIZE,
      MetadataFlags.IS_REQUIRED | MetadataFlags.IS_VIRTUAL_DISK,
      SectorSize.encode({ size: o.physicalSectorSize }),
    ],
  ];
  const b = new Uint8Array(Layout.METADATA_TABLE_SIZE + 4096);
  MetadataTableHeader.encodeInto({ signature: Signature.METADATA, entryCount: items.length }, b, 0);
  let itemOffset = Layout.METADATA_TABLE_SIZE;
  items.forEach(([itemId, flags, data], i) => {
    MetadataTableEntry.encodeInto(
      { itemId, offset: itemOffset, length: data.length, flags },
      b,
      MetadataTableHeader.size + i * MetadataTableEntry.size,
    );
    b.set(data, itemOffset);
    itemOffset += data.length;
  });
  return b;
}

/**
 * Creates a VHDX at `path`, atomically: it is written under a temporary name in the same folder, fsynced
 * and renamed, so the path holds either nothing or a complete disk. Returns the layout it chose.
 */
export async function createVhdx(path: string, options: CreateVhdxOptions): Promise<VhdxLayout> {
  const o = validate(options);
  const { signal } = options;
  throwIfAborted(signal, path);
  if (!options.overwrite) {
    const exists = await access(path).then(
      () => true,
      () => false,
    );
    if (exists) throw new VhdError('ERR_EXISTS', `${path}: already exists`);
  }
  const fixed = o.type === 'fixed';
  const layout = planLayout(o.size, o.blockSize, o.logicalSectorSize, o.logSize);
  const blocks = payloadBlockCount({
    virtualSize: o.size,
    blockSize: o.blockSize,
    logicalSectorSize: o.logicalSectorSize,
  });
  const fileSize = layout.dataOffset + (fixed ? blocks * o.blockSize : 0);
  const file = await DurableFile.create(path, { overwrite: options.overwrite === true });
  const fh = file.handle;
  try {
    await fh.truncate(fileSize);
    const id = new Uint8Array(Layout.HEADER_1);
    FileTypeIdentifier.encodeInto({ signature: Signature.FILE, creator: 'lcow @lcow/vhd' }, id, 0);
    await fh.write(id, 0, id.length, 0);
    const fileWriteGuid = randomUUID();
    const dataWriteGuid = randomUUID();
    await fh.write(headerBytes(0n, layout, fileWriteGuid, dataWriteGuid), 0, Layout.HEADER_SIZE, Layout.HEADER_1);
    await fh.write(headerBytes(1n, layout, fileWriteGuid, dataWriteGuid), 0, Layout.HEADER_SIZE, Layout.HEADER_2);
    const regions = regionTableBytes(layout);
    await fh.write(regions, 0, regions.length, Layout.REGION_TABLE_1);
    await fh.write(regions, 0, regions.length, Layout.REGION_TABLE_2);
    const metadata = metadataBytes(o, options.diskId ?? randomUUID(), fixed);
    await fh.write(metadata, 0, metadata.length, layout.metadataOffset);
    if (fixed) {
      // Payload block b lives at dataOffset + b × blockSize; bitmap entries stay NOT_PRESENT (zero).
      const ratio = chunkRatio({ virtualSize: o.size, blockSize: o.blockSize, logicalSectorSize: o.logicalSectorSize });
      const perChunk = 65536;
      const buf = new Uint8Array(perChunk * BAT_ENTRY_SIZE);
      for (let first = 0; first < layout.batEntries; first += perChunk) {
        throwIfAborted(signal, path);
        buf.fill(0);
        const count = Math.min(perChunk, layout.batEntries - first);
        for (let index = first; index < first + count; index++) {
          if ((index + 1) % (ratio + 1) === 0) continue; // a sector bitmap entry
          const block = index - Math.floor(index / (ratio + 1));
          encodeBatEntry(
            buf,
            index - first,
            PayloadState.FULLY_PRESENT,
            (layout.dataOffset + block * o.blockSize) / MiB,
          );
        }
        await fh.write(buf, 0, count * BAT_ENTRY_SIZE, layout.batOffset + first * BAT_ENTRY_SIZE);
      }
    }
    throwIfAborted(signal, path);
    await file.commit();
    return layout;
  } catch (e) {
    await file.discard();
    if (e instanceof DurableError && e.code === 'ERR_EXISTS')
      throw new VhdError('ERR_EXISTS', `${path}: already exists`, { cause: e });
    throw e;
  }
}
