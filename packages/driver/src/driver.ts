// LcowDriver: moby's graph-driver contract over the LCOW on-disk layout (DESIGN.md), composed of
// `@lcow/layerstore` (folders, chains, crash-safe commits), `@lcow/svm-pool` (VMs, attach and mount
// refcounts), `@lcow/ext4` (conversion, mkfs, reading) and a backend that plays the service VM.
import { constants } from 'node:fs';
import { open, readdir, rename, rm, statfs, writeFile } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { Readable } from 'node:stream';
import {
  Ext4Error,
  Ext4Fs,
  TAR_END,
  encodeTarHeader,
  exportChunks,
  mkfs,
  tarPadding,
  whiteoutName,
  type TarHeaderSpec,
} from '@lcow/ext4';
import {
  KeyedLock,
  LayerStore,
  dataRootPaths,
  LayerStoreError,
  writeFileAtomic,
  type CleanupReport,
  type LayerInfo,
} from '@lcow/layerstore';
import { SvmPool, type DiskRequest, type Lease, type PoolSnapshot } from '@lcow/svm-pool';
import { convertLayer, type ApplyResult, type LayerSource } from './apply.ts';
import { defaultBackend, hostBackend, inprocBackend, unsupportedBackend, type Backend } from './backends/backend.ts';
import { hostBackendAvailable } from './backends/host.ts';
import { UnionView, type UnionLayer } from './fs/union-view.ts';
import { changesSize, layerChanges, subtree, treeChanges, type Change, type Tree } from './changes.ts';
import { BlankDisk, CACHED_DISK_GIB, SpareSandboxes } from './disk-cache.ts';
import { DriverError } from './errors.ts';
import type { ContainerFs } from './fs/types.ts';
import { readTarTree } from './tar-tree.ts';
import { parseDriverOptions, parseLayerOptions, type BackendName, type DriverOptions } from './options.ts';

const GiB = 2 ** 30;
/** Read-only layer disks kept attached after their last union on the host backend (see the pool's lingerDisks). */
const LINGER_DISKS = 256;
/** The smallest image the converter writes (1 MiB), below which no layer can fit. */
const MIN_LAYER_BYTES = 2 ** 20;

/** A converted layer waiting for its parent: see {@link LcowDriver.stageFromDiff}. */
export interface StagedLayer {
  /** The staging folder (under the data root's `tmp/`). */
  dir: string;
  /** Bytes of regular-file content in the tar. */
  fileBytes: number;
  /** Removes the staging folder (after a commit, nothing is left to remove). */
  discard(): Promise<void>;
}

/** Options of `create` and `createReadWrite`: moby's `CreateOpts.StorageOpt`. */
export interface CreateOptions {
  storageOpt?: Readonly<Record<string, string>>;
}

/** What {@link LcowDriver.status} reports. */
export interface DriverStatus {
  backend: BackendName;
  /** `lcow.globalmode` as configured; `vmMode` is what the pool does (host and inproc have one "VM"). */
  mode: 'global' | 'safe';
  vmMode: 'global' | 'safe';
  root: string;
  layers: number;
  /**
   * Every union mounted now: this process's (`refs`: its gets), and, where the backend can see them, those
   * an earlier process left for this one to adopt at its next `get` (`detached`: a container still running
   * across a plugin restart).
   */
  mounted: { id: string; refs: number; detached?: true }[];
  /** The filesystem the data root is on (`extfs`, `xfs`, `btrfs`, `tmpfs`…, as Docker names them). */
  backingFilesystem: string;
  /** A sandbox's default size and its VHDX type. */
  sandboxSizeGb: number;
  sandboxType: 'dynamic' | 'fixed';
  vms: PoolSnapshot['vms'];
}

interface Mounted {
  /** Unmounts the union (and what only it used). */
  release: () => Promise<void>;
  /** A union a process that is gone left mounted, taken over: `close` leaves it for the next process. */
  adopted: boolean;
  refs: number;
  fs: ContainerFs;
  target: string;
  /** The pool's lease of the union's VM and disks (none for an adopted union). */
  lease: Lease | null;
  /** With no `get` left, while it lingers ({@link LcowDriver.init}'s `lingerUnionsMs`): its unmount's timer. */
  idle: NodeJS.Timeout | null;
}

/** A layer opened for reading on the host: its own content and its parents', top first. */
interface Readers {
  own: UnionLayer | null;
  parents: UnionLayer[];
  /** The id of each of `parents` (layers with nothing applied have no reader and are not listed). */
  parentIds: string[];
  close(): Promise<void>;
}

/** Beside `layer.vhd`: the diff id its tar was checked against, when one was. */
const DIFF_ID_FILE = 'layer.vhd.diffid';
/** What is said of a layer's content beside it, true only of the content it was written with. */
const PROOF_FILES = ['layer.vhd.rootdigest', DIFF_ID_FILE] as const;

/** Writes, into a new layer's folder, its root digest and the diff id it was checked against (if any). */
async function writeProofs(dir: string, r: ApplyResult, proven: boolean): Promise<void> {
  if (r.rootDigest) await writeFileAtomic(join(dir, 'layer.vhd.rootdigest'), `${r.rootDigest}\n`);
  if (proven && r.diffId) await writeFileAtomic(join(dir, DIFF_ID_FILE), `${r.diffId}\n`);
}

/**
 * How a conversion checks the tar's diff id: the `sha256:…` it must have, or a function given the diff id
 * found that throws when it is not acceptable (a containerd snapshotter knows a chain id, not the diff id).
 * Either way the diff id is then kept with the layer as proven.
 */
export type DiffIdCheck = string | ((diffId: string) => void);

/** Options of {@link LcowDriver.createFromDiff} and {@link LcowDriver.stageFromDiff}. */
export interface LayerFromDiffOptions {
  signal?: AbortSignal;
  /** Append a dm-verity tree (its root digest kept in `layer.vhd.rootdigest`). */
  verity?: boolean;
  diffId?: DiffIdCheck;
  /** hcsshim's layout and settings (dmverity-vhd's), so root digests equal a confidential-container policy's. */
  hcsshim?: boolean;
}

