/**
 * Codes of {@link Ext4Error}: `ERR_EXT4_CORRUPT` for bytes that are not a valid ext4 structure (the message
 * names the structure and field), `ERR_EXT4_UNSUPPORTED` for a valid filesystem using something we refuse.
 */
export type Ext4ErrorCode = 'ERR_EXT4_CORRUPT' | 'ERR_EXT4_UNSUPPORTED';

/** The one error class of `@lcow/ext4`. */
export class Ext4Error extends Error {
  readonly code: Ext4ErrorCode;
  constructor(code: Ext4ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'Ext4Error';
  }
}
