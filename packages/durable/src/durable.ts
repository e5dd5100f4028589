// Crash-safe output: the bytes go to a hidden temporary file in the target's folder, created exclusively
// (never through a symlink an attacker planted at that name), then fsync, rename over the target and fsync of
// the folder. After a crash the target holds the old content or the new one, whole; a failure or an abort
// leaves neither a partial target nor the temporary file.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { DurableError } from './errors.ts';

export interface DurableOptions {
  /** Permission bits of the new file (default 0o644, before the umask). */
  mode?: number;
  /** fsync the file and its folder at commit (default true). */
  fsync?: boolean;
  /** Replace an existing target (default true); false publishes only if the target does not exist. */
  overwrite?: boolean;
  /** The temporary file's path (default {@link tempPathFor}); it must be in the target's folder. */
  tempPath?: string;
}

/**
 * A hidden name beside `path`: `.NAME-TAG-RANDOM.tmp`. Listings skip it, and it cannot be guessed in advance.
 * `tag` lets an owner find its own leftovers (default: the process id).
 */
export function tempPathFor(path: string, tag = `p${process.pid}`): string {
  return join(dirname(path), `.${basename(path)}-${tag}-${randomBytes(8).toString('hex')}.tmp`);
}

/**
 * fsync of a folder, so that a rename or an unlink in it survives a crash. Windows cannot open a folder for
 * this (NTFS journals its metadata itself), and some file systems (FUSE, network) refuse: both are no-ops.
 */
export async function fsyncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } catch (e) {
    if (!['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  } finally {
    await fh.close();
  }
}

/** Renames `from` over `to`, or links it there (failing with ERR_EXISTS if `to` exists) and removes `from`. */
async function place(from: string, to: string, overwrite: boolean): Promise<void> {
  if (overwrite) return rename(from, to);
  await link(from, to).catch((e: NodeJS.ErrnoException) => {
    throw e.code === 'EEXIST' ? new DurableError('ERR_EXISTS', `${to}: already exists`, { cause: e }) : e;
  });
  await rm(from, { force: true });
}

/**
 * Puts a finished temporary file that another writer made (a VHDX library, a child process) in place as
 * {@link DurableFile.commit} does: fsync it, rename (or link) it to `path`, fsync the folder. On failure the
 * temporary file is removed.
 */
export async function publishFile(
  tempPath: string,
  path: string,
  opts: Pick<DurableOptions, 'fsync' | 'overwrite'> = {},
): Promise<void> {
  try {
    if (opts.fsync !== false) {
      const fh = await open(tempPath, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
      await fh.sync().finally(() => fh.close());
    }
    await place(tempPath, path, opts.overwrite !== false);
  } catch (e) {
    await rm(tempPath, { force: true });
    throw e;
  }
  if (opts.fsync !== false) await fsyncDir(dirname(path));
}

/** A file being written under a temporary name: {@link commit} puts it in place, {@link discard} removes it. */
export class DurableFile {
  /** Where the file goes at commit. */
  readonly path: string;
  /** Where it is written until then. */
  readonly tempPath: string;
  /** Open for reading and writing at any position. */
  readonly handle: FileHandle;
  readonly #opts: DurableOptions;
  #state: 'open' | 'committed' | 'discarded' = 'open';

  private constructor(path: string, tempPath: string, handle: FileHandle, opts: DurableOptions) {
    this.path = path;
    this.tempPath = tempPath;
    this.handle = handle;
    this.#opts = opts;
  }

  /** Creates the temporary file (exclusively, not following a symlink) beside `path`. */
  static async create(path: string, opts: DurableOptions = {}): Promise<DurableFile> {
    const tempPath = opts.tempPath ?? tempPathFor(path);
    const flags = constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0);
    const handle = await open(tempPath, flags, opts.mode ?? 0o644);
    return new DurableFile(path, tempPath, handle, opts);
  }

  /**
   * fsync, close, then rename over the target (or, with `overwrite: false`, link to it, failing with
   * `ERR_EXISTS` when it exists), then fsync the folder. On failure the temporary file is removed.
   */
  async commit(signal?: AbortSignal): Promise<void> {
    if (this.#state !== 'open') throw new DurableError('ERR_CLOSED', `${this.path}: already ${this.#state}`);
    try {
      if (this.#opts.fsync !== false) await this.handle.sync();
      await this.handle.close();
      if (signal?.aborted)
        throw new DurableError('ERR_ABORTED', `${this.path}: aborted before it was put in place`, {
          cause: signal.reason,
        });
      await place(this.tempPath, this.path, this.#opts.overwrite !== false);
      this.#state = 'committed';
    } catch (e) {
      await this.discard();
      throw e;
    }
    if (this.#opts.fsync !== false) await fsyncDir(dirname(this.path));
  }

  /** Closes and removes the temporary file; the target is untouched. Safe to call more than once. */
  async discard(): Promise<void> {
    if (this.#state === 'committed') return;
    this.#state = 'discarded';
    await this.handle.close().catch(() => {});
    await rm(this.tempPath, { force: true });
  }
}

/** Writes `data` (bytes, text or a stream of chunks) to `path` durably: all of it or nothing. */
export async function writeFileDurable(
  path: string,
  data: string | Uint8Array | AsyncIterable<Uint8Array>,
  opts: DurableOptions & { signal?: AbortSignal } = {},
): Promise<void> {
  const f = await DurableFile.create(path, opts);
  try {
    if (typeof data === 'string' || data instanceof Uint8Array) await f.handle.writeFile(data);
    else
      for await (const chunk of data) {
        opts.signal?.throwIfAborted();
        await f.handle.write(chunk);
      }
  } catch (e) {
    await f.discard();
    throw e;
  }
  await f.commit(opts.signal);
}
