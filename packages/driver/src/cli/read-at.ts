import type { FileHandle } from 'node:fs/promises';

/**
 * A positioned reader over an open file: `length` bytes at `offset`, fewer at the end of the file or of
 * `limit` (a payload that stops before a footer).
 */
export function readerOf(
  fh: FileHandle,
  limit = Number.MAX_SAFE_INTEGER,
): (offset: number, length: number) => Promise<Uint8Array> {
  return async (offset, length) => {
    const buf = new Uint8Array(Math.max(0, Math.min(length, limit - offset)));
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    return buf.subarray(0, bytesRead);
  };
}
