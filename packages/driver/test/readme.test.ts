// The README's usage example, run verbatim in a folder holding a layer.tar.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { dockerSave, layerTars, makeTar, runReadmeExample } from '@lcow/testkit';

it('README example runs as written', async () => {
  await runReadmeExample(
    join(import.meta.dirname, '..'),
    () => writeFile('layer.tar', makeTar([{ path: 'etc/os-release', body: 'ID=lcow\n' }])),
    (logs) => {
      expect(logs).toEqual([[8, 'bytes applied'], ['ID=lcow\n']]);
    },
  );
});

// The dmverity-vhd examples: the lines hcsshim's tool printed for this archive (fixtures/dmverity-golden.json).
const golden = (
  JSON.parse(await readFile(join(import.meta.dirname, 'fixtures/dmverity-golden.json'), 'utf8')) as Record<
    string,
    { lines: string[] }
  >
).seed1!.lines;

for (const block of [1, 2])
  it(`README dmverity-vhd example ${block} prints dmverity-vhd's lines`, async () => {
    await runReadmeExample(
      join(import.meta.dirname, '..'),
      // As make-dmverity-golden.ts builds it.
      () => dockerSave('app.tar', layerTars(1), 'lcow/golden:1', [true, false, false]),
      (logs) => {
        expect(logs.map((l) => l[0])).toEqual(golden);
      },
      { block },
    );
  });
