import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from './index.ts';

let examples = 0;

/**
 * Runs a ```ts block of a package README (the first unless `opts.block` says which) verbatim, in a fresh folder that `prepare` fills, then
 * calls `check` there with what the example logged. The example is written next to the tests so it
 * resolves the package's imports.
 */
export async function runReadmeExample(
  packageDir: string,
  prepare: () => Promise<void>,
  check: (logs: unknown[][]) => Promise<void> | void,
  opts: { block?: number } = {},
): Promise<void> {
  const readme = await readFile(join(packageDir, 'README.md'), 'utf8');
  const code = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)][opts.block ?? 0]?.[1];
  if (!code) throw new Error(`${packageDir}/README.md has no ts example number ${opts.block ?? 0}`);
  const here = join(packageDir, 'test', '.readme');
  await mkdir(here, { recursive: true });
  // A new name per call: an ES module is imported once per URL.
  const example = join(here, `example-${process.pid}-${++examples}.ts`);
  await writeFile(example, code);
  const dir = await tempDir('lcow-readme-');
  const cwd = process.cwd();
  const logs: unknown[][] = [];
  const log = console.log;
  try {
    process.chdir(dir.path);
    await prepare();
    console.log = (...a: unknown[]) => logs.push(a);
    await import(example);
    console.log = log;
    await check(logs);
  } finally {
    console.log = log;
    process.chdir(cwd);
    await rm(example, { force: true });
    await dir.cleanup();
  }
}
