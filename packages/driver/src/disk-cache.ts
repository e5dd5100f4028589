// The data root's blank disks, as the original kept them: `cache/sandbox.vhdx` (a 20 GiB dynamic sandbox)
// and `cache/scratch.vhdx` (a utility VM's scratch), made once and copied for every new sandbox or VM —
// the fast path on Windows, where a copy of a few megabytes beats formatting. The original formatted them
// inside a utility VM; our mkfs makes them on the host, so no VM boots to fill the cache.
import { constants } from 'node:fs';
import { copyFile, rm, stat } from 'node:fs/promises';
import { mkfs } from '@lcow/ext4';
import { tempPathFor, publishFile } from '@lcow/durable';

const GiB = 2 ** 30;

/** The size of the cached blanks (the original's default and minimum sandbox and scratch size). */
export const CACHED_DISK_GIB = 20;

/** A blank disk kept in one cache file and copied out on demand. */
export class BlankDisk {
  readonly cacheFile: string;
  #making: Promise<boolean> | null = null;
  /** Copies made from the cache, and times the cache had to be made (for tests and status). */
  readonly counts = { copies: 0, made: 0 };

  constructor(cacheFile: string) {
    this.cacheFile = cacheFile;
  }

  /**
   * Makes the cache file if it is missing: a 20 GiB dynamic VHDX with an empty ext4, published whole (a
   * crash leaves either no cache or a complete one). Another process making it at the same moment is fine:
   * the first to publish wins, the other's copy is dropped. Returns whether this call made it.
   */
  ensure(signal?: AbortSignal): Promise<boolean> {
    this.#making ??= (async () => {
      if (await exists(this.cacheFile)) return false;
      try {
        await mkfs(this.cacheFile, {
          size: CACHED_DISK_GIB * GiB,
          format: 'vhdx',
          vhdxType: 'dynamic',
          overwrite: false,
          ...(signal ? { signal } : {}),
        });
      } catch (e) {
        if ((e as { code?: string }).code === 'ERR_EXISTS') return false;
        throw e;
      }
      this.counts.made++;
      return true;
    })().finally(() => {
      this.#making = null;
    });
    return this.#making;
  }

  /**
   * A copy of the blank at `dest`, made from the cache (which is made first when missing): through a
   * temporary name and renamed, so `dest` is whole or absent; a clone where the filesystem can.
   */
  async copyTo(dest: string, opts: { overwrite: boolean; signal?: AbortSignal }): Promise<void> {
    await this.ensure(opts.signal);
    const tmp = tempPathFor(dest);
    try {
      await copyFile(this.cacheFile, tmp, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
      opts.signal?.throwIfAborted();
      await publishFile(tmp, dest, { overwrite: opts.overwrite });
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    this.counts.copies++;
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      throw e;
    },
  );
}
