import { randomUUID } from 'node:crypto';
import { BinaryError } from '@lcow/binary';
import { VhdError } from '../errors.ts';
import { openTarget, readAt, type FileTarget } from '../file.ts';
import {
  DiskType,
  Features,
  Footer,
  FOOTER_COOKIE,
  FORMAT_VERSION,
  MAX_CHS_SECTORS,
  NO_DATA_OFFSET,
  SECTOR_SIZE,
  VHD_EPOCH_SECONDS,
} from './format.ts';

/** Hyper-V refuses VHDs above 2040 GiB; so do we. */
export const MAX_VHD_SIZE: number = 2040 * 1024 ** 3;

/** A cylinder/head/sector geometry as the VHD footer stores it. */
export interface ChsGeometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** Options for the identity fields of a footer. The defaults make every reader size the disk by `currentSize`. */
export interface FooterOptions {
  /** Footer time stamp (seconds since 2000-01-01 are stored); default: now. Fix it for reproducible output. */
  timestamp?: Date;
  /** Unique id (a UUID); default: random. */
  uniqueId?: string;
  /**
   * Creator application, 4 ASCII characters; default `"win "`, what Hyper-V writes. qemu (7.2 and later)
   * takes the size from `currentSize` for `"win "`, and from the CHS geometry for `"vpc "`/`"qemu"` and,
   * before qemu 8, for any code it does not know: pick another value only together with `align: 'geometry'`.
   */
  creatorApplication?: string;
  /** Creator version; default 0x000a0000 (10.0). */
  creatorVersion?: number;
  /** Creator host OS, 4 ASCII characters; default `"Wi2k"` (Windows). */
  creatorHostOs?: string;
}

/** A parsed footer, with the derived values callers want. */
export interface VhdFooter extends Footer {
  /** `'fixed' | 'dynamic' | 'differencing'`. */
  type: 'fixed' | 'dynamic' | 'differencing';
  /** The time stamp as a date. */
  date: Date;
  /** Bytes the CHS geometry describes (cylinders × heads × sectors × 512). */
  geometrySize: number;
}

/**
 * The CHS geometry for a disk of `size` bytes, by the algorithm of the VHD specification (appendix
 * "CHS Calculation"): sizes above 65535 × 16 × 255 sectors get that capped geometry; below, the smallest
 * sectors-per-track of 17, 31, 63 whose cylinder count fits, then 255.
 */
export function chsGeometry(size: number): ChsGeometry {
  const total = Math.min(Math.floor(size / SECTOR_SIZE), MAX_CHS_SECTORS);
  if (total >= 65535 * 16 * 63) {
    return { cylinders: Math.floor(total / 255 / 16), heads: 16, sectorsPerTrack: 255 };
  }
  let spt = 17;
  let cylTimesHeads = Math.floor(total / spt);
  let heads = Math.max(4, Math.floor((cylTimesHeads + 1023) / 1024));
  if (cylTimesHeads >= heads * 1024 || heads > 16) {
    spt = 31;
    heads = 16;
    cylTimesHeads = Math.floor(total / spt);
  }
  if (cylTimesHeads >= heads * 1024) {
    spt = 63;
    heads = 16;
    cylTimesHeads = Math.floor(total / spt);
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack: spt };
}

/** Bytes a geometry describes. */
export function geometrySize(g: ChsGeometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack * SECTOR_SIZE;
}

/**
 * The smallest size ≥ `size` that its own CHS geometry describes exactly, so that readers which trust
 * only the geometry see the same size as readers of `currentSize`. Above the CHS maximum no such size
 * exists and `size` (rounded up to a sector) is returned: there every reader uses `currentSize`.
 */
export function geometryAlignedSize(size: number): number {
  let s = Math.ceil(size / SECTOR_SIZE) * SECTOR_SIZE;
  if (s / SECTOR_SIZE >= MAX_CHS_SECTORS) return s;
  // Each round moves to the next whole cylinder of the current geometry; thresholds change the geometry
  // at most three times, so this ends quickly.
  for (let round = 0; round < 64; round++) {
    const g = chsGeometry(s);
    const covered = geometrySize(g);
    if (covered === s) return s;
    s = (g.cylinders + 1) * g.heads * g.sectorsPerTrack * SECTOR_SIZE;
    if (s / SECTOR_SIZE >= MAX_CHS_SECTORS) return s;
  }
  throw new VhdError('ERR_INVALID_ARGUMENT', `size ${size}: no CHS-aligned size found`);
}

