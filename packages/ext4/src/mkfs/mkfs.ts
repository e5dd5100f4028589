import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { extname } from 'node:path';
import { DurableError, DurableFile, publishFile, tempPathFor } from '@lcow/durable';
import { createVhdx, openVhdx } from '@lcow/vhd';
import {
  bitmapChecksum,
  dirBlockChecksum,
  fsSeed,
  groupDescChecksum,
  inodeSeed,
  setInodeChecksum,
  superblockChecksum,
} from '../csum.ts';
import { Ext4Error } from '../errors.ts';
import { CHECKSUM_CRC32C, Compat, Incompat, RoCompat } from '../format/constants.ts';
import { DIR_TAIL_FILE_TYPE, DirEntryHeader, DirEntryTail, DirFileType, direntSize } from '../format/dirent.ts';
import { EXTENT_MAGIC, Extent, ExtentHeader } from '../format/extent.ts';
import { DESC_SIZE_64, GroupDesc64, GroupFlags } from '../format/group.ts';
import { EXTRA_ISIZE, FileMode, Ino, Inode, InodeFlags } from '../format/inode.ts';
import { SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSET, Superblock } from '../format/superblock.ts';
import { Bitmap } from '../writer/bitmap.ts';
import {
  BLOCKS_PER_GROUP,
  LOG_GROUPS_PER_FLEX,
  MKFS_BLOCK_SIZE as BS,
  MKFS_INODE_SIZE,
  defaultInodeRatio,
  planLayout,
  type Layout,
} from './layout.ts';

/** Options of {@link mkfs}. */
export interface MkfsOptions {
  /** Filesystem size in bytes, 16 MiB to 64 TiB (rounded down to 4 KiB; a VHDX gets this virtual size). */
  size: number;
  /** `'vhdx'` writes the filesystem into a new VHDX; default: `'vhdx'` for a `.vhdx` path, else `'raw'`. */
  format?: 'raw' | 'vhdx';
  /** VHDX kind: `'dynamic'` (default, blocks allocated as written) or `'fixed'` (contiguous payload). */
  vhdxType?: 'dynamic' | 'fixed';
  /** VHDX payload block size (default 1 MiB; Hyper-V's own default is 32 MiB). */
  vhdxBlockSize?: number;
  /**
   * Integrity: `'metadata_csum'` (default; CRC-32C on every metadata block, kernels ≥ 3.18) or `'uninit_bg'`
   * (CRC-16 group descriptors only, what the original driver's sandboxes used, for older kernels).
   */
  checksums?: 'metadata_csum' | 'uninit_bg';
  /** Bytes per inode; default as mke2fs (16 KiB, 32 KiB from 4 TiB, 64 KiB from 16 TiB). */
  inodeRatio?: number;
  /** Share of blocks reserved for root (default 0.05, as mke2fs). */
  reservedRatio?: number;
  uuid?: string;
  label?: string;
  /** Creation time stamped on the superblock and the root directories; default now. */
  timestamp?: Date;
  /** Owner of the root directory (default 0:0). */
  rootUid?: number;
  rootGid?: number;
  /** Replace an existing file (default false: `ERR_INVALID_ARGUMENT`). */
  overwrite?: boolean;
  /** fsync before the rename (default true). */
  fsync?: boolean;
  signal?: AbortSignal;
}

/** What {@link mkfs} made. */
export interface MkfsResult {
  path: string;
  format: 'raw' | 'vhdx';
  /** Filesystem size in bytes (blocks × 4096). */
  size: number;
  blocks: number;
  groups: number;
  inodes: number;
  freeBlocks: number;
  uuid: string;
  features: string[];
  /** Metadata bytes written (everything else is a hole). */
  bytesWritten: number;
}

/** One piece of the filesystem to write: `data` at byte `offset`. */
export interface MkfsWrite {
  offset: number;
  data: Uint8Array;
}

