// Model-based property test: random programs of acquire / release / mount / unmount / cleanup / terminate
// and injected failures run against the pool with every VM operation's completion order chosen by
// fast-check's scheduler (so operations interleave in random ways). Invariants are checked after every
// step; at quiescence the pool's view must equal both the fake VMs' real state and a model computed from
// the leases that are alive. No operation may hang, and no rejection may go unhandled.
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { SvmPool, type Lease } from '../src/index.ts';
import { FakeHost, type Op } from './fake-vm.ts';

type Cmd =
  | { kind: 'acquire'; id: number; disks: number[]; steps: number }
  | { kind: 'release'; lease: number; steps: number }
  | { kind: 'mount'; lease: number; target: number; steps: number }
  | { kind: 'unmount'; lease: number; steps: number }
  | { kind: 'cleanup'; steps: number }
  | { kind: 'terminate'; id: number; steps: number }
  | { kind: 'fail'; op: Op; steps: number };

const steps = fc.nat(4);
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('acquire' as const),
      id: fc.nat(2),
      disks: fc.array(fc.nat(4), { maxLength: 3 }),
      steps,
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('release' as const), lease: fc.nat(20), steps }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('mount' as const), lease: fc.nat(20), target: fc.nat(1), steps }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('unmount' as const), lease: fc.nat(20), steps }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cleanup' as const), steps }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('terminate' as const), id: fc.nat(2), steps }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('fail' as const),
      op: fc.constantFrom<Op>('start', 'hotAdd', 'hotRemove', 'mountUnion', 'unmount'),
      steps,
    }),
  },
);

const hostPath = (n: number): string => `/data/layer${n}/layer.vhd`;

