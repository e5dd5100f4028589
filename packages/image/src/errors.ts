/**
 * Codes of {@link ImageError}: `ERR_INVALID_REFERENCE`, a reference that does not parse;
 * `ERR_IMAGE_NOT_FOUND`, no such image, tag, digest or archive member; `ERR_UNAUTHORIZED`, credentials refused
 * or missing; `ERR_DIGEST_MISMATCH`, bytes that do not hash to the digest that names them;
 * `ERR_INVALID_IMAGE`, a manifest, index or config that is not what its media type says; `ERR_PLATFORM`, no
 * manifest for the platform asked; `ERR_UNSUPPORTED`, a media type or compression we do not read;
 * `ERR_REGISTRY`, a registry or daemon answer we cannot use (status and message given); `ERR_NETWORK`, a
 * connection that failed after every retry; `ERR_TLS`, a certificate refused; `ERR_ABORTED`.
 */
export type ImageErrorCode =
  | 'ERR_INVALID_REFERENCE'
  | 'ERR_IMAGE_NOT_FOUND'
  | 'ERR_UNAUTHORIZED'
  | 'ERR_DIGEST_MISMATCH'
  | 'ERR_INVALID_IMAGE'
  | 'ERR_PLATFORM'
  | 'ERR_UNSUPPORTED'
  | 'ERR_REGISTRY'
  | 'ERR_NETWORK'
  | 'ERR_TLS'
  | 'ERR_ABORTED';

/** The one error class of `@lcow/image`; the message starts with the image or blob it is about. */
export class ImageError extends Error {
  readonly code: ImageErrorCode;
  constructor(code: ImageErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'ImageError';
  }
}
