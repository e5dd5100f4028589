import { open } from 'node:fs/promises';

/** Makes a rename in `dir` durable. Some filesystems refuse fsync on directories; that is not an error here. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r').catch(() => undefined);
  if (!fh) return;
  try {
    await fh.sync();
  } catch {
    // EINVAL/EISDIR on filesystems without directory fsync.
  } finally {
    await fh.close();
  }
}
