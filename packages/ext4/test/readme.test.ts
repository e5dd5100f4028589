// The README's usage example, run verbatim in a folder holding a layer.tar.
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { makeTar, tempDir } from '@lcow/testkit';
import { readFooter } from '@lcow/vhd';

it('README example runs as written', async () => {
  const readme = await readFile(join(import.meta.dirname, '..', 'README.md'), 'utf8');
  const code = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code).toBeDefined();
  const here = join(import.meta.dirname, '.readme');
  await mkdir(here, { recursive: true });
  const example = join(here, `example-${process.pid}.ts`);
  await writeFile(example, code!);
  const dir = await tempDir('lcow-readme-');
  const cwd = process.cwd();
  const logs: unknown[][] = [];
  const log = console.log;
  try {
    process.chdir(dir.path);
    await writeFile(
      'layer.tar',
      makeTar([
        { path: 'etc/os-release', body: 'ID=lcow\n' },
        { path: '.wh.old', body: '' },
      ]),
    );
    console.log = (...a: unknown[]) => logs.push(a);
    await import(example);
    expect(String(logs[0]?.[0])).toMatch(/^\d+ bytes, 2 entries, uuid [0-9a-f-]{36}$/);
    expect((await readFooter('layer.vhd')).currentSize).toBe((await stat('layer.vhd')).size - 512);
  } finally {
    console.log = log;
    process.chdir(cwd);
    await rm(example, { force: true });
    await dir.cleanup();
  }
});
