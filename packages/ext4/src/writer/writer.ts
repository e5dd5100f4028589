import type { FileHandle } from 'node:fs/promises';
import { Ext4Error } from '../errors.ts';
import { Compat, Incompat, RoCompat } from '../format/constants.ts';
import { DirEntryHeader, DirFileType, dirFileType, direntSize } from '../format/dirent.ts';
import { EXTENT_MAGIC, Extent, ExtentHeader, ExtentIndex, MAX_EXTENT_LEN } from '../format/extent.ts';
import { GroupDesc } from '../format/group.ts';
import { DeviceNumbers, EXTRA_ISIZE, FileMode, INODE_SIZE, Ino, Inode, InodeFlags, LINK_MAX } from '../format/inode.ts';
import { SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSET, Superblock } from '../format/superblock.ts';
import { displayName } from '../tar/header.ts';
import type { TarEntry } from '../tar/parser.ts';
import { OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR, tarWhiteout } from '../tar/whiteouts.ts';
import { Bitmap, popcount } from './bitmap.ts';
import { ImageWriter } from './image.ts';
import { extentCount, newNode, runsOf, splitPath, Tree, type FsNode, type Run } from './tree.ts';
import { blockXattrs, inodeXattrs, prepareXattrs, setXattrRefcount } from './xattrs.ts';

export const BLOCK_SIZE = 4096;

/**
 * The extended attribute on a `lost+found` our layout made for e2fsck alone (the layer's tar had none):
 * unions hide such a directory, so a container's root holds what its image holds.
 */
export const SYNTHETIC_LOST_FOUND = { name: 'trusted.lcow.synthetic', value: 'lost+found' } as const;
const BLOCKS_PER_GROUP = BLOCK_SIZE * 8;
const INODES_PER_BLOCK = BLOCK_SIZE / INODE_SIZE;
const EXTENTS_PER_LEAF = Math.floor((BLOCK_SIZE - ExtentHeader.size) / Extent.size);
/** Space for extended attributes inside a 256-byte inode, after the base and extra fields. */
const INODE_XATTR_ROOM = INODE_SIZE - 128 - EXTRA_ISIZE;
const INLINE_MAX = 60;
/** Inodes encoded per slice of the inode table (256 KiB: it is copied into the image writer's buffers anyway). */
const ITABLE_SLICE = 1024;
/** Zero i_block, filled in place after the inode is encoded. A Buffer: see Struct.encodeInto on small arrays. */
const NO_BLOCK = Buffer.alloc(60);

/** Options of the ext4 writer. */
export interface WriterOptions {
  /** Turn `.wh.NAME` into 0:0 character devices and `.wh..wh..opq` into `trusted.overlay.opaque=y`. */
  convertWhiteouts: boolean;
  /** Store regular files of at most 60 bytes inside their inode (the inline_data feature). */
  inlineData: boolean;
  /** Largest image, in bytes; exceeding it is `ERR_DISK_FULL`. It also sizes the group descriptor table. */
  maximumDiskSize: number;
  /**
   * A budget below `maximumDiskSize` that does not change the layout (free space, a quota): exceeding it is
   * `ERR_DISK_FULL` too, so the same tar still gives the same bytes wherever it fits.
   */
  sizeLimit?: number;
  /** Filesystem UUID; default: derived from the filesystem's metadata, so output is reproducible. */
  uuid?: string;
  /** Superblock times (mkfs, write, last check); default 0, so output is reproducible. */
  timestamp?: Date;
  /** Volume label, at most 16 bytes. */
  label?: string;
  warn: (code: string, message: string) => void;
}

/** Counts of what was written. */
export interface WriterSummary {
  /** Image size in bytes (a multiple of 4096). */
  bytes: number;
  blocks: number;
  inodes: number;
  entries: number;
  files: number;
  directories: number;
  symlinks: number;
  hardlinks: number;
  whiteouts: number;
  /** Bytes of regular-file content the tar carried (hard links add none): what moby's ApplyDiff reports. */
  fileBytes: number;
  uuid: string;
}

interface Current {
  node: FsNode;
  /** Bytes of the body still to come. */
  left: number;
  /** Sparse: regions still to come, and the image offset of each byte run. */
  regions: { imageOffset: number; length: number }[] | null;
  inline: Uint8Array | null;
  inlineAt: number;
}

