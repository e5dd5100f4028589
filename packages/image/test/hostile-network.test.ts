// Hostile peers of issue #28, each a fake server in this test misbehaving on purpose: registries that
// trickle, answer a byte per request, never answer, or send a forged error; an HTTPS proxy that never answers
// CONNECT; an HTTPS registry that names a plain-HTTP token realm; a Docker daemon whose export never ends
// or stalls; credentials files that are FIFOs, devices or huge; image folders whose names lead outside.
// Each must end quickly in a typed error — never a hang, never a read outside, never a credential where it
// does not belong, never another party's control characters in a message.
import { execFileSync } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageConfig, makeCerts, makeTar, ociManifest, sha, tempDir } from '@lcow/testkit';
import { layerTar, openImage, quoteRemote, type OpenImageOptions } from '../src/index.ts';

let dir: { path: string; cleanup: () => Promise<void> };
const servers: (Server | NetServer)[] = [];
const sockets = new Set<Socket>();
beforeAll(async () => {
  dir = await tempDir('lcow-hostile-net-');
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await dir?.cleanup();
});

/** A server on 127.0.0.1 (closed after the file), its open connections cut then too. */
async function listen<T extends Server | NetServer>(s: T): Promise<{ server: T; port: number }> {
  servers.push(s);
  s.on('connection', (c: Socket) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { server: s, port: (s.address() as { port: number }).port };
}

/** One image of one layer: its manifest, config and blob, and the layer's tar. */
function oneLayerImage(layerSize = 4096): { manifest: string; config: Uint8Array; blob: Buffer; blobDigest: string } {
  const blob = Buffer.from(makeTar([{ path: 'f', body: Buffer.alloc(layerSize - 1536, 7) }]));
  const config = imageConfig([blob]);
  return { manifest: ociManifest(config, [blob]), config, blob, blobDigest: sha(blob) };
}

/** A plain-HTTP registry of {@link oneLayerImage}, whose blob answers are `blob`'s to make. */
async function registry(
  blob: (req: IncomingMessage, res: ServerResponse, image: ReturnType<typeof oneLayerImage>) => void,
  layerSize?: number,
): Promise<{ port: number; requests: string[] }> {
  const image = oneLayerImage(layerSize);
  const requests: string[] = [];
  const { port } = await listen(
    createServer((req, res) => {
      const u = req.url ?? '';
      requests.push(`${u} ${req.headers.range ?? ''}`.trim());
      if (u === '/v2/') return res.writeHead(200).end('{}');
      if (u.includes('/manifests/'))
        return res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(image.manifest);
      if (u.includes(sha(image.config))) return res.writeHead(200).end(image.config);
      blob(req, res, image);
    }),
  );
  return { port, requests };
}

const quick: OpenImageOptions = { tlsVerify: false, backoffMs: 1, attempts: 3, noDefaultAuthfiles: true };

async function drain(opts: OpenImageOptions, port: number): Promise<void> {
  const img = await openImage(`docker://127.0.0.1:${port}/evil/img:v1`, opts);
  try {
    for await (const _ of layerTar(img.layers[0]!)) void _;
  } finally {
    await img.close();
  }
}

/** Runs `fn`, which must reject with `code` within `ms`. */
async function failsWithin(ms: number, code: string, fn: () => Promise<unknown>): Promise<Error> {
  const started = performance.now();
  const e = await fn().then(
    () => {
      throw new Error('expected a failure');
    },
    (err: unknown) => err as Error,
  );
  expect(e).toMatchObject({ code });
  expect(performance.now() - started).toBeLessThan(ms);
  return e;
}

describe('registry transfers have idle, per-request and total deadlines', () => {
  it('a blob sent one byte a second ends at the speed floor (ERR_TIMEOUT), however long it could go on', async () => {
    const { port } = await registry((_q, res) => {
      res.writeHead(200);
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write('x')), 100);
    });
    const e = await failsWithin(10_000, 'ERR_TIMEOUT', () =>
      drain({ ...quick, minBytesPerSecond: 1024, slowTimeoutMs: 1500 }, port),
    );
    expect(e.message).toMatch(/below the floor of 1024/);
  });

  it('a byte per ranged request, then a dropped connection: the attempts run out (the count is not reset by a byte)', async () => {
    const { port, requests } = await registry((req, res, image) => {
      const from = Number(/bytes=(\d+)-/.exec(req.headers.range ?? '')?.[1] ?? 0);
      res.writeHead(from ? 206 : 200, {
        'content-length': String(image.blob.length - from),
        ...(from ? { 'content-range': `bytes ${from}-${image.blob.length - 1}/${image.blob.length}` } : {}),
      });
      res.write(image.blob.subarray(from, from + 1), () => res.destroy());
    });
    await failsWithin(10_000, 'ERR_NETWORK', () => drain({ ...quick, attempts: 4 }, port));
    expect(requests.filter((r) => r.includes('/blobs/sha256') && !r.includes('config')).length).toBeLessThanOrEqual(5);
  });

  it('a registry that accepts and never answers, or trickles its headers a byte at a time (each byte resets an idle timer): the per-request deadline and its attempts end it', async () => {
    const head = `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-pad: ${'a'.repeat(10_000)}\r\n\r\n{}`;
    const trickle = (c: Socket): void => {
      let i = 0;
      const t = setInterval(() => (c.destroyed || i >= head.length ? clearInterval(t) : c.write(head[i++]!)), 50);
      c.on('error', () => {});
    };
    for (const [onConnection, idleTimeoutMs] of [
      [() => {}, 60_000],
      [trickle, 500],
    ] as const) {
      const { port } = await listen(createNetServer(onConnection));
      await failsWithin(8_000, 'ERR_NETWORK', () =>
        openImage(`docker://127.0.0.1:${port}/x/y:z`, { ...quick, attempts: 2, requestTimeoutMs: 1000, idleTimeoutMs }),
      );
    }
  });

  it('a total deadline ends a transfer that is merely long (ERR_TIMEOUT naming the deadline)', async () => {
    const { port } = await registry((_q, res) => {
      res.writeHead(200);
      const chunk = Buffer.alloc(16 << 10, 1);
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write(chunk)), 20);
    }, 64 << 20);
    const e = await failsWithin(10_000, 'ERR_TIMEOUT', () => drain({ ...quick, timeoutMs: 2000 }, port));
    expect(e.message).toMatch(/deadline/);
  });

  it('an HTTPS proxy that never answers CONNECT: the request deadline ends it, and so does an abort, at once', async () => {
    let connects = 0;
    const { port } = await listen(
      createNetServer((c) => {
        connects++;
        c.on('error', () => {});
      }),
    );
    const env = { HTTPS_PROXY: `http://127.0.0.1:${port}` };
    // A name that is not loopback, so the proxy is used; nothing is ever resolved or reached.
    await failsWithin(8_000, 'ERR_NETWORK', () =>
      openImage('docker://registry.invalid/x/y:z', {
        ...quick,
        tlsVerify: true,
        env,
        attempts: 2,
        requestTimeoutMs: 1000,
      }),
    );
    expect(connects).toBe(2);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    await failsWithin(3_000, 'ERR_ABORTED', () =>
      openImage('docker://registry.invalid/x/y:z', {
        ...quick,
        tlsVerify: true,
        env,
        requestTimeoutMs: 60_000,
        signal: ac.signal,
      }),
    );
  });
});

