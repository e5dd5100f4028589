// A fake service-VM host for the pool's tests: every command is recorded, each can be made to fail or to
// stall, and the fake itself checks what a real VM would refuse (a second hot-add of a disk, a mount of a
// disk that is not attached, an operation on a terminated VM), so pool bugs surface as errors.
import { Readable } from 'node:stream';
import type { MappedDisk, UtilityVm } from '../src/index.ts';

export type Op = 'start' | 'hotAdd' | 'hotRemove' | 'mountUnion' | 'unmount' | 'formatExt4' | 'terminate';
/** Runs before each operation: throw to fail it, return a promise to delay (or stall) it. */
export type Hook = (op: Op, vmId: string, detail: string) => void | Promise<void>;

export class FakeVm implements UtilityVm {
  readonly id: string;
  readonly generation: number;
  readonly attached = new Map<string, MappedDisk>();
  readonly mounts = new Map<string, { lowers: readonly string[]; upper?: string }>();
  terminated = false;
  readonly #host: FakeHost;

  constructor(host: FakeHost, id: string, generation: number) {
    this.#host = host;
    this.id = id;
    this.generation = generation;
  }

  async #op(op: Op, detail: string): Promise<void> {
    if (this.terminated) throw new Error(`fake ${this.id}#${this.generation}: ${op} on a terminated VM`);
    this.#host.log.push(`${this.id}#${this.generation} ${op} ${detail}`.trim());
    await this.#host.hook(op, this.id, detail);
    if (this.terminated) throw new Error(`fake ${this.id}#${this.generation}: terminated during ${op}`);
  }

  async hotAdd(d: MappedDisk): Promise<void> {
    await this.#op('hotAdd', `${d.hostPath} ${d.guestPath}`);
    for (const a of this.attached.values()) {
      if (a.guestPath === d.guestPath || a.hostPath === d.hostPath)
        throw new Error(`fake: ${d.hostPath} at ${d.guestPath} clashes with ${a.hostPath} at ${a.guestPath}`);
    }
    this.attached.set(d.guestPath, d);
  }

  async hotRemove(d: MappedDisk): Promise<void> {
    await this.#op('hotRemove', `${d.hostPath} ${d.guestPath}`);
    if (!this.attached.delete(d.guestPath)) throw new Error(`fake: ${d.guestPath} is not attached`);
    for (const [t, m] of this.mounts)
      if (m.lowers.includes(d.guestPath) || m.upper === d.guestPath)
        throw new Error(`fake: ${d.guestPath} removed while mounted at ${t}`);
  }

  async mountUnion(target: string, lowers: readonly string[], upper?: string): Promise<void> {
    await this.#op('mountUnion', `${target} ${lowers.join(':')}${upper ? ` +${upper}` : ''}`);
    for (const p of [...lowers, ...(upper ? [upper] : [])])
      if (!this.attached.has(p)) throw new Error(`fake: ${p} is not attached`);
    if (this.mounts.has(target)) throw new Error(`fake: ${target} is already mounted`);
    this.mounts.set(target, { lowers: [...lowers], upper });
  }

  async unmount(target: string): Promise<void> {
    await this.#op('unmount', target);
    if (!this.mounts.delete(target)) throw new Error(`fake: ${target} is not mounted`);
  }

  exportTar(): Readable {
    return Readable.from([]);
  }

  async formatExt4(hostPath: string, sizeGiB: number): Promise<void> {
    await this.#op('formatExt4', `${hostPath} ${sizeGiB}`);
  }

  async terminate(): Promise<void> {
    this.#host.log.push(`${this.id}#${this.generation} terminate`);
    await this.#host.hook('terminate', this.id, '');
    this.terminated = true;
    this.mounts.clear();
    this.attached.clear();
    if (this.#host.running.get(this.id) === this) this.#host.running.delete(this.id);
  }
}

export class FakeHost {
  readonly log: string[] = [];
  readonly running = new Map<string, FakeVm>();
  starts = 0;
  hook: Hook = () => {};

  start = async (vmId: string, signal: AbortSignal): Promise<UtilityVm> => {
    const generation = ++this.starts;
    this.log.push(`${vmId}#${generation} start`);
    await this.hook('start', vmId, '');
    if (this.running.has(vmId)) throw new Error(`fake: ${vmId} started twice`);
    const vm = new FakeVm(this, vmId, generation);
    this.running.set(vmId, vm);
    if (signal.aborted) {
      // The pool gave up on this start; it will terminate the late VM itself.
    }
    return vm;
  };

  /** Fails `op` (optionally only for `detail` containing `match`) once, or every time with `always`. */
  fail(op: Op, match = '', always = false): void {
    const prev = this.hook;
    let used = false;
    this.hook = (o, id, d) => {
      if (o === op && d.includes(match) && (always || !used)) {
        used = true;
        throw new Error(`injected ${op} failure (${d || id})`);
      }
      return prev(o, id, d);
    };
  }

  /** Stalls `op` until the returned function is called. */
  stall(op: Op, match = ''): () => void {
    const prev = this.hook;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let used = false;
    this.hook = async (o, id, d) => {
      if (o === op && d.includes(match) && !used) {
        used = true;
        await gate;
      }
      return prev(o, id, d);
    };
    return release;
  }
}
