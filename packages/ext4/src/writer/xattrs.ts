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

/**
 * ext4_xattr_hash_entry over the name and the value as little-endian 32-bit words (the last one
 * zero-padded). The kernel hashes name bytes as `char`, signed on x86; hcsshim hashes them unsigned, which
 * differs for names with bytes above 127.
 */
export function xattrHash(name: Uint8Array, value: Uint8Array, signedNames = true): number {
  let h = 0;
  for (const c of name) h = ((h << 5) ^ (h >>> 27) ^ (signedNames && c > 127 ? c - 256 : c)) >>> 0;
  for (let i = 0; i < value.length; i += 4) {
    const w = (value[i] ?? 0) | ((value[i + 1] ?? 0) << 8) | ((value[i + 2] ?? 0) << 16) | ((value[i + 3] ?? 0) << 24);
    h = ((h << 16) ^ (h >>> 16) ^ w) >>> 0;
  }
  return h;
}

/** The name prefix and e_name_index `full` begins with, or undefined (first match in {@link XattrPrefix}). */
export function xattrPrefixOf(full: string): readonly [string, number] | undefined {
  return XattrPrefix.find(([p]) => full.startsWith(p));
}

/** The prefix an e_name_index stands for ('' for 0 and unknown indexes). */
export function xattrPrefixName(index: number): string {
  return XattrPrefix.find(([, i]) => i === index)?.[0] ?? '';
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
    const match = xattrPrefixOf(full);
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
    items.push({ index, name, value, hash: xattrHash(name, value) });
  }
  // Block lookups stop at the first entry that sorts after the wanted one (ext4_xattr_find_entry, sorted).
  items.sort((a, b) => a.index - b.index || a.name.length - b.name.length || Buffer.compare(a.name, b.name));
  return items;
}

/** Bytes `items` take as entries and values (without the 4-byte end marker). */
export function xattrsSize(items: readonly XattrItem[]): number {
  let n = 0;
  for (const x of items) n += entrySize(x) + valueSize(x);
  return n;
}

/**
 * Encodes entries from `at` and values from `end` downward, value offsets relative to `base`. An empty value
 * gets offset 0 (as the kernel writes it) unless `offsetEmptyValues`, which gives it the running offset (as
 * hcsshim does).
 */
export function placeXattrs(
  items: readonly XattrItem[],
  out: Uint8Array,
  at: number,
  end: number,
  base: number,
  offsetEmptyValues = false,
): void {
  let valueAt = end;
  for (const x of items) {
    valueAt -= valueSize(x);
    out.set(x.value, valueAt);
    XattrEntry.encodeInto(
      {
        nameLen: x.name.length,
        nameIndex: x.index,
        valueOffs: x.value.length === 0 && !offsetEmptyValues ? 0 : (valueAt - base) & 0xffff,
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

/** Decodes the entries from `at` up to an end marker (or `end`) into `into`, full names as latin1 keys. */
export function readXattrs(
  area: Uint8Array,
  at: number,
  end: number,
  base: number,
  into: Map<string, Uint8Array>,
): void {
  while (at + XattrEntry.size <= end && area[at] !== 0) {
    const e = XattrEntry.decode(area, at);
    const name = Buffer.from(area.buffer, area.byteOffset + at + XattrEntry.size, e.nameLen).toString('latin1');
    const from = base + e.valueOffs;
    into.set(xattrPrefixName(e.nameIndex) + name, area.slice(from, from + e.valueSize));
    at += XattrEntry.size + ((e.nameLen + 3) & ~3);
  }
}

/** The in-inode attribute area of `room` bytes, or null when the items do not fit there. */
export function inodeXattrs(items: XattrItem[], room: number): Uint8Array | null {
  const need = XattrIbodyHeader.size + xattrsSize(items) + 4;
  if (need > room) return null;
  const out = new Uint8Array(room);
  XattrIbodyHeader.encodeInto({ magic: XATTR_MAGIC }, out, 0);
  placeXattrs(items, out, 4, room, 4);
  return out;
}

/** A 4 KiB attribute block (refcount filled in later), or an error when the items do not fit in one. */
export function blockXattrs(items: XattrItem[], blockSize: number, where: string): Uint8Array {
  const need = XattrBlockHeader.size + xattrsSize(items) + 4;
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
  placeXattrs(items, out, XattrBlockHeader.size, blockSize, 0);
  return out;
}

/** Patches the refcount of an encoded attribute block. */
export function setXattrRefcount(block: Uint8Array, refcount: number): void {
  XattrBlockHeader.set(block, 'refcount', refcount);
}
