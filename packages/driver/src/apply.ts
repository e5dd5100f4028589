// applyDiff's conversion: tar → ext4 + VHD footer, in a child process by default (as the original
// re-exec'd itself: a bad tar or a crash in the converter cannot take the daemon down, and parallel
// applies use every core), inline with `LCOW_NOREEXEC=1`.
import { existsSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';
import { open, readdir, rm, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DMVERITY_VHD, Ext4Error, convert, rootDigest, type ConvertOptions, type Ext4ErrorCode } from '@lcow/ext4';
import { decompress, type FileRange } from '@lcow/image';
import { DriverError } from './errors.ts';

/** A byte range of a file that holds a layer (plain or gzip): a layer inside an image tarball. */
export type { FileRange };

/** What applyDiff converts: a tar file, a range of a file, or a stream. */
export type LayerSource = string | FileRange | Readable | AsyncIterable<Uint8Array>;

/** What one conversion reports back. */
export interface ApplyResult {
  /** Bytes of the image (`layer.vhd`). */
  size: number;
  /** Bytes of regular-file content in the tar: what `applyDiff` returns, as moby's drivers do. */
  fileBytes: number;
  rootDigest?: string;
  /** `sha256:…` of the uncompressed tar (its OCI diff id), when asked for. */
  diffId?: string;
  /** With `hcsshim`: bytes of the filesystem alone (where a verity tree starts). */
  dataBytes?: number;
}

const CHUNK = 4 << 20;

/** A {@link FileRange} — not a stream that happens to have a `path` (an fs.ReadStream has one). */
export function isFileRange(s: LayerSource): s is FileRange {
  return (
    typeof s === 'object' &&
    !(Symbol.asyncIterator in s) &&
    typeof (s as FileRange).path === 'string' &&
    Number.isSafeInteger((s as FileRange).offset) &&
    Number.isSafeInteger((s as FileRange).length)
  );
}

/**
 * A file range in 4 MiB reads through two reused buffers, the next read in flight while the current chunk is
 * used: a chunk is valid until the one after it is asked for. (A fresh 4 MiB buffer per read costs the
 * kernel ten times the read itself in page faults: 2.2 s against 0.2 s for 2.3 GB here.)
 */
async function* rangeChunks(r: FileRange): AsyncGenerator<Uint8Array> {
  const fh = await open(r.path, 'r');
  try {
    const bufs = [new Uint8Array(Math.min(CHUNK, r.length)), new Uint8Array(Math.min(CHUNK, r.length))];
    let which = 0;
    const read = (at: number): Promise<{ bytesRead: number }> =>
      fh.read(bufs[which]!, 0, Math.min(CHUNK, r.length - at), r.offset + at);
    let at = 0;
    let pending = at < r.length ? read(at) : null;
    while (pending) {
      const { bytesRead } = await pending;
      if (bytesRead === 0)
        throw new DriverError('ERR_APPLY', `${r.path}: ends inside the layer at byte ${r.offset + at}`);
      const cur = bufs[which]!.subarray(0, bytesRead);
      at += bytesRead;
      which ^= 1;
      pending = at < r.length ? read(at) : null;
      yield cur;
    }
  } finally {
    await fh.close();
  }
}

/**
 * The uncompressed tar of `source` (gunzipped when it starts with the gzip magic) with its sha256 taken on
 * the way, for a diff id check.
 */
function hashed(source: Exclude<LayerSource, string>): { tar: AsyncIterable<Uint8Array>; digest: () => string } {
  const hash = createHash('sha256');
  const reused = isFileRange(source);
  const raw: AsyncIterable<Uint8Array> = reused ? rangeChunks(source) : source;
  return {
    tar: (async function* () {
      // gzip and zstd found by their magic; xz and bzip2 refused by name.
      for await (const c of decompress(raw, null, { reusedInput: reused })) {
        hash.update(c);
        yield c;
      }
    })(),
    digest: () => `sha256:${hash.digest('hex')}`,
  };
}

/** The converter options every layer gets: overlay whiteouts, a fixed-VHD footer, fsync. */
export function layerOptions(verity: boolean, sizeLimit?: number, signal?: AbortSignal): ConvertOptions {
  return {
    convertWhiteouts: true,
    appendVhdFooter: true,
    verity,
    fsync: true,
    signal,
    ...(sizeLimit !== undefined ? { sizeLimit } : {}),
  };
}

/** What every conversion of a layer is told. */
export interface LayerConvertOptions {
  verity: boolean;
  /** Report the uncompressed tar's sha256 as `diffId`. */
  digest?: boolean;
  /** Largest image allowed (the layer size limit, the free space): `ERR_DISK_FULL` past it. */
  sizeLimit?: number;
  signal?: AbortSignal;
  /**
   * Convert as hcsshim's dmverity-vhd does for a confidential-container layer (hcsshim's layout and
   * 128 GiB maximum, whiteouts, footer with a zero time stamp), so root digests equal a Windows host's.
   */
  hcsshim?: boolean;
  /** Compute only the dm-verity root digest; `out` is not written (`size` is then the filesystem's). */
  digestOnly?: boolean;
}

/**
 * Converts in this process. With `digest`, the uncompressed tar's sha256 is reported as `diffId` (a file
 * path is then read through the same hashing path as a stream).
 */
export async function convertInline(source: LayerSource, out: string, opts: LayerConvertOptions): Promise<ApplyResult> {
  let input: string | AsyncIterable<Uint8Array>;
  let digest: (() => string) | null = null;
  if (typeof source === 'string' && !opts.digest)
    input = source; // the converter's own 4 MiB reader
  else {
    const h = hashed(
      typeof source === 'string' ? { path: source, offset: 0, length: (await stat(source)).size } : source,
    );
    input = h.tar;
    digest = h.digest;
  }
  if (opts.digestOnly) {
    const d = await rootDigest(input, {
      ...(opts.hcsshim ? DMVERITY_VHD : { convertWhiteouts: true }),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return {
      size: d.dataBytes,
      fileBytes: d.fileBytes,
      rootDigest: d.rootDigest,
      ...(digest ? { diffId: digest() } : {}),
    };
  }
  const r = await convert(
    input,
    out,
    opts.hcsshim
      ? {
          ...DMVERITY_VHD,
          verity: opts.verity,
          fsync: true,
          ...(opts.sizeLimit !== undefined ? { sizeLimit: opts.sizeLimit } : {}),
          ...(opts.signal ? { signal: opts.signal } : {}),
        }
      : layerOptions(opts.verity, opts.sizeLimit, opts.signal),
  );
  return {
    ...(opts.hcsshim ? { dataBytes: r.bytes } : {}),
    size: r.size,
    fileBytes: r.fileBytes,
    ...(r.rootDigest ? { rootDigest: r.rootDigest } : {}),
    ...(digest ? { diffId: digest() } : {}),
  };
}

/** How to start the child: the built `.js` under node, or the `.ts` source under tsx (tests, development). */
function childCommand(): { execPath: string; args: string[] } {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  // From the build, the bundled child (dist/bin, made with the command) when it is there: one file to load
  // instead of a module graph, ≈ 50 ms less per layer.
  const bundled = ext === '.js' ? fileURLToPath(new URL('./bin/apply-child.js', import.meta.url)) : null;
  const script =
    bundled !== null && existsSync(bundled) ? bundled : fileURLToPath(new URL(`./apply-child${ext}`, import.meta.url));
  // tsx is found from this file, not from the working directory (which may be anywhere).
  // A young generation of 1 MiB: the converter's garbage is short-lived and what survives is the tree it
  // keeps anyway; V8's default lets the heap grow by tens of MB for nothing (measured: 150 → 100 MB peak RSS on
  // a 1.1 GB tar, and no slower). One V8 helper thread instead of four: this process has one thread of
  // JavaScript and the thread pool's copies; each idle helper costs about 1 MB (measured: 3 MB less, no slower).
  const v8 = ['--max-semi-space-size=1', '--v8-pool-size=1'];
  const args =
    ext === '.ts'
      ? [
          ...v8,
          '--conditions=@lcow/source',
          '--import',
          pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href,
          script,
        ]
      : [...v8, script];
  return { execPath: process.execPath, args };
}

/**
 * Converts in a child process: the tar goes to its stdin, the image to `out`, the result back as one JSON
 * line. An abort kills the child; its error (a typed `Ext4Error` there) comes back with code and message.
 */
export async function convertInChild(
  source: LayerSource,
  out: string,
  opts: LayerConvertOptions & { what: string },
): Promise<ApplyResult> {
  // Loaded when a child is needed: small layers never start one, and child_process brings net and dgram.
  const { spawn } = await import('node:child_process');
  const { execPath, args } = childCommand();
  // A file (or a range of one) is opened by the child itself (4 MiB reads, no pipe); a stream goes to its stdin.
  const file = typeof source === 'string' || isFileRange(source) ? source : null;
  const tar = file === null ? (source as AsyncIterable<Uint8Array>) : null;
  const job = JSON.stringify({
    out,
    verity: opts.verity,
    digest: opts.digest ?? false,
    file,
    ...(opts.sizeLimit !== undefined ? { sizeLimit: opts.sizeLimit } : {}),
    ...(opts.hcsshim ? { hcsshim: true } : {}),
    ...(opts.digestOnly ? { digestOnly: true } : {}),
  });
  return new Promise((resolve, reject) => {
    const child = spawn(execPath, [...args, job], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '8' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const onAbort = (): void => void child.kill('SIGKILL');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    // The child may stop reading at any moment (an entry refused, the size limit reached): its answer is
    // given the moment it exits, whatever the feed is doing — blocked on a full pipe, or waiting on a slow
    // source. The feed stops at its next step (leaving the loop returns a generator, destroys a stream);
    // a source that never gives another chunk is its owner's to end (an import aborts its downloads).
    let exited = false;
    let fedError: unknown = null;
    const feed = (async () => {
      if (tar === null) return; // stdin stays open while the child runs: it is the child's line to us
      const stdinGone = new Promise<void>((r) => child.stdin.once('close', r));
      try {
        for await (const c of tar) {
          if (exited || child.stdin.destroyed) break;
          if (!child.stdin.write(c)) await Promise.race([new Promise((r) => child.stdin.once('drain', r)), stdinGone]);
        }
        if (!exited) child.stdin.end();
      } catch (e) {
        if (!exited) {
          fedError = e;
          child.kill('SIGKILL');
        }
      }
    })();
    child.stdin.on('error', () => {}); // the child stopped reading: its own error says why
    child.on('error', (e) =>
      reject(new DriverError('ERR_APPLY', `${opts.what}: cannot start the converter: ${e.message}`)),
    );
    child.on('exit', () => {
      exited = true;
      child.stdin.destroy();
    });
    child.on('close', (code, sig) => {
      exited = true;
      opts.signal?.removeEventListener('abort', onAbort);
      const settle = (): void => {
        const line = stdout.trim().split('\n').pop() ?? '';
        let msg: { ok?: ApplyResult; error?: { code?: string; message?: string } } = {};
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          // fall through
        }
        // The child's own refusal first: it is why everything else stopped (letting go of a source stream
        // may make its owner abort, after the fact).
        if (msg.error && !fedError) return reject(childError(msg.error, opts.what));
        if (opts.signal?.aborted) return reject(opts.signal.reason);
        if (fedError) return reject(fedError);
        if (code === 0 && msg.ok) return resolve(msg.ok);
        reject(
          new DriverError(
            'ERR_APPLY',
            `${opts.what}: the converter exited with ${sig ?? code}${stderr ? `: ${stderr.trim().slice(-2000)}` : ''}`,
          ),
        );
      };
      // A success is one only once the whole source has been read (its digest may still fail); the child
      // read its stdin to the end, so the feed is done or about to be.
      if (code === 0) return void feed.then(settle);
      // A child that was killed (an abort, a stop of the daemon, the kernel's OOM killer) had no chance to
      // remove the temporary file it writes the image through: its name carries the child's pid.
      void removeTempsOf(out, child.pid).then(settle, settle);
    });
  });
}

/** Removes the temporary files process `pid` made beside `out` (`tempPathFor`'s `.NAME-pPID-….tmp`). */
async function removeTempsOf(out: string, pid: number | undefined): Promise<void> {
  if (!out || pid === undefined) return;
  const prefix = `.${basename(out)}-p${pid}-`;
  const dir = dirname(out);
  for (const name of await readdir(dir).catch(() => [] as string[]))
    if (name.startsWith(prefix) && name.endsWith('.tmp')) await rm(join(dir, name), { force: true });
}

const EXT4_CODES: ReadonlySet<string> = new Set<Ext4ErrorCode>([
  'ERR_EXT4_CORRUPT',
  'ERR_EXT4_UNSUPPORTED',
  'ERR_TAR_FORMAT',
  'ERR_DISK_FULL',
  'ERR_INVALID_ARGUMENT',
  'ERR_ABORTED',
  'ERR_INTERNAL',
]);

/**
 * The child's error as the caller would have got it inline: an `Ext4Error` with the converter's own code
 * (`ERR_TAR_FORMAT` naming the entry, `ERR_DISK_FULL`…), a `DriverError` for the rest — the layer named once.
 */
function childError(e: { code?: string; message?: string }, what: string): Error {
  const message = `${what}: ${e.message ?? 'conversion failed'}`;
  if (e.code && EXT4_CODES.has(e.code)) return new Ext4Error(e.code as Ext4ErrorCode, message);
  if (e.code === 'ERR_VERIFICATION') return new DriverError(e.code, message);
  if (e.code && /^E[A-Z0-9]+$/.test(e.code)) {
    // An operating-system error of the child (an input it cannot open): its errno once, at the end.
    const text = (e.message ?? '').replace(new RegExp(`^${e.code}: `), '');
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT') return new Ext4Error('ERR_DISK_FULL', `${what}: ${text}`);
    const mapped = ({ ENOENT: 'ERR_NOT_FOUND', EISDIR: 'ERR_IS_A_DIRECTORY', ENOTDIR: 'ERR_NOT_A_DIRECTORY' } as const)[
      e.code as 'ENOENT'
    ];
    return new DriverError(mapped ?? 'ERR_APPLY', `${what}: ${text} (${e.code})`);
  }
  return new DriverError('ERR_APPLY', e.code ? `${what}: ${e.code}: ${e.message}` : message);
}

/**
 * Layers whose tar (uncompressed) is at most this size are converted in this process: a child's start costs
 * more than converting them (60–100 ms built, most of a second from the sources), and an image of many small
 * layers paid it per layer. Nothing that small can hurt this process — 4 MiB of tar holds at most 8192 entries
 * — and the size is what the tar turned out to be, never what a header or a manifest claims.
 */
export const INLINE_TAR_BYTES = 4 << 20;

/**
 * The whole source, when its tar ends within {@link INLINE_TAR_BYTES}: the raw (maybe compressed) chunks
 * read. Otherwise the source to give the child instead: the chunks read so far, then the rest (a file or a
 * range is simply read again by the child).
 */
async function peekSmall(
  source: LayerSource,
  signal?: AbortSignal,
): Promise<{ small: Uint8Array[] | null; rest: LayerSource }> {
  let raw: AsyncIterable<Uint8Array>;
  if (typeof source === 'string' || isFileRange(source)) {
    const r = typeof source === 'string' ? { path: source, offset: 0, length: (await stat(source)).size } : source;
    // Compressed or not, a file larger than the limit is not a small tar (a few bytes of gzip framing aside).
    if (r.length > INLINE_TAR_BYTES) return { small: null, rest: source };
    const copies: Uint8Array[] = [];
    for await (const c of rangeChunks(r)) copies.push(c.slice()); // rangeChunks reuses its buffers
    raw = chunksOf(copies);
  } else raw = source;
  const it = raw[Symbol.asyncIterator]();
  const read: Uint8Array[] = [];
  let ended = false;
  // A source that stops sending is given up at an abort, as the child's feed is.
  let fail: () => void = () => {};
  const aborted = new Promise<never>((_, reject) => {
    fail = (): void => reject(new DriverError('ERR_ABORTED', 'applyDiff: aborted'));
  });
  aborted.catch(() => {});
  if (signal?.aborted) fail();
  signal?.addEventListener('abort', fail, { once: true });
  const tap = (async function* () {
    for (;;) {
      let n: IteratorResult<Uint8Array>;
      try {
        n = await Promise.race([it.next(), aborted]);
      } catch (e) {
        throw new FromSource(e);
      }
      if (n.done) return void (ended = true);
      read.push(n.value);
      yield n.value;
    }
  })();
  let total = 0;
  try {
    for await (const c of decompress(tap, null)) {
      total += c.length;
      if (total > INLINE_TAR_BYTES) break;
    }
  } catch (e) {
    // Aborted or unreadable: the source is let go (a stream destroyed), as the child's feed does.
    void it.return?.()?.catch(() => {});
    throw e;
  } finally {
    signal?.removeEventListener('abort', fail);
  }
  if (ended && total <= INLINE_TAR_BYTES) return { small: read, rest: source };
  if (typeof source === 'string' || isFileRange(source)) return { small: null, rest: source };
  const rest = (async function* () {
    yield* read;
    for (let n = await it.next(); !n.done; n = await it.next()) yield n.value;
  })();
  return { small: null, rest };
}

/** An error of the source itself (or an abort) met while peeking: the caller's, passed on as it is. */
class FromSource {
  readonly error: unknown;
  constructor(error: unknown) {
    this.error = error;
  }
}

/**
 * Converts `source` into `out`: a small tar ({@link INLINE_TAR_BYTES}) here, anything larger in a child;
 * everything here with `LCOW_NOREEXEC=1`, everything in a child with `LCOW_REEXEC=always`.
 */
export async function convertLayer(
  source: LayerSource,
  out: string,
  opts: LayerConvertOptions & { what: string },
): Promise<ApplyResult> {
  if (process.env.LCOW_NOREEXEC === '1') return convertInline(source, out, opts);
  if (process.env.LCOW_REEXEC === 'always') return convertInChild(source, out, opts);
  // Named and coded as the child's errors are: the layer first.
  const named = (e: unknown): unknown => {
    const err = e as { code?: unknown; message?: string };
    return typeof err.code === 'string' ? childError({ code: err.code, message: err.message ?? '' }, opts.what) : e;
  };
  let peeked: Awaited<ReturnType<typeof peekSmall>>;
  try {
    peeked = await peekSmall(source, opts.signal);
  } catch (e) {
    // The source's own failure (a blob that does not hash to its digest, a download cut) is the caller's
    // error, as when the child's feed fails; a tar that does not decompress is the converter's.
    throw e instanceof FromSource ? e.error : named(e);
  }
  if (peeked.small === null) return convertInChild(peeked.rest, out, opts);
  try {
    return await convertInline(chunksOf(peeked.small), out, opts);
  } catch (e) {
    throw named(e);
  }
}

async function* chunksOf(chunks: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* chunks;
}
