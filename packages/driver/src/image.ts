// Reading an image tarball as `docker save` writes it (manifest.json, <config>.json, <id>/layer.tar or
// blobs/sha256/…) or as an OCI image layout (oci-layout, index.json, blobs/sha256/…), without unpacking
// it: one pass over the tar headers gives every member's offset, then only the small JSON members are read.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { DriverError } from './errors.ts';

const BLOCK = 512;
/** JSON members (manifests, configs) larger than this are refused: no real one comes near it. */
const MAX_JSON = 16 << 20;
const MAX_MEMBERS = 1_000_000;

/** A member's data in the image file. */
export interface Member {
  offset: number;
  size: number;
}

export interface ImageLayerRef {
  /** The member that holds the layer (gzip or plain tar). */
  member: Member;
  /** Its name in the image tar. */
  name: string;
  /** `sha256:…` of the uncompressed tar, from the image config (rootfs.diff_ids). */
  diffId: string;
}

export interface ImageInfo {
  format: 'docker-save' | 'oci-layout';
  repoTags: string[];
  layers: ImageLayerRef[];
  /** The layers' chain ids (hex), bottom to top: the ids `lcow import` stores them under. */
  chainIds: string[];
}

function imageError(path: string, message: string): DriverError {
  return new DriverError('ERR_INVALID_ARGUMENT', `image ${path}: ${message}`);
}

