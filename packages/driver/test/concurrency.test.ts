// Many operations at once on shared parents, and a backend that fails part-way: refcounts stay exact,
// every union reads what its chain says, and nothing stays attached or mounted afterwards.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, rootWithLoop, run, tempDir } from '@lcow/testkit';
import type { MappedDisk, UtilityVm } from '@lcow/svm-pool';
import { hostRunDir } from '../src/backends/host.ts';
import { LcowDriver, type Backend } from '../src/index.ts';
import { hostBackend, inprocBackend } from '../src/backends/backend.ts';

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-concurrency-');
});
afterAll(() => dir?.cleanup());

const tar = (files: Record<string, string>): Readable =>
  Readable.from([Buffer.from(makeTar(Object.entries(files).map(([path, body]) => ({ path, body }))))]);

async function text(d: LcowDriver, id: string, path: string): Promise<string> {
  const fs = await d.get(id);
  try {
    return (await fs.readFile(path)).toString();
  } finally {
    await d.put(id);
  }
}

/** A backend whose VMs fail the k-th hot-add (counted across VMs), once. */
function failingAt(inner: Backend, k: number): { backend: Backend; calls: () => number } {
  let n = 0;
  const wrap = (vm: UtilityVm): UtilityVm =>
    new Proxy(vm, {
      get(target, prop, recv) {
        if (prop === 'hotAdd')
          return async (disk: MappedDisk, signal?: AbortSignal) => {
            if (++n === k)
              throw Object.assign(new Error(`injected: hot-add ${disk.hostPath} fails`), { code: 'ERR_INJECTED' });
            return target.hotAdd(disk, signal);
          };
        const v = Reflect.get(target, prop, recv) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  return {
    backend: { ...inner, start: async (id, signal) => wrap(await inner.start(id, signal)) },
    calls: () => n,
  };
}

for (const name of ['inproc', 'host'] as const) {
  const ready = name === 'inproc' || rootWithLoop();
  describe.skipIf(!ready)(`concurrency and faults (${name})`, () => {
    it('parallel get/put/diff/applyDiff/changes/remove over one shared base', { timeout: 600_000 }, async () => {
      const root = `${dir.path}/${name}`;
      const d = await LcowDriver.init(root, [`lcow.backend=${name}`]);
      await d.create('base', null);
      await d.applyDiff('base', null, tar({ 'etc/base': 'base', shared: 'from base' }));
      const N = 12;
      await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          await d.create(`c${i}`, 'base');
          await d.applyDiff(`c${i}`, 'base', tar({ [`own/${i}`]: `child ${i}`, shared: `from c${i}` }));
          if (name === 'host') await d.createReadWrite(`rw${i}`, `c${i}`);
        }),
      );
      // Every child at once, several times each, plus diffs and changes of the same layers.
      const work: Promise<unknown>[] = [];
      for (let r = 0; r < 3; r++)
        for (let i = 0; i < N; i++) {
          const id = name === 'host' ? `rw${i}` : `c${i}`;
          work.push(text(d, id, '/shared').then((t) => expect(t).toBe(`from c${i}`)));
          work.push(text(d, id, '/etc/base').then((t) => expect(t).toBe('base')));
          work.push(d.changes(`c${i}`, 'base').then((c) => expect(c.map((x) => x.path)).toContain(`/own/${i}`)));
          work.push(
            d
              .diff(`c${i}`, 'base')
              .toArray()
              .then((parts) => expect(parts.length).toBeGreaterThan(0)),
          );
        }
      // Removals of other leaves while all that runs.
      for (let i = 0; i < 4; i++)
        work.push(
          (async () => {
            await d.create(`gone${i}`, 'base');
            await d.applyDiff(`gone${i}`, 'base', tar({ x: 'x' }));
            await d.remove(`gone${i}`);
          })(),
        );
      await Promise.all(work);
      // Held twice, put twice: exact refcounts.
      const id = name === 'host' ? 'rw0' : 'c0';
      const [a, b] = await Promise.all([d.get(id), d.get(id)]);
      expect(a).toBe(b);
      expect(d.refs(id)).toBe(2);
      await d.put(id);
      expect(d.refs(id)).toBe(1);
      await d.put(id);
      expect(d.refs(id)).toBe(0);
      await expect(d.put(id)).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
      const st = await d.status();
      expect(st.mounted).toEqual([]);
      // Nothing holds a disk; read-only layers may linger, held by nothing, for the next union.
      expect(st.vms.flatMap((v) => v.disks).filter((x) => x.refs > 0 || !x.readOnly)).toEqual([]);
      expect(st.vms.flatMap((v) => v.mounts)).toEqual([]);
      await d.close();
      if (name === 'host') expect((await run('losetup', ['-a'])).includes(root)).toBe(false);
    });

    it('a hot-add that fails part-way through a chain rolls back; the next get works', async () => {
      const root = `${dir.path}/${name}-fault`;
      const base = name === 'host' ? hostBackend(root) : inprocBackend();
      for (let k = 1; k <= 3; k++) {
        const { backend, calls } = failingAt(base, k);
        const d = await LcowDriver.init(`${root}-${k}`, [`lcow.backend=${name}`], { backend });
        await d.create('l0', null);
        await d.applyDiff('l0', null, tar({ a: 'a0' }));
        await d.create('l1', 'l0');
        await d.applyDiff('l1', 'l0', tar({ b: 'b1' }));
        await d.create('l2', 'l1');
        await d.applyDiff('l2', 'l1', tar({ c: 'c2' }));
        await expect(d.get('l2')).rejects.toMatchObject({ code: 'ERR_INJECTED' });
        // The chain's three disks are attached in parallel: all three were tried, the k-th failed.
        expect(calls()).toBe(3);
        expect(d.refs('l2')).toBe(0);
        const st = await d.status();
        // Nothing holds a disk; read-only layers may linger, held by nothing, for the next union.
        expect(st.vms.flatMap((v) => v.disks).filter((x) => x.refs > 0 || !x.readOnly)).toEqual([]);
        const fs = await d.get('l2');
        expect((await fs.readFile('/a')).toString() + (await fs.readFile('/b')) + (await fs.readFile('/c'))).toBe(
          'a0b1c2',
        );
        await d.put('l2');
        await d.close();
        // Only what this test's driver owns: other drivers on the machine (other test files) may have mounts.
        if (name === 'host')
          expect((await run('findmnt', ['-rn', '-o', 'TARGET'])).includes(`${hostRunDir(d.root)}/`)).toBe(false);
      }
    });
  });
}
