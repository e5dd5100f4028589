export { VhdError, type VhdErrorCode } from './errors.ts';
export { type FileTarget } from './file.ts';
export {
  MAX_VHD_SIZE,
  appendFixedFooter,
  chsGeometry,
  createFixedFooter,
  encodeFooter,
  footerChecksum,
  geometryAlignedSize,
  geometrySize,
  parseFooter,
  readFooter,
  type AppendFooterOptions,
  type AppendedFooter,
  type ChsGeometry,
  type FileFooter,
  type FooterOptions,
  type VhdFooter,
} from './footer/footer.ts';
export { DiskType, Footer, VHD_EPOCH_SECONDS } from './footer/format.ts';
export { createVhdx, planLayout, type CreateVhdxOptions, type VhdxLayout } from './vhdx/create.ts';
export {
  Vhdx,
  openVhdx,
  type FileRegion,
  type OpenVhdxOptions,
  type VhdxAllocation,
  type VhdxInfo,
} from './vhdx/vhdx.ts';
export { inspectDisk, type DiskInfo, type DynamicVhdHeader } from './inspect.ts';
export { convertRawImage, type ConvertOptions, type ConvertResult, type Progress } from './convert.ts';
export {
  DEFAULT_SALT,
  LeafHasher,
  VERITY_BLOCK,
  VerityTree,
  appendVerity,
  checkVerity,
  levelSizes,
  readVerity,
  verityDigest,
  verityLayout,
  type VerityCheck,
  type VerityInfo,
  type VerityLayout,
  type VerityOptions,
  type VerityResult,
} from './verity/verity.ts';
