import { Ext4Error } from '../errors.ts';
import {
  ACL_DISK_VERSION,
  AclEntryLong,
  AclEntryShort,
  AclHeader,
  ACL_XATTR_VERSION,
  AclTag,
  XATTR_MAGIC,
  XattrBlockHeader,
  XattrEntry,
  XattrIbodyHeader,
  XattrPrefix,
} from '../format/xattr.ts';

/** One attribute ready to store: prefix index, name suffix bytes, value bytes and entry hash. */
export interface XattrItem {
  index: number;
  name: Uint8Array;
  value: Uint8Array;
  hash: number;
}

/** Bytes per entry, name included, padded to 4. */
const entrySize = (x: XattrItem): number => XattrEntry.size + ((x.name.length + 3) & ~3);
const valueSize = (x: XattrItem): number => (x.value.length + 3) & ~3;

/** ext4_xattr_hash_entry: names hashed as signed chars (x86), values as little-endian 32-bit words. */
function entryHash(name: Uint8Array, value: Uint8Array): number {
  let h = 0;
  for (const c of name) h = ((h << 5) ^ (h >>> 27) ^ (c > 127 ? c - 256 : c)) >>> 0;
  for (let i = 0; i < value.length; i += 4) {
    const w = (value[i] ?? 0) | ((value[i + 1] ?? 0) << 8) | ((value[i + 2] ?? 0) << 16) | ((value[i + 3] ?? 0) << 24);
    h = ((h << 16) ^ (h >>> 16) ^ w) >>> 0;
  }
  return h;
}

/**
 * POSIX ACLs arrive in the user-space xattr form (version 2, 8-byte entries); ext4 stores version 1 with
 * 4-byte entries for the tags that carry no id (fs/ext4/acl.c).
 */
function aclToDisk(v: Uint8Array, where: string): Uint8Array {
  if (v.length < 4 || (v.length - 4) % 8 !== 0 || AclHeader.decode(v).version !== ACL_XATTR_VERSION) {
    throw new Ext4Error('ERR_TAR_FORMAT', `${where}: POSIX ACL xattr is not in the version 2 format`);
  }
  const parts: Uint8Array[] = [AclHeader.encode({ version: ACL_DISK_VERSION })];
  for (let at = 4; at < v.length; at += 8) {
    const e = AclEntryLong.decode(v, at);
    parts.push(
      e.tag === AclTag.USER || e.tag === AclTag.GROUP
        ? AclEntryLong.encode(e)
        : AclEntryShort.encode({ tag: e.tag, perm: e.perm }),
    );
  }
  return Buffer.concat(parts);
}

/** Splits names into prefix index and suffix, converts ACLs, hashes, and sorts as the kernel expects. */
export function prepareXattrs(attrs: Map<string, Uint8Array>, where: string): XattrItem[] {
  const items: XattrItem[] = [];
  for (const [full, raw] of attrs) {
    const match = XattrPrefix.find(([p]) => full.startsWith(p));
    // Prefixes without a trailing dot (the ACL names) must match the whole name.
    if (!match || (!match[0].endsWith('.') && full !== match[0])) {
      throw new Ext4Error(
        'ERR_EXT4_UNSUPPORTED',
        `${where}: xattr ${JSON.stringify(full)} has no namespace ext4 stores (user., trusted., security., system.)`,
      );
    }
    const [prefix, index] = match;
    const name = Buffer.from(full.slice(prefix.length), 'latin1');
    if (name.length > 255)
      throw new Ext4Error(
        'ERR_EXT4_UNSUPPORTED',
        `${where}: xattr name ${JSON.stringify(full)} is longer than 255 bytes`,
      );
    const value = index === 2 || index === 3 ? aclToDisk(raw, where) : raw;
    items.push({ index, name, value, hash: entryHash(name, value) });
  }
  // Block lookups stop at the first entry that sorts after the wanted one (ext4_xattr_find_entry, sorted).
  items.sort((a, b) => a.index - b.index || a.name.length - b.name.length || Buffer.compare(a.name, b.name));
  return items;
}

/** Encodes entries at `at` and values from `end` downward; value offsets relative to `base`. */
function place(items: XattrItem[], out: Uint8Array, at: number, end: number, base: number): void {
  let valueAt = end;
  for (const x of items) {
    valueAt -= valueSize(x);
    out.set(x.value, valueAt);
    XattrEntry.encodeInto(
      {
        nameLen: x.name.length,
        nameIndex: x.index,
        valueOffs: x.value.length === 0 ? 0 : valueAt - base,
        valueInum: 0,
        valueSize: x.value.length,
        hash: x.hash,
      },
      out,
      at,
    );
    out.set(x.name, at + XattrEntry.size);
    at += entrySize(x);
  }
}

/** The in-inode attribute area of `room` bytes, or null when the items do not fit there. */
export function inodeXattrs(items: XattrItem[], room: number): Uint8Array | null {
  const need = 4 + items.reduce((n, x) => n + entrySize(x) + valueSize(x), 0) + 4;
  if (need > room) return null;
  const out = new Uint8Array(room);
  XattrIbodyHeader.encodeInto({ magic: XATTR_MAGIC }, out, 0);
  place(items, out, 4, room, 4);
  return out;
}

/** A 4 KiB attribute block (refcount filled in later), or an error when the items do not fit in one. */
export function blockXattrs(items: XattrItem[], blockSize: number, where: string): Uint8Array {
  const need = XattrBlockHeader.size + items.reduce((n, x) => n + entrySize(x) + valueSize(x), 0) + 4;
  if (need > blockSize) {
    throw new Ext4Error(
      'ERR_EXT4_UNSUPPORTED',
      `${where}: extended attributes need ${need} bytes, more than one ${blockSize}-byte block (ea_inode is not used)`,
    );
  }
  const out = new Uint8Array(blockSize);
  let h = 0;
  for (const x of items) h = ((h << 16) ^ (h >>> 16) ^ x.hash) >>> 0;
  XattrBlockHeader.encodeInto({ magic: XATTR_MAGIC, refcount: 1, blocks: 1, hash: h, checksum: 0 }, out, 0);
  place(items, out, XattrBlockHeader.size, blockSize, 0);
  return out;
}

/** Patches the refcount of an encoded attribute block. */
export function setXattrRefcount(block: Uint8Array, refcount: number): void {
  XattrBlockHeader.set(block, 'refcount', refcount);
}
