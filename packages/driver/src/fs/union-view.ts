// The inproc backend's read-only union: a stack of ext4 layers read with `@lcow/ext4`, merged as
// overlayfs merges them — the topmost entry wins; a 0:0 character device whites out a name below it; a
// directory marked `trusted.overlay.opaque=y` hides everything below it; a non-directory ends the merge.
// Symlinks resolve through the union and never leave it. Writes are not offered: this view is read-only.
import type { Readable } from 'node:stream';
import {
  isOverlayOpaque,
  isOverlayWhiteout,
  OVERLAY_OPAQUE_XATTR,
  SYNTHETIC_LOST_FOUND,
  type Ext4Dirent,
  type Ext4Fs,
  type Ext4Stat,
} from '@lcow/ext4';
import { DriverError } from '../errors.ts';

/** One layer of the union: a filesystem and the directory in it that is the layer's root (`upper` for a sandbox). */
export interface UnionLayer {
  fs: Ext4Fs;
  root?: string;
}

const MAX_SYMLINKS = 40;
/** Directory lookups remembered per union (forgotten all at once when full). */
const DIR_CACHE = 65_536;

const EPOCH = { sec: 0, nsec: 0 };
/** The root of a union of no layers. */
const EMPTY_ROOT: Ext4Stat = {
  ino: 2,
  type: 'dir',
  mode: 0o755,
  uid: 0,
  gid: 0,
  size: 0,
  nlink: 2,
  blocks: 0,
  atime: EPOCH,
  mtime: EPOCH,
  ctime: EPOCH,
  birthtime: null,
  rdev: null,
  flags: 0,
};

function split(p: string): string[] {
  return p.split('/').filter((x) => x !== '' && x !== '.');
}

/** Where a union path is found: the topmost layer that has it, and its stat there. */
interface Hit {
  layer: number;
  /** The path inside that layer's filesystem. */
  path: string;
  stat: Ext4Stat;
  /** For a directory: the layers whose copies of it merge (top first, down to an opaque one). */
  merged: number[];
}

export class UnionView {
  readonly #layers: { fs: Ext4Fs; root: string }[];
  readonly #all: number[];
  readonly #dirs = new Map<string, Hit | null>();

  /**
   * `layers` top first (the sandbox or newest layer first, as layerchain.json orders parents). No layers:
   * an empty root directory (a layer created on nothing, with nothing applied yet).
   */
  constructor(layers: readonly UnionLayer[]) {
    this.#layers = layers.map((l) => ({ fs: l.fs, root: `/${split(l.root ?? '/').join('/')}`.replace(/\/$/, '') }));
    this.#all = this.#layers.map((_, i) => i);
  }

