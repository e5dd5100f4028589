import { mkfs } from '@lcow/ext4';
import { DriverError } from '../../errors.ts';
import { flag, option, positional } from '../args.ts';
import { formatBytes, parseSize, toJson } from '../format.ts';
import { SPECS } from '../registry.ts';
import type { Command, Io } from '../types.ts';

const USAGE = SPECS.mkfs.usage[0];

export const mkfsCommand: Command = {
  name: 'mkfs',
  summary: SPECS.mkfs.summary,
  usage: [USAGE],
  async run(argv: string[], io: Io): Promise<number> {
    const args = [...argv];
    const json = flag(args, '--json');
    const fixed = flag(args, '--fixed');
    const force = flag(args, '--force');
    const uninitBg = flag(args, '--uninit-bg');
    const size = option(args, '--size');
    const blockSize = option(args, '--block-size');
    const ratio = option(args, '--inode-ratio');
    const reserved = option(args, '--reserved');
    const label = option(args, '--label');
    const uuid = option(args, '--uuid');
    const [out] = positional(args, 1, USAGE);
    if (!size) throw new DriverError('ERR_USAGE', `--size is required; usage: ${USAGE}`);
    const vhdx = out!.toLowerCase().endsWith('.vhdx');
    if ((fixed || blockSize) && !vhdx)
      throw new DriverError('ERR_USAGE', '--fixed and --block-size apply to a .vhdx output');
    const reservedPct = reserved === undefined ? 5 : Number(reserved);
    if (!Number.isFinite(reservedPct)) throw new DriverError('ERR_USAGE', `--reserved ${reserved}: a percentage`);
    const started = process.hrtime.bigint();
    const r = await mkfs(out!, {
      size: parseSize(size, '--size'),
      vhdxType: fixed ? 'fixed' : 'dynamic',
      ...(blockSize ? { vhdxBlockSize: parseSize(blockSize, '--block-size') } : {}),
      checksums: uninitBg ? 'uninit_bg' : 'metadata_csum',
      ...(ratio ? { inodeRatio: parseSize(ratio, '--inode-ratio') } : {}),
      reservedRatio: reservedPct / 100,
      ...(label !== undefined ? { label } : {}),
      ...(uuid ? { uuid } : {}),
      overwrite: force,
      signal: io.signal,
    });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (json) io.out(toJson({ ...r, seconds }));
    else {
      io.out(
        `${out}: ext4 of ${formatBytes(r.size)}${vhdx ? ` in a ${fixed ? 'fixed' : 'dynamic'} VHDX` : ''}, ` +
          `${r.groups} groups, ${r.inodes} inodes, ${formatBytes(r.bytesWritten)} written in ${(seconds * 1000).toFixed(0)} ms; uuid ${r.uuid}`,
      );
    }
    return 0;
  },
};
