// The ext4 layout hcsshim's tar2ext4 writes, reproduced byte for byte so that dm-verity root digests match
// what a Windows host computes. The rules are in the package README ("The hcsshim layout"); this file is
// that policy over the same struct tables and encoders as our own writer (format/, writer/xattrs.ts,
// writer/bitmap.ts), proven against hcsshim's output by test/hcsshim-layout.test.ts.
//
// Order on disk: the superblock block, descriptor blocks sized for the maximum disk size, then file data in
// tar order (each file's data, then its extent leaves; an attribute block where its entry arrives), then
// every directory (pre-order, children by inode number), the inode table, two bitmap blocks per group, and
// zeros up to the block count.
import { Compat, Incompat, RoCompat } from '../format/constants.ts';
import { DirEntryHeader, dirFileType, direntSize } from '../format/dirent.ts';
import { EXTENT_MAGIC, Extent, ExtentHeader, ExtentIndex, MAX_EXTENT_LEN } from '../format/extent.ts';
import { GroupDesc } from '../format/group.ts';
import {
  DeviceNumbers,
  FileMode,
  I_BLOCK_SIZE,
  INODE_SIZE,
  Ino,
  Inode,
  InodeFlags,
  LINK_MAX,
} from '../format/inode.ts';
import { SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSET, Superblock } from '../format/superblock.ts';
import { XATTR_MAGIC, XattrBlockHeader, XattrEntry, XattrIbodyHeader } from '../format/xattr.ts';
import { Ext4Error } from '../errors.ts';
import type { Time } from '../tar/parser.ts';
import { Bitmap } from '../writer/bitmap.ts';
import { ownString } from '../writer/tree.ts';
import { placeXattrs, readXattrs, xattrHash, xattrPrefixOf, xattrsSize, type XattrItem } from '../writer/xattrs.ts';

const BLOCK = 4096;
const BLOCKS_PER_GROUP = BLOCK * 8;
const INODES_PER_BLOCK = BLOCK / INODE_SIZE;
const DESCS_PER_BLOCK = BLOCK / GroupDesc.size;
/** hcsshim fills the inode through i_crtime_extra (i_extra_isize 24); its attributes follow. */
const INODE_FILLED = Inode.offsetOf('versionHi');
const IBODY_ROOM = INODE_SIZE - INODE_FILLED;
/** The 4 zero bytes that end an attribute list. */
const XATTR_END = 4;
/** The in-inode "system.data" entry that holds inline bytes beyond i_block ("data" is 4 bytes). */
const INLINE_ENTRY = XattrEntry.size + 4;
const INLINE_MAX = I_BLOCK_SIZE + IBODY_ROOM - XattrIbodyHeader.size - XATTR_END - INLINE_ENTRY;
/** Symlink targets up to this length live in i_block. */
const FAST_SYMLINK_MAX = I_BLOCK_SIZE - 1;
const MAX_FILE_SIZE = 128 * 2 ** 30;
/** hcsshim sorts block attributes with a comparator that is not an order; it is reproduced up to this many. */
const MAX_BLOCK_XATTRS = 12;
const S_IFMT = 0xf000;
/** hcsshim ends every directory block with an empty entry (inode 0) of at least this many bytes. */
const EMPTY_ENTRY = 12;
const INDEX_SYSTEM = 7;

/** What an entry sets on its inode: mode (with type bits), owner, times (null: unset), target, device, xattrs. */
export interface LayoutFile {
  mode: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: Time | null;
  ctime?: Time | null;
  mtime?: Time | null;
  crtime?: Time | null;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Names as latin1 byte strings. */
  xattrs?: Map<string, Uint8Array>;
}

/**
 * Where the bytes go: appended in order from {@link HcsshimLayout.dataStart} (the sink copies what it is
 * given before returning), except the few blocks written in place (descriptors, superblock, a rewritten
 * attribute block), which come after a `flush`.
 */
export interface LayoutSink {
  append(data: Uint8Array): void | Promise<void>;
  zeros(n: number): void | Promise<void>;
  flush(): Promise<void>;
  writeAt(data: Uint8Array, position: number): Promise<void>;
}

export interface LayoutOptions {
  inlineData?: boolean;
  /** Bytes (default 16 GiB, hcsshim's): sizes the group-descriptor area and caps the image. */
  maximumDiskSize?: number;
  uuid?: Uint8Array;
  volumeName?: Uint8Array;
}

// Times are kept as hcsshim keeps them, one 64-bit word: 34 bits of seconds, nanoseconds above. The word is
// held as two uint32 halves (lo is i_*time, hi is i_*time_extra); `stamp` leaves them here, so that an entry
// costs no allocation and no BigInt.
const stamped = { lo: 0, hi: 0 };
/** Go's zero time.Time (year 1), which hcsshim stores as 0. */
const GO_ZERO_SEC = -62135596800;

/** Seconds and nanoseconds → hcsshim's word: seconds clamped to [-2^31, 0x37fffffff] (the upper clamp drops
 * the nanoseconds, the lower one stores 0x80000000), negative seconds sign-extended over the nanoseconds. */
function stamp(t: Time | null | undefined): void {
  if (!t || (t.sec === GO_ZERO_SEC && t.nsec === 0)) {
    stamped.lo = stamped.hi = 0;
  } else if (t.sec < -0x80000000) {
    stamped.lo = 0x80000000;
    stamped.hi = 0;
  } else if (t.sec > 0x37fffffff) {
    stamped.lo = 0x7fffffff;
    stamped.hi = 3;
  } else if (t.sec < 0) {
    stamped.lo = t.sec + 2 ** 32;
    stamped.hi = 0xffffffff;
  } else {
    const high = Math.floor(t.sec / 2 ** 32);
    stamped.lo = t.sec - high * 2 ** 32;
    stamped.hi = (high | (t.nsec << 2)) >>> 0;
  }
}

