import { join } from 'node:path';
import { expect, it } from 'vitest';
import { makeTar, runReadmeExample } from '@lcow/testkit';
import { dockerSave, sha } from './build.ts';

it('README example runs as written', async () => {
  const tars = [makeTar([{ path: 'a', body: 'one' }]), makeTar([{ path: 'b', body: 'two' }])];
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    () => dockerSave('image.tar', tars, 'example:1', [true, false]),
    (logs) => {
      expect(logs).toEqual([[['example:1'], 2], ...tars.map((t) => [sha(t), t.length])]);
    },
  );
});