/**
 * The LCOW graph driver. Every operation that needs no VM runs on the host in every backend:
 * `applyDiff` (tar → ext4 + footer in a child process), `createReadWrite` (mkfs into a VHDX, no VM boot
 * and no cached copy), `diff`, `changes`, `diffSize` and `diffGetter` (the `@lcow/ext4` reader). `get`
 * attaches the chain to the backend's service VM and mounts the union; every `get` needs one `put`.
 */
export class LcowDriver {
  readonly root: string;
  readonly store: LayerStore;
  readonly backend: Backend;
  readonly options: DriverOptions;
  readonly #pool: SvmPool;
  readonly #locks = new KeyedLock();
  readonly #mounted = new Map<string, Mounted>();
  readonly #lingerMs: number;
  /** Unions being unmounted outside their own id's lock ({@link #endLingering}), awaited by a new mount. */
  readonly #ending = new Map<string, Promise<void>>();
  /** `dynamic` or `fixed` sandboxes: `lcow.sandboxtype`, else the backend's default. */
  readonly sandboxType: 'dynamic' | 'fixed';
  /** `cache/sandbox.vhdx`, the blank every default-size dynamic sandbox is copied from. */
  readonly sandboxBlank: BlankDisk;
  /** Default sandboxes made ahead of need (a service's, see `init`), or null. */
  readonly spares: SpareSandboxes | null;

