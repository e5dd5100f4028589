// What the driver needs of a backend beyond svm-pool's UtilityVm: how to start one, and what filesystem
// `get()` hands out for a union mounted in it.
import type { UtilityVm } from '@lcow/svm-pool';
import { DriverError } from '../errors.ts';
import type { ContainerFs } from '../fs/types.ts';
import { HostFs } from '../fs/host-fs.ts';
import { UnionFs } from '../fs/union-fs.ts';
import type { BackendName } from '../options.ts';
import {
  HostVm,
  findDetached,
  hostBackendAvailable,
  hostRunDir,
  mountedUnions,
  unmountDetached,
  unmountOrphanDisks,
  unmountStale,
} from './host.ts';
import { diskPayload, loopAttached, syncMountsOf } from './host-tools.ts';
import { InprocVm } from './inproc.ts';

export interface Backend {
  readonly name: BackendName;
  /** Whether `get()` gives a writable filesystem (and empty layers get a sandbox on first use). */
  readonly writable: boolean;
  /** One VM serves every layer (the host kernel, this process), whatever `lcow.globalmode` says. */
  readonly singleVm: boolean;
  /** Disks of one `get` hot-added at once (host mounts go in parallel; Hyper-V's SCSI adds one by one). */
  readonly attachConcurrency: number;
  /** Deadline of each VM operation (start, hot-add, mount…); default the pool's 300 s. */
  readonly timeoutMs?: number;
  /** The sandbox VHDX it works with by default; `fixed` when it can work with no other (a loop mount). */
  readonly sandboxType: 'dynamic' | 'fixed';
  /** Whether a `dynamic` sandbox works here (the host's loop mount needs one contiguous payload). */
  readonly dynamicSandboxes: boolean;
  /**
   * A disk attached writable is locked by the VM (Hyper-V): the host cannot read it then, and the driver
   * reads such a sandbox through the guest ({@link UtilityVm.exportTar}, {@link Backend.guestFs}).
   */
  readonly lockedWhileAttached?: boolean;
  start(vmId: string, signal: AbortSignal): Promise<UtilityVm>;
  containerFs(vm: UtilityVm, target: string, readOnly: boolean): ContainerFs;
  /** The files under guest path `root` of a VM (a disk's own mount), where {@link lockedWhileAttached}. */
  guestFs?(vm: UtilityVm, root: string): ContainerFs;
  /** The filesystem of a union found mounted at host folder `path` (see {@link Backend.adopt}). */
  containerFsAt(path: string): ContainerFs;
  /** The host folder of a union at guest path `target` that a process now gone left mounted, or null. */
  adopt(target: string): Promise<string | null>;
  /** Makes what a writable mount of a disk holds visible in its file (before the reader opens it). */
  flush(hostPath: string): Promise<void>;
  /**
   * Learns what attaching a disk just made needs (the host: where its payload lies), ahead of the attach
   * a container start waits for.
   */
  prepareDisk?(hostPath: string): Promise<void>;
  /** Whether any process of this machine has the disk file attached (the host's own view). */
  inUse(hostPath: string): Promise<boolean>;
  /** Lets go of disks that processes now gone left attached with no union reading them. */
  releaseOrphans(): Promise<void>;
  /** At init and cleanup: what a killed process left mounted. */
  recover(): Promise<string[]>;
  /** Unmounts a union that another process mounted and left (`lcow mount`); false if there is none. */
  unmountDetached(target: string): Promise<boolean>;
  /**
   * The layers whose union is mounted now, by any process on this data root (what the kernel says), for a
   * status that counts what is there, not what this process has seen (a restarted plugin adopts a union
   * only at its next `get`). Absent where unions live in a VM that only this process knows.
   */
  mountedUnions?(): Promise<string[]>;
}

/**
 * `suid`: the unions are containers' roots handed to a runtime (the Docker plugin), where setuid programs
 * must work; otherwise (the `lcow` command, tools) every mount is `nosuid`. Always `nodev`.
 */
export function hostBackend(dataRoot: string, opts: { suid?: boolean } = {}): Backend {
  const runDir = hostRunDir(dataRoot);
  return {
    name: 'host',
    writable: true,
    singleVm: true,
    attachConcurrency: 8,
    sandboxType: 'fixed',
    dynamicSandboxes: false,
    start: (vmId) => HostVm.start(vmId, runDir, opts),
    containerFs: (vm, target) => new HostFs((vm as HostVm).hostPath(target)),
    containerFsAt: (path) => new HostFs(path),
    adopt: (target) => findDetached(runDir, target),
    flush: (hostPath) => syncMountsOf(hostPath),
    prepareDisk: async (hostPath) => void (await diskPayload(hostPath)),
    inUse: (hostPath) => loopAttached(hostPath),
    releaseOrphans: () => unmountOrphanDisks(runDir),
    recover: () => unmountStale(runDir),
    unmountDetached: (target) => unmountDetached(runDir, target),
    mountedUnions: () => mountedUnions(runDir),
  };
}

export function inprocBackend(): Backend {
  return {
    name: 'inproc',
    writable: false,
    singleVm: true,
    attachConcurrency: 8,
    sandboxType: 'fixed',
    dynamicSandboxes: true,
    start: async (vmId) => new InprocVm(vmId),
    containerFs: (vm, target) => new UnionFs((vm as InprocVm).union(target)),
    containerFsAt: () => unsupportedBackend('inproc', 'has no host folders'),
    adopt: async () => null,
    flush: async () => {},
    inUse: async () => false,
    releaseOrphans: async () => {},
    recover: async () => [],
    unmountDetached: async () => false,
  };
}

/** `lcow.backend`, or the platform's default: hcs on Windows, host on Linux as root, else inproc. */
export function defaultBackend(): BackendName {
  if (process.platform === 'win32') return 'hcs';
  return hostBackendAvailable().ok ? 'host' : 'inproc';
}

export function unsupportedBackend(name: BackendName, why: string): never {
  throw new DriverError('ERR_UNSUPPORTED', `backend ${name}: ${why}`);
}
