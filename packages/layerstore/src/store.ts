import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { publishFile } from '@lcow/durable';
import { fsyncDir, tempNameFor, writeFileAtomic } from './atomic.ts';
import { MAX_CHAIN_DEPTH, formatLayerChain, parseLayerChain } from './chain.ts';
import { LayerStoreError } from './errors.ts';
import { HostLock, SharedKeyedLock } from './lock.ts';
import { ownerAlive, ownerOf, ownerToken } from './owner.ts';
import { dataRootPaths, layerPaths, validateLayerId, type DataRootPaths, type LayerPaths } from './paths.ts';

/** Windows paths compare without regard to case or slash direction. */
function samePathOnWindows(a: string, b: string): boolean {
  return process.platform === 'win32' && a.replace(/\//g, '\\').toLowerCase() === b.replace(/\//g, '\\').toLowerCase();
}

/** What a layer folder holds. */
export interface LayerInfo {
  id: string;
  dir: string;
  /** `layer`: a read-only `layer.vhd`; `sandbox`: a `sandbox.vhdx`; `empty`: created, nothing applied yet. */
  kind: 'layer' | 'sandbox' | 'empty';
  /** The disk file (`layer.vhd` preferred, as the original), or null. */
  file: string | null;
  /** Its size in bytes (0 when empty). */
  size: number;
  /** Absolute parent folders, nearest first (`layerchain.json`). */
  parents: string[];
  /** The ids those folders name. */
  parentIds: string[];
}

/** What {@link LayerStore.cleanup} removed. */
export interface CleanupReport {
  removing: string[];
  partial: string[];
  tempFiles: string[];
}

const TMP_DIR = 'tmp';
const NEW_PREFIX = 'new-';
/** Temporary files in a layer folder: ours (`.NAME-o<owner>-<hex>.tmp`), and the older `.NAME.<hex12>.tmp`. */
const TEMP_FILE = /^\..+\.tmp$/;

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Whether a temporary name belongs to a process that is gone (or to nobody we can name). */
function abandoned(name: string): boolean {
  const owner = ownerOf(name);
  return owner === null || !ownerAlive(owner);
}

/** {@link LayerStore.scratchLock} for data root `root` (absolute), for a backend that holds no store. */
export function scratchLock(root: string, vmId: string): HostLock {
  return new HostLock(`${root}\0scratch\0${vmId}`);
}

/**
 * The data root of the LCOW driver (DESIGN.md's on-disk contract, byte-compatible with the original):
 * `<root>/<id>/{layer.vhd | sandbox.vhdx, layerchain.json}`, `cache/`, `scratch/`, and `<id>-removing` while a
 * layer is deleted. Every change is crash-safe: a layer folder is built under `tmp/new-*` and renamed into
 * place whole; files are written under temporary names, fsynced and renamed; removal renames first and
 * deletes second. After a crash, {@link LayerStore.open} and {@link LayerStore.cleanup} finish or undo
 * what was half done — a layer is there complete, or not at all. Operations on one id are serialised
 * (per-id locks); different ids proceed in parallel.
 */
export class LayerStore {
  readonly paths: DataRootPaths;
  readonly #locks: SharedKeyedLock;
  /** Deletions of `<id>-removing` folders that {@link remove} left running, by id. */
  readonly #deleting = new Map<string, Promise<void>>();

  private constructor(paths: DataRootPaths) {
    this.paths = paths;
    this.#locks = new SharedKeyedLock(paths.root);
  }

  /**
   * Opens (creating when needed) the data root and its `cache/`, `scratch/` and `tmp/` folders. Stale
   * per-VM scratch disks (no VM outlives the process that started it) and partial creations are deleted.
   */
  static async open(root: string): Promise<LayerStore> {
    const paths = dataRootPaths(root);
    const rootErr = (why: string, cause?: unknown): LayerStoreError =>
      new LayerStoreError('ERR_DATA_ROOT', `data root ${paths.root}: ${why}`, cause ? { cause } : undefined);
    try {
      // Root only, as the original: the layers hold whole images' files (a shadow file among them).
      await mkdir(paths.root, { recursive: true, mode: 0o700 });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') throw rootErr(`cannot be created (${code ?? (e as Error).message})`, e);
    }
    // The root itself may be reached through a link (a data disk mounted elsewhere); its own folders may
    // not: a `tmp/` linked to /etc would have cleanup delete /etc's files.
    for (const d of [paths.root, paths.cache, paths.scratchDir, join(paths.root, TMP_DIR)]) {
      await mkdir(d, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw rootErr(`cannot create ${d} (${e.code ?? e.message})`, e);
      });
      const st = await (d === paths.root ? stat(d) : lstat(d));
      if (!st.isDirectory())
        throw rootErr(
          d === paths.root
            ? 'is not a directory'
            : `${d} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}; lcow never follows links inside its data root`,
        );
    }
    const store = new LayerStore(paths);
    await store.#clearTmp();
    await store.#clearScratch();
    return store;
  }

  /**
   * The lock a service VM holds on its scratch disk `scratch/<vmId>.vhdx` for as long as it runs (across
   * processes): opening a data root deletes only scratch disks whose lock is free.
   */
  scratchLock(vmId: string): HostLock {
    return scratchLock(this.paths.root, vmId);
  }

  async #clearScratch(): Promise<void> {
    for (const e of await readdir(this.paths.scratchDir, { withFileTypes: true })) {
      const vmId = e.name.replace(/\.vhdx$/i, '');
      const release = await this.scratchLock(vmId).tryAcquire();
      if (!release) continue; // its VM is running
      try {
        await rm(join(this.paths.scratchDir, e.name), { recursive: true, force: true }); // a link: only the link
      } finally {
        await release();
      }
    }
  }

  /** Removes what dead processes left under `tmp/` (partial creations); live processes' work stays. */
  async #clearTmp(): Promise<string[]> {
    const tmp = join(this.paths.root, TMP_DIR);
    const gone: string[] = [];
    for (const f of await readdir(tmp)) {
      if (!abandoned(f)) continue;
      await rm(join(tmp, f), { recursive: true, force: true });
      gone.push(f);
    }
    return gone;
  }

  /** The paths of one layer (the id validated: `ERR_INVALID_LAYER_ID`). */
  layer(id: string): LayerPaths {
    return layerPaths(this.paths.root, id);
  }

  /**
   * Runs `fn` holding layer `id`'s lock — what the store's own operations on that id take — against every
   * other holder in this process and in every other process on this machine. Re-entrant: `fn` may call
   * the store's operations on `id`.
   */
  async withLock<T>(id: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.#locks.run(validateLayerId(id), fn, signal);
  }

  /** Whether layer `id` exists (and is not being removed). A link in its place is `ERR_LAYER_CORRUPT`. */
  async exists(id: string): Promise<boolean> {
    const p = this.layer(id);
    try {
      const st = await lstat(p.dir);
      if (st.isDirectory()) return true;
      throw new LayerStoreError(
        'ERR_LAYER_CORRUPT',
        `layer ${id}: ${p.dir} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}; remove it`,
      );
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  /** Ids of every layer, sorted. */
  async list(): Promise<string[]> {
    const out: string[] = [];
    for (const e of await readdir(this.paths.root, { withFileTypes: true })) {
      if (!e.isDirectory()) continue; // files, and links (never followed)
      try {
        validateLayerId(e.name);
      } catch {
        continue; // cache, scratch, tmp, <id>-removing
      }
      out.push(e.name);
    }
    return out.sort();
  }

  /** The parent folders of layer `id`, nearest first. */
  async chain(id: string): Promise<string[]> {
    const p = this.layer(id);
    let text: string;
    try {
      const st = await lstat(p.layerChain);
      if (!st.isFile()) throw new LayerStoreError('ERR_LAYER_CHAIN_CORRUPT', `${p.layerChain}: not a regular file`);
      text = await readFile(p.layerChain, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!(await this.exists(id)))
        throw new LayerStoreError('ERR_LAYER_NOT_FOUND', `layer ${id}: not found in ${this.paths.root}`);
      return []; // a folder without a chain file: the original wrote none for some layers
    }
    const chain = parseLayerChain(text, p.layerChain);
    // Every parent is a layer folder of this data root: a chain naming /etc would have the driver mount,
    // read and attach whatever is there.
    for (const [i, dir] of chain.entries()) {
      const name = basename(dir.replace(/\\/g, '/'));
      let ok = false;
      try {
        ok = this.layer(name).dir === dir || samePathOnWindows(this.layer(name).dir, dir);
      } catch {
        ok = false;
      }
      if (!ok)
        throw new LayerStoreError(
          'ERR_LAYER_CHAIN_CORRUPT',
          `${p.layerChain}: entry ${i} (${JSON.stringify(dir)}) is not a layer folder of ${this.paths.root}`,
        );
    }
    return chain;
  }

  /** What layer `id` holds: its disk file (`layer.vhd` preferred), size, kind and parents. */
  async info(id: string): Promise<LayerInfo> {
    const p = this.layer(id);
    if (!(await this.exists(id)))
      throw new LayerStoreError('ERR_LAYER_NOT_FOUND', `layer ${id}: not found in ${this.paths.root}`);
    const parents = await this.chain(id);
    let kind: LayerInfo['kind'] = 'empty';
    let file: string | null = null;
    let size = 0;
    for (const [k, f] of [
      ['layer', p.layerVhd],
      ['sandbox', p.sandboxVhdx],
    ] as const) {
      try {
        const st = await lstat(f);
        if (!st.isFile())
          throw new LayerStoreError(
            'ERR_LAYER_CORRUPT',
            `layer ${id}: ${f} is ${st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? 'a directory' : 'not a regular file'}; remove the layer`,
          );
        size = st.size;
        kind = k;
        file = f;
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    return {
      id,
      dir: p.dir,
      kind,
      file,
      size,
      parents,
      parentIds: parents.map((d) => basename(d.replace(/\\/g, '/'))),
    };
  }

  /**
   * A new empty folder under the data root's `tmp/`, named for this process: work for a layer that does
   * not exist yet (a conversion running ahead of its parent's) goes there, then into {@link create}'s
   * `populate` by rename (same filesystem). Removed by {@link cleanup} or the next {@link open} once this
   * process is gone; the caller removes it when done.
   */
  async stagingDir(): Promise<string> {
    const dir = join(this.paths.root, TMP_DIR, `${NEW_PREFIX}o${ownerToken()}-${randomBytes(8).toString('hex')}`);
    await mkdir(dir);
    return dir;
  }

  /**
   * Creates layer `id` on `parent` (or none): its folder with `layerchain.json` (`null` without a parent,
   * else the parent's folder followed by the parent's chain), plus whatever `populate` writes into the new
   * folder before it appears (a sandbox's `sandbox.vhdx`). The folder appears whole, or not at all.
   * `ERR_LAYER_EXISTS` if `id` exists, `ERR_LAYER_NOT_FOUND` if the parent does not.
   */
  create(id: string, parent: string | null, populate?: (dir: string) => Promise<void>): Promise<LayerInfo> {
    return this.withLock(id, async () => {
      const p = this.layer(id);
      if (await this.exists(id))
        throw new LayerStoreError('ERR_LAYER_EXISTS', `layer ${id}: already exists in ${this.paths.root}`);
      // The id's earlier layer is gone for good (its rename was durable): finish deleting its folder first,
      // whether this process's background deletion or an interrupted one's, so the name is free again.
      await this.#finishRemoval(id);
      let chain: string[] = [];
      if (parent) {
        const pp = this.layer(parent);
        if (!(await this.exists(parent)))
          throw new LayerStoreError(
            'ERR_LAYER_NOT_FOUND',
            `parent layer ${parent} of ${id}: not found in ${this.paths.root}`,
          );
        chain = [pp.dir, ...(await this.chain(parent))];
        if (chain.length > MAX_CHAIN_DEPTH)
          throw new LayerStoreError(
            'ERR_CHAIN_TOO_DEEP',
            `layer ${id}: parent ${parent} already has ${chain.length - 1} parents; at most ${MAX_CHAIN_DEPTH} are allowed`,
          );
      }
      const tmp = join(this.paths.root, TMP_DIR, `${NEW_PREFIX}o${ownerToken()}-${randomBytes(8).toString('hex')}`);
      await mkdir(tmp);
      try {
        await writeFileAtomic(join(tmp, basename(p.layerChain)), formatLayerChain(chain));
        if (populate) await populate(tmp);
        await fsyncDir(tmp);
        await rename(tmp, p.dir).catch((e: NodeJS.ErrnoException) => {
          // Another writer of this data root that takes no lock (an older lcow, a person) made it meanwhile.
          if (e.code === 'ENOTEMPTY' || e.code === 'EEXIST' || e.code === 'ENOTDIR' || e.code === 'EISDIR')
            throw new LayerStoreError('ERR_LAYER_EXISTS', `layer ${id}: already exists in ${this.paths.root}`, {
              cause: e,
            });
          throw e;
        });
      } catch (e) {
        await rm(tmp, { recursive: true, force: true });
        throw e;
      }
      await fsyncDir(this.paths.root);
      return this.info(id);
    });
  }

  /**
   * Replaces file `name` (`layer.vhd`, `sandbox.vhdx`, …) of layer `id` atomically: `produce` writes a
   * temporary path in the layer folder; it is then fsynced and renamed over `name`. On failure nothing
   * changes and the temporary file is removed.
   */
  async commitFile(id: string, name: string, produce: (tmpPath: string) => Promise<void>): Promise<string> {
    if (name !== basename(name) || name.startsWith('.') || name === '')
      throw new LayerStoreError(
        'ERR_INVALID_LAYER_ID',
        `file name ${JSON.stringify(name)}: one plain name in the layer folder`,
      );
    return this.withLock(id, async () => {
      const p = this.layer(id);
      if (!(await this.exists(id)))
        throw new LayerStoreError('ERR_LAYER_NOT_FOUND', `layer ${id}: not found in ${this.paths.root}`);
      const target = join(p.dir, name);
      const tmp = tempNameFor(target);
      try {
        await produce(tmp);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
      await publishFile(tmp, target);
      return target;
    });
  }

  /** Rewrites `layerchain.json` of layer `id` atomically. */
  writeChain(id: string, parents: readonly string[]): Promise<void> {
    return this.withLock(id, async () => {
      const p = this.layer(id);
      if (!(await this.exists(id)))
        throw new LayerStoreError('ERR_LAYER_NOT_FOUND', `layer ${id}: not found in ${this.paths.root}`);
      // Validate what we write exactly as what we read.
      parseLayerChain(formatLayerChain(parents), p.layerChain);
      await writeFileAtomic(p.layerChain, formatLayerChain(parents));
    });
  }

  /**
   * Removes layer `id` in two phases: the folder is renamed to `<id>-removing` and the rename made durable
   * (from then on the layer is gone for every reader, after a crash too), then deleted. With `background`,
   * the deletion — most of the time, a sandbox's extents freed — runs after this returns: {@link settled}
   * waits for it, a later {@link create} of the same id finishes it first, and a crash leaves the folder to
   * {@link cleanup}. `ERR_LAYER_NOT_FOUND` if it does not exist.
   */
  remove(id: string, opts: { background?: boolean } = {}): Promise<void> {
    return this.withLock(id, async () => {
      const p = this.layer(id);
      if (!(await exists(p.dir)))
        throw new LayerStoreError('ERR_LAYER_NOT_FOUND', `layer ${id}: not found in ${this.paths.root}`);
      await this.#finishRemoval(id);
      await rename(p.dir, p.removing);
      await fsyncDir(this.paths.root);
      const deletion = rm(p.removing, { recursive: true, force: true });
      if (!opts.background) return deletion;
      const tracked = deletion
        .catch(() => {}) // what is left is cleanup's: the layer itself is gone already
        .finally(() => {
          if (this.#deleting.get(id) === tracked) this.#deleting.delete(id);
        });
      this.#deleting.set(id, tracked);
    });
  }

  /** Waits for the deletions that background {@link remove}s left running. */
  async settled(): Promise<void> {
    while (this.#deleting.size > 0) await Promise.all(this.#deleting.values());
  }

  /** Deletes `<id>-removing` if it is there: this process's own deletion awaited, anyone else's finished. */
  async #finishRemoval(id: string): Promise<void> {
    await this.#deleting.get(id);
    await rm(this.layer(id).removing, { recursive: true, force: true });
  }

  /**
   * Finishes what crashes left: deletes `<id>-removing` folders, partial creations under `tmp/`, and
   * temporary files inside layer folders.
   */
  async cleanup(): Promise<CleanupReport> {
    await this.settled();
    const report: CleanupReport = { removing: [], partial: await this.#clearTmp(), tempFiles: [] };
    for (const e of await readdir(this.paths.root, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      if (e.name.endsWith('-removing') && !e.isSymbolicLink()) {
        await rm(join(this.paths.root, e.name), { recursive: true, force: true });
        report.removing.push(e.name);
        continue;
      }
      let id: string;
      try {
        id = validateLayerId(e.name);
      } catch {
        continue;
      }
      await this.withLock(id, async () => {
        const dir = join(this.paths.root, id);
        for (const f of await readdir(dir).catch(() => [] as string[])) {
          if (!TEMP_FILE.test(f) || !abandoned(f)) continue;
          await rm(join(dir, f), { force: true });
          report.tempFiles.push(join(id, f));
        }
      });
    }
    if (report.removing.length > 0) await fsyncDir(this.paths.root);
    return report;
  }
}
