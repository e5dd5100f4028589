// The ext4 layout hcsshim's tar2ext4 writes (its `compactext4` package, read as a format description),
// reproduced byte for byte so that dm-verity root digests match what a Windows host computes. Written
// from the description, not translated: the layout rules are listed in the package README.
//
// Layout: block 0 superblock, then the group-descriptor blocks sized for the maximum disk size, then
// file data in tar order (each file's data, then its extent blocks; xattr blocks where the entry
// arrives), then every directory (pre-order, children by inode number), the inode table, two bitmap
// blocks per group, and zeros up to the block count.
import { Compat, Incompat, RoCompat } from '../format/constants.ts';
import { DirEntryHeader } from '../format/dirent.ts';
import { Extent, ExtentHeader, ExtentIndex, EXTENT_MAGIC } from '../format/extent.ts';
import { GroupDesc } from '../format/group.ts';
import { Inode, InodeFlags } from '../format/inode.ts';
import { Superblock, SUPERBLOCK_MAGIC } from '../format/superblock.ts';
import { Ext4Error } from '../errors.ts';

const BLOCK = 4096;
const BLOCKS_PER_GROUP = BLOCK * 8;
const INODE_SIZE = 256;
const INODE_FIRST = 11;
const MAX_INODES_PER_GROUP = BLOCK * 8;
const INODES_PER_GROUP_STEP = BLOCK / INODE_SIZE;
const GD_PER_BLOCK = BLOCK / 32;
const SMALL_SYMLINK = 59;
const MAX_BLOCKS_PER_EXTENT = 0x8000;
const INODE_DATA = 60;
/** Bytes of the inode hcsshim fills: through crtime_extra (i_extra_isize 24). */
const INODE_USED = 152;
const INODE_EXTRA = INODE_SIZE - INODE_USED;
const INLINE_MAX = INODE_DATA + INODE_EXTRA - (4 + 4 + 16 + 4);
const MAX_LINKS = 65000;
const S_IFMT = 0o170000;
export const S = {
  IFIFO: 0o010000,
  IFCHR: 0o020000,
  IFDIR: 0o040000,
  IFBLK: 0o060000,
  IFREG: 0o100000,
  IFLNK: 0o120000,
  IFSOCK: 0o140000,
} as const;

const XATTR_PREFIXES: [number, string][] = [
  [2, 'system.posix_acl_access'],
  [3, 'system.posix_acl_default'],
  [8, 'system.richacl'],
  [7, 'system.'],
  [1, 'user.'],
  [4, 'trusted.'],
  [6, 'security.'],
];
const XATTR_MAGIC = 0xea020000;

/** A time as hcsshim stores it: 34 bits of seconds (clamped) with the nanoseconds above (`0`: unset). */
export type FsTime = bigint;

/** Go's `timeToFsTime`: seconds clamped to [-2^31, 0x37fffffff], `uint64(s) | ns << 34`. */
export function fsTime(t: { sec: number; nsec: number } | null): FsTime {
  if (!t) return 0n;
  let s = BigInt(t.sec);
  if (s < -0x80000000n) return 0x80000000n;
  if (s > 0x37fffffffn) s = 0x37fffffffn;
  return (BigInt.asUintN(64, s) | (BigInt(t.nsec) << 34n)) & 0xffff_ffff_ffff_ffffn;
}

/** Go's `fsTimeToTime`, then `timeToFsTime` again: what a Stat/Create round trip keeps. */
function roundTrip(t: FsTime): FsTime {
  if (t === 0n) return 0n;
  let s = t & 0x3ffffffffn;
  if (s > 0x7fffffffn && s < 0x100000000n) s = BigInt.asIntN(32, s);
  return fsTime({ sec: Number(s), nsec: Number(t >> 34n) });
}

interface Xattr {
  index: number;
  name: Uint8Array;
  value: Uint8Array;
}

interface Node {
  number: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atime: FsTime;
  ctime: FsTime;
  mtime: FsTime;
  crtime: FsTime;
  links: number;
  xattrBlock: number;
  blockCount: number;
  devmajor: number;
  devminor: number;
  flags: number;
  data: Uint8Array | null;
  xattrInline: Uint8Array | null;
  children: Map<string, Node> | null;
}

/** What an entry sets (hcsshim's `File`). */
export interface CompactFile {
  mode: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: FsTime;
  ctime?: FsTime;
  mtime?: FsTime;
  crtime?: FsTime;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Names as latin1 byte strings. */
  xattrs?: Map<string, Uint8Array>;
}

/**
 * Where the bytes go: appended in order from {@link CompactWriter.dataStart} (the sink copies what it is
 * given before returning), except the few blocks written in place (descriptors, superblock, a rewritten
 * xattr block), which come after a `flush`.
 */
export interface CompactSink {
  append(data: Uint8Array): void | Promise<void>;
  zeros(n: number): void | Promise<void>;
  flush(): Promise<void>;
  writeAt(data: Uint8Array, position: number): Promise<void>;
}

