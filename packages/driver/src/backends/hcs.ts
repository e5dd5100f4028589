// The `hcs` backend: a real LCOW utility VM through `@lcow/hcs` (Windows with Hyper-V; on Linux only
// against a vmcompute library named by LCOW_VMCOMPUTE_LIB, such as the tests' fake). `get()` hands out the
// guest's `remotefs` as a ContainerFs.
import { posix } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { rm } from 'node:fs/promises';
import {
  LcowUtilityVm,
  RemoteFsError,
  parseUvmOptions,
  uvmTimeoutSeconds,
  type RemoteFileInfo,
  type RemoteFs,
} from '@lcow/hcs';
import { dataRootPaths, scratchLock } from '@lcow/layerstore';
import { SCRATCH_GUEST_PATH, unionMountArgs, type MappedDisk, type UtilityVm } from '@lcow/svm-pool';
import { BlankDisk } from '../disk-cache.ts';
import { DriverError, type DriverErrorCode } from '../errors.ts';
import {
  splitPath,
  type ContainerFile,
  type ContainerFs,
  type DirEntry,
  type EntryKind,
  type FileInfo,
} from '../fs/types.ts';
import type { DriverOptions } from '../options.ts';
import type { Backend } from './backend.ts';

const O = { RDONLY: 0, WRONLY: 1, RDWR: 2, CREAT: 0o100, EXCL: 0o200, TRUNC: 0o1000, APPEND: 0o2000 } as const;
const FLAGS: Record<string, number> = {
  r: O.RDONLY,
  'r+': O.RDWR,
  w: O.WRONLY | O.CREAT | O.TRUNC,
  'w+': O.RDWR | O.CREAT | O.TRUNC,
  wx: O.WRONLY | O.CREAT | O.EXCL,
  a: O.WRONLY | O.CREAT | O.APPEND,
  'a+': O.RDWR | O.CREAT | O.APPEND,
};

function kindOfMode(mode: number): EntryKind {
  switch (mode & 0o170000) {
    case 0o040000:
      return 'dir';
    case 0o120000:
      return 'symlink';
    case 0o020000:
      return 'chr';
    case 0o060000:
      return 'blk';
    case 0o010000:
      return 'fifo';
    case 0o140000:
      return 'socket';
    default:
      return 'file';
  }
}

/** remotefs' FileInfo carries no owner, link count or inode: those read as 0 (and 1 link). */
function infoOf(i: RemoteFileInfo): FileInfo {
  return {
    name: i.name,
    ino: 0,
    type: kindOfMode(i.mode),
    mode: i.mode & 0o7777,
    uid: 0,
    gid: 0,
    size: i.size,
    nlink: 1,
    mtime: { sec: Number(i.mtimeNs / 1_000_000_000n), nsec: Number(i.mtimeNs % 1_000_000_000n) },
    rdev: null,
  };
}

const KINDS: Partial<Record<string, DriverErrorCode>> = { ERR_NOT_FOUND: 'ERR_NOT_FOUND', ERR_EXISTS: 'ERR_EXISTS' };

/** The guest's `remotefs` behind the ContainerFs interface; container paths are scoped by the guest. */
export class RemoteContainerFs implements ContainerFs {
  readonly path = null;
  readonly readOnly = false;
  readonly #r: RemoteFs;

  constructor(remote: RemoteFs) {
    this.#r = remote;
  }

