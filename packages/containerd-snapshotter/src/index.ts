export { SnapshotError, type SnapshotErrorCode } from './errors.ts';
export {
  Snapshotter,
  LAYER_DIGEST_LABEL,
  ROOT_HASH_LABEL,
  SNAPSHOT_REF_LABEL,
  type CallContext,
  type Mount,
  type SnapshotterOptions,
} from './snapshotter.ts';
export { DEFAULT_CONTAINERD_ADDRESS } from './content.ts';
export { loadPins, type Pins } from './pins.ts';
export { MAX_KEY_BYTES, MAX_LABEL_BYTES, type Kind, type Snapshot } from './metadata.ts';
export { parseFilter } from './filters.ts';
export {
  DEFAULT_ROOT,
  DEFAULT_SOCKET,
  SnapshotterServer,
  snapshotsService,
  type SnapshotterServerOptions,
} from './server.ts';
export { main } from './main.ts';
