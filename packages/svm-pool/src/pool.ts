import { withDeadline } from './deadline.ts';
import { SvmPoolError } from './errors.ts';
import { hostPathKey } from './refcount.ts';
import type { MappedDisk, UtilityVm } from './types.ts';

/** The VM id every layer shares in global mode (the original's name). */
export const GLOBAL_VM_ID = '_lcow_global_svm_';
/** Where the service VM's own scratch disk is mounted (never remapped). */
export const SCRATCH_GUEST_PATH = '/tmp/scratch';
/** The original's `lcow.timeout` default, per VM operation. */
export const DEFAULT_TIMEOUT_MS = 300_000;

/** A disk a caller needs attached. */
export interface DiskRequest {
  hostPath: string;
  readOnly: boolean;
  /** The VM's scratch disk: mounted at `/tmp/scratch` instead of `/tmp/d<n>`. */
  scratch?: boolean;
}

export interface PoolOptions {
  /**
   * `'global'`: one VM for every layer, living until {@link SvmPool.cleanup}; `'safe'` (the original's
   * default): one VM per id, terminated when its last lease is released.
   */
  mode: 'global' | 'safe';
  /** Boots a service VM. It gets an AbortSignal that fires when the pool gives up on the start. */
  start: (vmId: string, signal: AbortSignal) => Promise<UtilityVm>;
  /** Deadline of each VM operation (start, hot-add, mount, terminate…): `lcow.timeout`, default 300 s. */
  timeoutMs?: number;
  /** Host paths compare case-insensitively on Windows; default the running platform. */
  platform?: NodeJS.Platform;
  /**
   * How many disks of one acquire are hot-added at once (default 1, as the original attached them one by
   * one). A backend whose attach is a host mount takes more: a 50-layer chain then attaches in a few steps.
   */
  attachConcurrency?: number;
  /**
   * Read-only disks kept attached, with no reference, after their last lease lets them go (default 0: none):
   * the next acquire of the same layer — the next container on an image, the next layer of an image being
   * unpacked on its parent — takes them as they are instead of attaching them again. The oldest go first past
   * this many, and any after {@link lingerMs}; {@link SvmPool.releaseIdle} lets them go at once.
   */
  lingerDisks?: number;
  /** How long a lingering disk is kept (default 120 s). */
  lingerMs?: number;
}

type VmState = 'starting' | 'running' | 'stopping';

interface AttachedDisk {
  disk: MappedDisk;
  refs: number;
}

/** One VM's bookkeeping. A new entry is made for every start, so a stopped VM's state never leaks into the next. */
class Entry {
  readonly vmId: string;
  state: VmState = 'starting';
  refs = 0;
  vm: UtilityVm | null = null;
  started!: Promise<UtilityVm>;
  stopped: Promise<void> | null = null;
  /** Next `/tmp/d<n>`: monotonic per VM, never reused. */
  counter = 0;
  readonly disks = new Map<string, AttachedDisk>();
  /** Lingering disks (attached, no reference), oldest first, with when they were let go. */
  readonly idle = new Map<string, number>();
  readonly mounts = new Map<string, number>();
  /** The guest paths each mounted union reads (its lowers and upper). */
  readonly mountUses = new Map<string, readonly string[]>();
  #queue: Promise<unknown> = Promise.resolve();

  /** Whether a mounted union reads the disk at `guestPath` (or a folder in it). */
  inUse(guestPath: string): boolean {
    for (const uses of this.mountUses.values())
      for (const p of uses) if (p === guestPath || p.startsWith(`${guestPath}/`)) return true;
    return false;
  }

  constructor(vmId: string) {
    this.vmId = vmId;
  }

