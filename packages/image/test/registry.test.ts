// The registry client against a real registry (Debian's docker-registry, distribution 2.8) over TLS with
// a CA of its own, once with htpasswd (Basic) auth and once with token (Bearer) auth, filled by skopeo;
// plus a small fake registry (plain HTTP) for what a real one does not do on demand: 503s, a connection
// cut mid-blob, a Range ignored, and a CONNECT proxy.
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { connect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  dockerSave,
  imageConfig as config,
  inCI,
  layerTars,
  multiPlatformLayout,
  oracle,
  sha,
  skopeoCopy,
  startRegistry,
  tempDir,
  type Registry,
} from '@lcow/testkit';
import { layerTar, openImage, type Image, type OpenImageOptions } from '../src/index.ts';

const ready = oracle('docker-registry') && oracle('skopeo') && oracle('openssl') && oracle('htpasswd');
if (!ready && !inCI)
  console.warn('[image] skipping the registry tests: they need docker-registry, skopeo, openssl, htpasswd');

let dir: { path: string; cleanup: () => Promise<void> };
let basic: Registry;
let token: Registry;
// Layers new to this run: skopeo remembers, machine-wide, the other compressions of every blob it has
// pushed, and would substitute them (a zstd blob in a Docker schema 2 image, which it then refuses).
const seed = randomInt(1 << 30);
const tars = layerTars(seed);
const zstdTars = layerTars(seed + 1);

async function tarsOf(image: Image): Promise<string[]> {
  const out: string[] = [];
  for (const l of image.layers) {
    const parts: Uint8Array[] = [];
    for await (const c of layerTar(l)) parts.push(c);
    out.push(sha(Buffer.concat(parts)));
  }
  return out;
}

const auth = (r: Registry): OpenImageOptions => ({ creds: `${r.user}:${r.password}`, certDir: r.certDir });

