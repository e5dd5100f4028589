/**
 * Codes of {@link DriverError}: `ERR_USAGE`, a command line the `lcow` tool cannot run; `ERR_VERIFICATION`,
 * a self-check (such as `lcow demo`'s) that found a difference; `ERR_NOT_FOUND`, `ERR_NOT_A_DIRECTORY`,
 * `ERR_IS_A_DIRECTORY`, `ERR_EXISTS`, `ERR_NOT_EMPTY`, `ERR_SYMLINK_LOOP`, a path in a container
 * filesystem that does not name what was asked; `ERR_READ_ONLY`, a write to a backend that cannot write;
 * `ERR_LAYER_BUSY`, a layer in use in a way the operation cannot share; `ERR_NOT_MOUNTED`, a `put` without
 * its `get`; `ERR_UNSUPPORTED`, what this backend or platform cannot do; `ERR_HOST_COMMAND`, a host tool
 * (`mount`, `umount`) that failed; `ERR_APPLY`, the conversion child process that failed;
 * `ERR_INVALID_ARGUMENT`.
 */
export type DriverErrorCode =
  | 'ERR_USAGE'
  | 'ERR_VERIFICATION'
  | 'ERR_NOT_FOUND'
  | 'ERR_NOT_A_DIRECTORY'
  | 'ERR_IS_A_DIRECTORY'
  | 'ERR_EXISTS'
  | 'ERR_NOT_EMPTY'
  | 'ERR_SYMLINK_LOOP'
  | 'ERR_READ_ONLY'
  | 'ERR_LAYER_BUSY'
  | 'ERR_NOT_MOUNTED'
  | 'ERR_UNSUPPORTED'
  | 'ERR_HOST_COMMAND'
  | 'ERR_APPLY'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_ABORTED';

/** The one error class of `@lcow/driver`. */
export class DriverError extends Error {
  readonly code: DriverErrorCode;
  constructor(code: DriverErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'DriverError';
  }
}