  /** Runs VM-changing operations (attach, detach, mount, unmount) one at a time. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.then(
      () => {},
      () => {},
    );
    return run;
  }
}

/** What {@link SvmPool.snapshot} reports: the pool's view, for `status` and for tests. */
export interface PoolSnapshot {
  mode: 'global' | 'safe';
  vms: {
    vmId: string;
    state: VmState;
    refs: number;
    disks: { hostPath: string; guestPath: string; readOnly: boolean; refs: number }[];
    mounts: { target: string; refs: number }[];
  }[];
}

/**
 * Reference-counted service VMs (DESIGN.md; the original's `lcow_svm.go`, with its quirks fixed):
 *
 * - `acquire(id, disks)` starts the VM once — concurrent callers share the start and its error — attaches
 *   the disks (refcounted per VM by normalised host path, guest paths `/tmp/d<n>` from a per-VM counter,
 *   the scratch at `/tmp/scratch`) and returns a {@link Lease}. A failed start removes the VM (the original
 *   kept the error forever in global mode); a failed attach rolls back this call's disks and its VM
 *   reference (the original leaked the reference).
 * - `lease.release()` detaches its disks, drops its union mounts and its VM reference; safe mode terminates
 *   a VM at its last reference. Each lease releases exactly once (the original's Get/Put imbalance).
 * - A VM that is stopping makes new acquirers wait for the stop, then start a fresh one.
 * - Every VM operation has a deadline ({@link PoolOptions.timeoutMs}) and callers may pass an AbortSignal.
 * - Attach, detach, mount and unmount on one VM are serialised; long guest work (exports, mkfs) done
 *   through `lease.vm` holds no pool lock.
 */
export class SvmPool {
  readonly #opts: Required<Omit<PoolOptions, 'platform'>>;
  readonly #key: (path: string) => string;
  readonly #entries = new Map<string, Entry>();
  #sweeper: NodeJS.Timeout | null = null;

