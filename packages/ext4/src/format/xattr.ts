// Extended attributes — fs/ext4/xattr.h; kernel docs "Extended Attributes". In-inode attributes start
// with a 4-byte magic; an attribute block with a 32-byte header. Entries are 16 bytes plus the name,
// padded to 4; values are padded to 4 and stored from the end of the space downward.
import { pad, struct, u16, u32, u8, type Infer } from '@lcow/binary';

export const XattrBlockHeader = struct('Ext4XattrHeader', 'le', {
  magic: u32,
  refcount: u32,
  blocks: u32,
  hash: u32,
  checksum: u32,
  _reserved: pad(12),
});
export type XattrBlockHeader = Infer<typeof XattrBlockHeader>;

export const XattrEntry = struct('Ext4XattrEntry', 'le', {
  nameLen: u8,
  nameIndex: u8,
  valueOffs: u16,
  valueInum: u32,
  valueSize: u32,
  hash: u32,
});
export type XattrEntry = Infer<typeof XattrEntry>;

export const XATTR_MAGIC = 0xea020000;

/** Name prefixes and their e_name_index, longest first so the best match wins. */
export const XattrPrefix: readonly (readonly [string, number])[] = [
  ['system.posix_acl_access', 2],
  ['system.posix_acl_default', 3],
  ['system.richacl', 8],
  ['security.', 6],
  ['trusted.', 4],
  ['system.', 7],
  ['user.', 1],
];

/** Version of the on-disk POSIX ACL format (ext4_acl_header) and of the user-space one (in tars). */
export const ACL_DISK_VERSION = 1;
export const ACL_XATTR_VERSION = 2;
export const AclTag = { USER_OBJ: 0x01, USER: 0x02, GROUP_OBJ: 0x04, GROUP: 0x08, MASK: 0x10, OTHER: 0x20 } as const;

/**
 * POSIX ACL values — fs/ext4/acl.h: a version header, then entries; on disk (version 1) the tags without an
 * id (USER_OBJ, GROUP_OBJ, MASK, OTHER) use the short form, in the getxattr form (version 2) every entry
 * is long, with id 0xffffffff for those tags.
 */
export const AclHeader = struct('AclHeader', 'le', { version: u32 });
export const AclEntryLong = struct('AclEntry', 'le', { tag: u16, perm: u16, id: u32 });
export const AclEntryShort = struct('AclEntryShort', 'le', { tag: u16, perm: u16 });
export const ACL_UNDEFINED_ID = 0xffff_ffff;

/** struct ext4_xattr_ibody_header: the magic that opens the in-inode attribute area. */
export const XattrIbodyHeader = struct('Ext4XattrIbodyHeader', 'le', { magic: u32 });
