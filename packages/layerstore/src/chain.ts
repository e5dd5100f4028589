import { isAbsolute } from 'node:path';
import { LayerStoreError } from './errors.ts';

/** Largest `layerchain.json` we read; a real chain of 255 layers with long paths stays far below. */
export const MAX_CHAIN_BYTES = 1 << 20;

/**
 * Most parents a layer may have: 255 — a container on an image of 255 layers (containerd sets no limit of its
 * own; Docker's overlay2 stops at 125). A utility VM's four SCSI controllers hold 256 disks, and the host
 * backend's overlay of that many layers still fits mount(2)'s one page of options; a chain far deeper could
 * not be mounted anyway, and would only make every operation on it slow.
 */
export const MAX_CHAIN_DEPTH = 255;

/**
 * Parses a `layerchain.json`: `null` (the original's "no parents"), `[]`, or an array of absolute folder
 * paths, nearest parent first. Anything else is `ERR_LAYER_CHAIN_CORRUPT` naming `file`.
 */
export function parseLayerChain(text: string, file: string): string[] {
  const bad = (why: string, cause?: unknown): LayerStoreError =>
    new LayerStoreError('ERR_LAYER_CHAIN_CORRUPT', `${file}: ${why}`, cause === undefined ? undefined : { cause });
  if (text.length > MAX_CHAIN_BYTES) throw bad(`larger than ${MAX_CHAIN_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw bad('not valid JSON', e);
  }
  if (value === null) return [];
  if (!Array.isArray(value)) throw bad('expected an array of parent folder paths or null');
  if (value.length > MAX_CHAIN_DEPTH) throw bad(`${value.length} parents, more than ${MAX_CHAIN_DEPTH}`);
  return value.map((p, i) => {
    if (typeof p !== 'string' || p.length === 0) throw bad(`entry ${i} is not a path`);
    if (!isAbsolute(p) && !/^[A-Za-z]:[\\/]/.test(p))
      throw bad(`entry ${i} (${JSON.stringify(p)}) is not an absolute path`);
    if (p.includes('\0')) throw bad(`entry ${i} contains NUL`);
    return p;
  });
}

/** Serialises a chain the way the original wrote it: `null` for no parents. */
export function formatLayerChain(parents: readonly string[]): string {
  return JSON.stringify(parents.length === 0 ? null : parents);
}
