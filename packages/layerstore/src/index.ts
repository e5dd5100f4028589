export { LayerStoreError, type LayerStoreErrorCode } from './errors.ts';
export {
  MAX_LAYER_ID_LENGTH,
  dataRootPaths,
  layerPaths,
  validateLayerId,
  type DataRootPaths,
  type LayerPaths,
} from './paths.ts';
export { MAX_CHAIN_BYTES, formatLayerChain, parseLayerChain } from './chain.ts';
export { LayerStore, type CleanupReport, type LayerInfo } from './store.ts';
export { KeyedLock } from './lock.ts';
export { fsyncDir, writeFileAtomic } from './atomic.ts';
