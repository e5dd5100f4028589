// Credentials go to the registry they belong to and nowhere else, and a manifest asked for by digest is that
// manifest. Two plain-HTTP servers on two loopback addresses play the registry (Basic auth) and another
// host; each records the Authorization headers it receives.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@lcow/testkit';
import { openImage } from '../src/index.ts';

interface Fake {
  server: Server;
  host: string;
  /** Authorization headers received, by path. */
  seen: { path: string; auth: string | undefined }[];
  handle: (req: IncomingMessage, res: ServerResponse) => void;
}

const USER = 'alice';
const PASS = 's3cret-for-registry-a';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`;

async function fake(address: string): Promise<Fake> {
  const f: Fake = { server: createServer(), host: '', seen: [], handle: (_q, r) => r.writeHead(404).end() };
  f.server.on('request', (req, res) => {
    f.seen.push({ path: req.url ?? '', auth: req.headers.authorization });
    f.handle(req, res);
  });
  await new Promise<void>((r) => f.server.listen(0, address, r));
  f.host = `${address}:${(f.server.address() as { port: number }).port}`;
  return f;
}

const sha = (b: string | Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const MANIFEST = JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('{}'), size: 2 },
  layers: [],
});

let a: Fake; // the registry
let b: Fake; // another host
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  [a, b] = await Promise.all([fake('127.0.0.1'), fake('127.0.0.2')]);
  dir = await tempDir('lcow-creds-');
});
afterAll(async () => {
  await Promise.all([a, b].map((f) => new Promise<void>((r) => f?.server.close(() => r()))));
  await dir?.cleanup();
});

/** Registry A: Basic auth on everything; `then` answers the authorised requests. */
function basicRegistry(then: (req: IncomingMessage, res: ServerResponse) => void): void {
  a.seen.length = 0;
  b.seen.length = 0;
  a.handle = (req, res) => {
    if (req.headers.authorization !== BASIC)
      return res.writeHead(401, { 'www-authenticate': 'Basic realm="registry a"' }).end('{}');
    then(req, res);
  };
}

const opts = { tlsVerify: false, backoffMs: 1, attempts: 1, idleTimeoutMs: 3000, noDefaultAuthfiles: true } as const;

describe('credentials and digests', () => {
  it('a redirect to another host does not carry the registry credentials', async () => {
    basicRegistry((req, res) => {
      if (req.url === '/v2/') return res.writeHead(200).end('{}');
      res.writeHead(307, { location: `http://${b.host}${req.url}` }).end();
    });
    b.handle = (_q, res) =>
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(MANIFEST);
    await openImage(`docker://${a.host}/team/img:v1`, { ...opts, creds: `${USER}:${PASS}` }).catch(() => null);
    expect(a.seen.some((s) => s.auth === BASIC)).toBe(true); // the registry itself got them
    expect(b.seen.length).toBeGreaterThan(0); // the redirect was followed
    expect(b.seen.map((s) => s.auth)).toEqual(b.seen.map(() => undefined));
  });

  it('credentials an authfile holds for another registry are not sent to this one', async () => {
    basicRegistry((_q, res) => res.writeHead(200).end('{}'));
    const authfile = join(dir.path, 'auth.json');
    await writeFile(
      authfile,
      JSON.stringify({ auths: { [b.host]: { auth: Buffer.from(`${USER}:${PASS}`).toString('base64') } } }),
    );
    await expect(openImage(`docker://${a.host}/team/img:v1`, { ...opts, authfile })).rejects.toMatchObject({
      code: 'ERR_UNAUTHORIZED',
    });
    expect(a.seen.length).toBeGreaterThan(0);
    expect(a.seen.filter((s) => s.auth !== undefined)).toEqual([]);
  });

  it('a manifest asked for by digest is refused when it is another one (no Docker-Content-Digest to go by)', async () => {
    const wanted = sha(MANIFEST);
    const other = MANIFEST.replace('"layers":[]', '"layers":[],"annotations":{"x":"y"}');
    basicRegistry((req, res) => {
      if (req.url === '/v2/') return res.writeHead(200).end('{}');
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(other);
    });
    await expect(
      openImage(`docker://${a.host}/team/img@${wanted}`, { ...opts, creds: `${USER}:${PASS}` }),
    ).rejects.toMatchObject({
      code: 'ERR_DIGEST_MISMATCH',
    });
    expect(a.seen.some((s) => s.path.includes(`/manifests/${wanted}`))).toBe(true);
  });
});
