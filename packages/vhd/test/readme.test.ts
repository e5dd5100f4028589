// The README's usage example, run verbatim in an empty folder.
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { oracle, run, tempDir } from '@lcow/testkit';

it.skipIf(!oracle('mkfs.ext4'))('README example runs as written', async () => {
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
    await run('truncate', ['-s', '8M', 'layer.img']);
    await run('mkfs.ext4', ['-q', '-F', 'layer.img']);
    console.log = (...a: unknown[]) => logs.push(a);
    await import(example);
    expect((await stat('layer.img')).size).toBe(8 * 2 ** 20 + 512);
    expect(logs[0]?.[1]).toBe(20 * 2 ** 30);
    expect(new TextDecoder().decode(logs[0]?.[0] as Uint8Array)).toBe('hello');
  } finally {
    console.log = log;
    process.chdir(cwd);
    await rm(example, { force: true });
    await dir.cleanup();
  }
});