/** hcsshim's word → the time it reads back (Go's time.Unix normalises nanoseconds ≥ 1e9 into seconds). */
function unstamp(lo: number, hi: number): Time | null {
  if (lo === 0 && hi === 0) return null;
  let sec = (hi & 3) * 2 ** 32 + lo;
  if (sec > 0x7fffffff && sec < 2 ** 32) sec -= 2 ** 32;
  let nsec = hi >>> 2;
  if (nsec >= 1e9) {
    sec += Math.floor(nsec / 1e9);
    nsec %= 1e9;
  }
  return { sec, nsec };
}

/** Which time of an inode: its two words are at `2 * TimeOf.X` (lo, i_*time) and the next (hi, *_extra). */
const TimeOf = { atime: 0, ctime: 1, mtime: 2, crtime: 3 } as const;
const TIME_WORDS = 8;

/**
 * Every inode's four times as hcsshim stores them, eight uint32 words per inode number: as object fields
 * most of these words (nanoseconds in the high 30 bits) would each be a boxed number, 24 bytes instead of 4.
 */
class TimeTable {
  #words = new Uint32Array(TIME_WORDS * 1024);

  set(ino: number, f: LayoutFile): void {
    const at = (ino - 1) * TIME_WORDS;
    if (at + TIME_WORDS > this.#words.length) {
      const grown = new Uint32Array(Math.max(at + TIME_WORDS, Math.ceil(this.#words.length * 1.5)));
      grown.set(this.#words);
      this.#words = grown;
    }
    this.#put(at, TimeOf.atime, f.atime);
    this.#put(at, TimeOf.ctime, f.ctime);
    this.#put(at, TimeOf.mtime, f.mtime);
    this.#put(at, TimeOf.crtime, f.crtime);
  }

  #put(at: number, which: number, t: Time | null | undefined): void {
    stamp(t);
    this.#words[at + 2 * which] = stamped.lo;
    this.#words[at + 2 * which + 1] = stamped.hi;
  }

  lo(ino: number, which: number): number {
    return this.#words[(ino - 1) * TIME_WORDS + 2 * which]!;
  }

  hi(ino: number, which: number): number {
    return this.#words[(ino - 1) * TIME_WORDS + 2 * which + 1]!;
  }

  /** The time hcsshim reads back (null: unset). */
  time(ino: number, which: number): Time | null {
    return unstamp(this.lo(ino, which), this.hi(ino, which));
  }
}

class LayoutNode {
  mode = 0;
  uid = 0;
  gid = 0;
  size = 0;
  links: number;
  xattrBlock = 0;
  /** Blocks counted in i_blocks: data, extent leaves, the attribute block. */
  blocks = 0;
  devmajor = 0;
  devminor = 0;
  flags = 0;
  /** i_block's bytes for an inline file or a fast symlink (inline files: the whole body). */
  data: Uint8Array | null = null;
  /** First data block and count, and the first extent leaf (0: the extents fit in i_block). */
  extentStart = 0;
  extentBlocks = 0;
  extentLeaf = 0;
  extentLeaves = 0;
  /** The in-inode attribute area (magic, entries, values), when the inode has attributes there. */
  ibody: Uint8Array | null = null;
  children: Map<string, LayoutNode> | null;
  readonly ino: number;

  constructor(ino: number, dir: boolean) {
    this.ino = ino;
    this.links = dir ? 1 : 0;
    this.children = dir ? new Map() : null;
  }

  get type(): number {
    return this.mode & S_IFMT;
  }
}

/** An attribute split into prefix index and name bytes, hashed as hcsshim hashes it (names unsigned). */
function layoutXattr(full: string, value: Uint8Array): XattrItem {
  const [prefix, index] = xattrPrefixOf(full) ?? ['', 0];
  const name = Buffer.from(full.slice(prefix.length), 'latin1');
  return { index, name, value, hash: xattrHash(name, value, false) };
}

/**
 * hcsshim orders block attributes with Go's sort.Slice (an insertion sort for short slices) and a
 * comparator that ORs its three keys instead of chaining them; both are reproduced, so the order is theirs.
 */
function sortLikeHcsshim(xs: XattrItem[], entry: string): void {
  if (xs.length > MAX_BLOCK_XATTRS)
    throw new Ext4Error(
      'ERR_EXT4_UNSUPPORTED',
      `${entry}: ${xs.length} attributes in one block; the hcsshim layout's order is reproduced for at most ${MAX_BLOCK_XATTRS}`,
    );
  const before = (a: XattrItem, b: XattrItem): boolean =>
    a.index < b.index || a.name.length < b.name.length || Buffer.compare(a.name, b.name) < 0;
  for (let i = 1; i < xs.length; i++)
    for (let j = i; j > 0 && before(xs[j]!, xs[j - 1]!); j--) [xs[j], xs[j - 1]] = [xs[j - 1]!, xs[j]!];
}

/** `path.Clean("/" + p)` without its leading slash, as hcsshim names entries; plain paths pass untouched. */
export function cleanPath(p: string): string {
  if (!/(^|\/)\.{0,2}(\/|$)/.test(p)) return p;
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

/** hcsshim's maximum disk size: 16 GiB by default, at most 16 TiB, rounded up to a block. */
function maxDiskSize(opts: LayoutOptions): number {
  const m = opts.maximumDiskSize ?? 16 * 2 ** 30;
  return m < 0 || m > 16 * 2 ** 40 ? 16 * 2 ** 40 : m === 0 ? 16 * 2 ** 30 : Math.ceil(m / BLOCK) * BLOCK;
}

/** Descriptor blocks reserved for an image of `max` bytes. */
function descriptorBlocks(max: number): number {
  const groups = Math.ceil(Math.ceil(max / BLOCK) / BLOCKS_PER_GROUP);
  return Math.ceil(groups / DESCS_PER_BLOCK);
}

/** Groups needed for `blocks` blocks and `inodes` inodes at `ipg` inodes per group (hcsshim's formula). */
function groupCount(blocks: number, inodes: number, ipg: number): number {
  const dataPerGroup = BLOCKS_PER_GROUP - (ipg * INODE_SIZE) / BLOCK - 2;
  const min = Math.floor((inodes - 1) / ipg) * dataPerGroup + 1;
  return Math.ceil(Math.max(blocks, min) / dataPerGroup);
}

/** The inodes-per-group (a multiple of a block's worth) that needs the fewest groups; the smallest wins ties. */
function groupPlan(blocks: number, inodes: number): { groups: number; ipg: number } {
  let groups = Infinity;
  let ipg = 0;
  for (let i = INODES_PER_BLOCK; i <= BLOCK * 8; i += INODES_PER_BLOCK) {
    const g = groupCount(blocks, inodes, i);
    if (g < groups) {
      groups = g;
      ipg = i;
    }
  }
  return { groups, ipg };
}

/** Inodes encoded per write of the inode table (1 MiB). */
const TABLE_SLICE = 4096;

/** hcsshim's layout: entries in, data streamed, metadata laid out at {@link close}. */
export class HcsshimLayout {
  readonly #sink: LayoutSink;
  readonly #inline: boolean;
  readonly #max: number;
  readonly #descBlocks: number;
  readonly #uuid: Uint8Array;
  readonly #volume: Uint8Array;
  /** By inode number - 1; the reserved numbers other than the root are null. */
  readonly #inodes: (LayoutNode | null)[] = [null];
  readonly #times = new TimeTable();
  /** Attribute blocks by block number, for {@link stat} (hcsshim reads them back from its file). */
  readonly #xattrBlocks = new Map<number, Uint8Array>();
  #pos: number;
  #cur: { node: LayoutNode; entry: string; written: number; max: number } | null = null;
  #madeParents = '';
  #lastDir: { path: string; node: LayoutNode } | null = null;
  /** Attribute blocks laid out by a synchronous step, written at the next await. */
  readonly #pendingXattrs: { block: Uint8Array; at: number | null }[] = [];
  #dirScratch = Buffer.alloc(BLOCK);
  readonly #leaf = Buffer.alloc(BLOCK);
  readonly #iblock = Buffer.alloc(I_BLOCK_SIZE);

  /** A layout with its root and lost+found in place (lost+found first, so it is inode 11, where e2fsck looks). */
  static async open(sink: LayoutSink, opts: LayoutOptions = {}): Promise<HcsshimLayout> {
    const w = new HcsshimLayout(sink, opts);
    await w.create('lost+found', { mode: FileMode.DIR | 0o700 });
    return w;
  }

  private constructor(sink: LayoutSink, opts: LayoutOptions) {
    this.#sink = sink;
    this.#inline = opts.inlineData ?? false;
    this.#max = maxDiskSize(opts);
    this.#descBlocks = descriptorBlocks(this.#max);
    this.#uuid = opts.uuid ?? new Uint8Array(16);
    this.#volume = opts.volumeName ?? new Uint8Array(16);
    const root = this.#setAttributes('/', { mode: FileMode.DIR | 0o755 }, null);
    root.links++;
    while (this.#inodes.length < Ino.FIRST - 1) this.#inodes.push(null);
    this.#pos = HcsshimLayout.dataStart(opts);
  }

  /** Where sequential data starts: after the superblock and the descriptor blocks for the maximum size. */
  static dataStart(opts: LayoutOptions = {}): number {
    return (1 + descriptorBlocks(maxDiskSize(opts))) * BLOCK;
  }

  get #root(): LayoutNode {
    return this.#inodes[Ino.ROOT - 1]!;
  }

  #full(): Ext4Error {
    return new Ext4Error('ERR_DISK_FULL', `image would exceed its maximum size of ${this.#max} bytes`);
  }

  #append(b: Uint8Array): void | Promise<void> {
    if (this.#pos + b.length > this.#max) throw this.#full();
    this.#pos += b.length;
    return this.#sink.append(b);
  }

  #zeros(n: number): void | Promise<void> {
    if (n <= 0) return;
    if (this.#pos + n > this.#max) throw this.#full();
    this.#pos += n;
    return this.#sink.zeros(n);
  }

  async #writeAt(b: Uint8Array, at: number): Promise<void> {
    await this.#sink.flush();
    await this.#sink.writeAt(b, at);
  }

  /** Sets what `f` says on a new inode or on `reuse`, and lays out its attributes. */
  #setAttributes(entry: string, f: LayoutFile, reuse: LayoutNode | null): LayoutNode {
    const mode = (f.mode & S_IFMT) === 0 ? f.mode | FileMode.REG : f.mode;
    const type = mode & S_IFMT;
    if (reuse && reuse.flags & InodeFlags.EXTENTS)
      throw new Ext4Error(
        'ERR_TAR_FORMAT',
        `${entry}: replaces a file whose data is already written (the hcsshim layout cannot rewrite it)`,
      );
    const node = reuse ?? new LayoutNode(this.#inodes.length + 1, type === FileMode.DIR);
    node.mode = mode;
    node.uid = f.uid ?? 0;
    node.gid = f.gid ?? 0;
    node.flags = InodeFlags.HUGE_FILE;
    this.#times.set(node.ino, f);
    node.devmajor = f.devmajor ?? 0;
    node.devminor = f.devminor ?? 0;
    node.data = null;
    let size = 0;
    let inlineValue: Uint8Array | null = null;
    switch (type) {
      case FileMode.REG:
        size = f.size ?? 0;
        if (size > MAX_FILE_SIZE)
          throw new Ext4Error('ERR_TAR_FORMAT', `${entry}: ${size} bytes is over the layout's limit of 128 GiB`);
        if (size <= INLINE_MAX && this.#inline) {
          node.data = new Uint8Array(size);
          // As hcsshim: the entry is laid out now (its value still zeros); the inode table rewrites it.
          inlineValue = node.data.subarray(0, Math.max(0, size - I_BLOCK_SIZE));
          node.flags |= InodeFlags.INLINE_DATA;
        }
        break;
      case FileMode.LNK: {
        node.mode |= 0o777;
        const target = Buffer.from(f.linkname ?? '', 'latin1');
        size = target.length;
        if (size <= FAST_SYMLINK_MAX) node.data = target;
        break;
      }
      case FileMode.DIR:
      case FileMode.FIFO:
      case FileMode.SOCK:
      case FileMode.CHR:
      case FileMode.BLK:
        break;
      default:
        throw new Ext4Error('ERR_TAR_FORMAT', `${entry}: file type 0o${type.toString(8)} is not one ext4 stores`);
    }
    const xattrs = f.xattrs && f.xattrs.size > 0 ? f.xattrs : null;
    if (xattrs || inlineValue || node.ibody || node.xattrBlock !== 0)
      this.#layOutXattrs(entry, node, xattrs, inlineValue);
    node.size = size;
    if (!reuse) this.#inodes.push(node);
    return node;
  }

  /**
   * Places attributes as hcsshim does: "system.data" first, then the rest by name, each in the inode while
   * it has room, else in the attribute block. A reused inode keeps its in-inode attributes that the entry
   * does not set (its block ones are dropped, as hcsshim drops them); the block is rewritten where it was.
   */
  #layOutXattrs(
    entry: string,
    node: LayoutNode,
    given: Map<string, Uint8Array> | null,
    inlineValue: Uint8Array | null,
  ): void {
    let xattrs = given;
    if (node.ibody) {
      const kept = new Map<string, Uint8Array>();
      readXattrs(node.ibody, XattrIbodyHeader.size, IBODY_ROOM, XattrIbodyHeader.size, kept);
      xattrs = new Map(given ?? []);
      kept.forEach((v, k) => {
        if (!xattrs!.has(k)) xattrs!.set(k, v);
      });
    }
    node.ibody = null;
    const inInode: XattrItem[] = [];
    const inBlock: XattrItem[] = [];
    let inodeLeft = IBODY_ROOM - XattrIbodyHeader.size - XATTR_END;
    let blockLeft = BLOCK - XattrBlockHeader.size - XATTR_END;
    const place = (x: XattrItem): boolean => {
      const len = xattrsSize([x]);
      if (inodeLeft >= len) {
        inInode.push(x);
        inodeLeft -= len;
      } else if (blockLeft >= len) {
        inBlock.push(x);
        blockLeft -= len;
      } else return false;
      return true;
    };
    if (inlineValue) place(layoutXattr('system.data', inlineValue));
    if (xattrs)
      for (const name of [...xattrs.keys()].sort())
        if (!place(layoutXattr(name, xattrs.get(name)!)))
          throw new Ext4Error('ERR_TAR_FORMAT', `${entry}: xattr ${name} fits neither in the inode nor in its block`);
    if (inInode.length > 0) {
      node.ibody = new Uint8Array(IBODY_ROOM);
      XattrIbodyHeader.encodeInto({ magic: XATTR_MAGIC }, node.ibody, 0);
      placeXattrs(inInode, node.ibody, XattrIbodyHeader.size, IBODY_ROOM, XattrIbodyHeader.size, true);
    }
    if (inBlock.length === 0 && node.xattrBlock === 0) return;
    sortLikeHcsshim(inBlock, entry);
    const block = new Uint8Array(BLOCK);
    XattrBlockHeader.encodeInto({ magic: XATTR_MAGIC, refcount: 1, blocks: 1, hash: 0, checksum: 0 }, block, 0);
    placeXattrs(inBlock, block, XattrBlockHeader.size, BLOCK, 0, true);
    if (node.xattrBlock === 0) {
      node.xattrBlock = this.#pos / BLOCK;
      node.blocks++;
      this.#pendingXattrs.push({ block, at: null });
    } else this.#pendingXattrs.push({ block, at: node.xattrBlock * BLOCK });
    this.#xattrBlocks.set(node.xattrBlock, block);
  }

  async #writePendingXattrs(): Promise<void> {
    for (const { block, at } of this.#pendingXattrs.splice(0)) {
      if (at === null) await this.#append(block);
      else await this.#writeAt(block, at);
    }
  }

