// Loop devices and mounts by system call — libc's `ioctl`, `mount` and `umount2` through koffi, loaded on
// first use — instead of a `mount`, `umount` or `losetup` process per step. A container's start and stop on
// the host backend ran seven such processes, 10–40 ms each on this kind of machine (a fork of a large Node
// process, and `losetup` opening every loop device): most of what it cost beyond overlay2.
//
// The calls are synchronous, so that errno is read on the thread that set it; each is short (attaching a
// loop device, mounting, unmounting a filesystem with nothing left to write). The one that can take long —
// writing back a sandbox before its unmount — runs on a worker thread first (syncfs), where only success
// matters.
// Node opens every descriptor close-on-exec: a child process never inherits a loop device or a disk file.
import { closeSync, constants, openSync } from 'node:fs';
import { readFile, realpath } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { getSystemErrorMap } from 'node:util';
import { bytes, struct, u32, u64n } from '@lcow/binary';
import { DriverError, type DriverErrorCode } from '../errors.ts';

// struct loop_info64 and struct loop_config — include/uapi/linux/loop.h.
const LoopInfo64 = struct('loop_info64', 'le', {
  device: u64n,
  inode: u64n,
  rdevice: u64n,
  offset: u64n,
  sizeLimit: u64n,
  number: u32,
  encryptType: u32,
  encryptKeySize: u32,
  flags: u32,
  fileName: bytes(64),
  cryptName: bytes(64),
  encryptKey: bytes(32),
  init: bytes(16),
});
const LoopConfig = struct('loop_config', 'le', {
  fd: u32,
  blockSize: u32,
  info: bytes(LoopInfo64.size),
  reserved: bytes(64),
});

const LOOP_CTL_GET_FREE = 0x4c82;
const LOOP_CONFIGURE = 0x4c0a;
const LO_FLAGS = { READ_ONLY: 1, AUTOCLEAR: 4 } as const;

// mount(2) flags — include/uapi/linux/mount.h.
const MS = { RDONLY: 1, NOSUID: 2, NODEV: 4, NOEXEC: 8, REMOUNT: 32, BIND: 4096, REC: 16384 } as const;
const MNT_DETACH = 2;
/** Mount options that are flags of mount(2); every other option is the filesystem's (its data string). */
const FLAG_OPTIONS: Readonly<Record<string, number>> = {
  ro: MS.RDONLY,
  rw: 0,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
  bind: MS.BIND,
  rbind: MS.BIND | MS.REC,
};

interface KoffiFn {
  (...args: unknown[]): number;
  async(...args: unknown[]): void;
}

interface Libc {
  errno(): number;
  ioctl: KoffiFn;
  mount: KoffiFn;
  umount2: KoffiFn;
  syncfs: KoffiFn;
}

let libc: Libc | null = null;
let loadError: string | null = null;

function load(): Libc {
  if (libc) return libc;
  if (loadError === null) {
    try {
      const koffi = createRequire(import.meta.url)('koffi') as {
        load(path: string): { func(proto: string): KoffiFn };
        errno(): number;
      };
      const lib = koffi.load('libc.so.6');
      libc = {
        errno: () => koffi.errno(),
        ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
        mount: lib.func(
          'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)',
        ),
        umount2: lib.func('int umount2(const char *target, int flags)'),
        syncfs: lib.func('int syncfs(int fd)'),
      };
      return libc;
    } catch (e) {
      loadError = (e as Error).message;
    }
  }
  throw new DriverError('ERR_UNSUPPORTED', `the host backend needs libc's mount calls through koffi: ${loadError}`);
}

