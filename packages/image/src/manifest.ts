// Manifests, indexes and configs of the OCI image spec and Docker's schema 2, read from untrusted JSON:
// every field checked for type before use, sizes bounded by the caller.
import { createHash } from 'node:crypto';
import { ImageError, quoteRemote } from './errors.ts';
import type { Platform } from './types.ts';

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerV1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** What a registry is asked to send, best first. */
export const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.ociManifest,
  MediaType.dockerList,
  MediaType.dockerManifest,
].join(', ');

/** Largest manifest, index or config read: real ones are kilobytes. */
export const MAX_JSON = 8 << 20;

const DIGEST = /^sha256:[0-9a-f]{64}$/;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export type Parsed =
  | { kind: 'index'; mediaType: string; manifests: Descriptor[] }
  | { kind: 'manifest'; mediaType: string; config: Descriptor; layers: Descriptor[] };

function invalid(what: string, why: string, options?: ErrorOptions): ImageError {
  return new ImageError('ERR_INVALID_IMAGE', `${what}: ${why}`, options);
}

export function parseJson(bytes: Uint8Array, what: string): unknown {
  if (bytes.length > MAX_JSON) throw invalid(what, `${bytes.length} bytes, more than image metadata can be`);
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
  } catch (e) {
    // Not the parser's message: it quotes the first bytes, and a file that is not JSON may be anything.
    throw invalid(what, `not JSON (${bytes.length} bytes)`, { cause: e });
  }
}

function descriptor(d: unknown, what: string): Descriptor {
  const o = d as Record<string, unknown> | null;
  if (!o || typeof o !== 'object') throw invalid(what, 'a descriptor is not an object');
  if (typeof o.digest !== 'string' || !DIGEST.test(o.digest))
    throw invalid(what, `digest ${quoteRemote(String(o.digest), 80)}: expected sha256: and 64 hex digits`);
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0)
    throw invalid(what, `size ${quoteRemote(String(o.size), 40)} of ${o.digest}`);
  const out: Descriptor = {
    mediaType: typeof o.mediaType === 'string' ? o.mediaType : '',
    digest: o.digest,
    size: o.size,
  };
  const p = o.platform as Record<string, unknown> | undefined;
  if (p && typeof p.os === 'string' && typeof p.architecture === 'string')
    out.platform = {
      os: p.os,
      architecture: p.architecture,
      ...(typeof p.variant === 'string' ? { variant: p.variant } : {}),
    };
  if (o.annotations && typeof o.annotations === 'object')
    out.annotations = Object.fromEntries(
      Object.entries(o.annotations as Record<string, unknown>).filter(
        (e): e is [string, string] => typeof e[1] === 'string',
      ),
    );
  return out;
}

/** A manifest or an index, told apart by media type (the HTTP one or its own) or, lacking both, by shape. */
export function parseManifest(json: unknown, what: string, contentType = ''): Parsed {
  const o = json as Record<string, unknown> | null;
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw invalid(what, 'not a JSON object');
  const mediaType = (typeof o.mediaType === 'string' && o.mediaType) || contentType.split(';')[0]!.trim();
  if (mediaType === MediaType.dockerV1Signed || o.schemaVersion === 1)
    throw new ImageError('ERR_UNSUPPORTED', `${what}: Docker schema 1 manifest (deprecated; push the image again)`);
  if (
    mediaType === MediaType.ociIndex ||
    mediaType === MediaType.dockerList ||
    (!o.layers && Array.isArray(o.manifests))
  ) {
    if (!Array.isArray(o.manifests)) throw invalid(what, 'an index without "manifests"');
    return { kind: 'index', mediaType, manifests: o.manifests.map((m) => descriptor(m, what)) };
  }
  if (!Array.isArray(o.layers)) throw invalid(what, 'a manifest without "layers"');
  if (o.layers.length > 4096) throw invalid(what, `${o.layers.length} layers`);
  return {
    kind: 'manifest',
    mediaType: mediaType || MediaType.ociManifest,
    config: descriptor(o.config, `${what} config`),
    layers: o.layers.map((l) => descriptor(l, `${what} layer`)),
  };
}

/** `linux/amd64`, `linux/arm64/v8`… */
export function parsePlatform(text: string): Platform {
  const [os, architecture, variant, extra] = text.split('/');
  if (!os || !architecture || extra !== undefined || variant === '')
    throw new ImageError('ERR_INVALID_REFERENCE', `platform ${JSON.stringify(text)}: expected OS/ARCH[/VARIANT]`);
  return { os, architecture, ...(variant ? { variant } : {}) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** The index entry for `want`: same os and architecture, and variant when asked (arm64's is v8 unless said). */
export function pickPlatform(manifests: Descriptor[], want: Platform, what: string): Descriptor {
  const variantOf = (p: Platform): string | undefined => p.variant ?? (p.architecture === 'arm64' ? 'v8' : undefined);
  const match = manifests.filter(
    (m) =>
      m.platform &&
      m.platform.os === want.os &&
      m.platform.architecture === want.architecture &&
      (want.variant === undefined || variantOf(m.platform) === variantOf(want)),
  );
  if (match.length === 0) {
    const have = manifests.map((m) => (m.platform ? formatPlatform(m.platform) : 'unknown')).join(', ');
    throw new ImageError(
      'ERR_PLATFORM',
      `${what}: no image for ${formatPlatform(want)} (it has ${have ? quoteRemote(have) : 'none'})`,
    );
  }
  return match[0]!;
}

/** The config's `rootfs.diff_ids`, checked. */
export function diffIdsOf(config: unknown, what: string): string[] {
  const ids = (config as { rootfs?: { diff_ids?: unknown } } | null)?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string' && DIGEST.test(x)))
    throw invalid(what, 'its config has no valid rootfs.diff_ids');
  return ids as string[];
}

export function platformOf(config: Record<string, unknown>): Platform | null {
  if (typeof config.os !== 'string' || typeof config.architecture !== 'string') return null;
  return {
    os: config.os,
    architecture: config.architecture,
    ...(typeof config.variant === 'string' ? { variant: config.variant } : {}),
  };
}

/** ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)) (OCI image spec). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  let chain = '';
  for (const d of diffIds) {
    chain = chain ? `sha256:${createHash('sha256').update(`${chain} ${d}`).digest('hex')}` : d;
    out.push(chain.slice(7));
  }
  return out;
}

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}
