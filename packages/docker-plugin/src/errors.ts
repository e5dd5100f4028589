/**
 * The one error class of `@lcow/docker-plugin`: a call dockerd made that cannot be served (`ERR_INVALID_ARGUMENT`,
 * `ERR_NOT_INITIALISED`, `ERR_UNSUPPORTED`, `ERR_NOT_FOUND` for an unknown call, `ERR_ABORTED`, `ERR_UNAVAILABLE`
 * while shutting down), or a socket already served (`ERR_EXISTS`). The driver's own errors pass through with
 * their codes; dockerd shows `Method: CODE: message`.
 */
export class PluginError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'PluginError';
  }
}
