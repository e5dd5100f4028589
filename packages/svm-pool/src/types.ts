import type { Readable } from 'node:stream';

/** A disk attached to a service VM. */
export interface MappedDisk {
  /** Path of the VHD/VHDX on the host. */
  hostPath: string;
  /** Where the disk is mounted inside the VM (`/tmp/d<n>`, or `/tmp/scratch`). */
  guestPath: string;
  readOnly: boolean;
}

/**
 * One running service VM, as the pool drives it. Three backends implement it in `@lcow/driver`: `hcs`
 * (a Hyper-V utility VM), `host` (the Linux kernel itself) and `inproc` (a read-only in-process reader).
 */
export interface UtilityVm {
  readonly id: string;
  /** Attaches the disk and mounts it at `disk.guestPath`. */
  hotAdd(disk: MappedDisk, signal?: AbortSignal): Promise<void>;
  hotRemove(disk: MappedDisk, signal?: AbortSignal): Promise<void>;
  /** Mounts `lowers` (nearest first) with an optional writable `upper` at `target`: overlay, or a bind for one layer. */
  mountUnion(target: string, lowers: readonly string[], upper?: string, signal?: AbortSignal): Promise<void>;
  unmount(target: string, signal?: AbortSignal): Promise<void>;
  /** A tar of the mounted filesystem at `guestPath`, whiteouts in `.wh.` form. */
  exportTar(guestPath: string, opts: { sandbox: boolean; signal?: AbortSignal }): Readable;
  /** Formats a new sandbox disk inside the VM, where a backend cannot do it on the host. */
  formatExt4?(hostPath: string, sizeGiB: number, signal?: AbortSignal): Promise<void>;
  terminate(): Promise<void>;
}