/** Why the host backend cannot make system calls here, or null when it can. */
export function syscallsUnavailable(): string | null {
  try {
    load();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

const ERRNO_CODES: Readonly<Record<string, DriverErrorCode>> = {
  EBUSY: 'ERR_LAYER_BUSY',
  ENOENT: 'ERR_NOT_FOUND',
  ENOTDIR: 'ERR_NOT_A_DIRECTORY',
  EINVAL: 'ERR_INVALID_ARGUMENT',
};

/** The error a failed call gives: `what: ENAME (text)`, coded by errno. */
function failure(what: string, errno: number): DriverError {
  const [name, text] = getSystemErrorMap().get(-errno) ?? [`errno ${errno}`, 'unknown error'];
  return new DriverError(ERRNO_CODES[name] ?? 'ERR_HOST_COMMAND', `${what}: ${name} (${text})`);
}

/** What mount(8) options mean to mount(2): the flags, and the rest joined as the filesystem's data. */
export function splitOptions(options: readonly string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_OPTIONS[o];
    if (f === undefined) data.push(o);
    else flags |= f;
  }
  return { flags, data: data.join(',') };
}

/**
 * mount(2) of `source` (a folder for a bind, a device, or the name of a virtual filesystem) at `target`.
 * A bind mount takes its flags (`ro`, `nodev`…) only on a second, remounting call, as mount(8) does.
 */
export function mountFs(source: string, target: string, fstype: string | null, options: readonly string[]): void {
  const c = load();
  const { flags, data } = splitOptions(options);
  const what = `mount ${fstype ?? 'bind'} ${source} on ${target}`;
  if (c.mount(source, target, fstype, flags, data || null) !== 0) throw failure(what, c.errno());
  if (flags & MS.BIND && flags & ~(MS.BIND | MS.REC)) {
    if (c.mount(null, target, null, flags | MS.REMOUNT, null) !== 0) {
      const e = failure(`${what} (remount ${options.join(',')})`, c.errno());
      c.umount2(target, MNT_DETACH);
      throw e;
    }
  }
}

/**
 * What `mount` argument vectors (as {@link unionMountArgs} builds them: `-t TYPE`, `-o OPTS`, `--bind`, then
 * source and target) ask of mount(2). Anything else is `ERR_INVALID_ARGUMENT`: this is not mount(8).
 */
export function parseMountArgv(argv: readonly string[]): {
  source: string;
  target: string;
  fstype: string | null;
  options: string[];
} {
  const args = argv[0] === 'mount' ? argv.slice(1) : [...argv];
  let fstype: string | null = null;
  const options: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-t' && i + 1 < args.length) fstype = args[++i]!;
    else if (a === '-o' && i + 1 < args.length) options.push(...args[++i]!.split(','));
    else if (a === '--bind') options.push('bind');
    else if (a.startsWith('-')) throw new DriverError('ERR_INVALID_ARGUMENT', `mount: ${a}: not an option we make`);
    else rest.push(a);
  }
  if (rest.length !== 2)
    throw new DriverError('ERR_INVALID_ARGUMENT', `mount ${args.join(' ')}: needs a source and a target`);
  return { source: rest[0]!, target: rest[1]!, fstype: options.includes('bind') ? null : fstype, options };
}

/**
 * Attaches `file` (its bytes from `offset`, `size` long) to a free loop device and mounts its `fstype` at
 * `target` with mount(8)-style `options`. The device clears itself when the filesystem is unmounted
 * (autoclear), as `mount -o loop` does. A device another process takes between our asking which is free and
 * configuring it is `EBUSY`: then the next free one.
 */
export async function loopMount(
  file: string,
  target: string,
  fstype: string,
  opts: { offset: number; size: number; readOnly: boolean; options: readonly string[] },
  signal?: AbortSignal,
): Promise<void> {
  const c = load();
  const fileFd = openSync(file, opts.readOnly ? constants.O_RDONLY : constants.O_RDWR);
  try {
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const { device, fd } = configureFreeLoop(c, file, fileFd, opts);
      if (fd === null) {
        if (attempt >= 20) throw failure(`attach ${file} to ${device}`, 16 /* EBUSY */);
        await sleep(attempt, undefined, { signal });
        continue;
      }
      try {
        mountFs(device, target, fstype, [...opts.options, opts.readOnly ? 'ro' : 'rw']);
        return;
      } finally {
        // Mounted, the filesystem holds the device; not mounted, this close clears it (autoclear).
        closeSync(fd);
      }
    }
  } finally {
    closeSync(fileFd);
  }
}

