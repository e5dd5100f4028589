// Registry credentials and the WWW-Authenticate challenge: Basic, and Bearer tokens from the realm the
// registry names (the Docker token protocol), for a repository's pull scope.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ImageError } from '../errors.ts';

export interface Credentials {
  username: string;
  password: string;
}

/** Where credentials come from, in skopeo's order: `creds`, then `authfile`, then the usual files. */
export interface AuthOptions {
  /** `USER:PASS` (skopeo's `--creds`). */
  creds?: string;
  /** A containers `auth.json` or Docker `config.json` (skopeo's `--authfile`). */
  authfile?: string;
  /** Never read credentials files (anonymous unless `creds`). */
  noDefaultAuthfiles?: boolean;
}

export function parseCreds(text: string): Credentials {
  const i = text.indexOf(':');
  if (i <= 0) throw new ImageError('ERR_INVALID_REFERENCE', '--creds: expected USER:PASS');
  return { username: text.slice(0, i), password: text.slice(i + 1) };
}

function defaultAuthfiles(): string[] {
  const out: string[] = [];
  if (process.env.REGISTRY_AUTH_FILE) out.push(process.env.REGISTRY_AUTH_FILE);
  if (process.env.XDG_RUNTIME_DIR) out.push(join(process.env.XDG_RUNTIME_DIR, 'containers/auth.json'));
  out.push(join(homedir(), '.config/containers/auth.json'));
  out.push(join(process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json'));
  return out;
}

/** Largest credentials file read: real ones are kilobytes; Docker's with many registries, tens of them. */
export const MAX_AUTHFILE = 4 << 20;

/**
 * A credentials file's text, or null when there is none. Only a regular file of at most
 * {@link MAX_AUTHFILE} bytes is read: a FIFO is not waited on (opened non-blocking), a device such as
 * `/dev/zero` is not read at all, and a file that grows while read is cut at the size it had.
 */
async function readAuthfile(file: string): Promise<string | null> {
  let fh;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ImageError('ERR_UNAUTHORIZED', `${file}: not a regular file`);
    if (st.size > MAX_AUTHFILE)
      throw new ImageError('ERR_UNAUTHORIZED', `${file}: ${st.size} bytes, more than a credentials file can be`);
    const buf = Buffer.alloc(st.size);
    let at = 0;
    while (at < buf.length) {
      const { bytesRead } = await fh.read(buf, at, buf.length - at, at);
      if (bytesRead === 0) break;
      at += bytesRead;
    }
    return buf.subarray(0, at).toString('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * Credentials for `registry` (`host[:port]`) and `repository`: the most specific `auths` key wins
 * (`host/repo/…`, then `host`, then Docker Hub's historical `https://index.docker.io/v1/`). Credential
 * helpers (`credHelpers`, `credsStore`) are not run: an entry that needs one is passed over. The registry
 * client asks only when a registry wants a login. A file that cannot be read is an error when it was named
 * (`authfile`), and passed over when it is one of the usual places.
 */
export async function credentialsFor(
  registry: string,
  repository: string,
  opts: AuthOptions = {},
): Promise<Credentials | null> {
  if (opts.creds) return parseCreds(opts.creds);
  const files = opts.authfile ? [opts.authfile] : opts.noDefaultAuthfiles ? [] : defaultAuthfiles();
  for (const file of files) {
    let doc: { auths?: Record<string, { auth?: unknown; username?: unknown; password?: unknown }> };
    try {
      const text = await readAuthfile(file);
      if (text === null) {
        if (opts.authfile) throw new ImageError('ERR_UNAUTHORIZED', `--authfile ${file}: no such file`);
        continue;
      }
      doc = JSON.parse(text) as typeof doc;
    } catch (e) {
      if (opts.authfile) {
        // Never the parser's message: it quotes the file's first bytes (a password, perhaps).
        const why = e instanceof SyntaxError ? 'not JSON' : (e as Error).message.replace(`${file}: `, '');
        throw new ImageError('ERR_UNAUTHORIZED', `--authfile ${file}: ${why}`, { cause: e });
      }
      continue;
    }
    const auths = doc?.auths && typeof doc.auths === 'object' ? doc.auths : {};
    const keys = [];
    const parts = repository.split('/');
    for (let n = parts.length; n > 0; n--) keys.push(`${registry}/${parts.slice(0, n).join('/')}`);
    keys.push(registry, `https://${registry}`, `http://${registry}`);
    if (registry === 'docker.io') keys.push('https://index.docker.io/v1/', 'index.docker.io', 'registry-1.docker.io');
    for (const k of keys) {
      const e = Object.hasOwn(auths, k) ? auths[k] : undefined;
      if (!e || typeof e !== 'object') continue;
      if (typeof e.auth === 'string' && e.auth) {
        const plain = Buffer.from(e.auth, 'base64').toString('utf8');
        const i = plain.indexOf(':');
        if (i > 0) return { username: plain.slice(0, i), password: plain.slice(i + 1) };
      }
      if (typeof e.username === 'string' && typeof e.password === 'string')
        return { username: e.username, password: e.password };
    }
  }
  return null;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** `Bearer realm="…",service="…",scope="…"` (quoted values may hold commas and escaped quotes). */
export function parseChallenge(header: string): Challenge | null {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return null;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/gy;
  const rest = m[2]!;
  re.lastIndex = 0;
  for (let p = re.exec(rest); p; p = re.exec(rest))
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}
