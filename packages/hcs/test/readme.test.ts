import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runReadmeExample } from '@lcow/testkit';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {},
    (logs) => {
      expect(logs).toEqual([
        ['HCS_E_SYSTEM_NOT_FOUND'],
        ['HcsStartComputeSystem: start failed: HCS_E_SYSTEM_ALREADY_STOPPED (0xC0370110)'],
      ]);
    },
  );
});
