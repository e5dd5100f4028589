// The `lcow.*` driver options the utility VM reads, parsed and validated exactly as the original
// (opengcs client config.go; ../shared/reference/lcow-behaviour.md §3.1–3.3), error texts included.
import { stat } from 'node:fs/promises';
import { win32 } from 'node:path';
import { HcsError } from '../errors.ts';

export const DEFAULT_UVM_TIMEOUT_SECONDS = 300;

/** What the options say about booting the utility VM. */
export interface UvmOptions {
  kirdPath: string;
  kernelFile: string;
  initrdFile: string;
  bootParameters: string;
  /** `lcow.timeout` (0: unset). */
  timeoutSeconds: number;
}

function optionError(message: string): HcsError {
  return new HcsError('ERR_INVALID_ARGUMENT', 'lcow options', message);
}

/**
 * `ParseOptions`: `key=value` entries (key lower-cased, value verbatim, the last duplicate wins; entries without
 * `=` and unknown keys are ignored). `programFiles` is `%ProgramFiles%`, whose `Linux Containers` folder is the
 * default kernel/initrd path.
 */
export function parseUvmOptions(opts: readonly string[], programFiles = process.env.ProgramFiles ?? ''): UvmOptions {
  const o: UvmOptions = {
    kirdPath: win32.join(programFiles, 'Linux Containers'),
    kernelFile: 'kernel',
    initrdFile: 'initrd.img',
    bootParameters: '',
    timeoutSeconds: 0,
  };
  for (const v of opts) {
    const eq = v.indexOf('=');
    if (eq < 0) continue;
    const key = v.slice(0, eq).toLowerCase();
    const value = v.slice(eq + 1);
    switch (key) {
      case 'lcow.kirdpath':
        o.kirdPath = value;
        break;
      case 'lcow.kernel':
        o.kernelFile = value;
        break;
      case 'lcow.initrd':
        o.initrdFile = value;
        break;
      case 'lcow.bootparameters':
        o.bootParameters = value;
        break;
      case 'lcow.timeout': {
        const n = atoi(value);
        if (n === null) throw optionError('lcow.timeout option could not be interpreted as an integer');
        if (n < 0) throw optionError('lcow.timeout option cannot be negative');
        o.timeoutSeconds = n;
        break;
      }
    }
  }
  return o;
}

/** Go's strconv.Atoi: an optional sign and decimal digits, nothing else. */
function atoi(s: string): number | null {
  if (!/^[+-]?\d+$/.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * `GenerateDefault`'s timeout: the option when set, else `OPENGCS_UVM_TIMEOUT_SECONDS` when set, else 300 s.
 * The variable is validated even when the option wins, as the original did.
 */
export function uvmTimeoutSeconds(o: UvmOptions, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.OPENGCS_UVM_TIMEOUT_SECONDS;
  let fromEnv = 0;
  if (raw !== undefined && raw !== '') {
    const n = atoi(raw);
    if (n === null) throw optionError('OPENGCS_UVM_TIMEOUT_SECONDS could not be interpreted as an integer');
    if (n < 0) throw optionError('OPENGCS_UVM_TIMEOUT_SECONDS cannot be negative');
    fromEnv = n;
  }
  return o.timeoutSeconds || fromEnv || DEFAULT_UVM_TIMEOUT_SECONDS;
}

/** `Validate()`: the kernel and initrd must exist (other stat errors pass, as in the original). */
export async function validateBootFiles(o: UvmOptions): Promise<void> {
  for (const [what, file] of [
    ['kernel', win32.join(o.kirdPath, o.kernelFile)],
    ['initrd', win32.join(o.kirdPath, o.initrdFile)],
  ] as const) {
    const path = process.platform === 'win32' ? file : file.replace(/\\/g, '/');
    try {
      await stat(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw optionError(`${what} '${file}' not found`);
    }
  }
}
