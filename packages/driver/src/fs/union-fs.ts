// The container filesystem of the `inproc` backend: a read-only {@link UnionView}; every write is
// `ERR_READ_ONLY` with the operation and path in its message.
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { Ext4Stat } from '@lcow/ext4';
import type { UnionView } from './union-view.ts';
import { archiveOf } from './archive.ts';
import type { ContainerFile, ContainerFs, DirEntry, FileInfo } from './types.ts';

function infoOf(path: string, st: Ext4Stat): FileInfo {
  return {
    name: posix.basename(`/${path}`) || '/',
    ino: st.ino,
    type: st.type,
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    nlink: st.nlink,
    mtime: { sec: st.mtime.sec, nsec: st.mtime.nsec },
    rdev: st.rdev,
  };
}

export class UnionFs implements ContainerFs {
  readonly path = null;
  readonly readOnly = true;
  readonly #u: UnionView;

  constructor(view: UnionView) {
    this.#u = view;
  }

  async stat(p: string): Promise<FileInfo> {
    return infoOf(p, await this.#u.stat(p));
  }

  async lstat(p: string): Promise<FileInfo> {
    return infoOf(p, await this.#u.lstat(p));
  }

  async readdir(p: string): Promise<DirEntry[]> {
    return (await this.#u.readdir(p)).map((e) => ({ name: e.name, type: e.type }));
  }

  async readFile(p: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of await this.#u.readFile(p)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  createReadStream(p: string): Promise<Readable> {
    return this.#u.readFile(p);
  }

  readlink(p: string): Promise<string> {
    return this.#u.readlink(p);
  }

  resolveScopedPath(p: string): Promise<string> {
    return this.#u.realpath(p);
  }

  async open(p: string, flags = 'r'): Promise<ContainerFile> {
    if (flags !== 'r') this.#u.refuseWrite(`open(${flags})`, p);
    const size = (await this.#u.stat(p)).size;
    const u = this.#u;
    let pos = 0;
    return {
      async read(buf, position) {
        const at = position ?? pos;
        const got = await u.read(p, at, Math.min(buf.length, Math.max(0, size - at)));
        buf.set(got);
        if (position === undefined) pos += got.length;
        return got.length;
      },
      async write() {
        return u.refuseWrite('write', p);
      },
      async seek(offset, whence) {
        pos = (whence === 0 ? 0 : whence === 1 ? pos : size) + offset;
        return pos;
      },
      async close() {},
    };
  }

  archivePath(p: string): Readable {
    return archiveOf(this, p);
  }

  async writeFile(p: string): Promise<void> {
    this.#u.refuseWrite('writeFile', p);
  }
  async mkdir(p: string): Promise<void> {
    this.#u.refuseWrite('mkdir', p);
  }
  async mkdirAll(p: string): Promise<void> {
    this.#u.refuseWrite('mkdirAll', p);
  }
  async remove(p: string): Promise<void> {
    this.#u.refuseWrite('remove', p);
  }
  async removeAll(p: string): Promise<void> {
    this.#u.refuseWrite('removeAll', p);
  }
  async link(_existing: string, p: string): Promise<void> {
    this.#u.refuseWrite('link', p);
  }
  async symlink(_target: string, p: string): Promise<void> {
    this.#u.refuseWrite('symlink', p);
  }
  async lchown(p: string): Promise<void> {
    this.#u.refuseWrite('lchown', p);
  }
  async lchmod(p: string): Promise<void> {
    this.#u.refuseWrite('lchmod', p);
  }
  async mknod(p: string): Promise<void> {
    this.#u.refuseWrite('mknod', p);
  }
  async mkfifo(p: string): Promise<void> {
    this.#u.refuseWrite('mkfifo', p);
  }
  async extractArchive(_tar: AsyncIterable<Uint8Array>, dest: string): Promise<void> {
    this.#u.refuseWrite('extractArchive', dest);
  }
}
