import { createReadStream } from 'node:fs';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { run, snapshotTree, withLoopMount, type FsEntry } from '@lcow/testkit';
import { convert, type ConvertOptions, type ConvertResult } from '../src/index.ts';

let n = 0;

/** Converts tar bytes with our writer, checks the image with `e2fsck -fn`, and returns paths and result. */
export async function convertChecked(
  dir: string,
  tar: Uint8Array,
  opts: ConvertOptions = {},
): Promise<{ image: string; result: ConvertResult }> {
  const id = n++;
  const tarPath = join(dir, `in${id}.tar`);
  await writeFile(tarPath, tar);
  const image = join(dir, `out${id}.${opts.appendVhdFooter ? 'vhd' : 'img'}`);
  const result = await convert(createReadStream(tarPath), image, opts);
  expect((await stat(image)).size).toBe(result.size);
  await run('e2fsck', ['-fn', image]);
  return { image, result };
}

/** Mounts an image read-only (the footer hidden by the size limit) and snapshots it. */
export function mountedTree(image: string, result: ConvertResult, mnt: string): Promise<Map<string, FsEntry>> {
  return withLoopMount(image, result.bytes, mnt, (m) => snapshotTree(m, { skip: (rel) => rel === 'lost+found' }));
}

/** No temporary files left next to an output. */
export async function expectNoLeftovers(dir: string): Promise<void> {
  expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
}
