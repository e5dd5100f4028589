// The `inproc` backend: anywhere, without privileges. A "disk" is an `@lcow/ext4` reader over its file, a
// union is a {@link UnionView} over those readers; nothing is ever written.
import type { Readable } from 'node:stream';
import { Ext4Fs, exportTar } from '@lcow/ext4';
import type { MappedDisk, UtilityVm } from '@lcow/svm-pool';
import { DriverError } from '../errors.ts';
import { UnionView, type UnionLayer } from '../fs/union-view.ts';

export class InprocVm implements UtilityVm {
  readonly id: string;
  readonly #disks = new Map<string, Ext4Fs>();
  readonly #unions = new Map<string, UnionView>();

  constructor(id: string) {
    this.id = id;
  }

  async hotAdd(disk: MappedDisk): Promise<void> {
    // A sandbox was written by a container: the reader is bounded on any input, and checksums are kept.
    this.#disks.set(disk.guestPath, await Ext4Fs.open(disk.hostPath, { checksums: 'strict' }));
  }

  async hotRemove(disk: MappedDisk): Promise<void> {
    const fs = this.#disks.get(disk.guestPath);
    this.#disks.delete(disk.guestPath);
    await fs?.close();
  }

  /** The reader and the folder in it that a guest path (`/tmp/d3` or `/tmp/d3/upper`) names. */
  #layer(guestPath: string): UnionLayer {
    for (const [g, fs] of this.#disks) {
      if (guestPath === g) return { fs };
      if (guestPath.startsWith(`${g}/`)) return { fs, root: guestPath.slice(g.length) };
    }
    throw new DriverError('ERR_NOT_FOUND', `${guestPath}: no disk attached there`);
  }

  async mountUnion(target: string, lowers: readonly string[], upper?: string): Promise<void> {
    const layers = [...(upper ? [{ ...this.#layer(upper), root: 'upper' }] : []), ...lowers.map((l) => this.#layer(l))];
    this.#unions.set(target, new UnionView(layers));
  }

  async unmount(target: string): Promise<void> {
    this.#unions.delete(target);
  }

  /** The union mounted at `target`. */
  union(target: string): UnionView {
    const u = this.#unions.get(target);
    if (!u) throw new DriverError('ERR_NOT_FOUND', `${target}: nothing mounted there`);
    return u;
  }

  exportTar(guestPath: string, opts: { sandbox: boolean; signal?: AbortSignal }): Readable {
    const fs = this.#layer(guestPath).fs;
    return exportTar(fs, { root: opts.sandbox ? 'upper' : '/', signal: opts.signal });
  }

  async terminate(): Promise<void> {
    this.#unions.clear();
    const all = [...this.#disks.values()];
    this.#disks.clear();
    await Promise.all(all.map((fs) => fs.close()));
  }
}
