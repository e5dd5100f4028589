// Extended attributes: the in-inode area after i_extra_isize and the attribute block named by i_file_acl
// (possibly shared by many inodes), with values optionally in their own inode (ea_inode).
import { xattrBlockChecksum } from '../csum.ts';
import {
  ACL_DISK_VERSION,
  ACL_UNDEFINED_ID,
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
import type { InodeRecord, Volume } from './volume.ts';

/** The largest value Linux lets an attribute have (XATTR_SIZE_MAX). */
const MAX_VALUE = 65536;
/** Name index 7 with this name holds the overflow of inline data; it is not a user-visible attribute. */
export const INLINE_DATA_XATTR = 'system.data';

const PREFIX_OF = new Map<number, string>(XattrPrefix.map(([p, i]) => [i, p]));

/** One raw attribute: full name (latin1 byte string) and value, or where its value lives. */
interface RawAttr {
  name: string;
  value: Uint8Array | null;
  valueInum: number;
  valueSize: number;
}

function parseEntries(vol: Volume, area: Uint8Array, start: number, valueBase: number, where: string): RawAttr[] {
  const out: RawAttr[] = [];
  let at = start;
  while (at + 4 <= area.length && (area[at]! | area[at + 1]! | area[at + 2]! | area[at + 3]!) !== 0) {
    if (at + XattrEntry.size > area.length) throw vol.corrupt(`${where}: entry at ${at} runs past the area`);
    const e = XattrEntry.decode(area, at);
    const nameAt = at + XattrEntry.size;
    if (nameAt + e.nameLen > area.length) throw vol.corrupt(`${where}: name of entry at ${at} runs past the area`);
    const suffix = Buffer.from(area.buffer, area.byteOffset + nameAt, e.nameLen).toString('latin1');
    at = nameAt + ((e.nameLen + 3) & ~3);
    const prefix = e.nameIndex === 0 ? '' : PREFIX_OF.get(e.nameIndex);
    if (e.valueSize > MAX_VALUE) throw vol.corrupt(`${where}: value of ${suffix} is ${e.valueSize} bytes`);
    if (prefix === undefined) {
      vol.warn('EXT4_XATTR_UNKNOWN', `${where}: attribute with unknown name index ${e.nameIndex} skipped`);
      continue;
    }
    const name = prefix + suffix;
    if (e.valueInum !== 0) {
      out.push({ name, value: null, valueInum: e.valueInum, valueSize: e.valueSize });
      continue;
    }
    const vAt = valueBase + e.valueOffs;
    if (e.valueSize > 0 && (vAt < start || vAt + e.valueSize > area.length))
      throw vol.corrupt(
        `${where}: value of ${JSON.stringify(name)} at ${e.valueOffs}+${e.valueSize} is outside the area`,
      );
    out.push({ name, value: area.slice(vAt, vAt + e.valueSize), valueInum: 0, valueSize: e.valueSize });
  }
  return out;
}

/** Attributes of an inode, raw (ACLs in the ext4 disk form, system.data included), in-inode ones first. */
async function rawAttrs(vol: Volume, inode: InodeRecord, what: string): Promise<RawAttr[]> {
  const out: RawAttr[] = [];
  const body = inode.ibody;
  if (body.length >= 4 && XattrIbodyHeader.get(body, 'magic') === XATTR_MAGIC) {
    out.push(...parseEntries(vol, body, 4, 4, `inode ${inode.ino} (${what}) in-inode attributes`));
  }
  if (inode.fileAcl !== 0) {
    const where = `inode ${inode.ino} (${what}) attribute block ${inode.fileAcl}`;
    const blk = await vol.block(inode.fileAcl, where);
    const h = XattrBlockHeader.decode(blk);
    if (h.magic !== XATTR_MAGIC) throw vol.corrupt(`${where}: bad magic 0x${h.magic.toString(16)}`);
    if (h.blocks !== 1) throw vol.corrupt(`${where}: h_blocks ${h.blocks}, expected 1`);
    if (vol.verifiesChecksums) {
      const want = xattrBlockChecksum(vol.seed, inode.fileAcl, blk);
      if (want !== h.checksum >>> 0)
        vol.checksumMismatch(
          `${where}: checksum 0x${(h.checksum >>> 0).toString(16)}, computed 0x${want.toString(16)}`,
        );
    }
    out.push(...parseEntries(vol, blk, XattrBlockHeader.size, 0, where));
  }
  return out;
}

/** ext4's POSIX ACL form (version 1, short entries for tags without an id) → the getxattr form (version 2). */
function aclFromDisk(vol: Volume, v: Uint8Array, where: string): Uint8Array {
  if (v.length < 4 || AclHeader.decode(v).version !== ACL_DISK_VERSION)
    throw vol.corrupt(`${where}: POSIX ACL is not in ext4's version 1 format`);
  const parts: Uint8Array[] = [AclHeader.encode({ version: ACL_XATTR_VERSION })];
  let at = 4;
  while (at < v.length) {
    if (at + AclEntryShort.size > v.length) throw vol.corrupt(`${where}: POSIX ACL entry truncated`);
    const tag = AclEntryShort.get(v, 'tag', at);
    if (tag === AclTag.USER || tag === AclTag.GROUP) {
      if (at + AclEntryLong.size > v.length) throw vol.corrupt(`${where}: POSIX ACL entry truncated`);
      parts.push(AclEntryLong.encode(AclEntryLong.decode(v, at)));
      at += AclEntryLong.size;
    } else {
      parts.push(AclEntryLong.encode({ tag, perm: AclEntryShort.get(v, 'perm', at), id: ACL_UNDEFINED_ID }));
      at += AclEntryShort.size;
    }
    if (parts.length > 1 + 4096) throw vol.corrupt(`${where}: POSIX ACL with too many entries`);
  }
  return Buffer.concat(parts);
}

/** Reads a value stored in an EA inode (ea_inode feature). */
export type ValueReader = (inum: number, size: number, where: string) => Promise<Uint8Array>;

/**
 * The attributes of an inode as a user sees them (getfattr): names as latin1 byte strings, POSIX ACLs in
 * the version-2 form, `system.data` left out (it is inline data, not an attribute).
 */
export async function listXattrs(
  vol: Volume,
  inode: InodeRecord,
  what: string,
  readValue: ValueReader,
): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const a of await rawAttrs(vol, inode, what)) {
    if (a.name === INLINE_DATA_XATTR || out.has(a.name)) continue;
    const where = `inode ${inode.ino} (${what}) attribute ${JSON.stringify(a.name)}`;
    let value = a.value ?? (await readValue(a.valueInum, a.valueSize, where));
    if (a.name === 'system.posix_acl_access' || a.name === 'system.posix_acl_default')
      value = aclFromDisk(vol, value, where);
    out.set(a.name, value);
  }
  return out;
}

/** The `system.data` value: the part of an inline file or directory beyond i_block's 60 bytes. */
export async function inlineDataTail(vol: Volume, inode: InodeRecord, what: string): Promise<Uint8Array> {
  const body = inode.ibody;
  if (body.length < 4 || XattrIbodyHeader.get(body, 'magic') !== XATTR_MAGIC) return new Uint8Array(0);
  const a = parseEntries(vol, body, 4, 4, `inode ${inode.ino} (${what}) in-inode attributes`).find(
    (x) => x.name === INLINE_DATA_XATTR,
  );
  if (!a) return new Uint8Array(0);
  if (!a.value) throw vol.corrupt(`inode ${inode.ino} (${what}): inline data in an EA inode`);
  return a.value;
}
