import { join } from 'node:path';
import { expect, it } from 'vitest';
import { runReadmeExample } from '@lcow/testkit';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    async () => {},
    (logs) => {
      expect(logs[0]).toEqual([
        ['/tmp/d1', '/tmp/d2'],
        'mount -t overlay overlay -o lowerdir=/tmp/d2,upperdir=/tmp/d1/upper,workdir=/tmp/d1/work /tmp/c1-mount',
      ]);
    },
  );
});
