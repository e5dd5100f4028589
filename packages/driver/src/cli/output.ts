// Files the `lcow` command writes whole: a temporary name that nobody can predict, created exclusively
// (O_EXCL never follows a link planted under that name), renamed over the output only when complete.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';

/** `.NAME.<random>.tmp` beside `out`. */
export function outputTempName(out: string): string {
  return join(dirname(out), `.${basename(out)}.${randomBytes(12).toString('hex')}.tmp`);
}

/**
 * Writes `data` into file `out` through an exclusive temporary file: a failure (or an abort) leaves no
 * partial output and no temporary file; a symlink at the temporary name is never followed.
 */
export async function writeFileWhole(
  data: Readable | AsyncIterable<Uint8Array>,
  out: string,
  signal?: AbortSignal,
): Promise<void> {
  const tmp = outputTempName(out);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    for await (const chunk of data as AsyncIterable<Uint8Array>) {
      signal?.throwIfAborted();
      await fh.write(chunk);
    }
    await fh.sync();
    await fh.close();
    await rename(tmp, out);
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
}
