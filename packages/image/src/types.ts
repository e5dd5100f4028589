import type { ImageReference } from './reference.ts';

/** `os/architecture[/variant]`, as in an image index. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** How a layer blob is compressed. */
export type Compression = 'gzip' | 'zstd' | 'none';

/** A byte range of a local file: where a blob lies in an archive or an OCI layout. */
export interface FileRange {
  path: string;
  offset: number;
  length: number;
}

/** One layer of an image, bottom first. */
export interface ImageLayer {
  index: number;
  /** `sha256:…` of the blob as stored or sent (compressed); null where the format names none (docker save). */
  digest: string | null;
  /** `sha256:…` of the uncompressed tar (the image config's `rootfs.diff_ids`). */
  diffId: string;
  mediaType: string;
  /** From the media type; `null`: found by looking at the first bytes. */
  compression: Compression | null;
  /** Blob bytes; -1 when not known before reading. */
  size: number;
  /** Where the blob lies in a local file, for a reader that opens it itself; null for a stream. */
  file: FileRange | null;
  /**
   * The blob's bytes. When its digest is known, the stream ends with `ERR_DIGEST_MISMATCH` instead of
   * its last chunk if the bytes do not match: a consumer that commits only at the end commits nothing bad.
   */
  open(opts?: { signal?: AbortSignal }): AsyncIterable<Uint8Array>;
}

/** An image found by {@link openImage}: what it is and its layers, ready to stream. */
export interface Image {
  reference: ImageReference;
  /** The reference, normalised, in transport syntax. */
  name: string;
  /** How it was stored: a registry, the daemon, a docker-save tarball, an OCI layout (file or folder). */
  format: 'registry' | 'docker-daemon' | 'docker-save' | 'oci-layout';
  repoTags: string[];
  /** `sha256:…` of the manifest (registries, OCI layouts); null for docker save. */
  manifestDigest: string | null;
  /** The manifest's media type, when there is one. */
  mediaType: string | null;
  platform: Platform | null;
  /** `sha256:…` of the config blob (the image id). */
  configDigest: string;
  /** The image config (`architecture`, `os`, `config`, `rootfs`, `history`…), as parsed JSON. */
  config: Record<string, unknown>;
  layers: ImageLayer[];
  /** Chain ids (hex), bottom first: `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`. */
  chainIds: string[];
  /** Frees what opening took (a temporary copy of a daemon export, sockets). */
  close(): Promise<void>;
}
