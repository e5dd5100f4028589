import { open } from 'node:fs/promises';
import { extname } from 'node:path';
import { Ext4Error, probeExt4, type Ext4Summary, type ReadAt } from '@lcow/ext4';
import { DurableFile } from '@lcow/durable';
import { convertRawImage, createFixedFooter, createVhdx, inspectDisk, openVhdx, type DiskInfo } from '@lcow/vhd';
import { DriverError } from '../../errors.ts';
import type { Parsed } from '../args.ts';
import { checkTime, fileOutput, formatBytes, outputTime, parseSize, table, toJson } from '../format.ts';
import { checkOutput } from '../output.ts';
import { progressBar } from '../progress.ts';
import { readerOf } from '../read-at.ts';
import type { Command, Io } from '../types.ts';

/** What `lcow vhd info` reports: the disk, what it contains, and a verdict. */
export interface VhdReport {
  disk: DiskInfo;
  contents: ({ type: 'ext4' } & Ext4Summary) | { type: 'unknown'; reason: string };
  verdict: 'ok' | 'warnings';
}

async function probeContents(info: DiskInfo): Promise<VhdReport['contents']> {
  let read: ReadAt;
  let close: () => Promise<void>;
  if (info.format === 'vhdx') {
    const d = await openVhdx(info.file);
    read = (offset, length) => d.read(offset, Math.max(0, Math.min(length, d.size - offset)));
    close = () => d.close();
  } else if (info.footer.type === 'fixed') {
    const fh = await open(info.file, 'r');
    const limit = info.footer.currentSize;
    read = readerOf(fh, limit);
    close = () => fh.close();
  } else {
    return { type: 'unknown', reason: `${info.footer.type} VHD payloads are not read` };
  }
  try {
    return { type: 'ext4', ...(await probeExt4(read, info.file)) };
  } catch (e) {
    if (e instanceof Ext4Error) return { type: 'unknown', reason: e.message.replace(`${info.file}: `, '') };
    throw e;
  } finally {
    await close();
  }
}

/** Inspects a VHD/VHDX file and what is on it. */
export async function vhdReport(file: string): Promise<VhdReport> {
  const disk = await inspectDisk(file);
  const contents = await probeContents(disk);
  return { disk, contents, verdict: disk.warnings.length > 0 ? 'warnings' : 'ok' };
}

/** The human-readable form of a report, as `lcow vhd info` prints it. */
export function describeReport(r: VhdReport): string {
  const d = r.disk;
  const rows: [string, string][] = [['file', d.file]];
  if (d.format === 'vhdx') {
    const a = d.allocation;
    rows.push(
      ['format', `VHDX (${d.leaveBlocksAllocated ? 'fixed' : 'dynamic'})`],
      ['virtual size', `${formatBytes(d.virtualSize)} (${d.virtualSize} bytes)`],
      ['block size', formatBytes(d.blockSize)],
      ['sectors', `${d.logicalSectorSize} logical, ${d.physicalSectorSize} physical`],
      ['disk id', d.diskId],
      ['creator', d.creator || '(none)'],
      [
        'header',
        `copy ${d.header.current} current, sequence ${d.header.sequenceNumber}, log ${d.header.logGuid.startsWith('00000000-0000') ? 'empty' : d.header.logGuid}`,
      ],
      ['regions', d.regions.map((x) => `${x.name} ${formatBytes(x.length)} @ ${x.offset}`).join(', ')],
      [
        'blocks',
        `${a.presentBlocks} of ${a.totalBlocks} present (chunk ratio ${d.chunkRatio}, ${d.batEntries} BAT entries)`,
      ],
      [
        'payload',
        a.contiguous
          ? `contiguous at file offset ${a.contiguous.offset} (losetup -o ${a.contiguous.offset} --sizelimit ${a.contiguous.length})`
          : 'allocated on demand',
      ],
      ['file size', `${formatBytes(d.fileSize)} (${d.fileSize} bytes)`],
    );
  } else {
    const f = d.footer;
    rows.push(
      ['format', `VHD (${f.type})`],
      ['virtual size', `${formatBytes(d.virtualSize)} (${d.virtualSize} bytes)`],
      ['cookie', JSON.stringify(f.cookie)],
      ['features', `0x${f.features.toString(16).padStart(8, '0')}`],
      ['version', `${f.formatVersion >>> 16}.${f.formatVersion & 0xffff}`],
      ['data offset', f.dataOffset === 0xffff_ffff_ffff_ffffn ? 'none (fixed)' : String(f.dataOffset)],
      ['timestamp', `${f.date.toISOString()} (${f.timestamp})`],
      [
        'creator',
        `${JSON.stringify(f.creatorApplication)} version 0x${f.creatorVersion.toString(16)} on ${JSON.stringify(f.creatorHostOs)}`,
      ],
      ['original size', String(f.originalSize)],
      ['current size', String(f.currentSize)],
      ['geometry', `${f.cylinders}/${f.heads}/${f.sectorsPerTrack} (C/H/S) = ${f.geometrySize} bytes`],
      ['checksum', `0x${f.checksum.toString(16).padStart(8, '0')} (valid)`],
      ['unique id', f.uniqueId],
      ['saved state', String(f.savedState)],
    );
    if (d.dynamicHeader)
      rows.push([
        'dynamic',
        `block size ${formatBytes(d.dynamicHeader.blockSize)}, ${d.dynamicHeader.maxTableEntries} table entries @ ${d.dynamicHeader.tableOffset}`,
      ]);
  }
  const c = r.contents;
  rows.push([
    'contents',
    c.type === 'ext4'
      ? `ext4, ${formatBytes(c.size)} in ${c.blocksCount} blocks of ${c.blockSize}, ${c.inodesCount - c.freeInodes} inodes used, ${c.state}${c.label ? `, label ${JSON.stringify(c.label)}` : ''}; features: ${c.features.join(' ')}`
      : `unknown (${c.reason})`,
  ]);
  rows.push(['verdict', r.verdict === 'ok' ? 'OK' : `warnings: ${d.warnings.join('; ')}`]);
  return table(rows);
}

