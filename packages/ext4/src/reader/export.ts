// ext4 → tar: a layer image (or a sandbox's upper/ directory) as the OCI layer tar it stands for.
import { Readable } from 'node:stream';
import { Ext4Error } from '../errors.ts';
import { tarPadding, encodeTarHeader, TAR_END, type TarHeaderSpec } from '../tar/encode.ts';
import {
  isOverlayOpaque,
  isOverlayWhiteout,
  OPAQUE_WHITEOUT,
  OVERLAY_OPAQUE_XATTR,
  WHITEOUT_PREFIX,
} from '../tar/whiteouts.ts';
import type { Ext4Fs, PathLike, ReadWarning, WalkEntry } from './ext4fs.ts';

/** Options of {@link exportTar}. */
export interface ExportOptions {
  /** The directory whose contents become the archive (default the filesystem root; a sandbox's is `upper`). */
  root?: PathLike;
  /**
   * `'oci'` (default): overlay whiteouts become OCI/AUFS ones — a 0:0 character device `NAME` becomes an
   * empty file `.wh.NAME`, `trusted.overlay.opaque=y` on a directory becomes a `.wh..wh..opq` file in it,
   * and other `trusted.overlay.*` attributes (overlayfs bookkeeping) are dropped. `'none'`: as stored.
   */
  whiteouts?: 'oci' | 'none';
  /** Keep an empty `lost+found` at the top (default: left out when exporting the filesystem root). */
  keepLostFound?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ExportProgress) => void;
  /** Entries tar cannot hold (sockets) and overlay features that do not translate are reported here. */
  onWarning?: (w: ReadWarning) => void;
}

export interface ExportProgress {
  entries: number;
  /** Archive bytes produced so far. */
  bytes: number;
}

const TYPE_FLAG = { file: '0', dir: '5', symlink: '2', chr: '3', blk: '4', fifo: '6' } as const;
const WH_PREFIX = Buffer.from(WHITEOUT_PREFIX);
const WH_OPAQUE = Buffer.from(OPAQUE_WHITEOUT);
const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
/** Pieces smaller than this are gathered into one buffer before they are handed on. */
const BATCH = 256 << 10;

function join(dir: Buffer, name: Buffer): Buffer {
  return dir.length ? Buffer.concat([dir, Buffer.from('/'), name]) : name;
}

function parentOf(p: Buffer): [Buffer, Buffer] {
  const i = p.lastIndexOf(0x2f);
  return i < 0 ? [Buffer.alloc(0), p] : [p.subarray(0, i), p.subarray(i + 1)];
}

/**
 * Exports a filesystem (or one directory of it) as a tar stream: entries depth first, names sorted
 * bytewise, directories before their contents; pax records for long names, big ids and sizes, nanosecond
 * mtimes and xattrs (`SCHILY.xattr.*`, POSIX ACLs in the getxattr form); hard links as tar hard links to
 * the first path seen. Errors (a corrupt image: `ERR_EXT4_CORRUPT` naming the file) destroy the stream.
 */
export function exportTar(fs: Ext4Fs, opts: ExportOptions = {}): Readable {
  return Readable.from(exportChunks(fs, opts), { objectMode: false, highWaterMark: 1 << 20 });
}

