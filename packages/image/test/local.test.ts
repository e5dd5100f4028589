// Images on disk, in every form: a docker-save tarball we build, and the OCI layout (folder and archive,
// gzip and zstd) that skopeo — an independent implementation — makes of it; an index of two platforms.
// Every layer's tar must hash to its diff id; damage must give a typed error.
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerSave, layerTars, multiPlatformLayout, oracle, sha, skopeo, tempDir } from '@lcow/testkit';
import { layerTar, openImage, type Image } from '../src/index.ts';

const hasSkopeo = oracle('skopeo');
let dir: { path: string; cleanup: () => Promise<void> };
const tars = layerTars();
let archive: string;
beforeAll(async () => {
  dir = await tempDir('lcow-image-local-');
  archive = join(dir.path, 'image.tar');
  await dockerSave(archive, tars, 'lcow/test:v1', [false, true, false]);
});
afterAll(() => dir?.cleanup());

async function tarsOf(image: Image): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const l of image.layers) {
    const parts: Uint8Array[] = [];
    for await (const c of layerTar(l)) parts.push(c);
    out.push(Buffer.concat(parts));
  }
  return out;
}

async function expectLayers(ref: string, want: Uint8Array[] = tars, opts = {}): Promise<Image> {
  const image = await openImage(ref, opts);
  try {
    expect(image.layers.map((l) => l.diffId)).toEqual(want.map(sha));
    const got = await tarsOf(image);
    expect(got.map(sha)).toEqual(want.map(sha));
    return image;
  } finally {
    await image.close();
  }
}

describe('local images', { timeout: 300_000 }, () => {
  it('docker-archive: by path, by transport, by tag and by index; layers plain and gzip', async () => {
    const a = await expectLayers(archive);
    expect(a.format).toBe('docker-save');
    expect(a.repoTags).toEqual(['lcow/test:v1']);
    expect(a.platform).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(a.layers.every((l) => l.file !== null)).toBe(true);
    await expectLayers(`docker-archive:${archive}`);
    await expectLayers(`docker-archive:${archive}:lcow/test:v1`);
    await expectLayers(`docker-archive:${archive}:@0`);
    await expect(openImage(`docker-archive:${archive}:other:tag`)).rejects.toMatchObject({
      code: 'ERR_IMAGE_NOT_FOUND',
    });
    await expect(openImage(join(dir.path, 'missing.tar'))).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
  });

  it.skipIf(!hasSkopeo)('OCI layouts made by skopeo: folder and archive, gzip and zstd', async () => {
    const oci = join(dir.path, 'oci');
    skopeo(`docker-archive:${archive}`, `oci:${oci}:v1`);
    const ociZstd = join(dir.path, 'oci-zstd');
    skopeo('--dest-compress-format', 'zstd', `docker-archive:${archive}`, `oci:${ociZstd}:v1`);
    const ociArchive = join(dir.path, 'oci.tar');
    skopeo(`docker-archive:${archive}`, `oci-archive:${ociArchive}:v1`);
    for (const ref of [
      `oci:${oci}:v1`,
      `oci:${oci}`,
      oci,
      `oci-archive:${ociArchive}:v1`,
      ociArchive,
      `oci:${ociZstd}:v1`,
    ]) {
      const image = await expectLayers(ref);
      expect(image.format).toBe('oci-layout');
      expect(image.manifestDigest).toMatch(/^sha256:/);
    }
    const z = await openImage(`oci:${ociZstd}:v1`);
    expect(z.layers.map((l) => l.compression)).toEqual(['zstd', 'zstd', 'zstd']);
    await expect(openImage(`oci:${oci}:nope`)).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
  });

  it('an index of two platforms: linux/amd64 by default, another by --platform, a missing one named', async () => {
    const layout = join(dir.path, 'multi');
    const images = await multiPlatformLayout(layout, 'multi');
    await expectLayers(`oci:${layout}:multi`, images.amd64);
    const arm = await expectLayers(`oci:${layout}:multi`, images.arm64, { platform: 'linux/arm64' });
    expect(arm.platform).toEqual({ os: 'linux', architecture: 'arm64' });
    await expect(openImage(`oci:${layout}:multi`, { platform: 'linux/s390x' })).rejects.toMatchObject({
      code: 'ERR_PLATFORM',
      message: expect.stringMatching(/linux\/amd64, linux\/arm64/),
    });
  });

  it('a damaged blob ends its stream with ERR_DIGEST_MISMATCH; a truncated archive is refused', async () => {
    const layout = join(dir.path, 'damaged');
    await multiPlatformLayout(layout, 'd');
    const image = await openImage(`oci:${layout}:d`);
    const victim = image.layers[0]!;
    const blob = join(layout, 'blobs/sha256', victim.digest!.slice(7));
    const bytes = await readFile(blob);
    bytes[bytes.length - 100]! ^= 0xff;
    await writeFile(blob, bytes);
    let seen = 0;
    await expect(
      (async () => {
        for await (const c of victim.open()) seen += c.length;
      })(),
    ).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH', message: expect.stringMatching(/layer 0/) });
    // The last chunk is held back: a consumer never sees the whole (bad) blob end normally.
    expect(seen).toBeLessThan(bytes.length);
    const cut = join(dir.path, 'cut.tar');
    await writeFile(cut, (await readFile(archive)).subarray(0, 5000));
    await expect(openImage(cut)).rejects.toMatchObject({ code: 'ERR_INVALID_IMAGE' });
    await truncate(blob, 10);
    await expect(openImage(`oci:${layout}:d`)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
  });

  it('hostile metadata: a huge manifest.json, junk JSON, bad digests are refused with codes', async () => {
    const { makeTar } = await import('@lcow/testkit');
    const cases: [string, Uint8Array, string][] = [
      ['huge', makeTar([{ path: 'manifest.json', body: Buffer.alloc(9 << 20, 0x20) }]), 'ERR_INVALID_IMAGE'],
      ['junk', makeTar([{ path: 'manifest.json', body: '{nope' }]), 'ERR_INVALID_IMAGE'],
      ['shape', makeTar([{ path: 'manifest.json', body: '[{"Config":1}]' }]), 'ERR_INVALID_IMAGE'],
      [
        'digest',
        makeTar([{ path: 'index.json', body: '{"manifests":[{"digest":"sha256:../../etc/passwd","size":1}]}' }]),
        'ERR_INVALID_IMAGE',
      ],
    ];
    for (const [name, body, code] of cases) {
      const p = join(dir.path, `hostile-${name}.tar`);
      await writeFile(p, body);
      await expect(openImage(p), name).rejects.toMatchObject({ code });
    }
  });
});