describe('what another party says is quoted, escaped and cut', () => {
  it("a registry's error body with escape sequences, a forged line and 1 MB of text", async () => {
    const forged = `\u001b[2J\u001b[H\rlcow: import OK\n\u202e${'A'.repeat(30_000)}`;
    const { port } = await listen(
      createServer((req, res) => {
        if (req.url === '/v2/') return res.writeHead(200).end('{}');
        res
          .writeHead(404, { 'content-type': 'application/json' })
          .end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: forged }] }));
      }),
    );
    const e = await failsWithin(5_000, 'ERR_IMAGE_NOT_FOUND', () =>
      openImage(`docker://127.0.0.1:${port}/x/y:z`, quick),
    );
    // eslint-disable-next-line no-control-regex
    expect(e.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202e]/);
    expect(e.message).toContain('"MANIFEST_UNKNOWN: \\x1b[2J\\x1b[H\\rlcow: import OK\\n\\u202e');
    expect(e.message.length).toBeLessThan(600);
    // A megabyte that is not even JSON: its start, quoted, and no more.
    const { port: big } = await listen(
      createServer((req, res) => {
        if (req.url === '/v2/') return res.writeHead(200).end('{}');
        res.writeHead(500).end(`\u001b[31m${'B'.repeat(1 << 20)}`);
      }),
    );
    const e2 = await failsWithin(5_000, 'ERR_REGISTRY', () =>
      openImage(`docker://127.0.0.1:${big}/x/y:z`, { ...quick, attempts: 1 }),
    );
    expect(e2.message).toContain('"\\x1b[31mBBB');
    expect(e2.message.length).toBeLessThan(600);
  });

  it('quoteRemote: one line, quotes escaped, cut with the count of what was left out', () => {
    expect(quoteRemote('a"b\u0007\n', 100)).toBe('"a\\"b\\x07\\n"');
    expect(quoteRemote('x'.repeat(10), 4)).toBe('"xxxx…" (6 more characters)');
  });
});

