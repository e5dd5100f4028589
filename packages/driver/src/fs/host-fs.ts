// The container filesystem of the `host` backend: a real folder (the union mount), every path resolved
// inside it before the host is touched — the job of moby's FollowSymlinkInScope.
import { constants, type BigIntStats, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { DriverError, type DriverErrorCode } from '../errors.ts';
import { runTool } from '../run-tool.ts';
import { archiveOf, extractInto } from './archive.ts';
import {
  splitPath,
  type ContainerFile,
  type ContainerFs,
  type DirEntry,
  type EntryKind,
  type FileInfo,
} from './types.ts';

/** Linux allows 40 symlinks in one lookup; so do we. */
const MAX_SYMLINKS = 40;

const ERRNO: Record<string, DriverErrorCode> = {
  ENOENT: 'ERR_NOT_FOUND',
  ENOTDIR: 'ERR_NOT_A_DIRECTORY',
  EISDIR: 'ERR_IS_A_DIRECTORY',
  EEXIST: 'ERR_EXISTS',
  ENOTEMPTY: 'ERR_NOT_EMPTY',
  EROFS: 'ERR_READ_ONLY',
  ELOOP: 'ERR_SYMLINK_LOOP',
};

/** Node's errno errors, renamed with the container path (ENOSPC, EDQUOT and the like keep their errno code). */
function mapError(e: unknown, op: string, path: string): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (code && ERRNO[code])
    return new DriverError(ERRNO[code], `${op} ${path}: ${code} (${(e as Error).message})`, { cause: e });
  return e;
}

function kindOf(st: Stats): EntryKind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isBlockDevice()) return 'blk';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

function infoOf(name: string, st: BigIntStats | Stats): FileInfo {
  const s = st as BigIntStats;
  const rdev = Number(s.rdev);
  const kind = kindOf(st as unknown as Stats);
  return {
    name,
    ino: Number(s.ino),
    type: kind,
    mode: Number(s.mode) & 0o7777,
    uid: Number(s.uid),
    gid: Number(s.gid),
    size: Number(s.size),
    nlink: Number(s.nlink),
    mtime: { sec: Number(s.mtimeNs / 1_000_000_000n), nsec: Number(s.mtimeNs % 1_000_000_000n) },
    rdev:
      kind === 'chr' || kind === 'blk'
        ? { major: ((rdev >> 8) & 0xfff) | ((rdev >>> 32) & ~0xfff), minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) }
        : null,
  };
}

const KIND_NAMES: Record<EntryKind, string> = {
  file: 'a file',
  dir: 'a directory',
  symlink: 'a symbolic link',
  chr: 'a character device',
  blk: 'a block device',
  fifo: 'a FIFO',
  socket: 'a socket',
};

/**
 * Opens `host` for reading only if it is a regular file: a device node in a layer must never reach the
 * host's device (the mounts are `nodev` as well), and a FIFO must not block the reader (O_NONBLOCK).
 */