  #inLayer(i: number, parts: readonly string[]): string {
    return `${this.#layers[i]!.root}/${parts.join('/')}`;
  }

  #lstatIn(i: number, parts: readonly string[]): Promise<Ext4Stat | null> {
    return this.#layers[i]!.fs.tryLstat(this.#inLayer(i, parts));
  }

  async #opaque(i: number, parts: readonly string[]): Promise<boolean> {
    const x = await this.#layers[i]!.fs.listXattrs(this.#inLayer(i, parts));
    return isOverlayOpaque(x.get(OVERLAY_OPAQUE_XATTR));
  }

  /** The topmost entry at `prefix` among the layers `active` (those where its parent merges), or null. */
  async #level(active: readonly number[], prefix: readonly string[]): Promise<Hit | null> {
    const next: number[] = [];
    let top: Hit | null = null;
    for (const i of active) {
      const st = await this.#lstatIn(i, prefix);
      if (!st) continue;
      if (isOverlayWhiteout(st)) break; // deleted from here down
      if (!top) top = { layer: i, path: this.#inLayer(i, prefix), stat: st, merged: [] };
      if (st.type !== 'dir') break; // a non-directory hides everything below
      next.push(i);
      if (await this.#opaque(i, prefix)) break;
    }
    if (!top && prefix.length === 0) return { layer: -1, path: '/', stat: EMPTY_ROOT, merged: [] };
    if (top) top.merged = next;
    if (top && prefix.length === 1 && prefix[0] === 'lost+found' && (await this.#synthetic(next))) return null;
    return top;
  }

  /**
   * Whether every copy of `/lost+found` that merges is one our writer made for e2fsck alone: the union then
   * has none, as the image's own layers have none (overlay2 shows none).
   */
  async #synthetic(merged: readonly number[]): Promise<boolean> {
    if (merged.length === 0) return false;
    for (const i of merged) {
      const v = (await this.#layers[i]!.fs.listXattrs(this.#inLayer(i, ['lost+found']))).get(SYNTHETIC_LOST_FOUND.name);
      if (v === undefined || Buffer.from(v).toString() !== SYNTHETIC_LOST_FOUND.value) return false;
      if ((await this.#layers[i]!.fs.readdir(this.#inLayer(i, ['lost+found']))).length > 0) return false;
    }
    return true;
  }

  /**
   * A directory of the union and the layers whose copies of it merge, remembered: the layers are read-only
   * snapshots, and every lookup below a directory starts from it.
   */
  async #dir(prefix: readonly string[]): Promise<Hit | null> {
    const key = prefix.join('/');
    let hit = this.#dirs.get(key);
    if (hit === undefined) {
      if (prefix.length === 0) hit = await this.#level(this.#all, prefix);
      else {
        const parent = await this.#dir(prefix.slice(0, -1));
        hit = parent ? await this.#level(parent.merged, prefix) : null;
      }
      if (this.#dirs.size >= DIR_CACHE) this.#dirs.clear();
      this.#dirs.set(key, hit);
    }
    if (hit && hit.stat.type !== 'dir') throw new DriverError('ERR_NOT_A_DIRECTORY', `/${key}: not a directory`);
    return hit;
  }

  /**
   * The topmost entry at `parts` (no symlink followed), honouring whiteouts and opaque directories on the
   * way down: a layer is consulted for a path only if every parent directory is a merged directory there.
   */
  async #lookup(parts: readonly string[]): Promise<Hit | null> {
    if (parts.length === 0) return this.#level(this.#all, parts);
    const parent = await this.#dir(parts.slice(0, -1));
    return parent ? this.#level(parent.merged, parts) : null;
  }

  /** Resolves `path` through the union, following symlinks (the last one too when `follow`). */
  async #resolve(path: string, follow: boolean): Promise<{ parts: string[]; hit: Hit }> {
    let todo = split(path);
    let done: string[] = [];
    let links = 0;
    for (;;) {
      if (todo.length === 0) {
        const hit = await this.#lookup(done);
        if (!hit) throw new DriverError('ERR_NOT_FOUND', `/${done.join('/')}: no such file or directory`);
        return { parts: done, hit };
      }
      const name = todo.shift()!;
      if (name === '..') {
        done.pop();
        continue;
      }
      const parts = [...done, name];
      const hit = await this.#lookup(parts);
      if (!hit) throw new DriverError('ERR_NOT_FOUND', `/${parts.join('/')}: no such file or directory`);
      if (hit.stat.type === 'symlink' && (follow || todo.length > 0)) {
        if (++links > MAX_SYMLINKS)
          throw new DriverError('ERR_SYMLINK_LOOP', `${path}: more than ${MAX_SYMLINKS} symlinks`);
        const target = await this.#layers[hit.layer]!.fs.readlink(hit.path);
        if (target.startsWith('/')) done = [];
        todo = [...split(target), ...todo];
        continue;
      }
      done = parts;
    }
  }

  async lstat(path: string): Promise<Ext4Stat> {
    return (await this.#resolve(path, false)).hit.stat;
  }

  /** {@link lstat}, or null where the union has nothing at `path`. */
  async tryLstat(path: string): Promise<Ext4Stat | null> {
    try {
      return await this.lstat(path);
    } catch (e) {
      if (e instanceof DriverError && (e.code === 'ERR_NOT_FOUND' || e.code === 'ERR_NOT_A_DIRECTORY')) return null;
      throw e;
    }
  }

  async stat(path: string): Promise<Ext4Stat> {
    return (await this.#resolve(path, true)).hit.stat;
  }

  async readlink(path: string): Promise<string> {
    const { hit } = await this.#resolve(path, false);
    if (hit.stat.type !== 'symlink') throw new DriverError('ERR_INVALID_ARGUMENT', `${path}: not a symlink`);
    return this.#layers[hit.layer]!.fs.readlink(hit.path);
  }

  /** The merged entries of a directory, sorted by name bytes; whiteouts and opaque directories applied. */
  async readdir(path: string): Promise<Ext4Dirent[]> {
    const { parts, hit } = await this.#resolve(path, true);
    if (hit.stat.type !== 'dir') throw new DriverError('ERR_NOT_A_DIRECTORY', `${path}: not a directory`);
    const seen = new Map<string, Ext4Dirent | null>(); // null: whited out
    for (const i of hit.merged) {
      const dir = this.#inLayer(i, parts);
      for (const e of await this.#layers[i]!.fs.readdir(dir)) {
        const key = e.raw.toString('latin1');
        if (seen.has(key)) continue;
        const white =
          e.type === 'chr' &&
          isOverlayWhiteout(await this.#layers[i]!.fs.lstat(Buffer.concat([Buffer.from(`${dir}/`), e.raw])));
        seen.set(key, white ? null : e);
      }
    }
    if (parts.length === 0 && seen.get('lost+found') && !(await this.#lookup(['lost+found'])))
      seen.delete('lost+found');
    return [...seen.values()].filter((e): e is Ext4Dirent => e !== null).sort((a, b) => Buffer.compare(a.raw, b.raw));
  }

  /** A regular file's contents, from the layer that holds it. */
  async readFile(path: string): Promise<Readable> {
    const { hit } = await this.#resolve(path, true);
    if (hit.stat.type !== 'file') throw new DriverError('ERR_INVALID_ARGUMENT', `${path}: not a regular file`);
    return this.#layers[hit.layer]!.fs.readFile(hit.path);
  }

  /** Up to `length` bytes of a regular file from `position`. */
  async read(path: string, position: number, length: number): Promise<Uint8Array> {
    const { hit } = await this.#resolve(path, true);
    if (hit.stat.type !== 'file') throw new DriverError('ERR_INVALID_ARGUMENT', `${path}: not a regular file`);
    return this.#layers[hit.layer]!.fs.read(hit.path, position, length);
  }

  /** The path with every symlink resolved through the union. */
  async realpath(path: string): Promise<string> {
    return `/${(await this.#resolve(path, true)).parts.join('/')}`;
  }

  /** Extended attributes of the topmost entry (overlay bookkeeping attributes left out). */
  async listXattrs(path: string): Promise<Map<string, Uint8Array>> {
    const { hit } = await this.#resolve(path, false);
    if (hit.layer < 0) return new Map();
    const x = await this.#layers[hit.layer]!.fs.listXattrs(hit.path);
    for (const k of [...x.keys()]) if (k.startsWith('trusted.overlay.')) x.delete(k);
    return x;
  }

  /** Writes are refused: this view reads layers in process and has nowhere to put changes. */
  refuseWrite(op: string, path: string): never {
    throw new DriverError(
      'ERR_READ_ONLY',
      `${op} ${path}: the inproc backend is read-only (use the host or hcs backend to write)`,
    );
  }
}
