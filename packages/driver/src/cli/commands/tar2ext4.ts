import { createReadStream, fstatSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DurableFile } from '@lcow/durable';
import { convert, rootDigest } from '@lcow/ext4';
import { createFixedFooter } from '@lcow/vhd';
import { DriverError } from '../../errors.ts';
import type { Parsed } from '../args.ts';
import { checkTime, fileOutput, formatBytes, outputTime, parseSize, quoted, toJson } from '../format.ts';
import { checkOutput } from '../output.ts';
import { progressBar } from '../progress.ts';
import type { Command, Io } from '../types.ts';

/**
 * Standard input as the converter reads it fastest: a pipe through `/dev/stdin` (reused 1 MiB buffers, no
 * stream machinery), anything else (a file keeps its offset; a socket cannot be reopened) as the stream.
 */
function stdinSource(io: Io): string | Readable {
  if (io.stdin) return io.stdin as Readable;
  try {
    if (process.platform === 'linux' && fstatSync(0).isFIFO()) return '/dev/stdin';
  } catch {
    // no usable descriptor 0: the stream reports it
  }
  return process.stdin;
}

/**
 * The size progress can count to: a plain tar file's; unknown (-1) for standard input and for gzip, whose
 * progress counts the tar inside.
 */
async function knownTotal(input: string): Promise<number> {
  if (input === '-') return -1;
  const fh = await open(input, 'r');
  try {
    const head = Buffer.alloc(2);
    await fh.read(head, 0, 2, 0);
    return head[0] === 0x1f && head[1] === 0x8b ? -1 : (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** The options the two special modes (`--digest`, `--only-vhd`) cannot take. */
const CONVERSION_ONLY = ['whiteouts', 'inline-data', 'verity', 'uuid', 'convert-slash'] as const;

function refuseWith(p: Parsed, mode: string, names: readonly string[]): void {
  const bad = names.filter((n) => p.has(n));
  if (bad.length) throw new DriverError('ERR_USAGE', `--${mode} takes no ${bad.map((n) => `--${n}`).join(', ')}`);
}

/** hcsshim's `-only-vhd`: the input is an image already; copy it and append a fixed VHD footer. */
async function onlyVhd(
  input: string,
  output: string,
  p: Parsed,
  io: Io,
  opts: { timestamp: Date | undefined; limit: number },
): Promise<number> {
  refuseWith(p, 'only-vhd', [...CONVERSION_ONLY, 'vhd', 'layout']);
  const { timestamp, limit } = opts;
  const source = input === '-' ? (stdinSource(io) as Readable | string) : input;
  const file = await DurableFile.create(output, { overwrite: p.flag('force'), fsync: !p.flag('no-fsync') });
  let size = 0;
  try {
    const stream = typeof source === 'string' ? createReadStream(source, { highWaterMark: 1 << 20 }) : source;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      io.signal.throwIfAborted();
      // An endless input (a device, a pipe that never ends) stops at the limit, not at a full disk.
      if (size + chunk.length > limit)
        throw new DriverError(
          'ERR_INVALID_ARGUMENT',
          `${input === '-' ? 'standard input' : input}: more than ${formatBytes(limit)} (--max-size); nothing written`,
        );
      await file.handle.write(chunk, 0, chunk.length, size);
      size += chunk.length;
    }
    if (size === 0 || size % 512 !== 0)
      throw new DriverError(
        'ERR_INVALID_ARGUMENT',
        `${input === '-' ? 'standard input' : input}: ${size} bytes; a VHD payload is a whole, non-zero number of 512-byte sectors`,
      );
    const footer = createFixedFooter(size, timestamp ? { timestamp } : {});
    await file.handle.write(footer, 0, footer.length, size);
    await file.commit(io.signal);
  } catch (e) {
    await file.discard();
    throw (e as { code?: string }).code === 'ERR_EXISTS'
      ? new DriverError('ERR_EXISTS', `${output}: already exists (--force to replace it)`, { cause: e })
      : e;
  }
  const r = { output, size: size + 512, payloadBytes: size };
  io.out(p.flag('json') ? toJson(r) : `${output}: ${formatBytes(size)} image + VHD footer`);
  return 0;
}

export const tar2ext4Command: Command = {
  name: 'tar2ext4',
  async run(_form: string, p: Parsed, io: Io): Promise<number> {
    const input = p.value('input') ?? '-';
    const output = p.value('output');
    // hcsshim's one-dash spellings bring its layout with them, unless --layout says otherwise.
    const hcsshimSpelling = [...p.aliasesUsed].some((a) => /^-[a-z][a-z-]+$/.test(a));
    const layout = p.value('layout') ?? (hcsshimSpelling ? 'hcsshim' : 'lcow');
    if (layout !== 'lcow' && layout !== 'hcsshim')
      throw new DriverError('ERR_USAGE', `--layout ${quoted(layout)}: lcow or hcsshim`);
    // Every argument is checked before any work (a bad --uuid used to fail after the whole tar).
    const uuid = p.value('uuid');
    if (uuid !== undefined && !UUID.test(uuid))
      throw new DriverError('ERR_USAGE', `--uuid ${quoted(uuid)}: not a UUID`);
    const maxSize = p.value('max-size');
    const maximumDiskSize = maxSize ? parseSize(maxSize, '--max-size') : undefined;
    const timestamp = outputTime(p.value('timestamp'), io.env ?? process.env);
    checkTime(timestamp, p.flag('vhd') || p.flag('only-vhd') ? 'vhd' : 'ext4');
    if (p.flag('digest')) {
      refuseWith(p, 'digest', ['output', 'vhd', 'verity', 'only-vhd', 'inline-data', 'uuid', 'timestamp', 'force']);
      if (input !== '-') await stat(input);
      // hcsshim's ConvertAndComputeRootDigest: whiteouts converted, 128 GiB maximum, nothing written.
      const r = await rootDigest(input === '-' ? stdinSource(io) : input, {
        layout,
        maximumDiskSize: maximumDiskSize ?? 128 * 2 ** 30,
        convertWhiteouts: true,
        convertSlash: p.flag('convert-slash'),
        signal: io.signal,
      });
      io.out(p.flag('json') ? toJson({ rootDigest: r.rootDigest, layout, dataBytes: r.dataBytes }) : r.rootDigest);
      return 0;
    }
    if (!output) throw new DriverError('ERR_USAGE', 'lcow tar2ext4: -o OUT is required (see lcow tar2ext4 --help)');
    fileOutput(output, 'an ext4 image is written by position (its metadata last, at the front)');
    if (input !== '-') await stat(input);
    await checkOutput(output, p.flag('force'));
    if (p.flag('only-vhd'))
      return onlyVhd(input, output, p, io, { timestamp, limit: maximumDiskSize ?? 128 * 2 ** 30 });
    const total = await knownTotal(input);
    const source = input === '-' ? stdinSource(io) : input;
    const bar = progressBar(`tar2ext4 ${input === '-' ? 'stdin' : input}`, io.progress);
    const started = process.hrtime.bigint();
    const vhd = p.flag('vhd');
    const r = await convert(source, output, {
      appendVhdFooter: vhd,
      convertWhiteouts: p.flag('whiteouts'),
      inlineData: p.flag('inline-data'),
      fsync: !p.flag('no-fsync'),
      verity: p.flag('verity'),
      ...(maximumDiskSize !== undefined ? { maximumDiskSize } : {}),
      layout,
      convertSlash: p.flag('convert-slash'),
      ...(uuid ? { uuid } : {}),
      ...(timestamp ? { timestamp } : {}),
      overwrite: p.flag('force'),
      allowEmpty: false,
      signal: io.signal,
      onProgress: (q) => bar.update({ done: q.bytes, total: total < 0 ? -1 : Math.max(total, q.bytes) }),
      onWarning: (w) => io.err(`lcow: warning: ${w.code}: ${w.message}`),
    }).finally(() => bar.done());
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    // The digest goes to stderr too, so scripts can take it while stdout carries the report.
    if (r.rootDigest) io.err(r.rootDigest);
    // The library's own names: `size` the output file, `bytes` the filesystem in it, `tarBytes` the tar read.
    if (p.flag('json')) io.out(toJson({ output, layout, ...r, seconds }));
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
