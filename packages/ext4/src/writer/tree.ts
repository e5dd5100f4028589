import { Ext4Error } from '../errors.ts';
import { MAX_EXTENT_LEN } from '../format/extent.ts';
import { FileMode } from '../format/inode.ts';
import { displayName } from '../tar/header.ts';
import type { Time } from '../tar/parser.ts';

/** A run of blocks: `len` blocks at logical block `logical` stored from physical block `physical`. */
export interface Run {
  logical: number;
  physical: number;
  len: number;
}

/** What few nodes have: kept apart so that a plain file costs only the common fields. */
interface Rare {
  runs: Run[] | null;
  target: string | null;
  major: number;
  minor: number;
  xattrs: Map<string, Uint8Array> | null;
  inline: Uint8Array | null;
  children: Map<string, FsNode> | null;
  parent: FsNode | null;
  source: string;
}

const NO_RARE: Readonly<Rare> = {
  runs: null,
  target: null,
  major: 0,
  minor: 0,
  xattrs: null,
  inline: null,
  children: null,
  parent: null,
  source: '',
};

/**
 * One inode of the filesystem being built. Hard links share the node. Memory per node is what bounds a
 * tar of millions of entries, so the common fields are plain numbers (times as seconds and nanoseconds:
 * an object per time cost 40 bytes each, and pax archives give most entries their own atime and ctime) and
 * the rest (sparse runs, link targets, devices, xattrs, inline data, directory links, the source entry)
 * live in one side object that only directories and a few files get.
 */
export class FsNode {
  /** S_IFMT bits ({@link FileMode}). */
  type: number;
  /** Permission bits, with setuid, setgid and sticky. */
  perm: number;
  uid = 0;
  gid = 0;
  mtimeSec: number;
  mtimeNsec: number;
  atimeSec: number;
  atimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
  size = 0;
  /** First block and block count of contiguous data (most files); see {@link runsOf}. */
  start = 0;
  blocks = 0;
  /** Inode number, assigned when the filesystem is laid out. */
  ino = 0;
  /** Link count, counted when the filesystem is laid out. */
  links = 0;
  #rare: Rare | null = null;

  constructor(type: number, perm: number, source: string, time: Time) {
    this.type = type;
    this.perm = perm;
    this.mtimeSec = this.atimeSec = this.ctimeSec = time.sec;
    this.mtimeNsec = this.atimeNsec = this.ctimeNsec = time.nsec;
    if (source) this.#set().source = source;
    if (type === FileMode.DIR) this.#set().children = new Map();
  }

  #set(): Rare {
    return (this.#rare ??= { ...NO_RARE });
  }