const FEATURES = {
  compat: Compat.ext_attr | Compat.dir_index | Compat.sparse_super2,
  incompat: Incompat.filetype | Incompat.extent | Incompat['64bit'] | Incompat.flex_bg,
  roCompat:
    RoCompat.sparse_super | RoCompat.large_file | RoCompat.huge_file | RoCompat.dir_nlink | RoCompat.extra_isize,
};
/** s_default_mount_opts: user_xattr and acl, as mke2fs.conf sets. */
const DEFAULT_MOUNT_OPTS = 0x0004 | 0x0008;
const EXT2_FLAGS_SIGNED_HASH = 0x1;
const HASH_HALF_MD4 = 1;

function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex))
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `uuid ${JSON.stringify(uuid)}: not a UUID`);
  return Uint8Array.from(hex.match(/../g)!, (h) => Number.parseInt(h, 16));
}

/** A directory block from `entries`; the last one spans to the end (or to the checksum tail). */
function dirBlock(entries: { ino: number; name: string }[], csum: boolean): Uint8Array {
  const b = new Uint8Array(BS);
  const end = csum ? BS - DirEntryTail.size : BS;
  let at = 0;
  entries.forEach((e, i) => {
    const name = Buffer.from(e.name);
    const recLen = i === entries.length - 1 ? end - at : direntSize(name.length);
    DirEntryHeader.encodeInto({ inode: e.ino, recLen, nameLen: name.length, fileType: DirFileType.DIR }, b, at);
    b.set(name, at + DirEntryHeader.size);
    at += recLen;
  });
  if (entries.length === 0) DirEntryHeader.encodeInto({ inode: 0, recLen: end, nameLen: 0, fileType: 0 }, b, 0);
  if (csum) {
    DirEntryTail.encodeInto(
      { inode: 0, recLen: DirEntryTail.size, nameLen: 0, fileType: DIR_TAIL_FILE_TYPE, checksum: 0 },
      b,
      end,
    );
  }
  return b;
}

/** What every step of {@link mkfsWrites} needs: the checked options and the layout. */
interface MkfsPlan {
  layout: Layout;
  metadataCsum: boolean;
  reserved: number;
  label: string;
  uuid: string;
  uuidRaw: Uint8Array;
  seed: number;
  now: number;
  rootUid: number;
  rootGid: number;
}

function planMkfs(opts: MkfsOptions): MkfsPlan {
  const ratio = opts.inodeRatio ?? defaultInodeRatio(opts.size);
  const layout = planLayout(opts.size, ratio);
  const csumKind = opts.checksums ?? 'metadata_csum';
  if (csumKind !== 'metadata_csum' && csumKind !== 'uninit_bg')
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `checksums ${JSON.stringify(csumKind)}: metadata_csum or uninit_bg`);
  const metadataCsum = csumKind === 'metadata_csum';
  const reserved = opts.reservedRatio ?? 0.05;
  if (!(reserved >= 0 && reserved <= 0.5))
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `reservedRatio ${reserved}: 0 to 0.5`);
  const label = opts.label ?? '';
  if (Buffer.byteLength(label) > 16)
    throw new Ext4Error('ERR_INVALID_ARGUMENT', `label ${JSON.stringify(label)}: at most 16 bytes`);
  const uuid = (opts.uuid ?? randomUUID()).toLowerCase();
  const uuidRaw = uuidBytes(uuid);
  const seed = fsSeed(uuidRaw, null);
  const now = Math.floor((opts.timestamp ?? new Date()).getTime() / 1000);
  if (now < 0 || now >= 2 ** 32) throw new Ext4Error('ERR_INVALID_ARGUMENT', 'timestamp: 1970 to 2106');
  return {
    layout,
    metadataCsum,
    reserved,
    label,
    uuid,
    uuidRaw,
    seed,
    now,
    rootUid: opts.rootUid ?? 0,
    rootGid: opts.rootGid ?? 0,
  };
}

type At = (block: number, data: Uint8Array) => void;