/** The VHD checksum: one's complement of the byte sum of `bytes`, the 4-byte field at `at` counted as zero. */
export function onesComplementChecksum(bytes: Uint8Array, at: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) if (i < at || i >= at + 4) sum += bytes[i]!;
  return ~sum >>> 0;
}

/** The checksum a 512-byte footer should carry. */
export function footerChecksum(bytes: Uint8Array): number {
  return onesComplementChecksum(bytes.subarray(0, Footer.size), Footer.offsetOf('checksum'));
}

/** Encodes a footer and fills in its checksum. */
export function encodeFooter(footer: Omit<Footer, 'checksum'>): Uint8Array {
  const bytes = Footer.encode({ ...footer, checksum: 0 });
  Footer.set(bytes, 'checksum', footerChecksum(bytes));
  return bytes;
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE !== 0) {
    throw new VhdError(
      'ERR_INVALID_ARGUMENT',
      `size ${size}: a fixed VHD payload must be a positive multiple of 512 bytes`,
    );
  }
  if (size > MAX_VHD_SIZE) {
    throw new VhdError('ERR_INVALID_ARGUMENT', `size ${size}: above the VHD maximum of 2040 GiB (use VHDX)`);
  }
}

/**
 * The 512-byte footer of a fixed VHD whose payload is `size` bytes: original and current size = `size`,
 * geometry by the spec's algorithm, data offset all ones, a valid checksum.
 */
export function createFixedFooter(size: number, opts: FooterOptions = {}): Uint8Array {
  checkSize(size);
  const seconds = Math.floor((opts.timestamp ?? new Date()).getTime() / 1000) - VHD_EPOCH_SECONDS;
  if (seconds < 0 || seconds > 0xffff_ffff) {
    throw new VhdError(
      'ERR_INVALID_ARGUMENT',
      `timestamp ${opts.timestamp?.toISOString()}: outside the VHD range (2000–2136)`,
    );
  }
  try {
    return encodeFooter({
      cookie: FOOTER_COOKIE,
      features: Features.RESERVED,
      formatVersion: FORMAT_VERSION,
      dataOffset: NO_DATA_OFFSET,
      timestamp: seconds,
      creatorApplication: opts.creatorApplication ?? 'win ',
      creatorVersion: opts.creatorVersion ?? 0x000a_0000,
      creatorHostOs: opts.creatorHostOs ?? 'Wi2k',
      originalSize: size,
      currentSize: size,
      ...chsGeometry(size),
      diskType: DiskType.FIXED,
      uniqueId: opts.uniqueId ?? randomUUID(),
      savedState: 0,
    });
  } catch (e) {
    if (e instanceof BinaryError)
      throw new VhdError('ERR_INVALID_ARGUMENT', `footer option: ${e.message}`, { cause: e });
    throw e;
  }
}

const TYPE_NAMES: Record<number, VhdFooter['type']> = {
  [DiskType.FIXED]: 'fixed',
  [DiskType.DYNAMIC]: 'dynamic',
  [DiskType.DIFFERENCING]: 'differencing',
};

/**
 * Parses and verifies a 512-byte footer. Throws `ERR_VHD_FORMAT` naming the field that is wrong: the
 * cookie, the checksum (with expected and found values), the format version, the disk type, or a size.
 * `source` (a file name) prefixes the message.
 */
export function parseFooter(bytes: Uint8Array, source = 'VHD footer'): VhdFooter {
  const bad = (field: string, why: string): VhdError =>
    new VhdError('ERR_VHD_FORMAT', `${source}: footer ${field} ${why}`);
  if (bytes.length < Footer.size) throw bad('', `is ${bytes.length} bytes, expected ${Footer.size}`);
  const cookie = Footer.get(bytes, 'cookie');
  if (cookie !== FOOTER_COOKIE) throw bad('cookie', `is ${JSON.stringify(cookie)}, expected "conectix" (not a VHD)`);
  const stored = Footer.get(bytes, 'checksum');
  const sum = footerChecksum(bytes);
  if (stored !== sum) {
    throw bad(
      'checksum',
      `is 0x${stored.toString(16).padStart(8, '0')}, expected 0x${sum.toString(16).padStart(8, '0')}`,
    );
  }
  let f: Footer;
  try {
    f = Footer.decode(bytes);
  } catch (e) {
    if (e instanceof BinaryError)
      throw new VhdError('ERR_VHD_FORMAT', `${source}: footer size: ${e.message}`, { cause: e });
    throw e;
  }
  if (f.formatVersion >>> 16 !== 1)
    throw bad('formatVersion', `is 0x${f.formatVersion.toString(16)}, expected major version 1`);
  const type = TYPE_NAMES[f.diskType];
  if (!type) throw bad('diskType', `is ${f.diskType}, expected 2 (fixed), 3 (dynamic) or 4 (differencing)`);
  if (type === 'fixed' && f.dataOffset !== NO_DATA_OFFSET)
    throw bad('dataOffset', `is ${f.dataOffset}, expected all ones for a fixed disk`);
  return { ...f, type, date: new Date((VHD_EPOCH_SECONDS + f.timestamp) * 1000), geometrySize: geometrySize(f) };
}

