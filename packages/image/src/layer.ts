import { decompress, verified } from './compression.ts';
import type { ImageLayer } from './types.ts';

/**
 * A layer's uncompressed tar, checked on the way: the blob against its digest (where known) and the tar
 * against the layer's diff id. A mismatch ends the stream with `ERR_DIGEST_MISMATCH` instead of its last
 * chunk, so a consumer that commits at the end of the stream commits nothing.
 */
export function layerTar(layer: ImageLayer, opts: { signal?: AbortSignal } = {}): AsyncIterable<Uint8Array> {
  return verified(decompress(layer.open(opts), layer.compression), layer.diffId, `layer ${layer.index} (diff id)`);
}
