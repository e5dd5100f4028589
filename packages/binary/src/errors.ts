/** Codes of {@link BinaryError}: a buffer too short for a struct, or a value a field cannot hold. */
export type BinaryErrorCode = 'ERR_SHORT_BUFFER' | 'ERR_OUT_OF_RANGE';

/**
 * Raised by struct tables. Format packages catch it at their boundary and rethrow their own error
 * (for example `VhdError` with `ERR_VHD_FORMAT`) naming the file, so callers never see this class from them.
 */
export class BinaryError extends Error {
  readonly code: BinaryErrorCode;
  constructor(code: BinaryErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'BinaryError';
  }
}
