export { HcsError, assertWindows, type HcsErrorCode } from './errors.ts';
export { HResult, failed, formatHResult, hresultName, toUnsigned, type HResultName } from './hresult.ts';
export { ComputeSystem, DEFAULT_HCS_TIMEOUT_MS, type HcsOptions } from './compute-system.ts';
export { libraryPath, loadBindings, type Bindings } from './bindings.ts';
export { Notification, PROTOTYPES, type HcsExport } from './prototypes.ts';
export {
  DEFAULT_UVM_TIMEOUT_SECONDS,
  parseUvmOptions,
  uvmTimeoutSeconds,
  validateBootFiles,
  type UvmOptions,
} from './uvm/options.ts';
export {
  UVM_PATH,
  hotAddRequest,
  hotRemoveRequest,
  processParameters,
  quoteArg,
  scratchPath,
  utilityVmDocument,
  type UvmDisk,
} from './uvm/documents.ts';
export {
  RemoteFile,
  RemoteFs,
  RemoteFsError,
  fromGoMode,
  toGoMode,
  type GuestProcess,
  type GuestRunner,
  type RemoteFileInfo,
  type RemoteFsErrorKind,
} from './remotefs.ts';
export { HcsProcess } from './process.ts';
export {
  GLOBAL_UVM_ID,
  LcowUtilityVm,
  utilityVmName,
  type CommandResult,
  type GuestDisk,
  type StartUtilityVmOptions,
} from './uvm/utility-vm.ts';
export {
  SDDL_ADMINISTRATORS_LOCAL_SYSTEM,
  SDDL_NTVM_ADMINISTRATORS_LOCAL_SYSTEM,
  VM_GROUP_SID,
  grantVmGroupAccess,
  mkdirAllWithAcl,
  win32Types,
} from './win32/acl.ts';