  constructor(opts: PoolOptions) {
    this.#opts = {
      mode: opts.mode,
      start: opts.start,
      timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      attachConcurrency: opts.attachConcurrency ?? 1,
      lingerDisks: opts.lingerDisks ?? 0,
      lingerMs: opts.lingerMs ?? 120_000,
    };
    if (!Number.isInteger(this.#opts.lingerDisks) || this.#opts.lingerDisks < 0)
      throw new SvmPoolError('ERR_INVALID_ARGUMENT', `lingerDisks ${opts.lingerDisks}: a whole number`);
    if (!Number.isInteger(this.#opts.attachConcurrency) || this.#opts.attachConcurrency < 1)
      throw new SvmPoolError('ERR_INVALID_ARGUMENT', `attachConcurrency ${opts.attachConcurrency}: a positive integer`);
    if (opts.mode !== 'global' && opts.mode !== 'safe')
      throw new SvmPoolError('ERR_INVALID_ARGUMENT', `mode ${JSON.stringify(opts.mode)}: global or safe`);
    if (!(this.#opts.timeoutMs > 0))
      throw new SvmPoolError('ERR_INVALID_ARGUMENT', `timeoutMs ${opts.timeoutMs}: must be positive`);
    this.#key = hostPathKey(opts.platform);
  }

  get mode(): 'global' | 'safe' {
    return this.#opts.mode;
  }

  /** The VM id that serves layer `id`. */
  vmIdFor(id: string): string {
    return this.#opts.mode === 'global' ? GLOBAL_VM_ID : id;
  }

  #deadline<T>(p: Promise<T>, what: string, signal?: AbortSignal): Promise<T> {
    return withDeadline(p, this.#opts.timeoutMs, what, signal);
  }

  #start(e: Entry): Promise<UtilityVm> {
    const ac = new AbortController();
    const booting = this.#opts.start(e.vmId, ac.signal);
    const started = this.#deadline(booting, `service VM ${e.vmId}: start`).then(
      (vm) => {
        e.vm = vm;
        if (e.state === 'starting') e.state = 'running';
        return vm;
      },
      (err: unknown) => {
        ac.abort(err);
        // A start that answers after we gave up must not leave a VM running.
        booting.then((late) => late.terminate()).catch(() => {});
        if (this.#entries.get(e.vmId) === e) this.#entries.delete(e.vmId);
        throw err;
      },
    );
    started.catch(() => {}); // observed by every acquirer; never unhandled
    return started;
  }

  /** Starts (or joins) the VM for `id` and attaches `disks` to it. */
  async acquire(id: string, disks: readonly DiskRequest[] = [], opts: { signal?: AbortSignal } = {}): Promise<Lease> {
    if (typeof id !== 'string' || id.length === 0) throw new SvmPoolError('ERR_INVALID_ARGUMENT', 'acquire: empty id');
    const vmId = this.vmIdFor(id);
    for (;;) {
      let e = this.#entries.get(vmId);
      if (e?.state === 'stopping') {
        // Wait for the stop to finish, then start a fresh VM (the original returned the stop's error).
        await this.#deadline(
          e.stopped!.catch(() => {}),
          `service VM ${vmId}: waiting for its stop`,
          opts.signal,
        );
        continue;
      }
      if (!e) {
        e = new Entry(vmId);
        this.#entries.set(vmId, e);
        e.started = this.#start(e);
      }
      e.refs++;
      try {
        await withDeadline(e.started, this.#opts.timeoutMs, `service VM ${vmId}: start`, opts.signal);
      } catch (err) {
        await this.#dropRef(e).catch(() => {});
        throw err;
      }
      if (this.#entries.get(vmId) !== e || e.state !== 'running') {
        // Stopped (cleanup) between its start and our turn: take the next one.
        await this.#dropRef(e).catch(() => {});
        continue;
      }
      let mapped: { key: string; disk: MappedDisk }[];
      try {
        mapped = await this.#attach(e, disks, opts.signal);
      } catch (err) {
        await this.#dropRef(e).catch(() => {});
        throw err;
      }
      return new Lease(this, e, mapped);
    }
  }

  async #attach(
    e: Entry,
    disks: readonly DiskRequest[],
    signal?: AbortSignal,
  ): Promise<{ key: string; disk: MappedDisk }[]> {
    return e.serial(async () => {
      // Disks already attached take a reference; new ones get guest paths in request order and are
      // hot-added `attachConcurrency` at a time. A disk is registered only once attached: nobody is ever
      // given the guest path of a disk still on its way. On a failure everything this call attached or
      // referenced is released again.
      const out: ({ key: string; disk: MappedDisk } | null)[] = disks.map(() => null);
      const fresh: { i: number; key: string; disk: MappedDisk }[] = [];
      const refd: string[] = [];
      const seen = new Map<string, number>();
      for (const [i, d] of disks.entries()) {
        if (e.state !== 'running')
          throw new SvmPoolError('ERR_VM_STOPPED', `service VM ${e.vmId}: stopped while attaching ${d.hostPath}`);
        const key = this.#key(d.hostPath);
        const have = e.disks.get(key);
        if (have) {
          have.refs++;
          e.idle.delete(key);
          refd.push(key);
          out[i] = { key, disk: have.disk };
        } else if (seen.has(key)) {
          out[i] = { key, disk: fresh[seen.get(key)!]!.disk };
        } else {
          const disk: MappedDisk = {
            hostPath: d.hostPath,
            guestPath: d.scratch ? SCRATCH_GUEST_PATH : `/tmp/d${++e.counter}`,
            readOnly: d.readOnly,
          };
          seen.set(key, fresh.length);
          fresh.push({ i, key, disk });
          out[i] = { key, disk };
        }
      }
      const attached: string[] = [];
      let failure: unknown = null;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (failure === null && next < fresh.length) {
          const f = fresh[next++]!;
          try {
            if (e.state !== 'running')
              throw new SvmPoolError(
                'ERR_VM_STOPPED',
                `service VM ${e.vmId}: stopped while attaching ${f.disk.hostPath}`,
              );
            await this.#deadline(
              e.vm!.hotAdd(f.disk, signal),
              `service VM ${e.vmId}: hot-add ${f.disk.hostPath}`,
              signal,
            );
            e.disks.set(f.key, { disk: f.disk, refs: 0 });
            attached.push(f.key);
          } catch (err) {
            failure ??= err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.#opts.attachConcurrency, fresh.length) }, worker));
      // A cleanup or terminate may have stopped the VM while the disks were being added (its disk table is
      // then gone): the request fails as any operation the stop cut short.
      if (failure === null && e.state !== 'running')
        failure = new SvmPoolError('ERR_VM_STOPPED', `service VM ${e.vmId}: stopped while attaching disks`);
      // References: one per request entry that named the disk.
      for (const o of out) {
        const a = o && attached.includes(o.key) && !refd.includes(o.key) ? e.disks.get(o.key) : undefined;
        if (a) a.refs++;
      }
      if (failure !== null) {
        const mine = out.filter(
          (o): o is { key: string; disk: MappedDisk } =>
            o !== null && (attached.includes(o.key) || refd.includes(o.key)),
        );
        await this.#detach(
          e,
          mine.map((x) => x.key),
        ).catch(() => {});
        throw failure;
      }
      return out as { key: string; disk: MappedDisk }[];
    });
  }

  /**
   * Drops references to disks; the last one hot-removes (`attachConcurrency` at a time). Continues past
   * failures; throws the first.
   */
  async #detach(e: Entry, keys: readonly string[]): Promise<void> {
    let first: unknown = null;
    const gone: string[] = [];
    for (const key of keys) {
      const a = e.disks.get(key);
      if (!a || a.refs === 0) continue;
      a.refs--;
      // A disk that a mounted union still uses (its unmount failed) stays attached, unreferenced.
      if (a.refs > 0 || e.state !== 'running' || e.inUse(a.disk.guestPath)) continue;
      if (a.disk.readOnly && this.#opts.lingerDisks > 0) {
        e.idle.delete(key);
        e.idle.set(key, Date.now());
      } else gone.push(key);
    }
    // Past the cap, the oldest lingering disks go.
    for (const key of e.idle.keys()) {
      if (e.idle.size - gone.filter((k) => e.idle.has(k)).length <= this.#opts.lingerDisks) break;
      gone.push(key);
    }
    this.#sweepLater();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < gone.length) {
        const key = gone[next++]!;
        const a = e.disks.get(key)!;
        try {
          await this.#deadline(e.vm!.hotRemove(a.disk), `service VM ${e.vmId}: hot-remove ${a.disk.hostPath}`);
          e.disks.delete(key);
          e.idle.delete(key);
        } catch (err) {
          // Still attached as far as we know: kept with no references, reused or retried later.
          first ??= err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#opts.attachConcurrency, gone.length) }, worker));
    if (first) throw first;
  }

  /**
   * Lets lingering disks go now: the one of `hostPath` (before its layer is removed), or all of them (before
   * a process stops and leaves its unions to the next one). Throws the first hot-remove error.
   */
  async releaseIdle(hostPath?: string): Promise<void> {
    const want = hostPath === undefined ? null : this.#key(hostPath);
    let first: unknown = null;
    for (const e of this.#entries.values()) {
      if (e.state !== 'running' || e.idle.size === 0) continue;
      await e
        .serial(() => this.#dropIdle(e, (key) => want === null || key === want))
        .catch((err: unknown) => void (first ??= err));
    }
    if (first) throw first;
  }

  /** Hot-removes the lingering disks `pick` chooses (those still unreferenced and unused). Call inside serial. */
  async #dropIdle(e: Entry, pick: (key: string, since: number) => boolean): Promise<void> {
    const keys = [...e.idle].filter(([k, since]) => pick(k, since)).map(([k]) => k);
    let first: unknown = null;
    for (const key of keys) {
      const a = e.disks.get(key);
      e.idle.delete(key);
      if (!a || a.refs > 0 || e.inUse(a.disk.guestPath) || e.state !== 'running') continue;
      try {
        await this.#deadline(e.vm!.hotRemove(a.disk), `service VM ${e.vmId}: hot-remove ${a.disk.hostPath}`);
        e.disks.delete(key);
      } catch (err) {
        first ??= err;
      }
    }
    if (first) throw first;
  }

  /** While disks linger, a timer (not keeping the process alive) lets go of those idle past `lingerMs`. */
  #sweepLater(): void {
    if (this.#sweeper || this.#opts.lingerDisks === 0) return;
    if (![...this.#entries.values()].some((e) => e.idle.size > 0)) return;
    this.#sweeper = setTimeout(
      () => {
        this.#sweeper = null;
        const cutoff = Date.now() - this.#opts.lingerMs;
        void Promise.all(
          [...this.#entries.values()]
            .filter((e) => e.state === 'running')
            .map((e) => e.serial(() => this.#dropIdle(e, (_k, since) => since <= cutoff)).catch(() => {})),
        ).then(() => this.#sweepLater());
      },
      Math.max(1000, this.#opts.lingerMs / 4),
    );
    this.#sweeper.unref();
  }

  /** Drops a VM reference; at the last one in safe mode, stops the VM (the promise settles when it is gone). */
  #dropRef(e: Entry): Promise<void> {
    e.refs--;
    if (e.refs > 0 || this.#opts.mode === 'global' || e.state === 'stopping') return Promise.resolve();
    if (this.#entries.get(e.vmId) !== e) return Promise.resolve(); // its start failed: nothing runs
    return this.#stop(e);
  }

  #stop(e: Entry): Promise<void> {
    if (e.stopped) return e.stopped;
    e.state = 'stopping';
    e.stopped = (async () => {
      try {
        const vm = await e.started.catch(() => null);
        if (vm) await this.#deadline(vm.terminate(), `service VM ${e.vmId}: terminate`);
      } finally {
        e.disks.clear();
        e.idle.clear();
        e.mounts.clear();
        e.mountUses.clear();
        if (this.#entries.get(e.vmId) === e) this.#entries.delete(e.vmId);
      }
    })();
    e.stopped.catch(() => {});
    return e.stopped;
  }

  /** @internal Used by {@link Lease}. */
  async _release(e: Entry, keys: readonly string[], mounts: readonly string[]): Promise<void> {
    let first: unknown = null;
    if (this.#entries.get(e.vmId) === e && e.state === 'running') {
      await e.serial(async () => {
        for (const t of mounts) await this.#unmountLocked(e, t).catch((err: unknown) => void (first ??= err));
        await this.#detach(e, keys).catch((err: unknown) => void (first ??= err));
      });
    }
    await this.#dropRef(e).catch((err: unknown) => void (first ??= err));
    if (first) throw first;
  }

  /** @internal */
  _mount(e: Entry, target: string, lowers: string[], upper: string | undefined, signal?: AbortSignal): Promise<void> {
    return e.serial(async () => {
      if (e.state !== 'running') throw new SvmPoolError('ERR_VM_STOPPED', `service VM ${e.vmId}: stopped`);
      const n = e.mounts.get(target) ?? 0;
      // A union whose last unmount failed is still mounted, held by no one: it goes before a new one.
      if (n === 0 && e.mounts.has(target)) {
        await this.#deadline(e.vm!.unmount(target), `service VM ${e.vmId}: unmount ${target}`, signal);
        e.mounts.delete(target);
        e.mountUses.delete(target);
      }
      if (n === 0) {
        await this.#deadline(
          e.vm!.mountUnion(target, lowers, upper, signal),
          `service VM ${e.vmId}: mount ${target}`,
          signal,
        );
        e.mountUses.set(target, [...lowers, ...(upper ? [upper] : [])]);
      }
      e.mounts.set(target, n + 1);
    });
  }

  /** @internal */
  _unmount(e: Entry, target: string): Promise<void> {
    return e.serial(() => this.#unmountLocked(e, target));
  }

  async #unmountLocked(e: Entry, target: string): Promise<void> {
    const n = e.mounts.get(target) ?? 0;
    if (n === 0 || e.state !== 'running') return;
    if (n > 1) {
      e.mounts.set(target, n - 1);
      return;
    }
    try {
      await this.#deadline(e.vm!.unmount(target), `service VM ${e.vmId}: unmount ${target}`);
    } catch (err) {
      // Still mounted, but no longer held: kept with no reference (its disks stay attached, in use) until a
      // new mount of the target or the VM's stop removes it; the snapshot shows it with `refs` 0.
      e.mounts.set(target, 0);
      throw err;
    }
    e.mounts.delete(target);
    e.mountUses.delete(target);
  }

  /** @internal */
  _current(e: Entry): boolean {
    return this.#entries.get(e.vmId) === e && e.state === 'running';
  }

  /**
   * Stops every VM now, whatever its references (the original's `Cleanup`). Leases of stopped VMs become
   * inert; new acquirers wait for the stops and then start fresh VMs. Throws the first terminate error.
   */
  async cleanup(): Promise<void> {
    const stops = [...this.#entries.values()].map((e) => this.#stop(e));
    const results = await Promise.allSettled(stops);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** Stops the VM for `id` now (the original's `Remove` in safe mode); leases on it become inert. */
  async terminate(id: string): Promise<void> {
    const e = this.#entries.get(this.vmIdFor(id));
    if (e) await this.#stop(e);
  }

  snapshot(): PoolSnapshot {
    return {
      mode: this.#opts.mode,
      vms: [...this.#entries.values()].map((e) => ({
        vmId: e.vmId,
        state: e.state,
        refs: e.refs,
        disks: [...e.disks.values()].map((a) => ({ ...a.disk, refs: a.refs })),
        mounts: [...e.mounts].map(([target, refs]) => ({ target, refs })),
      })),
    };
  }
}

/**
 * One caller's hold on a service VM and the disks it asked for. Release it exactly once (further calls
 * are no-ops); after a cleanup or terminate its VM is gone and releasing does nothing but the bookkeeping.
 */
export class Lease {
  readonly #pool: SvmPool;
  readonly #entry: Entry;
  readonly #keys: string[];
  readonly #mounts: string[] = [];
  #released: Promise<void> | null = null;
  readonly vmId: string;
  readonly vm: UtilityVm;
  /** The disks as attached, in request order, with their guest paths. */
  readonly disks: readonly MappedDisk[];

  constructor(pool: SvmPool, entry: Entry, mapped: { key: string; disk: MappedDisk }[]) {
    this.#pool = pool;
    this.#entry = entry;
    this.#keys = mapped.map((m) => m.key);
    this.vmId = entry.vmId;
    this.vm = entry.vm!;
    this.disks = mapped.map((m) => m.disk);
  }

  /** Whether the lease still holds a running VM. */
  get active(): boolean {
    return this.#released === null && this.#pool._current(this.#entry);
  }

  /** The guest path of one of this lease's disks. */
  guestPath(hostPath: string): string {
    const d = this.disks.find((x) => x.hostPath === hostPath);
    if (!d) throw new SvmPoolError('ERR_INVALID_ARGUMENT', `${hostPath}: not a disk of this lease`);
    return d.guestPath;
  }

  /**
   * Mounts a union of this lease's disks at `target`: `lowers` (nearest first: a disk's host path, or a disk
   * and a folder in it, such as a sandbox's `upper`) and an optional writable `upper` (a sandbox).
   * Refcounted per target: a second mount of the same target issues nothing.
   */
  async mountUnion(
    target: string,
    lowers: readonly (string | { hostPath: string; subdir: string })[],
    upper?: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<void> {
    if (this.#released) throw new SvmPoolError('ERR_INVALID_ARGUMENT', `mount ${target}: the lease is released`);
    if (lowers.length === 0 && !upper)
      throw new SvmPoolError('ERR_INVALID_ARGUMENT', `mount ${target}: needs at least one layer`);
    // Counted before it is done: a release racing this mount then unmounts it after it (the pool runs the
    // two in order), instead of detaching its disks from under it.
    this.#mounts.push(target);
    try {
      await this.#pool._mount(
        this.#entry,
        target,
        lowers.map((l) =>
          typeof l === 'string' ? this.guestPath(l) : `${this.guestPath(l.hostPath)}/${l.subdir.replace(/^\/+/, '')}`,
        ),
        upper ? this.guestPath(upper) : undefined,
        opts.signal,
      );
    } catch (e) {
      const i = this.#mounts.indexOf(target);
      if (i >= 0) this.#mounts.splice(i, 1);
      throw e;
    }
  }

  /** Drops this lease's reference to the union at `target` (unmounted at the last one). */
  async unmountUnion(target: string): Promise<void> {
    const i = this.#mounts.indexOf(target);
    if (i < 0) throw new SvmPoolError('ERR_REFCOUNT', `unmount ${target}: this lease did not mount it`);
    this.#mounts.splice(i, 1);
    await this.#pool._unmount(this.#entry, target);
  }

  /** Unmounts what this lease mounted, detaches its disks and drops its VM reference. Idempotent. */
  release(): Promise<void> {
    this.#released ??= this.#pool._release(this.#entry, this.#keys, this.#mounts.splice(0));
    return this.#released;
  }
}

/**
 * The command for a union mount, as an argument vector (no shell quoting to get wrong): a bind mount for one
 * read-only layer; overlayfs otherwise, lower directories joined with `:` (the original joined read-only
 * unions with `,`, which overlayfs takes as the next option), `upper/` and `work/` in the sandbox. `options`
 * are added to every form (the host backend's `nodev,nosuid`, overlay's `redirect_dir=off`).
 */
export function unionMountArgs(
  target: string,
  lowers: readonly string[],
  upper?: string,
  options: readonly string[] = [],
): string[] {
  for (const p of [...lowers, ...(upper ? [upper] : []), target]) {
    if (p.includes(','))
      throw new SvmPoolError('ERR_INVALID_ARGUMENT', `${p}: a comma cannot be passed in mount options`);
  }
  const esc = (p: string): string => p.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  const o = (...first: string[]): string => [...first, ...options].join(',');
  if (!upper && lowers.length === 1) return ['mount', '-o', o('bind', 'ro'), lowers[0]!, target];
  // A sandbox without parents (FROM scratch): its upper/ directory is the whole union.
  if (upper && lowers.length === 0)
    return options.length === 0
      ? ['mount', '--bind', `${upper}/upper`, target]
      : ['mount', '-o', o('bind'), `${upper}/upper`, target];
  const dirs = [`lowerdir=${lowers.map(esc).join(':')}`];
  if (upper) dirs.push(`upperdir=${esc(`${upper}/upper`)}`, `workdir=${esc(`${upper}/work`)}`);
  return ['mount', '-t', 'overlay', 'overlay', '-o', o(...dirs), target];
}