const enc = (s: string): Uint8Array => Buffer.from(s, 'latin1');

function splitXattrName(name: string): Xattr['index'] extends number ? [number, string] : never {
  for (const [i, p] of XATTR_PREFIXES) if (name.startsWith(p)) return [i, name.slice(p.length)];
  return [0, name];
}

const entryLen = (x: Xattr): number => ((x.name.length + 3) & ~3) + 16;
const valueLen = (x: Xattr): number => (x.value.length + 3) & ~3;

/** The ext4 xattr entry hash (hcsshim computes it per entry, never for the block). */
function xattrHash(name: Uint8Array, value: Uint8Array): number {
  let h = 0;
  for (const c of name) h = ((h << 5) ^ (h >>> 27) ^ c) >>> 0;
  const words = Math.floor(value.length / 4);
  const view = Buffer.from(value.buffer, value.byteOffset, value.length);
  for (let i = 0; i < words; i++) h = ((h << 16) ^ (h >>> 16) ^ view.readUInt32LE(i * 4)) >>> 0;
  if (value.length % 4 !== 0) {
    const last = Buffer.alloc(4);
    last.set(value.subarray(words * 4));
    h = ((h << 16) ^ (h >>> 16) ^ last.readUInt32LE(0)) >>> 0;
  }
  return h;
}

/** Entries from the start of `b`, values packed from its end; offsets relative to `b` plus `delta`. */
function putXattrs(xs: readonly Xattr[], b: Uint8Array, delta: number): void {
  let offset = b.length + delta;
  let e = 0;
  let d = b.length;
  const v = Buffer.from(b.buffer, b.byteOffset, b.length);
  for (const x of xs) {
    const vl = valueLen(x);
    offset -= vl;
    b[e] = x.name.length;
    b[e + 1] = x.index;
    v.writeUInt16LE(offset & 0xffff, e + 2);
    v.writeUInt32LE(x.value.length, e + 8);
    v.writeUInt32LE(xattrHash(x.name, x.value), e + 12);
    b.set(x.name, e + 16);
    e += entryLen(x);
    b.set(x.value, d - vl);
    d -= vl;
  }
}

function getXattrs(b: Uint8Array, into: Map<string, Uint8Array>, delta: number): void {
  const v = Buffer.from(b.buffer, b.byteOffset, b.length);
  let e = 0;
  while (e < b.length) {
    const nameLen = b[e]!;
    if (nameLen === 0) break;
    const index = b[e + 1]!;
    const off = v.readUInt16LE(e + 2) - delta;
    const size = v.readUInt32LE(e + 8);
    const name = Buffer.from(b.subarray(e + 16, e + 16 + nameLen)).toString('latin1');
    const prefix = XATTR_PREFIXES.find(([i]) => i === index)?.[1] ?? '';
    into.set(prefix + name, b.slice(off, off + size));
    e += ((nameLen + 3) & ~3) + 16;
  }
}

/** Go's sort.Slice for short slices (insertion sort), with hcsshim's comparator for block xattrs. */
function sortBlockXattrs(xs: Xattr[]): void {
  if (xs.length > 12)
    throw new Ext4Error(
      'ERR_EXT4_UNSUPPORTED',
      `more than 12 xattrs in one block: not reproduced in the hcsshim layout`,
    );
  const less = (a: Xattr, b: Xattr): boolean =>
    a.index < b.index || a.name.length < b.name.length || Buffer.compare(a.name, b.name) < 0;
  for (let i = 1; i < xs.length; i++)
    for (let j = i; j > 0 && less(xs[j]!, xs[j - 1]!); j--) [xs[j], xs[j - 1]] = [xs[j - 1]!, xs[j]!];
}

function fileType(mode: number): number {
  switch (mode & S_IFMT) {
    case S.IFREG:
      return 1;
    case S.IFDIR:
      return 2;
    case S.IFCHR:
      return 3;
    case S.IFBLK:
      return 4;
    case S.IFIFO:
      return 5;
    case S.IFSOCK:
      return 6;
    case S.IFLNK:
      return 7;
    default:
      return 0;
  }
}

function groupCount(blocks: number, inodes: number, ipg: number): number {
  const dataPerGroup = BLOCKS_PER_GROUP - (ipg * INODE_SIZE) / BLOCK - 2;
  const min = Math.floor((inodes - 1) / ipg) * dataPerGroup + 1;
  return Math.ceil(Math.max(blocks, min) / dataPerGroup);
}

function bestGroupCount(blocks: number, inodes: number): { groups: number; ipg: number } {
  let groups = Infinity;
  let ipg = 0;
  for (let i = INODES_PER_GROUP_STEP; i <= MAX_INODES_PER_GROUP; i += INODES_PER_GROUP_STEP) {
    const g = groupCount(blocks, inodes, i);
    if (g < groups) {
      groups = g;
      ipg = i;
    }
  }
  return { groups, ipg };
}