/** One try at a free loop device over `fileFd`: its path, and its open descriptor, or null when taken. */
function configureFreeLoop(
  c: Libc,
  file: string,
  fileFd: number,
  opts: { offset: number; size: number; readOnly: boolean },
): { device: string; fd: number | null } {
  const ctl = openSync('/dev/loop-control', constants.O_RDWR);
  let n: number;
  try {
    n = c.ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) throw failure('find a free loop device (/dev/loop-control)', c.errno());
  } finally {
    closeSync(ctl);
  }
  const device = `/dev/loop${n}`;
  const fd = openSync(device, opts.readOnly ? constants.O_RDONLY : constants.O_RDWR);
  const name = new Uint8Array(64);
  name.set(new TextEncoder().encode(file).subarray(-63));
  const info = LoopInfo64.encode({
    ...LoopInfo64.zero(),
    offset: opts.offset,
    sizeLimit: opts.size,
    flags: LO_FLAGS.AUTOCLEAR | (opts.readOnly ? LO_FLAGS.READ_ONLY : 0),
    fileName: name,
  });
  const config = LoopConfig.encode({ ...LoopConfig.zero(), fd: fileFd, info });
  if (c.ioctl(fd, LOOP_CONFIGURE, 'void *', config) === 0) return { device, fd };
  const errno = c.errno();
  closeSync(fd);
  if (errno === 16 /* EBUSY: another process took it */) return { device, fd: null };
  throw failure(`attach ${file} to ${device}`, errno);
}

/**
 * umount2(2) of `target`; `lazy` detaches it now and lets the kernel finish when nothing uses it. `flush`
 * first writes back what the kernel holds for its filesystem, on a worker thread (a sandbox a container
 * wrote to), so the unmount itself has little to do.
 */
export async function unmount(target: string, opts: { lazy?: boolean; flush?: boolean } = {}): Promise<void> {
  const c = load();
  if (opts.flush) {
    let fd: number | null = null;
    try {
      fd = openSync(target, constants.O_RDONLY | constants.O_DIRECTORY);
      const f = fd;
      await new Promise<void>((resolve) => c.syncfs.async(f, () => resolve()));
    } catch {
      // Not a folder we can open: the unmount below says what is wrong.
    } finally {
      if (fd !== null) closeSync(fd);
    }
  }
  if (c.umount2(target, opts.lazy ? MNT_DETACH : 0) !== 0) throw failure(`umount ${target}`, c.errno());
}

/**
 * The loop devices (`/dev/loopN`) backed by `file`, from the kernel's own tables — what `losetup -j` answers,
 * without opening every device. `/proc/partitions` lists the loop devices that are bound (the unbound ones
 * a machine accumulates, hundreds here, cost 30 µs each to look at in sysfs); each one's backing file is in
 * sysfs. A file deleted since shows as `PATH (deleted)` there and is not `file` any more.
 */
export async function loopsOf(file: string): Promise<string[]> {
  const path = await realpath(file).catch(() => null);
  if (path === null) return [];
  const table = await readFile('/proc/partitions', 'utf8');
  const names = table
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[3] ?? '')
    .filter((n) => /^loop\d+$/.test(n));
  const out: string[] = [];
  await Promise.all(
    names.map(async (n) => {
      const backing = await readFile(`/sys/block/${n}/loop/backing_file`, 'utf8').catch(() => null);
      if (backing !== null && backing.replace(/\n$/, '') === path) out.push(`/dev/${n}`);
    }),
  );
  return out.sort();
}
