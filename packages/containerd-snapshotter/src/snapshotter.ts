// containerd's snapshotter model over the LCOW driver. A committed snapshot is an lcow layer (`layer.vhd`:
// ext4, a dm-verity tree, its root hash as a label); an active one is a sandbox on its parent's chain, mounted
// by the driver as an overlay (read-only, nodev layer mounts below, the sandbox's upper on top) and handed to
// containerd as a bind mount of that union; a view is the union of its parent's chain, read-only — of a single
// layer too: the layer's ext4 mounted as it is would show the lost+found e2fsck needs, which the union hides
// (containerd's conformance suite compares a view with what was written). containerd's
// applier writes a layer into an active snapshot; `Commit` turns what it wrote (the sandbox's upper, whiteouts
// included) into the committed layer. The record (metadata.ts) maps containerd's keys to layer ids.
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { probeExt4, type Ext4Summary } from '@lcow/ext4';
import { checkVerity } from '@lcow/vhd';
import { LcowDriver, serviceLog, type ServiceLog } from '@lcow/driver';
import { KeyedLock } from '@lcow/layerstore';
import { ContentStore, isDigest, type BlobInfo } from './content.ts';
import { SnapshotError } from './errors.ts';
import { matcher } from './filters.ts';
import { checkPin, type Pins } from './pins.ts';
import { Metadata, checkKey, checkLabels, now, type Kind, type Snapshot } from './metadata.ts';

/** What containerd mounts (mount(8)'s type, source and options). */
export interface Mount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** The label a committed snapshot carries its dm-verity root hash in. */
export const ROOT_HASH_LABEL = 'containerd.io/snapshot/lcow.verity.roothash';
/** The chain id containerd's unpacker will commit a snapshot as (its "target"). */
export const SNAPSHOT_REF_LABEL = 'containerd.io/snapshot.ref';
/** The layer's blob digest, which containerd's CRI adds when `disable_snapshot_annotations = false`. */
export const LAYER_DIGEST_LABEL = 'containerd.io/snapshot/cri.layer-digest';

/** A download that has not moved for this long is not waited for (containerd's applier waits instead). */
const STALLED_INGEST_MS = 60_000;

/** Sandboxes kept made ahead of need: every container's `Prepare` makes one. */
const SPARE_SANDBOXES = 2;

/** A layer's blob in containerd's store, and the chain it must make. */
interface BlobSource {
  content: ContentStore;
  namespace: string;
  blob: BlobInfo;
  /** The chain id the layer makes on `parentChain` ('' for none). */
  target: string;
  parentChain: string;
}

/** What a call carries besides its request: the namespace containerd made it in. */
export interface CallContext {
  namespace?: string;
}

export interface SnapshotterOptions {
  /** Driver options (`lcow.KEY=VALUE`), as `lcow --storage-opt` takes them. */
  driverOptions?: readonly string[];
  /** Append a dm-verity tree to every committed layer and label its root hash (default true). */
  verity?: boolean;
  /**
   * `hcsshim`: layers in hcsshim's layout with dmverity-vhd's settings, so each root hash is the one a
   * confidential-container policy lists for the layer. Default `lcow`.
   */
  layout?: 'lcow' | 'hcsshim';
  /** Root hash expected per layer diff id: a layer that hashes otherwise is refused at commit and at mount. */
  pins?: Pins;
  /**
   * containerd's socket. When the unpacker names a layer's blob, the fast path reads it from that
   * containerd's content store and converts it straight into the layer (null: never).
   */
  containerdAddress?: string | null;
  /** Where events go (default: standard error, with a time and a level; {@link serviceLog}). */
  log?: ServiceLog;
}

/**
 * The snapshots of one root. Every method has containerd's semantics (its `snapshots.Snapshotter`): keys are
 * opaque; a parent must be committed; a key or name in use is `ERR_ALREADY_EXISTS`; a snapshot with children
 * cannot be removed (`ERR_FAILED_PRECONDITION`).
 */
