/** Codes of {@link DriverError}; `ERR_USAGE` is a command line the `lcow` tool cannot run. */
export type DriverErrorCode = 'ERR_USAGE';

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
