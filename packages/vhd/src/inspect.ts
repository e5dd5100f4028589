import { VhdError } from './errors.ts';
import { openTarget, readAt } from './file.ts';
import { onesComplementChecksum, parseFooter, readFooter, type FileFooter } from './footer/footer.ts';
import { DYNAMIC_COOKIE, DynamicHeader, Footer } from './footer/format.ts';
import { openVhdx, type VhdxAllocation, type VhdxInfo } from './vhdx/vhdx.ts';

/** A dynamic VHD's header fields (the block table itself is not read). */
export interface DynamicVhdHeader {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
  checksumValid: boolean;
}

/** What {@link inspectDisk} found. */
export type DiskInfo =
  | ({ format: 'vhdx' } & VhdxInfo & { allocation: VhdxAllocation; warnings: string[] })
  | {
      format: 'vhd';
      file: string;
      virtualSize: number;
      footer: FileFooter;
      dynamicHeader?: DynamicVhdHeader;
      warnings: string[];
    };

/**
 * Identifies and fully validates a disk file: a VHDX (`"vhdxfile"` at offset 0) or a VHD (footer at the end).
 * `virtualSize` is what a current-size reader (Hyper-V, qemu ≥ 8) sees; `warnings` lists what other readers
 * would see differently. Anything else is `ERR_VHD_FORMAT`.
 */
export async function inspectDisk(path: string): Promise<DiskInfo> {
  const file = await openTarget(path, 'r');
  let head: Uint8Array;
  try {
    head = await readAt(file, 0, 8);
  } finally {
    await file.close();
  }
  if (new TextDecoder().decode(head) === 'vhdxfile') {
    const disk = await openVhdx(path);
    try {
      const allocation = await disk.allocation();
      const warnings: string[] = [];
      if (!allocation.contiguous && disk.info.leaveBlocksAllocated)
        warnings.push('marked fixed, but its blocks are not contiguous');
      return { ...disk.info, format: 'vhdx', allocation, warnings };
    } finally {
      await disk.close();
    }
  }
  const footer = await readFooter(path);
  const warnings: string[] = [];
  const qemuLegacy = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap'].includes(footer.creatorApplication);
  if (
    footer.geometrySize !== footer.currentSize &&
    !qemuLegacy &&
    footer.cylinders * footer.heads * footer.sectorsPerTrack !== 65535 * 16 * 255
  ) {
    warnings.push(
      `CHS geometry ${footer.cylinders}/${footer.heads}/${footer.sectorsPerTrack} describes ${footer.geometrySize} bytes, not ${footer.currentSize}: ` +
        `qemu before 8.0 (creator ${JSON.stringify(footer.creatorApplication)}) will report that size`,
    );
  }
  if (footer.currentSize % 512 !== 0) warnings.push('current size is not a multiple of 512 bytes (Hyper-V rejects it)');
  let dynamicHeader: DynamicVhdHeader | undefined;
  if (footer.type !== 'fixed') {
    dynamicHeader = await readDynamicHeader(path, footer);
    if (!dynamicHeader.checksumValid) warnings.push('dynamic header checksum is wrong');
  }
  return {
    format: 'vhd',
    file: path,
    virtualSize: footer.currentSize,
    footer,
    ...(dynamicHeader ? { dynamicHeader } : {}),
    warnings,
  };
}

async function readDynamicHeader(path: string, footer: FileFooter): Promise<DynamicVhdHeader> {
  const file = await openTarget(path, 'r');
  try {
    const copy = await readAt(file, 0, Footer.size);
    parseFooter(copy, `${path} (footer copy at offset 0)`);
    const at = footer.dataOffset;
    if (at > BigInt(footer.fileSize - DynamicHeader.size))
      throw new VhdError('ERR_VHD_FORMAT', `${path}: dynamic header offset ${at} is past the end of the file`);
    const bytes = await readAt(file, Number(at), DynamicHeader.size);
    let h;
    try {
      h = DynamicHeader.decode(bytes);
    } catch (e) {
      throw new VhdError('ERR_VHD_FORMAT', `${path}: dynamic header: ${(e as Error).message}`, { cause: e });
    }
    if (h.cookie !== DYNAMIC_COOKIE)
      throw new VhdError(
        'ERR_VHD_FORMAT',
        `${path}: dynamic header cookie ${JSON.stringify(h.cookie)}, expected "cxsparse"`,
      );
    const checksumValid = onesComplementChecksum(bytes, DynamicHeader.offsetOf('checksum')) === h.checksum;
    return { tableOffset: h.tableOffset, maxTableEntries: h.maxTableEntries, blockSize: h.blockSize, checksumValid };
  } finally {
    await file.close();
  }
}
