// Crash-safe file-system steps: a file is written under a temporary name, fsynced, renamed over its final
// name, and the directory fsynced, so after a crash either the old or the new content is there, whole.
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { writeFileDurable } from '@lcow/durable';
import { ownerToken } from './owner.ts';

export { fsyncDir } from '@lcow/durable';

/**
 * A temporary name next to `path`, starting with a dot so listings skip it, naming its owner process (so a
 * cleanup removes it only once that process is gone) and unpredictable.
 */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}-o${ownerToken()}-${randomBytes(8).toString('hex')}.tmp`);
}

/** Writes `data` to `path` atomically (temporary file named for its owner, fsync, rename, folder fsync). */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await writeFileDurable(path, data, { tempPath: tempNameFor(path) });
}
