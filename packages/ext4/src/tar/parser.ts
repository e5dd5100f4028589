// A push parser for tar streams: headers, pax (local and global), GNU long names and links, GNU and pax
// sparse files. File bodies are handed on as sub-arrays of the incoming chunks, never copied or buffered.
import {
  BLOCK,
  Field,
  cstring,
  displayName,
  isZeroBlock,
  number,
  parseHeader,
  tarError,
  type RawHeader,
} from './header.ts';
import { MAX_META_BYTES, paxInt, paxTime, parsePax } from './pax.ts';

export type EntryType = 'file' | 'link' | 'symlink' | 'chr' | 'blk' | 'dir' | 'fifo';

/** One region of a sparse file that holds data; everything else reads as zeros. */
export interface SparseRegion {
  offset: number;
  length: number;
}

export interface Time {
  sec: number;
  nsec: number;
}

/** Pax keys an entry reads, besides the xattr prefixes: what a global header may set for all. */
const GLOBAL_KEYS: ReadonlySet<string> = new Set([
  'path',
  'linkpath',
  'size',
  'uid',
  'gid',
  'mtime',
  'atime',
  'ctime',
  'GNU.sparse.name',
  'GNU.sparse.major',
  'GNU.sparse.map',
  'GNU.sparse.realsize',
  'GNU.sparse.size',
]);

/** Largest set of global pax defaults kept; each later entry merges them. Real tars carry a few bytes. */
export const MAX_GLOBAL_PAX_BYTES = 64 << 10;

/** A tar entry with pax and GNU extensions applied. Paths are latin1 byte strings. */
export interface TarEntry {
  /** 0-based position among the archive's real entries. */
  index: number;
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Logical file size (for sparse files, the full size). */
  size: number;
  mtime: Time;
  atime: Time | null;
  ctime: Time | null;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*`, names as latin1 byte strings. */
  xattrs: Map<string, Uint8Array> | null;
  /** For sparse entries: the data regions, in order; the body is their concatenation. */
  sparse: SparseRegion[] | null;
}

/** What the parser drives. A returned promise is awaited before the parser goes on (back-pressure). */
export interface TarHandler {
  entry(e: TarEntry): void | Promise<void>;
  /** Body bytes of the current `file` entry (for sparse files: the data regions, concatenated). */
  data(chunk: Uint8Array): void | Promise<void>;
  /** A recoverable oddity (an unknown entry type skipped, a trailing garbage block). */
  warn(code: string, message: string): void;
}

const TYPES: Record<string, EntryType> = {
  '0': 'file',
  '7': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'chr',
  '4': 'blk',
  '5': 'dir',
  '6': 'fifo',
  D: 'dir', // GNU dumpdir: a directory whose body lists its contents; the body is skipped
};

const EMPTY: Map<string, string> = new Map();

type State = 'header' | 'meta' | 'gnu-sparse-ext' | 'pax-sparse-map' | 'data' | 'skip' | 'end';

/**
 * The tar state machine. Feed it with {@link TarParser.push} and close it with {@link TarParser.end}; errors
 * are `ERR_TAR_FORMAT` naming the entry.
 */
export class TarParser {
  #h: TarHandler;
  #state: State = 'header';
  /** The header block being assembled; a Buffer, so that its text fields decode in place. */
  #buf = Buffer.alloc(BLOCK);
  #fill = 0;
  #remaining = 0;
  #pad = 0;
  #zeroBlocks = 0;
  #count = 0;
  #meta: Uint8Array | null = null;
  #metaKind = '';
  #metaFill = 0;
  #pax: Map<string, string> | null = null;
  #globalPax = new Map<string, string>();
  #globalBytes = 0;
  #longName: string | null = null;
  #longLink: string | null = null;
  #pending: { raw: RawHeader; entry: TarEntry } | null = null;
  #mapText = '';
  #lastName = '(start of archive)';

  constructor(handler: TarHandler) {
    this.#h = handler;
  }

  /** Entries seen so far. */
  get entries(): number {
    return this.#count;
  }

  /** Whether the end-of-archive marker (two zero blocks) has been read: anything after it is ignored. */
  get ended(): boolean {
    return this.#state === 'end';
  }

  async push(chunk: Uint8Array): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const avail = chunk.length - off;
      switch (this.#state) {
        case 'data': {
          const n = Math.min(this.#remaining, avail);
          const r = this.#h.data(chunk.subarray(off, off + n));
          if (r) await r;
          off += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#afterBody();
          break;
        }
        case 'skip': {
          const n = Math.min(this.#remaining, avail);
          off += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = 'header';
          break;
        }
        case 'end':
          return;
        case 'meta': {
          const n = Math.min(this.#remaining, avail);
          this.#meta!.set(chunk.subarray(off, off + n), this.#metaFill);
          this.#metaFill += n;
          off += n;
          this.#remaining -= n;
          if (this.#remaining === 0) {
            this.#finishMeta();
            this.#skipPadding();
          }
          break;
        }
        default: {
          // header, gnu-sparse-ext, pax-sparse-map: whole 512-byte blocks
          const n = Math.min(BLOCK - this.#fill, avail);
          this.#buf.set(chunk.subarray(off, off + n), this.#fill);
          this.#fill += n;
          off += n;
          if (this.#fill === BLOCK) {
            this.#fill = 0;
            const r = this.#block();
            if (r) await r;
          }
          continue;
        }
      }
    }
  }

  /** Ends the stream: anything but a clean end between entries is a truncated archive. */
  end(): void {
    const where = this.#pending ? this.#pending.entry.path : this.#lastName;
    if (this.#state === 'header' && this.#fill === 0) {
      if (this.#meta !== null || this.#pax !== null || this.#longName !== null || this.#longLink !== null) {
        throw tarError(where, 'archive ends after an extended header, before its entry');
      }
      return;
    }
    if (this.#state === 'end') return;
    if (this.#state === 'skip' && this.#pad > 0 && this.#remaining <= this.#pad && this.#zeroBlocks === 0) {
      // Only the padding of the last entry is missing: tolerated (some writers stop there), nothing is lost.
      this.#h.warn('TAR_TRUNCATED_PADDING', `archive ends inside the padding after ${displayName(where)}`);
      return;
    }
    throw tarError(
      where,
      `archive is truncated (${this.#state === 'data' ? `${this.#remaining} bytes of its data missing` : 'in a header'})`,
    );
  }

