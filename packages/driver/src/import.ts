// `lcow import`: an image tarball's layers applied as a chain in the data root (ids = chain ids, so a
// layer already there is reused), each layer's uncompressed bytes checked against its diff id, and a
// sandbox created on top.
import { randomBytes } from 'node:crypto';
import type { LcowDriver } from './driver.ts';
import { DriverError } from './errors.ts';
import { readImage, type ImageInfo } from './image.ts';

export interface ImportOptions {
  /** Name of the sandbox made on top (default a random id); null: no sandbox. */
  sandbox?: string | null;
  /** Append a dm-verity tree to each new layer and keep its root digest. */
  verity?: boolean;
  signal?: AbortSignal;
  /** Bytes of the image read so far, of `total`. */
  onProgress?: (p: { done: number; total: number; layer: number; layers: number }) => void;
}

export interface ImportResult {
  image: string;
  format: ImageInfo['format'];
  repoTags: string[];
  /** Layer ids, bottom to top. */
  layers: string[];
  /** Layers already in the data root (same chain id), not applied again. */
  reused: string[];
  sandbox: string | null;
}

/** Imports `image` (docker save or OCI layout) into `driver`'s data root. */
export async function importImage(driver: LcowDriver, image: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const info = await readImage(image);
  const total = info.layers.reduce((n, l) => n + l.member.size, 0);
  let done = 0;
  const reused: string[] = [];
  let parent: string | null = null;
  for (const [i, layer] of info.layers.entries()) {
    opts.signal?.throwIfAborted();
    const id = info.chainIds[i]!;
    const have = (await driver.exists(id)) ? await driver.store.info(id) : null;
    if (have?.kind === 'layer' && (have.parentIds[0] ?? null) === parent) {
      reused.push(id);
      done += layer.member.size;
      opts.onProgress?.({ done, total, layer: i, layers: info.layers.length });
      parent = id;
      continue;
    }
    if (have) await driver.remove(id); // made some other way (created, never applied): start it again
    try {
      // The converter child reads the layer from the image file itself and checks its diff id before
      // anything is committed; the layer's folder appears only once its layer.vhd is complete.
      await driver.createFromDiff(
        id,
        parent,
        { path: image, offset: layer.member.offset, length: layer.member.size },
        { signal: opts.signal, verity: opts.verity, diffId: layer.diffId },
      );
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_VERIFICATION')
        throw new DriverError(
          'ERR_VERIFICATION',
          `image ${image}: layer ${i} (${layer.name}): ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      throw e;
    }
    done += layer.member.size;
    opts.onProgress?.({ done, total, layer: i, layers: info.layers.length });
    parent = id;
  }
  let sandbox: string | null = null;
  if (opts.sandbox !== null) {
    sandbox = opts.sandbox ?? randomBytes(32).toString('hex');
    await driver.createReadWrite(sandbox, parent);
  }
  return {
    image,
    format: info.format,
    repoTags: info.repoTags,
    layers: info.chainIds,
    reused,
    sandbox,
  };
}
