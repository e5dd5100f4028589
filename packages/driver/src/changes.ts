// `changes` and `diffSize` with moby's semantics (pkg/archive changes.go), which the original driver never
// implemented: a layer that stores its own changes is read directly (the overlay algorithm), any other
// pair of layers is compared tree against tree (the naive algorithm).
import { posix } from 'node:path';
import type { Ext4Dirent, Ext4Stat } from '@lcow/ext4';

/** moby's ChangeType order: Modify, Add, Delete. */
export type ChangeKind = 'modify' | 'add' | 'delete';
const KIND_ORDER: Record<ChangeKind, number> = { modify: 0, add: 1, delete: 2 };

/** One change of a layer against its parent, path absolute within the layer (`/etc/passwd`). */
export interface Change {
  path: string;
  kind: ChangeKind;
}

/** What the change algorithms read: an `Ext4Fs` (optionally rooted in a folder) or a `UnionView`. */
export interface Tree {
  lstat(path: string): Promise<Ext4Stat>;
  /** `lstat`, or null where nothing is at `path`. */
  tryLstat(path: string): Promise<Ext4Stat | null>;
  readdir(path: string): Promise<Ext4Dirent[]>;
  listXattrs(path: string): Promise<Map<string, Uint8Array>>;
  readlink(path: string): Promise<string>;
}

/** `tree` seen from its folder `root` (a sandbox's `upper`). */
export function subtree(tree: Tree, root: string): Tree {
  const at = (p: string): string => posix.join('/', root, p);
  return {
    lstat: (p) => tree.lstat(at(p)),
    tryLstat: (p) => tree.tryLstat(at(p)),
    readdir: (p) => tree.readdir(at(p)),
    listXattrs: (p) => tree.listXattrs(at(p)),
    readlink: (p) => tree.readlink(at(p)),
  };
}

export const isWhiteout = (st: Ext4Stat): boolean => st.type === 'chr' && st.rdev?.major === 0 && st.rdev.minor === 0;

async function isOpaque(t: Tree, p: string): Promise<boolean> {
  const v = (await t.listXattrs(p)).get('trusted.overlay.opaque');
  return v !== undefined && Buffer.from(v).toString() === 'y';
}

function lstatOrNull(t: Tree | null, p: string): Promise<Ext4Stat | null> {
  return t ? t.tryLstat(p) : Promise.resolve(null);
}

/** Go's sameFsTime: equal, or equal seconds where one side has no nanoseconds. */
function sameTime(a: Ext4Stat['mtime'], b: Ext4Stat['mtime']): boolean {
  return a.sec === b.sec && (a.nsec === b.nsec || a.nsec === 0 || b.nsec === 0);
}

export function sortChanges(changes: Change[]): Change[] {
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : KIND_ORDER[a.kind] - KIND_ORDER[b.kind]));
}

/**
 * The changes a layer holds (`layer`: its own content, whiteouts in overlay form) over the union of its
 * parents (`lower`, or null for none): moby's overlay algorithm. A whiteout is a delete; an entry the
 * parents lack is an add; any other is a modify, except a directory whose size, mode and mtime match
 * the parents' (present only because something below it changed). The parent folder of an add or a
 * delete is always reported as modified. An opaque directory also deletes what the parents had in it.
 */
