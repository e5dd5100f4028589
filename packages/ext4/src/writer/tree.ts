import { Ext4Error } from '../errors.ts';
import { FileMode } from '../format/inode.ts';
import { displayName } from '../tar/header.ts';
import type { Time } from '../tar/parser.ts';

/** A run of blocks: `len` blocks at logical block `logical` stored from physical block `physical`. */
export interface Run {
  logical: number;
  physical: number;
  len: number;
}

/** One inode of the filesystem being built. Hard links share the node. */
export interface FsNode {
  /** S_IFMT bits ({@link FileMode}). */
  type: number;
  /** Permission bits, with setuid, setgid and sticky. */
  perm: number;
  uid: number;
  gid: number;
  mtime: Time;
  atime: Time;
  ctime: Time;
  size: number;
  /** First block and block count of contiguous data (most files); see {@link runsOf}. */
  start: number;
  blocks: number;
  /** Explicit runs, for sparse files only. */
  runs: Run[] | null;
  /** Symlink target, latin1 bytes. */
  target: string | null;
  /** Device numbers for character and block devices. */
  major: number;
  minor: number;
  xattrs: Map<string, Uint8Array> | null;
  /** Regular file contents stored in the inode (inline_data). */
  inline: Uint8Array | null;
  /** Children by name (latin1 bytes), in first-seen order; null for non-directories. */
  children: Map<string, FsNode> | null;
  /** Inode number, assigned when the filesystem is laid out. */
  ino: number;
  /** Link count, counted when the filesystem is laid out. */
  links: number;
  /** For directories: the directory holding it (for ".."), set when laid out. */
  parent: FsNode | null;
  /** Source entry, for messages. */
  source: string;
}

const EPOCH: Time = { sec: 0, nsec: 0 };

export function newNode(type: number, perm: number, source: string, time: Time = EPOCH): FsNode {
  return {
    type,
    perm,
    uid: 0,
    gid: 0,
    mtime: time,
    atime: time,
    ctime: time,
    size: 0,
    start: 0,
    blocks: 0,
    runs: null,
    target: null,
    major: 0,
    minor: 0,
    xattrs: null,
    inline: null,
    children: type === FileMode.DIR ? new Map() : null,
    ino: 0,
    links: 0,
    parent: null,
    source,
  };
}

export const MAX_NAME = 255;

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
        dir.children!.set(name, next);
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
    dir.children!.set(name, node);
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

/** Longest initialized extent, in blocks (EXT_INIT_MAX_LEN). */
const MAX_RUN = 32768;

/** A node's data as runs of at most 32768 blocks: its explicit runs, or its contiguous range split up. */
export function runsOf(n: FsNode): Run[] {
  if (n.runs) return n.runs;
  const out: Run[] = [];
  for (let done = 0; done < n.blocks; done += MAX_RUN) {
    out.push({ logical: done, physical: n.start + done, len: Math.min(MAX_RUN, n.blocks - done) });
  }
  return out;
}

/** Number of extents the node's data needs. */
export function extentCount(n: FsNode): number {
  return n.runs ? n.runs.length : Math.ceil(n.blocks / MAX_RUN);
}