/** Where {@link appendFixedFooter} put the footer. */
export interface AppendedFooter {
  /** Payload bytes before the footer (the original size plus any padding). */
  payloadSize: number;
  /** Zero bytes added after the original content. */
  padding: number;
  footer: VhdFooter;
}

/** Options of {@link appendFixedFooter}. */
export interface AppendFooterOptions extends FooterOptions {
  /**
   * `'sector'` (default) pads the payload to a multiple of 512 bytes. `'geometry'` pads further, to a size
   * the CHS geometry describes exactly, so even geometry-only readers (Virtual PC, old qemu with an unknown
   * creator) see the exact size; the padding is zeros after the filesystem.
   */
  align?: 'sector' | 'geometry';
}

/**
 * Turns a raw image into a fixed VHD in place: pads it as `align` asks, writes the footer after it and
 * fsyncs. A file that already ends in a valid footer describing its payload is refused, so running twice
 * never stacks footers.
 */
export async function appendFixedFooter(target: FileTarget, opts: AppendFooterOptions = {}): Promise<AppendedFooter> {
  const file = await openTarget(target, 'r+');
  try {
    const size = await file.size();
    if (size >= Footer.size) {
      const tail = await readAt(file, size - Footer.size, Footer.size);
      let existing: VhdFooter | undefined;
      try {
        existing = parseFooter(tail, file.name);
      } catch {
        existing = undefined;
      }
      if (existing?.type === 'fixed' && existing.currentSize === size - Footer.size) {
        throw new VhdError('ERR_INVALID_ARGUMENT', `${file.name}: already ends in a fixed VHD footer`);
      }
    }
    if (size === 0) throw new VhdError('ERR_INVALID_ARGUMENT', `${file.name}: empty file, nothing to wrap`);
    const payloadSize =
      opts.align === 'geometry' ? geometryAlignedSize(size) : Math.ceil(size / SECTOR_SIZE) * SECTOR_SIZE;
    const bytes = createFixedFooter(payloadSize, opts);
    if (payloadSize > size) await file.truncate(payloadSize);
    await file.write(bytes, payloadSize);
    await file.sync();
    return { payloadSize, padding: payloadSize - size, footer: parseFooter(bytes, file.name) };
  } finally {
    await file.close();
  }
}

/** A footer read from a file, with where it sits. */
export interface FileFooter extends VhdFooter {
  fileSize: number;
  /** Offset of the footer in the file (payload size for a fixed disk). */
  footerOffset: number;
}

/**
 * Reads and verifies the footer at the end of a VHD file. For a fixed disk it also checks that
 * `currentSize` equals the payload in front of the footer, as Hyper-V does.
 */
export async function readFooter(target: FileTarget): Promise<FileFooter> {
  const file = await openTarget(target, 'r');
  try {
    const fileSize = await file.size();
    if (fileSize < Footer.size) {
      throw new VhdError('ERR_VHD_FORMAT', `${file.name}: ${fileSize} bytes, too small to hold a VHD footer`);
    }
    const footerOffset = fileSize - Footer.size;
    const footer = parseFooter(await readAt(file, footerOffset, Footer.size), file.name);
    if (footer.type === 'fixed' && footer.currentSize !== footerOffset) {
      throw new VhdError(
        'ERR_VHD_FORMAT',
        `${file.name}: footer currentSize is ${footer.currentSize} but ${footerOffset} bytes precede the footer`,
      );
    }
    return { ...footer, fileSize, footerOffset };
  } finally {
    await file.close();
  }
}