export async function layerChanges(layer: Tree, lower: Tree | null, signal?: AbortSignal): Promise<Change[]> {
  const out: Change[] = [];
  const changedDirs = new Set<string>();
  const parentRule = (p: string): void => {
    const parent = posix.dirname(p);
    if (parent !== '/' && !changedDirs.has(parent)) {
      out.push({ path: parent, kind: 'modify' });
      changedDirs.add(parent);
    }
  };
  const walk = async (dir: string): Promise<void> => {
    signal?.throwIfAborted();
    for (const e of await layer.readdir(dir)) {
      const p = posix.join(dir, e.name);
      const st = await layer.lstat(p);
      if (isWhiteout(st)) {
        out.push({ path: p, kind: 'delete' });
        parentRule(p);
        continue;
      }
      const below = await lstatOrNull(lower, p);
      let kind: ChangeKind | null = below ? 'modify' : 'add';
      const opaque = st.type === 'dir' && (await isOpaque(layer, p));
      if (
        below &&
        !opaque &&
        st.type === 'dir' &&
        below.type === 'dir' &&
        st.size === below.size &&
        st.mode === below.mode &&
        sameTime(st.mtime, below.mtime)
      )
        kind = null;
      if (kind) {
        out.push({ path: p, kind });
        if (st.type === 'dir') changedDirs.add(p);
        if (kind === 'add') parentRule(p);
      }
      if (st.type !== 'dir') continue;
      if (opaque && below?.type === 'dir' && lower) {
        const mine = new Set((await layer.readdir(p)).map((x) => x.name));
        for (const x of await lower.readdir(p))
          if (!mine.has(x.name)) out.push({ path: posix.join(p, x.name), kind: 'delete' });
      }
      await walk(p);
    }
  };
  await walk('/');
  return sortChanges(out);
}

/** moby's statDifferent: type and mode, owner, device; for non-directories also size and mtime; link targets. */
async function differs(a: Tree, sa: Ext4Stat, b: Tree, sb: Ext4Stat, p: string): Promise<boolean> {
  if (sa.type !== sb.type || sa.mode !== sb.mode || sa.uid !== sb.uid || sa.gid !== sb.gid) return true;
  if ((sa.rdev?.major ?? 0) !== (sb.rdev?.major ?? 0) || (sa.rdev?.minor ?? 0) !== (sb.rdev?.minor ?? 0)) return true;
  if (sa.type === 'dir') return false;
  if (sa.size !== sb.size || !sameTime(sa.mtime, sb.mtime)) return true;
  return sa.type === 'symlink' && (await a.readlink(p)) !== (await b.readlink(p));
}

/**
 * The changes from tree `old` (null: nothing) to tree `next`, compared entry by entry: moby's naive
 * algorithm (ChangesDirs). Everything under an added folder is added; a deleted folder is one delete; a
 * folder is modified when its own metadata differs or anything inside it changed.
 */
export async function treeChanges(next: Tree, old: Tree | null, signal?: AbortSignal): Promise<Change[]> {
  const out: Change[] = [];
  const walk = async (dir: string, added: boolean): Promise<void> => {
    signal?.throwIfAborted();
    const names = new Set<string>();
    for (const e of await next.readdir(dir)) {
      const p = posix.join(dir, e.name);
      names.add(e.name);
      const sn = await next.lstat(p);
      const so = added ? null : await lstatOrNull(old, p);
      let childAdded = added;
      let recorded = true;
      if (!so) {
        out.push({ path: p, kind: 'add' });
        childAdded = true;
      } else if (await differs(next, sn, old!, so, p)) {
        out.push({ path: p, kind: 'modify' });
        if (so.type !== 'dir') childAdded = true;
      } else recorded = false;
      if (sn.type === 'dir') {
        const mark = out.length;
        await walk(p, childAdded);
        if (out.length > mark && !recorded) out.push({ path: p, kind: 'modify' });
      }
    }
    if (!added && old) {
      const o = await lstatOrNull(old, dir);
      if (o?.type === 'dir')
        for (const e of await old.readdir(dir))
          if (!names.has(e.name)) out.push({ path: posix.join(dir, e.name), kind: 'delete' });
    }
  };
  await walk('/', old === null);
  return sortChanges(out);
}

/**
 * moby's ChangesSize: the bytes of regular files that `changes` add or modify, read from `tree` (the layer
 * or the union holding them), each inode counted once.
 */
export async function changesSize(tree: Tree, changes: readonly Change[]): Promise<number> {
  const seen = new Set<number>();
  let size = 0;
  for (const c of changes) {
    if (c.kind === 'delete') continue;
    const st = await lstatOrNull(tree, c.path);
    if (!st || st.type !== 'file') continue;
    // Hard links count once (inode numbers of different layers may repeat, so only linked files are keyed).
    if (st.nlink > 1) {
      if (seen.has(st.ino)) continue;
      seen.add(st.ino);
    }
    size += st.size;
  }
  return size;
}