  private constructor(
    root: string,
    store: LayerStore,
    backend: Backend,
    options: DriverOptions,
    spareSandboxes: number,
    lingerUnionsMs: number,
  ) {
    if (!Number.isInteger(lingerUnionsMs) || lingerUnionsMs < 0)
      throw new DriverError('ERR_INVALID_ARGUMENT', `lingerUnionsMs ${lingerUnionsMs}: a whole number of ms`);
    this.#lingerMs = lingerUnionsMs;
    this.root = root;
    this.store = store;
    this.backend = backend;
    this.options = options;
    this.sandboxType = options.sandboxType ?? backend.sandboxType;
    this.sandboxBlank = new BlankDisk(dataRootPaths(root).cachedSandbox);
    const size = options.sandboxSizeGb;
    this.spares =
      spareSandboxes > 0
        ? new SpareSandboxes(
            join(dataRootPaths(root).cache, 'spare'),
            `${size}g-${this.sandboxType}`,
            spareSandboxes,
            (path, signal) => this.#formatSandbox(path, size, signal),
            async (path) => this.backend.prepareDisk?.(path),
          )
        : null;
    this.#pool = new SvmPool({
      mode: backend.singleVm || options.globalMode ? 'global' : 'safe',
      start: (vmId, signal) => backend.start(vmId, signal),
      attachConcurrency: backend.attachConcurrency,
      // On the host, a layer's loop device and mount stay a while after its last union goes: the next
      // container on the image, or the next layer unpacked on this chain, finds them ready (an image of 128
      // layers is otherwise 128 × 129 / 2 attaches). A VM's disk slots are scarcer: there, none linger.
      lingerDisks: backend.singleVm ? LINGER_DISKS : 0,
      ...(backend.timeoutMs ? { timeoutMs: backend.timeoutMs } : {}),
    });
  }

  /**
   * Opens (creating) the data root, checks every option (`lcow.globalmode`, `lcow.sandboxsize`,
   * `lcow.backend`, the utility VM's `lcow.kirdpath`/`kernel`/`initrd`/`bootparameters`/`timeout`), deletes
   * stale scratch disks and partial creations, and unmounts what a killed process left mounted.
   */
  static async init(
    root: string,
    options: readonly string[] | Readonly<Record<string, string>> = [],
    extra: {
      backend?: Backend;
      /**
       * Unmount what a killed process left mounted (default true: a daemon restarting). The `lcow` command
       * passes false, so that unions left by `lcow mount` survive until `lcow unmount` or `lcow cleanup`.
       */
      recover?: boolean;
      /**
       * The unions `get` mounts are containers' root filesystems that a runtime runs (the Docker plugin):
       * setuid programs in them work. Default false: every mount is `nosuid` (and always `nodev`).
       */
      containerRoots?: boolean;
      /**
       * Default-size sandboxes to keep made ahead of need (default 0): a service starting containers takes
       * one by a rename instead of formatting one while the container waits, and makes the next after.
       */
      spareSandboxes?: number;
      /**
       * How long a union stays mounted after its last `put` (default 0: unmounted at once). A `get` in that
       * time finds it ready: dockerd mounts a container's root to create it and again, moments later, to
       * start it. Operations that need the layer unmounted (remove, applyDiff, close) end it first.
       */
      lingerUnionsMs?: number;
    } = {},
  ): Promise<LcowDriver> {
    const opts = parseDriverOptions(options);
    const abs = resolve(root);
    const name = opts.backend ?? defaultBackend();
    let backend: Backend;
    if (extra.backend) backend = extra.backend;
    else if (name === 'host') {
      const ok = hostBackendAvailable();
      if (!ok.ok) unsupportedBackend('host', ok.reason);
      backend = hostBackend(abs, { suid: extra.containerRoots ?? false });
    } else if (name === 'inproc') backend = inprocBackend();
    else {
      const { hcsBackend } = await import('./backends/hcs.ts');
      backend = hcsBackend(abs, opts);
    }
    if (opts.sandboxType === 'dynamic' && !backend.dynamicSandboxes)
      throw new DriverError(
        'ERR_INVALID_ARGUMENT',
        `lcowdriver: init: lcow.sandboxtype=dynamic: the ${backend.name} backend loop-mounts sandboxes, which needs a fixed VHDX`,
      );
    const store = await LayerStore.open(abs);
    if (extra.recover !== false) await backend.recover();
    const driver = new LcowDriver(abs, store, backend, opts, extra.spareSandboxes ?? 0, extra.lingerUnionsMs ?? 0);
    driver.spares?.fill();
    return driver;
  }

  #lock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.#locks.run(id, fn);
  }

  /** `create`: a read-only layer's folder and `layerchain.json`; `applyDiff` fills it. */
  async create(id: string, parent: string | null = null, opts: CreateOptions = {}): Promise<void> {
    parseLayerOptions(opts.storageOpt ?? {}, id, 'create');
    await this.store.create(id, parent || null);
  }

  /**
   * `createReadWrite`: a sandbox — ext4 made by `@lcow/ext4` mkfs inside a VHDX whose payload is one
   * contiguous run (so the host backend can loop-mount it), of `lcow.sandboxsize` GiB (default 20, at
   * least 20, the original's messages) or Docker's `size=` ({@link parseLayerOptions}).
   */
  async createReadWrite(id: string, parent: string | null = null, opts: CreateOptions = {}): Promise<void> {
    const sizeGb = this.#sandboxSize(id, opts);
    await this.store.create(id, parent || null, async (dir) => {
      const path = join(dir, 'sandbox.vhdx');
      if (sizeGb === this.options.sandboxSizeGb && (await this.spares?.take(path))) return;
      await this.#formatSandbox(path, sizeGb);
    });
  }

  #sandboxSize(id: string, opts: CreateOptions): number {
    return parseLayerOptions(opts.storageOpt ?? {}, id, 'createreadwrite').sandboxSizeGb ?? this.options.sandboxSizeGb;
  }

  /**
   * A new sandbox at `path`: a copy of `cache/sandbox.vhdx` for a default-size dynamic one (the original's
   * fast path; the cache is made on first use), otherwise made by mkfs.
   */
  async #formatSandbox(path: string, sizeGb: number, signal?: AbortSignal): Promise<void> {
    const sig = signal ? { signal } : {};
    if (this.sandboxType === 'dynamic' && sizeGb === CACHED_DISK_GIB)
      await this.sandboxBlank.copyTo(path, { overwrite: true, ...sig });
    else await mkfs(path, { size: sizeGb * GiB, format: 'vhdx', vhdxType: this.sandboxType, overwrite: true, ...sig });
    if (process.platform === 'win32') {
      const { grantVmGroupAccess } = await import('@lcow/hcs');
      await grantVmGroupAccess(path);
    }
  }

  /** Whether layer `id` exists. */
  exists(id: string): Promise<boolean> {
    return this.store.exists(id);
  }

  /** `{ dir }`: the layer folder (the daemon builds LayerFolders from it). */
  async getMetadata(id: string): Promise<{ dir: string }> {
    return { dir: (await this.store.info(id)).dir };
  }

  async getLayerPath(id: string): Promise<string> {
    return (await this.store.info(id)).dir;
  }

  /** Disks and lower folders of `info`'s chain, top first (layers with nothing applied contribute nothing). */
  async #chainDisks(
    info: LayerInfo,
  ): Promise<{ disks: DiskRequest[]; lowers: (string | { hostPath: string; subdir: string })[] }> {
    const disks: DiskRequest[] = [];
    const lowers: (string | { hostPath: string; subdir: string })[] = [];
    for (const pid of info.parentIds) {
      const p = await this.#parentInfo(info, pid);
      if (!p.file) continue;
      disks.push({ hostPath: p.file, readOnly: true });
      lowers.push(p.kind === 'sandbox' ? { hostPath: p.file, subdir: 'upper' } : p.file);
    }
    return { disks, lowers };
  }

  /** A parent's info; a parent that is gone is named with the layer whose chain names it. */
  async #parentInfo(child: LayerInfo, pid: string): Promise<LayerInfo> {
    try {
      return await this.store.info(pid);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_LAYER_NOT_FOUND') throw e;
      throw new LayerStoreError(
        'ERR_LAYER_NOT_FOUND',
        `layer ${child.id}: its parent ${pid} (in ${child.dir}/layerchain.json) is not in ${this.root}`,
        { cause: e },
      );
    }
  }

  /** Whether a disk is attached writable (a container's sandbox) — or read-only, when `readOnly`. */
  #attached(hostPath: string, readOnly: boolean): boolean {
    return this.#pool
      .snapshot()
      .vms.some((vm) => vm.disks.some((d) => d.hostPath === hostPath && d.readOnly === readOnly && d.refs > 0));
  }

  /**
   * `get`: the union of `id`'s chain, mounted once and refcounted. A sandbox is its writable top; a layer
   * with nothing applied yet gets a sandbox on first use where the backend can write (moby's suite writes
   * into `create`d layers), and is an empty read-only top elsewhere.
   */
  get(id: string, opts: { signal?: AbortSignal } = {}): Promise<ContainerFs> {
    return this.#lock(id, async () => {
      const have = this.#mounted.get(id);
      if (have) {
        if (have.idle) clearTimeout(have.idle);
        have.idle = null;
        have.refs++;
        return have.fs;
      }
      await this.#ending.get(id);
      // Held across processes while the union is made, so a remove or applyDiff elsewhere sees it whole.
      return this.store.withLock(id, () => this.#mount(id, opts), opts.signal);
    });
  }

  async #mount(id: string, opts: { signal?: AbortSignal }): Promise<ContainerFs> {
    const target = `/tmp/${id}-mount`;
    // A union an earlier process left (a restarted daemon whose containers kept running, `lcow mount`):
    // the same folder again, never a second union at another path. Its earlier get counts as one.
    const left = await this.backend.adopt(target);
    if (left) {
      const fs = this.backend.containerFsAt(left);
      const release = async (): Promise<void> => void (await this.backend.unmountDetached(target));
      this.#mounted.set(id, { release, adopted: true, refs: 2, fs, target, lease: null, idle: null });
      return fs;
    }
    let info = await this.store.info(id);
    if (info.kind === 'empty' && this.backend.writable) {
      await this.store.commitFile(id, 'sandbox.vhdx', (tmp) => this.#formatSandbox(tmp, this.options.sandboxSizeGb));
      info = await this.store.info(id);
    }
    const { disks, lowers } = await this.#chainDisks(info);
    let upper: string | undefined;
    if (info.kind === 'layer') {
      disks.unshift({ hostPath: info.file!, readOnly: true });
      lowers.unshift(info.file!);
    } else if (info.kind === 'sandbox') {
      const writable = this.backend.writable;
      if (writable && this.#attached(info.file!, true))
        throw new DriverError('ERR_LAYER_BUSY', `layer ${id}: in use read-only as a parent; put its children first`);
      disks.unshift({ hostPath: info.file!, readOnly: !writable });
      upper = info.file!;
    }
    const lease = await this.#pool.acquire(id, disks, opts);
    try {
      if (lowers.length > 0 || upper) await lease.mountUnion(target, lowers, upper, opts);
      else await lease.vm.mountUnion(target, []); // the empty union: only the inproc backend gets here
      const fs = this.backend.containerFs(lease.vm, target, !this.backend.writable);
      this.#mounted.set(id, { release: () => lease.release(), adopted: false, refs: 1, fs, target, lease, idle: null });
      return fs;
    } catch (e) {
      await lease.release().catch(() => {});
      throw e;
    }
  }

  /**
   * `put`: drops one `get`; the last one unmounts the union and detaches its sandbox (on the host the
   * read-only layers linger a while, for the next union on them).
   */
  put(id: string): Promise<void> {
    return this.#lock(id, async () => {
      const m = this.#mounted.get(id);
      if (!m) throw new DriverError('ERR_NOT_MOUNTED', `put ${id}: not mounted (a put without its get)`);
      if (m.refs === 0) throw new DriverError('ERR_NOT_MOUNTED', `put ${id}: not mounted (a put without its get)`);
      if (--m.refs > 0) return;
      if (this.#lingerMs > 0 && !m.adopted) {
        m.idle = setTimeout(() => void this.#expire(id, m), this.#lingerMs);
        m.idle.unref();
        return;
      }
      this.#mounted.delete(id);
      // Under the lock `get` holds across processes: another process's get never sees this union half
      // gone (its folder removed after that get made its own there, its owner record dropped after that
      // get wrote one — and so taken for a union nobody owns).
      await this.store.withLock(id, () => m.release());
    });
  }

  /**
   * Ends a union of `id` whether this process mounted it (its `get`s are all put) or an earlier `lcow mount`
   * left it. Returns whether anything was mounted.
   */
  unmount(id: string): Promise<boolean> {
    return this.#lock(id, async () => {
      await this.#ending.get(id);
      const m = this.#mounted.get(id);
      return this.store.withLock(id, async () => {
        if (m) {
          if (m.idle) clearTimeout(m.idle);
          this.#mounted.delete(id);
          await m.release();
          return true;
        }
        return this.backend.unmountDetached(`/tmp/${id}-mount`);
      });
    });
  }

  /** How many `get`s of `id` are outstanding. */
  refs(id: string): number {
    return this.#mounted.get(id)?.refs ?? 0;
  }

  /** A lingering union's time is up: unmounted, under its locks, unless a `get` took it back meanwhile. */
  async #expire(id: string, m: Mounted): Promise<void> {
    await this.#lock(id, () =>
      this.store.withLock(id, async () => {
        if (this.#mounted.get(id) !== m || m.refs > 0) return;
        this.#mounted.delete(id);
        await m.release();
      }),
    ).catch(() => {}); // a failed unmount leaves what cleanup finds, as a failed put would
  }

  /**
   * Ends lingering unions now — those `which` picks — without their ids' locks (the caller holds another
   * id's; a `get` of one of them waits for the unmount in {@link #ending}).
   */
  async #endLingering(which: (id: string, m: Mounted) => boolean): Promise<void> {
    const ends: Promise<void>[] = [];
    for (const [id, m] of [...this.#mounted]) {
      if (m.refs > 0 || !which(id, m)) continue;
      clearTimeout(m.idle!);
      this.#mounted.delete(id);
      const end = m.release().finally(() => {
        if (this.#ending.get(id) === end) this.#ending.delete(id);
      });
      this.#ending.set(id, end);
      ends.push(end);
    }
    await Promise.all(ends);
  }

  /**
   * `remove`: drops the layer's mount if any (and, in safe mode, its VM), then removes the folder in two
   * phases (`<id>-removing`, durable, then deleted in the background). A layer attached as a parent of a mounted union is busy.
   */
  remove(id: string): Promise<void> {
    return this.#lock(id, () =>
      this.store.withLock(id, async () => {
        await this.#ending.get(id);
        const m = this.#mounted.get(id);
        if (m) {
          if (m.idle) clearTimeout(m.idle);
          this.#mounted.delete(id);
          await m.release();
        }
        // A layer whose folder is damaged (a corrupt chain, a link) can still be removed: it is the way out.
        const present = await this.store.exists(id).catch((e: { code?: string }) => {
          if (e.code === 'ERR_LAYER_CORRUPT') return true;
          throw e;
        });
        if (!present) throw new LayerStoreError('ERR_LAYER_NOT_FOUND', `layer ${id}: not found in ${this.root}`);
        await this.#refuseIfInUse(id, 'remove');
        if (this.#pool.mode === 'safe') await this.#pool.terminate(id);
        // The folder's deletion (a 20 GiB sandbox's extents freed: most of a remove's time) need not hold
        // up the caller: the layer is gone once its rename is durable. close() waits for it.
        await this.store.remove(id, { background: true });
      }),
    );
  }

  /**
   * `ERR_LAYER_BUSY` when a disk of layer `id` is attached: by this process (a mounted child, its own
   * union) or by any other (a loop device over it: `lcow mount`, a daemon).
   */
  async #refuseIfInUse(id: string, op: string): Promise<void> {
    const p = this.store.layer(id);
    for (const file of [p.layerVhd, p.sandboxVhdx]) {
      // Still attached only because it lingers after its last union, or a union on it does: let go, not in use.
      await this.#endLingering((_, m) => m.lease?.disks.some((d) => d.hostPath === file) ?? false);
      await this.#pool.releaseIdle(file);
      if (this.#attached(file, true) || this.#attached(file, false))
        throw new DriverError('ERR_LAYER_BUSY', `${op} ${id}: its disk is attached for a mounted layer`);
      // Lingering disks of a process that was killed: nobody will ever adopt them.
      if (await this.backend.inUse(file)) await this.backend.releaseOrphans();
      if (await this.backend.inUse(file))
        throw new DriverError(
          'ERR_LAYER_BUSY',
          `${op} ${id}: ${file} is mounted by another process (\`lcow unmount\` it, or put its containers first)`,
        );
    }
  }

  /**
   * What an import needs to know of an existing layer `id` before it may reuse it: what the folder holds, its
   * direct parent, and the diff id it was proven to have ({@link provenDiffId}).
   */
  async layerFacts(id: string): Promise<{ kind: LayerInfo['kind']; parent: string | null; diffId: string | null }> {
    const info = await this.store.info(id);
    return { kind: info.kind, parent: info.parentIds[0] ?? null, diffId: await this.provenDiffId(id) };
  }

  /**
   * The diff id (`sha256:…` of the uncompressed tar) layer `id` was proven to have when it was made —
   * checked against the tar as it was converted — or null when nothing proved one (made by `create` and
   * `applyDiff` without a diff id, or by an older lcow). An import reuses a layer only on this proof.
   */
  async provenDiffId(id: string): Promise<string | null> {
    const info = await this.store.info(id);
    let text: string;
    try {
      const fh = await open(
        join(info.dir, DIFF_ID_FILE),
        constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      );
      try {
        const buf = Buffer.alloc(128);
        const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
        text = buf.subarray(0, bytesRead).toString('utf8').trim();
      } finally {
        await fh.close();
      }
    } catch {
      return null;
    }
    return /^sha256:[0-9a-f]{64}$/.test(text) ? text : null;
  }

  /**
   * The conversion half of {@link createFromDiff}, for a layer whose parent may not exist yet: the tar
   * (diff id checked) becomes `layer.vhd` in a staging folder of the data root, nothing visible.
   * {@link createFromStaged} makes it layer `id`; `discard()` drops it. An image's layers can so be
   * converted in parallel and committed in order.
   */
  async stageFromDiff(id: string, tar: LayerSource, opts: LayerFromDiffOptions = {}): Promise<StagedLayer> {
    const sizeLimit = await this.#layerSizeLimit(id);
    const dir = await this.store.stagingDir();
    const discard = (): Promise<void> => rm(dir, { recursive: true, force: true });
    try {
      const r = await this.#convert(id, tar, join(dir, 'layer.vhd'), sizeLimit, opts);
      await writeProofs(dir, r, opts.diffId !== undefined);
      return { dir, fileBytes: r.fileBytes, discard };
    } catch (e) {
      await discard();
      throw e;
    }
  }

  /** Makes a {@link stageFromDiff} result layer `id` on `parent`, whole or not at all; the staging goes. */
  createFromStaged(id: string, parent: string | null, staged: StagedLayer, signal?: AbortSignal): Promise<number> {
    return this.#lock(id, () =>
      this.store.withLock(
        id,
        async () => {
          try {
            const info = await this.store.create(id, parent || null, async (dir) => {
              for (const f of await readdir(staged.dir)) await rename(join(staged.dir, f), join(dir, f));
            });
            if (process.platform === 'win32') {
              const { grantVmGroupAccess } = await import('@lcow/hcs');
              await grantVmGroupAccess(info.file!);
            }
            return staged.fileBytes;
          } finally {
            await staged.discard();
          }
        },
        signal,
      ),
    );
  }

  /**
   * `create` and `applyDiff` as one step, for importing an image: the layer folder appears only with its
   * `layer.vhd` (and root digest) complete, so a failure or a kill at any point leaves no half-made layer —
   * nothing an `ls` shows, nothing a later import would have to repair. Returns what `applyDiff` returns.
   */
  createFromDiff(
    id: string,
    parent: string | null,
    tar: LayerSource,
    opts: LayerFromDiffOptions = {},
  ): Promise<number> {
    return this.#lock(id, () =>
      this.store.withLock(
        id,
        async () => {
          const sizeLimit = await this.#layerSizeLimit(id);
          let fileBytes = 0;
          const info = await this.store.create(id, parent || null, async (dir) => {
            const r = await this.#convert(id, tar, join(dir, 'layer.vhd'), sizeLimit, opts);
            await writeProofs(dir, r, opts.diffId !== undefined);
            fileBytes = r.fileBytes;
          });
          if (process.platform === 'win32') {
            const { grantVmGroupAccess } = await import('@lcow/hcs');
            await grantVmGroupAccess(info.file!);
          }
          return fileBytes;
        },
        opts.signal,
      ),
    );
  }

  /** One conversion into `out`, its diff id checked when one is given. */
  async #convert(
    id: string,
    tar: LayerSource,
    out: string,
    sizeLimit: number,
    opts: LayerFromDiffOptions,
  ): Promise<ApplyResult> {
    const r = await convertLayer(tar, out, {
      verity: opts.verity ?? false,
      digest: opts.diffId !== undefined,
      sizeLimit,
      signal: opts.signal,
      what: `layer ${id}`,
      ...(opts.hcsshim ? { hcsshim: true } : {}),
    });
    if (typeof opts.diffId === 'function') opts.diffId(r.diffId!);
    else if (opts.diffId !== undefined && r.diffId !== opts.diffId)
      throw new DriverError(
        'ERR_VERIFICATION',
        `layer ${id}: the tar's diff id is ${r.diffId}, expected ${opts.diffId}`,
      );
    return r;
  }

  /**
   * `applyDiff`: converts the tar (a file path, a range of a file, or a stream; plain or gzip; OCI whiteouts
   * → overlay form) into `layer.vhd` atomically, in a child
   * process unless `LCOW_NOREEXEC=1`. Returns the bytes of regular-file content applied, as moby's drivers
   * do (equal to `diffSize` of the layer). With `verity`, a dm-verity tree follows the ext4 and its root
   * digest is kept beside the layer in `layer.vhd.rootdigest`.
   */
  async applyDiff(
    id: string,
    parent: string | null,
    tar: LayerSource,
    opts: {
      signal?: AbortSignal;
      verity?: boolean;
      /** `sha256:…` the uncompressed tar must have (an image's diff id); otherwise nothing is committed. */
      diffId?: string;
    } = {},
  ): Promise<number> {
    return this.#lock(id, () => this.store.withLock(id, () => this.#applyDiff(id, parent, tar, opts), opts.signal));
  }

  async #applyDiff(
    id: string,
    parent: string | null,
    tar: LayerSource,
    opts: { signal?: AbortSignal; verity?: boolean; diffId?: string },
  ): Promise<number> {
    const info = await this.store.info(id);
    const direct = info.parentIds[0] ?? null;
    if (parent && parent !== direct)
      throw new DriverError(
        'ERR_INVALID_ARGUMENT',
        `applyDiff ${id}: its parent is ${direct ?? 'none'}, not ${parent}`,
      );
    await this.#endLingering((other) => other === id);
    if (this.#mounted.has(id))
      throw new DriverError('ERR_LAYER_BUSY', `applyDiff ${id}: the layer is mounted; put it first`);
    await this.#refuseIfInUse(id, 'applyDiff');
    let fileBytes = 0;
    let digest: string | undefined;
    const sizeLimit = await this.#layerSizeLimit(id);
    // What was said of the layer's old content is not said of its new one (a crash between the two commits
    // below leaves less said, never something false).
    for (const f of PROOF_FILES) await rm(join(info.dir, f), { force: true });
    const file = await this.store.commitFile(id, 'layer.vhd', async (tmp) => {
      const r = await this.#convert(id, tar, tmp, sizeLimit, opts);
      fileBytes = r.fileBytes;
      digest = r.rootDigest;
    });
    if (digest) await this.store.commitFile(id, 'layer.vhd.rootdigest', (tmp) => writeFile(tmp, `${digest}\n`));
    if (opts.diffId !== undefined)
      await this.store.commitFile(id, DIFF_ID_FILE, (tmp) => writeFile(tmp, `${opts.diffId}\n`));
    // A sandbox made by a get before anything was applied: the layer is now its layer.vhd.
    if (info.kind === 'sandbox') await rm(join(info.dir, 'sandbox.vhdx'), { force: true });
    if (process.platform === 'win32') {
      const { grantVmGroupAccess } = await import('@lcow/hcs');
      await grantVmGroupAccess(file);
    }
    return fileBytes;
  }

  /**
   * The largest image one applyDiff may write: `lcow.maxlayersize`, and no more than leaves the data root's
   * filesystem its reserve free (1 GiB, or 5 % of a smaller filesystem). `ERR_DISK_FULL` at once when
   * not even a minimal layer fits.
   */
  async #layerSizeLimit(id: string): Promise<number> {
    const fsStat = await statfs(this.root);
    const total = fsStat.blocks * fsStat.bsize;
    const free = fsStat.bavail * fsStat.bsize;
    const reserve = Math.min(GiB, Math.floor(total / 20));
    const limit = Math.min(this.options.maxLayerSizeGb * GiB, free - reserve);
    if (limit < MIN_LAYER_BYTES)
      throw new Ext4Error(
        'ERR_DISK_FULL',
        `applyDiff ${id}: ${this.root} has ${free} bytes free; a layer may not leave less than ${reserve}`,
      );
    return limit;
  }

  /** Readers over `id`'s disk and its parents' (after flushing any that is mounted writable). */
  async #readers(info: LayerInfo): Promise<Readers> {
    const opened: Ext4Fs[] = [];
    const open = async (p: LayerInfo): Promise<UnionLayer | null> => {
      if (!p.file) return null;
      if (p.kind === 'sandbox') await this.backend.flush(p.file);
      const fs = await Ext4Fs.open(p.file, { checksums: 'strict' });
      opened.push(fs);
      if (p.kind !== 'sandbox') return { fs };
      // A sandbox never mounted has no upper/ yet: nothing written, no content of its own.
      return (await fs.tryLstat('/upper'))?.type === 'dir' ? { fs, root: 'upper' } : null;
    };
    try {
      const own = await open(info);
      const parents: UnionLayer[] = [];
      const parentIds: string[] = [];
      for (const pid of info.parentIds) {
        const l = await open(await this.#parentInfo(info, pid));
        if (!l) continue;
        parents.push(l);
        parentIds.push(pid);
      }
      return { own, parents, parentIds, close: async () => void (await Promise.all(opened.map((f) => f.close()))) };
    } catch (e) {
      await Promise.all(opened.map((f) => f.close()));
      throw e;
    }
  }

  /**
   * Where the backend locks a disk attached writable (Hyper-V), a sandbox this process has mounted cannot
   * be read on the host: its lease and the guest path of its disk, so the caller goes through the guest.
   * Null where the host reads the file. Only the sandbox against its own parent can be read so.
   */
  #lockedSandbox(info: LayerInfo, op: string, parent: string | null): { lease: Lease; guestPath: string } | null {
    if (!this.backend.lockedWhileAttached || info.kind !== 'sandbox' || !info.file) return null;
    if (!this.#attached(info.file, false)) return null;
    const lease = this.#mounted.get(info.id)?.lease;
    if (!lease || !LcowDriver.#isDirect(info, parent))
      throw new DriverError(
        'ERR_LAYER_BUSY',
        `${op} ${info.id}: its sandbox is attached to a utility VM, which locks it; only its own changes (against its parent) can be read through the guest — put it first`,
      );
    return { lease, guestPath: lease.guestPath(info.file) };
  }

  /**
   * `changes` of a locked sandbox ({@link #lockedSandbox}): the guest exports it as a tar, read as a tree
   * over the union of its parents (read on the host: attached read-only, they stay readable).
   */
  async #guestLayer(
    info: LayerInfo,
    op: string,
    parent: string | null,
    signal?: AbortSignal,
  ): Promise<{ tree: Tree; changes: Change[] } | null> {
    const locked = this.#lockedSandbox(info, op, parent);
    if (!locked) return null;
    const tree = await readTarTree(
      locked.lease.vm.exportTar(locked.guestPath, { sandbox: true, ...(signal ? { signal } : {}) }),
      `${op} ${info.id}`,
      signal,
    );
    const r = await this.#readers({ ...info, file: null });
    try {
      return { tree, changes: await layerChanges(tree, r.parents.length ? new UnionView(r.parents) : null, signal) };
    } finally {
      await r.close();
    }
  }

  /** Whether `parent` is `id`'s direct parent (or both are none): the layer alone is then the diff. */
  static #isDirect(info: LayerInfo, parent: string | null): boolean {
    return (parent || null) === (info.parentIds[0] ?? null);
  }

  /** The changes of `id` against `parent` (moby's semantics; see changes.ts). */
  async changes(id: string, parent: string | null = null, opts: { signal?: AbortSignal } = {}): Promise<Change[]> {
    const info = await this.store.info(id);
    const guest = await this.#guestLayer(info, 'changes', parent, opts.signal);
    if (guest) return guest.changes;
    const r = await this.#readers(info);
    try {
      return await this.#changes(info, r, parent, opts.signal);
    } finally {
      await r.close();
    }
  }

  async #changes(info: LayerInfo, r: Readers, parent: string | null, signal?: AbortSignal): Promise<Change[]> {
    if (LcowDriver.#isDirect(info, parent)) {
      if (!r.own) return [];
      const own: Tree = r.own.root ? subtree(r.own.fs, r.own.root) : r.own.fs;
      return layerChanges(own, r.parents.length ? new UnionView(r.parents) : null, signal);
    }
    const { next, old } = await this.#naiveTrees(info, r, parent);
    return treeChanges(next, old, signal);
  }

  /** For a pair that is not layer and direct parent: the union of `id` against the union of `parent`. */
  async #naiveTrees(
    info: LayerInfo,
    r: Readers,
    parent: string | null,
  ): Promise<{ next: UnionView; old: UnionView | null }> {
    const next = new UnionView([...(r.own ? [r.own] : []), ...r.parents]);
    if (!parent) return { next, old: null };
    const at = info.parentIds.indexOf(parent);
    if (at < 0) throw new DriverError('ERR_INVALID_ARGUMENT', `layer ${info.id}: ${parent} is not one of its parents`);
    // The parents' readers, from `parent` down.
    const below = new Set(info.parentIds.slice(at));
    return { next, old: new UnionView(r.parents.filter((_, k) => below.has(r.parentIds[k]!))) };
  }

  /** `diffSize`: bytes of regular files the layer adds or modifies against `parent`. */
  async diffSize(id: string, parent: string | null = null): Promise<number> {
    const info = await this.store.info(id);
    const guest = await this.#guestLayer(info, 'diffSize', parent);
    if (guest) return changesSize(guest.tree, guest.changes);
    const r = await this.#readers(info);
    try {
      const changes = await this.#changes(info, r, parent);
      if (LcowDriver.#isDirect(info, parent)) {
        if (!r.own) return 0;
        return await changesSize(r.own.root ? subtree(r.own.fs, r.own.root) : r.own.fs, changes);
      }
      return await changesSize((await this.#naiveTrees(info, r, parent)).next, changes);
    } finally {
      await r.close();
    }
  }

  /**
   * `diff`: an OCI layer tar of `id` against `parent`. Against its direct parent it is the layer itself
   * (a sandbox's `upper/`), whiteouts in `.wh.` form; against anything else, the changes between the two
   * unions. Read from the disk files on the host, whatever the backend.
   */
  diff(id: string, parent: string | null = null, opts: { signal?: AbortSignal } = {}): Readable {
    const { signal } = opts;
    const chunks = async function* (this: LcowDriver): AsyncGenerator<Uint8Array> {
      const info = await this.store.info(id);
      const locked = this.#lockedSandbox(info, 'diff', parent);
      if (locked) {
        // The guest's exportSandbox of the sandbox as mounted: its upper/, whiteouts as `.wh.` entries.
        for await (const c of locked.lease.vm.exportTar(locked.guestPath, {
          sandbox: true,
          ...(signal ? { signal } : {}),
        }))
          yield c as Uint8Array;
        return;
      }
      const r = await this.#readers(info);
      try {
        if (LcowDriver.#isDirect(info, parent)) {
          if (r.own) yield* exportChunks(r.own.fs, { root: r.own.root ?? '/', signal });
          else yield new Uint8Array(1024); // nothing applied: an empty archive
          return;
        }
        const { next } = await this.#naiveTrees(info, r, parent);
        const changes = await this.#changes(info, r, parent, signal);
        yield* changesTar(next, changes, signal);
      } finally {
        await r.close();
      }
    };
    return Readable.from(chunks.call(this), { objectMode: false, highWaterMark: 1 << 20 });
  }

  /** `diffGetter`: one file of the layer's own content by name (tar-split reassembly). */
  async diffGetter(id: string): Promise<{ get(name: string): Promise<Readable>; close(): Promise<void> }> {
    const info = await this.store.info(id);
    if (!info.file) throw new DriverError('ERR_NOT_FOUND', `diffGetter ${id}: nothing applied to this layer`);
    const locked = this.#lockedSandbox(info, 'diffGetter', info.parentIds[0] ?? null);
    if (locked && this.backend.guestFs) {
      // Through the guest: its remotefs under the sandbox's own mount.
      const fs = this.backend.guestFs(locked.lease.vm, `${locked.guestPath}/upper`);
      return {
        get: async (name) => {
          const p = posix.normalize(`/${name}`);
          const st = await fs.lstat(p);
          if (st.type !== 'file')
            throw new DriverError('ERR_INVALID_ARGUMENT', `diffGetter ${id}: ${name} is a ${st.type}, not a file`);
          return fs.createReadStream(p);
        },
        close: async () => {},
      };
    }
    const fs = await Ext4Fs.open(info.file, { checksums: 'strict' });
    const root = info.kind === 'sandbox' ? '/upper' : '';
    return {
      get: async (name) => {
        const p = posix.join(root || '/', posix.normalize(`/${name}`));
        // Fails now, not in the middle of the stream: a name the layer does not hold as a regular file.
        const st = await fs.stat(p);
        if (st.type !== 'file')
          throw new DriverError('ERR_INVALID_ARGUMENT', `diffGetter ${id}: ${name} is a ${st.type}, not a file`);
        return fs.readFile(p);
      },
      close: () => fs.close(),
    };
  }

  async status(): Promise<DriverStatus> {
    const snap = this.#pool.snapshot();
    return {
      backend: this.backend.name,
      mode: this.options.globalMode ? 'global' : 'safe',
      vmMode: snap.mode,
      root: this.root,
      layers: (await this.store.list()).length,
      mounted: [
        ...[...this.#mounted].filter(([, m]) => m.refs > 0).map(([id, m]) => ({ id, refs: m.refs })),
        ...((await this.backend.mountedUnions?.()) ?? [])
          .filter((id) => !this.#mounted.has(id))
          .map((id) => ({ id, refs: 1, detached: true as const })),
      ],
      backingFilesystem: await backingFilesystem(this.root),
      sandboxSizeGb: this.options.sandboxSizeGb,
      sandboxType: this.sandboxType,
      vms: snap.vms,
    };
  }

  /**
   * Ends this process's use of the driver: puts every union it holds and stops its VMs (a daemon's shutdown);
   * unions it adopted from an earlier process stay for the next one. With `detach`, nothing is unmounted at
   * all: a process that stops while its containers run (a plugin restart) leaves every union for its
   * successor to adopt. Nothing of the data root changes.
   */
  async close(opts: { detach?: boolean } = {}): Promise<void> {
    await this.spares?.close();
    // Lingering unions are nobody's: a successor would take them for a container's and never unmount them.
    await this.#endLingering(() => true).catch(() => {});
    await Promise.all(this.#ending.values());
    for (const [id, m] of [...this.#mounted]) {
      this.#mounted.delete(id);
      if (!m.adopted && !opts.detach) await m.release().catch(() => {});
    }
    // Left to a successor: the unions, not the disks no union uses.
    if (opts.detach) await this.#pool.releaseIdle().catch(() => {});
    else await this.#pool.cleanup();
    await this.store.settled();
  }

  /**
   * `cleanup`: unmounts every union this driver holds, stops every VM, unmounts what a killed process left,
   * and finishes interrupted removals, partial creations and temporary files.
   */
  async cleanup(): Promise<CleanupReport & { unmounted: string[] }> {
    await Promise.all(this.#ending.values());
    for (const [id, m] of [...this.#mounted]) {
      if (m.idle) clearTimeout(m.idle);
      this.#mounted.delete(id);
      await m.release().catch(() => {});
    }
    await this.#pool.cleanup();
    const unmounted = await this.backend.recover();
    return { ...(await this.store.cleanup()), unmounted };
  }
}

/** `changes` as an OCI layer tar: entries from `tree` for adds and modifies, `.wh.` files for deletes. */
async function* changesTar(
  tree: UnionView,
  changes: readonly Change[],
  signal?: AbortSignal,
): AsyncGenerator<Uint8Array> {
  const TYPE = { file: '0', dir: '5', symlink: '2', chr: '3', blk: '4', fifo: '6' } as const;
  for (const c of changes) {
    signal?.throwIfAborted();
    const name = c.path.slice(1);
    if (c.kind === 'delete') {
      const wh = posix.join(posix.dirname(name), whiteoutName(posix.basename(name))).replace(/^\.\//, '');
      yield encodeTarHeader({
        path: Buffer.from(wh),
        type: '0',
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: { sec: 0, nsec: 0 },
      });
      continue;
    }
    const st = await tree.lstat(c.path);
    if (st.type === 'socket') continue; // tar cannot hold one
    const spec: TarHeaderSpec = {
      path: Buffer.from(st.type === 'dir' ? `${name}/` : name),
      type: TYPE[st.type],
      mode: st.mode,
      uid: st.uid,
      gid: st.gid,
      size: st.type === 'file' ? st.size : 0,
      mtime: st.mtime,
      xattrs: await tree.listXattrs(c.path),
    };
    if (st.type === 'symlink') spec.linkname = Buffer.from(await tree.readlink(c.path));
    if (st.rdev) {
      spec.devmajor = st.rdev.major;
      spec.devminor = st.rdev.minor;
    }
    yield encodeTarHeader(spec);
    if (st.type !== 'file') continue;
    if (st.size <= 1 << 20) {
      // Small files in one read: a stream per file costs more than the file.
      const b = await tree.read(c.path, 0, st.size);
      if (b.length !== st.size)
        throw new DriverError('ERR_INVALID_ARGUMENT', `${c.path}: read ${b.length} bytes of ${st.size}`);
      yield b;
      yield tarPadding(st.size);
      continue;
    }
    let n = 0;
    for await (const b of await tree.readFile(c.path)) {
      n += (b as Buffer).length;
      yield b as Buffer;
    }
    if (n !== st.size) throw new DriverError('ERR_INVALID_ARGUMENT', `${c.path}: read ${n} bytes of ${st.size}`);
    yield tarPadding(st.size);
  }
  yield TAR_END;
}

/** statfs(2) f_type values, named as Docker's `Backing Filesystem` names them (fsutils/magic). */
const FS_MAGIC: Record<number, string> = {
  0xef53: 'extfs',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x2fc12fc1: 'zfs',
  0x6969: 'nfs',
  0xff534d42: 'cifs',
  0x65735546: 'fuse',
  0x858458f6: 'ramfs',
  0x5346544e: 'ntfs',
};

async function backingFilesystem(root: string): Promise<string> {
  const { type } = await statfs(root);
  return FS_MAGIC[type] ?? `unknown (0x${type.toString(16)})`;
}
