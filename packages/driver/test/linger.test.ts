// Unions that stay mounted a while after their last put (`lingerUnionsMs`, what the Docker plugin asks for):
// a get in that time finds the same mount; everything that needs the layer unmounted still gets it unmounted,
// and Docker's view (status, refs) never counts a lingering union.
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, makeTar, rootWithLoop, tempDir } from '@lcow/testkit';
import { LcowDriver } from '../src/index.ts';

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-linger-');
});
afterAll(() => dir?.cleanup());

const tar = (files: Record<string, string>): Readable =>
  Readable.from([Buffer.from(makeTar(Object.entries(files).map(([path, body]) => ({ path, body }))))]);

/** Mount points of the kernel's table under `prefix`. */
async function mountsUnder(prefix: string): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(prefix));
}

describe.skipIf(!rootWithLoop())('lingering unions (host backend)', () => {
  it(
    'a get soon after the last put finds the same mount; the time up, it is unmounted',
    { timeout: 120_000 },
    async () => {
      const d = await LcowDriver.init(`${dir.path}/a`, ['lcow.backend=host'], { lingerUnionsMs: 400 });
      try {
        await d.create('img', null);
        await d.applyDiff('img', null, tar({ 'etc/hello': 'hi' }));
        await d.createReadWrite('box', 'img');
        const fs = await d.get('box');
        const root = fs.path!;
        await fs.writeFile('/made', 'x');
        const mounted = await mountsUnder(root);
        expect(mounted).toEqual([root]);
        await d.put('box');
        // Docker's view: not mounted (a put without get is refused); the kernel's: still there.
        expect(d.refs('box')).toBe(0);
        expect((await d.status()).mounted).toEqual([]);
        await expect(d.put('box')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
        expect(await mountsUnder(root)).toEqual([root]);
        const again = await d.get('box');
        expect(again.path).toBe(root);
        expect((await again.readFile('/made')).toString()).toBe('x');
        expect((await d.status()).mounted).toEqual([{ id: 'box', refs: 1 }]);
        await d.put('box');
        expect(await eventually(async () => (await mountsUnder(root)).length === 0, 10_000)).toBe(true);
        // Gone for good: a new get mounts again and still sees what was written.
        const third = await d.get('box');
        expect((await third.readFile('/made')).toString()).toBe('x');
        await d.put('box');
      } finally {
        await d.close();
      }
    },
  );

  it(
    'remove, applyDiff, a parent’s remove and close each end a lingering union first',
    { timeout: 120_000 },
    async () => {
      const root = `${dir.path}/b`;
      const d = await LcowDriver.init(root, ['lcow.backend=host'], { lingerUnionsMs: 60_000 });
      const runDir = (p: string): Promise<string[]> => mountsUnder(p);
      try {
        await d.create('img', null);
        await d.applyDiff('img', null, tar({ 'etc/hello': 'hi' }));
        // remove of the lingering layer itself
        await d.createReadWrite('c1', 'img');
        const p1 = (await d.get('c1')).path!;
        await d.put('c1');
        await d.remove('c1');
        expect(await runDir(p1)).toEqual([]);
        // applyDiff onto a layer whose (empty-layer) union lingers
        await d.create('l2', 'img');
        const p2 = (await d.get('l2')).path!;
        await d.put('l2');
        await d.applyDiff('l2', 'img', tar({ two: '2' }));
        expect(await runDir(p2)).toEqual([]);
        // Docker's init layer: written, put, then the container's parent — and removed after it
        await d.createReadWrite('c3-init', 'img');
        const init = await d.get('c3-init');
        await init.writeFile('/etc/hostname', 'box\n');
        await d.put('c3-init');
        await d.createReadWrite('c3', 'c3-init');
        const c3 = await d.get('c3');
        expect((await c3.readFile('/etc/hostname')).toString()).toBe('box\n');
        expect((await c3.readFile('/etc/hello')).toString()).toBe('hi');
        await d.put('c3');
        // The parent first: its lingering child lets go of it, so it is not busy.
        await d.remove('c3');
        await d.remove('c3-init');
        // close with detach (a plugin restart) leaves no lingering union to a successor
        await d.createReadWrite('c4', 'img');
        const p4 = (await d.get('c4')).path!;
        await d.put('c4');
        await d.close({ detach: true });
        expect(await runDir(p4)).toEqual([]);
      } finally {
        await d.close();
      }
    },
  );

  it('a parent removed under a lingering child is not busy', { timeout: 120_000 }, async () => {
    const d = await LcowDriver.init(`${dir.path}/c`, ['lcow.backend=host'], { lingerUnionsMs: 60_000 });
    try {
      await d.create('img', null);
      await d.applyDiff('img', null, tar({ a: 'a' }));
      await d.create('top', 'img');
      await d.applyDiff('top', 'img', tar({ b: 'b' }));
      const p = (await d.get('top')).path!;
      await d.put('top');
      await d.remove('top');
      await d.createReadWrite('box', 'img');
      await d.get('box');
      await d.put('box');
      // box's union lingers on img's disk. The store keeps no links from parent to child (as the
      // original), so removing img is allowed; it must not fail busy for a union Docker already put.
      await d.remove('img');
      expect(await mountsUnder(p)).toEqual([]);
      expect(await d.exists('img')).toBe(false);
    } finally {
      await d.close();
    }
  });

  it('lingerUnionsMs must be a whole number', async () => {
    await expect(LcowDriver.init(`${dir.path}/d`, ['lcow.backend=host'], { lingerUnionsMs: -1 })).rejects.toMatchObject(
      { code: 'ERR_INVALID_ARGUMENT' },
    );
  });
});
