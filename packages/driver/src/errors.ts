/**
 * Codes of {@link DriverError}: `ERR_USAGE`, a command line the `lcow` tool cannot run; `ERR_VERIFICATION`,
 * a self-check (such as `lcow demo`'s) that found a difference.
 */
export type DriverErrorCode = 'ERR_USAGE' | 'ERR_VERIFICATION';

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
