export { ImageError, escapeControls, quoteRemote, type ImageErrorCode } from './errors.ts';
export {
  formatReference,
  parseDockerReference,
  parseReference,
  type DaemonReference,
  type ImageReference,
  type LocalReference,
  type RegistryReference,
} from './reference.ts';
export { openImage, type OpenImageOptions } from './open.ts';
export { layerTar } from './layer.ts';
export { decompress, sniffCompression, verified, zstdDecoder } from './compression.ts';
export { chainIds, formatPlatform, parsePlatform } from './manifest.ts';
export type { Compression, FileRange, Image, ImageLayer, Platform } from './types.ts';
