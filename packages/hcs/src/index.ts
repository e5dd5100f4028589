export { HcsError, assertWindows, type HcsErrorCode } from './errors.ts';
export { HResult, failed, formatHResult, hresultName, toUnsigned, type HResultName } from './hresult.ts';
export { ComputeSystem, DEFAULT_HCS_TIMEOUT_MS, type HcsOptions } from './compute-system.ts';
export { libraryPath, loadBindings, type Bindings } from './bindings.ts';
export { Notification, PROTOTYPES, type HcsExport } from './prototypes.ts';
