import { isAbsolute, join, resolve } from 'node:path';
import { LayerStoreError } from './errors.ts';

/** Longest layer id we accept: moby ids are 64 hex digits; names leave room, file systems cap at 255. */
export const MAX_LAYER_ID_LENGTH = 128;

/**
 * Checks that `id` names exactly one folder inside the data root. The original driver passed ids through
 * `filepath.Base`, silently mapping `../x` to `x`; we refuse instead: empty ids, `.`/`..`, path separators
 * of either platform, NUL and other control characters, a `-removing` suffix (reserved for two-phase
 * removal), the reserved folder names, and ids longer than {@link MAX_LAYER_ID_LENGTH}.
 */
export function validateLayerId(id: string): string {
  const bad = (why: string): LayerStoreError =>
    new LayerStoreError('ERR_INVALID_LAYER_ID', `layer id ${JSON.stringify(id)}: ${why}`);
  if (typeof id !== 'string' || id.length === 0) throw bad('empty');
  if (id.length > MAX_LAYER_ID_LENGTH) throw bad(`longer than ${MAX_LAYER_ID_LENGTH} characters`);
  if (id === '.' || id === '..') throw bad('is a relative path component');
  if (/[/\\]/.test(id)) throw bad('contains a path separator');
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(id)) throw bad('contains a control character');
  if (/[:*?"<>|]/.test(id)) throw bad('contains a character Windows forbids in file names');
  if (id.endsWith('-removing')) throw bad('ends in -removing, which marks a layer being deleted');
  if (RESERVED.has(id.toLowerCase())) throw bad('is a reserved folder name of the data root');
  if (/[ .]$/.test(id)) throw bad('ends in a space or dot, which Windows strips');
  return id;
}

const RESERVED = new Set(['cache', 'scratch', 'tmp', 'con', 'prn', 'aux', 'nul']);

/** Where everything of the on-disk contract lives (DESIGN.md, compatible with the original driver). */
export interface DataRootPaths {
  root: string;
  cache: string;
  /** Blank default-size sandbox, copied for each new sandbox. */
  cachedSandbox: string;
  /** Blank service-VM scratch disk. */
  cachedScratch: string;
  scratchDir: string;
  /** `<root>/scratch/<vmid>.vhdx` for a service VM. */
  scratch(vmId: string): string;
}

/** The paths of one layer's folder. */
export interface LayerPaths {
  dir: string;
  /** Read-only layer: ext4 image + fixed VHD footer. */
  layerVhd: string;
  /** Read-write layer: ext4 in a VHDX. */
  sandboxVhdx: string;
  /** JSON array of the absolute parent folders, nearest first, or `null`. */
  layerChain: string;
  /** The folder's name while it is being removed. */
  removing: string;
}

/** The data-root layout for an absolute `root`. */
export function dataRootPaths(root: string): DataRootPaths {
  if (!isAbsolute(root))
    throw new LayerStoreError('ERR_INVALID_LAYER_ID', `data root ${JSON.stringify(root)}: must be an absolute path`);
  const r = resolve(root);
  return {
    root: r,
    cache: join(r, 'cache'),
    cachedSandbox: join(r, 'cache', 'sandbox.vhdx'),
    cachedScratch: join(r, 'cache', 'scratch.vhdx'),
    scratchDir: join(r, 'scratch'),
    scratch: (vmId) => join(r, 'scratch', `${validateLayerId(vmId)}.vhdx`),
  };
}

/** The paths of layer `id` under `root`, after validating the id. */
export function layerPaths(root: string, id: string): LayerPaths {
  const { root: r } = dataRootPaths(root);
  const dir = join(r, validateLayerId(id));
  return {
    dir,
    layerVhd: join(dir, 'layer.vhd'),
    sandboxVhdx: join(dir, 'sandbox.vhdx'),
    layerChain: join(dir, 'layerchain.json'),
    removing: `${dir}-removing`,
  };
}
