// `lcow import`: an image tarball's layers applied as a chain in the data root (ids = chain ids, so a
// layer already there is reused), each layer's uncompressed bytes checked against its diff id, and a
// sandbox created on top.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable, Transform, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { LcowDriver } from './driver.ts';
import { DriverError } from './errors.ts';
import { readImage, type ImageInfo, type Member } from './image.ts';

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

/** The member's bytes, gunzipped when they are gzip, with the sha256 of what comes out. */
async function layerStream(
  path: string,
  m: Member,
  counted: (n: number) => void,
): Promise<{ tar: Readable; digest: () => string }> {
  const magic = Buffer.alloc(2);
  const fh = await open(path, 'r');
  try {
    await fh.read(magic, 0, 2, m.offset);
  } finally {
    await fh.close();
  }
  const hash = createHash('sha256');
  const raw =
    m.size === 0 ? Readable.from([]) : createReadStream(path, { start: m.offset, end: m.offset + m.size - 1 });
  raw.on('data', (c: Buffer) => counted(c.length));
  const hashing = new Transform({
    transform(c: Buffer, _enc, cb) {
      hash.update(c);
      cb(null, c);
    },
  });
  const gzip = m.size >= 2 && magic[0] === 0x1f && magic[1] === 0x8b;
  const tar = gzip ? pipeline(raw, createGunzip(), hashing, () => {}) : pipeline(raw, hashing, () => {});
  return { tar, digest: () => `sha256:${hash.digest('hex')}` };
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
    if (have) await driver.remove(id); // half there (created, never applied): start it again
    await driver.create(id, parent);
    const { tar, digest } = await layerStream(image, layer.member, (n) => {
      done += n;
      opts.onProgress?.({ done, total, layer: i, layers: info.layers.length });
    });
    try {
      await driver.applyDiff(id, parent, tar, { signal: opts.signal, verity: opts.verity });
      const got = digest();
      if (got !== layer.diffId)
        throw new DriverError(
          'ERR_VERIFICATION',
          `image ${image}: layer ${i} (${layer.name}) has diff id ${got}, its config says ${layer.diffId}`,
        );
    } catch (e) {
      await driver.remove(id).catch(() => {});
      throw e;
    }
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
