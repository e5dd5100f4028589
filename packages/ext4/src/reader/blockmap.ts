// Logical → physical block mapping: extent trees of any depth and ext2/3 block maps (direct, single,
// double and triple indirect). Both walk only what the requested range needs, read each tree block once,
// and check every pointer, so a corrupt tree costs at most one read per block it names.
import { extentBlockChecksum } from '../csum.ts';
import {
  EXTENT_MAGIC,
  Extent,
  ExtentHeader,
  ExtentIndex,
  ExtentTail,
  MAX_EXTENT_DEPTH,
  MAX_EXTENT_LEN,
} from '../format/extent.ts';
import { DIRECT_BLOCKS, InodeFlags } from '../format/inode.ts';
import type { InodeRecord, Volume } from './volume.ts';

/** `len` logical blocks from `logical`, stored from `physical`; unwritten ones read as zeros. */
export interface BlockRun {
  logical: number;
  physical: number;
  len: number;
  unwritten: boolean;
}

const le32 = (b: Uint8Array, at: number): number =>
  (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

/**
 * The mapped runs of `inode` that meet logical blocks [from, end), in logical order, merged where they
 * are contiguous. Holes are simply absent. `what` names the file in messages.
 */
export async function* blockRuns(
  vol: Volume,
  inode: InodeRecord,
  from: number,
  end: number,
  what: string,
): AsyncGenerator<BlockRun> {
  const source =
    inode.flags & InodeFlags.EXTENTS ? extentRuns(vol, inode, from, end, what) : mapRuns(vol, inode, from, end, what);
  // No file can own more blocks than the image holds: a corrupt tree whose pointers all name the same
  // blocks would otherwise map (and a reader read) terabytes out of a small image.
  const limit = Math.min(vol.blocksCount, Math.ceil(vol.source.size / vol.blockSize));
  let mapped = 0;
  let pending: BlockRun | null = null;
  for await (const r of source) {
    mapped += r.len;
    if (mapped > limit)
      throw vol.corrupt(`inode ${inode.ino} (${what}): maps more than the ${limit} blocks of the image`);
    const s = Math.max(r.logical, from);
    const e = Math.min(r.logical + r.len, end);
    if (e <= s) continue;
    const run = { logical: s, physical: r.physical + (s - r.logical), len: e - s, unwritten: r.unwritten };
    if (
      pending &&
      pending.unwritten === run.unwritten &&
      pending.logical + pending.len === run.logical &&
      pending.physical + pending.len === run.physical
    ) {
      pending.len += run.len;
      continue;
    }
    if (pending) yield pending;
    pending = run;
  }
  if (pending) yield pending;
}

async function* extentRuns(
  vol: Volume,
  inode: InodeRecord,
  from: number,
  end: number,
  what: string,
): AsyncGenerator<BlockRun> {
  const visited = new Set<number>();
  let next = 0; // logical blocks must strictly increase across the whole tree
  const where = `inode ${inode.ino} (${what}) extent tree`;

  async function* node(
    buf: Uint8Array,
    capacity: number,
    expectDepth: number | null,
    label: string,
  ): AsyncGenerator<BlockRun> {
    const h = ExtentHeader.decode(buf);
    if (h.magic !== EXTENT_MAGIC) throw vol.corrupt(`${where}: ${label}: bad magic 0x${h.magic.toString(16)}`);
    if (h.max > capacity || h.entries > h.max)
      throw vol.corrupt(`${where}: ${label}: ${h.entries} entries, max ${h.max}, room for ${capacity}`);
    if (h.depth > MAX_EXTENT_DEPTH || (expectDepth !== null && h.depth !== expectDepth))
      throw vol.corrupt(
        `${where}: ${label}: depth ${h.depth}${expectDepth === null ? '' : `, expected ${expectDepth}`}`,
      );
    if (h.depth === 0) {
      for (let i = 0; i < h.entries; i++) {
        const e = Extent.decode(buf, ExtentHeader.size + i * Extent.size);
        const unwritten = e.len > MAX_EXTENT_LEN;
        const len = unwritten ? e.len - MAX_EXTENT_LEN : e.len;
        const physical = e.startLo + e.startHi * 2 ** 32;
        if (len === 0) throw vol.corrupt(`${where}: ${label}: extent ${i} has length 0`);
        if (e.block < next)
          throw vol.corrupt(`${where}: ${label}: extent ${i} at block ${e.block} overlaps or is out of order`);
        if (e.block + len > 2 ** 32) throw vol.corrupt(`${where}: ${label}: extent ${i} runs past logical block 2^32`);
        vol.checkRange(physical, len, `${where}: ${label}: extent ${i}`);
        next = e.block + len;
        if (e.block >= end) return;
        yield { logical: e.block, physical, len, unwritten };
      }
      return;
    }
    for (let i = 0; i < h.entries; i++) {
      const ix = ExtentIndex.decode(buf, ExtentHeader.size + i * ExtentIndex.size);
      const nextStart =
        i + 1 < h.entries ? ExtentIndex.get(buf, 'block', ExtentHeader.size + (i + 1) * ExtentIndex.size) : 2 ** 32;
      if (nextStart <= ix.block) throw vol.corrupt(`${where}: ${label}: index ${i + 1} is out of order`);
      if (ix.block >= end) return;
      if (nextStart <= from) {
        next = nextStart; // the whole subtree lies before the range
        continue;
      }
      const child = ix.leafLo + ix.leafHi * 2 ** 32;
      if (visited.has(child)) throw vol.corrupt(`${where}: block ${child} appears twice in the tree`);
      visited.add(child);
      const blk = await vol.block(child, `${where} block`);
      const cap = Math.floor((vol.blockSize - ExtentHeader.size - ExtentTail.size) / Extent.size);
      const hdrMax = ExtentHeader.get(blk, 'max');
      if (vol.verifiesChecksums && hdrMax <= cap) {
        const tailAt = ExtentHeader.size + hdrMax * Extent.size;
        const want = extentBlockChecksum(inode.csumSeed, blk, tailAt);
        const stored = ExtentTail.get(blk, 'checksum', tailAt);
        if (want !== stored)
          vol.checksumMismatch(
            `${where} block ${child}: checksum 0x${stored.toString(16)}, computed 0x${want.toString(16)}`,
          );
      }
      yield* node(blk, cap, h.depth - 1, `block ${child}`);
    }
  }

  yield* node(inode.iblock, 4, null, 'root');
}

/** ext2/3 block maps: i_block holds 12 direct pointers and the roots of three indirect trees. */
async function* mapRuns(
  vol: Volume,
  inode: InodeRecord,
  from: number,
  end: number,
  what: string,
): AsyncGenerator<BlockRun> {
  const where = `inode ${inode.ino} (${what}) block map`;
  const per = vol.blockSize / 4;
  const check = (ptr: number, label: string): void => vol.checkRange(ptr, 1, `${where}: ${label}`);
  // Each indirect block is read once: a map whose pointers loop back costs one read per block it names.
  const visited = new Set<number>();
  for (let i = Math.max(0, from); i < DIRECT_BLOCKS && i < end; i++) {
    const ptr = le32(inode.iblock, i * 4);
    if (ptr === 0) continue;
    check(ptr, `direct pointer ${i}`);
    yield { logical: i, physical: ptr, len: 1, unwritten: false };
  }
  // Indirect tree of `level` (1 single, 2 double, 3 triple) rooted at `ptr`, covering logical blocks from `base`.
  async function* tree(ptr: number, level: number, base: number): AsyncGenerator<BlockRun> {
    const span = per ** (level - 1); // logical blocks per pointer in this block
    if (visited.has(ptr)) throw vol.corrupt(`${where}: indirect block ${ptr} appears twice in the map`);
    visited.add(ptr);
    const blk = await vol.block(ptr, `${where} indirect block`);
    const first = Math.max(0, Math.floor((from - base) / span));
    for (let i = first; i < per; i++) {
      const start = base + i * span;
      if (start >= end) return;
      const p = le32(blk, i * 4);
      if (p === 0) continue;
      check(p, `indirect pointer at logical ${start}`);
      if (level === 1) yield { logical: start, physical: p, len: 1, unwritten: false };
      else yield* tree(p, level - 1, start);
    }
  }
  let base = DIRECT_BLOCKS;
  for (let level = 1; level <= 3; level++) {
    const span = per ** level;
    const root = le32(inode.iblock, (DIRECT_BLOCKS + level - 1) * 4);
    if (base >= end) return;
    if (root !== 0 && base + span > from) {
      check(root, `level-${level} root`);
      yield* tree(root, level, base);
    }
    base += span;
  }
}
