// File contents: inline data, or mapped blocks read in large positioned reads, holes and unwritten
// extents as zeros. Reads are bounded by the requested range and by i_size, never by a stored count.
import { I_BLOCK_SIZE, InodeFlags } from '../format/inode.ts';
import { blockRuns } from './blockmap.ts';
import type { InodeRecord, Volume } from './volume.ts';
import { inlineDataTail } from './xattr.ts';

/** Largest single read from the image, and the size of the chunks handed on. */
export const CHUNK = 1 << 20;
const ZEROS = new Uint8Array(CHUNK);

/** The bytes of an inline-data inode (i_block, then the system.data attribute), cut to i_size. */
export async function inlineData(vol: Volume, inode: InodeRecord, what: string): Promise<Uint8Array> {
  const head = inode.iblock.subarray(0, Math.min(inode.size, I_BLOCK_SIZE));
  if (inode.size <= I_BLOCK_SIZE) return head.slice();
  const tail = await inlineDataTail(vol, inode, what);
  if (I_BLOCK_SIZE + tail.length < inode.size)
    throw vol.corrupt(
      `inode ${inode.ino} (${what}): inline data of ${I_BLOCK_SIZE + tail.length} bytes, i_size ${inode.size}`,
    );
  return Buffer.concat([head, tail.subarray(0, inode.size - I_BLOCK_SIZE)]);
}

/**
 * Bytes [start, end) of a file (end clamped to i_size), as chunks of at most {@link CHUNK} bytes. Zero
 * chunks may be shared: consumers must not modify them.
 */
export async function* fileChunks(
  vol: Volume,
  inode: InodeRecord,
  what: string,
  start = 0,
  end = inode.size,
  signal?: AbortSignal,
): AsyncGenerator<Uint8Array> {
  end = Math.min(end, inode.size);
  if (start >= end) return;
  if (inode.flags & InodeFlags.INLINE_DATA) {
    yield (await inlineData(vol, inode, what)).subarray(start, end);
    return;
  }
  const bs = vol.blockSize;
  let pos = start;
  const zeros = function* (upTo: number): Generator<Uint8Array> {
    while (pos < upTo) {
      const n = Math.min(CHUNK, upTo - pos);
      pos += n;
      yield ZEROS.subarray(0, n);
    }
  };
  const firstBlock = Math.floor(start / bs);
  const endBlock = Math.ceil(end / bs);
  for await (const run of blockRuns(vol, inode, firstBlock, endBlock, what)) {
    signal?.throwIfAborted();
    const runStart = Math.max(run.logical * bs, start);
    const runEnd = Math.min((run.logical + run.len) * bs, end);
    yield* zeros(runStart);
    if (run.unwritten) {
      yield* zeros(runEnd);
      continue;
    }
    while (pos < runEnd) {
      const n = Math.min(CHUNK, runEnd - pos);
      const at = run.physical * bs + (pos - run.logical * bs);
      const buf = await vol.readBytes(at, n, `inode ${inode.ino} (${what}) data`);
      pos += n;
      yield buf;
    }
  }
  yield* zeros(end);
}

/** Reads bytes [start, start + length) of a file into one buffer (shorter at end of file). */
export async function readRange(
  vol: Volume,
  inode: InodeRecord,
  what: string,
  start: number,
  length: number,
): Promise<Uint8Array> {
  const end = Math.min(inode.size, start + length);
  const out = new Uint8Array(Math.max(0, end - start));
  let at = 0;
  for await (const c of fileChunks(vol, inode, what, start, end)) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