function kindOf(path: string): 'vhd' | 'vhdx' {
  const ext = extname(path).toLowerCase();
  if (ext === '.vhd' || ext === '.vhdx') return ext.slice(1) as 'vhd' | 'vhdx';
  throw new DriverError('ERR_USAGE', `${path}: the output must end in .vhd or .vhdx`);
}

export const vhdCommand: Command = {
  name: 'vhd',
  async run(form: string, p: Parsed, io: Io): Promise<number> {
    const json = p.flag('json');
    const timestamp = outputTime(p.value('timestamp'), io.env ?? process.env);
    checkTime(timestamp, 'vhd');
    const force = p.flag('force');
    if (form === 'info') {
      const r = await vhdReport(p.operands[0]!);
      io.out(json ? toJson(r) : describeReport(r));
      return 0;
    }
    if (form === 'create') {
      const out = fileOutput(p.operands[0]!, 'a disk is written by position');
      const size = parseSize(p.value('size')!, '--size');
      const blockSize = p.value('block-size');
      const vhdxBlockSize = blockSize ? parseSize(blockSize, '--block-size') : undefined;
      const logical = p.value('logical-sector');
      if (logical !== undefined && logical !== '512' && logical !== '4096')
        throw new DriverError('ERR_USAGE', `--logical-sector ${JSON.stringify(logical)}: 512 or 4096`);
      const kind = kindOf(out);
      await checkOutput(out, force);
      if (kind === 'vhdx') {
        await createVhdx(out, {
          size,
          type: p.flag('fixed') ? 'fixed' : 'dynamic',
          overwrite: force,
          signal: io.signal,
          ...(vhdxBlockSize ? { blockSize: vhdxBlockSize } : {}),
          ...(logical ? { logicalSectorSize: Number(logical) as 512 | 4096 } : {}),
        });
      } else {
        // A fixed VHD: a sparse payload of `size` bytes and its footer, published whole.
        const footer = createFixedFooter(size, timestamp ? { timestamp } : {});
        const file = await DurableFile.create(out, { overwrite: force });
        try {
          await file.handle.truncate(size);
          await file.handle.write(footer, 0, footer.length, size);
          await file.commit(io.signal);
        } catch (e) {
          await file.discard();
          throw e;
        }
      }
      const r = await vhdReport(out);
      io.out(json ? toJson(r) : describeReport(r));
      return 0;
    }
    const [input, given] = p.operands;
    const out = fileOutput(given!, 'a disk is written by position');
    if (input === '-')
      throw new DriverError('ERR_USAGE', 'lcow vhd convert: the raw image must be a file (its size is needed first)');
    const blockSize = p.value('block-size');
    const vhdxBlockSize = blockSize ? parseSize(blockSize, '--block-size') : undefined;
    const format = kindOf(out);
    await checkOutput(out, force);
    const bar = progressBar(`converting ${input}`, io.progress);
    const result = await convertRawImage(input!, out, {
      format,
      overwrite: force,
      signal: io.signal,
      onProgress: (q) => bar.update(q),
      vhdx: {
        type: p.flag('fixed') ? 'fixed' : 'dynamic',
        ...(vhdxBlockSize ? { blockSize: vhdxBlockSize } : {}),
      },
      footer: { ...(p.flag('align-geometry') ? { align: 'geometry' } : {}), ...(timestamp ? { timestamp } : {}) },
    }).finally(() => bar.done());
    const r = await vhdReport(out);
    io.out(json ? toJson({ ...r, skippedZeroBytes: result.skippedZeroBytes }) : describeReport(r));
    return 0;
  },
};
