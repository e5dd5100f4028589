// Crash-safe file-system steps: a file is written under a temporary name, fsynced, renamed over its final
// name, and the directory fsynced, so after a crash either the old or the new content is there, whole.
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ownerToken } from './owner.ts';

/**
 * fsync of a directory, so a rename or unlink in it is durable. Windows cannot open a directory for this
 * (NTFS journals its metadata itself), so there it does nothing.
 */
export async function fsyncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch (e) {
    // Filesystems without directory fsync (some FUSE and network ones) say so; that is not a failure here.
    if (!['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  } finally {
    await fh.close();
  }
}

/**
 * A temporary name next to `path`, starting with a dot so listings skip it, naming its owner process (so a
 * cleanup removes it only once that process is gone) and unpredictable.
 */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}-o${ownerToken()}-${randomBytes(8).toString('hex')}.tmp`);
}

/** Writes `data` to `path` atomically (temporary file, fsync, rename, directory fsync). */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempNameFor(path);
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dirname(path));
}