/** The root and lost+found directories (inodes and blocks), and the reserved inodes 1–10 (zero, but with valid checksums). */
function rootWrites(plan: MkfsPlan, at: At): void {
  const { layout, metadataCsum, seed, now } = plan;
  const inodes = new Uint8Array(BS);
  const dirInode = (ino: number, mode: number, links: number, ext: { start: number; count: number }): void => {
    const raw = inodes.subarray((ino - 1) * MKFS_INODE_SIZE, ino * MKFS_INODE_SIZE);
    const iblock = new Uint8Array(60);
    ExtentHeader.encodeInto({ magic: EXTENT_MAGIC, entries: 1, max: 4, depth: 0, generation: 0 }, iblock, 0);
    Extent.encodeInto({ block: 0, len: ext.count, startHi: 0, startLo: ext.start }, iblock, ExtentHeader.size);
    Inode.encodeInto(
      {
        mode,
        uidLo: (ino === Ino.ROOT ? plan.rootUid : 0) & 0xffff,
        sizeLo: ext.count * BS,
        atime: now,
        ctime: now,
        mtime: now,
        dtime: 0,
        gidLo: (ino === Ino.ROOT ? plan.rootGid : 0) & 0xffff,
        linksCount: links,
        blocksLo: (ext.count * BS) / 512,
        flags: InodeFlags.EXTENTS,
        version: 0,
        block: iblock,
        generation: 0,
        fileAclLo: 0,
        sizeHi: 0,
        obsoFaddr: 0,
        blocksHi: 0,
        fileAclHi: 0,
        uidHi: ino === Ino.ROOT ? plan.rootUid >>> 16 : 0,
        gidHi: ino === Ino.ROOT ? plan.rootGid >>> 16 : 0,
        checksumLo: 0,
        reserved: 0,
        extraIsize: EXTRA_ISIZE,
        checksumHi: 0,
        ctimeExtra: 0,
        mtimeExtra: 0,
        atimeExtra: 0,
        crtime: now,
        crtimeExtra: 0,
        versionHi: 0,
        projid: 0,
      },
      raw,
      0,
    );
  };
  dirInode(Ino.ROOT, FileMode.DIR | 0o755, 3, { start: layout.rootBlock, count: 1 });
  dirInode(Ino.LOST_FOUND, FileMode.DIR | 0o700, 2, layout.lostFound);
  if (metadataCsum) {
    for (let ino = 1; ino <= Ino.LOST_FOUND; ino++) {
      setInodeChecksum(seed, ino, inodes.subarray((ino - 1) * MKFS_INODE_SIZE, ino * MKFS_INODE_SIZE), MKFS_INODE_SIZE);
    }
  }
  at(layout.group[0]!.inodeTable, inodes);
  const dirWrite = (ino: number, block: number, b: Uint8Array): void => {
    if (metadataCsum)
      DirEntryTail.set(b, 'checksum', dirBlockChecksum(inodeSeed(seed, ino, 0), b), BS - DirEntryTail.size);
    at(block, b);
  };
  dirWrite(
    Ino.ROOT,
    layout.rootBlock,
    dirBlock(
      [
        { ino: Ino.ROOT, name: '.' },
        { ino: Ino.ROOT, name: '..' },
        { ino: Ino.LOST_FOUND, name: 'lost+found' },
      ],
      metadataCsum,
    ),
  );
  for (let i = 0; i < layout.lostFound.count; i++) {
    const entries =
      i === 0
        ? [
            { ino: Ino.LOST_FOUND, name: '.' },
            { ino: Ino.ROOT, name: '..' },
          ]
        : [];
    dirWrite(Ino.LOST_FOUND, layout.lostFound.start + i, dirBlock(entries, metadataCsum));
  }
}

