import { join } from 'node:path';
import { expect, it } from 'vitest';
import { rootWithLoop, runReadmeExample } from '@lcow/testkit';

it.runIf(process.platform === 'linux' && rootWithLoop())('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {},
    (logs) => {
      expect(logs[0]).toEqual([['layer-1 committed']]);
    },
  );
});
