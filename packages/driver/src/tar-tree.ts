// A layer tar's metadata as a read-only tree (the `Tree` the change algorithms read): where the driver cannot
// open a sandbox's disk on the host (Hyper-V locks a disk attached writable), the guest exports the sandbox's
// `upper/` as a tar and `changes`/`diffSize` run over this. `.wh.NAME` entries become overlay whiteouts
// (character devices 0:0) and `.wh..wh..opq` the directory's `trusted.overlay.opaque`, so the layer reads as
// the sandbox itself would. File contents are skipped, never held.
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { extract, type Header } from 'tar-stream';
import { OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR, tarWhiteout, type Ext4Dirent, type Ext4Stat } from '@lcow/ext4';
import { DriverError } from './errors.ts';
import type { Tree } from './changes.ts';

type FileType = Ext4Stat['type'];

interface Node {
  stat: Ext4Stat;
  children: Map<string, Ext4Dirent>;
  xattrs: Map<string, Uint8Array>;
  target: string | null;
}

const TYPES: Partial<Record<Header['type'], FileType>> = {
  file: 'file',
  'contiguous-file': 'file',
  directory: 'dir',
  symlink: 'symlink',
  'character-device': 'chr',
  'block-device': 'blk',
  fifo: 'fifo',
};

function timeOf(d: Date | undefined): Ext4Stat['mtime'] {
  const ms = d ? d.getTime() : 0;
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}

/** The tree of a layer tar, read to its end. `what` names the layer in errors. */
export async function readTarTree(tar: Readable, what: string, signal?: AbortSignal): Promise<Tree> {
  const tree = new TarTree(what);
  const ex = extract();
  const onAbort = (): void => void ex.destroy(signal!.reason as Error);
  signal?.addEventListener('abort', onAbort, { once: true });
  tar.on('error', (e) => ex.destroy(e));
  tar.pipe(ex);
  try {
    for await (const entry of ex) {
      entry.resume(); // contents are never held
      tree.add(entry.header);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  signal?.throwIfAborted();
  return tree.reader();
}

/** A tree being built from tar headers, in tar order. */
class TarTree {
  readonly #nodes = new Map<string, Node>();
  readonly #what: string;
  #ino = 1;

  constructor(what: string) {
    this.#what = what;
    this.#nodes.set('/', this.#make('dir', {}));
  }

  /** One tar entry: a whiteout or opaque marker, a hard link, or a file, folder, link or device. */
  add(h: Header): void {
    const p = posix.normalize(`/${h.name}`).replace(/\/+$/, '') || '/';
    if (p.split('/').includes('..'))
      throw new DriverError('ERR_APPLY', `${this.#what}: tar entry ${JSON.stringify(h.name)}`);
    const wh = tarWhiteout(posix.basename(p));
    if (wh?.kind === 'opaque') {
      this.#dir(posix.dirname(p)).xattrs.set(OVERLAY_OPAQUE_XATTR, Buffer.from(OVERLAY_OPAQUE_VALUE));
      return;
    }
    if (wh?.kind === 'aufs-meta') return; // never content, as the converter has it
    if (wh) {
      this.#link(posix.join(posix.dirname(p), wh.name), this.#make('chr', { mode: 0 }));
      return;
    }
    if (h.type === 'link') {
      const target = this.#nodes.get(posix.normalize(`/${h.linkname ?? ''}`));
      if (!target) throw new DriverError('ERR_APPLY', `${this.#what}: hard link ${p} to a missing ${h.linkname}`);
      target.stat.nlink++;
      this.#link(p, target);
      return;
    }
    const type = TYPES[h.type ?? 'file'];
    if (!type) return; // pax/GNU bookkeeping: not entries of the tree
    this.#place(p, type, h);
  }

  /** A file, folder, symbolic link or device at `p`; a folder listed again keeps its children. */
  #place(p: string, type: FileType, h: Header): void {
    const existing = this.#nodes.get(p);
    if (p === '/' || (existing && type === 'dir' && existing.stat.type === 'dir')) {
      const n = this.#nodes.get(p)!;
      Object.assign(n.stat, this.#make('dir', h).stat, { ino: n.stat.ino });
      if (p === '/') return;
      n.target = h.linkname ?? null;
      this.#xattrs(n, h);
      this.#link(p, n);
      return;
    }
    const n = this.#make(type, h);
    n.target = h.linkname ?? null;
    this.#xattrs(n, h);
    this.#link(p, n);
  }

  #xattrs(n: Node, h: Header): void {
    for (const [k, v] of Object.entries((h.pax ?? {}) as Record<string, string>))
      if (k.startsWith('SCHILY.xattr.')) n.xattrs.set(k.slice('SCHILY.xattr.'.length), Buffer.from(v, 'latin1'));
  }

  #make(type: FileType, h: Partial<Header>): Node {
    const time = timeOf(h.mtime);
    return {
      stat: {
        ino: this.#ino++,
        type,
        mode: (h.mode ?? (type === 'dir' ? 0o755 : 0o644)) & 0o7777,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        size: type === 'file' ? (h.size ?? 0) : 0,
        nlink: 1,
        blocks: 0,
        atime: time,
        mtime: { ...time },
        ctime: { ...time },
        birthtime: null,
        rdev: type === 'chr' || type === 'blk' ? { major: h.devmajor ?? 0, minor: h.devminor ?? 0 } : null,
        flags: 0,
      },
      children: new Map(),
      xattrs: new Map(),
      target: null,
    };
  }

  /** The folder `p`, made (as a plain directory) where the tar did not list it before its contents. */
  #dir(p: string): Node {
    const have = this.#nodes.get(p);
    if (have) {
      if (have.stat.type !== 'dir')
        throw new DriverError('ERR_APPLY', `${this.#what}: ${p} is not a directory in the tar`);
      return have;
    }
    const n = this.#make('dir', {});
    this.#link(p, n);
    return n;
  }

  #link(p: string, n: Node): void {
    this.#nodes.set(p, n);
    const parent = this.#dir(posix.dirname(p));
    const name = posix.basename(p);
    parent.children.set(name, { name, raw: Buffer.from(name), ino: n.stat.ino, type: n.stat.type });
  }

  /** The finished tree, as the change algorithms read one. */
  reader(): Tree {
    const get = (p: string): Node | undefined => this.#nodes.get(posix.normalize(`/${p}`).replace(/\/+$/, '') || '/');
    const must = (p: string): Node => {
      const n = get(p);
      if (!n) throw new DriverError('ERR_NOT_FOUND', `${this.#what}: ${p}: not in the layer`);
      return n;
    };
    return {
      lstat: async (p) => must(p).stat,
      tryLstat: async (p) => get(p)?.stat ?? null,
      readdir: async (p) => [...must(p).children.values()].sort((a, b) => Buffer.compare(a.raw, b.raw)),
      listXattrs: async (p) => must(p).xattrs,
      readlink: async (p) => must(p).target ?? '',
    };
  }
}
