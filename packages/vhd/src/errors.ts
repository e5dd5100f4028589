/**
 * Codes of {@link VhdError}:
 * - `ERR_VHD_FORMAT`: the file is not a valid VHD/VHDX (bad signature or checksum, impossible sizes, a BAT
 *   entry pointing outside the file, …). The message names the file and the structure or field.
 * - `ERR_VHD_UNSUPPORTED`: valid, but uses something we refuse rather than misread (a log that needs
 *   replay, a differencing disk, an unknown required region or metadata item).
 * - `ERR_INVALID_ARGUMENT`: a caller's argument is out of range (size, offset, block size).
 * - `ERR_READ_ONLY`: a write to a disk opened read-only.
 * - `ERR_EXISTS`: the output exists and `overwrite` was not given.
 * - `ERR_ABORTED`: the operation's `AbortSignal` fired.
 */
export type VhdErrorCode =
  'ERR_VHD_FORMAT' | 'ERR_VHD_UNSUPPORTED' | 'ERR_INVALID_ARGUMENT' | 'ERR_READ_ONLY' | 'ERR_EXISTS' | 'ERR_ABORTED';

/** The one error class of `@lcow/vhd`; `code` is stable, the message starts with the file or value concerned. */
export class VhdError extends Error {
  readonly code: VhdErrorCode;
  constructor(code: VhdErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'VhdError';
  }
}

/** Throws `ERR_ABORTED` when the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new VhdError('ERR_ABORTED', `${what}: aborted`, { cause: signal.reason });
}
