// Container images built in code for the tests: layer tars (makeTar), a `docker save` tarball of them, and an OCI layout
// with an index of two platforms. skopeo (an independent implementation) turns the docker-save
// tarball into the other forms the tests read.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { makeTar, pseudoRandomBytes } from './index.ts';

export const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Three layers: files with a 3 MiB one (so a connection can be cut mid-blob), a whiteout, links and an xattr. */
export function layerTars(seed = 1): Uint8Array[] {
  return [
    makeTar([
      { path: 'etc/', type: 'dir' },
      { path: 'etc/os-release', body: `ID=lcow-image-test-${seed}\n` },
      { path: 'usr/', type: 'dir' },
      { path: 'usr/big.bin', body: pseudoRandomBytes(3 << 20, seed) },
      ...Array.from({ length: 50 }, (_, i) => ({ path: `usr/f${i}`, body: `file ${i} of ${seed}\n` })),
    ]),
    makeTar([
      { path: 'usr/', type: 'dir' },
      { path: 'usr/.wh.f3', body: '' },
      { path: 'usr/new', body: pseudoRandomBytes(70_000, seed + 10) },
    ]),
    makeTar([
      { path: 'opt/', type: 'dir' },
      { path: 'opt/a', body: 'a', pax: { 'SCHILY.xattr.user.k': 'v' } },
      { path: 'opt/seed', body: String(seed) },
      { path: 'opt/b', type: 'link', linkname: 'opt/a' },
      { path: 'opt/s', type: 'symlink', linkname: '../etc/os-release' },
    ]),
  ];
}

export function config(tars: Uint8Array[], arch = 'amd64'): Uint8Array {
  return Buffer.from(
    JSON.stringify({
      architecture: arch,
      os: 'linux',
      created: '2026-01-01T00:00:00Z',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: tars.map(sha) },
      history: tars.map(() => ({ created: '2026-01-01T00:00:00Z', created_by: 'lcow test' })),
    }),
  );
}

/** An OCI image manifest (JSON text) of `config` and uncompressed layer `tars`, digests and sizes computed. */
export function ociManifest(config: Uint8Array, tars: Uint8Array[]): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: tars.map((t) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(t), size: t.length })),
  });
}

/** A `docker save` tarball: `<i>/layer.tar` (gzip where asked), the config, manifest.json. */
export async function dockerSave(path: string, tars: Uint8Array[], tag: string, gzip: boolean[] = []): Promise<void> {
  const cfg = config(tars);
  const cfgName = `${sha(cfg).slice(7)}.json`;
  await writeFile(
    path,
    makeTar([
      ...tars.flatMap((t, i) => [
        { path: `l${i}/`, type: 'dir' as const },
        { path: `l${i}/layer.tar`, body: gzip[i] ? gzipSync(t) : t },
      ]),
      { path: cfgName, body: cfg },
      {
        path: 'manifest.json',
        body: JSON.stringify([{ Config: cfgName, RepoTags: [tag], Layers: tars.map((_, i) => `l${i}/layer.tar`) }]),
      },
    ]),
  );
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

/**
 * An OCI layout folder whose index.json names `ref` → an image index of two platforms, linux/amd64 and
 * linux/arm64, with different layers (gzip).
 */
export async function multiPlatformLayout(
  dir: string,
  ref: string,
): Promise<{ amd64: Uint8Array[]; arm64: Uint8Array[] }> {
  await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
  const put = async (b: Uint8Array): Promise<{ digest: string; size: number }> => {
    const d = sha(b);
    await writeFile(join(dir, 'blobs/sha256', d.slice(7)), b);
    return { digest: d, size: b.length };
  };
  const images = { amd64: layerTars(21), arm64: layerTars(42) };
  const manifests = [];
  for (const arch of ['amd64', 'arm64'] as const) {
    const cfg = await put(config(images[arch], arch));
    const layers = [];
    for (const t of images[arch])
      layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...(await put(gzipSync(t))) });
    const m = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
        layers,
      }),
    );
    manifests.push({ mediaType: OCI_MANIFEST, ...(await put(m)), platform: { os: 'linux', architecture: arch } });
  }
  const index = await put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests })));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: OCI_INDEX, ...index, annotations: { 'org.opencontainers.image.ref.name': ref } }],
    }),
  );
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  return images;
}

/** skopeo copy between local transports. */
export function skopeo(...args: string[]): void {
  execFileSync('skopeo', ['copy', '--quiet', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}