/** The same archive as an async iterable of byte chunks. */
export async function* exportChunks(fs: Ext4Fs, opts: ExportOptions = {}): AsyncGenerator<Uint8Array> {
  const oci = (opts.whiteouts ?? 'oci') === 'oci';
  const warn = opts.onWarning ?? (() => {});
  const fromRoot = opts.root === undefined || ['/', '', '.'].includes(String(opts.root));
  const links = new Map<number, Buffer>();
  let entries = 0;
  let bytes = 0;
  let batch: Uint8Array[] = [];
  let batched = 0;
  const flush = (): Uint8Array | null => {
    if (batched === 0) return null;
    const out = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
    batch = [];
    batched = 0;
    return out;
  };
  // Returns a chunk to yield when the batch is full.
  const put = (b: Uint8Array): Uint8Array | null => {
    bytes += b.length;
    batch.push(b);
    batched += b.length;
    return batched >= BATCH ? flush() : null;
  };

  const headerOf = async (e: WalkEntry, name: Buffer): Promise<{ spec: TarHeaderSpec; opaque: boolean } | null> => {
    const st = e.stat;
    const xattrs = await e.xattrs();
    let opaque = false;
    if (oci) {
      for (const k of [...xattrs.keys()]) {
        if (!k.startsWith(OVERLAY_XATTR_PREFIX)) continue;
        if (k === OVERLAY_OPAQUE_XATTR) opaque = isOverlayOpaque(xattrs.get(k));
        else if (k === 'trusted.overlay.redirect' || k === 'trusted.overlay.metacopy')
          warn({
            code: 'EXT4_OVERLAY_FEATURE',
            message: `${e.path}: ${k} is overlayfs-internal and cannot be expressed in a tar; dropped`,
          });
        xattrs.delete(k);
      }
    }
    const sorted = new Map([...xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const base: TarHeaderSpec = {
      path: name,
      type: '0',
      mode: st.mode,
      uid: st.uid,
      gid: st.gid,
      size: 0,
      mtime: st.mtime,
      xattrs: sorted,
    };
    if (st.type === 'socket') {
      warn({ code: 'EXT4_SOCKET_SKIPPED', message: `${e.path}: a socket; tar cannot hold it, left out` });
      return null;
    }
    if (oci && isOverlayWhiteout(st)) {
      const [dir, leaf] = parentOf(name);
      return {
        spec: { ...base, path: join(dir, Buffer.concat([WH_PREFIX, leaf])), mode: 0o600, xattrs: undefined },
        opaque: false,
      };
    }
    if (st.type !== 'dir' && st.nlink > 1) {
      const first = links.get(st.ino);
      if (first) return { spec: { ...base, type: '1', linkname: first, xattrs: undefined }, opaque: false };
      links.set(st.ino, name);
    }
    const spec: TarHeaderSpec = { ...base, type: TYPE_FLAG[st.type] };
    if (st.type === 'dir') {
      spec.path = Buffer.concat([name, Buffer.from('/')]);
    } else if (st.type === 'file') spec.size = st.size;
    else if (st.type === 'symlink') spec.linkname = await e.readlink();
    else if (st.type === 'chr' || st.type === 'blk') {
      spec.devmajor = st.rdev!.major;
      spec.devminor = st.rdev!.minor;
    }
    return { spec, opaque: opaque && st.type === 'dir' };
  };

  for await (const e of fs.walk(opts.root ?? '/', { signal: opts.signal })) {
    if (e.raw.length === 0) continue; // the root itself is not an entry of a layer tar
    if (fromRoot && !opts.keepLostFound && e.path === 'lost+found' && e.stat.type === 'dir') {
      const children = await fs.readdir(`/lost+found`);
      if (children.length === 0) continue;
    }
    const h = await headerOf(e, e.raw);
    if (!h) continue;
    const { spec } = h;
    entries++;
    let out = put(encodeTarHeader(spec));
    if (out) yield out;
    if (spec.type === '0' && spec.size > 0) {
      let got = 0;
      for await (const c of e.content(0, spec.size)) {
        got += c.length;
        if (c.length >= BATCH / 4) {
          const pending = flush();
          if (pending) yield pending;
          bytes += c.length;
          yield c;
        } else {
          out = put(c);
          if (out) yield out;
        }
      }
      if (got !== spec.size)
        throw new Ext4Error('ERR_INTERNAL', `${e.path}: read ${got} of ${spec.size} bytes (a bug in @lcow/ext4)`);
      out = put(tarPadding(spec.size));
      if (out) yield out;
    }
    if (h.opaque) {
      const wh: TarHeaderSpec = {
        path: join(e.raw, WH_OPAQUE),
        type: '0',
        mode: e.stat.mode & 0o777,
        uid: e.stat.uid,
        gid: e.stat.gid,
        size: 0,
        mtime: e.stat.mtime,
      };
      entries++;
      out = put(encodeTarHeader(wh));
      if (out) yield out;
    }
    opts.onProgress?.({ entries, bytes });
  }
  put(TAR_END);
  const last = flush();
  if (last) yield last;
  opts.onProgress?.({ entries, bytes });
}