export interface CompactOptions {
  inlineData?: boolean;
  /** Bytes (default 16 GiB, hcsshim's): sizes the group-descriptor area and caps the image. */
  maximumDiskSize?: number;
  uuid?: Uint8Array;
  volumeName?: Uint8Array;
}

/** hcsshim's compact ext4 writer: entries in, data streamed, metadata at {@link close}. */
export class CompactWriter {
  readonly #sink: CompactSink;
  readonly #inline: boolean;
  readonly #max: number;
  readonly #gdBlocks: number;
  readonly #uuid: Uint8Array;
  readonly #volume: Uint8Array;
  readonly #inodes: (Node | null)[] = [];
  /** Block xattrs by block number, for {@link stat} (hcsshim reads them back from the file). */
  readonly #blockXattrs = new Map<number, Uint8Array>();
  #pos: number;
  #cur: { node: Node; written: number; max: number } | null = null;
  #madeParents = '';

  /** A writer with its root and lost+found in place (what hcsshim's first call does). */
  static async open(sink: CompactSink, opts: CompactOptions = {}): Promise<CompactWriter> {
    const w = new CompactWriter(sink, opts);
    // e2fsck wants lost+found; hcsshim makes it first, so it is inode 11.
    await w.create('lost+found', { mode: S.IFDIR | 0o700 });
    return w;
  }

  private constructor(sink: CompactSink, opts: CompactOptions = {}) {
    this.#sink = sink;
    this.#inline = opts.inlineData ?? false;
    this.#max = maxDiskSize(opts);
    this.#gdBlocks = gdBlocksFor(this.#max);
    this.#uuid = opts.uuid ?? new Uint8Array(16);
    this.#volume = opts.volumeName ?? new Uint8Array(16);
    // Inode 1 (bad blocks) is skipped; 2 is the root; 3–10 are reserved.
    this.#inodes.push(null);
    const root = this.#make({ mode: S.IFDIR | 0o755 }, null);
    root.links++;
    while (this.#inodes.length < INODE_FIRST - 1) this.#inodes.push(null);
    this.#pos = CompactWriter.dataStart(opts);
  }

  /** Where sequential data starts: after the superblock and the descriptor blocks for the maximum size. */
  static dataStart(opts: CompactOptions = {}): number {
    return (1 + gdBlocksFor(maxDiskSize(opts))) * BLOCK;
  }

  get #root(): Node {
    return this.#inodes[1]!;
  }

  #write(b: Uint8Array): void | Promise<void> {
    if (this.#pos + b.length > this.#max)
      throw new Ext4Error('ERR_DISK_FULL', `disk exceeded maximum size of ${this.#max} bytes`);
    this.#pos += b.length;
    return this.#sink.append(b);
  }

