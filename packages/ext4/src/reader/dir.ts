// Directory entries: linear blocks, hash-tree directories (read linearly: their index nodes look like
// one empty entry spanning the block), and inline directories. Checksums of leaf blocks (dirent tail) and
// of index nodes (dx_tail) are verified under metadata_csum.
import { dirBlockChecksum, dxChecksum } from '../csum.ts';
import { Incompat } from '../format/constants.ts';
import {
  DIR_TAIL_FILE_TYPE,
  DX_NODE_COUNT_OFFSET,
  DX_ROOT_COUNT_OFFSET,
  DirEntryHeader,
  DirEntryTail,
  DxCountLimit,
  DxRootInfo,
  DxTail,
} from '../format/dirent.ts';
import { I_BLOCK_SIZE, InodeFlags } from '../format/inode.ts';
import { blockRuns } from './blockmap.ts';
import type { InodeRecord, Volume } from './volume.ts';
import { inlineDataTail } from './xattr.ts';

/** One directory entry as stored: name bytes, inode number, and the dirent file type (0 when absent). */
export interface RawDirent {
  name: Buffer;
  ino: number;
  fileType: number;
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

function recLenFromDisk(len: number, blockSize: number): number {
  // 64 KiB blocks cannot store rec_len 65536 in 16 bits: 65535 or 0 mean "to the end of the block".
  if (blockSize < 65536) return len;
  if (len === 65535 || len === 0) return blockSize;
  return (len & 65532) | ((len & 3) << 16);
}

/** Parses entries in `buf[start, end)`. `where` names the block for messages. */
function* parse(vol: Volume, buf: Uint8Array, start: number, end: number, where: string): Generator<RawDirent> {
  const hasType = (vol.sb.featureIncompat & Incompat.filetype) !== 0;
  let at = start;
  while (at < end) {
    if (at + DirEntryHeader.size > end) throw vol.corrupt(`${where}: entry header at ${at} runs past the block`);
    const h = DirEntryHeader.decode(buf, at);
    const recLen = recLenFromDisk(h.recLen, vol.blockSize);
    const nameLen = h.nameLen;
    if (recLen < 12 || recLen % 4 !== 0 || at + recLen > end || DirEntryHeader.size + nameLen > recLen)
      throw vol.corrupt(`${where}: entry at ${at}: rec_len ${recLen}, name_len ${nameLen}`);
    if (h.inode !== 0) {
      if (h.inode > vol.inodesCount) throw vol.corrupt(`${where}: entry at ${at} names inode ${h.inode}`);
      if (nameLen === 0) throw vol.corrupt(`${where}: entry at ${at} has an empty name`);
      const name = Buffer.from(buf.buffer, buf.byteOffset + at + DirEntryHeader.size, nameLen);
      if (name.includes(0x2f) || name.includes(0))
        throw vol.corrupt(`${where}: entry at ${at}: name contains '/' or NUL`);
      yield { name: Buffer.from(name), ino: h.inode, fileType: hasType ? h.fileType : 0 };
    }
    at += recLen;
  }
}

/** Verifies a block's checksum; returns where its entries end (before a dirent tail), or null for index nodes. */
function checkBlock(vol: Volume, dir: InodeRecord, blk: Uint8Array, logical: number, where: string): number | null {
  const bs = vol.blockSize;
  const indexed = (dir.flags & InodeFlags.INDEX) !== 0;
  const first = DirEntryHeader.decode(blk, 0);
  // An htree index node: the root (block 0, with "." and a ".." spanning the rest), or an interior node
  // (an empty entry spanning the block).
  const isRoot = indexed && logical === 0 && first.nameLen === 1 && blk[8] === 0x2e && first.recLen === 12;
  const isNode =
    indexed && logical > 0 && first.inode === 0 && recLenFromDisk(first.recLen, bs) === bs && first.nameLen === 0;
  if (isRoot || isNode) {
    if (isRoot) {
      const info = DxRootInfo.decode(blk, 24);
      if (info.infoLength !== 8 || info.indirectLevels > 3) return bs; // not a sane dx root: read it as linear
    }
    const countAt = isRoot ? DX_ROOT_COUNT_OFFSET : DX_NODE_COUNT_OFFSET;
    const { limit, count } = DxCountLimit.decode(blk, countAt);
    if (vol.verifiesChecksums) {
      const tailAt = countAt + limit * 8;
      if (count > limit || tailAt + DxTail.size > bs) {
        vol.checksumMismatch(`${where}: htree node count ${count}, limit ${limit}: no room for its checksum`);
      } else {
        const want = dxChecksum(dir.csumSeed, blk, countAt, count, tailAt);
        const stored = DxTail.get(blk, 'checksum', tailAt);
        if (want !== stored)
          vol.checksumMismatch(`${where}: htree checksum 0x${stored.toString(16)}, computed 0x${want.toString(16)}`);
      }
    }
    // The root's ".." spans the index, so parsing it linearly yields "." and ".." only.
    return isRoot ? bs : null;
  }
  if (!vol.verifiesChecksums) return bs;
  const tailAt = bs - DirEntryTail.size;
  const t = DirEntryTail.decode(blk, tailAt);
  if (t.inode !== 0 || t.recLen !== DirEntryTail.size || t.nameLen !== 0 || t.fileType !== DIR_TAIL_FILE_TYPE) {
    vol.checksumMismatch(`${where}: no checksum tail`);
    return bs;
  }
  const want = dirBlockChecksum(dir.csumSeed, blk);
  if (want !== t.checksum >>> 0)
    vol.checksumMismatch(`${where}: checksum 0x${(t.checksum >>> 0).toString(16)}, computed 0x${want.toString(16)}`);
  return tailAt;
}

/**
 * Every entry of a directory, "." and ".." included when stored (an inline directory stores only its
 * parent, reported as ".."), in on-disk order.
 */
export async function* dirEntries(vol: Volume, dir: InodeRecord, what: string): AsyncGenerator<RawDirent> {
  if (dir.flags & InodeFlags.INLINE_DATA) {
    const where = `inode ${dir.ino} (${what}) inline directory`;
    const parent = DirEntryHeader.get(dir.iblock, 'inode', 0);
    if (parent === 0 || parent > vol.inodesCount) throw vol.corrupt(`${where}: parent inode ${parent}`);
    yield { name: DOT, ino: dir.ino, fileType: 2 };
    yield { name: DOTDOT, ino: parent, fileType: 2 };
    yield* parse(vol, dir.iblock, 4, I_BLOCK_SIZE, where);
    const tail = await inlineDataTail(vol, dir, what);
    if (tail.length > 0) yield* parse(vol, tail, 0, tail.length, `${where} (system.data)`);
    return;
  }
  const bs = vol.blockSize;
  const blocks = Math.ceil(dir.size / bs);
  for await (const run of blockRuns(vol, dir, 0, blocks, what)) {
    for (let i = 0; i < run.len; i++) {
      const logical = run.logical + i;
      const where = `inode ${dir.ino} (${what}) directory block ${logical}`;
      if (run.unwritten) continue;
      const blk = await vol.block(run.physical + i, where);
      const end = checkBlock(vol, dir, blk, logical, where);
      if (end !== null) yield* parse(vol, blk, 0, end, where);
    }
  }
}
