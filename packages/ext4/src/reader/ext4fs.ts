import { Readable } from 'node:stream';
import { Ext4Error } from '../errors.ts';
import { FileMode, InodeFlags, Ino, I_BLOCK_SIZE } from '../format/inode.ts';
import { probeExt4, type Ext4Summary } from '../probe.ts';
import { fileChunks, inlineData, readRange } from './data.ts';
import { dirEntries, type RawDirent } from './dir.ts';
import { openImageSource, type ByteSource } from './source.ts';
import { Volume, type ChecksumPolicy, type InodeRecord, type ReadWarning, type Time } from './volume.ts';
import { listXattrs } from './xattr.ts';

export type { ChecksumPolicy, ReadWarning, Time };

/** Options of {@link Ext4Fs.open}. */
export interface OpenOptions {
  /**
   * Metadata checksums (metadata_csum): `'strict'` (default) makes a mismatch `ERR_EXT4_CORRUPT`; `'warn'`
   * reports it through `onWarning` and reads on; `'off'` does not compute them.
   */
  checksums?: ChecksumPolicy;
  onWarning?: (w: ReadWarning) => void;
}

export type FileType = 'file' | 'dir' | 'symlink' | 'chr' | 'blk' | 'fifo' | 'socket';

/** What `stat` reports about one inode. */
export interface Ext4Stat {
  ino: number;
  type: FileType;
  /** Permission bits with setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  /** Space used, in 512-byte units (st_blocks). */
  blocks: number;
  atime: Time;
  mtime: Time;
  ctime: Time;
  /** Creation time, when the inode has room for it. */
  birthtime: Time | null;
  /** Device numbers of character and block devices. */
  rdev: { major: number; minor: number } | null;
  /** Raw i_flags (EXT4_*_FL). */
  flags: number;
}

/** One directory entry ("." and ".." are never listed). */
export interface Ext4Dirent {
  /** The name decoded as UTF-8 (invalid bytes replaced); `raw` has the exact bytes. */
  name: string;
  raw: Buffer;
  ino: number;
  type: FileType;
}

/** A path as given: a string (encoded as UTF-8) or the exact bytes. */
export type PathLike = string | Uint8Array;

const TYPE_OF_MODE: Record<number, FileType> = {
  [FileMode.REG]: 'file',
  [FileMode.DIR]: 'dir',
  [FileMode.LNK]: 'symlink',
  [FileMode.CHR]: 'chr',
  [FileMode.BLK]: 'blk',
  [FileMode.FIFO]: 'fifo',
  [FileMode.SOCK]: 'socket',
};

/** The Linux limits path resolution keeps to (MAXSYMLINKS, PATH_MAX). */
const MAX_SYMLINKS = 40;
const PATH_MAX = 4096;
/** Directory names kept for lookups, across all cached directories. */
const NAME_CACHE_ENTRIES = 500_000;

const display = (raw: Uint8Array): string => Buffer.from(raw).toString('utf8');

function toBytes(p: PathLike): Buffer {
  return typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p);
}

function split(p: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === 0x2f) {
      if (i > start) parts.push(p.subarray(start, i));
      start = i + 1;
    }
  }
  return parts;
}

function typeOf(vol: Volume, inode: InodeRecord, what: string): FileType {
  const t = TYPE_OF_MODE[inode.mode & 0xf000];
  if (!t) throw vol.corrupt(`inode ${inode.ino} (${what}): mode 0o${inode.mode.toString(8)} is no file type`);
  return t;
}

function devNumbers(inode: InodeRecord): { major: number; minor: number } {
  const w0 = inode.iblock[0]! | (inode.iblock[1]! << 8) | (inode.iblock[2]! << 16) | (inode.iblock[3]! << 24);
  if (w0 !== 0) return { major: (w0 >>> 8) & 0xff, minor: w0 & 0xff };
  const d = (inode.iblock[4]! | (inode.iblock[5]! << 8) | (inode.iblock[6]! << 16) | (inode.iblock[7]! << 24)) >>> 0;
  return { major: (d & 0xfff00) >>> 8, minor: (d & 0xff) | ((d >>> 12) & 0xfff00) };
}

const SLASH = Buffer.from('/');

/** One directory on the way from the root: its inode, its name, and its whole path from the root. */
interface ChainLink {
  ino: number;
  name: Buffer;
  path: Buffer;
}

