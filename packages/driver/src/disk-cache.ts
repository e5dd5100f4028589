// The data root's blank disks, as the original kept them: `cache/sandbox.vhdx` (a 20 GiB dynamic sandbox)
// and `cache/scratch.vhdx` (a utility VM's scratch), made once and copied for every new sandbox or VM —
// the fast path on Windows, where a copy of a few megabytes beats formatting. The original formatted them
// inside a utility VM; our mkfs makes them on the host, so no VM boots to fill the cache.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { mkfs } from '@lcow/ext4';
import { tempPathFor, publishFile } from '@lcow/durable';
import { ownerAlive, ownerOf, ownerToken } from '@lcow/layerstore';

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

/**
 * Sandboxes made ahead of need, for a service that starts containers: `cache/spare/<kind>-<random>.vhdx`,
 * each made under a temporary name, fsynced and renamed, so a spare that has its name is whole. A new
 * container's sandbox is a spare renamed into its layer folder — a rename instead of a format on the path a
 * container start waits for — and the next spare is made after, in the background. Several processes may
 * share the folder: a rename that loses to another process's is simply the next spare. `kind` (size and
 * type) is part of the name, so a data root reopened with another sandbox size never takes a wrong one.
 */
/** How long takes must pause before the next spare is made (a container start takes two within ~100 ms). */
const FILL_DELAY_MS = 300;

export class SpareSandboxes {
  readonly dir: string;
  readonly #kind: string;
  readonly #keep: number;
  readonly #make: (path: string, signal: AbortSignal) => Promise<void>;
  readonly #prepare: (path: string) => Promise<void>;
  readonly #stop = new AbortController();
  #filling: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** Spares taken, and spares made (for tests and status). */
  readonly counts = { taken: 0, made: 0 };

  constructor(
    dir: string,
    kind: string,
    keep: number,
    /** Makes a sandbox at a (temporary) path. */
    make: (path: string, signal: AbortSignal) => Promise<void>,
    /** Then, once it has its name, whatever its attach will need (the backend's look at it). */
    prepare: (path: string) => Promise<void> = async () => {},
  ) {
    this.dir = dir;
    this.#kind = kind;
    this.#keep = keep;
    this.#make = make;
    this.#prepare = prepare;
  }

  /** The spares ready now (whole, of this kind). */
  async ready(): Promise<string[]> {
    // Plain files only: a link planted under a spare's name is never moved into a layer and attached.
    const entries = await readdir(this.dir, { withFileTypes: true }).catch(() => []);
    return entries
      .filter((e) => e.isFile() && e.name.startsWith(`${this.#kind}-`) && e.name.endsWith('.vhdx'))
      .map((e) => join(this.dir, e.name));
  }

  /**
   * Moves a spare to `dest` (in the same filesystem) and starts making the next; false when none was left
   * (the caller makes its sandbox itself).
   */
  async take(dest: string): Promise<boolean> {
    for (const spare of await this.ready()) {
      try {
        await rename(spare, dest);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // another process took it
        throw e;
      }
      this.counts.taken++;
      this.#fillLater();
      return true;
    }
    this.#fillLater();
    return false;
  }

  /**
   * Making a spare formats in this thread: started at once, it would slow the very container start that
   * took the last one (the next sandbox, the mounts). So it starts once takes have paused a moment.
   */
  #fillLater(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.fill();
    }, FILL_DELAY_MS);
    this.#timer.unref();
  }

  /** Makes spares in the background until `keep` are ready; one filler at a time. Errors stop it quietly. */
  fill(): void {
    if (this.#filling || this.#stop.signal.aborted) return;
    this.#filling = (async () => {
      await mkdir(this.dir, { recursive: true });
      await this.#sweep();
      while (!this.#stop.signal.aborted && (await this.ready()).length < this.#keep) {
        const path = join(this.dir, `${this.#kind}-${randomBytes(8).toString('hex')}.vhdx`);
        const tmp = tempPathFor(path, `o${ownerToken()}`);
        try {
          await this.#make(tmp, this.#stop.signal);
          await publishFile(tmp, path, { overwrite: false });
        } catch (e) {
          await rm(tmp, { force: true });
          throw e;
        }
        await this.#prepare(path);
        this.counts.made++;
      }
    })()
      .catch(() => {
        // A spare is an optimisation: when one cannot be made, a container's sandbox is made when it starts.
      })
      .finally(() => {
        this.#filling = null;
      });
  }

  /** Removes the temporary files of spares whose maker was killed (`.NAME-o<owner>-<random>.tmp`). */
  async #sweep(): Promise<void> {
    for (const n of await readdir(this.dir).catch(() => [] as string[])) {
      const owner = n.startsWith('.') ? ownerOf(n) : null;
      if (owner !== null && !ownerAlive(owner)) await rm(join(this.dir, n), { force: true });
    }
  }

  /** Waits for the spare being made, stopping the filler (the spares ready stay for the next process). */
  async close(): Promise<void> {
    this.#stop.abort();
    if (this.#timer) clearTimeout(this.#timer);
    await this.#filling;
  }
}