describe('credentials: read only when a login is needed, only from a regular file of bounded size', () => {
  it('an anonymous registry needs no credentials file: a missing, a FIFO or a device --authfile is not even opened', async () => {
    const { port } = await registry((_q, res, image) => res.writeHead(200).end(image.blob));
    const fifo = join(dir.path, 'auth.fifo');
    execFileSync('mkfifo', [fifo]);
    for (const authfile of [join(dir.path, 'missing.json'), fifo, '/dev/zero'])
      await drain({ ...quick, noDefaultAuthfiles: false, authfile }, port);
  });

  it('a registry asking for a login: a FIFO, /dev/zero or a 1 GiB file is refused at once, never read', async () => {
    const { port } = await listen(
      createServer((_q, res) => res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end()),
    );
    const fifo = join(dir.path, 'auth2.fifo');
    execFileSync('mkfifo', [fifo]);
    const huge = join(dir.path, 'huge.json');
    execFileSync('truncate', ['-s', '1G', huge]);
    for (const [authfile, why] of [
      [fifo, 'not a regular file'],
      ['/dev/zero', 'not a regular file'],
      [huge, 'more than a credentials file can be'],
    ] as const) {
      const before = process.memoryUsage().rss;
      const e = await failsWithin(3_000, 'ERR_UNAUTHORIZED', () =>
        openImage(`docker://127.0.0.1:${port}/x/y:z`, { ...quick, noDefaultAuthfiles: false, authfile }),
      );
      expect(e.message).toContain(why);
      expect(process.memoryUsage().rss - before).toBeLessThan(64 << 20);
    }
    // The usual places are passed over when they are not files: anonymous, then refused by the registry.
    const prev = process.env.REGISTRY_AUTH_FILE;
    process.env.REGISTRY_AUTH_FILE = fifo;
    try {
      await failsWithin(3_000, 'ERR_UNAUTHORIZED', () =>
        openImage(`docker://127.0.0.1:${port}/x/y:z`, { ...quick, noDefaultAuthfiles: false }),
      );
    } finally {
      if (prev === undefined) delete process.env.REGISTRY_AUTH_FILE;
      else process.env.REGISTRY_AUTH_FILE = prev;
    }
  });

  it('an HTTPS registry naming a plain-HTTP token realm: the password is not sent in the clear', async () => {
    const certDir = join(dir.path, 'certs');
    await makeCerts(certDir);
    const { readFileSync } = await import('node:fs');
    const seen: (string | undefined)[] = [];
    const realm = await listen(
      createServer((req, res) => {
        seen.push(req.headers.authorization);
        res.writeHead(200).end('{"token":"t"}');
      }),
    );
    const tlsRegistry = await listen(
      createHttpsServer(
        { key: readFileSync(join(certDir, 'server.key')), cert: readFileSync(join(certDir, 'server.crt')) },
        (_q, res) =>
          res
            .writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${realm.port}/token",service="s"` })
            .end(),
      ),
    );
    const ref = `docker://127.0.0.1:${tlsRegistry.port}/x/y:z`;
    const creds = 'alice:s3cret';
    const e = await failsWithin(5_000, 'ERR_UNAUTHORIZED', () =>
      openImage(ref, { ...quick, tlsVerify: true, certDir, creds }),
    );
    expect(e.message).toMatch(/plain-HTTP token realm/);
    expect(seen).toEqual([]);
    // --tls-verify=false says the user accepts it.
    await openImage(ref, { ...quick, tlsVerify: false, creds }).catch(() => {});
    expect(seen[0]).toBe(`Basic ${Buffer.from(creds).toString('base64')}`);
  });
});