it('random interleavings keep refcounts, attached disks, mounts and running VMs equal to the model', async () => {
  let runs = 0;
  // Successes over all runs: a pool that rejected everything would otherwise pass.
  const totals = { acquired: 0, mounted: 0 };
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('safe' as const, 'global' as const),
      fc.array(cmd, { minLength: 1, maxLength: 30 }),
      fc.scheduler(),
      fc.integer({ min: 1, max: 4 }),
      async (mode, cmds, s, attachConcurrency) => {
        runs++;
        const host = new FakeHost();
        const armed = new Set<Op>();
        const bugs: string[] = [];
        host.hook = async (op, vmId, detail) => {
          await s.schedule(Promise.resolve(), `${op} ${vmId} ${detail}`);
          if (armed.delete(op)) throw new Error(`injected ${op} failure`);
        };
        const pool = new SvmPool({ mode, start: host.start, timeoutMs: 60_000, attachConcurrency });
        const leases: Lease[] = [];
        const mounted = new Map<Lease, string[]>();
        const tasks: Promise<unknown>[] = [];
        // Exactly these rejections are expected: an injected failure (itself or as the cause of the pool's
        // error), an operation cut short by a terminate or cleanup racing it (the fake's "terminated during",
        // or the pool's ERR_VM_STOPPED), and ERR_REFCOUNT or ERR_INVALID_ARGUMENT ("the lease is released")
        // from a lease used after its release. Anything else
        // — a TypeError, a fake refusal, another code — is a pool bug.
        const released = new Set<Lease>();
        const expected =
          (lease?: Lease) =>
          (e: unknown): void => {
            const chain: string[] = [];
            for (let x = e as { message?: string; cause?: unknown } | undefined; x; x = x.cause as typeof x)
              chain.push(String(x.message ?? x));
            if (chain.some((m) => /^injected (start|hotAdd|hotRemove|mountUnion|unmount) failure/.test(m))) return;
            if (chain.some((m) => /^fake \S+: terminated during /.test(m))) return;
            const code = (e as { code?: string }).code;
            if (code === 'ERR_VM_STOPPED') return;
            if ((code === 'ERR_REFCOUNT' || code === 'ERR_INVALID_ARGUMENT') && lease && released.has(lease)) return;
            bugs.push(
              `${code ?? (e as Error)?.name}: ${chain.join(' <- ')}${
                code
                  ? ''
                  : ` at ${String((e as Error)?.stack)
                      .split('\n')
                      .slice(1, 4)
                      .join(' ')}`
              }`,
            );
          };
        const invariants = (): void => {
          const snap = pool.snapshot();
          if (mode === 'global') expect(snap.vms.length).toBeLessThanOrEqual(1);
          for (const vm of snap.vms) {
            expect(vm.refs).toBeGreaterThanOrEqual(0);
            const guests = vm.disks.map((d) => d.guestPath);
            expect(new Set(guests).size).toBe(guests.length);
            for (const d of vm.disks) expect(d.refs).toBeGreaterThanOrEqual(0);
            // refs 0: a union whose last unmount failed, still mounted and held by no one.
            for (const m of vm.mounts) expect(m.refs).toBeGreaterThanOrEqual(0);
          }
        };
        const run = async (n: number): Promise<void> => {
          for (let i = 0; i < n && s.count() > 0; i++) {
            await s.waitOne();
            invariants();
          }
        };
        // Commands on a lease wait for its acquire (and an unmount for its mount), so that they run even
        // when the acquire is still being scheduled: otherwise mounts would hardly ever happen.
        const handles: { lease: Promise<Lease | null>; mounts: Promise<string | null>[] }[] = [];
        for (const c of cmds) {
          const h = 'lease' in c && handles.length > 0 ? handles[c.lease % handles.length] : undefined;
          if (c.kind === 'acquire') {
            const lp = pool
              .acquire(
                `layer${c.id}`,
                c.disks.map((d) => ({ hostPath: hostPath(d), readOnly: true })),
              )
              .then(
                (l) => {
                  leases.push(l);
                  totals.acquired++;
                  return l;
                },
                (e: unknown) => (expected()(e), null),
              );
            handles.push({ lease: lp, mounts: [] });
            tasks.push(lp);
          } else if (c.kind === 'release' && h) {
            tasks.push(
              h.lease.then((l) => {
                if (!l) return;
                const p = l.release();
                released.add(l);
                return p.catch(expected(l));
              }),
            );
          } else if (c.kind === 'mount' && h) {
            const target = `/tmp/union${c.target}`;
            const mp = h.lease.then((l) =>
              l && l.disks.length > 0
                ? l
                    .mountUnion(
                      target,
                      l.disks.map((d) => d.hostPath),
                    )
                    .then(
                      () => {
                        mounted.set(l, [...(mounted.get(l) ?? []), target]);
                        totals.mounted++;
                        return target;
                      },
                      (e: unknown) => (expected(l)(e), null),
                    )
                : null,
            );
            h.mounts.push(mp);
            tasks.push(mp);
          } else if (c.kind === 'unmount' && h && h.mounts.length > 0) {
            const mp = h.mounts.pop()!;
            tasks.push(
              Promise.all([h.lease, mp]).then(([l, t]) => {
                if (!l || t === null) return;
                const list = mounted.get(l) ?? [];
                list.splice(list.lastIndexOf(t), 1);
                return l.unmountUnion(t).catch(expected(l));
              }),
            );
          } else if (c.kind === 'cleanup') tasks.push(pool.cleanup().catch(expected()));
          else if (c.kind === 'terminate') tasks.push(pool.terminate(`layer${c.id}`).catch(expected()));
          else if (c.kind === 'fail') armed.add(c.op);
          await run(c.steps);
        }
        // Quiescence: drain everything (operations schedule more as they proceed).
        const settle = async (): Promise<void> => {
          let done = false;
          const all = Promise.allSettled(tasks).then(() => (done = true));
          while (!done) {
            if (s.count() > 0) await run(1);
            else await new Promise((r) => setImmediate(r));
          }
          await all;
        };
        await settle();
        armed.clear();
        expect(bugs).toEqual([]);

        // The model: what the live leases hold.
        const snap = pool.snapshot();
        const live = leases.filter((l) => l.active);
        for (const vm of snap.vms) {
          const fake = host.running.get(vm.vmId);
          expect(vm.state).toBe('running');
          expect(fake, `${vm.vmId} runs`).toBeDefined();
          const mine = live.filter((l) => l.vmId === vm.vmId);
          expect(vm.refs).toBe(mine.length);
          const want = new Map<string, number>();
          for (const l of mine) for (const d of l.disks) want.set(d.hostPath, (want.get(d.hostPath) ?? 0) + 1);
          const got = new Map(vm.disks.filter((d) => d.refs > 0).map((d) => [d.hostPath, d.refs]));
          expect(got).toEqual(want);
          // The fake VM has exactly the disks the pool believes attached (referenced or kept after a failed removal).
          expect(new Map([...fake!.attached.values()].map((d) => [d.hostPath, d.guestPath]))).toEqual(
            new Map(vm.disks.map((d) => [d.hostPath, d.guestPath])),
          );
          expect(new Set(fake!.mounts.keys())).toEqual(new Set(vm.mounts.map((m) => m.target)));
        }
        for (const [vmId] of host.running) expect(snap.vms.map((v) => v.vmId)).toContain(vmId);
        if (mode === 'safe') for (const vm of snap.vms) expect(vm.refs).toBeGreaterThan(0);

        // Releasing every lease leaves nothing behind: safe mode stops every VM; global keeps one, empty.
        for (const l of leases) {
          const p = l.release();
          tasks.push(p.catch(expected(l)));
          released.add(l);
        }
        await settle();
        const after = pool.snapshot();
        if (mode === 'safe') {
          expect(after.vms).toEqual([]);
          expect(host.running.size).toBe(0);
        } else {
          for (const vm of after.vms) {
            expect(vm.refs).toBe(0);
            expect(vm.mounts.filter((m) => m.refs > 0)).toEqual([]);
            expect(vm.disks.filter((d) => d.refs > 0)).toEqual([]);
          }
        }
        tasks.push(pool.cleanup().catch(expected()));
        await settle();
        expect(host.running.size).toBe(0);
        expect(bugs).toEqual([]);
      },
    ),
    { numRuns: Number(process.env.LCOW_MODEL_RUNS ?? 300) },
  );
  expect(runs).toBeGreaterThanOrEqual(Number(process.env.LCOW_MODEL_RUNS ?? 300));
  console.log(`[model] ${runs} runs: ${totals.acquired} acquires and ${totals.mounted} union mounts succeeded`);
  expect(totals.acquired).toBeGreaterThanOrEqual(runs);
  expect(totals.mounted).toBeGreaterThanOrEqual(runs / 10);
}, 600_000);
