/**
 * Codes of {@link SvmPoolError}: `ERR_REFCOUNT` (a release without a matching acquire: a caller's bug),
 * `ERR_TIMEOUT` (a VM operation passed `lcow.timeout`), `ERR_ABORTED` (the caller's AbortSignal),
 * `ERR_VM_STOPPED` (the VM was stopped under the operation), `ERR_INVALID_ARGUMENT`.
 */
export type SvmPoolErrorCode =
  'ERR_REFCOUNT' | 'ERR_TIMEOUT' | 'ERR_ABORTED' | 'ERR_VM_STOPPED' | 'ERR_INVALID_ARGUMENT';

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