/** Bitmaps of the groups that need one written, and every group descriptor; the free inode count. */
function groupWrites(plan: MkfsPlan, at: At): { gdt: Uint8Array; freeInodes: number } {
  const { layout, metadataCsum, seed, uuidRaw } = plan;
  const { groups, inodesPerGroup: ipg, gdtBlocks } = layout;
  const gdt = new Uint8Array(gdtBlocks * BS);
  const bitmaps = new Map<string, { bytes: Uint8Array; csum: number }>();
  let freeInodes = 0;
  for (let g = 0; g < groups; g++) {
    const p = layout.group[g]!;
    const usedInodes = g === 0 ? Ino.LOST_FOUND : 0;
    let flags = GroupFlags.ITABLE_ZEROED;
    if (g !== 0) flags |= GroupFlags.INODE_UNINIT;
    if (p.blockUninit) flags |= GroupFlags.BLOCK_UNINIT;
    let blockCsum = 0;
    let inodeCsum = 0;
    const meta = p.hasSuper ? 1 + gdtBlocks : 0;
    let free = p.blocks - meta;
    for (const e of p.used) free -= e.count;
    if (!p.blockUninit) {
      // Flex-group heads mostly have the same bitmap: build each distinct one (and its checksum) once.
      const key = `${meta}|${p.blocks}|${p.used.map((e) => `${e.start - p.first}+${e.count}`).join(',')}`;
      let bm = bitmaps.get(key);
      if (!bm) {
        const b = new Bitmap(BLOCKS_PER_GROUP);
        if (meta) b.setRange(0, meta);
        for (const e of p.used) b.setRange(e.start - p.first, e.count);
        if (p.blocks < BLOCKS_PER_GROUP) b.setRange(p.blocks, BLOCKS_PER_GROUP - p.blocks);
        bm = { bytes: b.bytes, csum: metadataCsum ? bitmapChecksum(seed, b.bytes) : 0 };
        bitmaps.set(key, bm);
      }
      at(p.blockBitmap, bm.bytes);
      blockCsum = bm.csum;
    }
    if (g === 0) {
      const im = new Bitmap(BS * 8);
      im.setRange(0, usedInodes);
      im.setRange(ipg, BS * 8 - ipg); // padding past the group's inodes
      at(p.inodeBitmap, im.bytes);
      inodeCsum = metadataCsum ? bitmapChecksum(seed, im.bytes.subarray(0, ipg / 8)) : 0;
    }
    freeInodes += ipg - usedInodes;
    const hi = (n: number): number => Math.floor(n / 2 ** 32);
    const lo = (n: number): number => n % 2 ** 32;
    const desc: GroupDesc64 = {
      ...GroupDesc64.zero(),
      blockBitmapLo: lo(p.blockBitmap),
      inodeBitmapLo: lo(p.inodeBitmap),
      inodeTableLo: lo(p.inodeTable),
      freeBlocksCountLo: free & 0xffff,
      freeInodesCountLo: (ipg - usedInodes) & 0xffff,
      usedDirsCountLo: g === 0 ? 2 : 0,
      flags,
      blockBitmapCsumLo: blockCsum & 0xffff,
      inodeBitmapCsumLo: inodeCsum & 0xffff,
      itableUnusedLo: (ipg - usedInodes) & 0xffff,
      blockBitmapHi: hi(p.blockBitmap),
      inodeBitmapHi: hi(p.inodeBitmap),
      inodeTableHi: hi(p.inodeTable),
      freeBlocksCountHi: free >>> 16,
      freeInodesCountHi: (ipg - usedInodes) >>> 16,
      itableUnusedHi: (ipg - usedInodes) >>> 16,
      blockBitmapCsumHi: blockCsum >>> 16,
      inodeBitmapCsumHi: inodeCsum >>> 16,
    };
    const raw = gdt.subarray(g * DESC_SIZE_64, (g + 1) * DESC_SIZE_64);
    GroupDesc64.encodeInto(desc, raw, 0);
    const kind = metadataCsum ? 'metadata_csum' : 'gdt_csum';
    GroupDesc64.set(raw, 'checksum', groupDescChecksum(kind, seed, uuidRaw, g, raw), 0);
  }

  return { gdt, freeInodes };
}