describe('the Docker daemon transport is bounded in time and size', () => {
  /** A fake Engine API on a unix socket: the image exists; its export is `exportOf`'s. */
  async function daemon(exportOf: (res: ServerResponse) => void): Promise<string> {
    const path = join(dir.path, `docker-${servers.length}.sock`);
    const s = createServer((req, res) => {
      if (req.url?.startsWith('/images/get')) return exportOf(res);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"Id":"sha256:x"}');
    });
    servers.push(s);
    s.on('connection', (c: Socket) => {
      sockets.add(c);
      c.on('close', () => sockets.delete(c));
    });
    await new Promise<void>((r) => s.listen(path, r));
    return `unix://${path}`;
  }
  const tmpOf = async (name: string): Promise<string> => {
    const p = join(dir.path, name);
    await mkdir(p);
    return p;
  };

  it('an export that never ends stops at its size bound; its copy is deleted', async () => {
    const host = await daemon((res) => {
      res.writeHead(200, { 'content-type': 'application/x-tar' });
      const chunk = Buffer.alloc(1 << 20);
      const more = (): void =>
        void (res.destroyed ? 0 : res.write(chunk) ? setImmediate(more) : res.once('drain', more));
      more();
    });
    const tmpDir = await tmpOf('endless');
    // The bound, not the disk, ends it: 16 MiB, and time enough for a machine whose disk is saturated (a
    // second full test run beside this one took 35 s to write 64 MiB here).
    const e = await failsWithin(60_000, 'ERR_INVALID_IMAGE', () =>
      openImage('docker-daemon:busybox:latest', { dockerHost: host, tmpDir, maxExportBytes: 16 << 20 }),
    );
    expect(e.message).toMatch(/size bound/);
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it('a daemon that stalls mid-export is given up after the idle timeout; its error text is quoted', async () => {
    const host = await daemon((res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(1024));
    });
    const tmpDir = await tmpOf('stall');
    await failsWithin(10_000, 'ERR_TIMEOUT', () =>
      openImage('docker-daemon:busybox:latest', { dockerHost: host, tmpDir, idleTimeoutMs: 1000 }),
    );
    expect(await readdir(tmpDir)).toEqual([]);
    const rude = await daemon((res) =>
      res.writeHead(500).end(JSON.stringify({ message: `\u001b]0;owned\u0007lcow: import OK\n${'x'.repeat(5000)}` })),
    );
    const e = await failsWithin(5_000, 'ERR_REGISTRY', () =>
      openImage('docker-daemon:a:b', { dockerHost: rude, tmpDir }),
    );
    // eslint-disable-next-line no-control-regex
    expect(e.message).not.toMatch(/[\u0000-\u001f]/);
    expect(e.message).toContain('"\\x1b]0;owned\\x07lcow: import OK\\n');
    expect(e.message.length).toBeLessThan(600);
  });
});

