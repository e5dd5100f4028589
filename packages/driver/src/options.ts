// The driver's options: moby passes `key=value` strings (`--storage-opt`); keys are case-insensitive and
// the last duplicate wins, as the original's ParseOptions. Values are checked here, at init, with the
// original's messages (moby#41636 moved the sandbox-size check to daemon start).
import { DriverError } from './errors.ts';

export type BackendName = 'host' | 'inproc' | 'hcs';

export interface DriverOptions {
  globalMode: boolean;
  /** Default sandbox size (GiB) for `createReadWrite` without its own `lcow.sandboxsize`. */
  sandboxSizeGb: number;
  /** `lcow.maxlayersize`: the largest `layer.vhd` applyDiff may write, in GiB (default 128, the original's). */
  maxLayerSizeGb: number;
  /** `lcow.backend`, or null for the platform default. */
  backend: BackendName | null;
  /**
   * `lcow.sandboxtype`: `dynamic` (the original's: the file grows as the container writes, 1 MiB blocks) or
   * `fixed` (all of it allocated; its payload one contiguous run, which the host backend's loop mount
   * needs); null for the backend's default (dynamic on hcs, fixed elsewhere).
   */
  sandboxType: 'dynamic' | 'fixed' | null;
  /** Every `lcow.*` option as given, for the utility VM (kernel, initrd, boot parameters, timeout). */
  raw: string[];
}

/** Sandbox and scratch default size, which is also the minimum (GiB). */
export const DEFAULT_VHDX_SIZE_GB = 20;

/** `lcow.globalmode`, with Go's strconv.ParseBool and the original's message. */
export function parseGlobalMode(value: string | undefined): boolean {
  if (value === undefined) return false;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return false;
  throw new DriverError(
    'ERR_INVALID_ARGUMENT',
    "lcowdriver: init: failed to parse value for 'lcow.globalmode' - must be 'true' or 'false'",
  );
}

/** `lcow.sandboxsize` (GiB) for `createReadWrite(id)`, with the original's messages. */
export function parseSandboxSize(value: string | undefined, id: string): number {
  if (value === undefined) return DEFAULT_VHDX_SIZE_GB;
  const title = `lcowdriver: createreadwrite: id ${id}`;
  const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n > 0xffff_ffff)
    throw new DriverError('ERR_INVALID_ARGUMENT', `${title} failed to parse value '${value}' for 'lcow.sandboxsize'`);
  if (n < DEFAULT_VHDX_SIZE_GB)
    throw new DriverError(
      'ERR_INVALID_ARGUMENT',
      `${title} 'lcow.sandboxsize' option cannot be less than ${DEFAULT_VHDX_SIZE_GB}`,
    );
  return n;
}

/** The original's largest layer (hcsshim's tar2ext4 maximum disk size as the LCOW driver set it). */
export const DEFAULT_MAX_LAYER_SIZE_GB = 128;

function parseMaxLayerSize(v: string): number {
  const n = /^\s*[0-9]{1,5}\s*$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= 16384))
    throw new DriverError(
      'ERR_INVALID_ARGUMENT',
      `lcowdriver: init: lcow.maxlayersize ${JSON.stringify(v)}: a whole number of GiB from 1 to 16384`,
    );
  return n;
}

/** `key=value` list (or a record) → a map of lower-cased keys, the last duplicate winning. */
export function optionMap(opts: readonly string[] | Readonly<Record<string, string>> = []): Map<string, string> {
  const entries = Array.isArray(opts)
    ? (opts as readonly string[]).flatMap((o) => {
        const eq = o.indexOf('=');
        return eq < 0 ? [] : [[o.slice(0, eq), o.slice(eq + 1)] as const];
      })
    : Object.entries(opts);
  const m = new Map<string, string>();
  for (const [k, v] of entries) m.set(k.trim().toLowerCase(), v);
  return m;
}

export function parseDriverOptions(opts: readonly string[] | Readonly<Record<string, string>> = []): DriverOptions {
  const m = optionMap(opts);
  const backend = m.get('lcow.backend');
  if (backend !== undefined && backend !== 'host' && backend !== 'inproc' && backend !== 'hcs' && backend !== 'auto')
    throw new DriverError(
      'ERR_INVALID_ARGUMENT',
      `lcowdriver: init: lcow.backend ${JSON.stringify(backend)}: host, inproc, hcs or auto`,
    );
  const size = m.get('lcow.sandboxsize');
  const maxLayer = m.get('lcow.maxlayersize');
  const sandboxType = m.get('lcow.sandboxtype');
  if (sandboxType !== undefined && sandboxType !== 'dynamic' && sandboxType !== 'fixed')
    throw new DriverError(
      'ERR_INVALID_ARGUMENT',
      `lcowdriver: init: lcow.sandboxtype ${JSON.stringify(sandboxType)}: dynamic or fixed`,
    );
  return {
    maxLayerSizeGb: maxLayer === undefined ? DEFAULT_MAX_LAYER_SIZE_GB : parseMaxLayerSize(maxLayer),
    globalMode: parseGlobalMode(m.get('lcow.globalmode')),
    sandboxSizeGb: size === undefined ? DEFAULT_VHDX_SIZE_GB : parseSandboxSize(size, '(default)'),
    backend: backend === undefined || backend === 'auto' ? null : backend,
    sandboxType: sandboxType ?? null,
    raw: [...m].map(([k, v]) => `${k}=${v}`),
  };
}
