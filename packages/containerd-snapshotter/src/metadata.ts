// The snapshotter's own record: containerd's keys (opaque strings: `/`, spaces, unicode) mapped to lcow layer
// ids, with each snapshot's kind, parent, labels and times. One JSON file, replaced whole on every change
// (temporary file, fsync, rename, folder fsync): a crash leaves the old record or the new one, never a mix.
// The layers a record does not name are the snapshotter's to remove at `Cleanup`, so every operation creates
// its layer before the record names it, and forgets it in the record before removing it.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '@lcow/layerstore';
import { SnapshotError } from './errors.ts';

export type Kind = 'active' | 'view' | 'committed';

/** One snapshot as the record keeps it. */
export interface Snapshot {
  key: string;
  /** The lcow layer: a sandbox for an active one, a `layer.vhd` for a committed one; a view's is its parent's. */
  id: string;
  kind: Kind;
  /** The parent's key; '' for none. */
  parent: string;
  /** ISO times. */
  created: string;
  updated: string;
  labels: Record<string, string>;
  /**
   * An active snapshot's filesystem usage when it was made (bytes and inodes an empty sandbox already
   * uses): `Usage` is what is used now less this.
   */
  base?: { size: number; inodes: number };
}

/**
 * Now, as an ISO time with nanoseconds (`2026-12-07T13:07:23.764276795Z`): containerd compares a snapshot's
 * times with its own clock's, to the nanosecond; milliseconds would put an update before the call that made
 * it. The wall clock at start plus the monotonic clock since, in microseconds, rounded up.
 */
export function now(): string {
  const us = Math.ceil((performance.timeOrigin + performance.now()) * 1000);
  const ms = Math.floor(us / 1000);
  return new Date(ms).toISOString().replace(/Z$/, `${String(us % 1000).padStart(3, '0')}000Z`);
}

/** An ISO time (with up to nanoseconds) as seconds and nanoseconds since 1970. */
export function secondsAndNanos(iso: string): { seconds: number; nanos: number } {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(iso);
  const seconds = Math.floor(Date.parse(`${m ? m[1] : iso}Z`) / 1000);
  return { seconds, nanos: m?.[2] ? Number(m[2].padEnd(9, '0')) : 0 };
}

/** Longest key and label (name plus value) containerd accepts; longer ones are refused, not cut. */
export const MAX_KEY_BYTES = 4096;
export const MAX_LABEL_BYTES = 4096;
/** Largest record read back (a million snapshots with labels stay far below). */
const MAX_RECORD_BYTES = 1 << 30;

export const RECORD_FILE = 'snapshots.json';

/** Checks a key as containerd would send it: not empty, no NUL, at most {@link MAX_KEY_BYTES} bytes. */
export function checkKey(key: unknown, what: string): string {
  if (typeof key !== 'string' || key === '')
    throw new SnapshotError('ERR_INVALID_ARGUMENT', `${what}: a snapshot key is needed`);
  if (key.includes('\0')) throw new SnapshotError('ERR_INVALID_ARGUMENT', `${what}: a key with a NUL`);
  if (Buffer.byteLength(key) > MAX_KEY_BYTES)
    throw new SnapshotError('ERR_INVALID_ARGUMENT', `${what}: a key of more than ${MAX_KEY_BYTES} bytes`);
  return key;
}

/** Checks labels: strings, each name plus value at most {@link MAX_LABEL_BYTES} bytes. */
export function checkLabels(labels: unknown, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (labels === undefined || labels === null) return out;
  if (typeof labels !== 'object') throw new SnapshotError('ERR_INVALID_ARGUMENT', `${what}: labels are not a map`);
  for (const [k, v] of Object.entries(labels as Record<string, unknown>)) {
    if (k === '' || typeof v !== 'string')
      throw new SnapshotError('ERR_INVALID_ARGUMENT', `${what}: label ${JSON.stringify(k)} is not a string`);
    if (Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_LABEL_BYTES)
      throw new SnapshotError(
        'ERR_INVALID_ARGUMENT',
        `${what}: label ${JSON.stringify(k.slice(0, 80))}: name and value longer than ${MAX_LABEL_BYTES} bytes`,
      );
    out[k] = v;
  }
  return out;
}