async function openRegular(host: string, p: string): Promise<fsp.FileHandle> {
  const st = await fsp.lstat(host);
  if (!st.isFile())
    throw new DriverError('ERR_INVALID_ARGUMENT', `read ${p}: ${KIND_NAMES[kindOf(st)]}, not a regular file`);
  const fh = await fsp.open(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  if (!(await fh.stat()).isFile()) {
    await fh.close();
    throw new DriverError('ERR_INVALID_ARGUMENT', `read ${p}: replaced by something that is not a regular file`);
  }
  return fh;
}

export class HostFs implements ContainerFs {
  readonly path: string;
  readonly readOnly = false;

  /** `root`: the host folder that is the container's `/`. */
  constructor(root: string) {
    this.path = root;
  }

  /**
   * The components of `p` with every symlink resolved inside the root (`..` clamped there); the last one
   * is followed only when `followLast`. Components that do not exist are kept as they are.
   */
  async #scoped(p: string, followLast: boolean): Promise<string[]> {
    let todo = splitPath(p);
    let done: string[] = [];
    let links = 0;
    while (todo.length > 0) {
      const name = todo.shift()!;
      if (name === '..') {
        done.pop();
        continue;
      }
      const cand = [...done, name];
      if (todo.length === 0 && !followLast) {
        done = cand;
        break;
      }
      let st: Stats;
      try {
        st = await fsp.lstat(join(this.path, ...cand));
      } catch {
        done = cand;
        continue;
      }
      if (!st.isSymbolicLink()) {
        done = cand;
        continue;
      }
      if (++links > MAX_SYMLINKS) throw new DriverError('ERR_SYMLINK_LOOP', `${p}: more than ${MAX_SYMLINKS} symlinks`);
      const target = await fsp.readlink(join(this.path, ...cand));
      if (target.startsWith('/')) done = [];
      todo = [...splitPath(target), ...todo];
    }
    return done;
  }

  async #host(p: string, followLast: boolean): Promise<string> {
    return join(this.path, ...(await this.#scoped(p, followLast)));
  }

  async #do<T>(op: string, p: string, followLast: boolean, fn: (host: string) => Promise<T>): Promise<T> {
    const host = await this.#host(p, followLast);
    try {
      return await fn(host);
    } catch (e) {
      throw mapError(e, op, p);
    }
  }

  async resolveScopedPath(p: string): Promise<string> {
    return `/${(await this.#scoped(p, true)).join('/')}`;
  }

  stat(p: string): Promise<FileInfo> {
    return this.#do('stat', p, true, async (h) =>
      infoOf(posix.basename(`/${p}`) || '/', await fsp.stat(h, { bigint: true })),
    );
  }

  lstat(p: string): Promise<FileInfo> {
    return this.#do('lstat', p, false, async (h) =>
      infoOf(posix.basename(`/${p}`) || '/', await fsp.lstat(h, { bigint: true })),
    );
  }

  readdir(p: string): Promise<DirEntry[]> {
    return this.#do('readdir', p, true, async (h) =>
      (await fsp.readdir(h, { withFileTypes: true }))
        .map((d) => ({ name: d.name, type: kindOf(d as unknown as Stats) }))
        .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name))),
    );
  }

  readFile(p: string): Promise<Buffer> {
    return this.#do('readFile', p, true, async (h) => {
      const fh = await openRegular(h, p);
      try {
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    });
  }

  createReadStream(p: string): Promise<Readable> {
    return this.#do('open', p, true, async (h) => {
      const fh = await openRegular(h, p);
      return fh.createReadStream(); // closes the file when it ends or is destroyed
    });
  }

  writeFile(p: string, data: Uint8Array | string, mode = 0o644): Promise<void> {
    return this.#do('writeFile', p, true, async (h) => {
      await fsp.writeFile(h, data, { mode });
      await fsp.chmod(h, mode);
    });
  }

  open(p: string, flags = 'r', mode = 0o644): Promise<ContainerFile> {
    return this.#do('open', p, true, async (h) => {
      // A file this open creates gets exactly `mode` (whatever the umask); an existing one keeps its own.
      const existed = await fsp.lstat(h).then(
        () => true,
        () => false,
      );
      const fh = await fsp.open(h, flags, mode);
      if (!existed) await fh.chmod(mode).catch(() => {});
      let pos = flags.startsWith('a') ? (await fh.stat()).size : 0;
      return {
        async read(buf, position) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, position ?? pos);
          if (position === undefined) pos += bytesRead;
          return bytesRead;
        },
        async write(buf, position) {
          const { bytesWritten } = await fh.write(buf, 0, buf.length, position ?? pos);
          if (position === undefined) pos += bytesWritten;
          return bytesWritten;
        },
        async seek(offset, whence) {
          const base = whence === 0 ? 0 : whence === 1 ? pos : (await fh.stat()).size;
          if (base + offset < 0) throw new DriverError('ERR_INVALID_ARGUMENT', `seek ${p}: negative offset`);
          pos = base + offset;
          return pos;
        },
        close: () => fh.close(),
      };
    });
  }

  mkdir(p: string, mode = 0o755): Promise<void> {
    return this.#do('mkdir', p, false, async (h) => {
      await fsp.mkdir(h, { mode });
      await fsp.chmod(h, mode);
    });
  }

  async mkdirAll(p: string, mode = 0o755): Promise<void> {
    const parts = splitPath(p);
    for (let i = 1; i <= parts.length; i++) {
      const sub = `/${parts.slice(0, i).join('/')}`;
      const st = await this.stat(sub).catch((e: unknown) => {
        if ((e as DriverError).code === 'ERR_NOT_FOUND') return null;
        throw e;
      });
      if (st?.type === 'dir') continue;
      if (st) throw new DriverError('ERR_NOT_A_DIRECTORY', `mkdirAll ${p}: ${sub} is not a directory`);
      await this.mkdir(sub, mode);
    }
  }

  remove(p: string): Promise<void> {
    return this.#do('remove', p, false, async (h) => {
      const st = await fsp.lstat(h);
      if (st.isDirectory()) await fsp.rmdir(h);
      else await fsp.unlink(h);
    });
  }

  async removeAll(p: string): Promise<void> {
    if (splitPath(p).filter((x) => x !== '..').length === 0)
      throw new DriverError('ERR_INVALID_ARGUMENT', `removeAll ${p}: refusing to remove the root`);
    return this.#do('removeAll', p, false, (h) => fsp.rm(h, { recursive: true, force: true }));
  }

  async link(existing: string, newPath: string): Promise<void> {
    const from = await this.#host(existing, false);
    await this.#do('link', newPath, false, (h) => fsp.link(from, h));
  }

  symlink(target: string, p: string): Promise<void> {
    return this.#do('symlink', p, false, (h) => fsp.symlink(target, h));
  }

  readlink(p: string): Promise<string> {
    return this.#do('readlink', p, false, (h) => fsp.readlink(h));
  }

  lchown(p: string, uid: number, gid: number): Promise<void> {
    return this.#do('lchown', p, false, (h) => fsp.lchown(h, uid, gid));
  }

  /** Linux symlinks have no mode of their own: on a symlink this changes nothing. */
  lchmod(p: string, mode: number): Promise<void> {
    return this.#do('lchmod', p, false, async (h) => {
      if (!(await fsp.lstat(h)).isSymbolicLink()) await fsp.chmod(h, mode);
    });
  }

  mknod(p: string, type: 'chr' | 'blk', mode: number, major: number, minor: number): Promise<void> {
    return this.#do('mknod', p, false, async (h) => {
      await runTool('mknod', [
        '-m',
        (mode & 0o7777).toString(8),
        h,
        type === 'chr' ? 'c' : 'b',
        String(major),
        String(minor),
      ]);
    });
  }

  mkfifo(p: string, mode: number): Promise<void> {
    return this.#do('mkfifo', p, false, async (h) => {
      await runTool('mkfifo', ['-m', (mode & 0o7777).toString(8), h]);
    });
  }

  extractArchive(tar: AsyncIterable<Uint8Array>, dest: string): Promise<void> {
    return extractInto(this, tar, dest);
  }

  archivePath(p: string): Readable {
    return archiveOf(this, p);
  }
}
