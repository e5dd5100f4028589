import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runReadmeExample } from '@lcow/testkit';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {},
    (logs) => {
      expect(logs[0]).toEqual(['{"Implements":["GraphDriver"]}']);
    },
  );
});
