// A hostile registry: every answer our client reads is bounded and checked. A fake registry (plain HTTP)
// sends oversized and endless bodies, redirect loops and redirects to other schemes, malformed digests
// and challenges; each must end quickly in a typed error, never a hang or unbounded memory.
import { createServer, type Server, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layerTar, openImage } from '../src/index.ts';

type Handler = (url: string, res: ServerResponse) => void;
let server: Server;
let port: number;
let handler: Handler = (_u, res) => res.writeHead(404).end();

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/v2/') return res.writeHead(200).end('{}');
    handler(req.url ?? '', res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const open = (): ReturnType<typeof openImage> =>
  openImage(`docker://127.0.0.1:${port}/evil/img:v1`, {
    tlsVerify: false,
    backoffMs: 1,
    attempts: 2,
    idleTimeoutMs: 2000,
    noDefaultAuthfiles: true,
  });

const digest = `sha256:${'a'.repeat(64)}`;
const manifestOf = (layers: object[], config: object = { mediaType: 'x', digest, size: 2 }): string =>
  JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers });

describe('a hostile registry', () => {
  const cases: [string, Handler, string][] = [
    [
      'a 20 MiB manifest',
      (_u, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(1 << 20, 0x20);
        for (let i = 0; i < 20; i++) res.write(chunk);
        res.end();
      },
      'ERR_REGISTRY',
    ],
    [
      'a manifest that never ends',
      (_u, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(1 << 20, 0x20);
        const more = (): void => void (res.write(chunk) ? setImmediate(more) : res.once('drain', more));
        res.on('close', () => {});
        more();
      },
      'ERR_REGISTRY',
    ],
    ['a redirect loop', (u, res) => res.writeHead(302, { location: u }).end(), 'ERR_REGISTRY'],
    ['a redirect to file://', (_u, res) => res.writeHead(302, { location: 'file:///etc/passwd' }).end(), 'ERR_NETWORK'],
    [
      'a digest that is a path',
      (_u, res) =>
        res.writeHead(200).end(manifestOf([{ mediaType: 'x', digest: 'sha256:../../../etc/passwd', size: 1 }])),
      'ERR_INVALID_IMAGE',
    ],
    ['schema 1', (_u, res) => res.writeHead(200).end('{"schemaVersion":1,"fsLayers":[]}'), 'ERR_UNSUPPORTED'],
    ['not JSON', (_u, res) => res.writeHead(200).end('<html>'), 'ERR_INVALID_IMAGE'],
    [
      'a challenge without a realm',
      (_u, res) => res.writeHead(401, { 'www-authenticate': 'Bearer' }).end(),
      'ERR_UNSUPPORTED',
    ],
    ['a silent server', () => {}, 'ERR_NETWORK'],
  ];
  for (const [name, h, code] of cases)
    it(`${name}: ${code}`, async () => {
      handler = h;
      const started = Date.now();
      await expect(open()).rejects.toMatchObject({ code });
      expect(Date.now() - started).toBeLessThan(15_000);
    }, 30_000);

  it('a blob longer than its descriptor says is cut off there, not read to its end', async () => {
    const config = Buffer.from('{"rootfs":{"diff_ids":["sha256:' + 'b'.repeat(64) + '"]}}');
    const { createHash } = await import('node:crypto');
    const cfgDigest = `sha256:${createHash('sha256').update(config).digest('hex')}`;
    let sent = 0;
    handler = (u, res) => {
      if (u.includes('/manifests/'))
        return res.writeHead(200).end(
          manifestOf([{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: 1000 }], {
            mediaType: 'x',
            digest: cfgDigest,
            size: config.length,
          }),
        );
      if (u.includes(cfgDigest)) return res.writeHead(200).end(config);
      res.writeHead(200);
      const chunk = Buffer.alloc(64 << 10, 1);
      const more = (): void => {
        if (res.destroyed) return;
        sent += chunk.length;
        if (res.write(chunk)) setImmediate(more);
        else res.once('drain', more);
      };
      more();
    };
    const img = await open();
    await expect(
      (async () => {
        for await (const _ of layerTar(img.layers[0]!)) void _;
      })(),
    ).rejects.toMatchObject({
      code: 'ERR_DIGEST_MISMATCH',
      message: expect.stringMatching(/more than its 1000 bytes/),
    });
    expect(sent).toBeLessThan(64 << 20);
  });
});
