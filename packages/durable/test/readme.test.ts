// The README's usage example, run verbatim in an empty folder.
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runReadmeExample } from '@lcow/testkit';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {},
    async (logs) => {
      expect(logs[0]).toEqual(['disk.img', true]);
      expect(JSON.parse(await readFile('state.json', 'utf8'))).toEqual({ layers: 3 });
      expect((await stat('state.json')).mode & 0o777).toBe(0o600);
      expect((await stat('disk.img')).size).toBe(4096 + 15);
      expect((await readdir('.')).sort()).toEqual(['disk.img', 'state.json']);
    },
  );
});
