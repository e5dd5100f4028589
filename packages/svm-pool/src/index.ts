export { SvmPoolError, type SvmPoolErrorCode } from './errors.ts';
export { RefCounter, hostPathKey } from './refcount.ts';
export type { MappedDisk, UtilityVm } from './types.ts';
