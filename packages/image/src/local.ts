// Images on disk: a `docker save` tarball (manifest.json), an OCI layout as a tar (oci-archive) or a
// folder (oci). Only the small JSON documents are read whole; a layer is a byte range of the file.
import { realpathSync, statSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { isAbsolute, join, posix, sep } from 'node:path';
import { compressionOf, verified } from './compression.ts';
import { ImageError, quoteRemote } from './errors.ts';
import {
  MAX_JSON,
  MediaType,
  chainIds,
  diffIdsOf,
  parseJson,
  parseManifest,
  pickPlatform,
  platformOf,
  sha256,
  type Descriptor,
} from './manifest.ts';
import type { LocalReference } from './reference.ts';
import { formatReference } from './reference.ts';
import { indexTar, type Member } from './tar-index.ts';
import type { FileRange, Image, ImageLayer, Platform } from './types.ts';

const CHUNK = 4 << 20;

/** Named blobs of a tar or a folder. */
interface Store {
  where: string;
  has(name: string): boolean;
  range(name: string): FileRange;
  close(): Promise<void>;
}

async function tarStore(path: string): Promise<Store> {
  const fh = await open(path, 'r');
  let members: Map<string, Member>;
  try {
    members = await indexTar(fh, path);
  } catch (e) {
    await fh.close();
    throw e;
  }
  await fh.close();
  const norm = (n: string): string => posix.normalize(`/${n}`).slice(1);
  return {
    where: path,
    has: (n) => members.has(norm(n)),
    range: (n) => {
      const m = members.get(norm(n));
      if (!m) throw new ImageError('ERR_INVALID_IMAGE', `${path}: ${quoteRemote(n, 200)}: not in the archive`);
      return { path, offset: m.offset, length: m.size };
    },
    close: async () => {},
  };
}

/**
 * A folder's files by relative name, every read confined to the folder: the names come from the image's own
 * `manifest.json` or `index.json`, so an absolute name, a `..` component or a NUL is refused, and a name that
 * resolves (through symlinks) to a place outside the folder is refused too — a symlink inside it, as
 * `docker save` writes for a layer two images share, is followed. A range names the resolved file, so a
 * later read does not follow the link again.
 */
function dirStore(dir: string): Store {
  const realDir = realpathSync(dir);
  const resolve = (n: string): { path: string; size: number } | null => {
    if (n === '' || n.includes('\0') || isAbsolute(n) || n.split(/[/\\]/).includes('..'))
      throw new ImageError('ERR_INVALID_IMAGE', `${dir}: ${quoteRemote(n, 200)}: a name that leaves the folder`);
    let real: string;
    try {
      real = realpathSync(join(realDir, n));
    } catch {
      return null;
    }
    if (!real.startsWith(`${realDir}${sep}`))
      throw new ImageError('ERR_INVALID_IMAGE', `${dir}: ${quoteRemote(n, 200)}: a link out of the folder`);
    try {
      const st = statSync(real);
      return st.isFile() ? { path: real, size: st.size } : null;
    } catch {
      return null;
    }
  };
  return {
    where: dir,
    has: (n) => resolve(n) !== null,
    range: (n) => {
      const f = resolve(n);
      if (f === null) throw new ImageError('ERR_INVALID_IMAGE', `${dir}: ${quoteRemote(n, 200)}: not in the layout`);
      return { path: f.path, offset: 0, length: f.size };
    },
    close: async () => {},
  };
}

async function readRange(r: FileRange, max: number, what: string): Promise<Uint8Array> {
  if (r.length > max)
    throw new ImageError('ERR_INVALID_IMAGE', `${what}: ${r.length} bytes, too large for image metadata`);
  const fh = await open(r.path, 'r');
  try {
    const b = new Uint8Array(r.length);
    const { bytesRead } = await fh.read(b, 0, r.length, r.offset);
    if (bytesRead !== r.length) throw new ImageError('ERR_INVALID_IMAGE', `${what}: ends early`);
    return b;
  } finally {
    await fh.close();
  }
}

/**
 * A file range in 4 MiB reads, each chunk a buffer of its own: a consumer may keep it (the digest check
 * holds one back). Readers that can take reused buffers read `ImageLayer.file` themselves.
 */
export async function* rangeChunks(r: FileRange, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const fh = await open(r.path, 'r');
  try {
    for (let at = 0; at < r.length;) {
      signal?.throwIfAborted();
      const buf = new Uint8Array(Math.min(CHUNK, r.length - at));
      const { bytesRead } = await fh.read(buf, 0, buf.length, r.offset + at);
      if (bytesRead === 0)
        throw new ImageError('ERR_INVALID_IMAGE', `${r.path}: ends inside a blob at byte ${r.offset + at}`);
      at += bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

function layerOf(
  index: number,
  range: FileRange,
  diffId: string,
  d: Pick<Descriptor, 'digest' | 'mediaType'> | null,
  compression: ImageLayer['compression'],
  what: string,
): ImageLayer {
  const digest = d?.digest ?? null;
  return {
    index,
    digest,
    diffId,
    mediaType: d?.mediaType || 'application/vnd.docker.image.rootfs.diff.tar',
    compression,
    size: range.length,
    file: range,
    open: (o = {}) => verified(rangeChunks(range, o.signal), digest, `${what} layer ${index}`, range.length),
  };
}

export interface LocalOptions {
  platform: Platform;
}

/** Opens a docker-save tarball, an OCI archive or an OCI layout folder; `file` finds which it is. */
export async function openLocal(ref: LocalReference, opts: LocalOptions): Promise<Image> {
  let isDir = false;
  try {
    isDir = (await stat(ref.path)).isDirectory();
  } catch (e) {
    throw new ImageError(
      'ERR_IMAGE_NOT_FOUND',
      `${ref.path}: ${(e as NodeJS.ErrnoException).code ?? 'cannot be read'}`,
      {
        cause: e,
      },
    );
  }
  if (ref.transport === 'oci' && !isDir)
    throw new ImageError('ERR_INVALID_REFERENCE', `oci:${ref.path}: not a folder (an OCI archive is oci-archive:)`);
  if ((ref.transport === 'docker-archive' || ref.transport === 'oci-archive') && isDir)
    throw new ImageError('ERR_INVALID_REFERENCE', `${ref.transport}:${ref.path}: a folder, not an archive`);
  const store = isDir ? dirStore(ref.path) : await tarStore(ref.path);
  try {
    const dockerSave = store.has('manifest.json') && ref.transport !== 'oci-archive' && ref.transport !== 'oci';
    if (ref.transport === 'docker-archive' && !store.has('manifest.json'))
      throw new ImageError('ERR_INVALID_IMAGE', `${ref.path}: no manifest.json: not a docker-save archive`);
    if (dockerSave) return await dockerSaveImage(ref, store);
    if (!store.has('index.json'))
      throw new ImageError(
        'ERR_INVALID_IMAGE',
        `${ref.path}: neither manifest.json (docker save) nor index.json (OCI layout) in it`,
      );
    return await ociImage(ref, store, opts.platform);
  } finally {
    await store.close();
  }
}

async function json(store: Store, name: string, what: string, digest: string | null = null): Promise<unknown> {
  const bytes = await readRange(store.range(name), MAX_JSON, `${store.where}: ${what}`);
  if (digest !== null && sha256(bytes) !== digest)
    throw new ImageError('ERR_DIGEST_MISMATCH', `${store.where}: ${what} hashes to ${sha256(bytes)}, not ${digest}`);
  return parseJson(bytes, `${store.where}: ${what}`);
}

async function dockerSaveImage(ref: LocalReference, store: Store): Promise<Image> {
  const where = ref.path;
  const manifest = await json(store, 'manifest.json', 'manifest.json');
  if (!Array.isArray(manifest) || manifest.length === 0)
    throw new ImageError('ERR_INVALID_IMAGE', `${where}: manifest.json: expected [{"Config": …, "Layers": […]}]`);
  const entries = manifest as Record<string, unknown>[];
  const tagsOf = (e: Record<string, unknown>): string[] =>
    Array.isArray(e.RepoTags) ? e.RepoTags.filter((t): t is string => typeof t === 'string') : [];
  let entry: Record<string, unknown> | undefined;
  if (ref.ref === null) {
    if (entries.length > 1)
      throw new ImageError(
        'ERR_INVALID_REFERENCE',
        `${where}: ${entries.length} images in it; name one (${entries.map((e, i) => tagsOf(e)[0] ?? `@${i}`).join(', ')})`,
      );
    entry = entries[0];
  } else if (/^@\d+$/.test(ref.ref)) entry = entries[Number(ref.ref.slice(1))];
  else {
    const want = ref.ref;
    const norm = (t: string): string => t.replace(/^docker\.io\/(library\/)?/, '');
    entry = entries.find((e) => tagsOf(e).some((t) => t === want || norm(t) === norm(want)));
  }
  if (!entry) throw new ImageError('ERR_IMAGE_NOT_FOUND', `${where}: no image ${JSON.stringify(ref.ref)} in it`);
  if (typeof entry.Config !== 'string' || !Array.isArray(entry.Layers))
    throw new ImageError('ERR_INVALID_IMAGE', `${where}: manifest.json: an entry without Config and Layers`);
  const configName = entry.Config;
  const configBytes = await readRange(store.range(configName), MAX_JSON, `${where}: ${configName}`);
  const config = parseJson(configBytes, `${where}: ${configName}`) as Record<string, unknown>;
  const diffIds = diffIdsOf(config, `${where}: ${configName}`);
  const names = entry.Layers.map((l) => {
    if (typeof l !== 'string')
      throw new ImageError('ERR_INVALID_IMAGE', `${where}: manifest.json: a layer is not a string`);
    return l;
  });
  if (names.length !== diffIds.length)
    throw new ImageError(
      'ERR_INVALID_IMAGE',
      `${where}: ${names.length} layers but ${diffIds.length} diff ids in its config`,
    );
  // Docker 25 and later also describe each layer (with its media type) in the OCI index it writes beside.
  const layers = names.map((n, i) => layerOf(i, store.range(n), diffIds[i]!, null, null, `${where}: ${n}:`));
  return {
    reference: ref,
    name: formatReference(ref),
    format: 'docker-save',
    repoTags: tagsOf(entry),
    manifestDigest: null,
    mediaType: null,
    platform: platformOf(config),
    configDigest: sha256(configBytes),
    config,
    layers,
    chainIds: chainIds(diffIds),
    close: async () => {},
  };
}

const blobName = (digest: string): string => `blobs/sha256/${digest.slice(7)}`;

async function ociImage(ref: LocalReference, store: Store, platform: Platform): Promise<Image> {
  const where = ref.path;
  const index = parseManifest(
    await json(store, 'index.json', 'index.json'),
    `${where}: index.json`,
    MediaType.ociIndex,
  );
  if (index.kind !== 'index') throw new ImageError('ERR_INVALID_IMAGE', `${where}: index.json is not an index`);
  const nameOf = (d: Descriptor): string | undefined => d.annotations?.['org.opencontainers.image.ref.name'];
  let top: Descriptor | undefined;
  if (ref.ref !== null) {
    top = index.manifests.find((m) => nameOf(m) === ref.ref);
    if (!top)
      throw new ImageError('ERR_IMAGE_NOT_FOUND', `${where}: no image named ${JSON.stringify(ref.ref)} in index.json`);
  } else if (index.manifests.length === 1) top = index.manifests[0];
  else if (index.manifests.length === 0)
    throw new ImageError('ERR_IMAGE_NOT_FOUND', `${where}: index.json lists no image`);
  else {
    // Several: the ones for this platform, if that makes one.
    const mine = index.manifests.filter(
      (m) => !m.platform || (m.platform.os === platform.os && m.platform.architecture === platform.architecture),
    );
    if (mine.length !== 1)
      throw new ImageError(
        'ERR_INVALID_REFERENCE',
        `${where}: ${index.manifests.length} images in index.json; name one (${index.manifests.map((m) => nameOf(m) ?? m.digest.slice(0, 19)).join(', ')})`,
      );
    top = mine[0];
  }
  const repoTags = top && nameOf(top) ? [nameOf(top)!] : [];
  let desc = top!;
  for (let depth = 0; ; depth++) {
    if (depth > 4) throw new ImageError('ERR_INVALID_IMAGE', `${where}: indexes nested more than 4 deep`);
    const parsed = parseManifest(
      await json(store, blobName(desc.digest), desc.digest, desc.digest),
      `${where}: ${desc.digest}`,
      desc.mediaType,
    );
    if (parsed.kind === 'index') {
      desc = pickPlatform(parsed.manifests, platform, where);
      continue;
    }
    const configBytes = await readRange(store.range(blobName(parsed.config.digest)), MAX_JSON, `${where}: config`);
    if (sha256(configBytes) !== parsed.config.digest)
      throw new ImageError(
        'ERR_DIGEST_MISMATCH',
        `${where}: config hashes to ${sha256(configBytes)}, not ${parsed.config.digest}`,
      );
    const config = parseJson(configBytes, `${where}: config`) as Record<string, unknown>;
    const diffIds = diffIdsOf(config, `${where}: config`);
    if (diffIds.length !== parsed.layers.length)
      throw new ImageError(
        'ERR_INVALID_IMAGE',
        `${where}: ${parsed.layers.length} layers but ${diffIds.length} diff ids`,
      );
    const layers = parsed.layers.map((l, i) => {
      const r = store.range(blobName(l.digest));
      if (r.length !== l.size)
        throw new ImageError(
          'ERR_DIGEST_MISMATCH',
          `${where}: layer ${i} ${l.digest}: ${r.length} bytes, not ${l.size}`,
        );
      return layerOf(i, r, diffIds[i]!, l, compressionOf(l.mediaType), `${where}:`);
    });
    return {
      reference: ref,
      name: formatReference(ref),
      format: 'oci-layout',
      repoTags,
      manifestDigest: desc.digest,
      mediaType: parsed.mediaType,
      platform: platformOf(config),
      configDigest: parsed.config.digest,
      config,
      layers,
      chainIds: chainIds(diffIds),
      close: async () => {},
    };
  }
}
