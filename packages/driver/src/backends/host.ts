// The `host` backend: on Linux as root, the host kernel plays the service VM. A "guest path" such as
// `/tmp/d3` is a folder under this VM's run directory; a disk is a loop mount of the ext4 payload in its
// file (the footer of `layer.vhd` hidden by a size limit, a sandbox's VHDX payload by an offset); a union is
// an overlayfs mount with `upper/` and `work/` in the sandbox. The filesystem `get()` returns is the real
// host directory of the union.
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ext4Fs, exportTar, isOverlayWhiteout, SYNTHETIC_LOST_FOUND } from '@lcow/ext4';
import { unionMountArgs, type MappedDisk, type UtilityVm } from '@lcow/svm-pool';
import { DriverError } from '../errors.ts';
import { runTool } from '../run-tool.ts';
import { diskPayload, mountsUnder } from './host-tools.ts';
import { loopMount, loopsOf, mountFs, parseMountArgv, syscallsUnavailable, unmount } from './linux.ts';

/** Where every data root's mounts live: only root may enter it (0700), so no user reaches a layer's files. */
export const HOST_RUN_BASE = '/run/lcow';

/** The run directory of one data root: short, so 50 overlay lower paths fit in one page of mount options. */
export function hostRunDir(dataRoot: string): string {
  return join(HOST_RUN_BASE, createHash('sha256').update(dataRoot).digest('hex').slice(0, 8));
}

/**
 * Creates (or repairs) the run directories as 0700, owned by root, and refuses them when they are not
 * plain directories (a link planted there would put our mounts where its author chose).
 */
