/**
 * Codes of {@link SnapshotError}, named for the gRPC status each one is answered with (as containerd's
 * `errdefs` maps them): `ERR_NOT_FOUND`, `ERR_ALREADY_EXISTS` (the unpacker takes it as "already there"),
 * `ERR_FAILED_PRECONDITION` (a parent with children, a snapshot of the wrong kind), `ERR_INVALID_ARGUMENT`,
 * `ERR_UNAVAILABLE` (shutting down, or a root another snapshotter serves).
 */
export type SnapshotErrorCode =
  'ERR_NOT_FOUND' | 'ERR_ALREADY_EXISTS' | 'ERR_FAILED_PRECONDITION' | 'ERR_INVALID_ARGUMENT' | 'ERR_UNAVAILABLE';

/** The one error class of `@lcow/containerd-snapshotter`; the message names the snapshot key. */
export class SnapshotError extends Error {
  readonly code: SnapshotErrorCode;
  constructor(code: SnapshotErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'SnapshotError';
  }
}
