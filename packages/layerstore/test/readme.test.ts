import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runReadmeExample } from '@lcow/testkit';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {},
    async (logs) => {
      expect(logs[0]).toEqual([['base'], 'layer']);
      expect((await readdir('lcow-data')).sort()).toEqual(['base', 'cache', 'scratch', 'tmp']);
      expect(await readFile('lcow-data/base/layer.vhd', 'utf8')).toBe('ext4 + footer');
    },
  );
});
