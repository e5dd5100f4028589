// Files the `lcow` command writes whole, through @lcow/durable: a temporary name nobody can predict, created
// exclusively (never through a link planted under that name), renamed over the output only when complete.
import { lstat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { writeFileDurable } from '@lcow/durable';
import { DriverError } from '../errors.ts';

/**
 * Refuses, before any work, an output that exists when `--force` was not given (every command alike). The
 * write itself checks again at the end: a file that appears meanwhile is not replaced either.
 */
export async function checkOutput(out: string, force: boolean): Promise<void> {
  if (force) return;
  const there = await lstat(out).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      throw e;
    },
  );
  if (there) throw new DriverError('ERR_EXISTS', `${out}: already exists (--force to replace it)`);
}

/**
 * Writes `data` into file `out` durably: a failure (or an abort) leaves no partial output and no temporary
 * file; a symlink at the temporary name is never followed; an existing `out` is replaced only with `force`.
 */
export async function writeFileWhole(
  data: Readable | AsyncIterable<Uint8Array>,
  out: string,
  opts: { signal?: AbortSignal; force: boolean },
): Promise<void> {
  await writeFileDurable(out, data as AsyncIterable<Uint8Array>, {
    overwrite: opts.force,
    ...(opts.signal ? { signal: opts.signal } : {}),
  }).catch((e: unknown) => {
    throw (e as { code?: string }).code === 'ERR_EXISTS'
      ? new DriverError('ERR_EXISTS', `${out}: already exists (--force to replace it)`, { cause: e })
      : e;
  });
}
