/** Codes of {@link SvmPoolError}. `ERR_REFCOUNT` is a release without a matching acquire: a caller's bug. */
export type SvmPoolErrorCode = 'ERR_REFCOUNT';

/** The one error class of `@lcow/svm-pool`. */
export class SvmPoolError extends Error {
  readonly code: SvmPoolErrorCode;
  constructor(code: SvmPoolErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'SvmPoolError';
  }
}
