// The `host` backend: on Linux as root, the host kernel plays the service VM. A "guest path" such as
// `/tmp/d3` is a folder under this VM's run directory; a disk is a loop mount of the ext4 payload in its
// file (the footer of `layer.vhd` hidden by a size limit, a sandbox's VHDX payload by an offset); a union is
// an overlayfs mount with `upper/` and `work/` in the sandbox. The filesystem `get()` returns is the real
// host directory of the union.
import { createHash } from 'node:crypto';
import { mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { Ext4Fs, exportTar } from '@lcow/ext4';
import type { MappedDisk, UtilityVm } from '@lcow/svm-pool';
import { DriverError } from '../errors.ts';
import { diskPayload, mountsUnder, runTool } from './host-tools.ts';

/** The run directory of one data root: short, so 50 overlay lower paths fit in one page of mount options. */
export function hostRunDir(dataRoot: string): string {
  return join('/run/lcow', createHash('sha256').update(dataRoot).digest('hex').slice(0, 8));
}

/** Whether this process can use the host backend: Linux, root, and the mount tools. */
export function hostBackendAvailable(): { ok: boolean; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `the host backend needs Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the host backend needs root (loop devices, mounts)' };
  return { ok: true, reason: '' };
}

/**
 * Unmounts everything a previous process left under `runDir` (it was killed with its layers mounted),
 * deepest first; loop devices made by `mount -o loop` are freed with their mounts. Returns what it unmounted.
 */
export async function unmountStale(runDir: string): Promise<string[]> {
  const gone: string[] = [];
  for (const m of await mountsUnder(runDir)) {
    await runTool('umount', [m]).catch(() => runTool('umount', ['-l', m]));
    gone.push(m);
  }
  // Never delete through a mount that is still there.
  if ((await mountsUnder(runDir)).length === 0) await rm(runDir, { recursive: true, force: true });
  return gone;
}

let vmCounter = 0;

export class HostVm implements UtilityVm {
  readonly id: string;
  /** The host folder that plays the VM's `/`. */
  readonly root: string;
  readonly #disks = new Map<string, MappedDisk>();
  readonly #mounts = new Set<string>();

  private constructor(id: string, root: string) {
    this.id = id;
    this.root = root;
  }

  /**
   * "Boots" a VM: a fresh folder under `runDir`, named by process and counter (short, and never one that
   * another process's mounts live in).
   */
  static async start(id: string, runDir: string): Promise<HostVm> {
    const ok = hostBackendAvailable();
    if (!ok.ok) throw new DriverError('ERR_UNSUPPORTED', ok.reason);
    const root = join(runDir, `${process.pid.toString(36)}.${(++vmCounter).toString(36)}`);
    if ((await mountsUnder(root)).length > 0)
      throw new DriverError('ERR_LAYER_BUSY', `${root}: still has mounts of an earlier process; run cleanup`);
    await rm(root, { recursive: true, force: true });
    await mkdir(join(root, 'tmp'), { recursive: true });
    return new HostVm(id, root);
  }

  /** The host path of a guest path. */
  hostPath(guestPath: string): string {
    if (!guestPath.startsWith('/') || guestPath.split('/').includes('..'))
      throw new DriverError('ERR_INVALID_ARGUMENT', `${guestPath}: not an absolute guest path`);
    return join(this.root, guestPath);
  }

  async hotAdd(disk: MappedDisk, signal?: AbortSignal): Promise<void> {
    const dir = this.hostPath(disk.guestPath);
    // A writable ext4 mounted twice (through two loop devices) would be corrupted: another process holds it.
    if (!disk.readOnly && (await runTool('losetup', ['-j', disk.hostPath], signal)).trim() !== '')
      throw new DriverError(
        'ERR_LAYER_BUSY',
        `${disk.hostPath}: already attached to a loop device (mounted by another lcow process? \`lcow unmount\` or cleanup)`,
      );
    const { offset, size } = await diskPayload(disk.hostPath);
    await mkdir(dir, { recursive: true });
    const opts = [`loop`, `offset=${offset}`, `sizelimit=${size}`, disk.readOnly ? 'ro' : 'rw'];
    try {
      await runTool('mount', ['-t', 'ext4', '-o', opts.join(','), disk.hostPath, dir], signal);
    } catch (e) {
      await rmdir(dir).catch(() => {});
      throw e;
    }
    this.#disks.set(disk.guestPath, disk);
  }

  async hotRemove(disk: MappedDisk): Promise<void> {
    const dir = this.hostPath(disk.guestPath);
    await runTool('umount', [dir]);
    this.#disks.delete(disk.guestPath);
    await rmdir(dir).catch(() => {});
  }

  /**
   * overlayfs with `redirect_dir` and `metacopy` off, so that every change lands in `upper/` in the form
   * an OCI diff can carry (a renamed lower directory is copied, not redirected); a bind mount for a
   * single read-only layer or a sandbox without parents.
   */
  async mountUnion(target: string, lowers: readonly string[], upper?: string, signal?: AbortSignal): Promise<void> {
    const t = this.hostPath(target);
    await mkdir(t, { recursive: true });
    const host = lowers.map((l) => this.hostPath(l));
    let args: string[];
    if (upper) {
      const u = this.hostPath(upper);
      await mkdir(join(u, 'upper'), { recursive: true, mode: 0o755 });
      await mkdir(join(u, 'work'), { recursive: true, mode: 0o700 });
      args =
        host.length === 0
          ? ['--bind', join(u, 'upper'), t]
          : [
              '-t',
              'overlay',
              'overlay',
              '-o',
              [
                `lowerdir=${host.map(escapeOption).join(':')}`,
                `upperdir=${escapeOption(join(u, 'upper'))}`,
                `workdir=${escapeOption(join(u, 'work'))}`,
                'redirect_dir=off',
                'metacopy=off',
              ].join(','),
              t,
            ];
    } else if (host.length === 1) args = ['-o', 'bind,ro', host[0]!, t];
    else if (host.length > 1)
      args = ['-t', 'overlay', 'overlay', '-o', `lowerdir=${host.map(escapeOption).join(':')}`, t];
    else throw new DriverError('ERR_INVALID_ARGUMENT', `mount ${target}: needs at least one layer`);
    try {
      await runTool('mount', args, signal);
    } catch (e) {
      await rmdir(t).catch(() => {});
      throw e;
    }
    this.#mounts.add(target);
  }

  async unmount(target: string): Promise<void> {
    const t = this.hostPath(target);
    await runTool('umount', [t]);
    this.#mounts.delete(target);
    await rmdir(t).catch(() => {});
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
    for (const m of await mountsUnder(this.root))
      await runTool('umount', [m]).catch((e: unknown) => void (first ??= e));
    this.#mounts.clear();
    this.#disks.clear();
    if (first) throw first;
    // Never delete through a mount that is still there.
    if ((await mountsUnder(this.root)).length === 0) await rm(this.root, { recursive: true, force: true });
  }
}

/** overlayfs option values escape `\`, `:` and `,` cannot be passed at all. */
function escapeOption(p: string): string {
  if (p.includes(',')) throw new DriverError('ERR_INVALID_ARGUMENT', `${p}: a comma cannot be passed in mount options`);
  return p.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
}

/**
 * Unmounts a union another process left mounted on purpose (`lcow mount`): the folder of the VM whose
 * `target` it is, every mount in it deepest first. Returns false when no such union is mounted.
 */
export async function unmountDetached(runDir: string, target: string): Promise<boolean> {
  const hit = (await mountsUnder(runDir)).find((m) => m.endsWith(target));
  if (!hit) return false;
  const vmRoot = hit.slice(0, hit.length - target.length);
  for (const m of await mountsUnder(vmRoot)) await runTool('umount', [m]);
  if ((await mountsUnder(vmRoot)).length === 0) await rm(vmRoot, { recursive: true, force: true });
  return true;
}
