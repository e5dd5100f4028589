import { createHash } from 'node:crypto';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DurableError, DurableFile } from '@lcow/durable';
import { appendVerity, createFixedFooter } from '@lcow/vhd';
import { Ext4Error } from './errors.ts';
import { TarParser } from './tar/parser.ts';
import { Ext4Writer, type WriterSummary } from './writer/writer.ts';
import { HcsshimWriter } from './hcsshim/convert.ts';

/** hcsshim's own default maximum disk size (compactext4): it sizes the group-descriptor area. */
const HCSSHIM_DEFAULT_MAX = 16 * 2 ** 30;

function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex))
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `uuid ${JSON.stringify(uuid)}: not a UUID`);
  return Buffer.from(hex, 'hex');
}

/**
 * The dm-verity superblock's UUID for our layout: derived from the filesystem's (itself derived from the
 * content unless given), so the same tar and options give the same bytes, tree included.
 */
function verityUuidFor(fsUuid: string): string {
  const b = createHash('sha256').update('lcow dm-verity ').update(uuidBytes(fsUuid)).digest().subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function labelBytes(label: string): Uint8Array {
  const b = Buffer.from(label, 'utf8');
  if (b.length > 16)
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `label ${JSON.stringify(label)}: longer than 16 bytes`);
  const out = new Uint8Array(16);
  out.set(b);
  return out;
}

/** Progress of a conversion: bytes of (decompressed) tar read, entries seen. */
export interface ConvertProgress {
  bytes: number;
  entries: number;
}

/** Options of {@link convert}. The defaults are what Docker's LCOW driver asked hcsshim for, minus the footer. */
export interface ConvertOptions {
  /** `.wh.NAME` → 0:0 character device, `.wh..wh..opq` → `trusted.overlay.opaque=y` (default false). */
  convertWhiteouts?: boolean;
  /** Append a fixed VHD footer after the filesystem (and the verity tree; default false). */
  appendVhdFooter?: boolean;
  /**
   * Append a dm-verity superblock and hash tree after the filesystem (SHA-256, 4 KiB blocks, salt 32 zero
   * bytes unless given, as hcsshim's AppendDMVerity) and return its root digest (default false). Its UUID,
   * unless given: derived from the filesystem's in our layout (reproducible), random in hcsshim's (as hcsshim).
   */
  verity?: boolean | { salt?: Uint8Array; uuid?: string };
  /**
   * `'lcow'` (default): our layout. `'hcsshim'`: byte for byte what hcsshim's tar2ext4 writes for the same
   * tar and options, so that dm-verity root digests match a Windows host's (its deviations included; see
   * the README). Its `maximumDiskSize` default is hcsshim's, 16 GiB.
   */
  layout?: 'lcow' | 'hcsshim';
  /** `\\` in entry names and link targets becomes `/` (tars made on Windows; hcsshim's ConvertBackslash). */
  convertSlash?: boolean;
  /** Store files of at most 60 bytes in their inodes (inline_data; default false). */
  inlineData?: boolean;
  /** Largest filesystem, in bytes (default 128 GiB, as the LCOW driver); it sizes the descriptor table. */
  maximumDiskSize?: number;
  /**
   * Largest filesystem allowed for this conversion without changing its layout (a free-space budget, a
   * quota): past it, `ERR_DISK_FULL` naming the entry. With layout `'hcsshim'` it is checked at the end.
   */
  sizeLimit?: number;
  /** Filesystem UUID; default: derived from the content, so the same tar gives the same bytes. */
  uuid?: string;
  /**
   * Time stamp for the superblock and the VHD footer; default: 0 in the superblock, now in the footer. With
   * it, the same tar and options give the same bytes, footer included (`lcow tar2ext4` takes it from
   * `--timestamp` or `SOURCE_DATE_EPOCH`).
   */
  timestamp?: Date;
  /** Volume label (≤ 16 bytes). */
  label?: string;
  /**
   * fsync the image before it is renamed into place (default true): after a crash the output is either
   * absent or complete. Turn off only where the caller syncs itself or durability does not matter.
   */
  fsync?: boolean;
  signal?: AbortSignal;
  /**
   * Replace an existing file at a path `output` (default true); false refuses with `ERR_EXISTS`, checked at
   * once and again, atomically, when the finished image is put in place.
   */
  overwrite?: boolean;
  /** Whether input of no bytes at all converts to an empty image (default true, as hcsshim); false refuses it. */
  allowEmpty?: boolean;
  onProgress?: (p: ConvertProgress) => void;
  /** Recoverable oddities in the input (skipped AUFS metadata, a lone zero block…). */
  onWarning?: (w: { code: string; message: string }) => void;
}