const ROOT_LINK: ChainLink = { ino: Ino.ROOT, name: Buffer.alloc(0), path: Buffer.alloc(0) };

/** Directories kept by {@link DirChains}. */
const DIR_CHAIN_ENTRIES = 4096;

/**
 * Directories reached by literal paths (no symlink, no ".."), with their chains from the root, most
 * recent last: a walk that resolves `/a/b/…/x` after `/a/b/…` starts there instead of at the root, so a
 * tree 1000 directories deep costs one step per entry rather than one per level.
 */
class DirChains {
  readonly #byPath = new Map<string, readonly ChainLink[]>();

  remember(chain: readonly ChainLink[]): void {
    if (chain.length < 2) return;
    const key = chain[chain.length - 1]!.path.toString('latin1');
    if (this.#byPath.has(key)) return;
    this.#byPath.set(key, chain.slice());
    if (this.#byPath.size > DIR_CHAIN_ENTRIES) this.#byPath.delete(this.#byPath.keys().next().value!);
  }

  /** The deepest remembered directory among the first parts of `parts` (which must all be plain names). */
  find(parts: readonly Buffer[]): readonly ChainLink[] | null {
    if (this.#byPath.size === 0) return null;
    // Only paths of plain names: "." and ".." are resolved by the walk itself.
    if (parts.some(isDotName)) return null;
    // The path itself (a directory listed after its stat) or its parent (the next sibling of a walk).
    let parent = '';
    for (let i = 0; i < parts.length - 1; i++) parent += `/${parts[i]!.toString('latin1')}`;
    const last = parts.length > 0 ? `/${parts[parts.length - 1]!.toString('latin1')}` : '';
    return this.#byPath.get(parent + last) ?? (parent ? (this.#byPath.get(parent) ?? null) : null);
  }
}

function isDotName(b: Buffer): boolean {
  return b[0] === 0x2e && (b.length === 1 || (b.length === 2 && b[1] === 0x2e));
}

/** An inode reached by a path, with the path that reached it (for messages and for `walk`). */
interface Resolved {
  inode: InodeRecord;
  path: Buffer;
  /** The directory that holds it (the root for the root). */
  parent: number;
}

/**
 * A read-only ext4 (or ext2/ext3) filesystem. Paths are resolved inside it: `..` stops at its root and
 * symlinks are followed relative to it (absolute targets from its root), at most 40 of them, so no path
 * leads outside. Every structure is checked as it is read; corrupt bytes are `ERR_EXT4_CORRUPT` naming the
 * image and structure, never another error, a hang or an allocation sized by a corrupt field.
 */
export class Ext4Fs {
  readonly #vol: Volume;
  readonly #owned: boolean;
  readonly #names = new Map<number, Map<string, number>>();
  readonly #dirs = new DirChains();
  #cachedNames = 0;
  /** The superblock summary (features, sizes, UUID, label). */
  readonly info: Ext4Summary & { container: ByteSource['container'] };

  private constructor(vol: Volume, info: Ext4Summary, owned: boolean) {
    this.#vol = vol;
    this.#owned = owned;
    this.info = { ...info, container: vol.source.container };
  }

  /**
   * Opens a filesystem: a path to a plain image, a `.vhd` with a fixed footer, or a `.vhdx`; or a
   * {@link ByteSource}. The root inode is read at once, so a filesystem that cannot be read fails here.
   */
  static async open(source: string | ByteSource, opts: OpenOptions = {}): Promise<Ext4Fs> {
    const owned = typeof source === 'string';
    const src = owned ? await openImageSource(source) : source;
    try {
      const vol = await Volume.open(src, opts);
      const info = await probeExt4((o, l) => src.read(o, l), src.name);
      const fs = new Ext4Fs(vol, info, owned);
      const root = await vol.inode(Ino.ROOT, '/');
      if (typeOf(vol, root, '/') !== 'dir') throw vol.corrupt('the root inode is not a directory');
      return fs;
    } catch (e) {
      if (owned) await src.close().catch(() => {});
      throw Volume.wrap(src.name, e);
    }
  }

  /** Closes the image file (when `open` opened it). */
  async close(): Promise<void> {
    if (this.#owned) await this.#vol.source.close();
  }

  #notFound(path: Buffer, why: string, code: 'ERR_NOT_FOUND' | 'ERR_NOT_A_DIRECTORY' = 'ERR_NOT_FOUND'): Ext4Error {
    return new Ext4Error(code, `${this.#vol.source.name}: ${JSON.stringify(display(path) || '/')}: ${why}`);
  }

  /**
   * Name lookup. Directories are read linearly (hash-tree indexes are not used), so the names of recently
   * used directories are kept in a bounded cache: resolving every entry of a large directory stays linear.
   */
  async #lookup(dir: InodeRecord, dirPath: Buffer, name: Buffer): Promise<number | null> {
    const key = name.toString('latin1');
    const cached = this.#names.get(dir.ino);
    if (cached) return cached.get(key) ?? null;
    const names = new Map<string, number>();
    let found: number | null = null;
    for await (const e of dirEntries(this.#vol, dir, display(dirPath) || '/')) {
      if (found === null && e.name.equals(name)) found = e.ino;
      if (names.size < NAME_CACHE_ENTRIES) names.set(e.name.toString('latin1'), e.ino);
    }
    if (names.size < NAME_CACHE_ENTRIES) {
      this.#cachedNames += names.size;
      while (this.#cachedNames > NAME_CACHE_ENTRIES && this.#names.size > 0) {
        const [oldest, m] = this.#names.entries().next().value!;
        this.#names.delete(oldest);
        this.#cachedNames -= m.size;
      }
      this.#names.set(dir.ino, names);
    }
    return found;
  }

  /** Resolves a path; `follow` decides whether a final symlink is followed. */
  async #resolve(p: PathLike, follow: boolean): Promise<Resolved>;
  async #resolve(p: PathLike, follow: boolean, soft: true): Promise<Resolved | null>;
  /** `soft`: a path that does not exist (or runs through a non-directory) gives null instead of an error. */
  async #resolve(p: PathLike, follow: boolean, soft = false): Promise<Resolved | null> {
    const vol = this.#vol;
    const pathBytes = toBytes(p);
    if (pathBytes.length > PATH_MAX)
      throw new Ext4Error(
        'ERR_INVALID_ARGUMENT',
        `${vol.source.name}: ${JSON.stringify(display(pathBytes.subarray(0, 80)))}…: path longer than ${PATH_MAX} bytes`,
      );
    if (pathBytes.includes(0)) throw new Ext4Error('ERR_INVALID_ARGUMENT', 'path contains a NUL byte');
    // The walk keeps the chain of directories from the root (each with its full path, built once), so ".."
    // needs no lookup and cannot go above it, and no step costs more than its own name.
    let chain: ChainLink[] = [ROOT_LINK];
    let todo = split(pathBytes);
    // A walk resolves siblings one after another: start from the deepest directory of this path that an
    // earlier call reached literally (no symlink, no "..").
    const start = this.#dirs.find(todo);
    if (start) {
      chain = [...start];
      todo = todo.slice(start.length - 1);
    }
    let literal = true;
    let links = 0;
    let budget = PATH_MAX * (MAX_SYMLINKS + 1);
    let cur = await vol.inode(chain[chain.length - 1]!.ino, display(chain[chain.length - 1]!.path) || '/');
    while (todo.length > 0) {
      const name = todo.shift()!;
      budget -= name.length + 1;
      if (budget < 0) throw new Ext4Error('ERR_SYMLINK_LOOP', `${display(pathBytes)}: symlink expansion too long`);
      if (name.length === 1 && name[0] === 0x2e) continue;
      if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
        literal = false;
        if (chain.length > 1) chain.pop();
        cur = await vol.inode(chain[chain.length - 1]!.ino, display(chain[chain.length - 1]!.path) || '/');
        continue;
      }
      const here = chain[chain.length - 1]!.path;
      if (typeOf(vol, cur, display(here)) !== 'dir') {
        if (soft) return null;
        throw this.#notFound(here, 'is not a directory', 'ERR_NOT_A_DIRECTORY');
      }
      if (literal) this.#dirs.remember(chain);
      const ino = await this.#lookup(cur, here, name);
      const there = Buffer.concat([here, SLASH, name]);
      if (ino === null) {
        if (soft) return null;
        throw this.#notFound(there, 'no such file or directory');
      }
      const next = await vol.inode(ino, display(there));
      const type = typeOf(vol, next, display(there));
      if (type === 'symlink' && (follow || todo.length > 0)) {
        literal = false;
        if (++links > MAX_SYMLINKS)
          throw new Ext4Error(
            'ERR_SYMLINK_LOOP',
            `${vol.source.name}: ${display(pathBytes)}: more than ${MAX_SYMLINKS} symlinks`,
          );
        const target = await this.#readlink(next, display(there));
        if (target[0] === 0x2f) chain = [ROOT_LINK];
        cur = await vol.inode(chain[chain.length - 1]!.ino, display(chain[chain.length - 1]!.path) || '/');
        todo = [...split(target), ...todo];
        continue;
      }
      chain.push({ ino, name, path: there });
      cur = next;
    }
    if (literal && typeOf(vol, cur, display(chain[chain.length - 1]!.path)) === 'dir') this.#dirs.remember(chain);
    const parent = chain.length > 1 ? chain[chain.length - 2]!.ino : Ino.ROOT;
    return { inode: cur, path: chain[chain.length - 1]!.path, parent };
  }

  async #readlink(inode: InodeRecord, what: string): Promise<Buffer> {
    const vol = this.#vol;
    if (inode.size === 0 || inode.size > PATH_MAX)
      throw vol.corrupt(`inode ${inode.ino} (${what}): symlink of ${inode.size} bytes`);
    if (inode.flags & InodeFlags.ENCRYPT)
      throw new Ext4Error('ERR_EXT4_UNSUPPORTED', `${vol.source.name}: ${what}: encrypted symlink`);
    let bytes: Uint8Array;
    if (inode.flags & InodeFlags.INLINE_DATA) bytes = await inlineData(vol, inode, what);
    else {
      // A fast symlink keeps its target in i_block and uses no blocks but perhaps an attribute block
      // (the kernel's test; e2fsprogs agrees for every symlink the kernel writes).
      const xattrBlocks = inode.fileAcl ? vol.blockSize / 512 : 0;
      const fast = inode.blocks512 - xattrBlocks <= 0;
      if (fast && inode.size >= I_BLOCK_SIZE)
        throw vol.corrupt(`inode ${inode.ino} (${what}): fast symlink of ${inode.size} bytes (i_block holds 59)`);
      bytes = fast ? inode.iblock.subarray(0, inode.size) : await readRange(vol, inode, what, 0, inode.size);
    }
    if (bytes.length !== inode.size)
      throw vol.corrupt(`inode ${inode.ino} (${what}): symlink target shorter than i_size`);
    return Buffer.from(bytes);
  }