describe('an image folder is read inside itself only', () => {
  const SECRET = 'root:SECRET-OUTSIDE-THE-FOLDER';
  async function saveFolder(
    name: string,
    entry: object,
    files: Record<string, string | Uint8Array> = {},
  ): Promise<string> {
    const base = join(dir.path, name);
    const folder = join(base, 'image');
    await mkdir(folder, { recursive: true });
    await writeFile(join(base, 'outside.json'), SECRET);
    await writeFile(join(folder, 'manifest.json'), JSON.stringify([entry]));
    for (const [f, body] of Object.entries(files)) {
      await mkdir(join(folder, f, '..'), { recursive: true });
      await writeFile(join(folder, f), body);
    }
    return folder;
  }
  const layer = makeTar([{ path: 'etc/x', body: 'inside\n' }]);
  const config = (diff: Uint8Array): string =>
    JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { diff_ids: [sha(diff)] } });

  it('names with .., absolute names and symlinks out of the folder are refused; the outside file is not echoed', async () => {
    const cases: [string, (folder: string) => Promise<void> | void, object][] = [
      ['dotdot-config', () => {}, { Config: '../outside.json', Layers: ['l.tar'] }],
      ['abs-layer', () => {}, { Config: 'c.json', Layers: [join(dir.path, 'abs-layer', 'outside.json')] }],
      ['dotdot-layer', () => {}, { Config: 'c.json', Layers: ['sub/../../outside.json'] }],
      ['link-config', (f) => symlink('../outside.json', join(f, 'c2.json')), { Config: 'c2.json', Layers: ['l.tar'] }],
      [
        'link-layer',
        (f) => symlink(join(f, '..', 'outside.json'), join(f, 'l2.tar')),
        { Config: 'c.json', Layers: ['l2.tar'] },
      ],
    ];
    for (const [name, plant, entry] of cases) {
      const folder = await saveFolder(name, entry, { 'c.json': config(layer), 'l.tar': layer });
      await plant(folder);
      const e = await failsWithin(3_000, 'ERR_INVALID_IMAGE', async () => {
        const img = await openImage(folder);
        for await (const _ of layerTar(img.layers[0]!)) void _;
      });
      expect(e.message, name).toMatch(/leaves the folder|link out of the folder/);
      expect(e.message).not.toContain('SECRET');
    }
  });

  it('an OCI layout whose blob is a symlink out is refused; a docker-save folder sharing a layer by a link inside is read', async () => {
    const base = join(dir.path, 'oci');
    const folder = join(base, 'layout');
    await mkdir(join(folder, 'blobs', 'sha256'), { recursive: true });
    const cfg = Buffer.from(config(layer));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
      }),
    );
    const blob = (d: string): string => join(folder, 'blobs', 'sha256', d.slice(7));
    await writeFile(join(folder, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(
      join(folder, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length },
        ],
      }),
    );
    await writeFile(blob(sha(manifest)), manifest);
    await writeFile(blob(sha(cfg)), cfg);
    await writeFile(join(base, 'layer-outside.tar'), layer); // the right bytes, but outside the layout
    await symlink(join(base, 'layer-outside.tar'), blob(sha(layer)));
    const e = await failsWithin(3_000, 'ERR_INVALID_IMAGE', () => openImage(`oci:${folder}`));
    expect(e.message).toMatch(/link out of the folder/);

    const shared = await saveFolder(
      'shared',
      { Config: 'c.json', Layers: ['a/layer.tar'] },
      { 'c.json': config(layer), 'b/layer.tar': layer },
    );
    await mkdir(join(shared, 'a'));
    await symlink('../b/layer.tar', join(shared, 'a', 'layer.tar'));
    const img = await openImage(shared);
    let n = 0;
    for await (const c of layerTar(img.layers[0]!)) n += c.length;
    expect(n).toBe(layer.length);
  });
});
