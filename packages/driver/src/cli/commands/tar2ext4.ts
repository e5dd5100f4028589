import { fstatSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { convert } from '@lcow/ext4';
import { DriverError } from '../../errors.ts';
import { flag, option, positional } from '../args.ts';
import { formatBytes, parseSize, toJson } from '../format.ts';
import { progressBar } from '../progress.ts';
import { SPECS } from '../registry.ts';
import type { Command, Io } from '../types.ts';

const USAGE = SPECS.tar2ext4.usage[0];

/**
 * Standard input as the converter reads it fastest: a pipe through `/dev/stdin` (reused 1 MiB buffers, no
 * stream machinery), anything else (a file keeps its offset; a socket cannot be reopened) as the stream.
 */
function stdinSource(): string | Readable {
  try {
    if (process.platform === 'linux' && fstatSync(0).isFIFO()) return '/dev/stdin';
  } catch {
    // no usable descriptor 0: the stream reports it
  }
  return process.stdin;
}

export const tar2ext4Command: Command = {
  name: 'tar2ext4',
  summary: SPECS.tar2ext4.summary,
  usage: [USAGE],
  async run(argv: string[], io: Io): Promise<number> {
    const args = [...argv];
    const json = flag(args, '--json');
    const vhd = flag(args, '--vhd');
    const whiteouts = flag(args, '--whiteouts');
    const inline = flag(args, '--inline-data');
    const noFsync = flag(args, '--no-fsync');
    const verity = flag(args, '--verity');
    const input = option(args, '-i') ?? '-';
    const output = option(args, '-o');
    const maxSize = option(args, '--max-size');
    const layout = option(args, '--layout') ?? 'lcow';
    if (layout !== 'lcow' && layout !== 'hcsshim')
      throw new DriverError('ERR_USAGE', `--layout ${JSON.stringify(layout)}: lcow or hcsshim`);
    const convertSlash = flag(args, '--convert-slash');
    const uuid = option(args, '--uuid');
    const force = flag(args, '--force');
    positional(args, 0, USAGE);
    // Every argument is checked before any work (a bad --uuid used to fail after the whole tar).
    if (!output) throw new DriverError('ERR_USAGE', `-o OUT is required; usage: ${USAGE}`);
    if (output === '-')
      throw new DriverError(
        'ERR_USAGE',
        '-o -: an ext4 image is written by position (its metadata last, at the front), so it cannot go to a pipe',
      );
    if (uuid !== undefined && !/^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(uuid))
      throw new DriverError('ERR_USAGE', `--uuid ${JSON.stringify(uuid)}: not a UUID`);
    const maximumDiskSize = maxSize ? parseSize(maxSize, '--max-size') : undefined;
    const total = input === '-' ? 0 : (await stat(input)).size;
    const source = input === '-' ? stdinSource() : input;
    const bar = progressBar(`tar2ext4 ${input === '-' ? 'stdin' : input}`, io.progress);
    const started = process.hrtime.bigint();
    const r = await convert(source, output, {
      appendVhdFooter: vhd,
      convertWhiteouts: whiteouts,
      inlineData: inline,
      fsync: !noFsync,
      verity,
      ...(maximumDiskSize !== undefined ? { maximumDiskSize } : {}),
      layout,
      convertSlash,
      ...(uuid ? { uuid } : {}),
      overwrite: force,
      allowEmpty: false,
      signal: io.signal,
      // Compressed input: progress counts tar bytes, so the total is unknown.
      onProgress: (p) => bar.update({ done: p.bytes, total: Math.max(total, p.bytes) }),
      onWarning: (w) => io.err(`lcow: warning: ${w.code}: ${w.message}`),
    }).finally(() => bar.done());
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    // The digest goes to stderr too, so scripts can take it while stdout carries the report.
    if (r.rootDigest) io.err(r.rootDigest);
    if (json) io.out(toJson({ ...r, bytes: r.size, filesystemBytes: r.bytes, entries: r.entries, seconds }));
    else {
      io.out(
        `${output}: ${formatBytes(r.size)} ext4${vhd ? ' + VHD footer' : ''}, ${r.entries} entries (${r.files} files, ${r.directories} dirs, ` +
          `${r.symlinks} symlinks, ${r.hardlinks} hard links, ${r.whiteouts} whiteouts) from ${formatBytes(r.tarBytes)} of tar` +
          `${r.gzip ? ' (gzip)' : ''} in ${seconds.toFixed(2)} s; uuid ${r.uuid}`,
      );
    }
    return 0;
  },
};
