import { formatHResult, hresultName } from './hresult.ts';

/**
 * Codes of {@link HcsError}: `ERR_HCS` carries an HRESULT (and the result document HCS returned);
 * `ERR_UNSUPPORTED_PLATFORM` means no vmcompute; `ERR_TIMEOUT` an operation's notification did not come in
 * time; `ERR_ABORTED` the caller's AbortSignal; `ERR_HANDLE_CLOSED` a call on a closed system;
 * `ERR_INVALID_ARGUMENT` a bad `lcow.*` option (with the original driver's message).
 */
export type HcsErrorCode =
  | 'ERR_HCS'
  | 'ERR_UNSUPPORTED_PLATFORM'
  | 'ERR_TIMEOUT'
  | 'ERR_ABORTED'
  | 'ERR_HANDLE_CLOSED'
  | 'ERR_INVALID_ARGUMENT'
  // What a remotefs failure in the guest meant (RemoteFsError).
  | 'ERR_NOT_FOUND'
  | 'ERR_EXISTS'
  | 'ERR_PERMISSION'
  | 'ERR_EOF'
  | 'ERR_REMOTEFS';

/** The one error class of `@lcow/hcs`. */
export class HcsError extends Error {
  readonly code: HcsErrorCode;
  /** The operation that failed (`HcsStartComputeSystem`, …). */
  readonly op: string;
  /** Unsigned HRESULT, for `ERR_HCS`. */
  readonly hresult: number | undefined;
  /** The decoded result document HCS returned with the failure, if any. */
  readonly result: unknown;

  constructor(
    code: HcsErrorCode,
    op: string,
    message: string,
    opts: { hresult?: number; result?: unknown; cause?: unknown } = {},
  ) {
    const hr = opts.hresult === undefined ? '' : `: ${hresultName(opts.hresult)} (${formatHResult(opts.hresult)})`;
    super(`${op}: ${message}${hr}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.op = op;
    this.hresult = opts.hresult === undefined ? undefined : opts.hresult >>> 0;
    this.result = opts.result;
  }
  override get name(): string {
    return 'HcsError';
  }
}

/** Throws `ERR_UNSUPPORTED_PLATFORM` off Windows, before anything tries to load vmcompute.dll. */
export function assertWindows(op: string, platform: NodeJS.Platform = process.platform): void {
  if (platform !== 'win32') {
    throw new HcsError(
      'ERR_UNSUPPORTED_PLATFORM',
      op,
      `the Host Compute Service exists only on Windows (this is ${platform}); use the host or inproc backend`,
    );
  }
}
