// struct verity_sb — cryptsetup lib/verity/verity.c; kernel docs admin-guide/device-mapper/verity
// ("Hash tree" and the on-disk superblock veritysetup writes). Little-endian, 512 bytes.
import { ascii, bytes, pad, struct, u16, u32, u64n, uuid, type Infer } from '@lcow/binary';

export const VeritySuperblock = struct('VeritySuperblock', 'le', {
  signature: ascii(8),
  version: u32,
  hashType: u32,
  uuid: uuid,
  algorithm: ascii(32),
  dataBlockSize: u32,
  hashBlockSize: u32,
  dataBlocks: u64n,
  saltSize: u16,
  _pad1: pad(6),
  salt: bytes(256),
  _pad2: pad(168),
});
export type VeritySuperblock = Infer<typeof VeritySuperblock>;

export const VERITY_SIGNATURE = 'verity';
/** Hash type 1: each digest is H(salt ‖ block) (type 0, Chrome OS, appends the salt instead). */
export const HASH_TYPE_NORMAL = 1;
