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

/**
 * The daemon-level options (`dockerd --storage-opt`, `lcow --storage-opt`), with what each sets. Any other
 * key is refused at init, naming it and these, as overlay2 refuses what it does not know: an option
 * accepted and ignored is a setting the operator believes in and does not have.
 */
export const DAEMON_OPTIONS: Readonly<Record<string, string>> = {
  'lcow.sandboxsize': 'default sandbox size in GiB (at least 20)',
  'lcow.sandboxtype': 'dynamic or fixed sandbox VHDX',
  'lcow.maxlayersize': 'largest layer in GiB (1 to 16384)',
  'lcow.backend': 'host, inproc, hcs or auto',
  'lcow.globalmode': 'one utility VM for all containers (hcs)',
  'lcow.kirdpath': "folder of the utility VM's kernel and initrd (hcs)",
  'lcow.kernel': 'kernel file name in lcow.kirdpath (hcs)',
  'lcow.initrd': 'initrd file name in lcow.kirdpath (hcs)',
  'lcow.bootparameters': 'utility VM kernel command line (hcs)',
  'lcow.timeout': 'utility VM operation timeout in seconds (hcs)',
};

/** Refuses what is not `key=value` with a known key ({@link DAEMON_OPTIONS}). */
function checkKnown(opts: readonly string[] | Readonly<Record<string, string>>): void {
  const keys = Array.isArray(opts)
    ? (opts as readonly string[]).map((o) => {
        if (!o.includes('='))
          throw new DriverError(
            'ERR_INVALID_ARGUMENT',
            `lcowdriver: init: option ${JSON.stringify(o)}: expected KEY=VALUE`,
          );
        return o.slice(0, o.indexOf('='));
      })
    : Object.keys(opts);
  for (const raw of keys) {
    const key = raw.trim().toLowerCase();
    if (Object.hasOwn(DAEMON_OPTIONS, key)) continue;
    const removed = key === 'lcow.vhdx' ? ' (removed in 2019 with VHDX booting: use lcow.kernel and lcow.initrd)' : '';
    throw new DriverError(
      'ERR_INVALID_ARGUMENT',
      `lcowdriver: init: unknown option ${JSON.stringify(raw)}${removed}; known: ${Object.keys(DAEMON_OPTIONS).join(', ')}`,
    );
  }
}

/** What one layer's own options (`docker run --storage-opt`, moby's `CreateOpts.StorageOpt`) ask for. */
export interface LayerOptions {
  /** The sandbox's size in GiB (a whole number of MiB), when given. */
  sandboxSizeGb?: number;
}

/** Smallest `size=`: below it ext4's own metadata and journal leave a container next to nothing. */
export const MIN_SANDBOX_BYTES = 64 * 2 ** 20;
/** Largest `size=`: a VHDX's limit. */
const MAX_SANDBOX_BYTES = 64 * 2 ** 40;

/**
 * A layer's own options. A sandbox (`createreadwrite`) takes Docker's `size` (`docker run --storage-opt
 * size=5G`: bytes with k, m, g, t or p in powers of 1024, as Docker reads it; rounded up to a MiB, from
 * 64 MiB to 64 TiB) and the original's `lcow.sandboxsize` (GiB, at least 20); a read-only layer takes none,
 * as overlay2. Anything else is `ERR_INVALID_ARGUMENT` naming the layer, the key and the known keys.
 */
export function parseLayerOptions(
  opts: Readonly<Record<string, string>>,
  id: string,
  kind: 'create' | 'createreadwrite',
): LayerOptions {
  const title = `lcowdriver: ${kind}: id ${id}`;
  const m = optionMap(opts);
  const known = kind === 'createreadwrite' ? ['size', 'lcow.sandboxsize'] : [];
  for (const key of m.keys())
    if (!known.includes(key))
      throw new DriverError(
        'ERR_INVALID_ARGUMENT',
        kind === 'create'
          ? `${title}: --storage-opt is not supported for read-only layers (${JSON.stringify(key)})`
          : `${title}: unknown storage option ${JSON.stringify(key)}; known: ${known.join(', ')}`,
      );
  const size = m.get('size');
  const own = m.get('lcow.sandboxsize');
  if (size !== undefined && own !== undefined)
    throw new DriverError('ERR_INVALID_ARGUMENT', `${title}: size and lcow.sandboxsize, not both`);
  if (own !== undefined) return { sandboxSizeGb: parseSandboxSize(own, id) };
  if (size === undefined) return {};
  const bytes = parseDockerSize(size);
  if (bytes === null || bytes < MIN_SANDBOX_BYTES || bytes > MAX_SANDBOX_BYTES)
    throw new DriverError(
      'ERR_INVALID_ARGUMENT',
      `${title}: size ${JSON.stringify(size)}: a size from 64M to 64T (bytes, or with k, m, g, t: powers of 1024)`,
    );
  return { sandboxSizeGb: Math.ceil(bytes / 2 ** 20) / 1024 };
}

/** Docker's RAMInBytes: `5G`, `512m`, `1.5GiB`, `1073741824`; null when it does not parse. */
function parseDockerSize(v: string): number | null {
  const m = /^(\d+(?:\.\d+)?) ?([kmgtp])?(?:i?b)?$/i.exec(v.trim());
  if (!m) return null;
  const power = m[2] ? 'kmgtp'.indexOf(m[2].toLowerCase()) + 1 : 0;
  return Math.floor(Number(m[1]) * 1024 ** power);
}

export function parseDriverOptions(opts: readonly string[] | Readonly<Record<string, string>> = []): DriverOptions {
  checkKnown(opts);
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
