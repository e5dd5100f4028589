// Where an empty filesystem's metadata goes: group count, inodes per group, superblock backups
// (sparse_super2: groups 1 and last), and per flex group (16 groups) the block bitmaps, inode bitmaps and
// inode tables packed at the start of the flex group's first group, as mke2fs places them.
import { Ext4Error } from '../errors.ts';
import { DESC_SIZE_64 } from '../format/group.ts';

export const MKFS_BLOCK_SIZE = 4096;
export const MKFS_INODE_SIZE = 256;
export const BLOCKS_PER_GROUP = MKFS_BLOCK_SIZE * 8;
export const LOG_GROUPS_PER_FLEX = 4;
const GROUPS_PER_FLEX = 1 << LOG_GROUPS_PER_FLEX;
const INODES_PER_BLOCK = MKFS_BLOCK_SIZE / MKFS_INODE_SIZE;
/** lost+found gets 16 KiB of directory blocks up front, so e2fsck can reconnect files without allocating. */
export const LOST_FOUND_BLOCKS = 4;
export const MIN_SIZE = 16 * 2 ** 20;
export const MAX_SIZE = 64 * 2 ** 40;

/** A run of blocks. */
export interface Extent {
  start: number;
  count: number;
}

export interface GroupPlan {
  first: number;
  blocks: number;
  hasSuper: boolean;
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  /** Blocks in this group used by metadata placed here (other groups' tables included) and the root directories. */
  used: Extent[];
  /** Whether the group's block bitmap is left for the kernel to compute (BLOCK_UNINIT). */
  blockUninit: boolean;
}

export interface Layout {
  blocks: number;
  groups: number;
  inodesPerGroup: number;
  inodeTableBlocks: number;
  gdtBlocks: number;
  backupGroups: [number, number];
  rootBlock: number;
  lostFound: Extent;
  group: GroupPlan[];
  freeBlocks: number;
}

/** mke2fs.conf's usage types: bytes per inode by filesystem size (default, big ≥ 4 TiB, huge ≥ 16 TiB). */
export function defaultInodeRatio(size: number): number {
  if (size >= 16 * 2 ** 40) return 65536;
  if (size >= 4 * 2 ** 40) return 32768;
  return 16384;
}

function backupsFor(groups: number): [number, number] {
  // e2fsprogs' normalisation of s_backup_bgs for sparse_super2 (default groups 1 and the last).
  let a = Math.min(1, groups - 1);
  let b = groups - 1;
  if (b === a) b = 0;
  if (a > b) [a, b] = [b, a];
  return [a, b];
}

/** Plans an empty filesystem of `size` bytes (rounded down to whole blocks). */
export function planLayout(size: number, inodeRatio: number): Layout {
  if (!Number.isSafeInteger(size) || size < MIN_SIZE || size > MAX_SIZE)
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `size ${size}: a filesystem is 16 MiB to 64 TiB`);
  if (!Number.isInteger(inodeRatio) || inodeRatio < 1024 || inodeRatio > 2 ** 26)
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `inodeRatio ${inodeRatio}: 1024 to 64 MiB bytes per inode`);
  let blocks = Math.floor(size / MKFS_BLOCK_SIZE);
  for (;;) {
    const groups = Math.ceil(blocks / BLOCKS_PER_GROUP);
    const gdtBlocks = Math.ceil((groups * DESC_SIZE_64) / MKFS_BLOCK_SIZE);
    const wanted = Math.ceil((blocks * MKFS_BLOCK_SIZE) / inodeRatio / groups);
    let ipg = Math.ceil(wanted / INODES_PER_BLOCK) * INODES_PER_BLOCK;
    ipg = Math.max(INODES_PER_BLOCK, Math.min(ipg, BLOCKS_PER_GROUP));
    while (groups * ipg > 2 ** 32 - 1) ipg -= INODES_PER_BLOCK;
    const itb = (ipg * MKFS_INODE_SIZE) / MKFS_BLOCK_SIZE;
    const backupGroups = backupsFor(groups);
    const hasSuper = (g: number): boolean => g === 0 || g === backupGroups[0] || g === backupGroups[1];
    // A last group too small for its own metadata (or a useful amount of data) is dropped, as mke2fs does.
    const last = groups - 1;
    const lastBlocks = blocks - last * BLOCKS_PER_GROUP;
    const flexMeta = (head: number): number => Math.min(GROUPS_PER_FLEX, groups - head) * (2 + itb);
    const lastOverhead = (hasSuper(last) ? 1 + gdtBlocks : 0) + (last % GROUPS_PER_FLEX === 0 ? flexMeta(last) : 0);
    if (groups > 1 && lastBlocks < lastOverhead + 50) {
      blocks = last * BLOCKS_PER_GROUP;
      continue;
    }
    return place(blocks, groups, ipg, itb, gdtBlocks, backupGroups, hasSuper);
  }
}