function octal(b: Buffer, at: number, len: number): number {
  if (b[at]! & 0x80) {
    // base-256 (GNU), for members of 8 GiB and more
    let n = 0;
    for (let i = at + 1; i < at + len; i++) n = n * 256 + b[i]!;
    return n;
  }
  const s = b
    .toString('latin1', at, at + len)
    .replace(/\0.*$/s, '')
    .trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function cstr(b: Buffer, at: number, len: number): string {
  const end = b.indexOf(0, at);
  return b.toString('utf8', at, end < 0 || end > at + len ? at + len : end);
}

function paxPath(data: Buffer): string | null {
  let at = 0;
  let path: string | null = null;
  while (at < data.length) {
    const sp = data.indexOf(0x20, at);
    if (sp < 0) break;
    const len = Number(data.toString('latin1', at, sp));
    if (!Number.isInteger(len) || len <= 0 || at + len > data.length) break;
    const rec = data.toString('utf8', sp + 1, at + len - 1);
    const eq = rec.indexOf('=');
    if (rec.slice(0, eq) === 'path') path = rec.slice(eq + 1);
    at += len;
  }
  return path;
}

/** Every regular member of the tar: normalised name → where its data lies. */
export async function indexTar(fh: FileHandle, path: string): Promise<Map<string, Member>> {
  const size = (await fh.stat()).size;
  const out = new Map<string, Member>();
  const head = Buffer.alloc(BLOCK);
  let pos = 0;
  let longName: string | null = null;
  const links = new Map<string, string>();
  while (pos + BLOCK <= size) {
    await fh.read(head, 0, BLOCK, pos);
    if (head.every((x) => x === 0)) break;
    const want = octal(head, 148, 8);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : head[i]!;
    if (sum !== want) throw imageError(path, `bad tar header checksum at byte ${pos} (not a tar, or damaged)`);
    const len = octal(head, 124, 12);
    const type = String.fromCharCode(head[156]!);
    const dataAt = pos + BLOCK;
    if (dataAt + len > size) throw imageError(path, `tar member at byte ${pos} runs past the end of the file`);
    const next = dataAt + Math.ceil(len / BLOCK) * BLOCK;
    if (type === 'x' || type === 'L') {
      if (len > 1 << 20)
        throw imageError(path, `oversized ${type === 'x' ? 'pax' : 'long-name'} record at byte ${pos}`);
      const data = Buffer.alloc(len);
      await fh.read(data, 0, len, dataAt);
      longName = type === 'x' ? paxPath(data) : data.toString('utf8').replace(/\0.*$/s, '');
      pos = next;
      continue;
    }
    if (type === '0' || type === '\0' || type === '7') {
      const prefix = head.toString('latin1', 257, 262) === 'ustar' ? cstr(head, 345, 155) : '';
      const name = longName ?? (prefix ? `${prefix}/${cstr(head, 0, 100)}` : cstr(head, 0, 100));
      out.set(posix.normalize(`/${name}`).slice(1), { offset: dataAt, size: len });
      if (out.size > MAX_MEMBERS) throw imageError(path, `more than ${MAX_MEMBERS} members`);
    }
    if (type === '1' || type === '2') {
      // docker save links a layer it has already written (hard link, or a symlink next to it).
      const prefix = head.toString('latin1', 257, 262) === 'ustar' ? cstr(head, 345, 155) : '';
      const name = longName ?? (prefix ? `${prefix}/${cstr(head, 0, 100)}` : cstr(head, 0, 100));
      const target = cstr(head, 157, 100);
      const norm = posix.normalize(`/${name}`).slice(1);
      links.set(
        norm,
        type === '1'
          ? posix.normalize(`/${target}`).slice(1)
          : posix.normalize(posix.join('/', posix.dirname(norm), target)).slice(1),
      );
    }
    longName = null;
    pos = next;
  }
  for (const [name, target] of links) {
    let t = target;
    for (let hops = 0; hops < 8 && !out.has(t) && links.has(t); hops++) t = links.get(t)!;
    const m = out.get(t);
    if (m && !out.has(name)) out.set(name, m);
  }
  return out;
}

async function readJson(fh: FileHandle, path: string, members: Map<string, Member>, name: string): Promise<unknown> {
  const m = members.get(posix.normalize(name));
  if (!m) throw imageError(path, `${name}: not in the image`);
  if (m.size > MAX_JSON) throw imageError(path, `${name}: ${m.size} bytes, too large for image metadata`);
  const b = Buffer.alloc(m.size);
  await fh.read(b, 0, m.size, m.offset);
  try {
    return JSON.parse(b.toString('utf8')) as unknown;
  } catch (e) {
    throw imageError(path, `${name}: not JSON (${(e as Error).message})`);
  }
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

function blobName(digest: unknown, path: string, what: string): string {
  if (typeof digest !== 'string' || !DIGEST.test(digest))
    throw imageError(path, `${what}: bad digest ${JSON.stringify(digest)}`);
  return `blobs/sha256/${digest.slice(7)}`;
}

function diffIdsOf(config: unknown, path: string): string[] {
  const ids = (config as { rootfs?: { diff_ids?: unknown } })?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string' && DIGEST.test(x)))
    throw imageError(path, 'its config has no valid rootfs.diff_ids');
  return ids as string[];
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

/** Reads what an image tarball holds: its layers (in order, with their diff ids) and tags. */
export async function readImage(path: string): Promise<ImageInfo> {
  const fh = await open(path, 'r');
  try {
    const members = await indexTar(fh, path);
    let format: ImageInfo['format'];
    let repoTags: string[] = [];
    let layerNames: string[];
    let diffIds: string[];
    if (members.has('manifest.json')) {
      format = 'docker-save';
      const manifest = await readJson(fh, path, members, 'manifest.json');
      const first = Array.isArray(manifest) ? (manifest[0] as Record<string, unknown> | undefined) : undefined;
      if (!first || typeof first.Config !== 'string' || !Array.isArray(first.Layers))
        throw imageError(path, 'manifest.json: expected [{"Config": …, "Layers": […]}]');
      repoTags = Array.isArray(first.RepoTags) ? first.RepoTags.filter((t): t is string => typeof t === 'string') : [];
      layerNames = first.Layers.map((l) => {
        if (typeof l !== 'string') throw imageError(path, 'manifest.json: a layer name is not a string');
        return posix.normalize(l);
      });
      diffIds = diffIdsOf(await readJson(fh, path, members, first.Config), path);
    } else if (members.has('index.json')) {
      format = 'oci-layout';
      let manifest = (await readJson(fh, path, members, 'index.json')) as { manifests?: unknown[] };
      // An index may point at another index (multi-platform): take linux/amd64, else the first.
      for (let depth = 0; depth < 4; depth++) {
        const list = Array.isArray(manifest.manifests) ? (manifest.manifests as Record<string, unknown>[]) : [];
        if (list.length === 0) break;
        const pick =
          list.find((m) => {
            const p = m.platform as { os?: string; architecture?: string } | undefined;
            return p?.os === 'linux' && p.architecture === 'amd64';
          }) ?? list[0]!;
        const ref = (pick.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'];
        if (ref && repoTags.length === 0) repoTags = [ref];
        manifest = (await readJson(fh, path, members, blobName(pick.digest, path, 'index.json'))) as typeof manifest;
      }
      const m = manifest as { config?: { digest?: unknown }; layers?: { digest?: unknown }[] };
      if (!m.config || !Array.isArray(m.layers)) throw imageError(path, 'no image manifest found through index.json');
      layerNames = m.layers.map((l, i) => blobName(l.digest, path, `layer ${i}`));
      diffIds = diffIdsOf(await readJson(fh, path, members, blobName(m.config.digest, path, 'config')), path);
    } else throw imageError(path, 'neither manifest.json (docker save) nor index.json (OCI layout) in it');
    if (diffIds.length !== layerNames.length)
      throw imageError(path, `${layerNames.length} layers but ${diffIds.length} diff ids in its config`);
    const layers = layerNames.map((name, i) => {
      const member = members.get(name);
      if (!member) throw imageError(path, `layer ${name}: not in the image`);
      return { member, name, diffId: diffIds[i]! };
    });
    return { format, repoTags, layers, chainIds: chainIds(diffIds) };
  } finally {
    await fh.close();
  }
}
