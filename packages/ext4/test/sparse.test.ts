// Sparse entries from GNU tar (old GNU "S" headers and pax sparse 0.1 / 1.0), including a file above 4 GiB.
import { execFile } from 'node:child_process';
import { mkdir, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oracle, pseudoRandomBytes, rootWithLoop, run, tempDir, withLoopMount } from '@lcow/testkit';
import { convert } from '../src/index.ts';

const execFileP = promisify(execFile);
const ready = oracle('e2fsck') && oracle('debugfs') && rootWithLoop();
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-sparse-');
});
afterAll(() => dir?.cleanup());

describe.skipIf(!ready)('sparse tar entries', () => {
  it.each([
    ['gnu', ['--format=gnu']],
    ['pax 0.1', ['--format=posix', '--sparse-version=0.1']],
    ['pax 1.0', ['--format=posix', '--sparse-version=1.0']],
  ])(
    '%s: a 4.5 GiB file with three data regions keeps its holes',
    async (name, fmt) => {
      const src = join(dir.path, `src-${name.replace(/\W/g, '')}`);
      await mkdir(src);
      const file = join(src, 'disk.img');
      const fh = await open(file, 'w');
      const size = 4.5 * 2 ** 30;
      await fh.truncate(size);
      const regions = [
        [0, 10_000, 1],
        [2 ** 32 + 4096 * 3 + 100, 70_000, 2],
        [size - 5000, 5000, 3],
      ] as const;
      for (const [at, len, seed] of regions) await fh.write(pseudoRandomBytes(len, seed), 0, len, at);
      await fh.close();
      const tar = join(dir.path, `s-${name.replace(/\W/g, '')}.tar`);
      await execFileP('tar', [...fmt, '--sparse', '-C', src, '-cf', tar, 'disk.img']);
      expect((await stat(tar)).size).toBeLessThan(10 << 20);
      const image = join(dir.path, `s-${name.replace(/\W/g, '')}.img`);
      const r = await convert(tar, image);
      expect(r.bytes).toBeLessThan(8 << 20); // holes are not stored
      await run('e2fsck', ['-fn', image]);
      expect(await run('debugfs', ['-R', 'stat /disk.img', image])).toMatch(/Size: 4831838208/);
      await withLoopMount(image, r.bytes, join(dir.path, `m-${name.replace(/\W/g, '')}`), async (m) => {
        const f = join(m, 'disk.img');
        expect((await stat(f)).size).toBe(size);
        const mounted = await open(f, 'r');
        try {
          // Each data region, and the bytes around it (holes must read as zeros).
          for (const [at, len, seed] of regions) {
            const from = Math.max(0, at - 8192);
            const to = Math.min(size, at + len + 8192);
            const buf = new Uint8Array(to - from);
            await mounted.read(buf, 0, buf.length, from);
            const want = new Uint8Array(to - from);
            want.set(pseudoRandomBytes(len, seed), at - from);
            expect(Buffer.compare(buf, want)).toBe(0);
          }
        } finally {
          await mounted.close();
        }
      });
    },
    120_000,
  );
});
