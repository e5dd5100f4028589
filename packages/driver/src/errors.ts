/**
 * Codes of {@link DriverError}: `ERR_USAGE`, a command line the `lcow` tool cannot run; `ERR_VERIFICATION`,
 * a self-check (such as `lcow demo`'s) that found a difference; `ERR_NOT_FOUND`, `ERR_NOT_A_DIRECTORY`,
 * `ERR_IS_A_DIRECTORY`, `ERR_EXISTS`, `ERR_NOT_EMPTY`, `ERR_SYMLINK_LOOP`, a path in a container
 * filesystem that does not name what was asked; `ERR_READ_ONLY`, a write to a backend that cannot write;
 * `ERR_LAYER_BUSY`, a layer in use in a way the operation cannot share; `ERR_NOT_MOUNTED`, a `put` without
 * its `get`; `ERR_UNSUPPORTED`, what this backend or platform cannot do; `ERR_HOST_COMMAND`, a host tool
 * (`mount`, `umount`) that failed; `ERR_APPLY`, the conversion child process that failed;
 * `ERR_INVALID_ARGUMENT`.
 */
export type DriverErrorCode =
  | 'ERR_USAGE'
  | 'ERR_VERIFICATION'
  | 'ERR_NOT_FOUND'
  | 'ERR_NOT_A_DIRECTORY'
  | 'ERR_IS_A_DIRECTORY'
  | 'ERR_EXISTS'
  | 'ERR_NOT_EMPTY'
  | 'ERR_SYMLINK_LOOP'
  | 'ERR_READ_ONLY'
  | 'ERR_LAYER_BUSY'
  | 'ERR_NOT_MOUNTED'
  | 'ERR_UNSUPPORTED'
  | 'ERR_HOST_COMMAND'
  | 'ERR_APPLY'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_ABORTED';

/** The one error class of `@lcow/driver`. */
export class DriverError extends Error {
  readonly code: DriverErrorCode;
  constructor(code: DriverErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
  override get name(): string {
    return 'DriverError';
  }
}

/** What an operating-system error means to a user, as one of our codes. */
const ERRNO_CODES: Record<string, string> = {
  ENOENT: 'ERR_NOT_FOUND',
  EEXIST: 'ERR_EXISTS',
  EISDIR: 'ERR_IS_A_DIRECTORY',
  ENOTDIR: 'ERR_NOT_A_DIRECTORY',
  ENOTEMPTY: 'ERR_NOT_EMPTY',
  EACCES: 'ERR_PERMISSION',
  EPERM: 'ERR_PERMISSION',
  EROFS: 'ERR_READ_ONLY',
  ENOSPC: 'ERR_DISK_FULL',
  EDQUOT: 'ERR_DISK_FULL',
  EFBIG: 'ERR_DISK_FULL',
  ELOOP: 'ERR_SYMLINK_LOOP',
  ENAMETOOLONG: 'ERR_INVALID_ARGUMENT',
  E2BIG: 'ERR_INVALID_ARGUMENT',
  EBUSY: 'ERR_LAYER_BUSY',
  ETXTBSY: 'ERR_LAYER_BUSY',
  EMFILE: 'ERR_RESOURCES',
  ENFILE: 'ERR_RESOURCES',
  ENOMEM: 'ERR_RESOURCES',
};

/**
 * The code and message the command prints for an error: ours as they are; an operating-system error
 * (`ENOENT`…) as one of our codes with the errno kept once at the end; anything else `ERR_INTERNAL`.
 */
export function describeError(e: unknown): { code: string; message: string } {
  const err = e as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
  const raw = typeof err?.code === 'string' ? err.code : null;
  const text = err instanceof Error ? err.message : String(e);
  if (raw && /^E[A-Z0-9]+$/.test(raw) && (typeof err.errno === 'number' || typeof err.syscall === 'string')) {
    let message = text.startsWith(`${raw}: `) ? text.slice(raw.length + 2) : text;
    // A rename or link of a finished temporary file names the output, not our hidden temporary name.
    const dest = (err as { dest?: unknown }).dest;
    if (typeof dest === 'string') message = message.replace(/, (rename|link) '.*' -> '.*'$/, `, $1 to '${dest}'`);
    return { code: ERRNO_CODES[raw] ?? 'ERR_IO', message: `${message} (${raw})` };
  }
  if (raw?.startsWith('ERR_')) return { code: raw, message: text };
  return { code: 'ERR_INTERNAL', message: text };
}