  #get(): Readonly<Rare> {
    return this.#rare ?? NO_RARE;
  }

  get mtime(): Time {
    return { sec: this.mtimeSec, nsec: this.mtimeNsec };
  }
  set mtime(t: Time) {
    this.mtimeSec = t.sec;
    this.mtimeNsec = t.nsec;
  }
  get atime(): Time {
    return { sec: this.atimeSec, nsec: this.atimeNsec };
  }
  set atime(t: Time) {
    this.atimeSec = t.sec;
    this.atimeNsec = t.nsec;
  }
  get ctime(): Time {
    return { sec: this.ctimeSec, nsec: this.ctimeNsec };
  }
  set ctime(t: Time) {
    this.ctimeSec = t.sec;
    this.ctimeNsec = t.nsec;
  }
  /** Explicit runs, for sparse files only. */
  get runs(): Run[] | null {
    return this.#get().runs;
  }
  set runs(v: Run[] | null) {
    if (v || this.#rare) this.#set().runs = v;
  }
  /** Symlink target, latin1 bytes. */
  get target(): string | null {
    return this.#get().target;
  }
  set target(v: string | null) {
    if (v !== null || this.#rare) this.#set().target = v;
  }
  /** Device numbers for character and block devices. */
  get major(): number {
    return this.#get().major;
  }
  set major(v: number) {
    if (v !== 0 || this.#rare) this.#set().major = v;
  }
  get minor(): number {
    return this.#get().minor;
  }
  set minor(v: number) {
    if (v !== 0 || this.#rare) this.#set().minor = v;
  }
  get xattrs(): Map<string, Uint8Array> | null {
    return this.#get().xattrs;
  }
  set xattrs(v: Map<string, Uint8Array> | null) {
    if (v || this.#rare) this.#set().xattrs = v;
  }
  /** Regular file contents stored in the inode (inline_data). */
  get inline(): Uint8Array | null {
    return this.#get().inline;
  }
  set inline(v: Uint8Array | null) {
    if (v || this.#rare) this.#set().inline = v;
  }
  /** Children by name (latin1 bytes), in first-seen order; null for non-directories. */
  get children(): Map<string, FsNode> | null {
    return this.#get().children;
  }
  set children(v: Map<string, FsNode> | null) {
    if (v || this.#rare) this.#set().children = v;
  }
  /** For directories: the directory holding it (for ".."), set when laid out. */
  get parent(): FsNode | null {
    return this.#get().parent;
  }
  set parent(v: FsNode | null) {
    if (v || this.#rare) this.#set().parent = v;
  }
  /** Source entry, for messages (kept only where a later error could need it). */
  get source(): string {
    return this.#get().source;
  }
  set source(v: string) {
    if (v || this.#rare) this.#set().source = v;
  }
}

const EPOCH: Time = { sec: 0, nsec: 0 };

export function newNode(type: number, perm: number, source: string, time: Time = EPOCH): FsNode {
  return new FsNode(type, perm, source, time);
}

export const MAX_NAME = 255;

/**
 * `name` as a string of its own. A name split from an entry's path is, from 13 characters on, a view into the
 * whole path in V8, so keeping the name would keep the path too (≈ 100 bytes an entry on real layers).
 * Names are latin1 byte strings (one char per byte), so the copy is exact.
 */
export function ownString(name: string): string {
  return name.length < 13 ? name : Buffer.from(name, 'latin1').toString('latin1');
}

/**
 * Splits an archive path into components. Leading `/` and `./` are dropped (as tar does); `..` anywhere,
 * and components longer than 255 bytes, are `ERR_TAR_FORMAT`.
 */
export function splitPath(path: string): string[] {
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..')
      throw new Ext4Error(
        'ERR_TAR_FORMAT',
        `tar entry ${JSON.stringify(displayName(path))}: path contains "..", which would escape the layer`,
      );
    if (p.length > MAX_NAME)
      throw new Ext4Error(
        'ERR_TAR_FORMAT',
        `tar entry ${JSON.stringify(displayName(path))}: a name is ${p.length} bytes, longer than 255`,
      );
    parts.push(p);
  }
  return parts;
}

/** The directory tree, with tar-extraction semantics for repeated paths. */
export class Tree {
  readonly root: FsNode;

  constructor(rootTime: Time) {
    this.root = newNode(FileMode.DIR, 0o755, '/', rootTime);
  }

  /**
   * The directory that holds `parts`' last component, creating missing parents as 0755 root-owned
   * directories. A parent that exists as anything but a directory is `ERR_TAR_FORMAT`: tar would follow a
   * symlink there, which in a layer could point anywhere.
   */
  parentOf(parts: string[], entry: string, implicitTime: Time): FsNode {
    let dir = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      const name = parts[i]!;
      let next = dir.children!.get(name);
      if (!next) {
        next = newNode(FileMode.DIR, 0o755, parts.slice(0, i + 1).join('/'), implicitTime);
        dir.children!.set(ownString(name), next);
      } else if (next.type !== FileMode.DIR) {
        const what = next.type === FileMode.LNK ? 'a symlink' : 'not a directory';
        throw new Ext4Error(
          'ERR_TAR_FORMAT',
          `tar entry ${JSON.stringify(displayName(entry))}: parent ${JSON.stringify(displayName(parts.slice(0, i + 1).join('/')))} is ${what}`,
        );
      }
      dir = next;
    }
    return dir;
  }

  /** Finds a node without following symlinks. */
  lookup(parts: string[]): FsNode | undefined {
    let n: FsNode | undefined = this.root;
    for (const p of parts) {
      n = n?.children?.get(p);
      if (!n) return undefined;
    }
    return n;
  }

  /**
   * Places `node` at `parts`, as extracting a later tar entry over an earlier one would: a directory over a
   * directory updates its metadata and keeps its children; anything over a non-directory replaces it; a
   * non-directory over a non-empty directory is `ERR_TAR_FORMAT`. Returns the node now at that path.
   */
  place(parts: string[], node: FsNode, entry: string, implicitTime: Time): FsNode {
    if (parts.length === 0) {
      if (node.type !== FileMode.DIR)
        throw new Ext4Error(
          'ERR_TAR_FORMAT',
          `tar entry ${JSON.stringify(displayName(entry))}: the root must be a directory`,
        );
      copyMetadata(this.root, node);
      return this.root;
    }
    const dir = this.parentOf(parts, entry, implicitTime);
    const name = parts[parts.length - 1]!;
    const old = dir.children!.get(name);
    if (old && old.type === FileMode.DIR) {
      if (node.type === FileMode.DIR) {
        copyMetadata(old, node);
        return old;
      }
      if (old.children!.size > 0) {
        throw new Ext4Error(
          'ERR_TAR_FORMAT',
          `tar entry ${JSON.stringify(displayName(entry))}: cannot replace a non-empty directory with a non-directory`,
        );
      }
    }
    dir.children!.set(ownString(name), node);
    return node;
  }
}

function copyMetadata(to: FsNode, from: FsNode): void {
  to.perm = from.perm;
  to.uid = from.uid;
  to.gid = from.gid;
  to.mtime = from.mtime;
  to.atime = from.atime;
  to.ctime = from.ctime;
  if (from.xattrs) to.xattrs = new Map([...(to.xattrs ?? []), ...from.xattrs]);
  to.source = from.source;
}

/** A node's data as runs of at most 32768 blocks: its explicit runs, or its contiguous range split up. */
export function runsOf(n: FsNode): Run[] {
  if (n.runs) return n.runs;
  const out: Run[] = [];
  for (let done = 0; done < n.blocks; done += MAX_EXTENT_LEN) {
    out.push({ logical: done, physical: n.start + done, len: Math.min(MAX_EXTENT_LEN, n.blocks - done) });
  }
  return out;
}

/** Number of extents the node's data needs. */
export function extentCount(n: FsNode): number {
  return n.runs ? n.runs.length : Math.ceil(n.blocks / MAX_EXTENT_LEN);
}