  #skipPadding(): void {
    this.#remaining = this.#pad;
    this.#state = this.#pad > 0 ? 'skip' : 'header';
  }

  #afterBody(): void {
    this.#pending = null;
    this.#skipPadding();
  }

  #block(): void | Promise<void> {
    switch (this.#state) {
      case 'gnu-sparse-ext':
        return this.#gnuSparseExt();
      case 'pax-sparse-map':
        return this.#paxSparseMap();
      default:
        return this.#header();
    }
  }

  #header(): void | Promise<void> {
    const b = this.#buf;
    if (isZeroBlock(b)) {
      this.#zeroBlocks++;
      if (this.#zeroBlocks === 2) this.#state = 'end';
      return;
    }
    if (this.#zeroBlocks > 0) {
      this.#h.warn('TAR_LONE_ZERO_BLOCK', `a lone zero block after ${displayName(this.#lastName)}`);
      this.#zeroBlocks = 0;
    }
    const name = (): string => this.#longName ?? this.#pax?.get('path') ?? cstring(b, Field.name);
    const raw = parseHeader(b, name);
    const stored = raw.size;
    this.#pad = (BLOCK - (stored % BLOCK)) % BLOCK;
    switch (raw.type) {
      case 'x':
      case 'g':
      case 'L':
      case 'K':
        if (stored > MAX_META_BYTES)
          throw tarError(name(), `extended header of ${stored} bytes (limit ${MAX_META_BYTES})`);
        // Filled completely before it is read; a Buffer, so that its text decodes in place.
        this.#meta = Buffer.allocUnsafe(stored);
        this.#metaKind = raw.type;
        this.#metaFill = 0;
        this.#remaining = stored;
        if (stored === 0) {
          this.#finishMeta();
          this.#skipPadding();
        } else this.#state = 'meta';
        return;
      case 'V':
        this.#remaining = stored + this.#pad;
        this.#state = this.#remaining > 0 ? 'skip' : 'header';
        return;
    }
    const entry = this.#entry(raw);
    this.#lastName = entry.path;
    if (raw.type === 'S') {
      entry.sparse = [];
      this.#readGnuSparse(b, entry.sparse, Field.gnuSparse[0], 4, entry.path);
      entry.size = number(b, Field.gnuRealSize, 'sparse real size', () => entry.path);
      this.#pending = { raw, entry };
      if (b[Field.gnuIsExtended[0]]) {
        this.#state = 'gnu-sparse-ext';
        return;
      }
      return this.#startBody();
    }
    this.#pending = { raw, entry };
    if (entry.sparse !== null && this.#pax?.get('GNU.sparse.major') === '1') {
      this.#mapText = '';
      this.#state = 'pax-sparse-map';
      this.#remaining = stored;
      return;
    }
    return this.#startBody();
  }

  #readGnuSparse(b: Uint8Array, into: SparseRegion[], at: number, count: number, entry: string): void {
    for (let i = 0; i < count; i++) {
      const o = at + i * 24;
      if (b[o] === 0) break;
      const offset = number(b, [o, 12], 'sparse offset', () => entry);
      const length = number(b, [o + 12, 12], 'sparse length', () => entry);
      into.push({ offset, length });
    }
    if (into.length > 1 << 20) throw tarError(entry, 'more than 1 048 576 sparse regions');
  }

  #gnuSparseExt(): void | Promise<void> {
    const { entry } = this.#pending!;
    this.#readGnuSparse(this.#buf, entry.sparse!, 0, 21, entry.path);
    if (this.#buf[504]) return; // another extension block follows
    return this.#startBody();
  }

  #paxSparseMap(): void | Promise<void> {
    const { entry } = this.#pending!;
    this.#remaining -= BLOCK;
    if (this.#remaining < 0) throw tarError(entry.path, 'sparse map runs past the entry');
    this.#mapText += this.#buf.toString('latin1');
    if (this.#mapText.length > 4 << 20) throw tarError(entry.path, 'sparse map is larger than 4 MiB');
    const lines = this.#mapText.split('\n');
    const n = Number(lines[0]);
    if (!/^\d+$/.test(lines[0] ?? '') || n > 1 << 20) throw tarError(entry.path, 'sparse map has a bad region count');
    if (lines.length < 2 + 2 * n) return; // need more blocks
    const regions: SparseRegion[] = [];
    for (let i = 0; i < n; i++) {
      regions.push({
        offset: paxInt(lines[1 + 2 * i]!, 'sparse offset', entry.path),
        length: paxInt(lines[2 + 2 * i]!, 'sparse length', entry.path),
      });
    }
    entry.sparse = regions;
    return this.#startBody(this.#remaining);
  }

  /** Checks the sparse map, hands the entry over, and moves to its body. */
  #startBody(storedLeft?: number): void | Promise<void> {
    const { raw, entry } = this.#pending!;
    const stored =
      storedLeft ?? (this.#pax?.has('size') ? paxInt(this.#pax.get('size')!, 'size', entry.path) : raw.size);
    this.#pax = null;
    this.#longName = null;
    this.#longLink = null;
    if (entry.sparse) {
      let end = 0;
      let total = 0;
      for (const r of entry.sparse) {
        if (r.offset < end || r.offset + r.length > entry.size)
          throw tarError(entry.path, 'sparse regions overlap, are out of order or pass the file size');
        end = r.offset + r.length;
        total += r.length;
      }
      if (total !== stored)
        throw tarError(entry.path, `sparse regions hold ${total} bytes but the entry stores ${stored}`);
    }
    this.#count++;
    const bodyBytes = entry.type === 'file' ? stored : 0;
    const skipBytes = entry.type === 'file' ? 0 : stored;
    const r = this.#h.entry(entry);
    const next = (): void => {
      if (bodyBytes > 0) {
        this.#remaining = bodyBytes;
        this.#state = 'data';
      } else {
        this.#pending = null;
        this.#remaining = skipBytes + this.#pad;
        this.#state = this.#remaining > 0 ? 'skip' : 'header';
      }
    };
    if (r) return r.then(next);
    next();
  }

  #finishMeta(): void {
    const body = this.#meta!;
    const kind = this.#metaKind;
    this.#meta = null;
    const label = this.#lastName;
    if (kind === 'L' || kind === 'K') {
      const text = cstring(body, [0, body.length]);
      if (kind === 'L') this.#longName = text;
      else this.#longLink = text;
      return;
    }
    const records = parsePax(body, label);
    if (kind === 'g') {
      this.#mergeGlobal(records, label);
      return;
    }
    this.#pax = records;
  }

  /**
   * Folds a global header into the defaults of every later entry. Only keys an entry reads are kept (the
   * rest would be ignored anyway); an empty value deletes a key (POSIX); and what is kept may not pass
   * {@link MAX_GLOBAL_PAX_BYTES}, since each later entry starts from a copy of it: a stream of global headers
   * with new keys would otherwise grow memory, and the time per entry, without end.
   */
  #mergeGlobal(records: Map<string, string>, label: string): void {
    for (const [k, v] of records) {
      if (!GLOBAL_KEYS.has(k) && !k.startsWith('SCHILY.xattr.') && !k.startsWith('LIBARCHIVE.xattr.')) continue;
      const had = this.#globalPax.get(k);
      if (had !== undefined) this.#globalBytes -= k.length + had.length;
      if (v === '') {
        this.#globalPax.delete(k);
        continue;
      }
      this.#globalPax.set(k, v);
      this.#globalBytes += k.length + v.length;
    }
    if (this.#globalBytes > MAX_GLOBAL_PAX_BYTES)
      throw tarError(
        label,
        `global pax headers hold ${this.#globalBytes} bytes of keys for every later entry (limit ${MAX_GLOBAL_PAX_BYTES})`,
      );
  }

  /** Builds the entry from the header and the pending pax and GNU records. */
  #entry(raw: RawHeader): TarEntry {
    const pax = this.#globalPax.size === 0 ? (this.#pax ?? EMPTY) : new Map([...this.#globalPax, ...(this.#pax ?? [])]);
    this.#pax = pax;
    const path = pax.get('GNU.sparse.name') ?? pax.get('path') ?? this.#longName ?? raw.name;
    const typeName = raw.type === 'S' ? 'file' : TYPES[raw.type];
    if (!typeName) throw tarError(path, `unsupported entry type ${JSON.stringify(raw.type)}`);
    if (path.includes('\0')) throw tarError(path, 'path contains NUL');
    const linkname = pax.get('linkpath') ?? this.#longLink ?? raw.linkname;
    if (linkname.includes('\0')) throw tarError(path, 'link target contains NUL');
    let xattrs: Map<string, Uint8Array> | null = null;
    let sparse: SparseRegion[] | null = null;
    let size = raw.size;
    // forEach rather than for…of: iterating a Map by entries allocates a pair per record, for every entry.
    pax.forEach((v, k) => {
      if (k.startsWith('SCHILY.xattr.')) {
        (xattrs ??= new Map()).set(k.slice(13), Buffer.from(v, 'latin1'));
      } else if (k.startsWith('LIBARCHIVE.xattr.')) {
        const name = Buffer.from(decodeURIComponent(k.slice(17)), 'utf8').toString('latin1');
        (xattrs ??= new Map()).set(name, Buffer.from(v, 'base64'));
      }
    });
    if (pax.has('size')) size = paxInt(pax.get('size')!, 'size', path);
    if (pax.has('GNU.sparse.realsize') || pax.has('GNU.sparse.size')) {
      size = paxInt(pax.get('GNU.sparse.realsize') ?? pax.get('GNU.sparse.size')!, 'GNU.sparse.realsize', path);
      const major = pax.get('GNU.sparse.major');
      if (major === '1') sparse = [];
      else if (pax.has('GNU.sparse.map')) {
        const nums = pax
          .get('GNU.sparse.map')!
          .split(',')
          .filter((x) => x !== '');
        if (nums.length % 2 !== 0) throw tarError(path, 'GNU.sparse.map has an odd number of values');
        sparse = [];
        for (let i = 0; i < nums.length; i += 2)
          sparse.push({
            offset: paxInt(nums[i]!, 'sparse offset', path),
            length: paxInt(nums[i + 1]!, 'sparse length', path),
          });
      } else
        throw tarError(
          path,
          'pax sparse format 0.0 (GNU.sparse.offset/numbytes) is not supported; repack with --sparse-version=1.0',
        );
    }
    return {
      index: this.#count,
      path,
      type: typeName,
      mode: raw.mode,
      uid: pax.has('uid') ? paxInt(pax.get('uid')!, 'uid', path) : raw.uid,
      gid: pax.has('gid') ? paxInt(pax.get('gid')!, 'gid', path) : raw.gid,
      size,
      mtime: pax.has('mtime') ? paxTime(pax.get('mtime')!, 'mtime', path) : { sec: raw.mtime, nsec: 0 },
      atime: pax.has('atime') ? paxTime(pax.get('atime')!, 'atime', path) : null,
      ctime: pax.has('ctime') ? paxTime(pax.get('ctime')!, 'ctime', path) : null,
      linkname,
      devmajor: raw.devmajor,
      devminor: raw.devminor,
      xattrs,
      sparse,
    };
  }
}