  async #do<T>(op: string, p: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      const code = e instanceof RemoteFsError ? KINDS[e.code] : undefined;
      if (code) throw new DriverError(code, `${op} ${p}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      throw e;
    }
  }

  /** Symlinks resolved by the guest, inside the root; the last component kept when `followLast` is false. */
  async #guest(p: string, followLast: boolean): Promise<string> {
    if (followLast) return this.#r.resolveScopedPath(p);
    const parts = splitPath(p);
    const last = parts.pop();
    const dir = await this.#r.resolveScopedPath(`/${parts.join('/')}`);
    return last === undefined || last === '..' ? this.#r.resolveScopedPath(p) : posix.join(dir, last);
  }

  async resolveScopedPath(p: string): Promise<string> {
    const g = await this.#r.resolveScopedPath(p);
    return `/${posix.relative(this.#r.root, g)}`;
  }
  stat(p: string): Promise<FileInfo> {
    return this.#do('stat', p, async () => infoOf(await this.#r.stat(await this.#guest(p, true))));
  }
  lstat(p: string): Promise<FileInfo> {
    return this.#do('lstat', p, async () => infoOf(await this.#r.lstat(await this.#guest(p, false))));
  }
  readdir(p: string): Promise<DirEntry[]> {
    return this.#do('readdir', p, async () =>
      (await this.#r.readdir(await this.#guest(p, true)))
        .map((i) => ({ name: i.name, type: kindOfMode(i.mode) }))
        .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name))),
    );
  }
  async readFile(p: string): Promise<Buffer> {
    const f = await this.open(p, 'r');
    try {
      const parts: Buffer[] = [];
      const buf = new Uint8Array(1 << 20);
      for (;;) {
        const n = await f.read(buf);
        if (n === 0) break;
        parts.push(Buffer.from(buf.subarray(0, n)));
      }
      return Buffer.concat(parts);
    } finally {
      await f.close();
    }
  }
  async createReadStream(p: string): Promise<Readable> {
    return Readable.from([await this.readFile(p)]);
  }
  async writeFile(p: string, data: Uint8Array | string, mode = 0o644): Promise<void> {
    const f = await this.open(p, 'w', mode);
    try {
      await f.write(typeof data === 'string' ? Buffer.from(data) : data);
    } finally {
      await f.close();
    }
    // The mode goes with the open (O_CREAT): the 2019 guest's remotefs has no working lchmod (EOPNOTSUPP for
    // every path, lcow-behaviour.md), so a chmod after the write would fail every write on a real guest.
  }
  async open(p: string, flags = 'r', mode = 0o644): Promise<ContainerFile> {
    const f = FLAGS[flags];
    if (f === undefined) throw new DriverError('ERR_INVALID_ARGUMENT', `open ${p}: flags ${JSON.stringify(flags)}`);
    return this.#do('open', p, async () => {
      const file = await this.#r.openFile(await this.#guest(p, true), f, mode);
      return {
        async read(buf, position) {
          if (position !== undefined) await file.seek(position, 0);
          const got = await file.read(buf.length);
          buf.set(got);
          return got.length;
        },
        async write(buf, position) {
          if (position !== undefined) await file.seek(position, 0);
          return file.write(buf);
        },
        seek: (offset, whence) => file.seek(offset, whence),
        close: () => file.close(),
      };
    });
  }
  mkdir(p: string, mode = 0o755): Promise<void> {
    return this.#do('mkdir', p, async () => this.#r.mkdir(await this.#guest(p, false), mode));
  }
  mkdirAll(p: string, mode = 0o755): Promise<void> {
    return this.#do('mkdirAll', p, async () => this.#r.mkdirAll(await this.#guest(p, true), mode));
  }
  remove(p: string): Promise<void> {
    return this.#do('remove', p, async () => this.#r.remove(await this.#guest(p, false)));
  }
  async removeAll(p: string): Promise<void> {
    if (splitPath(p).filter((x) => x !== '..').length === 0)
      throw new DriverError('ERR_INVALID_ARGUMENT', `removeAll ${p}: refusing to remove the root`);
    return this.#do('removeAll', p, async () => this.#r.removeAll(await this.#guest(p, false)));
  }
  link(existing: string, newPath: string): Promise<void> {
    return this.#do('link', newPath, async () =>
      this.#r.link(await this.#guest(existing, false), await this.#guest(newPath, false)),
    );
  }
  symlink(target: string, p: string): Promise<void> {
    return this.#do('symlink', p, async () => this.#r.symlink(target, await this.#guest(p, false)));
  }
  readlink(p: string): Promise<string> {
    return this.#do('readlink', p, async () => this.#r.readlink(await this.#guest(p, false)));
  }
  lchown(p: string, uid: number, gid: number): Promise<void> {
    return this.#do('lchown', p, async () => this.#r.lchown(await this.#guest(p, false), uid, gid));
  }
  /** Not on this backend: the guest's remotefs answers EOPNOTSUPP to every lchmod (lcow-behaviour.md). */
  async lchmod(p: string, _mode: number): Promise<void> {
    throw new DriverError(
      'ERR_UNSUPPORTED',
      `lchmod ${p}: the LCOW guest's remotefs cannot change modes (it answers EOPNOTSUPP); create files with their mode`,
    );
  }
  mknod(p: string, type: 'chr' | 'blk', mode: number, major: number, minor: number): Promise<void> {
    const ifmt = type === 'chr' ? 0o020000 : 0o060000;
    return this.#do('mknod', p, async () => this.#r.mknod(await this.#guest(p, false), ifmt | mode, major, minor));
  }
  mkfifo(p: string, mode: number): Promise<void> {
    return this.#do('mkfifo', p, async () => this.#r.mkfifo(await this.#guest(p, false), mode));
  }
  async extractArchive(tar: AsyncIterable<Uint8Array>, dest: string): Promise<void> {
    const g = await this.#guest(dest, true);
    await this.#r.extractArchive(Readable.from(tar), g);
  }
  archivePath(p: string): Readable {
    const out = new PassThrough();
    void this.#guest(p, true).then(
      (g) => this.#r.archivePath(g).pipe(out),
      (e: unknown) => out.destroy(e as Error),
    );
    return out;
  }
}