export async function ensureRunDir(runDir: string): Promise<void> {
  for (const d of [HOST_RUN_BASE, runDir]) {
    await mkdir(d, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    const st = await lstat(d);
    if (!st.isDirectory() || st.uid !== 0)
      throw new DriverError('ERR_UNSUPPORTED', `${d}: not a directory owned by root; remove it and try again`);
    if ((st.mode & 0o777) !== 0o700) await chmod(d, 0o700);
  }
}

/**
 * Mount flags. `nodev` everywhere: a device node in a layer never opens a host device. `nosuid` everywhere
 * too, except on the mounts of a container's root that the driver hands to a runtime (`suid`), where an
 * image's setuid programs must work as they do on overlay2; those stay reachable by root only (0700).
 */
function mountFlags(suid: boolean): string[] {
  return suid ? ['nodev'] : ['nodev', 'nosuid'];
}

/** Whether this process can use the host backend: Linux, root, and the mount tools. */
export function hostBackendAvailable(): { ok: boolean; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `the host backend needs Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the host backend needs root (loop devices, mounts)' };
  const why = syscallsUnavailable();
  return why === null ? { ok: true, reason: '' } : { ok: false, reason: why };
}

/** Where the unions live: one folder per layer id, the same for every process (dockerd needs that). */
const UNIONS = 'u';
/** `o/<id>`: the VM folder whose disks the union at `u/<id>` reads. */
const OWNERS = 'o';

/** The VM folder name (`<pid base 36>.<n>`) that owns the union of `id`, or null. */
async function unionOwner(runDir: string, id: string): Promise<string | null> {
  return readFile(join(runDir, OWNERS, id), 'utf8').then(
    (t) => t.trim() || null,
    () => null,
  );
}

/** Whether the process that named VM folder `vm` (`<pid base 36>.<n>`) is gone; never true for this process. */
function vmGone(vm: string): boolean {
  const pid = parseInt(vm.split('.')[0] ?? '', 36);
  return pid !== process.pid && !processAlive(pid);
}

/**
 * Unmounts what processes that are gone left under `runDir` (they were killed with layers mounted): their
 * unions first, then their disks; loop devices made by `mount -o loop` are freed with their mounts. A
 * live process's mounts (another daemon, a command at work) stay. Returns what it unmounted.
 */
export async function unmountStale(runDir: string): Promise<string[]> {
  const gone: string[] = [];
  const unions = join(runDir, UNIONS);
  for (const m of await mountsUnder(unions)) {
    const id = m.slice(unions.length + 1);
    const owner = await unionOwner(runDir, id);
    // This process's own unions count as left over too: cleanup has already released what it holds.
    const mine = owner?.startsWith(`${process.pid.toString(36)}.`) ?? false;
    if (owner !== null && !mine && !vmGone(owner)) continue;
    await unmount(m).catch(() => unmount(m, { lazy: true }));
    await rm(join(runDir, OWNERS, id), { force: true });
    await rmdir(m).catch(() => {});
    gone.push(m);
  }
  for (const m of await mountsUnder(runDir)) {
    const vm = m.slice(runDir.length + 1).split('/')[0] ?? '';
    if (vm === UNIONS || !vmGone(vm)) continue;
    await unmount(m).catch(() => unmount(m, { lazy: true }));
    gone.push(m);
  }
  // Never delete through a mount that is still there.
  if ((await mountsUnder(runDir)).length === 0) await rm(runDir, { recursive: true, force: true });
  return gone;
}

/** Whether process `pid` exists (a pid that is not a number never does). */
function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let vmCounter = 0;

export class HostVm implements UtilityVm {
  readonly id: string;
  /** The host folder that plays the VM's `/`. */
  readonly root: string;
  readonly #disks = new Map<string, MappedDisk>();
  readonly #mounts = new Set<string>();
  readonly #suid: boolean;
  readonly #runDir: string;
  /** Unions mounted in this VM's own folder because another live process holds the shared one. */
  readonly #unionPaths = new Map<string, string>();

  private constructor(id: string, root: string, runDir: string, suid: boolean) {
    this.id = id;
    this.root = root;
    this.#runDir = runDir;
    this.#suid = suid;
  }

  /**
   * "Boots" a VM: a fresh folder under `runDir`, named by process and counter (short, and never one that
   * another process's mounts live in).
   */
  static async start(id: string, runDir: string, opts: { suid?: boolean } = {}): Promise<HostVm> {
    const ok = hostBackendAvailable();
    if (!ok.ok) throw new DriverError('ERR_UNSUPPORTED', ok.reason);
    await ensureRunDir(runDir);
    const root = join(runDir, `${process.pid.toString(36)}.${(++vmCounter).toString(36)}`);
    if ((await mountsUnder(root)).length > 0)
      throw new DriverError('ERR_LAYER_BUSY', `${root}: still has mounts of an earlier process; run cleanup`);
    await rm(root, { recursive: true, force: true });
    await mkdir(join(root, 'tmp'), { recursive: true });
    await mkdir(join(runDir, UNIONS), { recursive: true, mode: 0o700 });
    await mkdir(join(runDir, OWNERS), { recursive: true, mode: 0o700 });
    return new HostVm(id, root, runDir, opts.suid ?? false);
  }

  /**
   * The host path of a guest path. A union (`/tmp/<id>-mount`) lives at `<runDir>/u/<id>`, the same folder
   * whichever process or VM mounts it (dockerd refuses a container whose root moves); disks live in the
   * VM's own folder.
   */
  hostPath(guestPath: string): string {
    if (!guestPath.startsWith('/') || guestPath.split('/').includes('..'))
      throw new DriverError('ERR_INVALID_ARGUMENT', `${guestPath}: not an absolute guest path`);
    const chosen = this.#unionPaths.get(guestPath);
    if (chosen) return chosen;
    const union = unionId(guestPath);
    return union === null ? join(this.root, guestPath) : join(this.#runDir, UNIONS, union);
  }

  async hotAdd(disk: MappedDisk, signal?: AbortSignal): Promise<void> {
    const dir = this.hostPath(disk.guestPath);
    // A writable ext4 mounted twice (through two loop devices) would be corrupted: another process holds it —
    // unless that process is gone, killed while it let the sandbox go (between the union's unmount and the
    // disk's): then the disk is mounted in its folder, where no union reads it and nobody will adopt it.
    if (!disk.readOnly && (await loopsOf(disk.hostPath)).length > 0) {
      await unmountOrphanDisks(this.#runDir);
      if (await stillAttached(disk.hostPath, signal))
        throw new DriverError(
          'ERR_LAYER_BUSY',
          `${disk.hostPath}: already attached to a loop device (mounted by another lcow process? \`lcow unmount\` or cleanup)`,
        );
    }
    const { offset, size } = await diskPayload(disk.hostPath);
    await mkdir(dir, { recursive: true });
    try {
      const options = mountFlags(this.#suid);
      await loopMount(disk.hostPath, dir, 'ext4', { offset, size, readOnly: disk.readOnly, options }, signal);
    } catch (e) {
      await rmdir(dir).catch(() => {});
      throw e;
    }
    this.#disks.set(disk.guestPath, disk);
  }

  async hotRemove(disk: MappedDisk): Promise<void> {
    const dir = this.hostPath(disk.guestPath);
    await unmount(dir, { flush: !disk.readOnly });
    this.#disks.delete(disk.guestPath);
    await rmdir(dir).catch(() => {});
  }

  /**
   * overlayfs with `redirect_dir` and `metacopy` off, so that every change lands in `upper/` in the form
   * an OCI diff can carry (a renamed lower directory is copied, not redirected); a bind mount for a
   * single read-only layer or a sandbox without parents.
   */
  async mountUnion(target: string, lowers: readonly string[], upper?: string, signal?: AbortSignal): Promise<void> {
    let union = unionId(target);
    let t = this.hostPath(target);
    if (union !== null && (await mountsUnder(t)).length > 0) {
      // Another live process has this layer's union (two commands reading one layer): this one gets its
      // own, in the VM's folder. Only a daemon needs the shared, stable folder, and it is alone.
      t = join(this.root, target);
      this.#unionPaths.set(target, t);
      union = null;
    }
    await mkdir(t, { recursive: true });
    const host = lowers.map((l) => this.hostPath(l));
    if (!upper && host.length === 0)
      throw new DriverError('ERR_INVALID_ARGUMENT', `mount ${target}: needs at least one layer`);
    const flags = mountFlags(this.#suid);
    // The lost+found our layers keep for e2fsck alone is whited out above them: not in the container's root.
    if (await this.#hidesLostFound(lowers)) host.unshift(await lostFoundMask(this.#runDir));
    let u: string | undefined;
    if (upper) {
      u = this.hostPath(upper);
      await mkdir(join(u, 'upper'), { recursive: true, mode: 0o755 });
      await mkdir(join(u, 'work'), { recursive: true, mode: 0o700 });
    }
    // Overlay with an upper layer: no redirects or metadata-only copies, which a later reader of the sandbox
    // (another kernel, the export) would have to understand.
    const extra = u && host.length > 0 ? ['redirect_dir=off', 'metacopy=off', ...flags] : flags;
    let args = unionMountArgs(t, host, u, extra).slice(1);
    let cwd: string | undefined;
    if (args.join(',').length > MOUNT_DATA_MAX) {
      // mount(2) takes one page of options: a deep chain's folders are named from the VM folder, where
      // the mount runs (overlayfs resolves them from the caller's working directory, as Docker's overlay2
      // does). unmountDetached reads them back from the same place.
      const rel = (p: string): string => relative(this.root, p);
      args = unionMountArgs(t, host.map(rel), u === undefined ? undefined : rel(u), extra).slice(1);
      cwd = this.root;
    }
    if (union !== null) await writeFile(join(this.#runDir, OWNERS, union), basename(this.root));
    try {
      if (cwd) await runTool('mount', args, signal, { cwd });
      else {
        const m = parseMountArgv(args);
        mountFs(m.source, m.target, m.fstype, m.options);
      }
    } catch (e) {
      await rmdir(t).catch(() => {});
      if (union !== null) await rm(join(this.#runDir, OWNERS, union), { force: true });
      this.#unionPaths.delete(target);
      throw e;
    }
    this.#mounts.add(target);
  }

  /**
   * Whether `/lost+found` of the union of `lowers` (top first) would be only directories our writer made for
   * e2fsck (marked, empty): then the union must not show it. Anything else there — the image's own
   * lost+found, a file — is shown as the layers have it.
   */
  async #hidesLostFound(lowers: readonly string[]): Promise<boolean> {
    let seen = false;
    for (const l of lowers) {
      const st = await lstat(join(this.hostPath(l), 'lost+found')).catch(() => null);
      if (!st) continue;
      if (isOverlayWhiteout(st)) break; // whited out from here down
      // A layer disk's own root can hold a marked one; any other folder (a sandbox's upper/) cannot.
      const disk = this.#disks.get(l);
      if (!disk || !st.isDirectory() || !(await syntheticLostFound(disk.hostPath))) return false;
      if ((await readdir(join(this.hostPath(l), 'lost+found'))).length > 0) return false;
      seen = true;
    }
    return seen;
  }

  async unmount(target: string): Promise<void> {
    const t = this.hostPath(target);
    await unmount(t);
    this.#mounts.delete(target);
    await rmdir(t).catch(() => {});
    const shared = !this.#unionPaths.delete(target);
    const union = unionId(target);
    if (union !== null && shared) await rm(join(this.#runDir, OWNERS, union), { force: true });
  }

  /**
   * A tar of a disk, read from its image with `@lcow/ext4` after the kernel has written back what it holds
   * (syncfs): consistent for a sandbox nobody writes to at that moment, which is what `diff` of a mounted
   * container sees on the original too.
   */
  exportTar(guestPath: string, opts: { sandbox: boolean; signal?: AbortSignal }): Readable {
    const disk = this.#disks.get(guestPath);
    const out = new PassThrough();
    if (!disk) {
      out.destroy(new DriverError('ERR_NOT_FOUND', `${guestPath}: no disk mounted there`));
      return out;
    }
    void (async () => {
      if (!disk.readOnly) await runTool('sync', ['-f', this.hostPath(guestPath)]);
      const fs = await Ext4Fs.open(disk.hostPath, { checksums: 'warn' });
      const tar = exportTar(fs, { root: opts.sandbox ? 'upper' : '/', signal: opts.signal });
      tar.on('close', () => void fs.close());
      tar.on('error', (e) => out.destroy(e));
      tar.pipe(out);
    })().catch((e: unknown) => out.destroy(e as Error));
    return out;
  }

  /** Unmounts every union, then every disk, then removes the VM's folder. */
  async terminate(): Promise<void> {
    let first: unknown = null;
    for (const target of [...this.#mounts]) await this.unmount(target).catch((e: unknown) => void (first ??= e));
    for (const m of await mountsUnder(this.root)) await unmount(m).catch((e: unknown) => void (first ??= e));
    this.#mounts.clear();
    this.#disks.clear();
    if (first) throw first;
    // Never delete through a mount that is still there.
    if ((await mountsUnder(this.root)).length === 0) await rm(this.root, { recursive: true, force: true });
  }
}

/** Longest overlay options given with absolute folders: mount(2) copies one 4 KiB page, keep a margin. */
const MOUNT_DATA_MAX = 3500;

/** The layer id of a union's guest path `/tmp/<id>-mount`, or null for any other path. */
function unionId(guestPath: string): string | null {
  const m = /^\/tmp\/(.+)-mount$/.exec(guestPath);
  return m && !m[1]!.includes('/') ? m[1]! : null;
}

/**
 * The host folder of a union at `target` that a process which is gone left mounted, or null. A live
 * process's unions are its own.
 */
export async function findDetached(runDir: string, target: string): Promise<string | null> {
  const id = unionId(target);
  if (id === null) return null;
  const path = join(runDir, UNIONS, id);
  if (!(await mountsUnder(path)).includes(path)) return null;
  const owner = await unionOwner(runDir, id);
  return owner === null || vmGone(owner) ? path : null;
}

/** The layers with a union mounted under `runDir`, whichever process mounted it. */
export async function mountedUnions(runDir: string): Promise<string[]> {
  const base = join(runDir, UNIONS);
  const ids = (await mountsUnder(base)).filter((p) => dirname(p) === base).map((p) => basename(p));
  return [...new Set(ids)];
}

/**
 * Unmounts a union another process left mounted (`lcow mount`, or a plugin process that was restarted
 * while its containers ran): that union, then the disks of its VM folder that no other union still reads
 * — the other unions of a process that is gone stay, for their own `put`. Returns false when no such union
 * is mounted.
 */
export async function unmountDetached(runDir: string, target: string): Promise<boolean> {
  const id = unionId(target);
  if (id === null) return false;
  const path = join(runDir, UNIONS, id);
  if (!(await mountsUnder(path)).includes(path)) return false;
  const owner = await unionOwner(runDir, id);
  await unmount(path);
  await rmdir(path).catch(() => {});
  await rm(join(runDir, OWNERS, id), { force: true });
  if (owner === null) return true;
  await unmountUnusedDisks(runDir, owner);
  return true;
}

/**
 * Unmounts the disks of gone processes' VM folders that no union reads — a killed process's lingering
 * layer disks, which nobody would ever adopt. Their unions' disks stay, for those unions' own `put`.
 */
export async function unmountOrphanDisks(runDir: string): Promise<void> {
  const owners = new Set<string>();
  for (const m of await mountsUnder(runDir)) {
    const vm = m.slice(runDir.length + 1).split('/')[0] ?? '';
    if (vm !== UNIONS && vmGone(vm)) owners.add(vm);
  }
  for (const owner of owners) await unmountUnusedDisks(runDir, owner);
}

/** Unmounts the disks of VM folder `owner` that no union (in it, or in `u/` owned by it) reads. */
async function unmountUnusedDisks(runDir: string, owner: string): Promise<void> {
  const vmRoot = join(runDir, owner);
  const inVm = await mountTable(vmRoot);
  const disks = inVm.filter((m) => /\/tmp\/d[0-9]+$/.test(m.target));
  const unions = [...inVm.filter((m) => !disks.includes(m))];
  for (const u of await mountTable(join(runDir, UNIONS)))
    if ((await unionOwner(runDir, u.target.slice(join(runDir, UNIONS).length + 1))) === owner) unions.push(u);
  const used = new Set<string>();
  for (const u of unions) {
    // A deep chain's union names its folders from the VM folder (mountUnion).
    const folders = u.options.map((p) => resolve(vmRoot, p));
    for (const d of disks)
      if (u.device === d.device || folders.some((p) => p === d.target || p.startsWith(`${d.target}/`)))
        used.add(d.target);
  }
  for (const d of disks) {
    if (used.has(d.target)) continue;
    await unmount(d.target);
    await rmdir(d.target).catch(() => {});
  }
  if ((await mountsUnder(vmRoot)).length === 0) await rm(vmRoot, { recursive: true, force: true });
}

/** Layer files whose lost+found our writer marked as its own, by file identity (layers never change). */
const syntheticCache = new Map<string, boolean>();

async function syntheticLostFound(file: string): Promise<boolean> {
  const st = await stat(file);
  const key = `${file}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  let known = syntheticCache.get(key);
  if (known === undefined) {
    const fs = await Ext4Fs.open(file);
    try {
      const v = (await fs.listXattrs('/lost+found')).get(SYNTHETIC_LOST_FOUND.name);
      known = v !== undefined && Buffer.from(v).toString() === SYNTHETIC_LOST_FOUND.value;
    } finally {
      await fs.close();
    }
    if (syntheticCache.size > 4096) syntheticCache.clear();
    syntheticCache.set(key, known);
  }
  return known;
}

/**
 * `<runDir>/mask`: a layer holding only a whiteout of `lost+found` (a 0:0 character device), put on top of
 * a union's image layers to hide theirs. Made once, complete before its name appears.
 */
async function lostFoundMask(runDir: string): Promise<string> {
  const mask = join(runDir, 'mask');
  const st = await lstat(join(mask, 'lost+found')).catch(() => null);
  if (st && isOverlayWhiteout(st)) return mask;
  const tmp = join(runDir, `.mask-${process.pid}-${Date.now()}`);
  await mkdir(tmp, { mode: 0o755 });
  try {
    await runTool('mknod', ['-m', '000', join(tmp, 'lost+found'), 'c', '0', '0']);
    // Never replaced once there: unions of other processes may be using it.
    await rename(tmp, mask).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') throw e;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const made = await lstat(join(mask, 'lost+found')).catch(() => null);
  if (!made?.isCharacterDevice() || made.rdev !== 0)
    throw new DriverError('ERR_UNSUPPORTED', `${mask}: not the lost+found mask lcow makes; remove it and try again`);
  return mask;
}

/** A mount under some folder: where, from which device, and the folders its options name (overlay layers). */
interface MountRow {
  target: string;
  device: string;
  options: string[];
}

async function mountTable(prefix: string): Promise<MountRow[]> {
  const decode = (x: string): string =>
    x.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const rows: MountRow[] = [];
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const f = line.split(' ');
    const target = f[4] === undefined ? '' : decode(f[4]);
    if (!target.startsWith(`${prefix}/`)) continue;
    const dash = f.indexOf('-');
    const superOpts = decode(f[dash + 3] ?? '');
    // lowerdir=a:b,upperdir=c,workdir=d — our paths escape ":" as "\\:" and never hold ",".
    const folders = superOpts
      .split(',')
      .filter((o) => /^(lowerdir|upperdir|workdir)=/.test(o))
      .flatMap((o) => o.slice(o.indexOf('=') + 1).split(/(?<!\\):/))
      .map((p) => p.replace(/\\(.)/g, '$1'));
    rows.push({ target, device: f[2] ?? '', options: folders });
  }
  return rows;
}

/**
 * After an unmount, a loop device stays bound to its file until the last process that has it open closes it
 * (`losetup -a` or `-j`, anywhere on the machine, opens every device): a few milliseconds in which the file
 * looks attached. So: attached means still attached after a short wait.
 */
async function stillAttached(file: string, signal?: AbortSignal): Promise<boolean> {
  for (let wait = 20; ; wait *= 2) {
    if ((await loopsOf(file)).length === 0) return false;
    if (wait > 640) return true;
    await sleep(wait, undefined, { signal });
  }
}
