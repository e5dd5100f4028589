// A chain as deep as a chain may be (128 layers: 127 parents), mounted by the host backend: the overlay's
// options name 128 folders, more than mount(2)'s one page takes with absolute paths. Every layer's change
// shows through; put leaves nothing mounted. (containerd's conformance suite has the same case.)
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inCI, makeTar, rootWithLoop, run, tempDir } from '@lcow/testkit';
import { LcowDriver } from '../src/index.ts';

const ready = process.platform === 'linux' && rootWithLoop();
if (!ready && inCI) throw new Error('CI=true: the deep-chain test needs root with loop devices');

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-deep-');
});
afterAll(() => dir?.cleanup());

describe.runIf(ready)('a chain of 128 layers (127 read-only, a sandbox on top) on the host backend', () => {
  it('mounts, reads every layer through the union, writes into a sandbox on top, and unmounts', async () => {
    process.env.LCOW_NOREEXEC = '1'; // 128 conversions in this process: no child start per layer
    const d = await LcowDriver.init(dir.path, ['lcow.backend=host']);
    try {
      let parent: string | null = null;
      for (let i = 0; i < 127; i++) {
        const id = `l${i}`;
        await d.create(id, parent);
        const tar = makeTar([
          { path: 'over', body: `${i}\n` },
          { path: `only/${i}`, body: 'x' },
        ]);
        await d.applyDiff(id, parent, Readable.from([Buffer.from(tar)]));
        parent = id;
      }
      await d.createReadWrite('top', parent);
      const fs = await d.get('top');
      expect((await fs.readFile('over')).toString()).toBe('126\n');
      expect((await fs.readdir('only')).length).toBe(127);
      await fs.writeFile('new', 'written');
      expect((await fs.readFile('new')).toString()).toBe('written');
      await d.put('top');
      const left = (await run('findmnt', ['-rn', '-o', 'TARGET'])).split('\n').filter((t) => t.startsWith('/run/lcow'));
      expect(left.filter((t) => t.includes(d.root) || /\/tmp\/d[0-9]+$/.test(t))).toEqual([]);
    } finally {
      delete process.env.LCOW_NOREEXEC;
      await d.close();
    }
  }, 600_000);
});