/** The superblock as group `groupNr` keeps it (the primary is group 0's). */
function superblockFor(
  plan: MkfsPlan,
  s: { freeInodes: number; hashSeed: Uint8Array; roCompat: number; groupNr: number },
): Uint8Array {
  const { layout, metadataCsum, reserved, label, uuid, now } = plan;
  const { groups, inodesPerGroup: ipg } = layout;
  const bytes = Superblock.encode({
    ...Superblock.zero(),
    inodesCount: groups * ipg,
    blocksCountLo: layout.blocks % 2 ** 32,
    blocksCountHi: Math.floor(layout.blocks / 2 ** 32),
    rBlocksCountLo: Math.floor(layout.blocks * reserved) % 2 ** 32,
    rBlocksCountHi: Math.floor(Math.floor(layout.blocks * reserved) / 2 ** 32),
    freeBlocksCountLo: layout.freeBlocks % 2 ** 32,
    freeBlocksCountHi: Math.floor(layout.freeBlocks / 2 ** 32),
    freeInodesCount: s.freeInodes,
    firstDataBlock: 0,
    logBlockSize: 2,
    logClusterSize: 2,
    blocksPerGroup: BLOCKS_PER_GROUP,
    clustersPerGroup: BLOCKS_PER_GROUP,
    inodesPerGroup: ipg,
    wtime: now,
    maxMntCount: 0xffff,
    magic: SUPERBLOCK_MAGIC,
    state: 1,
    errors: 1,
    lastcheck: now,
    revLevel: 1,
    firstIno: Ino.FIRST,
    inodeSize: MKFS_INODE_SIZE,
    blockGroupNr: Math.min(s.groupNr, 0xffff), // 16 bits; e2fsprogs clamps the same way
    featureCompat: FEATURES.compat,
    featureIncompat: FEATURES.incompat,
    featureRoCompat: s.roCompat,
    uuid,
    volumeName: label,
    hashSeed: s.hashSeed,
    defHashVersion: HASH_HALF_MD4,
    descSize: DESC_SIZE_64,
    defaultMountOpts: DEFAULT_MOUNT_OPTS,
    mkfsTime: now,
    minExtraIsize: EXTRA_ISIZE,
    wantExtraIsize: EXTRA_ISIZE,
    flags: EXT2_FLAGS_SIGNED_HASH,
    logGroupsPerFlex: LOG_GROUPS_PER_FLEX,
    checksumType: metadataCsum ? CHECKSUM_CRC32C : 0,
    backupBgs0: layout.backupGroups[0],
    backupBgs1: layout.backupGroups[1],
  });
  if (metadataCsum) Superblock.set(bytes, 'checksum', superblockChecksum(bytes));
  return bytes;
}

/**
 * Every write of an empty filesystem laid out for `opts`, sorted by offset: the root and lost+found, the
 * bitmaps and descriptors, the superblock and its backups. Everything not written must read as zeros (a new
 * sparse file or VHDX); exposed so a caller can write them into any block device or container.
 */
export function mkfsWrites(opts: MkfsOptions): {
  layout: Layout;
  writes: MkfsWrite[];
  uuid: string;
  features: string[];
} {
  const plan = planMkfs(opts);
  const { layout, metadataCsum, uuid, uuidRaw } = plan;
  const writes: MkfsWrite[] = [];
  const at: At = (block, data) => void writes.push({ offset: block * BS, data });
  rootWrites(plan, at);
  const { gdt, freeInodes } = groupWrites(plan, at);
  const roCompat = FEATURES.roCompat | (metadataCsum ? RoCompat.metadata_csum : RoCompat.uninit_bg);
  const hashSeed = opts.uuid
    ? createHash('sha256').update('lcow hash seed').update(uuidRaw).digest().subarray(0, 16)
    : randomBytes(16);
  const head = new Uint8Array(BS);
  head.set(superblockFor(plan, { freeInodes, hashSeed, roCompat, groupNr: 0 }), SUPERBLOCK_OFFSET);
  at(0, head);
  at(1, gdt);
  for (let g = 1; g < layout.groups; g++) {
    const p = layout.group[g]!;
    if (!p.hasSuper) continue;
    const blk = new Uint8Array(BS);
    blk.set(superblockFor(plan, { freeInodes, hashSeed, roCompat, groupNr: g }), 0);
    at(p.first, blk);
    at(p.first + 1, gdt);
  }
  writes.sort((a, b) => a.offset - b.offset);
  const names = [
    'ext_attr',
    'dir_index',
    'sparse_super2',
    'filetype',
    'extent',
    '64bit',
    'flex_bg',
    'sparse_super',
    'large_file',
    'huge_file',
    metadataCsum ? 'metadata_csum' : 'uninit_bg',
    'dir_nlink',
    'extra_isize',
  ];
  return { layout, writes, uuid, features: names };
}

