export { SvmPoolError, type SvmPoolErrorCode } from './errors.ts';
export { RefCounter, hostPathKey } from './refcount.ts';
export type { MappedDisk, UtilityVm } from './types.ts';
export {
  DEFAULT_TIMEOUT_MS,
  GLOBAL_VM_ID,
  Lease,
  SCRATCH_GUEST_PATH,
  SvmPool,
  unionMountArgs,
  type DiskRequest,
  type PoolOptions,
  type PoolSnapshot,
} from './pool.ts';
export { withDeadline } from './deadline.ts';