function place(
  blocks: number,
  groups: number,
  ipg: number,
  itb: number,
  gdtBlocks: number,
  backupGroups: [number, number],
  hasSuper: (g: number) => boolean,
): Layout {
  const group: GroupPlan[] = [];
  for (let g = 0; g < groups; g++) {
    const first = g * BLOCKS_PER_GROUP;
    group.push({
      first,
      blocks: Math.min(BLOCKS_PER_GROUP, blocks - first),
      hasSuper: hasSuper(g),
      blockBitmap: 0,
      inodeBitmap: 0,
      inodeTable: 0,
      used: [],
      blockUninit: false,
    });
  }
  const groupOf = (b: number): number => Math.floor(b / BLOCKS_PER_GROUP);
  const reservedEnd = (g: number): number => group[g]!.first + (group[g]!.hasSuper ? 1 + gdtBlocks : 0);
  let cursor = 0;
  // Next run of `count` blocks from the cursor that crosses no superblock backup; recorded as used.
  const alloc = (count: number, what: string): number => {
    for (;;) {
      const g = groupOf(cursor);
      if (cursor < reservedEnd(g)) cursor = reservedEnd(g);
      const end = cursor + count;
      const gEnd = groupOf(end - 1);
      let clash = -1;
      for (let h = groupOf(cursor) + 1; h <= gEnd && h < groups; h++) if (group[h]!.hasSuper) clash = h;
      if (clash >= 0) {
        cursor = reservedEnd(clash);
        continue;
      }
      if (end > blocks) throw new Ext4Error('ERR_INVALID_ARGUMENT', `no room for ${what}: choose a larger inodeRatio`);
      const start = cursor;
      cursor = end;
      for (let b = start; b < end;) {
        const h = groupOf(b);
        const stop = Math.min(end, group[h]!.first + BLOCKS_PER_GROUP);
        const used = group[h]!.used;
        const prev = used[used.length - 1];
        if (prev && prev.start + prev.count === b) prev.count += stop - b;
        else used.push({ start: b, count: stop - b });
        b = stop;
      }
      return start;
    }
  };
  let rootBlock = 0;
  let lostFound: Extent = { start: 0, count: 0 };
  for (let head = 0; head < groups; head += GROUPS_PER_FLEX) {
    cursor = Math.max(cursor, group[head]!.first);
    const members = group.slice(head, head + GROUPS_PER_FLEX);
    for (const m of members) m.blockBitmap = alloc(1, 'block bitmaps');
    for (const m of members) m.inodeBitmap = alloc(1, 'inode bitmaps');
    for (const m of members) m.inodeTable = alloc(itb, 'inode tables');
    if (head === 0) {
      rootBlock = alloc(1, 'the root directory');
      lostFound = { start: alloc(LOST_FOUND_BLOCKS, 'lost+found'), count: LOST_FOUND_BLOCKS };
    }
  }
  let freeBlocks = 0;
  group.forEach((p, g) => {
    p.blockUninit = p.used.length === 0 && g !== 0 && g !== groups - 1;
    const meta = p.hasSuper ? 1 + gdtBlocks : 0;
    freeBlocks += p.blocks - meta - p.used.reduce((n, e) => n + e.count, 0);
  });
  return {
    blocks,
    groups,
    inodesPerGroup: ipg,
    inodeTableBlocks: itb,
    gdtBlocks,
    backupGroups,
    rootBlock,
    lostFound,
    group,
    freeBlocks,
  };
}
