// The README's usage example, run verbatim in a folder holding a layer.tar.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { makeTar, runReadmeExample } from '@lcow/testkit';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    () => writeFile('layer.tar', makeTar([{ path: 'etc/os-release', body: 'ID=lcow\n' }])),
    (logs) => {
      expect(logs).toEqual([[8, 'bytes applied'], ['ID=lcow\n']]);
    },
  );
});
