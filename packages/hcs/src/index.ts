export { HcsError, assertWindows, type HcsErrorCode } from './errors.ts';
export { HResult, failed, formatHResult, hresultName, toUnsigned, type HResultName } from './hresult.ts';
