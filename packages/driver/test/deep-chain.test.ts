// A chain as deep as a chain may be (a sandbox on MAX_CHAIN_DEPTH = 255 layers), mounted by the host backend:
// the overlay's options name 256 folders, far more than mount(2)'s one page takes with absolute paths. Every
// layer's change shows through; put leaves no union and no sandbox attached (the read-only layers linger, for
// the next union on them, until close). containerd's conformance suite has a case of 128.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inCI, makeTar, rootWithLoop, run, tempDir } from '@lcow/testkit';
import { MAX_CHAIN_DEPTH } from '@lcow/layerstore';
import { LcowDriver } from '../src/index.ts';

const ready = process.platform === 'linux' && rootWithLoop();
if (!ready && inCI) throw new Error('CI=true: the deep-chain test needs root with loop devices');

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-deep-');
});
afterAll(() => dir?.cleanup());

describe.runIf(ready)('a chain as deep as allowed (255 read-only layers, a sandbox on top) on the host backend', () => {
  it('mounts, reads every layer through the union, writes into a sandbox on top, and unmounts', async () => {
    process.env.LCOW_NOREEXEC = '1'; // 255 conversions in this process: no child start per layer
    const d = await LcowDriver.init(dir.path, ['lcow.backend=host']);
    try {
      let parent: string | null = null;
      for (let i = 0; i < MAX_CHAIN_DEPTH; i++) {
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
      expect((await fs.readFile('over')).toString()).toBe(`${MAX_CHAIN_DEPTH - 1}\n`);
      expect((await fs.readdir('only')).length).toBe(MAX_CHAIN_DEPTH);
      await fs.writeFile('new', 'written');
      expect((await fs.readFile('new')).toString()).toBe('written');
      await d.put('top');
      // No union, no sandbox attached; the read-only layers linger (held by nothing) for the next union.
      const st = await d.status();
      const disks = st.vms.flatMap((v) => v.disks);
      expect(st.vms.flatMap((v) => v.mounts)).toEqual([]);
      expect(disks.filter((x) => !x.readOnly || x.refs > 0)).toEqual([]);
      expect(disks.length).toBe(MAX_CHAIN_DEPTH);
      await d.close();
      // Closed: no loop device over any file of this root.
      expect((await run('losetup', ['-nl', '-O', 'BACK-FILE'])).split('\n').filter((l) => l.includes(d.root))).toEqual(
        [],
      );
    } finally {
      delete process.env.LCOW_NOREEXEC;
      await d.close();
    }
  }, 600_000);
});