// 32 bits of seconds in i_*time, plus 2 epoch bits in *_extra that extend the range to 2446, nanoseconds above them.
function timeLo(sec: number): number {
  return ((sec % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

function timeExtra(sec: number, nsec: number): number {
  const lo = timeLo(sec);
  const signed = lo >= 2 ** 31 ? lo - 2 ** 32 : lo;
  const epoch = Math.floor((sec - signed) / 2 ** 32) & 3;
  return ((nsec << 2) | epoch) >>> 0;
}

/**
 * Builds a compact, read-only ext4 image from a stream of tar entries. File data goes straight to its
 * final place as it arrives; inodes, directories and bitmaps are laid out at {@link Ext4Writer.finish}.
 *
 * Layout: block 0 holds the superblock, the group descriptor table follows (sized for
 * `maximumDiskSize`), then file data in arrival order, then directories, long symlinks, attribute
 * blocks, extent leaves, and every group's bitmaps and inode table together (flex_bg). No journal, no
 * backup superblocks (sparse_super2 with none), the read-only feature set.
 */
export class Ext4Writer {
  readonly #opts: WriterOptions;
  readonly #fh: FileHandle;
  readonly #out: ImageWriter;
  readonly #tree: Tree;
  readonly #gdtBlocks: number;
  readonly #maxBlocks: number;
  /** min(maximumDiskSize, sizeLimit) in blocks, and what to call it in a message. */
  readonly #limitBlocks: number;
  readonly #limitName: string;
  #cur: Current | null = null;
  #lastEntry = '(none)';
  #stats = { entries: 0, files: 0, directories: 0, symlinks: 0, hardlinks: 0, whiteouts: 0, fileBytes: 0 };
  #usesInline = false;
  /** The lost+found this writer made, and whether any tar entry named it or something in it. */
  readonly #lostFound: FsNode;
  #lostFoundNamed = false;
  #dirScratch = Buffer.alloc(16 * BLOCK_SIZE);

  constructor(fh: FileHandle, opts: WriterOptions) {
    this.#opts = opts;
    this.#fh = fh;
    this.#maxBlocks = Math.floor(opts.maximumDiskSize / BLOCK_SIZE);
    if (this.#maxBlocks < 64)
      throw new Ext4Error('ERR_INVALID_ARGUMENT', `maximumDiskSize ${opts.maximumDiskSize}: at least 256 KiB`);
    if (this.#maxBlocks >= 2 ** 32)
      throw new Ext4Error(
        'ERR_INVALID_ARGUMENT',
        `maximumDiskSize ${opts.maximumDiskSize}: at most 16 TiB (32-bit block numbers)`,
      );
    const limited = opts.sizeLimit !== undefined && opts.sizeLimit < opts.maximumDiskSize;
    this.#limitBlocks = limited ? Math.floor(opts.sizeLimit! / BLOCK_SIZE) : this.#maxBlocks;
    this.#limitName = limited
      ? `the size limit (${opts.sizeLimit} bytes)`
      : `maximumDiskSize (${opts.maximumDiskSize} bytes)`;
    const maxGroups = Math.ceil(this.#maxBlocks / BLOCKS_PER_GROUP);
    this.#gdtBlocks = Math.ceil((maxGroups * GroupDesc.size) / BLOCK_SIZE);
    this.#out = new ImageWriter(fh, (1 + this.#gdtBlocks) * BLOCK_SIZE);
    this.#tree = new Tree({ sec: 0, nsec: 0 });
    this.#lostFound = newNode(FileMode.DIR, 0o700, 'lost+found');
    this.#tree.root.children!.set('lost+found', this.#lostFound);
  }

  #fail(code: 'ERR_TAR_FORMAT' | 'ERR_DISK_FULL' | 'ERR_EXT4_UNSUPPORTED', entry: string, why: string): Ext4Error {
    return new Ext4Error(code, `tar entry ${JSON.stringify(displayName(entry))}: ${why}`);
  }

  /**
   * e2fsck wants a lost+found; the layer's tar did not have one. Marked so that a union of layers can hide
   * it from the container, which sees only what its image holds (as on overlay2).
   */
  #markLostFound(): void {
    const lf = this.#lostFound;
    if (this.#lostFoundNamed || this.#tree.root.children!.get('lost+found') !== lf || lf.children!.size > 0) return;
    (lf.xattrs ??= new Map()).set(SYNTHETIC_LOST_FOUND.name, Buffer.from(SYNTHETIC_LOST_FOUND.value));
  }

  #reserve(blocks: number, entry: string): number {
    const first = this.#out.offset / BLOCK_SIZE;
    if (first + blocks > this.#limitBlocks) {
      throw this.#fail(
        'ERR_DISK_FULL',
        entry,
        `needs ${blocks} more blocks; the filesystem would exceed ${this.#limitName}`,
      );
    }
    return first;
  }

  /** Adds one tar entry. For regular files, its body follows through {@link Ext4Writer.data}. */
  entry(e: TarEntry): void {
    this.#lastEntry = e.path;
    this.#stats.entries++;
    let parts = splitPath(e.path);
    if (parts[0] === 'lost+found') this.#lostFoundNamed = true;
    const base = parts[parts.length - 1] ?? '';
    const implicit = e.mtime;
    const wh = this.#opts.convertWhiteouts ? tarWhiteout(base) : null;
    if (wh) {
      if (wh.kind === 'opaque') {
        const dir = this.#tree.parentOf([...parts.slice(0, -1), 'x'], e.path, implicit);
        (dir.xattrs ??= new Map()).set(OVERLAY_OPAQUE_XATTR, Buffer.from(OVERLAY_OPAQUE_VALUE));
        dir.source ||= parts.slice(0, -1).join('/') || '/';
        this.#stats.whiteouts++;
        return;
      }
      if (wh.kind === 'aufs-meta') {
        this.#opts.warn(
          'WHITEOUT_META',
          `tar entry ${JSON.stringify(displayName(e.path))}: AUFS metadata entry skipped`,
        );
        return;
      }
      const name = wh.name;
      if (name === '') throw this.#fail('ERR_TAR_FORMAT', e.path, 'whiteout without a name');
      if (name === '.' || name === '..')
        throw this.#fail('ERR_TAR_FORMAT', e.path, `whiteout of "${name}", which names no entry of a directory`);
      parts = [...parts.slice(0, -1), name];
      const node = newNode(FileMode.CHR, 0, e.path, e.mtime);
      node.uid = e.uid;
      node.gid = e.gid;
      this.#tree.place(parts, node, e.path, implicit);
      this.#stats.whiteouts++;
      return;
    }
    if (e.type === 'link') {
      const target = splitPath(e.linkname);
      const node = this.#tree.lookup(target);
      if (!node)
        throw this.#fail(
          'ERR_TAR_FORMAT',
          e.path,
          `hard link to ${JSON.stringify(displayName(e.linkname))}, which no earlier entry created`,
        );
      if (node.type === FileMode.DIR)
        throw this.#fail('ERR_TAR_FORMAT', e.path, `hard link to directory ${JSON.stringify(displayName(e.linkname))}`);
      if (target.join('/') === parts.join('/')) return; // a link to itself changes nothing
      this.#tree.place(parts, node, e.path, implicit);
      this.#stats.hardlinks++;
      return;
    }
    const type = {
      file: FileMode.REG,
      dir: FileMode.DIR,
      symlink: FileMode.LNK,
      chr: FileMode.CHR,
      blk: FileMode.BLK,
      fifo: FileMode.FIFO,
    }[e.type];
    // The entry's path is kept only where a later error could need it (memory per entry matters).
    // The kernel gives every symlink 0777 whatever the header says (overlay2 shows lrwxrwxrwx); so do we.
    const node = newNode(
      type,
      type === FileMode.LNK ? 0o777 : e.mode & 0o7777,
      e.xattrs || e.sparse ? e.path : '',
      e.mtime,
    );
    node.uid = e.uid;
    node.gid = e.gid;
    node.atime = e.atime ?? e.mtime;
    node.ctime = e.ctime ?? e.mtime;
    if (e.xattrs) node.xattrs = new Map(e.xattrs);
    switch (e.type) {
      case 'dir':
        this.#stats.directories++;
        break;
      case 'symlink':
        if (e.linkname.length === 0) throw this.#fail('ERR_TAR_FORMAT', e.path, 'symlink with an empty target');
        if (e.linkname.length >= BLOCK_SIZE)
          throw this.#fail(
            'ERR_TAR_FORMAT',
            e.path,
            `symlink target of ${e.linkname.length} bytes (limit ${BLOCK_SIZE - 1})`,
          );
        node.target = e.linkname;
        node.size = e.linkname.length;
        this.#stats.symlinks++;
        break;
      case 'chr':
      case 'blk':
        node.major = e.devmajor;
        node.minor = e.devminor;
        break;
      case 'file':
        this.#startFile(node, e);
        break;
    }
    this.#tree.place(parts, node, e.path, implicit);
  }

  #startFile(node: FsNode, e: TarEntry): void {
    this.#stats.files++;
    this.#stats.fileBytes += e.size;
    node.size = e.size;
    if (e.size === 0) return;
    if (this.#opts.inlineData && e.size <= INLINE_MAX && !e.sparse) {
      node.inline = new Uint8Array(e.size);
      this.#usesInline = true;
      this.#cur = { node, left: e.size, regions: null, inline: node.inline, inlineAt: 0 };
      return;
    }
    if (!e.sparse) {
      const blocks = Math.ceil(e.size / BLOCK_SIZE);
      const first = this.#reserve(blocks, e.path);
      node.start = first;
      node.blocks = blocks;
      this.#cur = { node, left: e.size, regions: null, inline: null, inlineAt: 0 };
      return;
    }
    // Sparse: allocate the blocks the data regions touch, merged where regions share a block.
    const runs: Run[] = [];
    const regions: { imageOffset: number; length: number }[] = [];
    let next = this.#out.offset / BLOCK_SIZE;
    for (const r of e.sparse) {
      if (r.length === 0) continue;
      const lo = Math.floor(r.offset / BLOCK_SIZE);
      const hi = Math.ceil((r.offset + r.length) / BLOCK_SIZE);
      const last = runs[runs.length - 1];
      if (last && last.logical + last.len >= lo) {
        const extra = hi - (last.logical + last.len);
        if (extra > 0) {
          last.len += extra;
          next += extra;
        }
      } else {
        runs.push({ logical: lo, physical: next, len: hi - lo });
        next += hi - lo;
      }
      const run = runs[runs.length - 1]!;
      regions.push({
        imageOffset: (run.physical + (lo - run.logical)) * BLOCK_SIZE + (r.offset - lo * BLOCK_SIZE),
        length: r.length,
      });
    }
    this.#reserve(next - this.#out.offset / BLOCK_SIZE, e.path);
    node.runs = runs.flatMap(splitRun);
    node.blocks = node.runs.reduce((b, r) => b + r.len, 0);
    this.#cur = { node, left: regions.reduce((n, r) => n + r.length, 0), regions, inline: null, inlineAt: 0 };
  }

  /** Body bytes of the current regular file. Returns a promise when the write buffer had to be flushed. */
  data(chunk: Uint8Array): void | Promise<void> {
    const cur = this.#cur;
    if (!cur) return;
    if (cur.inline) {
      cur.inline.set(chunk, cur.inlineAt);
      cur.inlineAt += chunk.length;
      cur.left -= chunk.length;
      if (cur.left === 0) this.#cur = null;
      return;
    }
    if (cur.regions) return this.#sparseData(cur, chunk);
    cur.left -= chunk.length;
    const r = this.#out.append(chunk);
    if (cur.left === 0) {
      this.#cur = null;
      if (r) return r.then(() => this.#out.align(BLOCK_SIZE));
      return this.#out.align(BLOCK_SIZE);
    }
    return r;
  }

  async #sparseData(cur: Current, chunk: Uint8Array): Promise<void> {
    let at = 0;
    while (at < chunk.length) {
      const region = cur.regions![0]!;
      if (this.#out.offset < region.imageOffset) await this.#out.zeros(region.imageOffset - this.#out.offset);
      const n = Math.min(region.length, chunk.length - at);
      await this.#out.append(chunk.subarray(at, at + n));
      region.length -= n;
      region.imageOffset += n;
      at += n;
      cur.left -= n;
      if (region.length === 0) cur.regions!.shift();
    }
    if (cur.left === 0) {
      this.#cur = null;
      const runs = cur.node.runs!;
      const last = runs[runs.length - 1];
      if (last) {
        const end = (last.physical + last.len) * BLOCK_SIZE;
        if (this.#out.offset < end) await this.#out.zeros(end - this.#out.offset);
      }
    }
  }

  /**
   * Lays out and writes all metadata after the file data, then the superblock and descriptors at the front.
   * Plan first (inode numbers, the size of every piece, the groups), then write in block order.
   */
  async finish(): Promise<WriterSummary> {
    const out = this.#out;
    await out.align(BLOCK_SIZE);
    this.#markLostFound();
    const dataEnd = out.offset / BLOCK_SIZE;
    const { nodes, inodeCount } = this.#numberInodes();
    const dirBlocks = this.#planDirectories(nodes);
    const { xattrArea, xattrBlocks } = this.#planXattrs(nodes);
    const leafBlocks = this.#planExtentLeaves(nodes);
    let metaBlocks = xattrBlocks.size + [...leafBlocks.values()].reduce((a, b) => a + b, 0);
    for (const n of nodes) {
      if (n.type === FileMode.DIR) metaBlocks += dirBlocks.get(n)!;
      else if (n.type === FileMode.LNK && n.target!.length >= 60) metaBlocks += 1;
    }
    const { groups, ipg, total } = this.#planGroups(dataEnd, metaBlocks, inodeCount);

    out.hashFromHere();
    // One bitmap for the whole filesystem: group g's block bitmap is its bytes [g × 4096, (g + 1) × 4096).
    const used = new Bitmap(groups * BLOCKS_PER_GROUP);
    // Block 0 and the descriptors of the groups that exist; the rest of the reserved table stays free.
    used.setRange(0, 1 + Math.ceil((groups * GroupDesc.size) / BLOCK_SIZE));
    for (const n of nodes) {
      if (n.runs) for (const r of n.runs) used.setRange(r.physical, r.len);
      else if (n.blocks > 0) used.setRange(n.start, n.blocks);
    }
    const placed = await this.#writeTrailingBlocks(dataEnd, nodes, dirBlocks, xattrBlocks, leafBlocks);
    const tables = { groups, ipg, blockBitmapAt: placed.cursor, inodeBitmapAt: placed.cursor + groups };
    const inodeTableAt = tables.inodeBitmapAt + groups;
    const metaEnd = inodeTableAt + (groups * ipg) / INODES_PER_BLOCK;
    used.setRange(dataEnd, metaEnd - dataEnd);
    // Blocks past the end of the filesystem, in the last group, are padding and marked used.
    used.setRange(total, groups * BLOCKS_PER_GROUP - total);
    const counts = await this.#writeBitmaps(used, nodes, inodeCount, { ...tables, inodeTableAt });
    await this.#writeInodeTables(nodes, groups, ipg, { xattrArea, leafBlocks, ...placed });
    if (out.offset !== metaEnd * BLOCK_SIZE) {
      throw new Ext4Error(
        'ERR_INTERNAL',
        `metadata ends at byte ${out.offset}, planned ${metaEnd * BLOCK_SIZE} (a bug in @lcow/ext4)`,
      );
    }
    await out.flush();

    // Group descriptors and superblock at the front; the file gets its full size.
    const gdt = new Uint8Array(this.#gdtBlocks * BLOCK_SIZE);
    counts.descs.forEach((d, g) => GroupDesc.encodeInto(d, gdt, g * GroupDesc.size));
    const uuid = this.#opts.uuid ?? uuidFrom(out.digest());
    const sb = this.#superblock({
      total,
      groups,
      ipg,
      freeBlocks: counts.freeBlocks,
      freeInodes: counts.freeInodes,
      uuid,
    });
    const head = new Uint8Array(BLOCK_SIZE);
    head.set(sb, SUPERBLOCK_OFFSET);
    await this.#fh.write(head, 0, BLOCK_SIZE, 0);
    await this.#fh.write(gdt, 0, gdt.length, BLOCK_SIZE);
    await this.#fh.truncate(total * BLOCK_SIZE);
    return { bytes: total * BLOCK_SIZE, blocks: total, inodes: groups * ipg, ...this.#stats, uuid };
  }

  /**
   * Inode numbers in depth-first order (lost+found keeps 11) and link counts. `nodes` are in inode-number
   * order (one array, not one indexed by number as well: 8 bytes an entry at the peak of memory).
   */
  #numberInodes(): { nodes: FsNode[]; inodeCount: number } {
    const root = this.#tree.root;
    const lostFound = root.children!.get('lost+found');
    // Inode 11 is lost+found's only while it is a directory; a tar that replaced it by something else
    // leaves the number to the first node, or e2fsck finds it marked in use and never referenced.
    let nextIno = lostFound?.type === FileMode.DIR ? Ino.FIRST + 1 : Ino.FIRST;
    root.ino = Ino.ROOT;
    root.parent = root;
    if (lostFound?.type === FileMode.DIR) lostFound.ino = Ino.LOST_FOUND;
    const nodes: FsNode[] = [root];
    if (lostFound?.ino === Ino.LOST_FOUND) nodes.push(lostFound);
    const stack: FsNode[] = [root];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      let subdirs = 0;
      const firstDir = stack.length;
      // forEach rather than for…of: Map iteration by entries allocates a pair per child.
      dir.children!.forEach((child, name) => {
        if (child.type === FileMode.DIR) {
          subdirs++;
          child.parent = dir;
          if (child.ino === 0) {
            child.ino = nextIno++;
            nodes.push(child);
          }
          stack.push(child);
        } else {
          if (child.links === 0) {
            child.ino = nextIno++;
            nodes.push(child);
          }
          child.links++;
          if (child.links > LINK_MAX) {
            throw this.#fail(
              'ERR_EXT4_UNSUPPORTED',
              pathTo(dir, name),
              `more than ${LINK_MAX} hard links (the ext4 limit)`,
            );
          }
        }
      });
      // dir_nlink: a directory with more subdirectories than the link count holds reports 1.
      dir.links = 2 + subdirs > LINK_MAX ? 1 : 2 + subdirs;
      // Reverse the subdirectories just pushed, so the first one is visited first.
      for (let i = firstDir, j = stack.length - 1; i < j; i++, j--) [stack[i], stack[j]] = [stack[j]!, stack[i]!];
    }
    return { nodes, inodeCount: nodes[nodes.length - 1]!.ino };
  }

  /** Blocks of each directory: ".", "..", then the children, a record never crossing a block. */
  #planDirectories(nodes: readonly FsNode[]): Map<FsNode, number> {
    const dirBlocks = new Map<FsNode, number>();
    for (const n of nodes) {
      if (n.type === FileMode.DIR) {
        let blocks = 1;
        let used = direntSize(1) + direntSize(2);
        for (const name of n.children!.keys()) {
          const need = direntSize(name.length);
          if (used + need > BLOCK_SIZE) {
            blocks++;
            used = 0;
          }
          used += need;
        }
        // A directory's blocks are contiguous, so four in-inode extents hold up to 512 MiB of entries.
        if (blocks > 4 * MAX_EXTENT_LEN) {
          throw this.#fail(
            'ERR_EXT4_UNSUPPORTED',
            n.source || '(a directory)',
            `directory of ${blocks} blocks (limit ${4 * MAX_EXTENT_LEN})`,
          );
        }
        dirBlocks.set(n, blocks);
        n.size = blocks * BLOCK_SIZE;
      }
    }
    return dirBlocks;
  }

  /**
   * Each inode's attributes: in the inode when they fit, else in a block shared by every inode with the
   * same attributes (its refcount set when written).
   */
  #planXattrs(nodes: readonly FsNode[]): {
    xattrArea: Map<FsNode, Uint8Array>;
    xattrBlocks: Map<string, { block: Uint8Array; users: FsNode[] }>;
  } {
    const xattrArea = new Map<FsNode, Uint8Array>();
    const xattrBlocks = new Map<string, { block: Uint8Array; users: FsNode[] }>();
    for (const n of nodes) {
      const attrs = n.inline ? new Map([...(n.xattrs ?? []), ['system.data', new Uint8Array(0)] as const]) : n.xattrs;
      if (!attrs || attrs.size === 0) continue;
      const items = prepareXattrs(attrs, `tar entry ${JSON.stringify(displayName(n.source))}`);
      const inInode = inodeXattrs(items, INODE_XATTR_ROOM);
      if (inInode) xattrArea.set(n, inInode);
      else {
        if (n.inline)
          throw this.#fail(
            'ERR_EXT4_UNSUPPORTED',
            n.source,
            'inline data with attributes that do not fit in the inode',
          );
        const block = blockXattrs(items, BLOCK_SIZE, `tar entry ${JSON.stringify(displayName(n.source))}`);
        const key = Buffer.from(block).toString('latin1');
        const shared = xattrBlocks.get(key);
        if (shared) shared.users.push(n);
        else {
          xattrBlocks.set(key, { block, users: [n] });
        }
      }
    }
    return { xattrArea, xattrBlocks };
  }

  /** Extent leaf blocks of the files with more than four extents (a depth-1 tree, four leaves at most). */
  #planExtentLeaves(nodes: readonly FsNode[]): Map<FsNode, number> {
    const leafBlocks = new Map<FsNode, number>();
    for (const n of nodes) {
      const extents = extentCount(n);
      if (extents > 4) {
        const leaves = Math.ceil(extents / EXTENTS_PER_LEAF);
        if (leaves > 4)
          throw this.#fail(
            'ERR_EXT4_UNSUPPORTED',
            n.source,
            `${extents} extents need a deeper extent tree than this writer builds`,
          );
        leafBlocks.set(n, leaves);
      }
    }

    return leafBlocks;
  }

  /** Groups, inodes per group and the block count (whole MiB) for the data, the metadata and the inodes. */
  #planGroups(dataEnd: number, metaBlocks: number, inodeCount: number): { groups: number; ipg: number; total: number } {
    let groups = Math.max(1, Math.ceil(inodeCount / BLOCKS_PER_GROUP));
    let ipg = 0;
    let total = 0;
    for (;;) {
      ipg = Math.ceil(Math.ceil(inodeCount / groups) / INODES_PER_BLOCK) * INODES_PER_BLOCK;
      if (ipg > BLOCKS_PER_GROUP) {
        groups++;
        continue;
      }
      const itable = (groups * ipg) / INODES_PER_BLOCK;
      total = dataEnd + metaBlocks + 2 * groups + itable;
      total = Math.max(total, (groups - 1) * BLOCKS_PER_GROUP + 256);
      total = Math.ceil(total / 256) * 256; // whole MiB
      const need = Math.ceil(total / BLOCKS_PER_GROUP);
      if (need === groups) break;
      groups = need;
    }
    if (total > this.#limitBlocks) {
      throw new Ext4Error(
        'ERR_DISK_FULL',
        `filesystem metadata after tar entry ${JSON.stringify(displayName(this.#lastEntry))}: the image needs ${total * BLOCK_SIZE} bytes, more than ${this.#limitName}`,
      );
    }

    return { groups, ipg, total };
  }

  /**
   * After the data, in this order: directories, long symlink targets, attribute blocks, extent leaves.
   * Returns the block after them and where each inode's attribute block and first leaf went.
   */
  async #writeTrailingBlocks(
    dataEnd: number,
    nodes: readonly FsNode[],
    dirBlocks: ReadonlyMap<FsNode, number>,
    xattrBlocks: ReadonlyMap<string, { block: Uint8Array; users: FsNode[] }>,
    leafBlocks: ReadonlyMap<FsNode, number>,
  ): Promise<{ cursor: number; xattrBlockOf: Map<FsNode, number>; leafOf: Map<FsNode, number> }> {
    const out = this.#out;
    let cursor = dataEnd;
    for (const n of nodes) {
      if (n.type !== FileMode.DIR) continue;
      const blocks = dirBlocks.get(n)!;
      n.start = cursor;
      n.blocks = blocks;
      cursor += blocks;
      await this.#writeDir(n, n.parent ?? n);
    }
    for (const n of nodes) {
      if (n.type === FileMode.LNK && n.target!.length >= 60) {
        n.start = cursor++;
        n.blocks = 1;
        const b = new Uint8Array(BLOCK_SIZE);
        b.set(Buffer.from(n.target!, 'latin1'));
        await out.append(b);
      }
    }
    const xattrBlockOf = new Map<FsNode, number>();
    for (const { block, users } of xattrBlocks.values()) {
      setXattrRefcount(block, users.length);
      for (const u of users) xattrBlockOf.set(u, cursor);
      cursor++;
      await out.append(block);
    }
    const leafOf = new Map<FsNode, number>();
    for (const [n, leaves] of leafBlocks) {
      leafOf.set(n, cursor);
      for (let l = 0; l < leaves; l++) {
        const b = new Uint8Array(BLOCK_SIZE);
        const part = runsOf(n).slice(l * EXTENTS_PER_LEAF, (l + 1) * EXTENTS_PER_LEAF);
        ExtentHeader.encodeInto(
          { magic: EXTENT_MAGIC, entries: part.length, max: EXTENTS_PER_LEAF, depth: 0, generation: 0 },
          b,
          0,
        );
        part.forEach((r, i) => Extent.encodeInto(extentOf(r), b, ExtentHeader.size + i * Extent.size));
        await out.append(b);
        cursor++;
      }
    }
    return { cursor, xattrBlockOf, leafOf };
  }

  /** Every group's block bitmap (from `used`), then every inode bitmap; the descriptors and free counts. */
  async #writeBitmaps(
    used: Bitmap,
    nodes: readonly FsNode[],
    inodeCount: number,
    at: { groups: number; ipg: number; blockBitmapAt: number; inodeBitmapAt: number; inodeTableAt: number },
  ): Promise<{ descs: GroupDesc[]; freeBlocks: number; freeInodes: number }> {
    const { groups, ipg } = at;
    const itableBlocksPerGroup = ipg / INODES_PER_BLOCK;
    const dirsIn = new Array<number>(groups).fill(0);
    for (const n of nodes) if (n.type === FileMode.DIR) dirsIn[Math.floor((n.ino - 1) / ipg)]!++;
    const descs: GroupDesc[] = [];
    let freeBlocks = 0;
    let freeInodes = 0;
    for (let g = 0; g < groups; g++) {
      const bitmap = used.bytes.subarray(g * BLOCK_SIZE, (g + 1) * BLOCK_SIZE);
      const free = BLOCKS_PER_GROUP - popcount(bitmap);
      // Inode numbers are dense: 1 … inodeCount are all in use (the reserved ones included).
      const usedInodes = Math.max(0, Math.min(ipg, inodeCount - g * ipg));
      freeBlocks += free;
      freeInodes += ipg - usedInodes;
      descs.push({
        ...GroupDesc.zero(),
        blockBitmapLo: at.blockBitmapAt + g,
        inodeBitmapLo: at.inodeBitmapAt + g,
        inodeTableLo: at.inodeTableAt + g * itableBlocksPerGroup,
        freeBlocksCountLo: free,
        freeInodesCountLo: ipg - usedInodes,
        usedDirsCountLo: dirsIn[g]!,
      });
      await this.#out.append(bitmap);
    }
    for (let g = 0; g < groups; g++) {
      const bitmap = new Bitmap(BLOCKS_PER_GROUP);
      bitmap.setRange(0, Math.max(0, Math.min(ipg, inodeCount - g * ipg)));
      bitmap.setRange(ipg, BLOCKS_PER_GROUP - ipg); // padding past the group's inodes (e2fsck checks it)
      await this.#out.append(bitmap.bytes);
    }
    return { descs, freeBlocks, freeInodes };
  }

  /**
   * The inode tables, one slice of at most ITABLE_SLICE inodes at a time through one reused buffer: a whole
   * group's table is 8 MiB, and memory must not grow with the tree.
   */
  async #writeInodeTables(
    nodes: readonly FsNode[],
    groups: number,
    ipg: number,
    placed: {
      xattrArea: ReadonlyMap<FsNode, Uint8Array>;
      xattrBlockOf: ReadonlyMap<FsNode, number>;
      leafOf: ReadonlyMap<FsNode, number>;
      leafBlocks: ReadonlyMap<FsNode, number>;
    },
  ): Promise<void> {
    const slice = new Uint8Array(Math.min(ipg, ITABLE_SLICE) * INODE_SIZE);
    let next = 0; // the first node not yet encoded (nodes are in inode-number order)
    for (let g = 0; g < groups; g++) {
      for (let first = 0; first < ipg; first += ITABLE_SLICE) {
        const count = Math.min(ITABLE_SLICE, ipg - first);
        const part = slice.subarray(0, count * INODE_SIZE);
        part.fill(0);
        for (let i = 0; i < count; i++) {
          const n = nodes[next];
          if (n?.ino !== g * ipg + first + i + 1) continue;
          next++;
          this.#encodeInode(
            n,
            part,
            i * INODE_SIZE,
            n.links,
            placed.xattrArea.get(n),
            placed.xattrBlockOf.get(n) ?? 0,
            placed.leafOf.get(n),
            placed.leafBlocks.get(n) ?? 0,
          );
        }
        await this.#out.append(part);
      }
    }
  }

  async #writeDir(dir: FsNode, parent: FsNode): Promise<void> {
    const blocks = dir.blocks;
    // One scratch Buffer for every directory (a fresh allocation each cost more than the encoding: 18 µs),
    // zeroed for this one; a Buffer, so that names (latin1 byte strings) are written in place.
    if (this.#dirScratch.length < blocks * BLOCK_SIZE) this.#dirScratch = Buffer.alloc(blocks * BLOCK_SIZE);
    const buf = this.#dirScratch.subarray(0, blocks * BLOCK_SIZE);
    buf.fill(0);
    let blockStart = 0;
    let at = 0;
    let lastAt = -1;
    const put = (name: string, ino: number, type: number): void => {
      const need = direntSize(name.length);
      if (at + need > blockStart + BLOCK_SIZE) {
        DirEntryHeader.set(buf, 'recLen', blockStart + BLOCK_SIZE - lastAt, lastAt);
        blockStart += BLOCK_SIZE;
        at = blockStart;
      }
      DirEntryHeader.encodeInto({ inode: ino, recLen: need, nameLen: name.length, fileType: type }, buf, at);
      buf.write(name, at + DirEntryHeader.size, 'latin1');
      lastAt = at;
      at += need;
    };
    put('.', dir.ino, DirFileType.DIR);
    put('..', parent.ino, DirFileType.DIR);
    dir.children!.forEach((child, name) => put(name, child.ino, dirFileType(child.type)));
    DirEntryHeader.set(buf, 'recLen', blockStart + BLOCK_SIZE - lastAt, lastAt);
    await this.#out.append(buf);
  }

  #encodeInode(
    n: FsNode,
    table: Uint8Array,
    at: number,
    links: number,
    xattrArea: Uint8Array | undefined,
    xattrBlock: number,
    leaf: number | undefined,
    leaves: number,
  ): void {
    // One inode per file: nothing here allocates beyond the field record (no closures, no tuples).
    let flags = 0;
    let dataBlocks = leaves + (xattrBlock ? 1 : 0);
    const fast = n.type === FileMode.LNK && n.target!.length < 60;
    const device = n.type === FileMode.CHR || n.type === FileMode.BLK;
    if (n.inline && !fast && !device) flags |= InodeFlags.INLINE_DATA;
    else if (!fast && !device && n.type !== FileMode.FIFO && n.type !== FileMode.SOCK) {
      flags |= InodeFlags.EXTENTS;
      dataBlocks += n.runs ? n.runs.reduce((sum, r) => sum + r.len, 0) : n.blocks;
    }
    const sectors = dataBlocks * (BLOCK_SIZE / 512);
    Inode.encodeInto(
      {
        mode: n.type | n.perm,
        uidLo: n.uid & 0xffff,
        sizeLo: n.size % 2 ** 32,
        atime: timeLo(n.atimeSec),
        ctime: timeLo(n.ctimeSec),
        mtime: timeLo(n.mtimeSec),
        dtime: 0,
        gidLo: n.gid & 0xffff,
        linksCount: links,
        blocksLo: sectors % 2 ** 32,
        flags,
        version: 0,
        block: NO_BLOCK,
        generation: 0,
        fileAclLo: xattrBlock,
        sizeHi: Math.floor(n.size / 2 ** 32),
        obsoFaddr: 0,
        blocksHi: Math.floor(sectors / 2 ** 32),
        fileAclHi: 0,
        uidHi: Math.floor(n.uid / 65536) & 0xffff,
        gidHi: Math.floor(n.gid / 65536) & 0xffff,
        checksumLo: 0,
        reserved: 0,
        extraIsize: EXTRA_ISIZE,
        checksumHi: 0,
        ctimeExtra: timeExtra(n.ctimeSec, n.ctimeNsec),
        mtimeExtra: timeExtra(n.mtimeSec, n.mtimeNsec),
        atimeExtra: timeExtra(n.atimeSec, n.atimeNsec),
        crtime: timeLo(n.mtimeSec),
        crtimeExtra: timeExtra(n.mtimeSec, n.mtimeNsec),
        versionHi: 0,
        projid: 0,
      },
      table,
      at,
    );
    const iblock = at + Inode.offsetOf('block');
    if (fast) {
      table.set(Buffer.from(n.target!, 'latin1'), iblock);
    } else if (device) {
      // old_encode_dev when both numbers fit in 8 bits, else new_encode_dev in i_block[1] (fs/ext4/inode.c).
      const small = n.major < 256 && n.minor < 256;
      DeviceNumbers.encodeInto(
        small
          ? { old: (n.major << 8) | n.minor, new: 0, zero: 0 }
          : { old: 0, new: ((n.minor & 0xff) | (n.major << 8) | ((n.minor & ~0xff) << 12)) >>> 0, zero: 0 },
        table,
        iblock,
      );
    } else if (flags & InodeFlags.INLINE_DATA) {
      table.set(n.inline!, iblock);
    } else if (flags & InodeFlags.EXTENTS) {
      if (leaf === undefined) {
        const count = extentCount(n);
        ExtentHeader.encodeInto(
          { magic: EXTENT_MAGIC, entries: count, max: 4, depth: 0, generation: 0 },
          table,
          iblock,
        );
        if (n.runs)
          n.runs.forEach((r, k) => Extent.encodeInto(extentOf(r), table, iblock + ExtentHeader.size + k * Extent.size));
        else
          for (let k = 0; k < count; k++) {
            const done = k * MAX_EXTENT_LEN;
            Extent.encodeInto(
              extentOf({ logical: done, physical: n.start + done, len: Math.min(MAX_EXTENT_LEN, n.blocks - done) }),
              table,
              iblock + ExtentHeader.size + k * Extent.size,
            );
          }
      } else {
        const runs = runsOf(n);
        ExtentHeader.encodeInto(
          { magic: EXTENT_MAGIC, entries: leaves, max: 4, depth: 1, generation: 0 },
          table,
          iblock,
        );
        for (let l = 0; l < leaves; l++) {
          ExtentIndex.encodeInto(
            { block: runs[l * EXTENTS_PER_LEAF]!.logical, leafLo: leaf + l, leafHi: 0, unused: 0 },
            table,
            iblock + ExtentHeader.size + l * ExtentIndex.size,
          );
        }
      }
    }
    if (xattrArea) table.set(xattrArea, at + 128 + EXTRA_ISIZE);
  }

  #superblock(s: {
    total: number;
    groups: number;
    ipg: number;
    freeBlocks: number;
    freeInodes: number;
    uuid: string;
  }): Uint8Array {
    const now = this.#opts.timestamp ? Math.floor(this.#opts.timestamp.getTime() / 1000) : 0;
    const [time, timeHi] = [now % 2 ** 32, Math.floor(now / 2 ** 32) & 0xff];
    const label = Buffer.from(this.#opts.label ?? '', 'utf8');
    if (label.length > 16)
      throw new Ext4Error('ERR_INVALID_ARGUMENT', `label ${JSON.stringify(this.#opts.label)}: longer than 16 bytes`);
    return Superblock.encode({
      inodesCount: s.groups * s.ipg,
      blocksCountLo: s.total,
      rBlocksCountLo: 0,
      freeBlocksCountLo: s.freeBlocks,
      freeInodesCount: s.freeInodes,
      firstDataBlock: 0,
      logBlockSize: 2,
      logClusterSize: 2,
      blocksPerGroup: BLOCKS_PER_GROUP,
      clustersPerGroup: BLOCKS_PER_GROUP,
      inodesPerGroup: s.ipg,
      mtime: 0,
      wtime: time,
      mntCount: 0,
      maxMntCount: 0xffff,
      magic: SUPERBLOCK_MAGIC,
      state: 1,
      errors: 1,
      minorRevLevel: 0,
      lastcheck: time,
      checkinterval: 0,
      creatorOs: 0,
      revLevel: 1,
      defResuid: 0,
      defResgid: 0,
      firstIno: Ino.FIRST,
      inodeSize: INODE_SIZE,
      blockGroupNr: 0,
      featureCompat: Compat.ext_attr | Compat.sparse_super2,
      featureIncompat:
        Incompat.filetype | Incompat.extent | Incompat.flex_bg | (this.#usesInline ? Incompat.inline_data : 0),
      featureRoCompat:
        RoCompat.large_file | RoCompat.huge_file | RoCompat.dir_nlink | RoCompat.extra_isize | RoCompat['read-only'],
      uuid: s.uuid,
      volumeName: label.toString('latin1'),
      lastMounted: '',
      algorithmUsageBitmap: 0,
      preallocBlocks: 0,
      preallocDirBlocks: 0,
      reservedGdtBlocks: 0,
      journalUuid: '00000000-0000-0000-0000-000000000000',
      journalInum: 0,
      journalDev: 0,
      lastOrphan: 0,
      hashSeed: new Uint8Array(16),
      defHashVersion: 1,
      jnlBackupType: 0,
      descSize: 0,
      defaultMountOpts: 0,
      firstMetaBg: 0,
      mkfsTime: time,
      jnlBlocks: new Uint8Array(68),
      blocksCountHi: 0,
      rBlocksCountHi: 0,
      freeBlocksCountHi: 0,
      minExtraIsize: EXTRA_ISIZE,
      wantExtraIsize: EXTRA_ISIZE,
      flags: 0,
      raidStride: 0,
      mmpInterval: 0,
      mmpBlock: 0n,
      raidStripeWidth: 0,
      logGroupsPerFlex: 31 - Math.clz32(Math.max(1, s.groups)) + (s.groups & (s.groups - 1) ? 1 : 0),
      checksumType: 0,
      kbytesWritten: 0n,
      snapshotInum: 0,
      snapshotId: 0,
      snapshotRBlocksCount: 0n,
      snapshotList: 0,
      errorCount: 0,
      firstErrorTime: 0,
      firstErrorIno: 0,
      firstErrorBlock: 0n,
      firstErrorFunc: '',
      firstErrorLine: 0,
      lastErrorTime: 0,
      lastErrorIno: 0,
      lastErrorLine: 0,
      lastErrorBlock: 0n,
      lastErrorFunc: '',
      mountOpts: '',
      usrQuotaInum: 0,
      grpQuotaInum: 0,
      overheadClusters: 0,
      backupBgs0: 0,
      backupBgs1: 0,
      encryptAlgos: new Uint8Array(4),
      encryptPwSalt: new Uint8Array(16),
      lpfIno: Ino.LOST_FOUND,
      prjQuotaInum: 0,
      checksumSeed: 0,
      wtimeHi: timeHi,
      mtimeHi: 0,
      mkfsTimeHi: timeHi,
      lastcheckHi: timeHi,
      firstErrorTimeHi: 0,
      lastErrorTimeHi: 0,
      firstErrorErrcode: 0,
      lastErrorErrcode: 0,
      encoding: 0,
      encodingFlags: 0,
      orphanFileInum: 0,
      checksum: 0,
    });
  }
}

/** The path of `name` in `dir`, from the parent links set while laying out. */
function pathTo(dir: FsNode, name: string): string {
  const parts = [name];
  for (let d = dir; d.parent && d.parent !== d; d = d.parent) {
    const p: FsNode = d.parent;
    for (const [k, v] of p.children!) if (v === d) parts.unshift(k);
  }
  return parts.join('/');
}

/** Splits a run into extents of at most 32768 blocks. */
function splitRun(r: Run): Run[] {
  const out: Run[] = [];
  for (let done = 0; done < r.len; done += MAX_EXTENT_LEN) {
    out.push({ logical: r.logical + done, physical: r.physical + done, len: Math.min(MAX_EXTENT_LEN, r.len - done) });
  }
  return out;
}

function extentOf(r: Run): Extent {
  return { block: r.logical, len: r.len, startHi: Math.floor(r.physical / 2 ** 32), startLo: r.physical % 2 ** 32 };
}

/** A UUID (version 5 bits) from a digest, for reproducible images. */
function uuidFrom(digest: Buffer): string {
  const b = Buffer.from(digest.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