/** What {@link convert} wrote. */
export interface ConvertResult extends Omit<WriterSummary, never> {
  /** Output size including the VHD footer, if any. */
  size: number;
  /** Bytes of tar read (after decompression). */
  tarBytes: number;
  /** Whether the input was gzip-compressed. */
  gzip: boolean;
  /** With `verity`: the root digest (hex) and where the hash area lies (after the filesystem). */
  rootDigest?: string;
  verityHashSize?: number;
}

const DEFAULT_MAX = 128 * 2 ** 30;

/**
 * A stream's or iterable's chunks. An abort ends the wait for the next one — a writer that stalls with its
 * pipe open would otherwise keep an aborted conversion waiting for ever — and a stream is destroyed then.
 * (One listener per wait, removed when the chunk comes: a race against one long-lived promise would keep
 * a reaction per chunk alive until the end.)
 */
async function* chunks(input: Readable | AsyncIterable<Uint8Array>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Uint8Array | string>;
  const next = (): Promise<IteratorResult<Uint8Array | string>> => {
    if (!signal) return it.next();
    return new Promise((resolve, reject) => {
      const onAbort = (): void =>
        reject(new Ext4Error('ERR_ABORTED', 'conversion aborted while waiting for input', { cause: signal.reason }));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      it.next().then(
        (r) => {
          signal.removeEventListener('abort', onAbort);
          resolve(r);
        },
        (e: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  };
  try {
    for (;;) {
      const r = await next();
      if (r.done) return;
      yield typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    }
  } finally {
    if (signal?.aborted && typeof (input as Readable).destroy === 'function') (input as Readable).destroy();
    else await it.return?.();
  }
}

const READ_CHUNK = 1 << 20;
/** Bytes read after the end-of-archive marker before the rest of the input is left unread. */
const MAX_TRAILING_BYTES = 1 << 20;
const READ_BUFFERS = 3;

/**
 * Reads a file in 1 MiB chunks through three reused buffers, up to two reads ahead while the current chunk
 * is parsed. A chunk is valid until the consumer asks for the next one (the parser never keeps one). A short
 * read ends the file (reads ahead cannot know where a later one would start). A pipe or character device
 * (`/dev/stdin`) is read one chunk at a time, from where it stands.
 */
async function* fileChunks(path: string): AsyncGenerator<Uint8Array> {
  const fh = await open(path, 'r');
  const reads: { buf: Uint8Array<ArrayBuffer>; done: Promise<number> }[] = [];
  let free: Uint8Array<ArrayBuffer>[] = [];
  let held: Uint8Array<ArrayBuffer> | null = null;
  try {
    const st = await fh.stat();
    const seekable = st.isFile() || st.isBlockDevice();
    free = Array.from({ length: seekable ? READ_BUFFERS : 2 }, () => new Uint8Array(READ_CHUNK));
    let pos = 0;
    const issue = (): void => {
      // A pipe gets one read at a time: two in flight could complete out of order.
      while (free.length > 0 && (seekable || reads.length === 0)) {
        const buf = free.pop()!;
        const done = fh.read(buf, 0, READ_CHUNK, seekable ? pos : null).then((r) => r.bytesRead);
        done.catch(() => {}); // awaited in order below
        reads.push({ buf, done });
        pos += READ_CHUNK;
      }
    };
    for (;;) {
      issue();
      const next = reads.shift()!;
      const n = await next.done;
      // The chunk handed out last time is free again: the consumer has asked for another.
      if (held) free.push(held);
      held = next.buf;
      if (n === 0) return;
      yield next.buf.subarray(0, n);
      if (seekable && n < READ_CHUNK) return;
    }
  } finally {
    // Reads still in flight finish before the descriptor is closed (it could be reused meanwhile).
    await Promise.allSettled(reads.map((r) => r.done));
    await fh.close();
    for (const buf of [...free, ...reads.map((r) => r.buf), ...(held ? [held] : [])]) release(buf);
  }
}

/**
 * Gives a buffer's memory back now rather than at the next full garbage collection: the buffers were made
 * at the start, so they live in V8's old generation, and the image's metadata (the peak of memory) is
 * written before a full collection comes. Moving the bytes to a fresh `ArrayBuffer` detaches this one;
 * the fresh one is young garbage, freed by the next scavenge (within a MiB of allocation).
 */
function release(buf: Uint8Array<ArrayBuffer>): void {
  if (buf.buffer.byteLength > 0) structuredClone(buf.buffer, { transfer: [buf.buffer] });
}

/** Compressions recognised by their magic bytes, to refuse them by name rather than as a bad tar header. */
const MAGIC: readonly (readonly [string, readonly number[]])[] = [
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  // "BZh", a block size digit, then the first block's magic (π's digits): a tar's first name cannot pass.
  ['bzip2', [0x42, 0x5a, 0x68, -1, 0x31, 0x41, 0x59, 0x26, 0x53, 0x59]],
  ['lz4', [0x04, 0x22, 0x4d, 0x18]],
];

function compressionOf(head: Uint8Array): string | null {
  for (const [name, magic] of MAGIC) if (magic.every((b, i) => b === -1 || head[i] === b)) return name;
  return null;
}

/** Peeks at the first bytes: gzip (1f 8b) is decompressed on the fly. */
async function* decompressed(input: AsyncIterable<Uint8Array>, flag: { gzip: boolean }): AsyncGenerator<Uint8Array> {
  const it = input[Symbol.asyncIterator]();
  // However the consumer stops (an error in a later entry, an abort), the source is told, so a file
  // it reads is closed now rather than by the garbage collector.
  try {
    let first = await it.next();
    while (!first.done && first.value.length === 0) first = await it.next();
    if (first.done) return;
    const rest = (async function* () {
      yield first.value;
      for (;;) {
        const n = await it.next();
        if (n.done) return;
        yield n.value;
      }
    })();
    const other = compressionOf(first.value);
    if (other)
      throw new Ext4Error(
        'ERR_TAR_FORMAT',
        `unsupported compression: the input is ${other}-compressed (gzip is read); decompress it first (\`lcow import\` reads zstd layers)`,
      );
    if (first.value[0] === 0x1f && first.value[1] === 0x8b) {
      flag.gzip = true;
      const gunzip = createGunzip({ chunkSize: 256 * 1024 });
      // zlib holds on to its input: hand it copies, since file chunks come from reused buffers.
      const src = Readable.from(
        (async function* () {
          for await (const c of rest) yield Buffer.from(c);
        })(),
        { objectMode: false },
      );
      src.on('error', (e) => gunzip.destroy(e));
      src.pipe(gunzip);
      try {
        for await (const c of gunzip) yield c as Buffer;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code?.startsWith('Z_'))
          throw new Ext4Error('ERR_TAR_FORMAT', `gzip stream: ${err.message}`, { cause: e });
        throw e;
      }
      return;
    }
    yield* rest;
  } finally {
    await it.return?.();
  }
}

/** The writer of the layout `options` ask for: ours, or hcsshim's byte for byte. */
function layoutWriter(
  fh: FileHandle,
  options: ConvertOptions,
): Pick<Ext4Writer, 'entry' | 'data'> & { finish(): Promise<WriterSummary> } {
  return options.layout === 'hcsshim'
    ? new HcsshimWriter(fh, {
        convertWhiteouts: options.convertWhiteouts ?? false,
        inlineData: options.inlineData ?? false,
        maximumDiskSize: options.maximumDiskSize ?? HCSSHIM_DEFAULT_MAX,
        ...(options.uuid ? { uuid: uuidBytes(options.uuid) } : {}),
        ...(options.label ? { volumeName: labelBytes(options.label) } : {}),
      })
    : new Ext4Writer(fh, {
        convertWhiteouts: options.convertWhiteouts ?? false,
        inlineData: options.inlineData ?? false,
        maximumDiskSize: options.maximumDiskSize ?? DEFAULT_MAX,
        ...(options.sizeLimit !== undefined ? { sizeLimit: options.sizeLimit } : {}),
        ...(options.uuid ? { uuid: options.uuid } : {}),
        ...(options.timestamp ? { timestamp: options.timestamp } : {}),
        ...(options.label ? { label: options.label } : {}),
        warn: (code, message) => options.onWarning?.({ code, message }),
      });
}

/**
 * Converts a tar (an OCI layer; plain or gzip; a path, a Readable or any async iterable of bytes) into a
 * compact read-only ext4 image, optionally followed by a fixed VHD footer. `output` is a path — written under a temporary name in the same folder and
 * renamed only when complete, so a failure leaves nothing behind — or an open file descriptor/handle,
 * which is truncated first and, on failure, truncated back to empty.
 */
export async function convert(
  input: string | Readable | AsyncIterable<Uint8Array>,
  output: string | number | FileHandle,
  options: ConvertOptions = {},
): Promise<ConvertResult> {
  const { signal } = options;
  signal?.throwIfAborted();
  let fh: FileHandle;
  let durable: DurableFile | null = null;
  if (typeof output === 'string') {
    if (
      options.overwrite === false &&
      (await lstat(output).then(
        () => true,
        () => false,
      ))
    )
      throw new Ext4Error('ERR_EXISTS', `${output}: already exists`);
    durable = await DurableFile.create(output, {
      fsync: options.fsync !== false,
      overwrite: options.overwrite !== false,
    });
    fh = durable.handle;
  } else if (typeof output === 'number') {
    // Node has no public FileHandle-from-fd; /proc/self/fd opens a second handle on the same file (Linux).
    fh = await open(`/proc/self/fd/${output}`, 'r+');
  } else fh = output;
  try {
    await fh.truncate(0);
    const writer = layoutWriter(fh, options);
    const slash = options.convertSlash === true;
    const parser = new TarParser({
      entry: (e) =>
        writer.entry(slash ? { ...e, path: e.path.replace(/\\/g, '/'), linkname: e.linkname.replace(/\\/g, '/') } : e),
      data: (c) => writer.data(c),
      warn: (code, message) => options.onWarning?.({ code, message }),
    });
    const flag = { gzip: false };
    let tarBytes = 0;
    let lastReport = 0;
    const source = typeof input === 'string' ? fileChunks(input) : chunks(input, signal);
    let trailing = 0;
    for await (const chunk of decompressed(source, flag)) {
      if (signal?.aborted)
        throw new Ext4Error('ERR_ABORTED', `conversion aborted after ${tarBytes} bytes`, { cause: signal.reason });
      if (parser.ended) {
        // Writers pad an archive to their record size (10 KiB for GNU tar) after its end marker; past a bound,
        // what follows is not the tar's, and an endless input (a pipe of zeros) must not keep us reading.
        trailing += chunk.length;
        if (trailing > MAX_TRAILING_BYTES) {
          options.onWarning?.({
            code: 'TAR_TRAILING_DATA',
            message: `more than ${MAX_TRAILING_BYTES} bytes follow the end of the archive: not read`,
          });
          break;
        }
        tarBytes += chunk.length;
        continue;
      }
      await parser.push(chunk);
      tarBytes += chunk.length;
      if (options.onProgress && tarBytes - lastReport >= 4 << 20) {
        lastReport = tarBytes;
        options.onProgress({ bytes: tarBytes, entries: parser.entries });
      }
    }
    if (tarBytes === 0 && options.allowEmpty === false)
      throw new Ext4Error('ERR_TAR_FORMAT', 'empty input: not a tar archive (not even its end marker)');
    parser.end();
    const summary = await writer.finish();
    if (options.sizeLimit !== undefined && summary.bytes > options.sizeLimit)
      throw new Ext4Error(
        'ERR_DISK_FULL',
        `the filesystem takes ${summary.bytes} bytes, more than the size limit (${options.sizeLimit} bytes)`,
      );
    let size = summary.bytes;
    let verity: { rootDigest: string; verityHashSize: number } | null = null;
    if (options.verity) {
      // hcsshim's layout keeps its random verity UUID (as hcsshim); ours is reproducible.
      const v = await appendVerity(fh, summary.bytes, {
        ...(options.layout === 'hcsshim' ? {} : { uuid: verityUuidFor(summary.uuid) }),
        ...(typeof options.verity === 'object' ? options.verity : {}),
        ...(signal ? { signal } : {}),
      });
      verity = { rootDigest: v.rootDigest, verityHashSize: v.hashSize };
      size += v.hashSize;
    }
    if (options.appendVhdFooter) {
      const footer = createFixedFooter(size, {
        ...(options.timestamp ? { timestamp: options.timestamp } : {}),
        uniqueId: summary.uuid,
      });
      await fh.write(footer, 0, footer.length, size);
      size += footer.length;
    }
    if (options.fsync !== false && !durable) await fh.sync();
    options.onProgress?.({ bytes: tarBytes, entries: parser.entries });
    // An abort still counts until the output is in place.
    if (signal?.aborted)
      throw new Ext4Error('ERR_ABORTED', `conversion aborted before its output was renamed into place`, {
        cause: signal.reason,
      });
    if (durable) {
      await durable.commit().catch((e: unknown) => {
        throw e instanceof DurableError && e.code === 'ERR_EXISTS'
          ? new Ext4Error('ERR_EXISTS', `${output as string}: already exists`, { cause: e })
          : e;
      });
      durable = null;
    }
    return { ...summary, size, tarBytes, gzip: flag.gzip, ...(verity ?? {}) };
  } catch (e) {
    if (durable) await durable.discard();
    else await fh.truncate(0).catch(() => {});
    throw e;
  } finally {
    if (typeof output === 'number') await fh.close().catch(() => {});
  }
}
