/**
 * Codes of {@link Ext4Error}:
 * - `ERR_EXT4_CORRUPT`: bytes that are not a valid ext4 structure (the message names the structure and field);
 * - `ERR_EXT4_UNSUPPORTED`: valid input using something we refuse (a feature, an xattr too large for a block);
 * - `ERR_TAR_FORMAT`: a tar that is malformed or unsafe (the message names the entry);
 * - `ERR_DISK_FULL`: the filesystem would exceed `maximumDiskSize` (the message names the entry);
 * - `ERR_INVALID_ARGUMENT`: an option out of range; `ERR_ABORTED`: the `AbortSignal` fired;
 * - `ERR_NOT_FOUND`, `ERR_NOT_A_DIRECTORY`, `ERR_IS_A_DIRECTORY`, `ERR_SYMLINK_LOOP`: a path given to the reader
 *   does not name what the call needs (as ENOENT, ENOTDIR, EISDIR, ELOOP);
 * - `ERR_INTERNAL`: an invariant of the writer broke (a bug: please report it with the input).
 */
export type Ext4ErrorCode =
  | 'ERR_EXT4_CORRUPT'
  | 'ERR_EXT4_UNSUPPORTED'
  | 'ERR_TAR_FORMAT'
  | 'ERR_DISK_FULL'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_ABORTED'
  | 'ERR_NOT_FOUND'
  | 'ERR_NOT_A_DIRECTORY'
  | 'ERR_IS_A_DIRECTORY'
  | 'ERR_SYMLINK_LOOP'
  | 'ERR_EXISTS'
  | 'ERR_INTERNAL';

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