/**
 * A utility VM as the pool drives it, with what the driver adds around it: its scratch disk (a copy of
 * `cache/scratch.vhdx` at `scratch/<vm>.vhdx`, attached at boot at `/tmp/scratch`, as the original), held
 * under the data root's scratch lock while the VM runs and deleted when it stops.
 */
export class HcsVm implements UtilityVm {
  readonly id: string;
  readonly uvm: LcowUtilityVm;
  readonly scratch: string;
  readonly #stopped: () => Promise<void>;

  constructor(uvm: LcowUtilityVm, scratch: string, stopped: () => Promise<void>) {
    this.id = uvm.id;
    this.uvm = uvm;
    this.scratch = scratch;
    this.#stopped = stopped;
  }

  hotAdd(d: MappedDisk): Promise<void> {
    return this.uvm.hotAdd(d);
  }
  hotRemove(d: MappedDisk): Promise<void> {
    return this.uvm.hotRemove(d);
  }
  mountUnion(target: string, lowers: readonly string[], upper?: string): Promise<void> {
    return this.uvm.mountUnion(target, lowers, upper);
  }
  unmount(target: string): Promise<void> {
    return this.uvm.unmount(target);
  }
  exportTar(guestPath: string): Readable {
    return this.uvm.exportTar(guestPath);
  }
  /** The guest's files under `root` through `remotefs`. */
  fs(root: string): RemoteFs {
    return this.uvm.fs(root);
  }
  async terminate(): Promise<void> {
    try {
      await this.uvm.terminate();
    } finally {
      await this.#stopped();
    }
  }
}

/** The timeout of every utility-VM operation: `lcow.timeout`, else `OPENGCS_UVM_TIMEOUT_SECONDS`, else 300 s. */
export function hcsTimeoutMs(opts: DriverOptions, env: NodeJS.ProcessEnv = process.env): number {
  // The original's parsing and messages (@lcow/hcs), so a bad value fails at init, not at the first start.
  return uvmTimeoutSeconds(parseUvmOptions(opts.raw), env) * 1000;
}

/** The hcs backend: one LCOW utility VM per layer (safe mode) or one for all (`lcow.globalmode`). */
export function hcsBackend(
  dataRoot: string,
  opts: DriverOptions,
  library?: string,
): Backend & { scratchBlank: BlankDisk } {
  const paths = dataRootPaths(dataRoot);
  const scratchBlank = new BlankDisk(paths.cachedScratch);
  const timeoutMs = hcsTimeoutMs(opts);
  const start = async (vmId: string, signal: AbortSignal): Promise<HcsVm> => {
    // Held while the VM runs: a data root opened meanwhile (another process) leaves this scratch alone.
    const release = await scratchLock(paths.root, vmId).acquire(signal);
    const scratch = paths.scratch(vmId);
    const stopped = async (): Promise<void> => {
      try {
        await rm(scratch, { force: true });
      } finally {
        await release();
      }
    };
    try {
      await scratchBlank.copyTo(scratch, { overwrite: true, signal });
      if (process.platform === 'win32') await (await import('@lcow/hcs')).grantVmGroupAccess(scratch);
      const uvm = await LcowUtilityVm.start({
        id: vmId,
        options: opts.raw,
        disks: [{ hostPath: scratch, containerPath: SCRATCH_GUEST_PATH }],
        mountArgs: unionMountArgs,
        library,
        validate: process.platform === 'win32',
        signal,
      });
      return new HcsVm(uvm, scratch, stopped);
    } catch (e) {
      await stopped();
      throw e;
    }
  };
  return {
    name: 'hcs',
    writable: true,
    singleVm: false,
    attachConcurrency: 1,
    timeoutMs,
    sandboxType: 'dynamic',
    dynamicSandboxes: true,
    scratchBlank,
    start,
    containerFs: (vm, target) => new RemoteContainerFs((vm as HcsVm).fs(target)),
    containerFsAt: () => {
      throw new DriverError('ERR_UNSUPPORTED', 'backend hcs: unions live in utility VMs, not host folders');
    },
    // A utility VM does not outlive the process that started it.
    adopt: async () => null,
    // Hyper-V holds a disk attached writable open and locked: the host cannot read it then, so the driver
    // reads such a sandbox through the guest (exportTar, remotefs) instead.
    lockedWhileAttached: true,
    guestFs: (vm, root) => new RemoteContainerFs((vm as HcsVm).fs(root)),
    flush: async () => {},
    // Hyper-V holds an attached disk open exclusively: another process's attach shows as a sharing
    // violation when the file is replaced or removed, which the caller reports.
    inUse: async () => false,
    releaseOrphans: async () => {},
    recover: async () => [],
    unmountDetached: async () => false,
  };
}