  /** The directory holding `name`, the entry there (if any) and its name in that directory. */
  #lookup(name: string, mustExist: boolean): { dir: LayoutNode; child: LayoutNode | null; childName: string } {
    const clean = cleanPath(name);
    const root = this.#root;
    if (clean === '') return { dir: root, child: root, childName: '' };
    const slash = clean.lastIndexOf('/');
    const dirPath = slash < 0 ? '' : clean.slice(0, slash);
    const childName = clean.slice(slash + 1);
    if (childName.length === 0 || Buffer.byteLength(childName, 'latin1') > 0xff)
      throw new Ext4Error('ERR_TAR_FORMAT', `${name}: name is empty or longer than 255 bytes`);
    const dir = this.#directory(dirPath);
    if (!dir) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: its directory does not exist`);
    const child = dir.children!.get(childName) ?? null;
    if (!child && mustExist) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: not found`);
    return { dir, child, childName };
  }

  /** The directory at `path`, or null. Directories are never replaced, so the last one found stays valid. */
  #directory(path: string): LayoutNode | null {
    if (this.#lastDir?.path === path) return this.#lastDir.node;
    let dir: LayoutNode | null = this.#root;
    if (path !== '') for (const part of path.split('/')) dir = dir?.children?.get(part) ?? null;
    if (!dir || dir.type !== FileMode.DIR) return null;
    this.#lastDir = { path, node: dir };
    return dir;
  }

  /** Ends the current file: its size must have arrived, then its extents are laid out. */
  async #endFile(): Promise<void> {
    const cur = this.#cur;
    if (!cur) return;
    if (cur.written !== cur.max)
      throw new Ext4Error('ERR_TAR_FORMAT', `${cur.entry}: ${cur.written} bytes of body, the header says ${cur.max}`);
    if (cur.max !== 0 && !(cur.node.flags & InodeFlags.INLINE_DATA)) await this.#layOutExtents(cur);
    this.#cur = null;
  }

  /**
   * Creates every missing parent of `name` with its own parent's mode, owner and times (read back, as
   * hcsshim does); a later entry for the directory sets its real metadata.
   */
  async makeParents(name: string): Promise<void> {
    if (this.#cur) await this.#endFile();
    const clean = cleanPath(name);
    const slash = clean.lastIndexOf('/');
    if (slash < 0) return;
    const parents = clean.slice(0, slash);
    if (parents === this.#madeParents) return;
    this.#madeParents = parents;
    let parent = this.#root;
    let end = -1;
    for (const part of parents.split('/')) {
      end += part.length + 1;
      if (!parent.children?.has(part)) {
        const path = `/${parents.slice(0, end)}`; // only a missing directory needs its path (messages, #place)
        if (parent.type !== FileMode.DIR)
          throw new Ext4Error('ERR_TAR_FORMAT', `${path}: its directory does not exist`);
        if (part.length > 0xff)
          throw new Ext4Error('ERR_TAR_FORMAT', `${path}: name is empty or longer than 255 bytes`);
        // Placed in the parent in hand: looking each prefix up again would cost the square of the depth.
        await this.#place(parent, null, part, path, {
          mode: parent.mode,
          uid: parent.uid,
          gid: parent.gid,
          devmajor: parent.devmajor,
          devminor: parent.devminor,
          atime: this.#times.time(parent.ino, TimeOf.atime),
          mtime: this.#times.time(parent.ino, TimeOf.mtime),
          ctime: this.#times.time(parent.ino, TimeOf.ctime),
          crtime: this.#times.time(parent.ino, TimeOf.crtime),
        });
      }
      parent = parent.children!.get(part)!;
    }
  }

  /** Creates (or, for a directory or a file with one link, updates) `name`; a file's body follows by {@link data}. */
  async create(name: string, f: LayoutFile): Promise<void> {
    if (this.#cur) await this.#endFile();
    const { dir, child, childName } = this.#lookup(name, false);
    await this.#place(dir, child, childName, name, f);
  }

  /** Creates `childName` in `dir` (where `existing` is), as {@link create} does for the entry `name`. */
  async #place(
    dir: LayoutNode,
    existing: LayoutNode | null,
    childName: string,
    name: string,
    f: LayoutFile,
  ): Promise<void> {
    let reuse: LayoutNode | null = null;
    const isDir = (f.mode & S_IFMT) === FileMode.DIR;
    if (existing) {
      if (existing.type === FileMode.DIR) {
        if (!isDir) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: a directory cannot be replaced by a file`);
        reuse = existing;
      } else if (isDir) throw new Ext4Error('ERR_TAR_FORMAT', `${name}: a file cannot be replaced by a directory`);
      else if (existing.links < 2) reuse = existing;
    } else if (isDir && dir.links >= LINK_MAX)
      throw new Ext4Error('ERR_TAR_FORMAT', `${name}: its directory already has ${LINK_MAX} links`);
    const child = this.#setAttributes(name, f, reuse);
    if (this.#pendingXattrs.length > 0) await this.#writePendingXattrs();
    if (existing !== child) {
      if (existing) existing.links--;
      dir.children!.set(ownString(childName), child);
      child.links++;
      if (child.type === FileMode.DIR) dir.links++;
    }
    if (child.type === FileMode.LNK && child.size > FAST_SYMLINK_MAX) {
      this.#cur = { node: child, entry: name, written: 0, max: child.size };
      await this.data(Buffer.from(f.linkname ?? '', 'latin1'));
      await this.#endFile();
    }
    if (child.type === FileMode.REG) this.#cur = { node: child, entry: name, written: 0, max: f.size ?? 0 };
  }

  /** Makes `newName` another name of `oldName`. */
  async link(oldName: string, newName: string): Promise<void> {
    if (this.#cur) await this.#endFile();
    const { dir, child: existing, childName } = this.#lookup(newName, false);
    if (existing && (existing.type === FileMode.DIR || existing.links < 2))
      throw new Ext4Error('ERR_TAR_FORMAT', `${newName}: a hard link cannot replace a directory or a single-link file`);
    const old = this.#lookup(oldName, true).child!;
    if (old.type === FileMode.DIR)
      throw new Ext4Error('ERR_TAR_FORMAT', `${newName}: hard link to a directory (${oldName})`);
    if (existing !== old && old.links >= LINK_MAX)
      throw new Ext4Error('ERR_TAR_FORMAT', `${newName}: ${oldName} already has ${LINK_MAX} links`);
    if (existing) existing.links--;
    old.links++;
    dir.children!.set(ownString(childName), old);
  }

  /** The entry as a {@link LayoutFile} again: times as read back, attributes without "system.data". */
  async stat(name: string): Promise<LayoutFile> {
    if (this.#cur) await this.#endFile();
    const node = this.#lookup(name, true).child!;
    const xattrs = new Map<string, Uint8Array>();
    const block = node.xattrBlock !== 0 ? this.#xattrBlocks.get(node.xattrBlock) : undefined;
    if (block) readXattrs(block, XattrBlockHeader.size, BLOCK, 0, xattrs);
    if (node.ibody) {
      readXattrs(node.ibody, XattrIbodyHeader.size, IBODY_ROOM, XattrIbodyHeader.size, xattrs);
      xattrs.delete('system.data');
    }
    if (node.type === FileMode.LNK && node.size > FAST_SYMLINK_MAX)
      throw new Ext4Error('ERR_TAR_FORMAT', `${name}: the target of a long symlink is not read back`);
    return {
      mode: node.mode,
      uid: node.uid,
      gid: node.gid,
      size: node.size,
      atime: this.#times.time(node.ino, TimeOf.atime),
      ctime: this.#times.time(node.ino, TimeOf.ctime),
      mtime: this.#times.time(node.ino, TimeOf.mtime),
      crtime: this.#times.time(node.ino, TimeOf.crtime),
      devmajor: node.devmajor,
      devminor: node.devminor,
      xattrs,
      ...(node.type === FileMode.LNK ? { linkname: Buffer.from(node.data ?? []).toString('latin1') } : {}),
    };
  }

  /** Body bytes of the current regular file (or long symlink). */
  data(b: Uint8Array): void | Promise<void> {
    if (b.length === 0) return;
    const cur = this.#cur;
    if (!cur || cur.written + b.length > cur.max)
      throw new Ext4Error(
        'ERR_TAR_FORMAT',
        cur
          ? `${cur.entry}: body longer than the ${cur.max} bytes its header declares`
          : `${b.length} bytes of body outside any file`,
      );
    if (cur.node.flags & InodeFlags.INLINE_DATA) {
      cur.node.data!.set(b, cur.written);
      cur.written += b.length;
      return;
    }
    cur.written += b.length;
    return this.#append(b);
  }

  /**
   * The extents of the file just written: in i_block when four suffice, else in leaf blocks written now,
   * right after the data. The leaf count and each leaf's share follow hcsshim's arithmetic (which gives
   * the later leaves fewer extents than they could hold), so the bytes are theirs.
   */
  async #layOutExtents(cur: { node: LayoutNode; entry: string; written: number }): Promise<void> {
    const node = cur.node;
    const start = this.#pos - cur.written;
    if (this.#pos % BLOCK) await this.#zeros(BLOCK - (this.#pos % BLOCK));
    node.extentStart = start / BLOCK;
    node.extentBlocks = this.#pos / BLOCK - node.extentStart;
    node.blocks += node.extentBlocks;
    node.flags |= InodeFlags.EXTENTS;
    const count = Math.ceil(node.extentBlocks / MAX_EXTENT_LEN);
    if (count <= 4) return;
    const perLeaf = Math.floor(BLOCK / Extent.size) - 1;
    if (count > 4 * perLeaf)
      throw new Ext4Error('ERR_TAR_FORMAT', `${cur.entry}: needs ${count} extents, more than the layout's tree holds`);
    node.extentLeaves = Math.floor(count / perLeaf) + 1;
    node.extentLeaf = this.#pos / BLOCK;
    node.blocks += node.extentLeaves;
    for (let i = 0; i < node.extentLeaves; i++) {
      const first = i * perLeaf;
      const inLeaf = Math.min(count - i * node.extentLeaves, perLeaf);
      this.#leaf.fill(0);
      // hcsshim adds the leaf's first logical block to the physical start twice; so do we.
      this.#extentsInto(node, this.#leaf, first, inLeaf, perLeaf, first * MAX_EXTENT_LEN);
      await this.#append(this.#leaf);
    }
  }

  /** An extent header and `n` extents of `node` from its `first`-th (each MAX_EXTENT_LEN blocks long). */
  #extentsInto(node: LayoutNode, out: Uint8Array, first: number, n: number, max: number, shift = 0): void {
    ExtentHeader.encodeInto({ magic: EXTENT_MAGIC, entries: n, max, depth: 0, generation: 0 }, out, 0);
    for (let i = 0; i < n; i++) {
      const block = (first + i) * MAX_EXTENT_LEN;
      Extent.encodeInto(
        {
          block,
          len: Math.min(node.extentBlocks - block, MAX_EXTENT_LEN),
          startHi: 0,
          startLo: node.extentStart + shift + block,
        },
        out,
        ExtentHeader.size + i * Extent.size,
      );
    }
  }

  /** A directory's blocks: ".", "..", the children by inode number; each block ends with an empty entry. */
  async #writeDirectory(dir: LayoutNode, parent: LayoutNode, children: [string, LayoutNode][]): Promise<void> {
    // A block ends when a record and the 12-byte empty entry would not both fit: each holds at least this.
    const perBlock = BLOCK - direntSize(255) - EMPTY_ENTRY;
    const blocksAtMost = Math.ceil((direntSize(255) * (children.length + 2)) / perBlock) + 1;
    if (this.#dirScratch.length < blocksAtMost * BLOCK) this.#dirScratch = Buffer.alloc(blocksAtMost * BLOCK);
    const buf = this.#dirScratch;
    let at = 0;
    let left = BLOCK;
    const endBlock = (): void => {
      DirEntryHeader.encodeInto({ inode: 0, recLen: left, nameLen: 0, fileType: 0 }, buf, at);
      buf.fill(0, at + DirEntryHeader.size, at + left);
      at += left;
      left = BLOCK;
    };
    const put = (ino: number, name: string, mode: number): void => {
      const len = direntSize(name.length);
      if (left < len + EMPTY_ENTRY) endBlock();
      DirEntryHeader.encodeInto(
        { inode: ino, recLen: len, nameLen: name.length, fileType: dirFileType(mode) },
        buf,
        at,
      );
      buf.fill(0, at + DirEntryHeader.size, at + len);
      buf.write(name, at + DirEntryHeader.size, 'latin1');
      at += len;
      left -= len;
    };
    put(dir.ino, '.', dir.mode);
    put(parent.ino, '..', parent.mode);
    for (const [name, child] of children) put(child.ino, name, child.mode);
    endBlock();
    this.#cur = { node: dir, entry: `directory inode ${dir.ino}`, written: 0, max: at };
    await this.data(buf.subarray(0, at));
    dir.size = at;
    if (this.#cur) await this.#endFile();
  }

  /** Every directory, depth first from the root, each before its subdirectories. */
  async #writeDirectories(dir: LayoutNode, parent: LayoutNode): Promise<void> {
    const children = [...dir.children!];
    // By inode number; the names of one hard-linked inode by name (latin1 strings compare as their bytes).
    children.sort(([an, a], [bn, b]) => a.ino - b.ino || (an < bn ? -1 : an > bn ? 1 : 0));
    await this.#writeDirectory(dir, parent, children);
    for (const [, child] of children) if (child.type === FileMode.DIR) await this.#writeDirectories(child, dir);
  }

  /** The inode's 256 bytes at `at` in `out`: the fields hcsshim fills, then its in-inode attributes. */
  #encodeInode(node: LayoutNode, out: Uint8Array, at: number): void {
    const times = this.#times;
    const ino = node.ino;
    const iblock = this.#iblock.fill(0);
    const type = node.type;
    let ibody = node.ibody;
    if (node.flags & InodeFlags.EXTENTS) {
      if (node.extentLeaves === 0) this.#extentsInto(node, iblock, 0, Math.ceil(node.extentBlocks / MAX_EXTENT_LEN), 4);
      else {
        const perLeaf = Math.floor(BLOCK / Extent.size) - 1;
        ExtentHeader.encodeInto(
          { magic: EXTENT_MAGIC, entries: node.extentLeaves, max: 4, depth: 1, generation: 0 },
          iblock,
          0,
        );
        for (let i = 0; i < node.extentLeaves; i++)
          ExtentIndex.encodeInto(
            { block: i * perLeaf * MAX_EXTENT_LEN, leafLo: node.extentLeaf + i, leafHi: 0, unused: 0 },
            iblock,
            ExtentHeader.size + i * ExtentIndex.size,
          );
      }
    } else if (node.data) {
      iblock.set(node.data.subarray(0, I_BLOCK_SIZE));
      if (node.data.length > I_BLOCK_SIZE && ibody) {
        // The inline body beyond i_block, now that it has arrived, in the "system.data" entry laid out first.
        ibody = ibody.slice();
        const rest = node.data.subarray(I_BLOCK_SIZE);
        placeXattrs(
          [
            {
              index: INDEX_SYSTEM,
              name: Buffer.from('data'),
              value: rest,
              hash: xattrHash(Buffer.from('data'), rest, false),
            },
          ],
          ibody,
          XattrIbodyHeader.size,
          IBODY_ROOM,
          XattrIbodyHeader.size,
          true,
        );
      }
    } else if (type === FileMode.BLK || type === FileMode.CHR) {
      // Always the new 32-bit encoding in i_block[1] (fs/ext4 new_encode_dev), whatever the numbers.
      const dev = ((node.devminor & 0xff) | (node.devmajor << 8) | ((node.devminor & 0xffffff00) << 12)) >>> 0;
      DeviceNumbers.encodeInto({ old: 0, new: dev, zero: 0 }, iblock, 0);
    }
    Inode.encodeInto(
      {
        mode: node.mode,
        uidLo: node.uid & 0xffff,
        sizeLo: node.size % 2 ** 32,
        atime: times.lo(ino, TimeOf.atime),
        ctime: times.lo(ino, TimeOf.ctime),
        mtime: times.lo(ino, TimeOf.mtime),
        dtime: 0,
        gidLo: node.gid & 0xffff,
        linksCount: node.links & 0xffff,
        blocksLo: node.blocks >>> 0,
        flags: node.flags,
        version: 0,
        block: iblock,
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
        extraIsize: INODE_FILLED - 128,
        checksumHi: 0,
        ctimeExtra: times.hi(ino, TimeOf.ctime),
        mtimeExtra: times.hi(ino, TimeOf.mtime),
        atimeExtra: times.hi(ino, TimeOf.atime),
        crtime: times.lo(ino, TimeOf.crtime),
        crtimeExtra: times.hi(ino, TimeOf.crtime),
        versionHi: 0,
        projid: 0,
      },
      out,
      at,
    );
    // hcsshim leaves the fields past i_crtime_extra zero: the attribute area starts there.
    out.fill(0, at + INODE_FILLED, at + INODE_SIZE);
    if (ibody) out.set(ibody, at + INODE_FILLED);
  }

  /** The inode table of `groups` × `ipg` inodes, encoded and written a slice at a time. */
  async #writeInodeTable(groups: number, ipg: number): Promise<void> {
    const total = groups * ipg;
    const slice = Buffer.alloc(Math.min(TABLE_SLICE, Math.max(1, this.#inodes.length)) * INODE_SIZE);
    const used = this.#inodes.length;
    for (let first = 0; first < used; first += TABLE_SLICE) {
      const n = Math.min(TABLE_SLICE, used - first);
      slice.fill(0, 0, n * INODE_SIZE);
      for (let i = 0; i < n; i++) {
        const node = this.#inodes[first + i];
        if (node) this.#encodeInode(node, slice, i * INODE_SIZE);
      }
      await this.#append(slice.subarray(0, n * INODE_SIZE));
    }
    await this.#zeros((total - used) * INODE_SIZE);
  }

  /**
   * Both bitmaps of each group and its descriptor. hcsshim marks blocks in use up to the end of the bitmaps,
   * frees the descriptor blocks the image did not need, and marks the blocks past the disk's end in use.
   */
  async #writeGroups(
    groups: number,
    ipg: number,
    tableAt: number,
  ): Promise<{ descriptors: Uint8Array; freeBlocks: number; freeInodes: number; diskBlocks: number }> {
    const bitmapAt = this.#pos / BLOCK;
    const inUse = bitmapAt + groups * 2;
    const diskBlocks = Math.max(inUse, (groups - 1) * BLOCKS_PER_GROUP + 1);
    const descUsed = Math.floor((groups - 1) / DESCS_PER_BLOCK) + 1;
    if (descUsed > this.#descBlocks) throw this.#full();
    const descriptors = new Uint8Array(this.#descBlocks * BLOCK);
    const tableBlocks = (ipg * INODE_SIZE) / BLOCK;
    let freeBlocks = 0;
    let freeInodes = 0;
    for (let g = 0; g < groups; g++) {
      const blocks = new Bitmap(BLOCKS_PER_GROUP);
      const first = g * BLOCKS_PER_GROUP;
      blocks.setRange(0, Math.max(0, Math.min(BLOCKS_PER_GROUP, inUse - first)));
      let usedBlocks = Math.max(0, Math.min(BLOCKS_PER_GROUP, inUse - first));
      if (g === 0)
        for (let j = 1 + descUsed; j < 1 + this.#descBlocks; j++) {
          blocks.bytes[j >> 3]! &= ~(1 << (j & 7));
          usedBlocks = (usedBlocks - 1) & 0xffff;
        }
      if (g === groups - 1 && diskBlocks % BLOCKS_PER_GROUP !== 0) {
        const from = diskBlocks % BLOCKS_PER_GROUP;
        blocks.setRange(from, BLOCKS_PER_GROUP - from);
        usedBlocks = (usedBlocks + BLOCKS_PER_GROUP - from) & 0xffff;
      }
      const inodes = new Bitmap(BLOCK * 8);
      let usedInodes = 0;
      let dirs = 0;
      for (let j = 0; j < ipg; j++) {
        const ino = 1 + g * ipg + j;
        const node = this.#inodes[ino - 1] ?? null;
        if (ino < Ino.FIRST || node) {
          inodes.setRange(j, 1);
          usedInodes++;
        }
        if (node?.type === FileMode.DIR) dirs++;
      }
      await this.#append(blocks.bytes);
      await this.#append(inodes.bytes);
      GroupDesc.encodeInto(
        {
          ...GroupDesc.zero(),
          blockBitmapLo: bitmapAt + 2 * g,
          inodeBitmapLo: bitmapAt + 2 * g + 1,
          inodeTableLo: tableAt + g * tableBlocks,
          freeBlocksCountLo: (BLOCKS_PER_GROUP - usedBlocks) & 0xffff,
          freeInodesCountLo: (ipg - usedInodes) & 0xffff,
          usedDirsCountLo: dirs & 0xffff,
        },
        descriptors,
        g * GroupDesc.size,
      );
      freeBlocks += BLOCKS_PER_GROUP - usedBlocks;
      freeInodes += ipg - usedInodes;
    }
    return { descriptors, freeBlocks, freeInodes, diskBlocks };
  }

  #superblock(s: {
    groups: number;
    ipg: number;
    diskBlocks: number;
    freeBlocks: number;
    freeInodes: number;
  }): Uint8Array {
    const head = new Uint8Array(BLOCK);
    Superblock.encodeInto(
      {
        ...Superblock.zero(),
        inodesCount: s.ipg * s.groups,
        blocksCountLo: s.diskBlocks,
        freeBlocksCountLo: s.freeBlocks >>> 0,
        freeInodesCount: s.freeInodes >>> 0,
        firstDataBlock: 0,
        logBlockSize: 2,
        logClusterSize: 2,
        blocksPerGroup: BLOCKS_PER_GROUP,
        clustersPerGroup: BLOCKS_PER_GROUP,
        inodesPerGroup: s.ipg,
        magic: SUPERBLOCK_MAGIC,
        state: 1,
        errors: 1,
        creatorOs: 0,
        revLevel: 1,
        firstIno: Ino.FIRST,
        inodeSize: INODE_SIZE,
        featureCompat: Compat.sparse_super2 | Compat.ext_attr,
        featureIncompat:
          Incompat.filetype | Incompat.extent | Incompat.flex_bg | (this.#inline ? Incompat.inline_data : 0),
        featureRoCompat: RoCompat.large_file | RoCompat.huge_file | RoCompat.extra_isize | RoCompat['read-only'],
        minExtraIsize: INODE_FILLED - 128,
        wantExtraIsize: INODE_FILLED - 128,
        logGroupsPerFlex: 31,
        lpfIno: Ino.LOST_FOUND,
      },
      head,
      SUPERBLOCK_OFFSET,
    );
    // Raw bytes, as given (the struct's uuid and label fields are text).
    head.set(this.#uuid, SUPERBLOCK_OFFSET + Superblock.offsetOf('uuid'));
    head.set(this.#volume, SUPERBLOCK_OFFSET + Superblock.offsetOf('volumeName'));
    return head;
  }

  /** Writes the directories, inode table, bitmaps, descriptors and superblock; returns the image size. */
  async close(): Promise<{ bytes: number; inodes: number }> {
    if (this.#cur) await this.#endFile();
    await this.#writeDirectories(this.#root, this.#root);
    const tableAt = this.#pos / BLOCK;
    const { groups, ipg } = groupPlan(tableAt, this.#inodes.length);
    await this.#writeInodeTable(groups, ipg);
    const { descriptors, ...counts } = await this.#writeGroups(groups, ipg, tableAt);
    for (let left = counts.diskBlocks * BLOCK - this.#pos; left > 0;) {
      const n = Math.min(left, 4 << 20);
      await this.#zeros(n);
      left -= n;
    }
    await this.#writeAt(descriptors, BLOCK);
    await this.#writeAt(this.#superblock({ groups, ipg, ...counts }), 0);
    return { bytes: counts.diskBlocks * BLOCK, inodes: ipg * groups };
  }
}
