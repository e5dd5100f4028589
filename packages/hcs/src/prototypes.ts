// The vmcompute.dll (HCS v1) exports the LCOW flow calls, as C prototypes for koffi — one line per export,
// as hcsshim's `//sys` table (../shared/reference/hcs-api.md §2). Strings are UTF-16 (`char16_t`), HRESULT
// is a 32-bit int (never C `long`, which is 64-bit on Linux), handles are opaque pointers, and every
// HCS-allocated out-string is received as a `void *` so it can be decoded and freed.

/** HCS_NOTIFICATION_CALLBACK; `context` is the integer key of the handle's watcher. */
export const NOTIFICATION_CALLBACK =
  'void __stdcall HCS_NOTIFICATION_CALLBACK(uint32_t type, uintptr_t context, int32_t status, const char16_t *data)';

export const PROTOTYPES = {
  HcsCreateComputeSystem:
    'int32_t __stdcall HcsCreateComputeSystem(const char16_t *id, const char16_t *configuration, void *identity, _Out_ void **computeSystem, _Out_ void **result)',
  HcsOpenComputeSystem:
    'int32_t __stdcall HcsOpenComputeSystem(const char16_t *id, _Out_ void **computeSystem, _Out_ void **result)',
  HcsCloseComputeSystem: 'int32_t __stdcall HcsCloseComputeSystem(void *computeSystem)',
  HcsStartComputeSystem:
    'int32_t __stdcall HcsStartComputeSystem(void *computeSystem, const char16_t *options, _Out_ void **result)',
  HcsShutdownComputeSystem:
    'int32_t __stdcall HcsShutdownComputeSystem(void *computeSystem, const char16_t *options, _Out_ void **result)',
  HcsTerminateComputeSystem:
    'int32_t __stdcall HcsTerminateComputeSystem(void *computeSystem, const char16_t *options, _Out_ void **result)',
  HcsGetComputeSystemProperties:
    'int32_t __stdcall HcsGetComputeSystemProperties(void *computeSystem, const char16_t *propertyQuery, _Out_ void **properties, _Out_ void **result)',
  HcsModifyComputeSystem:
    'int32_t __stdcall HcsModifyComputeSystem(void *computeSystem, const char16_t *configuration, _Out_ void **result)',
  HcsRegisterComputeSystemCallback:
    'int32_t __stdcall HcsRegisterComputeSystemCallback(void *computeSystem, HCS_NOTIFICATION_CALLBACK *callback, uintptr_t context, _Out_ void **callbackHandle)',
  HcsUnregisterComputeSystemCallback: 'int32_t __stdcall HcsUnregisterComputeSystemCallback(void *callbackHandle)',
  HcsCreateProcess:
    'int32_t __stdcall HcsCreateProcess(void *computeSystem, const char16_t *processParameters, _Out_ HCS_PROCESS_INFORMATION *processInformation, _Out_ void **process, _Out_ void **result)',
  HcsCloseProcess: 'int32_t __stdcall HcsCloseProcess(void *process)',
  HcsTerminateProcess: 'int32_t __stdcall HcsTerminateProcess(void *process, _Out_ void **result)',
  HcsGetProcessProperties:
    'int32_t __stdcall HcsGetProcessProperties(void *process, _Out_ void **processProperties, _Out_ void **result)',
  HcsModifyProcess: 'int32_t __stdcall HcsModifyProcess(void *process, const char16_t *settings, _Out_ void **result)',
  HcsRegisterProcessCallback:
    'int32_t __stdcall HcsRegisterProcessCallback(void *process, HCS_NOTIFICATION_CALLBACK *callback, uintptr_t context, _Out_ void **callbackHandle)',
  HcsUnregisterProcessCallback: 'int32_t __stdcall HcsUnregisterProcessCallback(void *callbackHandle)',
} as const;

/** HCS_PROCESS_INFORMATION (32 bytes on x64): the pid and the three stdio HANDLEs. */
export const PROCESS_INFORMATION = {
  name: 'HCS_PROCESS_INFORMATION',
  fields: { ProcessId: 'uint32_t', Reserved: 'uint32_t', StdInput: 'void *', StdOutput: 'void *', StdError: 'void *' },
} as const;

export type HcsExport = keyof typeof PROTOTYPES;

/** Notification types (HCS_NOTIFICATIONS) the flows wait for — hcs-api.md §3. */
export const Notification = {
  SystemExited: 0x1,
  SystemCreateCompleted: 0x2,
  SystemStartCompleted: 0x3,
  SystemPauseCompleted: 0x4,
  SystemResumeCompleted: 0x5,
  SystemModifyCompleted: 0xc,
  ProcessExited: 0x10000,
  ServiceDisconnect: 0x1000000,
} as const;