describe.runIf(ready)('a real registry (distribution 2.8, TLS, Basic and Bearer auth)', { timeout: 300_000 }, () => {
  let layout: string;
  let multi: { amd64: Uint8Array[]; arm64: Uint8Array[] };
  beforeAll(async () => {
    dir = await tempDir('lcow-image-registry-');
    const archive = join(dir.path, 'image.tar');
    await dockerSave(archive, tars, 'lcow/test:v1', [true, false, true]);
    const zstdArchive = join(dir.path, 'zstd.tar');
    await dockerSave(zstdArchive, zstdTars, 'lcow/zstd:v1');
    layout = join(dir.path, 'multi');
    multi = await multiPlatformLayout(layout, 'multi');
    basic = await startRegistry(join(dir.path, 'basic'), 'basic');
    token = await startRegistry(join(dir.path, 'token'), 'token');
    for (const reg of [basic, token]) {
      await skopeoCopy(reg, `docker-archive:${zstdArchive}`, 'lcow/zstd:v1', [
        '--format',
        'oci',
        '--dest-compress-format',
        'zstd',
      ]);
      await skopeoCopy(reg, `docker-archive:${archive}`, 'lcow/test:v1', ['--format', 'v2s2']);
      await skopeoCopy(reg, `oci:${layout}:multi`, 'lcow/multi:v1', ['--all', '--preserve-digests']);
    }
    await skopeoCopy(token, `docker-archive:${archive}`, 'public/test:v1');
  }, 300_000);
  afterAll(async () => {
    await basic?.stop();
    await token?.stop();
    await dir?.cleanup();
  });

  for (const which of ['basic', 'token'] as const) {
    it(`${which}: a Docker schema 2 image and an OCI image with zstd layers, every layer its diff id`, async () => {
      const reg = which === 'basic' ? basic : token;
      const docker = await openImage(`docker://${reg.host}/lcow/test:v1`, auth(reg));
      expect(docker.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
      expect(docker.format).toBe('registry');
      expect(await tarsOf(docker)).toEqual(tars.map(sha));
      const zstd = await openImage(`docker://${reg.host}/lcow/zstd:v1`, auth(reg));
      expect(zstd.layers.map((l) => l.mediaType)).toEqual(Array(3).fill('application/vnd.oci.image.layer.v1.tar+zstd'));
      expect(await tarsOf(zstd)).toEqual(zstdTars.map(sha));
      // By digest, the same image.
      const byDigest = await openImage(`docker://${reg.host}/lcow/test@${docker.manifestDigest}`, auth(reg));
      expect(byDigest.configDigest).toBe(docker.configDigest);
    });

    it(`${which}: an image index of two platforms`, async () => {
      const reg = which === 'basic' ? basic : token;
      const amd = await openImage(`docker://${reg.host}/lcow/multi:v1`, auth(reg));
      expect(await tarsOf(amd)).toEqual(multi.amd64.map(sha));
      const arm = await openImage(`docker://${reg.host}/lcow/multi:v1`, { ...auth(reg), platform: 'linux/arm64' });
      expect(arm.platform?.architecture).toBe('arm64');
      expect(await tarsOf(arm)).toEqual(multi.arm64.map(sha));
      await expect(
        openImage(`docker://${reg.host}/lcow/multi:v1`, { ...auth(reg), platform: 'windows/amd64' }),
      ).rejects.toMatchObject({ code: 'ERR_PLATFORM' });
    });

    it(`${which}: wrong credentials, none, a missing tag, an untrusted certificate: typed errors`, async () => {
      const reg = which === 'basic' ? basic : token;
      const ref = `docker://${reg.host}/lcow/test:v1`;
      await expect(openImage(ref, { ...auth(reg), creds: `${reg.user}:wrong` })).rejects.toMatchObject({
        code: 'ERR_UNAUTHORIZED',
      });
      await expect(openImage(ref, { certDir: reg.certDir, noDefaultAuthfiles: true })).rejects.toMatchObject({
        code: 'ERR_UNAUTHORIZED',
      });
      await expect(openImage(`docker://${reg.host}/lcow/test:nope`, auth(reg))).rejects.toMatchObject({
        code: 'ERR_IMAGE_NOT_FOUND',
      });
      await expect(openImage(ref, { creds: `${reg.user}:${reg.password}` })).rejects.toMatchObject({ code: 'ERR_TLS' });
      const insecure = await openImage(ref, { creds: `${reg.user}:${reg.password}`, tlsVerify: false });
      expect(insecure.layers).toHaveLength(3);
    });
  }

  it('token: anonymous pull of a public repository; credentials from an authfile (Docker config.json)', async () => {
    const pub = await openImage(`docker://${token.host}/public/test:v1`, {
      certDir: token.certDir,
      noDefaultAuthfiles: true,
    });
    expect(await tarsOf(pub)).toEqual(tars.map(sha));
    const authfile = join(dir.path, 'config.json');
    await writeFile(
      authfile,
      JSON.stringify({
        auths: { [token.host]: { auth: Buffer.from(`${token.user}:${token.password}`).toString('base64') } },
      }),
    );
    const img = await openImage(`docker://${token.host}/lcow/test:v1`, { authfile, certDir: token.certDir });
    expect(img.layers).toHaveLength(3);
  });

  it('a blob damaged in the registry ends its stream with ERR_DIGEST_MISMATCH', async () => {
    const img = await openImage(`docker://${basic.host}/lcow/test:v1`, auth(basic));
    const victim = img.layers[1]!; // uncompressed in the archive, gzip as pushed
    const hex = victim.digest!.slice(7);
    const data = join(basic.data, 'sha256', hex.slice(0, 2), hex, 'data');
    const bytes = await readFile(data);
    bytes[bytes.length >> 1]! ^= 0x55;
    await writeFile(data, bytes);
    await expect(tarsOf(img)).rejects.toMatchObject({ code: 'ERR_DIGEST_MISMATCH' });
    expect((await readdir(join(basic.data, 'sha256'))).length).toBeGreaterThan(0);
  });
});

/** Accepts TCP connections and forwards them to `port`; cuts the first that passes `cutAfter` bytes. */
async function forwarder(
  port: number,
  cutAfter: number,
): Promise<{ port: number; bytes: () => number; close: () => Promise<void> }> {
  let total = 0;
  let cut = false;
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    let mine = 0;
    client.pipe(upstream);
    upstream.on('data', (d: Buffer) => {
      total += d.length;
      mine += d.length;
      if (!cut && mine > cutAfter) {
        cut = true;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(d);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    bytes: () => total,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe.runIf(ready)('dropped connections, retries, proxies', { timeout: 300_000 }, () => {
  let reg: Registry;
  let fake: Server;
  let fakePort: number;
  const log: { method: string; url: string; range?: string }[] = [];
  let inflight = 0;
  let maxInflight = 0;
  let blobGets = 0;
  const gz = tars.map((t) => gzipSync(t));
  const cfg = config(tars);
  beforeAll(async () => {
    dir = await tempDir('lcow-image-net-');
    reg = await startRegistry(join(dir.path, 'reg'), 'basic');
    const archive = join(dir.path, 'image.tar');
    await dockerSave(archive, tars, 'lcow/test:v1');
    await skopeoCopy(reg, `docker-archive:${archive}`, 'lcow/test:v1');
    // The fake: plain HTTP, anonymous. The first blob request gets a 503; the second a body cut halfway;
    // then every request ignores Range and sends the whole blob (the client must skip what it has).
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length },
        layers: gz.map((b) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: sha(b),
          size: b.length,
        })),
      }),
    );
    const blobs = new Map([[sha(cfg), cfg], ...gz.map((b): [string, Buffer] => [sha(b), b])]);
    fake = createHttpServer((req: IncomingMessage, res) => {
      log.push({ method: req.method!, url: req.url!, ...(req.headers.range ? { range: req.headers.range } : {}) });
      if (req.url === '/v2/') return res.writeHead(200).end('{}');
      if (req.url === '/v2/fake/img/manifests/v1')
        return res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(manifest);
      const m = /^\/v2\/fake\/img\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
      const blob = m && blobs.get(m[1]!);
      if (!blob) return res.writeHead(404).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}');
      if (blob === cfg) return res.writeHead(200).end(blob);
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      res.on('close', () => inflight--);
      const n = ++blobGets;
      if (n === 1) return res.writeHead(503).end('busy');
      res.writeHead(200, { 'content-length': blob.length });
      if (n === 2) {
        res.write(blob.subarray(0, blob.length >> 1));
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      }
      setTimeout(() => res.end(blob), 30);
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    fakePort = (fake.address() as { port: number }).port;
  }, 300_000);
  afterAll(async () => {
    await reg?.stop();
    await new Promise((r) => fake?.close(r));
    await dir?.cleanup();
  });

  it('a 503, a body cut halfway and a Range the server ignores: retried, skipped, correct; downloads bounded', async () => {
    const img = await openImage(`docker://127.0.0.1:${fakePort}/fake/img:v1`, {
      tlsVerify: false,
      backoffMs: 10,
      parallel: 2,
      noDefaultAuthfiles: true,
    });
    // Read all three layers at once: at most two downloads run together.
    const got = await Promise.all(
      img.layers.map(async (l) => {
        const parts: Uint8Array[] = [];
        for await (const c of layerTar(l)) parts.push(c);
        return sha(Buffer.concat(parts));
      }),
    );
    expect(got).toEqual(tars.map(sha));
    expect(maxInflight).toBeLessThanOrEqual(2);
    expect(log.filter((l) => l.range).length).toBeGreaterThanOrEqual(1);
  });

  it('a TLS connection cut mid-blob is resumed with a Range request, not started again', async () => {
    const img0 = await openImage(`docker://${reg.host}/lcow/test:v1`, auth(reg));
    const big = img0.layers[0]!; // 3 MiB of random bytes: gzip cannot shrink it
    const fwd = await forwarder(Number(reg.host.split(':')[1]), 1 << 20);
    try {
      const img = await openImage(`docker://localhost:${fwd.port}/lcow/test:v1`, { ...auth(reg), backoffMs: 10 });
      const parts: Uint8Array[] = [];
      for await (const c of layerTar(img.layers[0]!)) parts.push(c);
      expect(sha(Buffer.concat(parts))).toBe(big.diffId);
      // Restarting from zero would have moved the first megabyte twice.
      expect(fwd.bytes()).toBeLessThan(big.size + (512 << 10));
    } finally {
      await fwd.close();
    }
  });

  it('HTTPS_PROXY: through a CONNECT proxy (which resolves the name); NO_PROXY bypasses it', async () => {
    const connects: string[] = [];
    const tunnels = new Set<Socket>();
    const regPort = Number(reg.host.split(':')[1]);
    const proxy = createHttpServer();
    proxy.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
      connects.push(req.url!);
      // registry.test is a name only the proxy knows.
      const [host, port] = req.url!.split(':');
      tunnels.add(client);
      const up = connect(host === 'registry.test' ? regPort : Number(port), '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        up.write(head);
        up.pipe(client);
        client.pipe(up);
      });
      tunnels.add(up);
      up.on('error', () => client.destroy());
      client.on('error', () => up.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const env = { HTTPS_PROXY: `http://127.0.0.1:${(proxy.address() as { port: number }).port}` };
    try {
      const img = await openImage(`docker://registry.test:${regPort}/lcow/test:v1`, { ...auth(reg), env });
      expect(await tarsOf(img)).toEqual(tars.map(sha));
      expect(connects.length).toBeGreaterThan(0);
      expect(connects.every((c) => c === `registry.test:${regPort}`)).toBe(true);
      await expect(
        openImage(`docker://registry.test:${regPort}/lcow/test:v1`, {
          ...auth(reg),
          env: { ...env, NO_PROXY: 'example.org,.test' },
          attempts: 1,
        }),
      ).rejects.toMatchObject({ code: 'ERR_NETWORK' });
    } finally {
      for (const t of tunnels) t.destroy();
      await new Promise((r) => proxy.close(r));
    }
  });
});
