// `lcow import`: an image's layers — from a registry, the Docker daemon, or an archive (see
// @lcow/image) — applied as a chain in the data root (ids = chain ids, so a layer already there is
// reused), each layer's blob checked against its digest on the way and its tar against its diff id
// before anything is committed, and a sandbox created on top.
import { randomBytes } from 'node:crypto';
import { openImage, type Image, type OpenImageOptions } from '@lcow/image';
import type { LcowDriver } from './driver.ts';
import { DriverError } from './errors.ts';

export interface ImportOptions {
  /** Name of the sandbox made on top (default a random id); null: no sandbox. */
  sandbox?: string | null;
  /** Append a dm-verity tree to each new layer and keep its root digest. */
  verity?: boolean;
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

/** Imports the image `reference` names (any transport of @lcow/image) into `driver`'s data root. */
export async function importImage(
  driver: LcowDriver,
  reference: string,
  opts: ImportOptions = {},
): Promise<ImportResult> {
  const image = await openImage(reference, { ...opts.source, ...(opts.signal ? { signal: opts.signal } : {}) });
  try {
    const sizes = image.layers.map((l) => l.size);
    const total = sizes.includes(-1) ? -1 : sizes.reduce((a, b) => a + b, 0);
    let done = 0;
    const report = (layer: number): void => opts.onProgress?.({ done, total, layer, layers: image.layers.length });
    const reused: string[] = [];
    let parent: string | null = null;
    for (const layer of image.layers) {
      opts.signal?.throwIfAborted();
      const i = layer.index;
      const id = image.chainIds[i]!;
      const have = (await driver.exists(id)) ? await driver.store.info(id) : null;
      if (have?.kind === 'layer' && (have.parentIds[0] ?? null) === parent) {
        reused.push(id);
        done += Math.max(0, layer.size);
        report(i);
        parent = id;
        continue;
      }
      if (have) await driver.remove(id); // made some other way (created, never applied): start it again
      // A layer in a local file is read by the converter child itself; a stream (a registry blob, its
      // digest checked as it ends) is fed to it. Either way the child decompresses and checks the diff id,
      // and the layer's folder appears only once its layer.vhd is complete.
      const before = done;
      const source = layer.file
        ? layer.file
        : counted(layer.open(opts.signal ? { signal: opts.signal } : {}), (n) => {
            done += n;
            report(i);
          });
      try {
        await driver.createFromDiff(id, parent, source, {
          signal: opts.signal,
          verity: opts.verity,
          diffId: layer.diffId,
        });
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'ERR_VERIFICATION')
          throw new DriverError('ERR_VERIFICATION', `image ${image.name}: layer ${i}: ${(e as Error).message}`, {
            cause: e,
          });
        throw e;
      }
      done = before + Math.max(0, layer.size);
      report(i);
      parent = id;
    }
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
