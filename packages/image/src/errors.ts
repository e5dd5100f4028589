/**
 * Codes of {@link ImageError}: `ERR_INVALID_REFERENCE`, a reference that does not parse;
 * `ERR_IMAGE_NOT_FOUND`, no such image, tag, digest or archive member; `ERR_UNAUTHORIZED`, credentials refused
 * or missing; `ERR_DIGEST_MISMATCH`, bytes that do not hash to the digest that names them;
 * `ERR_INVALID_IMAGE`, a manifest, index or config that is not what its media type says; `ERR_PLATFORM`, no
 * manifest for the platform asked; `ERR_UNSUPPORTED`, a media type or compression we do not read;
 * `ERR_REGISTRY`, a registry or daemon answer we cannot use (status and message given); `ERR_NETWORK`, a
 * connection that failed after every retry; `ERR_TIMEOUT`, a transfer past its deadline or slower than its
 * floor; `ERR_TLS`, a certificate refused; `ERR_ABORTED`.
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
  | 'ERR_TIMEOUT'
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

// C0 and C1 controls, DEL, and the bidirectional overrides and isolates that reorder what a terminal shows.
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `text` with every control character written as an escape (`\n`, `\x1b`, `\u202e`), so that it stays one
 * line and cannot move the cursor, recolour or rewrite a terminal. Backslashes are left as they are.
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROLS, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

/** Longest piece of another party's text an error message carries. */
export const REMOTE_TEXT_MAX = 300;

/**
 * Text that another party chose (a registry's or a daemon's error body, a header), fit to be shown: cut to
 * {@link REMOTE_TEXT_MAX} characters, its controls escaped, in double quotes so it cannot pass for ours
 * (a body saying `lcow: import OK` reads `"lcow: import OK"`).
 */
export function quoteRemote(text: string, max: number = REMOTE_TEXT_MAX): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  const more = text.length > max ? ` (${text.length - max} more characters)` : '';
  return `"${escapeControls(cut).replace(/"/g, '\\"')}"${more}`;
}
