/** Codes of {@link DurableError}. */
export type DurableErrorCode = 'ERR_EXISTS' | 'ERR_ABORTED' | 'ERR_CLOSED';

/** The one error class of `@lcow/durable`; file-system failures pass through as Node's own errors. */
export class DurableError extends Error {
  readonly code: DurableErrorCode;
  constructor(code: DurableErrorCode, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.code = code;
  }
  override get name(): string {
    return 'DurableError';
  }
}