/**
 * Creates an empty ext4 filesystem of `opts.size` bytes at `path`: a sparse raw image, or inside a new
 * VHDX. Only metadata is written (a 20 GiB filesystem costs about a megabyte of writes): flex_bg packs the
 * tables, uninitialised groups (BLOCK_UNINIT / INODE_UNINIT, inode tables marked zeroed) are left for the
 * kernel, and sparse_super2 keeps two superblock backups. The file appears complete or not at all
 * (temporary name, fsync, rename).
 *
 * Features: `ext_attr dir_index sparse_super2 filetype extent 64bit flex_bg sparse_super large_file
 * huge_file dir_nlink extra_isize` + `metadata_csum` (or `uninit_bg`); no journal and no resize inode, as
 * the original driver's sandboxes (`mkfs.ext4 -O ^has_journal,sparse_super2,uninit_bg,^resize_inode`).
 */
export async function mkfs(path: string, opts: MkfsOptions): Promise<MkfsResult> {
  const format = opts.format ?? (extname(path).toLowerCase() === '.vhdx' ? 'vhdx' : 'raw');
  const { layout, writes, uuid, features } = mkfsWrites(opts);
  if (opts.signal?.aborted) throw new Ext4Error('ERR_ABORTED', `${path}: aborted`, { cause: opts.signal.reason });
  if (!opts.overwrite) {
    const exists = await open(path, 'r').then(
      async (fh) => (await fh.close(), true),
      () => false,
    );
    if (exists) throw new Ext4Error('ERR_EXISTS', `${path}: already exists`);
  }
  const size = layout.blocks * BS;
  let bytesWritten = 0;
  const publish = { fsync: opts.fsync !== false, overwrite: opts.overwrite === true };
  try {
    if (format === 'vhdx') {
      const tmp = tempPathFor(path);
      try {
        await createVhdx(tmp, {
          size,
          type: opts.vhdxType ?? 'dynamic',
          blockSize: opts.vhdxBlockSize,
          signal: opts.signal,
        });
        const disk = await openVhdx(tmp, { writable: true });
        try {
          for (const w of writes) {
            opts.signal?.throwIfAborted();
            await disk.write(w.offset, w.data);
            bytesWritten += w.data.length;
          }
        } finally {
          await disk.close();
        }
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
      await publishFile(tmp, path, publish);
    } else {
      const f = await DurableFile.create(path, publish);
      try {
        await f.handle.truncate(size);
        for (const w of writes) {
          opts.signal?.throwIfAborted();
          let done = 0;
          while (done < w.data.length)
            done += (await f.handle.write(w.data, done, w.data.length - done, w.offset + done)).bytesWritten;
          bytesWritten += w.data.length;
        }
      } catch (e) {
        await f.discard();
        throw e;
      }
      await f.commit();
    }
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw new Ext4Error('ERR_ABORTED', `${path}: aborted`, { cause: e });
    if (e instanceof DurableError && e.code === 'ERR_EXISTS')
      throw new Ext4Error('ERR_EXISTS', `${path}: already exists`, { cause: e });
    throw e;
  }
  return {
    path,
    format,
    size,
    blocks: layout.blocks,
    groups: layout.groups,
    inodes: layout.groups * layout.inodesPerGroup,
    freeBlocks: layout.freeBlocks,
    uuid,
    features,
    bytesWritten,
  };
}
