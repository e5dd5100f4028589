// An image's layers as confidential-container policies need them: each layer converted as hcsshim's
// dmverity-vhd converts it (@lcow/ext4's DMVERITY_VHD preset), several at once, its tar checked against the
// image config's diff id on the way. `imageRootHashes` is `lcow image roothash` as a function;
// `convertImageLayer` and `eachLayer` also serve `lcow image create`.
import { availableParallelism } from 'node:os';
import { openImage, type Image, type ImageLayer, type OpenImageOptions } from '@lcow/image';
import { convertLayer, type ApplyResult } from './apply.ts';
import { DriverError } from './errors.ts';
import { inOrder } from './in-order.ts';

/** One layer's dm-verity root hash, as `dmverity-vhd roothash` prints it. */
export interface LayerRootHash {
  index: number;
  /** `sha256:…` of the layer's uncompressed tar. */
  diffId: string;
  /** Hex, as in "Layer N root hash: HEX". */
  rootHash: string;
  /** Bytes of the ext4 filesystem the hash covers. */
  dataBytes: number;
}

/** What {@link imageRootHashes} found. */
export interface ImageRootHashes {
  /** The reference, normalised, in transport syntax. */
  image: string;
  manifestDigest: string | null;
  /** The image id (`sha256:…` of its config). */
  configDigest: string;
  /** Bottom layer first. */
  layers: LayerRootHash[];
}

export interface ImageRootHashesOptions extends OpenImageOptions {
  /** Layers converted at once (default: the number of cores). */
  parallel?: number;
  /** Called as each layer is done. */
  onLayer?: (done: number, total: number) => void;
}

function layerName(image: Image, layer: ImageLayer): string {
  return `${image.name}: layer ${layer.index}`;
}

/**
 * One layer converted as dmverity-vhd converts it (`out` written unless `digestOnly`), in a child process
 * for a large layer. Its tar must hash to the layer's diff id (`ERR_VERIFICATION` otherwise); a blob with
 * a known digest is checked as it streams.
 */
export async function convertImageLayer(
  image: Image,
  layer: ImageLayer,
  out: string,
  opts: { verity: boolean; digestOnly?: boolean; signal: AbortSignal },
): Promise<ApplyResult> {
  const r = await convertLayer(layer.file ?? layer.open({ signal: opts.signal }), out, {
    ...opts,
    digest: true,
    hcsshim: true,
    what: layerName(image, layer),
  });
  if (r.diffId !== layer.diffId)
    throw new DriverError(
      'ERR_VERIFICATION',
      `${layerName(image, layer)}: its tar hashes to ${r.diffId}, not ${layer.diffId}`,
    );
  return r;
}

/**
 * Runs `job` for every layer, `parallel` at a time, started in layer order (the scheduler `lcow import` uses,
 * with no window: results are small); results in layer order. The first failure is thrown once the jobs
 * running have ended.
 */
export async function eachLayer<T>(
  image: Image,
  parallel: number,
  job: (layer: ImageLayer) => Promise<T>,
): Promise<T[]> {
  const out = new Array<T>(image.layers.length);
  await inOrder(image.layers, {
    parallel,
    window: Infinity,
    start: (layer) => job(layer),
    finish: (layer, r) => void (out[layer.index] = r as T),
  });
  return out;
}

/**
 * Every layer's dm-verity root hash for an image from any transport of `@lcow/image` (a registry, the
 * Docker daemon, a docker-save or OCI archive): what `dmverity-vhd roothash` prints, nothing written to
 * disk. Errors: `@lcow/image`'s for the image, `ERR_VERIFICATION` for a layer whose tar is not its diff
 * id, the converter's (`ERR_TAR_FORMAT` …) naming the layer.
 */
export async function imageRootHashes(ref: string, options: ImageRootHashesOptions = {}): Promise<ImageRootHashes> {
  const { parallel = availableParallelism(), onLayer, ...open } = options;
  const signal = open.signal ?? new AbortController().signal;
  const image = await openImage(ref, open);
  try {
    let done = 0;
    const results = await eachLayer(image, parallel, async (layer) => {
      const r = await convertImageLayer(image, layer, '', { digestOnly: true, verity: false, signal });
      onLayer?.(++done, image.layers.length);
      return { index: layer.index, diffId: layer.diffId, rootHash: r.rootDigest!, dataBytes: r.size };
    });
    return {
      image: image.name,
      manifestDigest: image.manifestDigest,
      configDigest: image.configDigest,
      layers: results,
    };
  } finally {
    await image.close();
  }
}
