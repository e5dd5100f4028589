// The README's usage example, run verbatim in a folder holding a layer.tar.
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { makeTar, runReadmeExample } from '@lcow/testkit';
import { readFooter } from '@lcow/vhd';
import { Ext4Fs, convert } from '../src/index.ts';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    () =>
      writeFile(
        'layer.tar',
        makeTar([
          { path: 'etc/os-release', body: 'ID=lcow\n' },
          { path: '.wh.old', body: '' },
        ]),
      ),
    async (logs) => {
      expect(String(logs[0]?.[0])).toMatch(/^\d+ bytes, 2 entries, uuid [0-9a-f-]{36}$/);
      expect((await readFooter('layer.vhd')).currentSize).toBe((await stat('layer.vhd')).size - 512);
    },
  );
});

it('README reader example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {
      await writeFile(
        'layer.tar',
        makeTar([
          { path: 'etc/os-release', body: 'ID=lcow\n' },
          { path: 'bin/sh', type: 'symlink', linkname: 'dash' },
        ]),
      );
      await convert('layer.tar', 'layer.vhd', { appendVhdFooter: true });
    },
    async (logs) => {
      expect(logs[0]).toEqual([['os-release'], 'dash']);
      const fs = await Ext4Fs.open('sandbox.vhdx');
      expect(fs.info.size).toBe(20 * 2 ** 30);
      await fs.close();
    },
    { block: 1 },
  );
});
