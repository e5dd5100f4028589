import type { ConvertOptions } from './convert.ts';

/**
 * What hcsshim's `dmverity-vhd` (and `az confcom`, which runs it) does to a layer tar: hcsshim's ext4
 * layout, whiteouts turned into overlay whiteouts, a 128 GiB maximum disk (tar2ext4's own default is
 * 16 GiB, which gives other bytes and another root hash), a dm-verity tree and a VHD footer dated
 * 2000-01-01. `convert(tar, out, DMVERITY_VHD)` writes the VHD `dmverity-vhd create` writes (but for the
 * random ids hcsshim puts in it); `rootDigest(tar, DMVERITY_VHD)` gives the root hash `dmverity-vhd roothash`
 * prints, the one confidential-container policies pin.
 */
export const DMVERITY_VHD = Object.freeze({
  layout: 'hcsshim',
  convertWhiteouts: true,
  maximumDiskSize: 128 * 2 ** 30,
  verity: true,
  appendVhdFooter: true,
  timestamp: new Date(Date.UTC(2000, 0, 1)),
} as const satisfies ConvertOptions);
