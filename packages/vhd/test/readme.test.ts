// The README's usage example, run verbatim in an empty folder holding an ext4 image.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { oracle, run, runReadmeExample } from '@lcow/testkit';

it.skipIf(!oracle('mkfs.ext4'))('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {
      await run('truncate', ['-s', '8M', 'layer.img']);
      await run('mkfs.ext4', ['-q', '-F', 'layer.img']);
    },
    async (logs) => {
      expect((await stat('layer.img')).size).toBe(8 * 2 ** 20 + 512);
      expect(logs[0]?.[1]).toBe(20 * 2 ** 30);
      expect(new TextDecoder().decode(logs[0]?.[0] as Uint8Array)).toBe('hello');
    },
  );
});