export class Snapshotter {
  readonly driver: LcowDriver;
  readonly #meta: Metadata;
  readonly #verity: boolean;
  readonly #hcsshim: boolean;
  readonly #pins: Pins | null;
  readonly #content: ContentStore | null;
  readonly #log: ServiceLog;
  /** One fast-path conversion per chain at a time: parallel pulls of a shared base convert it once. */
  readonly #targets = new KeyedLock();
  /** One decision about the record at a time; the long work (a conversion) runs outside it. */
  readonly #record = new KeyedLock();
  /** Keys being made or committed: taken, as far as another caller can tell. */
  readonly #busy = new Set<string>();
  /** Layers being made, not yet in the record: not Cleanup's to remove. */
  readonly #making = new Set<string>();
  /** Committed layers whose image this process has checked against their root hash. */
  readonly #verified = new Set<string>();

  private constructor(driver: LcowDriver, meta: Metadata, opts: SnapshotterOptions) {
    this.driver = driver;
    this.#meta = meta;
    this.#verity = opts.verity ?? true;
    this.#hcsshim = opts.layout === 'hcsshim';
    this.#pins = opts.pins && opts.pins.size > 0 ? opts.pins : null;
    if (this.#pins && !this.#verity)
      throw new SnapshotError('ERR_INVALID_ARGUMENT', 'pinned root hashes need dm-verity trees (verity is off)');
    this.#content = opts.containerdAddress ? new ContentStore(opts.containerdAddress) : null;
    this.#log = opts.log ?? serviceLog();
  }

  /**
   * Opens the snapshotter of `root` (the driver's data root, with the record beside the layers), and mounts
   * again what active snapshots and views had: after a restart of this process the unions it left are adopted;
   * after a restart of the host they are made anew.
   */
  static async open(root: string, opts: SnapshotterOptions = {}): Promise<Snapshotter> {
    const driver = await LcowDriver.init(root, opts.driverOptions ?? [], {
      containerRoots: true,
      recover: false,
      spareSandboxes: SPARE_SANDBOXES,
    });
    const s = new Snapshotter(driver, await Metadata.open(driver.root), opts);
    for (const snap of s.#meta.all()) {
      if (snap.kind === 'committed') continue;
      const parent = snap.parent ? (s.#meta.get(snap.parent) ?? null) : null;
      await s
        .#verifyChain(parent, `mount ${JSON.stringify(snap.key)}`)
        .then(() => driver.get(snap.id))
        .catch((e: unknown) => s.#log(`lcow snapshotter: ${snap.key}: not mounted: ${errorMessage(e)}`, 'warn'));
    }
    return s;
  }

  #run<T>(fn: () => Promise<T>): Promise<T> {
    return this.#record.run('record', fn);
  }

  /** The committed parent a new snapshot goes on (none for ''). */
  #parentOf(parent: unknown, what: string): Snapshot | null {
    if (parent === undefined || parent === null || parent === '') return null;
    const p = this.#meta.need(checkKey(parent, what), what);
    if (p.kind !== 'committed')
      throw new SnapshotError('ERR_FAILED_PRECONDITION', `${what}: parent ${JSON.stringify(p.key)} is not committed`);
    return p;
  }

  /**
   * Checks, once per process, every committed layer of a chain against the root hash recorded when it was
   * committed, before anything mounts it: the whole image is read and its dm-verity tree recomputed (this
   * host's kernel mounts the layer without device-mapper). A layer that does not match is refused, named.
   */
  async #verifyChain(top: Snapshot | null, what: string): Promise<void> {
    for (let s = top; s; s = s.parent ? (this.#meta.get(s.parent) ?? null) : null) {
      if (s.kind !== 'committed' || this.#verified.has(s.id)) continue;
      const expected = s.labels[ROOT_HASH_LABEL] ?? null;
      if (this.#pins)
        checkPin(
          this.#pins,
          await this.driver.provenDiffId(s.id),
          expected,
          `${what}: snapshot ${JSON.stringify(s.key)}`,
        );
      if (!expected) continue;
      const file = join((await this.driver.getMetadata(s.id)).dir, 'layer.vhd');
      // The tree starts where the ext4 filesystem ends.
      const r = await checkVerity(file, (await superblockOf(file)).size, expected).catch((e: unknown) => ({
        ok: false as const,
        rootDigest: '',
        why: errorMessage(e),
      }));
      if (!r.ok)
        throw new SnapshotError(
          'ERR_FAILED_PRECONDITION',
          `${what}: snapshot ${JSON.stringify(s.key)} (layer ${s.id}) does not match its root hash ${expected}${'why' in r ? ` (${r.why})` : `: it hashes to ${r.rootDigest}`}; not mounted`,
        );
      this.#verified.add(s.id);
    }
  }

  #reserve(key: string, what: string): void {
    if (this.#meta.get(key) || this.#busy.has(key))
      throw new SnapshotError('ERR_ALREADY_EXISTS', `${what}: snapshot ${JSON.stringify(key)} already exists`);
    this.#busy.add(key);
  }

  /** Where a snapshot's union is mounted on this host (the driver's get, refcounted). */
  async #union(snap: Pick<Snapshot, 'id' | 'key'>): Promise<string> {
    const fs = await this.driver.get(snap.id);
    if (!fs.path)
      throw new SnapshotError(
        'ERR_FAILED_PRECONDITION',
        `snapshot ${JSON.stringify(snap.key)}: not mountable on this host`,
      );
    return fs.path;
  }

  static #bind(source: string, kind: Kind): Mount[] {
    return [{ type: 'bind', source, target: '', options: ['rbind', kind === 'view' ? 'ro' : 'rw'] }];
  }

  /**
   * `Prepare`: an active snapshot on `parent` (committed, or none), mounted read-write. When the labels name
   * the chain id the unpacker will commit it as (`containerd.io/snapshot.ref`) and that is already committed
   * on this parent, or the layer's blob (`containerd.io/snapshot/cri.layer-digest`) can be converted straight
   * from containerd's content store (the fast path), the answer is `ERR_ALREADY_EXISTS`: the unpacker then
   * finds the committed snapshot and extracts nothing.
   */
  async prepare(
    key: string,
    parent: string,
    labels: Record<string, string> = {},
    ctx: CallContext = {},
  ): Promise<Mount[]> {
    return this.#make('active', key, parent, labels, ctx);
  }

  /** `View`: a read-only snapshot of `parent`'s chain. */
  async view(key: string, parent: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    return this.#make('view', key, parent, labels);
  }

  async #make(
    kind: 'active' | 'view',
    key: string,
    parentKey: string,
    labels: Record<string, string>,
    ctx: CallContext = {},
  ): Promise<Mount[]> {
    const what = kind === 'active' ? 'prepare' : 'view';
    checkKey(key, what);
    const lbl = checkLabels(labels, `${what} ${JSON.stringify(key)}`);
    const target = kind === 'active' ? lbl[SNAPSHOT_REF_LABEL] : undefined;
    const parent = await this.#run(async () => {
      const p = this.#parentOf(parentKey, `${what} ${JSON.stringify(key)}`);
      if (target !== undefined) this.#refuseIfCommitted(target, parentKey, key);
      this.#reserve(key, what);
      return p;
    });
    let id: string | null = null;
    let mounted: string | null = null;
    try {
      await this.#verifyChain(parent, `${what} ${JSON.stringify(key)}`);
      if (target !== undefined && (await this.#fastPath(key, target, parent, parentKey ?? '', lbl, ctx)))
        this.#refuseIfCommitted(target, parentKey, key);
      if (kind === 'active') {
        id = this.#newId();
        await this.driver.createReadWrite(id, parent?.id ?? null);
      } else if (parent) id = parent.id;
      else {
        id = this.#newId();
        await this.driver.create(id, null);
      }
      const path = await this.#union({ id, key });
      mounted = id;
      const at = now();
      const snap: Snapshot = { key, id, kind, parent: parent?.key ?? '', created: at, updated: at, labels: lbl };
      if (kind === 'active') snap.base = await usedBy(path);
      await this.#run(() => this.#meta.change([snap]));
      return Snapshotter.#bind(path, kind);
    } catch (e) {
      if (mounted) await this.driver.put(mounted).catch(() => {});
      if (id && id !== parent?.id) await this.driver.remove(id).catch(() => {});
      throw e;
    } finally {
      this.#busy.delete(key);
      if (id) this.#making.delete(id);
    }
  }

  /** The committed snapshot of chain `target` on `parentKey`, as containerd's metadata looks it up. */
  #committedTarget(target: string, parentKey: string): Snapshot | undefined {
    return this.#meta
      .all()
      .find((s) => s.kind === 'committed' && s.labels[SNAPSHOT_REF_LABEL] === target && s.parent === parentKey);
  }

  #refuseIfCommitted(target: string, parentKey: string | undefined, key: string): void {
    if (this.#committedTarget(target, parentKey ?? ''))
      throw new SnapshotError(
        'ERR_ALREADY_EXISTS',
        `prepare ${JSON.stringify(key)}: target snapshot ${JSON.stringify(target)} already exists`,
      );
  }

  /**
   * The fast path: the blob the labels name, read from containerd's content store (waiting while a download
   * of it is under way), its digest and size checked, its diff id checked against the chain id, converted
   * straight into a committed layer named for its chain. False when it does not apply — no blob named, no
   * content store, a parent whose chain id is unknown, a blob nobody is downloading — and `Prepare` then
   * makes an active snapshot for containerd's applier, as without it.
   */
  async #fastPath(
    key: string,
    target: string,
    parent: Snapshot | null,
    parentKey: string,
    lbl: Record<string, string>,
    ctx: CallContext,
  ): Promise<boolean> {
    const digest = lbl[LAYER_DIGEST_LABEL];
    const content = this.#content;
    if (!content || !ctx.namespace || !isDigest(digest) || !isDigest(target)) return false;
    const parentChain = parent ? chainIdOf(parent) : '';
    if (parentChain === null) return false;
    const what = `prepare ${JSON.stringify(key)}`;
    let blob: BlobInfo | null;
    try {
      blob = await this.#awaitBlob(content, ctx.namespace, digest);
    } catch (e) {
      this.#log(`lcow snapshotter: ${what}: no fast path: ${errorMessage(e)}`, 'warn');
      return false;
    }
    if (!blob) {
      this.#log(
        `lcow snapshotter: ${what}: blob ${digest} is not in containerd's store yet: containerd's applier unpacks it`,
      );
      return false;
    }
    // Named for the chain and, past the first layer, for the parent as this containerd names it (a chain id
    // reached on another namespace's parent is another snapshot).
    const name = parentKey ? `${target}@${createHash('sha256').update(parentKey).digest('hex').slice(0, 16)}` : target;
    return this.#targets.run(name, async () => {
      if (this.#committedTarget(target, parentKey)) return true;
      const taken = await this.#run(async () => {
        if (this.#meta.get(name) || this.#busy.has(name)) return true;
        this.#busy.add(name);
        return false;
      });
      if (taken) return false;
      const id = this.#newId();
      try {
        const rootHash = await this.#layerFromBlob(
          id,
          what,
          { content, namespace: ctx.namespace!, blob, target, parentChain },
          parent,
        );
        const at = now();
        const committed: Snapshot = {
          key: name,
          id,
          kind: 'committed',
          parent: parentKey,
          created: at,
          updated: at,
          labels: withoutRootHash(lbl, rootHash),
        };
        try {
          await this.#run(() => this.#meta.change([committed]));
        } catch (e) {
          await this.driver.remove(id).catch(() => {});
          throw e;
        }
        this.#verified.add(id);
        this.#log(
          `lcow snapshotter: ${what}: blob ${digest} (${blob.size} bytes) converted from containerd's store as ${JSON.stringify(name)}`,
          'debug',
        );
        return true;
      } finally {
        this.#busy.delete(name);
        this.#making.delete(id);
      }
    });
  }

  /**
   * Makes layer `id` on `parent` from `blob` of containerd's store (its bytes checked against its size and
   * digest as they stream), the tar's diff id checked against chain `target` on `parentChain`, and its pin,
   * if it has one. Returns its root hash. On any failure no layer `id` is left.
   */
  async #layerFromBlob(id: string, what: string, src: BlobSource, parent: Snapshot | null): Promise<string | null> {
    const { content, namespace, blob, target, parentChain } = src;
    await this.driver.createFromDiff(id, parent?.id ?? null, content.read(namespace, blob), {
      verity: this.#verity,
      hcsshim: this.#hcsshim,
      diffId: (diffId) => {
        const chain = parentChain
          ? `sha256:${createHash('sha256').update(`${parentChain} ${diffId}`).digest('hex')}`
          : diffId;
        if (chain !== target)
          throw new SnapshotError(
            'ERR_FAILED_PRECONDITION',
            `${what}: blob ${blob.digest} holds the layer ${diffId}, whose chain id on ${parentChain || 'no parent'} is ${chain}, not ${target}`,
          );
      },
    });
    try {
      const rootHash = await this.#rootHash(id);
      checkPin(this.#pins, await this.driver.provenDiffId(id), rootHash, what);
      return rootHash;
    } catch (e) {
      await this.driver.remove(id).catch(() => {});
      throw e;
    }
  }

  /**
   * The blob `digest` once it is in the store: at once, or when the download under way ends. Null when
   * nobody is downloading it (the unpacker starts its downloads after this `Prepare`) or the download stalls.
   */
  async #awaitBlob(content: ContentStore, namespace: string, digest: string): Promise<BlobInfo | null> {
    let last = -1;
    let since = Date.now();
    for (;;) {
      const info = await content.info(namespace, digest);
      if (info) return info;
      const ingest = await content.ingest(namespace, digest);
      if (!ingest) return content.info(namespace, digest); // it may have finished in between
      if (ingest.offset !== last) {
        last = ingest.offset;
        since = Date.now();
      } else if (Date.now() - since > STALLED_INGEST_MS) return null;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  #newId(): string {
    const id = randomBytes(32).toString('hex');
    this.#making.add(id);
    return id;
  }

  /** `Mounts`: what to mount for an active snapshot or a view. */
  async mounts(key: string): Promise<Mount[]> {
    const snap = this.#meta.need(checkKey(key, 'mounts'), 'mounts');
    if (snap.kind === 'committed')
      throw new SnapshotError('ERR_FAILED_PRECONDITION', `mounts: snapshot ${JSON.stringify(key)} is committed`);
    // The driver's get is refcounted: take one to learn the path, give it back (the snapshot keeps its own).
    const path = await this.#union(snap);
    await this.driver.put(snap.id);
    return Snapshotter.#bind(path, snap.kind);
  }

  /**
   * `Commit`: the active snapshot `key` becomes the committed `name` — what was written into it, as an lcow
   * layer on the same parent (with a dm-verity tree, its root hash labelled) — and `key` is gone.
   */
  async commit(name: string, key: string, labels: Record<string, string> = {}, ctx: CallContext = {}): Promise<void> {
    checkKey(name, 'commit');
    checkKey(key, 'commit');
    const lbl = checkLabels(labels, `commit ${JSON.stringify(name)}`);
    const active = await this.#run(async () => {
      const a = this.#meta.need(key, 'commit');
      if (a.kind !== 'active')
        throw new SnapshotError('ERR_FAILED_PRECONDITION', `commit: snapshot ${JSON.stringify(key)} is not active`);
      if (this.#busy.has(key))
        throw new SnapshotError('ERR_FAILED_PRECONDITION', `commit: snapshot ${JSON.stringify(key)} is in use`);
      this.#reserve(name, 'commit');
      this.#busy.add(key);
      return a;
    });
    const parent = active.parent ? this.#meta.get(active.parent) : undefined;
    const what = `commit ${JSON.stringify(name)}`;
    const blob = await this.#committedBlob(lbl, parent ?? null, ctx, what);
    const id = this.#newId();
    let made = false;
    try {
      // The sandbox is let go first, so that its disk is read whole from the host.
      await this.driver.put(active.id);
      let rootHash: string | null;
      if (blob) {
        rootHash = await this.#layerFromBlob(id, what, blob, parent ?? null);
        made = true;
      } else {
        await this.driver.createFromDiff(id, parent?.id ?? null, this.driver.diff(active.id, parent?.id ?? null), {
          verity: this.#verity,
          hcsshim: this.#hcsshim,
          // With pins, the diff id is taken (and kept) to look the layer's pin up.
          ...(this.#pins ? { diffId: () => {} } : {}),
        });
        made = true;
        rootHash = await this.#rootHash(id);
        checkPin(this.#pins, await this.driver.provenDiffId(id), rootHash, what);
      }
      const at = now();
      const committed: Snapshot = {
        key: name,
        id,
        kind: 'committed',
        parent: active.parent,
        created: at,
        updated: at,
        labels: withoutRootHash(lbl, rootHash),
      };
      await this.#run(() => this.#meta.change([committed], [key]));
    } catch (e) {
      if (made) await this.driver.remove(id).catch(() => {});
      // The active snapshot stays as it was, mounted.
      await this.driver.get(active.id).catch(() => {});
      throw e;
    } finally {
      this.#busy.delete(name);
      this.#busy.delete(key);
      this.#making.delete(id);
    }
    await this.driver
      .remove(active.id)
      .catch((e: unknown) =>
        this.#log(
          `lcow snapshotter: commit ${JSON.stringify(name)}: the sandbox ${active.id} stays until Cleanup: ${String(e)}`,
          'warn',
        ),
      );
  }

  /**
   * For a commit of a layer containerd's unpacker extracted (its labels name the chain and the blob, and the
   * blob is in containerd's store by now): the blob, so that the layer is made from the original tar — the
   * same bytes, and so the same root hash, as a policy computed from the image lists, and a diff id proven
   * against the chain — rather than from what the applier wrote. Null when the labels or the store do not
   * allow it; the commit is then made from the sandbox.
   */
  async #committedBlob(
    lbl: Record<string, string>,
    parent: Snapshot | null,
    ctx: CallContext,
    what: string,
  ): Promise<BlobSource | null> {
    const target = lbl[SNAPSHOT_REF_LABEL];
    const digest = lbl[LAYER_DIGEST_LABEL];
    const content = this.#content;
    if (!content || !ctx.namespace || !isDigest(target) || !isDigest(digest)) return null;
    const parentChain = parent ? chainIdOf(parent) : '';
    if (parentChain === null) return null;
    const blob = await content.info(ctx.namespace, digest).catch((e: unknown) => {
      this.#log(`lcow snapshotter: ${what}: made from the sandbox: ${errorMessage(e)}`, 'warn');
      return null;
    });
    return blob ? { content, namespace: ctx.namespace, blob, target, parentChain } : null;
  }

  async #rootHash(id: string): Promise<string | null> {
    const file = join((await this.driver.getMetadata(id)).dir, 'layer.vhd.rootdigest');
    return readFile(file, 'utf8').then(
      (t) => t.trim() || null,
      () => null,
    );
  }

  /** `Remove`: a snapshot with no children; its layer (or its mount, for a view) goes. */
  async remove(key: string): Promise<void> {
    checkKey(key, 'remove');
    const snap = await this.#run(async () => {
      const s = this.#meta.need(key, 'remove');
      if (this.#busy.has(key))
        throw new SnapshotError('ERR_FAILED_PRECONDITION', `remove: snapshot ${JSON.stringify(key)} is in use`);
      const children = this.#meta.children(key);
      if (children.length > 0)
        throw new SnapshotError(
          'ERR_FAILED_PRECONDITION',
          `remove: snapshot ${JSON.stringify(key)} has ${children.length} children (${JSON.stringify(children[0])}…)`,
        );
      // Forgotten first: a crash after this leaves a layer the record does not name, which Cleanup removes.
      await this.#meta.change([], [key]);
      return s;
    });
    if (snap.kind !== 'committed') await this.driver.put(snap.id).catch(() => {});
    if (snap.kind !== 'view' || snap.parent === '')
      await this.driver
        .remove(snap.id)
        .catch((e: unknown) =>
          this.#log(
            `lcow snapshotter: remove ${JSON.stringify(key)}: layer ${snap.id} stays until Cleanup: ${String(e)}`,
            'warn',
          ),
        );
  }

  /** `Stat`. */
  stat(key: string): Snapshot {
    return this.#meta.need(checkKey(key, 'stat'), 'stat');
  }

  /**
   * `Update`: a snapshot's labels — all of them (`paths` empty or `labels`) or the ones named
   * (`labels.NAME`; a name absent from `labels` is removed). Name, kind and parent cannot change.
   */
  async update(key: string, labels: Record<string, string>, paths: readonly string[]): Promise<Snapshot> {
    checkKey(key, 'update');
    const lbl = checkLabels(labels, `update ${JSON.stringify(key)}`);
    return this.#run(async () => {
      const s = this.#meta.need(key, 'update');
      let next: Record<string, string> = { ...s.labels };
      if (paths.length === 0) next = lbl;
      for (const p of paths) {
        if (p === 'labels') next = lbl;
        else if (p.startsWith('labels.')) {
          const k = p.slice('labels.'.length);
          if (Object.hasOwn(lbl, k)) next[k] = lbl[k]!;
          else delete next[k];
        } else
          throw new SnapshotError(
            'ERR_INVALID_ARGUMENT',
            `update ${JSON.stringify(key)}: field ${JSON.stringify(p)} cannot change`,
          );
      }
      // The root hash a committed layer is checked against is the snapshotter's to say, not a client's.
      if (s.labels[ROOT_HASH_LABEL] !== undefined) next[ROOT_HASH_LABEL] = s.labels[ROOT_HASH_LABEL];
      else delete next[ROOT_HASH_LABEL];
      const updated: Snapshot = { ...s, labels: next, updated: now() };
      await this.#meta.change([updated]);
      return updated;
    });
  }

  /** `List`: the snapshots any of `filters` selects (all, with none). */
  list(filters: readonly string[] = []): Snapshot[] {
    const keep = matcher(filters);
    return this.#meta.all().filter(keep);
  }

  /**
   * `Usage`: bytes and inodes a snapshot uses on its own. A committed one: its image files' allocated bytes and
   * the inodes in use in its filesystem; an active one: what was written into it (bytes of content, entries).
   */
  async usage(key: string): Promise<{ size: number; inodes: number }> {
    const snap = this.#meta.need(checkKey(key, 'usage'), 'usage');
    try {
      return await this.#usage(snap);
    } catch (e) {
      // Committed or removed while it was being measured (the CRI asks every snapshot every 10 s).
      if (this.#meta.get(key)?.id !== snap.id)
        throw new SnapshotError('ERR_NOT_FOUND', `usage: snapshot ${JSON.stringify(key)} is gone`, { cause: e });
      throw e;
    }
  }

  async #usage(snap: Snapshot): Promise<{ size: number; inodes: number }> {
    if (snap.kind === 'view') return { size: 0, inodes: 0 };
    if (snap.kind === 'active' && snap.base) {
      // The union's statfs is its sandbox's (overlayfs reports its upper filesystem): what the container
      // wrote, less what the empty sandbox held — at once, where a walk of every file would take seconds
      // (and the CRI asks every snapshot every 10 s).
      const path = await this.#union(snap);
      try {
        const used = await usedBy(path);
        return { size: Math.max(0, used.size - snap.base.size), inodes: Math.max(0, used.inodes - snap.base.inodes) };
      } finally {
        await this.driver.put(snap.id);
      }
    }
    if (snap.kind === 'active') {
      const parent = snap.parent ? (this.#meta.get(snap.parent)?.id ?? null) : null;
      const [size, changes] = await Promise.all([
        this.driver.diffSize(snap.id, parent),
        this.driver.changes(snap.id, parent),
      ]);
      return { size, inodes: changes.length };
    }
    const file = join((await this.driver.getMetadata(snap.id)).dir, 'layer.vhd');
    const [st, sb] = await Promise.all([stat(file), superblockOf(file)]);
    return { size: st.blocks * 512, inodes: sb.inodesCount - sb.freeInodes };
  }

  /**
   * `Cleanup`: layers the record does not name (left by a crash between a layer's making and its recording,
   * or a removal interrupted after the record forgot it) are removed, with the layer store's own cleanup
   * (interrupted removals, partial creations, temporary files of dead processes). Mounts are left alone.
   */
  async cleanup(): Promise<{ removed: string[] }> {
    return this.#run(async () => {
      const named = this.#meta.ids();
      const removed: string[] = [];
      for (const id of await this.driver.store.list()) {
        if (named.has(id) || this.#making.has(id) || this.driver.refs(id) > 0) continue;
        try {
          await this.driver.remove(id);
          removed.push(id);
        } catch (e) {
          this.#log(`lcow snapshotter: cleanup: layer ${id}: ${String(e)}`, 'warn');
        }
      }
      // The store's own cleanup (what dead processes left), not the driver's, which is moby's shutdown: it
      // would let go of every union, and containers run on them.
      await this.driver.store.cleanup();
      return { removed };
    });
  }

  /** Stops: the unions stay mounted (containers run on them); a new process adopts them. */
  async close(): Promise<void> {
    this.#content?.close();
    await this.driver.close({ detach: true });
  }
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** `labels` with the root-hash label as the snapshotter says it (a client cannot set it). */
function withoutRootHash(labels: Record<string, string>, rootHash: string | null): Record<string, string> {
  const out = { ...labels };
  delete out[ROOT_HASH_LABEL];
  if (rootHash) out[ROOT_HASH_LABEL] = rootHash;
  return out;
}

/**
 * The chain id of a committed snapshot: its `containerd.io/snapshot.ref` label, or the chain id its key ends
 * with (containerd's metadata commits an unpacked layer as `NAMESPACE/N/CHAINID`); null when neither says.
 */
function chainIdOf(s: Snapshot): string | null {
  const ref = s.labels[SNAPSHOT_REF_LABEL];
  if (isDigest(ref)) return ref;
  return /(?:^|\/)(sha256:[0-9a-f]{64})$/.exec(s.key)?.[1] ?? null;
}

/** Bytes and inodes in use in the filesystem mounted at `path`. */
async function usedBy(path: string): Promise<{ size: number; inodes: number }> {
  const st = await statfs(path);
  return { size: (st.blocks - st.bfree) * st.bsize, inodes: st.files - st.ffree };
}

/** The summary of the ext4 superblock at the start of `file`. */
async function superblockOf(file: string): Promise<Ext4Summary> {
  const fh = await open(file, 'r');
  try {
    return await probeExt4(async (at, n) => {
      const b = Buffer.alloc(n);
      const { bytesRead } = await fh.read(b, 0, n, at);
      return b.subarray(0, bytesRead);
    }, file);
  } finally {
    await fh.close();
  }
}
