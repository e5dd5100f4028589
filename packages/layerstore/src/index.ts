export { LayerStoreError, type LayerStoreErrorCode } from './errors.ts';
export {
  MAX_LAYER_ID_LENGTH,
  dataRootPaths,
  layerPaths,
  validateLayerId,
  type DataRootPaths,
  type LayerPaths,
} from './paths.ts';
export { MAX_CHAIN_BYTES, MAX_CHAIN_DEPTH, formatLayerChain, parseLayerChain } from './chain.ts';
export { LayerStore, scratchLock, type CleanupReport, type LayerInfo } from './store.ts';
export { HostLock, KeyedLock, SharedKeyedLock } from './lock.ts';
export { fsyncDir, writeFileAtomic } from './atomic.ts';
export { ownerAlive, ownerOf, ownerToken, type OwnerToken } from './owner.ts';
