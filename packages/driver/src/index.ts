export { DriverError, describeError, type DriverErrorCode } from './errors.ts';
export { errorText } from './error-text.ts';
export {
  LcowDriver,
  type CreateOptions,
  type DiffIdCheck,
  type DriverStatus,
  type LayerFromDiffOptions,
  type StagedLayer,
} from './driver.ts';
export {
  imageRootHashes,
  type ImageRootHashes,
  type ImageRootHashesOptions,
  type LayerRootHash,
} from './image-hashes.ts';
export { Metrics, driverGauges } from './metrics.ts';
export {
  LOG_FORMATS,
  LOG_LEVELS,
  logOptions,
  notifySystemd,
  serveMetrics,
  serveUntilSignal,
  serviceCommon,
  serviceLog,
  SERVICE_ARGS,
  SERVICE_HELP,
  type LogFormat,
  type LogLevel,
  type ServiceLog,
} from './service.ts';
export { parseDriverOptions, type BackendName, type DriverOptions } from './options.ts';
export type { Change, ChangeKind } from './changes.ts';
export type { ContainerFile, ContainerFs, DirEntry, EntryKind, FileInfo } from './fs/types.ts';
export type { Backend } from './backends/backend.ts';
