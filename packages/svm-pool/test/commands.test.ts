// Model-based test with fast-check commands: each command runs against the real pool (over the fake VM
// host) and a plain model of the leases alive; after every command the pool's books, the fake VMs' real
// state and the model must agree. (model.test.ts adds random interleavings through the scheduler.)
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { SvmPool, type Lease } from '../src/index.ts';
import { FakeHost, type Op } from './fake-vm.ts';

interface Model {
  mode: 'safe' | 'global';
  leases: { lease: Lease; mounts: string[] }[];
  armed: Op | null;
}
interface Real {
  pool: SvmPool;
  host: FakeHost;
  /** Armed failures: the op, and how many calls of it pass first. */
  armed: Map<Op, number>;
}

function agree(m: Model, r: Real): void {
  const snap = r.pool.snapshot();
  const live = m.leases.filter((l) => l.lease.active);
  expect(live.length).toBe(m.leases.length); // nothing in the model was stopped behind its back
  for (const vm of snap.vms) {
    const mine = live.filter((l) => l.lease.vmId === vm.vmId);
    expect(vm.refs).toBe(mine.length);
    const want = new Map<string, number>();
    for (const l of mine) for (const d of l.lease.disks) want.set(d.hostPath, (want.get(d.hostPath) ?? 0) + 1);
    expect(new Map(vm.disks.filter((d) => d.refs > 0).map((d) => [d.hostPath, d.refs]))).toEqual(want);
    const mounts = new Map<string, number>();
    for (const l of mine) for (const t of l.mounts) mounts.set(t, (mounts.get(t) ?? 0) + 1);
    expect(new Map(vm.mounts.map((x) => [x.target, x.refs]))).toEqual(mounts);
    const fake = r.host.running.get(vm.vmId)!;
    expect(new Set([...fake.attached.values()].map((d) => d.hostPath))).toEqual(
      new Set(vm.disks.map((d) => d.hostPath)),
    );
    expect(new Set(fake.mounts.keys())).toEqual(new Set(vm.mounts.map((x) => x.target)));
  }
  expect(new Set(r.host.running.keys())).toEqual(new Set(snap.vms.map((v) => v.vmId)));
  if (m.mode === 'safe') for (const vm of snap.vms) expect(vm.refs).toBeGreaterThan(0);
}

const path = (n: number): string => `/data/l${n}/layer.vhd`;

/** A rejection handler that lets through only an injected failure of one of `ops` (or a stopped VM's). */
const onlyInjected =
  (...ops: Op[]) =>
  (e: unknown): void => {
    if ((e as { code?: string }).code === 'ERR_VM_STOPPED') return;
    expect(String(e), 'only an injected failure may reject here').toMatch(
      new RegExp(`injected (${ops.join('|')}) failure`),
    );
  };

class Acquire implements fc.AsyncCommand<Model, Real> {
  readonly id: number;
  readonly disks: number[];
  constructor(id: number, disks: number[]) {
    this.id = id;
    this.disks = disks;
  }
  check = (): boolean => true;
  async run(m: Model, r: Real): Promise<void> {
    const op = m.armed;
    try {
      const lease = await r.pool.acquire(
        `layer${this.id}`,
        this.disks.map((d) => ({ hostPath: path(d), readOnly: true })),
      );
      m.leases.push({ lease, mounts: [] });
    } catch (e) {
      // Only an injected start or hot-add failure may fail an acquire.
      expect(op === 'start' || op === 'hotAdd', String(e)).toBe(true);
      expect(String(e)).toMatch(/injected/);
    }
    m.armed = r.armed.size ? m.armed : null;
    agree(m, r);
  }
  toString = (): string => `acquire(layer${this.id}, [${this.disks}])`;
}

class Release implements fc.AsyncCommand<Model, Real> {
  readonly i: number;
  constructor(i: number) {
    this.i = i;
  }
  check = (m: Readonly<Model>): boolean => m.leases.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const [l] = m.leases.splice(this.i % m.leases.length, 1);
    await l!.lease.release().catch(onlyInjected('hotRemove', 'unmount'));
    // A failed hot-remove keeps the disk attached without references; the model counts references only.
    m.armed = r.armed.size ? m.armed : null;
    agree(m, r);
  }
  toString = (): string => `release(#${this.i})`;
}

class Mount implements fc.AsyncCommand<Model, Real> {
  readonly i: number;
  readonly target: number;
  constructor(i: number, target: number) {
    this.i = i;
    this.target = target;
  }
  check = (m: Readonly<Model>): boolean => m.leases.some((l) => l.lease.disks.length > 0);
  async run(m: Model, r: Real): Promise<void> {
    const withDisks = m.leases.filter((l) => l.lease.disks.length > 0);
    const l = withDisks[this.i % withDisks.length]!;
    const t = `/tmp/u${this.target}`;
    try {
      await l.lease.mountUnion(
        t,
        l.lease.disks.map((d) => d.hostPath),
      );
      l.mounts.push(t);
    } catch (e) {
      expect(String(e)).toMatch(/injected mountUnion/);
    }
    m.armed = r.armed.size ? m.armed : null;
    agree(m, r);
  }
  toString = (): string => `mount(#${this.i}, /tmp/u${this.target})`;
}

class Cleanup implements fc.AsyncCommand<Model, Real> {
  check = (): boolean => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.pool.cleanup().catch(onlyInjected('hotRemove', 'unmount'));
    for (const l of m.leases) await l.lease.release().catch(onlyInjected('hotRemove', 'unmount'));
    m.leases = [];
    agree(m, r);
  }
  toString = (): string => 'cleanup()';
}

class Fail implements fc.AsyncCommand<Model, Real> {
  readonly op: Op;
  readonly skip: number;
  constructor(op: Op, skip: number) {
    this.op = op;
    this.skip = skip;
  }
  check = (m: Readonly<Model>): boolean => m.armed === null;
  async run(m: Model, r: Real): Promise<void> {
    m.armed = this.op;
    r.armed.set(this.op, this.skip);
  }
  toString = (): string => `fail(${this.op} after ${this.skip})`;
}

it('fast-check commands: acquire, release, mount, cleanup and injected failures keep pool, fake VMs and model equal', async () => {
  const commands = [
    fc.tuple(fc.nat(2), fc.array(fc.nat(3), { maxLength: 3 })).map(([id, d]) => new Acquire(id, d)),
    fc.nat(10).map((i) => new Release(i)),
    fc.tuple(fc.nat(10), fc.nat(1)).map(([i, t]) => new Mount(i, t)),
    fc.constant(new Cleanup()),
    fc.tuple(fc.constantFrom<Op>('start', 'hotAdd', 'mountUnion'), fc.nat(1)).map(([op, skip]) => new Fail(op, skip)),
  ];
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('safe' as const, 'global' as const),
      fc.commands(commands, { maxCommands: 40 }),
      fc.integer({ min: 1, max: 4 }),
      async (mode, cmds, attachConcurrency) => {
        const host = new FakeHost();
        const armed = new Map<Op, number>();
        host.hook = (op) => {
          const skip = armed.get(op);
          if (skip === undefined) return;
          if (skip > 0) armed.set(op, skip - 1);
          else {
            armed.delete(op);
            throw new Error(`injected ${op} failure`);
          }
        };
        const real: Real = { pool: new SvmPool({ mode, start: host.start, attachConcurrency }), host, armed };
        await fc.asyncModelRun(() => ({ model: { mode, leases: [], armed: null }, real }), cmds);
        await real.pool.cleanup();
        expect(host.running.size).toBe(0);
      },
    ),
    { numRuns: 200 },
  );
});
