// tar → ext4 in hcsshim's layout: the entry handling of hcsshim's tar2ext4 (missing parents made first,
// OCI whiteouts to overlay form, hard links, sparse files with their holes written out) over
// {@link HcsshimLayout}. `convert(…, { layout: 'hcsshim' })` drives it.
import type { FileHandle } from 'node:fs/promises';
import type { SparseRegion, TarEntry } from '../tar/parser.ts';
import { ImageWriter } from '../writer/image.ts';
import type { WriterSummary } from '../writer/writer.ts';
import { FileMode } from '../format/inode.ts';
import { OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR, tarWhiteout } from '../tar/whiteouts.ts';
import { HcsshimLayout, type LayoutOptions } from './layout.ts';

export interface HcsshimOptions extends LayoutOptions {
  convertWhiteouts?: boolean;
}

const TYPE: Partial<Record<TarEntry['type'], number>> = {
  file: FileMode.REG,
  symlink: FileMode.LNK,
  chr: FileMode.CHR,
  blk: FileMode.BLK,
  dir: FileMode.DIR,
  fifo: FileMode.FIFO,
};

/**
 * The entry handling of hcsshim's tar2ext4 over {@link HcsshimLayout}, driven by our tar parser as the
 * default writer is: `entry`, `data`, then `finish`.
 */
export class HcsshimWriter {
  readonly #fh: FileHandle;
  readonly #opts: HcsshimOptions;
  #w: HcsshimLayout | null = null;
  #skipping = false;
  #sparse: { regions: SparseRegion[]; logical: number; region: number; inRegion: number; size: number } | null = null;
  readonly #stats = { entries: 0, files: 0, directories: 0, symlinks: 0, hardlinks: 0, whiteouts: 0, fileBytes: 0 };

  constructor(fh: FileHandle, opts: HcsshimOptions = {}) {
    this.#fh = fh;
    this.#opts = opts;
  }

  async #writer(): Promise<HcsshimLayout> {
    if (!this.#w) {
      const img = new ImageWriter(this.#fh, HcsshimLayout.dataStart(this.#opts));
      const fh = this.#fh;
      this.#w = await HcsshimLayout.open(
        {
          append: (b) => img.append(b),
          zeros: (n) => img.zeros(n),
          flush: () => img.flush(),
          writeAt: async (b, at) => {
            for (let done = 0; done < b.length;)
              done += (await fh.write(b, done, b.length - done, at + done)).bytesWritten;
          },
        },
        this.#opts,
      );
    }
    return this.#w;
  }

  async #padSparse(): Promise<void> {
    const sp = this.#sparse;
    this.#sparse = null;
    if (sp && sp.logical < sp.size) await this.#w!.data(new Uint8Array(sp.size - sp.logical));
  }

  async entry(e: TarEntry): Promise<void> {
    // No await where nothing waits: each costs a promise per entry (the digest path's garbage is mostly
    // such per-entry promises).
    const w = this.#w ?? (await this.#writer());
    if (this.#sparse) await this.#padSparse();
    this.#skipping = true;
    this.#stats.entries++;
    const name = e.path;
    await w.makeParents(name);
    if (this.#opts.convertWhiteouts) {
      const slash = name.lastIndexOf('/');
      const dir = name.slice(0, slash + 1);
      const wh = tarWhiteout(name.slice(slash + 1));
      if (wh) {
        this.#stats.whiteouts++;
        if (wh.kind === 'opaque') {
          const f = await w.stat(dir);
          f.xattrs!.set(OVERLAY_OPAQUE_XATTR, Buffer.from(OVERLAY_OPAQUE_VALUE));
          await w.create(dir, f);
          // hcsshim's tar2ext4 takes AUFS metadata (`.wh..wh.X`) for a whiteout of `.wh.X`: so do we, here.
        } else await w.create(dir + wh.name, { mode: FileMode.CHR });
        return;
      }
    }
    if (e.type === 'link') {
      this.#stats.hardlinks++;
      await w.link(e.linkname, name);
      return;
    }
    await w.create(name, {
      mode: (e.mode & 0xffff & ~0xf000) | (TYPE[e.type] ?? 0),
      atime: e.atime,
      mtime: e.mtime,
      ctime: e.ctime,
      crtime: e.mtime,
      size: e.size,
      uid: e.uid,
      gid: e.gid,
      linkname: e.linkname,
      devmajor: e.devmajor,
      devminor: e.devminor,
      ...(e.xattrs ? { xattrs: e.xattrs } : {}),
    });
    if (e.type === 'dir') this.#stats.directories++;
    if (e.type === 'symlink') this.#stats.symlinks++;
    if (e.type !== 'file') return;
    this.#stats.files++;
    this.#stats.fileBytes += e.size;
    this.#skipping = false;
    if (e.sparse) this.#sparse = { regions: e.sparse, logical: 0, region: 0, inRegion: 0, size: e.size };
  }

  async data(c: Uint8Array): Promise<void> {
    if (this.#skipping) return;
    const w = this.#w!;
    const sp = this.#sparse;
    if (!sp) return w.data(c);
    // Go's reader hands out a sparse file with its holes as zeros; so does this.
    let at = 0;
    while (at < c.length) {
      const r = sp.regions[sp.region]!;
      if (sp.logical < r.offset) {
        await w.data(new Uint8Array(r.offset - sp.logical));
        sp.logical = r.offset;
      }
      const n = Math.min(r.length - sp.inRegion, c.length - at);
      await w.data(c.subarray(at, at + n));
      at += n;
      sp.inRegion += n;
      sp.logical += n;
      if (sp.inRegion === r.length) {
        sp.region++;
        sp.inRegion = 0;
      }
    }
  }

  /** Writes the metadata; the file ends at the image's last block. */
  async finish(): Promise<WriterSummary> {
    const w = await this.#writer();
    await this.#padSparse();
    const { bytes, inodes } = await w.close();
    await this.#fh.truncate(bytes);
    const u = Buffer.from(this.#opts.uuid ?? new Uint8Array(16)).toString('hex');
    return {
      bytes,
      blocks: bytes / 4096,
      inodes,
      ...this.#stats,
      uuid: `${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20)}`,
    };
  }
}