/** The record of every snapshot, loaded once and written through. */
export class Metadata {
  readonly #file: string;
  readonly #byKey: Map<string, Snapshot>;
  #writing: Promise<void> = Promise.resolve();

  private constructor(file: string, snapshots: Snapshot[]) {
    this.#file = file;
    this.#byKey = new Map(snapshots.map((s) => [s.key, s]));
  }

  /** Reads `<root>/snapshots.json` (none yet: empty). A record that does not parse is an error, not a reset. */
  static async open(root: string): Promise<Metadata> {
    const file = join(root, RECORD_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Metadata(file, []);
      throw e;
    }
    if (text.length > MAX_RECORD_BYTES)
      throw new SnapshotError('ERR_FAILED_PRECONDITION', `${file}: larger than a record can be`);
    let doc: { version?: unknown; snapshots?: unknown };
    try {
      doc = JSON.parse(text) as typeof doc;
    } catch (e) {
      throw new SnapshotError('ERR_FAILED_PRECONDITION', `${file}: not JSON; the record is damaged`, { cause: e });
    }
    if (doc?.version !== 1 || !Array.isArray(doc.snapshots))
      throw new SnapshotError('ERR_FAILED_PRECONDITION', `${file}: not a snapshot record of version 1`);
    const snapshots = doc.snapshots.map((s: unknown, i: number) => {
      const o = s as Partial<Snapshot> | null;
      if (
        !o ||
        typeof o.key !== 'string' ||
        typeof o.id !== 'string' ||
        !['active', 'view', 'committed'].includes(o.kind as string) ||
        typeof o.parent !== 'string' ||
        typeof o.created !== 'string' ||
        typeof o.updated !== 'string' ||
        typeof o.labels !== 'object' ||
        o.labels === null ||
        (o.base !== undefined && !(Number.isSafeInteger(o.base?.size) && Number.isSafeInteger(o.base?.inodes)))
      )
        throw new SnapshotError('ERR_FAILED_PRECONDITION', `${file}: entry ${i} is not a snapshot`);
      return o as Snapshot;
    });
    return new Metadata(file, snapshots);
  }

  get(key: string): Snapshot | undefined {
    return this.#byKey.get(key);
  }

  /** A snapshot that must exist. */
  need(key: string, what: string): Snapshot {
    const s = this.#byKey.get(key);
    if (!s) throw new SnapshotError('ERR_NOT_FOUND', `${what}: snapshot ${JSON.stringify(key)} does not exist`);
    return s;
  }

  all(): Snapshot[] {
    return [...this.#byKey.values()];
  }

  /** Keys of the snapshots whose parent is `key`. */
  children(key: string): string[] {
    return this.all()
      .filter((s) => s.parent === key)
      .map((s) => s.key);
  }

  /** Every layer id the record names. */
  ids(): Set<string> {
    return new Set(this.all().map((s) => s.id));
  }

  /** Applies `change` (puts and deletes) and writes the record; on a failed write the change is undone. */
  async change(put: Snapshot[], del: string[] = []): Promise<void> {
    const before = new Map(this.#byKey);
    for (const k of del) this.#byKey.delete(k);
    for (const s of put) this.#byKey.set(s.key, s);
    const text = JSON.stringify({ version: 1, snapshots: this.all() });
    const write = this.#writing.then(() => writeFileAtomic(this.#file, text));
    this.#writing = write.catch(() => {});
    try {
      await write;
    } catch (e) {
      this.#byKey.clear();
      for (const [k, v] of before) this.#byKey.set(k, v);
      throw e;
    }
  }
}
