// Image references in the transport syntax of skopeo and podman (containers/image): `docker://…`,
// `docker-archive:…`, `oci-archive:…`, `oci:…`, `docker-daemon:…`; a bare path is a local archive or
// OCI layout whose kind is found by looking.
import { ImageError } from './errors.ts';

/** A registry image: `docker://[HOST[:PORT]/]REPO[:TAG][@sha256:…]`. */
export interface RegistryReference {
  transport: 'docker';
  /** `host[:port]`; `docker.io` for Docker Hub. */
  registry: string;
  /** `library/alpine`, `team/app`… */
  repository: string;
  tag: string | null;
  digest: string | null;
}

/** A local file or folder: a docker-save tarball, an OCI archive, an OCI layout, or one to detect. */
export interface LocalReference {
  transport: 'docker-archive' | 'oci-archive' | 'oci' | 'file';
  path: string;
  /**
   * Which image: for docker-archive `NAME:TAG` or `@N` (the N-th manifest entry); for OCI the
   * `org.opencontainers.image.ref.name` annotation; null: the only (or first) image.
   */
  ref: string | null;
}

/** An image of the Docker daemon: `docker-daemon:NAME[:TAG]` or `docker-daemon:sha256:…`. */
export interface DaemonReference {
  transport: 'docker-daemon';
  /** `name:tag` (tag defaults to `latest`) or an image id `sha256:…`. */
  name: string;
}

export type ImageReference = RegistryReference | LocalReference | DaemonReference;

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;

function bad(ref: string, why: string): ImageError {
  return new ImageError('ERR_INVALID_REFERENCE', `${JSON.stringify(ref)}: ${why}`);
}

/**
 * A Docker reference (`alpine`, `localhost:5000/a/b:1`, `r.io/x@sha256:…`) as containers/image
 * normalises it: a first component with a `.` or `:`, or `localhost`, is a registry; otherwise the
 * registry is `docker.io` and a one-component name is under `library/`. No tag and no digest: `latest`.
 */
export function parseDockerReference(text: string): RegistryReference {
  let rest = text;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(text, `digest ${JSON.stringify(digest)}: expected sha256: and 64 hex digits`);
  }
  let tag: string | null = null;
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(text, `tag ${JSON.stringify(tag)} is not a valid tag`);
  }
  const parts = rest.split('/');
  let registry = 'docker.io';
  if (parts.length > 1 && (/[.:]/.test(parts[0]!) || parts[0] === 'localhost')) registry = parts.shift()!;
  if (!/^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-fA-F:]+\](?::\d{1,5})?$/.test(registry))
    throw bad(text, `registry ${JSON.stringify(registry)} is not a host[:port]`);
  if (registry === 'docker.io' && parts.length === 1) parts.unshift('library');
  for (const p of parts)
    if (!COMPONENT.test(p))
      throw bad(text, `repository component ${JSON.stringify(p)}: lower-case letters, digits and . _ - only`);
  const repository = parts.join('/');
  if (repository.length > 255) throw bad(text, 'repository name longer than 255 characters');
  if (tag === null && digest === null) tag = 'latest';
  return { transport: 'docker', registry, repository, tag, digest };
}

/** Splits `PATH[:REF]` at the first colon, as containers/image does for archive transports. */
function pathAndRef(text: string, transport: LocalReference['transport']): LocalReference {
  const i = text.indexOf(':');
  const path = i < 0 ? text : text.slice(0, i);
  const ref = i < 0 ? null : text.slice(i + 1);
  if (path === '') throw bad(`${transport}:${text}`, 'no path');
  if (ref === '') throw bad(`${transport}:${text}`, 'empty image name after the path');
  return { transport, path, ref };
}

/** Parses a reference in transport syntax; a string without a known transport prefix is a local path. */
export function parseReference(text: string): ImageReference {
  if (text === '') throw bad(text, 'empty reference');
  if (text.includes('\0')) throw bad(text, 'contains a NUL byte');
  if (text.startsWith('docker://')) return parseDockerReference(text.slice('docker://'.length));
  for (const t of ['docker-archive', 'oci-archive', 'oci'] as const)
    if (text.startsWith(`${t}:`)) return pathAndRef(text.slice(t.length + 1), t);
  if (text.startsWith('docker-daemon:')) {
    const name = text.slice('docker-daemon:'.length);
    if (DIGEST.test(name)) return { transport: 'docker-daemon', name };
    const r = parseDockerReference(name);
    if (r.digest) throw bad(text, 'the Docker daemon names images by tag or by image id (sha256:…), not by digest');
    const short = r.registry === 'docker.io' ? r.repository.replace(/^library\//, '') : `${r.registry}/${r.repository}`;
    return { transport: 'docker-daemon', name: `${short}:${r.tag}` };
  }
  if (/^[a-z][a-z0-9+-]*:\/\//.test(text)) throw bad(text, `unknown transport ${text.slice(0, text.indexOf(':'))}`);
  return { transport: 'file', path: text, ref: null };
}

/** The reference written back in transport syntax (normalised). */
export function formatReference(r: ImageReference): string {
  switch (r.transport) {
    case 'docker':
      return `docker://${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
    case 'docker-daemon':
      return `docker-daemon:${r.name}`;
    case 'file':
      return r.path;
    default:
      return `${r.transport}:${r.path}${r.ref ? `:${r.ref}` : ''}`;
  }
}
