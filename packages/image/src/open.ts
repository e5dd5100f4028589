// One entry for every transport: a reference in, an {@link Image} out.
import { openDaemonImage } from './daemon.ts';
import { openLocal } from './local.ts';
import { parsePlatform } from './manifest.ts';
import { parseReference, type ImageReference } from './reference.ts';
import type { AuthOptions } from './registry/auth.ts';
import type { TransportOptions } from './registry/http.ts';
import { openRegistryImage } from './registry/registry.ts';
import type { Image, Platform } from './types.ts';

/** How {@link openImage} reaches an image; the registry options are skopeo's, by the same names. */
export interface OpenImageOptions extends TransportOptions, AuthOptions {
  /** `OS/ARCH[/VARIANT]` or an object; default `linux/amd64` (what LCOW runs). */
  platform?: string | Platform;
  /** Registry blobs downloaded at once (default 3). */
  parallel?: number;
  /** The Docker daemon (default DOCKER_HOST, else its unix socket). */
  dockerHost?: string;
  /** Where a daemon export is copied while the image is open. */
  tmpDir?: string;
  /** Largest daemon export copied (default: the temporary folder's free space less a reserve). */
  maxExportBytes?: number;
  signal?: AbortSignal;
}

/**
 * Finds an image: `docker://HOST/REPO[:TAG|@DIGEST]`, `docker-daemon:NAME[:TAG]`,
 * `docker-archive:PATH[:REF]`, `oci-archive:PATH[:REF]`, `oci:DIR[:REF]`, or a bare path (a docker-save
 * tarball, an OCI archive or layout folder, whichever it is). Close it when done.
 */
export async function openImage(reference: string | ImageReference, opts: OpenImageOptions = {}): Promise<Image> {
  const ref = typeof reference === 'string' ? parseReference(reference) : reference;
  const platform =
    typeof opts.platform === 'string'
      ? parsePlatform(opts.platform)
      : (opts.platform ?? { os: 'linux', architecture: 'amd64' });
  opts.signal?.throwIfAborted();
  switch (ref.transport) {
    case 'docker':
      return openRegistryImage(ref, { ...opts, platform });
    case 'docker-daemon':
      return openDaemonImage(ref, {
        platform,
        ...(opts.dockerHost ? { host: opts.dockerHost } : {}),
        ...(opts.tmpDir ? { tmpDir: opts.tmpDir } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
        ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
        ...(opts.maxExportBytes !== undefined ? { maxBytes: opts.maxExportBytes } : {}),
      });
    default:
      return openLocal(ref, { platform });
  }
}
