// `changes` and `diffSize` with moby's semantics (pkg/archive changes.go), which the original driver never
// implemented: a layer that stores its own changes is read directly (the overlay algorithm), any other
// pair of layers is compared tree against tree (the naive algorithm).
import { posix } from 'node:path';
import {
  isOverlayOpaque,
  isOverlayWhiteout,
  OVERLAY_OPAQUE_XATTR,
  SYNTHETIC_LOST_FOUND,
  type Ext4Dirent,
  type Ext4Stat,
} from '@lcow/ext4';

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

async function isOpaque(t: Tree, p: string): Promise<boolean> {
  return isOverlayOpaque((await t.listXattrs(p)).get(OVERLAY_OPAQUE_XATTR));
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

/** Whether `/lost+found` of `t` is the one our writer made for e2fsck alone (never part of a diff). */
async function syntheticLostFound(t: Tree): Promise<boolean> {
  const v = (await t.listXattrs('/lost+found')).get(SYNTHETIC_LOST_FOUND.name);
  return v !== undefined && Buffer.from(v).toString() === SYNTHETIC_LOST_FOUND.value;
}

/**
 * The changes a layer holds (`layer`: its own content, whiteouts in overlay form) over the union of its
 * parents (`lower`, or null for none), as moby's naive algorithm reports them for the union of the two —
 * what overlay2 and vfs show — but reading only what the layer holds. A whiteout of something the parents
 * have is a delete; an entry the parents lack is an add, and so is everything under it; an entry the
 * parents have is a modify when it differs as moby's statDifferent sees it (type, mode, owner, device; for
 * non-directories size, mtime and link target) or its `security.capability` differs. A directory with any
 * change inside it is a modify too (moby keeps directory metadata with the changes it carries). An opaque
 * directory deletes what the parents had in it.
 */
export async function layerChanges(layer: Tree, lower: Tree | null, signal?: AbortSignal): Promise<Change[]> {
  const out: Change[] = [];
  /** Records the changes under `dir`; true when there is any. */
  const walk = async (dir: string, added: boolean): Promise<boolean> => {
    signal?.throwIfAborted();
    let any = false;
    for (const e of await layer.readdir(dir)) {
      const p = posix.join(dir, e.name);
      if (p === '/lost+found' && (await syntheticLostFound(layer))) continue;
      const st = await layer.lstat(p);
      const below = added ? null : await lstatOrNull(lower, p);
      if (isOverlayWhiteout(st)) {
        if (below) out.push({ path: p, kind: 'delete' });
        any ||= below !== null;
        continue;
      }
      let recorded = true;
      if (!below) out.push({ path: p, kind: 'add' });
      else if ((await differs(layer, st, lower!, below, p)) || (await capabilityDiffers(layer, lower!, p, st)))
        out.push({ path: p, kind: 'modify' });
      else recorded = false;
      any ||= recorded;
      if (st.type !== 'dir') continue;
      const mark = out.length;
      if (below?.type === 'dir' && (await isOpaque(layer, p))) {
        const mine = new Set((await layer.readdir(p)).map((x) => x.name));
        for (const x of await lower!.readdir(p))
          if (!mine.has(x.name)) out.push({ path: posix.join(p, x.name), kind: 'delete' });
      }
      const inner = (await walk(p, below?.type !== 'dir')) || out.length > mark;
      if (inner && !recorded) out.push({ path: p, kind: 'modify' });
      any ||= inner;
    }
    return any;
  };
  await walk('/', lower === null);
  return sortChanges(out);
}

/** moby compares `security.capability` beside the stat (a setcap changes nothing else). */
async function capabilityDiffers(a: Tree, b: Tree, p: string, st: Ext4Stat): Promise<boolean> {
  if (st.type !== 'file') return false;
  const x = (await a.listXattrs(p)).get('security.capability');
  const y = (await b.listXattrs(p)).get('security.capability');
  if (x === undefined || y === undefined) return x !== y;
  return Buffer.compare(Buffer.from(x), Buffer.from(y)) !== 0;
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
