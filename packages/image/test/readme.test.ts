import { join } from 'node:path';
import { expect, it } from 'vitest';
import { dockerSave, makeTar, runReadmeExample, sha } from '@lcow/testkit';

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
