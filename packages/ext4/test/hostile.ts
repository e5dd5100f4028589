// Shared by the corruption and e2fsprogs-image tests: read everything a filesystem offers, with caps, and
// classify the outcome. Anything thrown that is not an Ext4Error is a bug and propagates.
import { cpuMs } from '@lcow/testkit';
import { Ext4Error, Ext4Fs, exportChunks, memorySource, type ChecksumPolicy } from '../src/index.ts';

export interface Outcome {
  result: 'ok' | Ext4Error['code'];
  entries: number;
  /** CPU milliseconds the case took (see cpuMs). */
  ms: number;
  message?: string;
}

const FILE_CAP = 1 << 20;
const TOTAL_CAP = 16 << 20;
const ENTRY_CAP = 50_000;

/**
 * Opens an image held in memory and reads all of it: walk, stat, xattrs, symlink targets, file contents
 * (the first MiB of each, 16 MiB in all), then a tar export (its first 16 MiB).
 */
export async function exercise(bytes: Uint8Array, checksums: ChecksumPolicy, name = 'case'): Promise<Outcome> {
  const started = cpuMs();
  let entries = 0;
  try {
    const fs = await Ext4Fs.open(memorySource(bytes, name), { checksums });
    let budget = TOTAL_CAP;
    for await (const e of fs.walk()) {
      if (++entries > ENTRY_CAP || budget <= 0) break;
      await e.xattrs();
      if (e.stat.type === 'symlink') await e.readlink();
      if (e.stat.type === 'file') {
        for await (const c of e.content(0, Math.min(e.stat.size, FILE_CAP))) budget -= c.length;
      }
    }
    let exported = 0;
    for await (const c of exportChunks(fs)) {
      exported += c.length;
      if (exported > TOTAL_CAP) break;
    }
    await fs.close();
    return { result: 'ok', entries, ms: cpuMs() - started };
  } catch (e) {
    if (e instanceof Ext4Error) return { result: e.code, entries, ms: cpuMs() - started, message: e.message };
    throw e;
  }
}