  #stat(inode: InodeRecord, what: string): Ext4Stat {
    const type = typeOf(this.#vol, inode, what);
    return {
      ino: inode.ino,
      type,
      mode: inode.mode & 0o7777,
      uid: inode.uid,
      gid: inode.gid,
      size: type === 'file' || type === 'dir' || type === 'symlink' ? inode.size : 0,
      nlink: inode.links,
      blocks: inode.blocks512,
      atime: inode.atime,
      mtime: inode.mtime,
      ctime: inode.ctime,
      birthtime: inode.crtime,
      rdev: type === 'chr' || type === 'blk' ? devNumbers(inode) : null,
      flags: inode.flags,
    };
  }

  #guard<T>(f: () => Promise<T>): Promise<T> {
    return f().catch((e: unknown) => {
      throw Volume.wrap(this.#vol.source.name, e);
    });
  }

  /** Status of what `path` names, following a final symlink. */
  stat(path: PathLike): Promise<Ext4Stat> {
    return this.#guard(async () => {
      const r = await this.#resolve(path, true);
      return this.#stat(r.inode, display(r.path));
    });
  }

  /** Status of `path` itself (a symlink is reported, not followed). */
  lstat(path: PathLike): Promise<Ext4Stat> {
    return this.#guard(async () => {
      const r = await this.#resolve(path, false);
      return this.#stat(r.inode, display(r.path));
    });
  }

  /**
   * {@link lstat}, or null where the path does not exist or runs through something that is not a
   * directory — for callers that probe many paths (a union's lower layers), without building an error each time.
   */
  tryLstat(path: PathLike): Promise<Ext4Stat | null> {
    return this.#guard(async () => {
      const r = await this.#resolve(path, false, true);
      return r ? this.#stat(r.inode, display(r.path)) : null;
    });
  }

  /** The target of a symlink, as UTF-8 text; {@link readlinkRaw} gives the bytes. */
  async readlink(path: PathLike): Promise<string> {
    return display(await this.readlinkRaw(path));
  }

  readlinkRaw(path: PathLike): Promise<Buffer> {
    return this.#guard(async () => {
      const r = await this.#resolve(path, false);
      const what = display(r.path);
      if (typeOf(this.#vol, r.inode, what) !== 'symlink')
        throw new Ext4Error('ERR_INVALID_ARGUMENT', `${this.#vol.source.name}: ${JSON.stringify(what)}: not a symlink`);
      return this.#readlink(r.inode, what);
    });
  }

  async #list(inode: InodeRecord, what: string): Promise<Ext4Dirent[]> {
    const vol = this.#vol;
    if (typeOf(vol, inode, what) !== 'dir')
      throw this.#notFound(Buffer.from(what), 'is not a directory', 'ERR_NOT_A_DIRECTORY');
    if (inode.flags & InodeFlags.ENCRYPT)
      throw new Ext4Error('ERR_EXT4_UNSUPPORTED', `${vol.source.name}: ${what}: encrypted directory`);
    const out: Ext4Dirent[] = [];
    for await (const e of dirEntries(vol, inode, what)) {
      if (e.name.equals(Buffer.from('.')) || e.name.equals(Buffer.from('..'))) continue;
      // Without the filetype feature the entry does not say; the inode does.
      const type = e.fileType === 0 ? typeOf(vol, await vol.inode(e.ino, what), what) : direntType(vol, e, what);
      out.push({ name: display(e.name), raw: e.name, ino: e.ino, type });
    }
    return out;
  }

  /** The entries of a directory, in on-disk order. */
  readdir(path: PathLike): Promise<Ext4Dirent[]> {
    return this.#guard(async () => {
      const r = await this.#resolve(path, true);
      return this.#list(r.inode, display(r.path) || '/');
    });
  }

  /** Extended attributes (names as UTF-8; values as stored, POSIX ACLs in the getxattr form). */
  listXattrs(path: PathLike, opts: { follow?: boolean } = {}): Promise<Map<string, Uint8Array>> {
    return this.#guard(async () => {
      const r = await this.#resolve(path, opts.follow ?? false);
      return this.#xattrs(r.inode, display(r.path));
    });
  }

  /** Attributes keyed by latin1 byte-string names (what a tar's SCHILY.xattr records carry). */
  async #xattrs(inode: InodeRecord, what: string): Promise<Map<string, Uint8Array>> {
    const vol = this.#vol;
    return listXattrs(vol, inode, what, async (inum, size, where) => {
      const ea = await vol.inode(inum, where);
      if (!(ea.flags & InodeFlags.EA_INODE)) throw vol.corrupt(`${where}: value inode ${inum} is not an EA inode`);
      if (ea.size !== size)
        throw vol.corrupt(`${where}: value inode ${inum} holds ${ea.size} bytes, entry says ${size}`);
      return readRange(vol, ea, where, 0, size);
    });
  }

  /**
   * The contents of a regular file as a stream, optionally bytes [start, end) only. Holes and unwritten
   * extents read as zeros.
   */
  readFile(path: PathLike, opts: { start?: number; end?: number; signal?: AbortSignal } = {}): Readable {
    return Readable.from(wrapErrors(this.#fileBody(path, opts), this.#vol.source.name), {
      objectMode: false,
      highWaterMark: 1 << 20,
    });
  }

  async *#fileBody(
    path: PathLike,
    opts: { start?: number; end?: number; signal?: AbortSignal },
  ): AsyncGenerator<Uint8Array> {
    const r = await this.#resolve(path, true);
    const what = display(r.path);
    const type = typeOf(this.#vol, r.inode, what);
    if (type !== 'file')
      throw new Ext4Error(
        type === 'dir' ? 'ERR_IS_A_DIRECTORY' : 'ERR_INVALID_ARGUMENT',
        `${this.#vol.source.name}: ${JSON.stringify(what)}: not a regular file (${type})`,
      );
    yield* this.#chunks(r.inode, what, opts.start ?? 0, opts.end ?? Number.MAX_SAFE_INTEGER, opts.signal);
  }

  /** Reads up to `length` bytes of a regular file at `position`. */
  read(path: PathLike, position: number, length: number): Promise<Uint8Array> {
    return this.#guard(async () => {
      const r = await this.#resolve(path, true);
      const what = display(r.path);
      if (typeOf(this.#vol, r.inode, what) !== 'file')
        throw new Ext4Error(
          'ERR_INVALID_ARGUMENT',
          `${this.#vol.source.name}: ${JSON.stringify(what)}: not a regular file`,
        );
      return readRange(this.#vol, r.inode, what, position, length);
    });
  }

  #chunks(
    inode: InodeRecord,
    what: string,
    start: number,
    end: number,
    signal?: AbortSignal,
  ): AsyncGenerator<Uint8Array> {
    if (inode.flags & InodeFlags.ENCRYPT)
      throw new Ext4Error('ERR_EXT4_UNSUPPORTED', `${this.#vol.source.name}: ${what}: encrypted file`);
    return fileChunks(this.#vol, inode, what, start, end, signal);
  }

  /**
   * Every entry under `root` (default the filesystem root; `root` itself first, with path ""), depth
   * first, each directory's children sorted by name bytes. Paths are relative to `root`. A directory
   * reached twice (a directory hard link, which only corruption makes) is `ERR_EXT4_CORRUPT`.
   */
  walk(root: PathLike = '/', opts: { signal?: AbortSignal } = {}): AsyncGenerator<WalkEntry> {
    return wrapErrors(this.#walk(root, opts.signal), this.#vol.source.name);
  }

  async *#walk(root: PathLike, signal?: AbortSignal): AsyncGenerator<WalkEntry> {
    const vol = this.#vol;
    const start = await this.#resolve(root, true);
    const seenDirs = new Set<number>();
    type Pending = { ino: number; rel: Buffer; fileType: FileType | null };
    const stack: Pending[] = [{ ino: start.inode.ino, rel: Buffer.alloc(0), fileType: null }];
    while (stack.length > 0) {
      signal?.throwIfAborted();
      const p = stack.pop()!;
      const what = display(Buffer.concat([start.path, Buffer.from('/'), p.rel])) || '/';
      const inode = await vol.inode(p.ino, what);
      const stat = this.#stat(inode, what);
      if (p.fileType && p.fileType !== stat.type)
        vol.warn('EXT4_DIRENT_TYPE', `${what}: directory entry says ${p.fileType}, inode says ${stat.type}`);
      const entry: WalkEntry = {
        path: display(p.rel),
        raw: p.rel,
        stat,
        xattrs: () => this.#xattrs(inode, what),
        readlink: () => this.#readlink(inode, what),
        content: (s = 0, e = inode.size) => this.#chunks(inode, what, s, e, signal),
      };
      yield entry;
      if (stat.type !== 'dir') continue;
      if (seenDirs.has(inode.ino)) throw vol.corrupt(`${what}: directory inode ${inode.ino} is linked twice`);
      seenDirs.add(inode.ino);
      const children = await this.#list(inode, what);
      children.sort((a, b) => Buffer.compare(b.raw, a.raw)); // reversed: the stack pops the first name first
      for (const c of children) {
        stack.push({
          ino: c.ino,
          rel: p.rel.length ? Buffer.concat([p.rel, Buffer.from('/'), c.raw]) : c.raw,
          fileType: c.type,
        });
      }
    }
  }
}

/** One entry of {@link Ext4Fs.walk}, with lazy access to what only some entries need. */
export interface WalkEntry {
  /** Relative to the walk's root, UTF-8 decoded; "" for the root itself. */
  path: string;
  raw: Buffer;
  stat: Ext4Stat;
  xattrs(): Promise<Map<string, Uint8Array>>;
  readlink(): Promise<Buffer>;
  content(start?: number, end?: number): AsyncGenerator<Uint8Array>;
}

const DIRENT_TYPES: FileType[] = ['file', 'file', 'dir', 'chr', 'blk', 'fifo', 'socket', 'symlink'];

function direntType(vol: Volume, e: RawDirent, what: string): FileType {
  if (e.fileType >= 1 && e.fileType <= 7) return DIRENT_TYPES[e.fileType]!;
  throw vol.corrupt(`${what}: entry ${JSON.stringify(display(e.name))} has file type ${e.fileType}`);
}

async function* wrapErrors<T>(gen: AsyncGenerator<T>, name: string): AsyncGenerator<T> {
  try {
    yield* gen;
  } catch (e) {
    throw Volume.wrap(name, e);
  }
}
