// Files the `lcow` command writes whole, through @lcow/durable: a temporary name nobody can predict, created
// exclusively (never through a link planted under that name), renamed over the output only when complete.
import type { Readable } from 'node:stream';
import { writeFileDurable } from '@lcow/durable';

/**
 * Writes `data` into file `out` durably: a failure (or an abort) leaves no partial output and no temporary
 * file; a symlink at the temporary name is never followed.
 */
export async function writeFileWhole(
  data: Readable | AsyncIterable<Uint8Array>,
  out: string,
  signal?: AbortSignal,
): Promise<void> {
  await writeFileDurable(out, data as AsyncIterable<Uint8Array>, signal ? { signal } : {});
}
