// Feature flags — fs/ext4/ext4.h EXT4_FEATURE_*; names as e2fsprogs (dumpe2fs, mke2fs -O) spells them.

export const Compat = {
  dir_prealloc: 0x1,
  imagic_inodes: 0x2,
  has_journal: 0x4,
  ext_attr: 0x8,
  resize_inode: 0x10,
  dir_index: 0x20,
  lazy_bg: 0x40,
  exclude_bitmap: 0x100,
  sparse_super2: 0x200,
  fast_commit: 0x400,
  stable_inodes: 0x800,
  orphan_file: 0x1000,
} as const;

export const Incompat = {
  compression: 0x1,
  filetype: 0x2,
  needs_recovery: 0x4,
  journal_dev: 0x8,
  meta_bg: 0x10,
  extent: 0x40,
  '64bit': 0x80,
  mmp: 0x100,
  flex_bg: 0x200,
  ea_inode: 0x400,
  dirdata: 0x1000,
  metadata_csum_seed: 0x2000,
  large_dir: 0x4000,
  inline_data: 0x8000,
  encrypt: 0x10000,
  casefold: 0x20000,
} as const;

export const RoCompat = {
  sparse_super: 0x1,
  large_file: 0x2,
  btree_dir: 0x4,
  huge_file: 0x8,
  uninit_bg: 0x10,
  dir_nlink: 0x20,
  extra_isize: 0x40,
  snapshot: 0x80,
  quota: 0x100,
  bigalloc: 0x200,
  metadata_csum: 0x400,
  replica: 0x800,
  'read-only': 0x1000,
  project: 0x2000,
  shared_blocks: 0x4000,
  verity: 0x8000,
  orphan_present: 0x10000,
} as const;

/** s_checksum_type value for CRC-32C, the only one defined. */
export const CHECKSUM_CRC32C = 1;
