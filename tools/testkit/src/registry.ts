// A real registry for the tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1 with a CA and
// server certificate made here, and either htpasswd (Basic) auth or token (Bearer) auth served by a small
// token server of ours that signs JWTs the registry checks against our CA bundle. Filled with skopeo.
import { spawn, type ChildProcess } from 'node:child_process';
import { createSign, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer as createNetServer, connect } from 'node:net';
import { join } from 'node:path';
import { run } from './index.ts';

export interface Registry {
  /** `127.0.0.1:PORT` */
  host: string;
  /** The folder holding `ca.crt` (for --cert-dir). */
  certDir: string;
  user: string;
  password: string;
  /** Where the registry keeps blobs (`…/blobs/sha256/ab/abcd…/data`), to damage one. */
  data: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited (${child.exitCode}): ${log()}`);
    const ok = await new Promise<boolean>((r) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), r(true)));
      c.once('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`docker-registry did not listen on ${port}: ${log()}`);
}

/** A CA and a server certificate for 127.0.0.1 and localhost, signed by it. */
export async function makeCerts(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const o = (args: string[]): Promise<string> => run('openssl', args);
  await o([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=lcow test CA',
    '-keyout',
    join(dir, 'ca.key'),
    '-out',
    join(dir, 'ca.crt'),
  ]);
  await writeFile(
    join(dir, 'ext.cnf'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:registry.test\nbasicConstraints=CA:FALSE\n',
  );
  await o([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    join(dir, 'server.key'),
    '-out',
    join(dir, 'server.csr'),
  ]);
  await o([
    'x509',
    '-req',
    '-in',
    join(dir, 'server.csr'),
    '-CA',
    join(dir, 'ca.crt'),
    '-CAkey',
    join(dir, 'ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    join(dir, 'ext.cnf'),
    '-out',
    join(dir, 'server.crt'),
  ]);
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** Starts a registry under `dir`; `auth` chooses htpasswd (Basic) or a token server (Bearer). */
export async function startRegistry(dir: string, auth: 'basic' | 'token'): Promise<Registry> {
  const certs = join(dir, 'certs');
  await makeCerts(certs);
  // The client's --cert-dir holds only the CA.
  const certDir = join(dir, 'client-certs');
  await mkdir(certDir, { recursive: true });
  await writeFile(join(certDir, 'ca.crt'), await readFile(join(certs, 'ca.crt')));
  const user = 'lcow';
  const password = randomBytes(9).toString('base64url');
  const port = await freePort();
  let tokenServer: Server | null = null;
  let authYaml: string;
  if (auth === 'basic') {
    await writeFile(join(dir, 'htpasswd'), await run('htpasswd', ['-Bbn', user, password]));
    authYaml = `auth:\n  htpasswd:\n    realm: lcow-test\n    path: ${join(dir, 'htpasswd')}\n`;
  } else {
    // Token auth: our server checks Basic credentials (or none, for pull of public repositories named
    // public/…) and signs an RS256 JWT with the CA's key; the registry trusts the CA certificate.
    const key = await readFile(join(certs, 'ca.key'), 'utf8');
    const der = (await readFile(join(certs, 'ca.crt'), 'utf8')).replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    const tokenPort = await freePort();
    tokenServer = createHttpsServer(
      { key: await readFile(join(certs, 'server.key')), cert: await readFile(join(certs, 'server.crt')) },
      (req, res) => {
        const url = new URL(req.url ?? '/', 'https://x');
        const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
        const who = basic ? Buffer.from(basic[1]!, 'base64').toString() : null;
        const scope = url.searchParams.getAll('scope').join(' ');
        const repo = /^repository:([^:]+):/.exec(scope)?.[1] ?? '';
        if (who !== null && who !== `${user}:${password}`) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
          return;
        }
        const actions = who !== null ? ['pull', 'push'] : repo.startsWith('public/') ? ['pull'] : [];
        const now = Math.floor(Date.now() / 1000);
        const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [der] }));
        const claims = b64url(
          JSON.stringify({
            iss: 'lcow-test-issuer',
            sub: who?.split(':')[0] ?? '',
            aud: 'lcow-test-registry',
            exp: now + 600,
            nbf: now - 10,
            iat: now,
            jti: randomBytes(8).toString('hex'),
            access: repo ? [{ type: 'repository', name: repo, actions }] : [],
          }),
        );
        const sig = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(key);
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ token: `${header}.${claims}.${b64url(sig)}`, expires_in: 600 }));
      },
    );
    await new Promise<void>((r) => tokenServer!.listen(tokenPort, '127.0.0.1', r));
    authYaml =
      `auth:\n  token:\n    realm: https://127.0.0.1:${tokenPort}/token\n    service: lcow-test-registry\n` +
      `    issuer: lcow-test-issuer\n    rootcertbundle: ${join(certs, 'ca.crt')}\n`;
  }
  await writeFile(
    join(dir, 'config.yml'),
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n` +
      `  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: ${randomBytes(16).toString('hex')}\n` +
      `  tls:\n    certificate: ${join(certs, 'server.crt')}\n    key: ${join(certs, 'server.key')}\n${authYaml}`,
  );
  const child = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)));
  await waitForPort(port, child, () => log);
  return {
    host: `127.0.0.1:${port}`,
    certDir,
    user,
    password,
    data: join(dir, 'data/docker/registry/v2/blobs'),
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      await new Promise<void>((r) => (tokenServer ? tokenServer.close(() => r()) : r()));
    },
  };
}

/** `skopeo copy` into the registry, with its credentials and CA. */
export async function skopeoCopy(reg: Registry, from: string, to: string, extra: string[] = []): Promise<void> {
  await run('skopeo', [
    'copy',
    '--quiet',
    '--dest-creds',
    `${reg.user}:${reg.password}`,
    '--dest-cert-dir',
    reg.certDir,
    ...extra,
    from,
    `docker://${reg.host}/${to}`,
  ]);
}
