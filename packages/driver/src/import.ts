// `lcow import`: an image's layers — from a registry, the Docker daemon, or an archive (see
// @lcow/image) — applied as a chain in the data root (ids = chain ids, so a layer already there is
// reused), each layer's blob checked against its digest on the way and its tar against its diff id
// before anything is committed, and a sandbox created on top.
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { openImage, type Image, type OpenImageOptions } from '@lcow/image';
import { LayerStoreError, MAX_CHAIN_DEPTH } from '@lcow/layerstore';
import type { LcowDriver } from './driver.ts';
import { DriverError } from './errors.ts';
import { inOrder } from './in-order.ts';

export interface ImportOptions {
  /** Name of the sandbox made on top (default a random id); null: no sandbox. */
  sandbox?: string | null;
  /** Append a dm-verity tree to each new layer and keep its root digest. */
  verity?: boolean;
  /** Layers converted at once (default: the number of cores). */
  parallel?: number;
  signal?: AbortSignal;
  /** How to reach the image (registry credentials and TLS, platform, Docker host). */
  source?: Omit<OpenImageOptions, 'signal'>;
  /**
   * Bytes of the image's layers read so far, of `total` (-1: not known, a stream); `layer` is the one
   * being read.
   */
  onProgress?: (p: { done: number; total: number; layer: number; layers: number }) => void;
}

export interface ImportResult {
  image: string;
  format: Image['format'];
  repoTags: string[];
  /** `sha256:…` of the manifest, where the image has one. */
  manifestDigest: string | null;
  /** Layer ids, bottom to top. */
  layers: string[];
  /** Layers already in the data root (same chain id), not applied again. */
  reused: string[];
  sandbox: string | null;
}

/** Counts a stream's bytes as they pass. */
async function* counted(src: AsyncIterable<Uint8Array>, add: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const c of src) {
    add(c.length);
    yield c;
  }
}

/**
 * Which layers are new. A layer already in the data root is reused only when it is proven to be this
 * image's layer: made from a tar checked against this diff id, on the same parent. Anything else under
 * that id — a layer made by `create`/`apply`, a sandbox, an older lcow's layer that recorded no proof — is
 * not the image's to remove or replace (the image chose the id): the import stops before any work, and the
 * message says how to make room.
 */
async function freshLayers(driver: LcowDriver, image: Image): Promise<boolean[]> {
  const fresh: boolean[] = [];
  let parentId: string | null = null;
  for (const layer of image.layers) {
    const id = image.chainIds[layer.index]!;
    if (!(await driver.exists(id))) {
      fresh.push(true);
    } else {
      const have = await driver.layerFacts(id);
      const proven = have.kind === 'layer' && have.parent === parentId && have.diffId === layer.diffId;
      if (!proven)
        throw new DriverError(
          'ERR_EXISTS',
          `image ${image.name}: layer ${layer.index} is ${id}, and a ${have.kind} of that id, not proven to be this layer, is already in the data root; nothing was changed (lcow rm ${id} first, if it may go)`,
        );
      fresh.push(false);
    }
    parentId = id;
  }
  return fresh;
}

/** Imports the image `reference` names (any transport of @lcow/image) into `driver`'s data root. */
export async function importImage(
  driver: LcowDriver,
  reference: string,
  opts: ImportOptions = {},
): Promise<ImportResult> {
  const image = await openImage(reference, { ...opts.source, ...(opts.signal ? { signal: opts.signal } : {}) });
  try {
    // Limits before work: an image deeper than a chain may be is refused before a byte is converted.
    if (image.layers.length > MAX_CHAIN_DEPTH + 1)
      throw new LayerStoreError(
        'ERR_CHAIN_TOO_DEEP',
        `image ${image.name}: ${image.layers.length} layers, more than the ${MAX_CHAIN_DEPTH + 1} a chain may have`,
      );
    const sizes = image.layers.map((l) => l.size);
    const total = sizes.includes(-1) ? -1 : sizes.reduce((a, b) => a + b, 0);
    let done = 0;
    const report = (layer: number): void => opts.onProgress?.({ done, total, layer, layers: image.layers.length });
    const reused: string[] = [];
    const fresh = await freshLayers(driver, image);
    // New layers are converted `parallel` at a time (each in its converter child, both cores busy) into
    // staging folders, and committed bottom up as their parents are: a failure commits nothing above it.
    let parent: string | null = null;
    await inOrder(image.layers, {
      parallel: Math.max(1, opts.parallel ?? availableParallelism()),
      ...(opts.signal ? { signal: opts.signal } : {}),
      start: (layer, signal) => {
        if (!fresh[layer.index]) return null;
        const source = layer.file
          ? layer.file
          : counted(layer.open({ signal }), (n) => {
              done += n;
              report(layer.index);
            });
        const staging = driver.stageFromDiff(image.chainIds[layer.index]!, source, {
          signal,
          verity: opts.verity,
          diffId: layer.diffId,
        });
        return staging.catch((e: unknown) => {
          if ((e as { code?: string }).code !== 'ERR_VERIFICATION') throw e;
          const message = `image ${image.name}: layer ${layer.index}: ${(e as Error).message}`;
          throw new DriverError('ERR_VERIFICATION', message, { cause: e });
        });
      },
      finish: async (layer, staged) => {
        const id = image.chainIds[layer.index]!;
        if (staged) await driver.createFromStaged(id, parent, staged, opts.signal);
        else reused.push(id);
        if (layer.file || !staged) done += Math.max(0, layer.size);
        report(layer.index);
        parent = id;
      },
      discard: (staged) => staged.discard(),
    });
    let sandbox: string | null = null;
    if (opts.sandbox !== null) {
      sandbox = opts.sandbox ?? randomBytes(32).toString('hex');
      await driver.createReadWrite(sandbox, parent);
    }
    return {
      image: image.name,
      format: image.format,
      repoTags: image.repoTags,
      manifestDigest: image.manifestDigest,
      layers: image.chainIds,
      reused,
      sandbox,
    };
  } finally {
    await image.close();
  }
}
