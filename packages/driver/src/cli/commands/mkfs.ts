import { mkfs } from '@lcow/ext4';
import { DriverError } from '../../errors.ts';
import type { Parsed } from '../args.ts';
import { checkTime, fileOutput, formatBytes, outputTime, parseSize, toJson } from '../format.ts';
import { checkOutput } from '../output.ts';
import type { Command, Io } from '../types.ts';

export const mkfsCommand: Command = {
  name: 'mkfs',
  async run(_form: string, p: Parsed, io: Io): Promise<number> {
    const out = fileOutput(p.operands[0]!, 'a filesystem is written by position');
    const fixed = p.flag('fixed');
    const blockSize = p.value('block-size');
    const vhdx = out.toLowerCase().endsWith('.vhdx');
    if ((fixed || blockSize) && !vhdx)
      throw new DriverError('ERR_USAGE', '--fixed and --block-size apply to a .vhdx output');
    const reserved = p.value('reserved');
    const reservedPct = reserved === undefined ? 5 : Number(reserved);
    if (!Number.isFinite(reservedPct) || reservedPct < 0 || reservedPct > 50)
      throw new DriverError('ERR_USAGE', `--reserved ${reserved}: a percentage from 0 to 50`);
    const ratio = p.value('inode-ratio');
    const label = p.value('label');
    const uuid = p.value('uuid');
    const timestamp = outputTime(p.value('timestamp'), io.env ?? process.env);
    checkTime(timestamp, 'ext4');
    const size = parseSize(p.value('size')!, '--size');
    const vhdxBlockSize = blockSize ? parseSize(blockSize, '--block-size') : undefined;
    const inodeRatio = ratio ? parseSize(ratio, '--inode-ratio') : undefined;
    await checkOutput(out, p.flag('force'));
    const started = process.hrtime.bigint();
    const r = await mkfs(out, {
      size,
      vhdxType: fixed ? 'fixed' : 'dynamic',
      ...(vhdxBlockSize ? { vhdxBlockSize } : {}),
      checksums: p.flag('uninit-bg') ? 'uninit_bg' : 'metadata_csum',
      ...(inodeRatio ? { inodeRatio } : {}),
      reservedRatio: reservedPct / 100,
      ...(label !== undefined ? { label } : {}),
      ...(uuid ? { uuid } : {}),
      ...(timestamp ? { timestamp } : {}),
      overwrite: p.flag('force'),
      signal: io.signal,
    });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (p.flag('json')) io.out(toJson({ output: out, ...r, seconds }));
    else {
      io.out(
        `${out}: ext4 of ${formatBytes(r.size)}${vhdx ? ` in a ${fixed ? 'fixed' : 'dynamic'} VHDX` : ''}, ` +
          `${r.groups} groups, ${r.inodes} inodes, ${formatBytes(r.bytesWritten)} written in ${(seconds * 1000).toFixed(0)} ms; uuid ${r.uuid}`,
      );
    }
    return 0;
  },
};