  async #writeAt(b: Uint8Array, at: number): Promise<void> {
    await this.#sink.flush();
    await this.#sink.writeAt(b, at);
  }

  #zero(n: number): void | Promise<void> {
    if (n <= 0) return;
    if (this.#pos + n > this.#max)
      throw new Ext4Error('ERR_DISK_FULL', `disk exceeded maximum size of ${this.#max} bytes`);
    this.#pos += n;
    return this.#sink.zeros(n);
  }

  #make(f: CompactFile, reuse: Node | null): Node {
    let mode = f.mode;
    if ((mode & S_IFMT) === 0) mode |= S.IFREG;
    const type = mode & S_IFMT;
    let node = reuse;
    if (!node) {
      node = {
        number: this.#inodes.length + 1,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        atime: 0n,
        ctime: 0n,
        mtime: 0n,
        crtime: 0n,
        links: type === S.IFDIR ? 1 : 0,
        xattrBlock: 0,
        blockCount: 0,
        devmajor: 0,
        devminor: 0,
        flags: 0,
        data: null,
        xattrInline: null,
        children: type === S.IFDIR ? new Map() : null,
      };
    } else if (node.flags & InodeFlags.EXTENTS)
      throw new Ext4Error('ERR_TAR_FORMAT', 'cannot overwrite file with non-inline data');
    node.mode = mode;
    node.uid = f.uid ?? 0;
    node.gid = f.gid ?? 0;
    node.flags = InodeFlags.HUGE_FILE;
    node.atime = f.atime ?? 0n;
    node.ctime = f.ctime ?? 0n;
    node.mtime = f.mtime ?? 0n;
    node.crtime = f.crtime ?? 0n;
    node.devmajor = f.devmajor ?? 0;
    node.devminor = f.devminor ?? 0;
    node.data = null;
    // Attributes already on a reused inode (in-inode ones only, as hcsshim) merge under the new ones.
    let xattrs = f.xattrs && f.xattrs.size > 0 ? f.xattrs : null;
    if (node.xattrInline) {
      const existing = new Map<string, Uint8Array>();
      getXattrs(node.xattrInline.subarray(4), existing, 0);
      xattrs = new Map(xattrs ?? []);
      for (const [k, v] of existing) if (!xattrs.has(k)) xattrs.set(k, v);
    }
    node.xattrInline = null;
    const inode: Xattr[] = [];
    const block: Xattr[] = [];
    let inodeLeft = INODE_EXTRA - 8;
    let blockLeft = BLOCK - 36;
    const add = (name: string, value: Uint8Array): boolean => {
      const [index, rest] = splitXattrName(name);
      const x = { index, name: enc(rest), value };
      const len = entryLen(x) + valueLen(x);
      if (inodeLeft >= len) {
        inode.push(x);
        inodeLeft -= len;
      } else if (blockLeft >= len) {
        block.push(x);
        blockLeft -= len;
      } else return false;
      return true;
    };
    let size = 0;
    switch (type) {
      case S.IFREG:
        size = f.size ?? 0;
        if (size > 128 * 2 ** 30) throw new Ext4Error('ERR_TAR_FORMAT', `file too big: ${size} > ${128 * 2 ** 30}`);
        if (size <= INLINE_MAX && this.#inline) {
          node.data = new Uint8Array(size);
          add('system.data', node.data.subarray(0, Math.max(0, size - INODE_DATA)));
          node.flags |= InodeFlags.INLINE_DATA;
        }
        break;
      case S.IFLNK: {
        node.mode |= 0o777;
        const target = enc(f.linkname ?? '');
        size = target.length;
        if (size <= SMALL_SYMLINK) node.data = target;
        break;
      }
      case S.IFDIR:
      case S.IFIFO:
      case S.IFSOCK:
      case S.IFCHR:
      case S.IFBLK:
        break;
      default:
        throw new Ext4Error('ERR_TAR_FORMAT', `invalid mode ${mode.toString(8)}`);
    }
    if (xattrs)
      for (const name of [...xattrs.keys()].sort((a, b) => Buffer.compare(enc(a), enc(b))))
        if (!add(name, xattrs.get(name)!)) throw new Ext4Error('ERR_TAR_FORMAT', `could not fit xattr ${name}`);
    if (inode.length > 0 || block.length > 0 || node.xattrBlock !== 0) this.#xattrs(node, inode, block);
    node.size = size;
    if (!reuse) this.#inodes.push(node);
    return node;
  }

  /** Lays out the inode's attributes; a block one goes where the writer is (or back where it was). */
  #xattrs(node: Node, inode: Xattr[], block: Xattr[]): void {
    if (inode.length > 0) {
      node.xattrInline = new Uint8Array(INODE_EXTRA);
      Buffer.from(node.xattrInline.buffer).writeUInt32LE(XATTR_MAGIC, 0);
      putXattrs(inode, node.xattrInline.subarray(4), 0);
    }
    if (block.length > 0 || node.xattrBlock !== 0) {
      sortBlockXattrs(block);
      const b = new Uint8Array(BLOCK);
      const v = Buffer.from(b.buffer);
      v.writeUInt32LE(XATTR_MAGIC, 0);
      v.writeUInt32LE(1, 4);
      v.writeUInt32LE(1, 8);
      putXattrs(block, b.subarray(32), 32);
      if (node.xattrBlock === 0) {
        node.xattrBlock = this.#pos / BLOCK;
        node.blockCount++;
        this.#pendingXattr.push({ b, at: null });
      } else this.#pendingXattr.push({ b, at: node.xattrBlock * BLOCK });
      this.#blockXattrs.set(node.xattrBlock, b);
    }
  }

  /** Xattr blocks made by #make, written by the caller's next await (make itself is synchronous). */
  #pendingXattr: { b: Uint8Array; at: number | null }[] = [];

  async #drainXattrs(): Promise<void> {
    for (const { b, at } of this.#pendingXattr.splice(0)) {
      if (at === null) await this.#write(b);
      else await this.#writeAt(b, at);
    }
  }

  #lookup(name: string, mustExist: boolean): { dir: Node; child: Node | null; childName: string } {
    const clean = cleanPath(name);
    const root = this.#root;
    if (clean === '') return { dir: root, child: root, childName: '' };
    const slash = clean.lastIndexOf('/');
    const dirName = slash < 0 ? '' : clean.slice(0, slash);
    const childName = clean.slice(slash + 1);
    if (childName.length === 0 || Buffer.byteLength(childName, 'latin1') > 0xff)
      throw new Ext4Error('ERR_TAR_FORMAT', `${name}: invalid name`);
    let dir: Node | null = root;
    for (const part of dirName === '' ? [] : dirName.split('/')) dir = dir?.children?.get(part) ?? null;
    if (!dir || (dir.mode & S_IFMT) !== S.IFDIR) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: path not found`);
    const child = dir.children!.get(childName) ?? null;
    if (!child && mustExist) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: file not found`);
    return { dir, child, childName };
  }

  async #finish(): Promise<void> {
    const cur = this.#cur;
    if (!cur) return;
    if (cur.written !== cur.max)
      throw new Ext4Error('ERR_TAR_FORMAT', `did not write the right amount: ${cur.written} != ${cur.max}`);
    if (cur.max !== 0 && !(cur.node.flags & InodeFlags.INLINE_DATA)) await this.#extents(cur.node, cur.written);
    this.#cur = null;
  }

  /**
   * Creates every missing parent of `name` as a copy of its own parent's mode, owner and times (what
   * hcsshim's converter does; a later entry for the directory sets its real metadata).
   */
  async makeParents(name: string): Promise<void> {
    await this.#finish();
    const clean = cleanPath(name);
    const slash = clean.lastIndexOf('/');
    if (slash < 0) return;
    // Directories are never removed or replaced, so a parent chain made once stays made.
    const parents = clean.slice(0, slash);
    if (parents === this.#madeParents) return;
    this.#madeParents = parents;
    let parent = this.#root;
    let path = '';
    for (const part of clean.slice(0, slash).split('/')) {
      path += `/${part}`;
      if (!parent.children?.has(part))
        await this.create(path, {
          mode: parent.mode,
          uid: parent.uid,
          gid: parent.gid,
          devmajor: parent.devmajor,
          devminor: parent.devminor,
          atime: parent.atime,
          mtime: parent.mtime,
          ctime: parent.ctime,
          crtime: parent.crtime,
        });
      parent = parent.children!.get(part)!;
    }
  }

  async create(name: string, f: CompactFile): Promise<void> {
    await this.#finish();
    const { dir, child: existing, childName } = this.#lookup(name, false);
    let reuse: Node | null = null;
    const isDir = (f.mode & S_IFMT) === S.IFDIR;
    if (existing) {
      if ((existing.mode & S_IFMT) === S.IFDIR) {
        if (!isDir) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: cannot replace a directory with a file`);
        reuse = existing;
      } else if (isDir) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: cannot replace a file with a directory`);
      else if (existing.links < 2) reuse = existing;
    } else if (isDir && dir.links >= MAX_LINKS)
      throw new Ext4Error('ERR_TAR_FORMAT', `${name}: exceeded parent directory maximum link count`);
    const child = this.#make(f, reuse);
    await this.#drainXattrs();
    if (existing !== child) {
      if (existing) existing.links--;
      dir.children!.set(childName, child);
      child.links++;
      if ((child.mode & S_IFMT) === S.IFDIR) dir.links++;
    }
    if ((f.mode & S_IFMT) === S.IFLNK && child.size > SMALL_SYMLINK) {
      this.#cur = { node: child, written: 0, max: child.size };
      await this.data(enc(f.linkname ?? ''));
      await this.#finish();
    }
    if ((child.mode & S_IFMT) === S.IFREG) this.#cur = { node: child, written: 0, max: f.size ?? 0 };
  }

  async link(oldName: string, newName: string): Promise<void> {
    await this.#finish();
    const { dir, child: existing, childName } = this.#lookup(newName, false);
    if (existing && ((existing.mode & S_IFMT) === S.IFDIR || existing.links < 2))
      throw new Ext4Error('ERR_TAR_FORMAT', `${newName}: cannot orphan existing file or directory`);
    const old = this.#lookup(oldName, true).child!;
    if ((old.mode & S_IFMT) === S.IFDIR)
      throw new Ext4Error('ERR_TAR_FORMAT', `${newName}: link target cannot be a directory: ${oldName}`);
    if (existing !== old && old.links >= MAX_LINKS)
      throw new Ext4Error('ERR_TAR_FORMAT', `${newName}: link target would exceed maximum link count: ${oldName}`);
    if (existing) existing.links--;
    old.links++;
    dir.children!.set(childName, old);
  }

  /** hcsshim's Stat: the entry as a File again (times through their round trip, xattrs without system.data). */
  async stat(name: string): Promise<CompactFile> {
    await this.#finish();
    const node = this.#lookup(name, true).child!;
    const xattrs = new Map<string, Uint8Array>();
    if (node.xattrBlock !== 0) {
      const b = this.#blockXattrs.get(node.xattrBlock);
      if (b) getXattrs(b.subarray(32), xattrs, 32);
    }
    if (node.xattrInline) {
      getXattrs(node.xattrInline.subarray(4), xattrs, 0);
      xattrs.delete('system.data');
    }
    if ((node.mode & S_IFMT) === S.IFLNK && node.size > SMALL_SYMLINK)
      throw new Ext4Error('ERR_TAR_FORMAT', `${name}: cannot retrieve link information`);
    return {
      mode: node.mode,
      uid: node.uid,
      gid: node.gid,
      size: node.size,
      atime: roundTrip(node.atime),
      ctime: roundTrip(node.ctime),
      mtime: roundTrip(node.mtime),
      crtime: roundTrip(node.crtime),
      devmajor: node.devmajor,
      devminor: node.devminor,
      xattrs,
      ...((node.mode & S_IFMT) === S.IFLNK ? { linkname: Buffer.from(node.data ?? []).toString('latin1') } : {}),
    };
  }

  /** Body bytes of the current regular file (or long symlink). */
  data(b: Uint8Array): void | Promise<void> {
    if (b.length === 0) return;
    const cur = this.#cur;
    if (!cur || cur.written + b.length > cur.max)
      throw new Ext4Error('ERR_TAR_FORMAT', `wrote too much: ${(cur?.written ?? 0) + b.length} > ${cur?.max ?? 0}`);
    if (cur.node.flags & InodeFlags.INLINE_DATA) {
      cur.node.data!.set(b, cur.written);
      cur.written += b.length;
      return;
    }
    cur.written += b.length;
    return this.#write(b);
  }

  async #extents(node: Node, written: number): Promise<void> {
    const start = this.#pos - written;
    if (this.#pos % BLOCK) await this.#zero(BLOCK - (this.#pos % BLOCK));
    const startBlock = start / BLOCK;
    const blocks = this.#pos / BLOCK - startBlock;
    let used = blocks;
    const count = Math.ceil(blocks / MAX_BLOCKS_PER_EXTENT);
    const leaves = (extents: number, base: number, offset: number, max: number): Uint8Array => {
      const out = new Uint8Array(ExtentHeader.size + max * Extent.size);
      ExtentHeader.encodeInto({ magic: EXTENT_MAGIC, entries: extents, max, depth: 0, generation: 0 }, out, 0);
      for (let i = 0; i < extents; i++) {
        const block = offset + i * MAX_BLOCKS_PER_EXTENT;
        const len = Math.min(blocks - block, MAX_BLOCKS_PER_EXTENT);
        Extent.encodeInto({ block, len, startHi: 0, startLo: base + block }, out, ExtentHeader.size + i * Extent.size);
      }
      return out;
    };
    let root: Uint8Array | null = null;
    if (count === 0) root = null;
    else if (count <= 4) root = leaves(count, startBlock, 0, 4);
    else {
      const perBlock = Math.floor(BLOCK / 12) - 1;
      if (count > 4 * perBlock) throw new Ext4Error('ERR_TAR_FORMAT', 'file too big');
      // As hcsshim computes them (its per-block count and leaf start for blocks after the first included).
      const extentBlocks = Math.floor(count / perBlock) + 1;
      used += extentBlocks;
      root = new Uint8Array(ExtentHeader.size + 4 * ExtentIndex.size);
      ExtentHeader.encodeInto({ magic: EXTENT_MAGIC, entries: extentBlocks, max: 4, depth: 1, generation: 0 }, root, 0);
      for (let i = 0; i < extentBlocks; i++) {
        ExtentIndex.encodeInto(
          { block: i * perBlock * MAX_BLOCKS_PER_EXTENT, leafLo: this.#pos / BLOCK, leafHi: 0, unused: 0 },
          root,
          ExtentHeader.size + i * ExtentIndex.size,
        );
        const inBlock = Math.min(count - i * extentBlocks, perBlock);
        const offset = i * perBlock * MAX_BLOCKS_PER_EXTENT;
        const leaf = new Uint8Array(BLOCK);
        leaf.set(leaves(inBlock, startBlock + offset, offset, perBlock));
        await this.#write(leaf);
      }
    }
    node.data = root;
    node.flags |= InodeFlags.EXTENTS;
    node.blockCount += used;
  }

  async #writeDirectory(dir: Node, parent: Node): Promise<void> {
    await this.#finish();
    this.#cur = { node: dir, written: 0, max: Number.MAX_SAFE_INTEGER };
    let left = BLOCK;
    const parts: Uint8Array[] = [];
    const out = (b: Uint8Array): void => {
      parts.push(b);
    };
    const finishBlock = (): void => {
      const e = new Uint8Array(left);
      DirEntryHeader.encodeInto({ inode: 0, recLen: left, nameLen: 0, fileType: 0 }, e, 0);
      out(e);
      left = BLOCK;
    };
    const entry = (ino: number, name: Uint8Array): void => {
      const rl = (8 + name.length + 3) & ~3;
      if (left < rl + 12) finishBlock();
      const e = new Uint8Array(rl);
      DirEntryHeader.encodeInto(
        { inode: ino, recLen: rl, nameLen: name.length, fileType: fileType(this.#inodes[ino - 1]!.mode) },
        e,
        0,
      );
      e.set(name, 8);
      out(e);
      left -= rl;
    };
    entry(dir.number, enc('.'));
    entry(parent.number, enc('..'));
    for (const [name, child] of sortedChildren(dir)) entry(child.number, enc(name));
    finishBlock();
    const bytes = Buffer.concat(parts);
    await this.data(bytes);
    dir.size = bytes.length;
    this.#cur.max = bytes.length;
  }

  async #writeDirectories(dir: Node, parent: Node): Promise<void> {
    await this.#writeDirectory(dir, parent);
    for (const [, child] of sortedChildren(dir))
      if ((child.mode & S_IFMT) === S.IFDIR) await this.#writeDirectories(child, dir);
  }

  readonly #scratch = new Uint8Array(Inode.size);
  /** i_block, reused per inode: a Buffer (a small fresh Uint8Array costs ≈ 1 µs to copy from, see @lcow/binary). */
  readonly #block = Buffer.alloc(60);

  /** The inode's 256 bytes at `at` in the table: fields through crtime_extra, then its in-inode xattrs. */
  #inodeInto(node: Node, out: Uint8Array, at: number): void {
    const lo = (t: FsTime): number => Number(t & 0xffffffffn);
    const hi = (t: FsTime): number => Number((t >> 32n) & 0xffffffffn);
    const block = this.#block.fill(0);
    const type = node.mode & S_IFMT;
    let xattrInline = node.xattrInline;
    if (type === S.IFDIR || type === S.IFREG || type === S.IFLNK) {
      const d = node.data ?? new Uint8Array(0);
      block.set(d.subarray(0, 60));
      if (d.length > 60 && xattrInline) {
        xattrInline = xattrInline.slice();
        putXattrs([{ index: 7, name: enc('data'), value: d.subarray(60) }], xattrInline.subarray(4), 0);
      }
    } else if (type === S.IFBLK || type === S.IFCHR) {
      const dev = (node.devminor & 0xff) | (node.devmajor << 8) | ((node.devminor & 0xffffff00) << 12);
      block.writeUInt32LE(dev >>> 0, 4);
    }
    Inode.encodeInto(
      {
        mode: node.mode,
        uidLo: node.uid & 0xffff,
        sizeLo: node.size % 2 ** 32,
        atime: lo(node.atime),
        ctime: lo(node.ctime),
        mtime: lo(node.mtime),
        dtime: 0,
        gidLo: node.gid & 0xffff,
        linksCount: node.links & 0xffff,
        blocksLo: node.blockCount >>> 0,
        flags: node.flags,
        version: 0,
        block,
        generation: 0,
        fileAclLo: node.xattrBlock,
        sizeHi: Math.floor(node.size / 2 ** 32),
        obsoFaddr: 0,
        blocksHi: 0,
        fileAclHi: 0,
        uidHi: node.uid >>> 16,
        gidHi: node.gid >>> 16,
        checksumLo: 0,
        reserved: 0,
        extraIsize: INODE_USED - 128,
        checksumHi: 0,
        ctimeExtra: hi(node.ctime),
        mtimeExtra: hi(node.mtime),
        atimeExtra: hi(node.atime),
        crtime: lo(node.crtime),
        crtimeExtra: hi(node.crtime),
        versionHi: 0,
        projid: 0,
      },
      this.#scratch,
      0,
    );
    out.set(this.#scratch.subarray(0, INODE_USED), at);
    if (xattrInline) out.set(xattrInline, at + INODE_USED);
  }

  /** Writes the directories, inode table, bitmaps, descriptors and superblock; returns the image size. */
  async close(): Promise<{ bytes: number; inodes: number }> {
    await this.#finish();
    const root = this.#root;
    await this.#writeDirectories(root, root);
    await this.#finish();
    const tableAt = this.#pos / BLOCK;
    const { groups, ipg } = bestGroupCount(tableAt, this.#inodes.length);
    const table = new Uint8Array(groups * ipg * INODE_SIZE);
    for (const [i, n] of this.#inodes.entries()) if (n) this.#inodeInto(n, table, i * INODE_SIZE);
    await this.#write(table);
    const bitmapAt = this.#pos / BLOCK;
    const valid = bitmapAt + groups * 2;
    const diskSize = Math.max(valid, (groups - 1) * BLOCKS_PER_GROUP + 1);
    const usedGd = Math.floor((groups - 1) / GD_PER_BLOCK) + 1;
    if (usedGd > this.#gdBlocks)
      throw new Ext4Error('ERR_DISK_FULL', `disk exceeded maximum size of ${this.#max} bytes`);
    const gds = new Uint8Array(this.#gdBlocks * BLOCK);
    const perGroupTable = (ipg * INODE_SIZE) / BLOCK;
    let usedBlocksTotal = 0;
    let usedInodesTotal = 0;
    for (let g = 0; g < groups; g++) {
      const b = new Uint8Array(2 * BLOCK);
      let dirs = 0;
      let usedInodes = 0;
      let usedBlocks = 0;
      const set = (j: number): void => {
        b[j >> 3]! |= 1 << (j & 7);
      };
      if ((g + 1) * BLOCKS_PER_GROUP <= valid) {
        b.fill(0xff, 0, BLOCK);
        usedBlocks = BLOCKS_PER_GROUP;
      } else if (g * BLOCKS_PER_GROUP < valid)
        for (let j = 0; j < valid - g * BLOCKS_PER_GROUP; j++) {
          set(j);
          usedBlocks++;
        }
      if (g === 0)
        for (let j = 1 + usedGd; j < 1 + this.#gdBlocks; j++) {
          b[j >> 3]! &= ~(1 << (j & 7));
          usedBlocks = (usedBlocks - 1) & 0xffff;
        }
      if (g === groups - 1 && diskSize % BLOCKS_PER_GROUP !== 0)
        for (let j = diskSize % BLOCKS_PER_GROUP; j < BLOCKS_PER_GROUP; j++) {
          set(j);
          usedBlocks = (usedBlocks + 1) & 0xffff;
        }
      for (let j = 0; j < ipg; j++) {
        const ino = 1 + g * ipg + j;
        const node = this.#inodes[ino - 1] ?? null;
        if (ino < INODE_FIRST || node) {
          b[BLOCK + (j >> 3)]! |= 1 << (j & 7);
          usedInodes++;
        }
        if (node && (node.mode & S_IFMT) === S.IFDIR) dirs++;
      }
      await this.#write(b);
      GroupDesc.encodeInto(
        {
          ...GroupDesc.zero(),
          blockBitmapLo: bitmapAt + 2 * g,
          inodeBitmapLo: bitmapAt + 2 * g + 1,
          inodeTableLo: tableAt + g * perGroupTable,
          freeBlocksCountLo: (BLOCKS_PER_GROUP - usedBlocks) & 0xffff,
          freeInodesCountLo: (ipg - usedInodes) & 0xffff,
          usedDirsCountLo: dirs & 0xffff,
        },
        gds,
        g * GroupDesc.size,
      );
      usedBlocksTotal += usedBlocks;
      usedInodesTotal += usedInodes;
    }
    for (let left = (diskSize - bitmapAt - groups * 2) * BLOCK; left > 0;) {
      const n = Math.min(left, 4 << 20);
      await this.#zero(n);
      left -= n;
    }
    await this.#writeAt(gds, BLOCK);
    const sb = Superblock.decode(new Uint8Array(Superblock.size));
    Object.assign(sb, {
      inodesCount: ipg * groups,
      blocksCountLo: diskSize,
      freeBlocksCountLo: (BLOCKS_PER_GROUP * groups - usedBlocksTotal) >>> 0,
      freeInodesCount: (ipg * groups - usedInodesTotal) >>> 0,
      firstDataBlock: 0,
      logBlockSize: 2,
      logClusterSize: 2,
      blocksPerGroup: BLOCKS_PER_GROUP,
      clustersPerGroup: BLOCKS_PER_GROUP,
      inodesPerGroup: ipg,
      magic: SUPERBLOCK_MAGIC,
      state: 1,
      errors: 1,
      creatorOs: 0,
      revLevel: 1,
      firstIno: INODE_FIRST,
      inodeSize: INODE_SIZE,
      featureCompat: Compat.sparse_super2 | Compat.ext_attr,
      featureIncompat:
        Incompat.filetype | Incompat.extent | Incompat.flex_bg | (this.#inline ? Incompat.inline_data : 0),
      featureRoCompat: RoCompat.large_file | RoCompat.huge_file | RoCompat.extra_isize | RoCompat['read-only'],
      minExtraIsize: INODE_USED - 128,
      wantExtraIsize: INODE_USED - 128,
      logGroupsPerFlex: 31,
      lpfIno: INODE_FIRST,
    });
    const head = new Uint8Array(BLOCK);
    head.set(Superblock.encode(sb), 1024);
    head.set(this.#uuid, 1024 + Superblock.offsetOf('uuid'));
    head.set(this.#volume, 1024 + Superblock.offsetOf('volumeName'));
    await this.#writeAt(head, 0);
    return { bytes: diskSize * BLOCK, inodes: ipg * groups };
  }
}

/** hcsshim's MaximumDiskSize: 16 GiB by default, at most 16 TiB, rounded up to a block. */
function maxDiskSize(opts: CompactOptions): number {
  const m = opts.maximumDiskSize ?? 16 * 2 ** 30;
  return m < 0 || m > 16 * 2 ** 40 ? 16 * 2 ** 40 : m === 0 ? 16 * 2 ** 30 : Math.ceil(m / BLOCK) * BLOCK;
}

function gdBlocksFor(max: number): number {
  const maxBlocks = Math.floor((max - 1) / BLOCK) + 1;
  const maxGroups = Math.floor((maxBlocks - 1) / BLOCKS_PER_GROUP) + 1;
  return Math.floor((maxGroups - 1) / GD_PER_BLOCK) + 1;
}

function sortedChildren(dir: Node): [string, Node][] {
  return [...dir.children!].sort(([an, a], [bn, b]) =>
    a.number !== b.number ? a.number - b.number : Buffer.compare(enc(an), enc(bn)),
  );
}

/** Go's path.Clean("/" + p)[1:]. */
export function cleanPath(p: string): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}
