export { SnapshotError, type SnapshotErrorCode } from './errors.ts';
export { Snapshotter, ROOT_HASH_LABEL, type Mount, type SnapshotterOptions } from './snapshotter.ts';
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
