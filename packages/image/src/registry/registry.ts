// A client of the OCI distribution API (registries: distribution, Harbor, Docker Hub, ghcr, ACR…),
// for pulling: the /v2/ ping and its challenge, manifests and indexes by tag or digest, blobs streamed
// with their digest checked, resumed with a Range request after a dropped connection.
import type { IncomingMessage } from 'node:http';
import { compressionOf, verified } from '../compression.ts';
import { ImageError, quoteRemote } from '../errors.ts';
import {
  MANIFEST_ACCEPT,
  MAX_JSON,
  chainIds,
  diffIdsOf,
  parseJson,
  parseManifest,
  pickPlatform,
  platformOf,
  sha256,
} from '../manifest.ts';
import { formatReference, type RegistryReference } from '../reference.ts';
import type { Image, ImageLayer, Platform } from '../types.ts';
import { basicHeader, credentialsFor, parseChallenge, type AuthOptions, type Credentials } from './auth.ts';
import {
  SpeedFloor,
  backoff,
  networkError,
  readBody,
  readPrefix,
  retryable,
  send,
  type TransportOptions,
} from './http.ts';

export interface RegistryOptions extends TransportOptions, AuthOptions {
  platform: Platform;
  /** Blobs downloaded at once, per image (default 3, as Docker's max-concurrent-downloads). */
  parallel?: number;
  signal?: AbortSignal;
}

/** A counting semaphore: at most `n` holders. */
class Slots {
  #free: number;
  readonly #waiting: (() => void)[] = [];
  constructor(n: number) {
    this.#free = Math.max(1, n);
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((r) => this.#waiting.push(r));
  }
  give(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

const REDIRECTS = 5;

export class RegistryClient {
  readonly ref: RegistryReference;
  readonly #opts: RegistryOptions;
  readonly #host: string;
  /** Read from the credentials files only when the registry asks for a login. */
  #creds: Promise<Credentials | null> | null = null;
  #credsUser: string | null = null;
  readonly #slots: Slots;
  /** Aborted when {@link TransportOptions.timeoutMs} has passed since the client was made. */
  readonly #deadline: AbortSignal | null;
  #base: URL | null = null;
  #authorization: string | null = null;
  #challenge: { scheme: string; params: Record<string, string> } | null = null;

  constructor(ref: RegistryReference, opts: RegistryOptions) {
    this.ref = ref;
    this.#opts = opts;
    this.#host = ref.registry === 'docker.io' ? 'registry-1.docker.io' : ref.registry;
    this.#slots = new Slots(opts.parallel ?? 3);
    this.#deadline = opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : null;
  }

  #credentials(): Promise<Credentials | null> {
    return (this.#creds ??= credentialsFor(this.ref.registry, this.ref.repository, this.#opts).then((c) => {
      this.#credsUser = c?.username ?? null;
      return c;
    }));
  }

  /** The caller's signal joined with the client's deadline. */
  #signal(signal?: AbortSignal): AbortSignal | undefined {
    if (!this.#deadline) return signal;
    return signal ? AbortSignal.any([signal, this.#deadline]) : this.#deadline;
  }

  /** `e` as the deadline's `ERR_TIMEOUT` when the deadline is what ended it. */
  timedOut(e: unknown): unknown {
    if (!this.#deadline?.aborted || (e instanceof ImageError && e.code === 'ERR_TIMEOUT')) return e;
    return new ImageError(
      'ERR_TIMEOUT',
      `${this.#what}: not done in ${this.#opts.timeoutMs! / 1000} s (the transfer deadline)`,
      { cause: e },
    );
  }

  get #what(): string {
    return `${this.ref.registry}/${this.ref.repository}`;
  }

  /** `https://HOST/` (or `http://` when TLS is off and the registry speaks plain HTTP), from a /v2/ ping. */
  async #endpoint(signal?: AbortSignal): Promise<URL> {
    if (this.#base) return this.#base;
    const schemes = this.#opts.tlsVerify === false ? ['https:', 'http:'] : ['https:'];
    let last: unknown = null;
    for (const scheme of schemes) {
      const url = new URL(`${scheme}//${this.#host}/v2/`);
      try {
        const res = await this.#attempts(url, () => send(url, { signal }, this.#opts), signal);
        res.resume();
        if (res.statusCode === 401) this.#challenge = parseChallenge(String(res.headers['www-authenticate'] ?? ''));
        else if (res.statusCode !== 200 && res.statusCode !== 404)
          throw new ImageError('ERR_REGISTRY', `${this.#host}: /v2/ answered ${res.statusCode}: not a registry`);
        this.#base = new URL(`${scheme}//${this.#host}/`);
        return this.#base;
      } catch (e) {
        last = e;
        if (e instanceof ImageError && e.code !== 'ERR_NETWORK' && e.code !== 'ERR_TLS') throw e;
      }
    }
    throw networkError(new URL(`https://${this.#host}/`), last);
  }

  /** Runs `attempt` until it gives an answer that is not 5xx/429, retrying errors worth it, with backoff. */
  async #attempts(url: URL, attempt: () => Promise<IncomingMessage>, signal?: AbortSignal): Promise<IncomingMessage> {
    const max = this.#opts.attempts ?? 5;
    for (let n = 1; ; n++) {
      let res: IncomingMessage;
      try {
        res = await attempt();
      } catch (e) {
        if (n < max && retryable(e)) {
          await backoff(n, this.#opts, signal);
          continue;
        }
        throw networkError(url, e);
      }
      const status = res.statusCode ?? 0;
      if ((status >= 500 || status === 429) && n < max) {
        res.resume();
        await backoff(n, this.#opts, signal);
        continue;
      }
      return res;
    }
  }

  /** A Bearer token for this repository's pull scope from the challenge's realm, or Basic credentials. */
  async #authorize(signal?: AbortSignal): Promise<void> {
    const c = this.#challenge;
    if (!c) throw new ImageError('ERR_UNAUTHORIZED', `${this.#what}: refused (401) without saying how to log in`);
    if (c.scheme === 'basic') {
      const creds = await this.#credentials();
      if (!creds)
        throw new ImageError(
          'ERR_UNAUTHORIZED',
          `${this.#what}: the registry asks for credentials (--creds or --authfile)`,
        );
      this.#authorization = basicHeader(creds);
      return;
    }
    if (c.scheme !== 'bearer' || !c.params.realm)
      throw new ImageError('ERR_UNSUPPORTED', `${this.#what}: authentication scheme ${quoteRemote(c.scheme, 40)}`);
    let realm: URL;
    try {
      realm = new URL(c.params.realm);
    } catch {
      throw new ImageError(
        'ERR_REGISTRY',
        `${this.#what}: token realm ${quoteRemote(c.params.realm, 200)} is not a URL`,
      );
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:')
      throw new ImageError('ERR_REGISTRY', `${this.#what}: token realm ${quoteRemote(realm.href, 200)} is not HTTP`);
    if (c.params.service) realm.searchParams.set('service', c.params.service);
    realm.searchParams.set('scope', `repository:${this.ref.repository}:pull`);
    const creds = await this.#credentials();
    // A registry reached over HTTPS that sends us to a plain-HTTP realm would have the password cross the
    // network in the clear: refused, unless TLS checks are off (then the registry itself may be plain HTTP).
    const base = this.#base!;
    if (creds && realm.protocol === 'http:' && base.protocol === 'https:' && this.#opts.tlsVerify !== false)
      throw new ImageError(
        'ERR_UNAUTHORIZED',
        `${this.#what}: the registry (HTTPS) names a plain-HTTP token realm ${realm.host}; credentials are not sent in the clear (--tls-verify=false to allow it)`,
      );
    const headers: Record<string, string> = creds ? { authorization: basicHeader(creds) } : {};
    const res = await this.#attempts(realm, () => send(realm, { headers, signal }, this.#opts), signal);
    const body = await readBody(res, 1 << 20, `${realm.host} token`, this.#opts);
    if (res.statusCode === 401 || res.statusCode === 403)
      throw new ImageError(
        'ERR_UNAUTHORIZED',
        `${this.#what}: ${creds ? `credentials of ${creds.username} refused` : 'anonymous access refused'} by ${realm.host}`,
      );
    if (res.statusCode !== 200)
      throw new ImageError('ERR_REGISTRY', `${this.#what}: token endpoint ${realm.host} answered ${res.statusCode}`);
    const doc = parseJson(body, `${realm.host} token`) as { token?: unknown; access_token?: unknown };
    const token = typeof doc.token === 'string' ? doc.token : doc.access_token;
    if (typeof token !== 'string' || token === '')
      throw new ImageError('ERR_REGISTRY', `${this.#what}: token endpoint ${realm.host} sent no token`);
    this.#authorization = `Bearer ${token}`;
  }

  /**
   * GET `path` of the registry with authorization (obtained on the first 401, renewed once if refused),
   * redirects followed (credentials are not sent to another host), 5xx and dropped connections retried.
   * Resolves with a 2xx response; anything else becomes a typed error naming `what`.
   */
  async get(
    path: string,
    what: string,
    headers: Record<string, string> = {},
    signal?: AbortSignal,
  ): Promise<IncomingMessage> {
    try {
      return await this.#get(path, what, headers, this.#signal(signal));
    } catch (e) {
      throw this.timedOut(e);
    }
  }

  async #get(
    path: string,
    what: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<IncomingMessage> {
    const base = await this.#endpoint(signal);
    let renewed = false;
    if (this.#authorization === null && this.#challenge) await this.#authorize(signal);
    for (;;) {
      let url = new URL(path, base);
      let res: IncomingMessage | null = null;
      for (let hop = 0; hop <= REDIRECTS; hop++) {
        const h = { ...headers };
        if (this.#authorization && url.host === base.host && url.protocol === base.protocol)
          h.authorization = this.#authorization;
        const target = url;
        res = await this.#attempts(target, () => send(target, { headers: h, signal }, this.#opts), signal);
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400 && res.headers.location) {
          res.resume();
          url = new URL(res.headers.location, url);
          continue;
        }
        break;
      }
      const status = res!.statusCode ?? 0;
      if (status === 401 && !renewed) {
        res!.resume();
        renewed = true;
        const header = res!.headers['www-authenticate'];
        if (header) this.#challenge = parseChallenge(String(header));
        await this.#authorize(signal);
        continue;
      }
      if (status >= 200 && status < 300) return res!;
      throw await this.#refusal(res!, what);
    }
  }

  async #refusal(res: IncomingMessage, what: string): Promise<ImageError> {
    const status = res.statusCode ?? 0;
    let detail = '';
    const body = await readPrefix(res, 64 << 10);
    try {
      const doc = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
      const errors = Array.isArray(doc?.errors) ? doc.errors : [];
      detail = errors
        .slice(0, 8)
        .map((e) => `${String(e?.code ?? '')}${e?.message ? `: ${String(e.message)}` : ''}`)
        .join('; ');
    } catch {
      detail = body.trim(); // not JSON (or more than we read): its start
    }
    // The registry's words, quoted: they cannot pass for ours nor rewrite the terminal.
    if (detail) detail = quoteRemote(detail);
    const text = `${what}: ${status}${detail ? ` ${detail}` : ''}`;
    if (status === 404) return new ImageError('ERR_IMAGE_NOT_FOUND', text);
    if (status === 401 || status === 403)
      return new ImageError(
        'ERR_UNAUTHORIZED',
        `${text}${this.#credsUser !== null ? ` (as ${this.#credsUser})` : ' (anonymous; --creds or --authfile)'}`,
      );
    return new ImageError('ERR_REGISTRY', text);
  }

  /** A manifest or index by tag or digest: its bytes, its digest (checked) and its media type. */
  async manifest(
    reference: string,
    signal?: AbortSignal,
  ): Promise<{ bytes: Buffer; digest: string; contentType: string }> {
    const what = `${this.#what}:${reference}`;
    const res = await this.get(
      `/v2/${this.ref.repository}/manifests/${reference}`,
      `manifest ${what}`,
      { accept: MANIFEST_ACCEPT },
      signal,
    );
    let bytes: Buffer;
    try {
      bytes = await readBody(res, MAX_JSON, `manifest ${what}`, this.#opts);
    } catch (e) {
      throw this.timedOut(e);
    }
    const digest = sha256(bytes);
    if (reference.startsWith('sha256:') && digest !== reference)
      throw new ImageError('ERR_DIGEST_MISMATCH', `manifest ${what}: content hashes to ${digest}`);
    const sent = res.headers['docker-content-digest'];
    if (typeof sent === 'string' && sent.startsWith('sha256:') && sent !== digest)
      throw new ImageError(
        'ERR_DIGEST_MISMATCH',
        `manifest ${what}: content hashes to ${digest}, the registry says ${sent}`,
      );
    return { bytes, digest, contentType: String(res.headers['content-type'] ?? '') };
  }

  /**
   * A blob's bytes as they arrive, resumed where a dropped connection left off (`Range: bytes=N-`; a
   * registry that ignores the range is read past what was already given). The caller checks the digest.
   */
  async *blob(digest: string, size: number, given?: AbortSignal): AsyncGenerator<Uint8Array> {
    const signal = this.#signal(given);
    await this.#slots.take();
    const what = `blob ${this.#what}@${digest}`;
    const max = this.#opts.attempts ?? 5;
    try {
      let got = 0;
      // Failures count against `attempts` until a retry has brought real progress (1 MiB, or the end): a
      // server that gives a byte per request and then drops the connection runs out of attempts.
      let failures = 0;
      let sinceFailure = 0;
      // One floor for the whole blob, across its retries.
      const floor = new SpeedFloor(this.#opts, what);
      for (;;) {
        let res: IncomingMessage;
        try {
          res = await this.get(
            `/v2/${this.ref.repository}/blobs/${digest}`,
            what,
            got > 0 ? { range: `bytes=${got}-` } : {},
            signal,
          );
        } catch (e) {
          throw this.timedOut(e);
        }
        let skip = 0;
        if (got > 0) {
          const m = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
          if (res.statusCode === 206 && m && Number(m[1]) !== got) {
            res.destroy();
            throw new ImageError('ERR_REGISTRY', `${what}: asked for bytes from ${got}, got from ${m[1]}`);
          }
          if (res.statusCode !== 206) skip = got;
        }
        try {
          for await (const c of res as AsyncIterable<Uint8Array>) {
            let chunk = c;
            if (skip > 0) {
              const n = Math.min(skip, chunk.length);
              skip -= n;
              chunk = chunk.subarray(n);
              if (chunk.length === 0) continue;
            }
            got += chunk.length;
            sinceFailure += chunk.length;
            if (sinceFailure >= 1 << 20) failures = 0;
            floor.add(chunk.length);
            yield chunk;
          }
          if (size >= 0 && got < size)
            throw new ImageError('ERR_NETWORK', `${what}: connection closed after ${got} of ${size} bytes`);
          return;
        } catch (e) {
          const err = this.timedOut(e);
          if (++failures < max && retryable(err)) {
            sinceFailure = 0;
            await backoff(failures, this.#opts, signal).catch((b: unknown) => {
              throw this.timedOut(b);
            });
            continue;
          }
          throw err instanceof ImageError ? err : networkError(new URL(this.#base!.href), err);
        } finally {
          res.destroy();
        }
      }
    } finally {
      this.#slots.give();
    }
  }
}

/** Resolves a registry reference to one image for the platform: manifest (through an index), config, layers. */
export async function openRegistryImage(ref: RegistryReference, opts: RegistryOptions): Promise<Image> {
  const client = new RegistryClient(ref, opts);
  const what = formatReference(ref);
  let m = await client.manifest(ref.digest ?? ref.tag!, opts.signal);
  let parsed = parseManifest(parseJson(m.bytes, `manifest ${what}`), `manifest ${what}`, m.contentType);
  for (let depth = 0; parsed.kind === 'index'; depth++) {
    if (depth >= 4) throw new ImageError('ERR_INVALID_IMAGE', `${what}: indexes nested more than 4 deep`);
    const pick = pickPlatform(parsed.manifests, opts.platform, what);
    m = await client.manifest(pick.digest, opts.signal);
    if (m.digest !== pick.digest)
      throw new ImageError('ERR_DIGEST_MISMATCH', `${what}: manifest ${pick.digest} hashes to ${m.digest}`);
    parsed = parseManifest(parseJson(m.bytes, `manifest ${what}`), `manifest ${what}`, m.contentType || pick.mediaType);
  }
  const cfgRes = await client.get(
    `/v2/${ref.repository}/blobs/${parsed.config.digest}`,
    `config ${what}@${parsed.config.digest}`,
    {},
    opts.signal,
  );
  let configBytes: Buffer;
  try {
    configBytes = await readBody(cfgRes, MAX_JSON, `config of ${what}`, opts);
  } catch (e) {
    throw client.timedOut(e);
  }
  if (sha256(configBytes) !== parsed.config.digest)
    throw new ImageError(
      'ERR_DIGEST_MISMATCH',
      `${what}: config hashes to ${sha256(configBytes)}, not ${parsed.config.digest}`,
    );
  const config = parseJson(configBytes, `config of ${what}`) as Record<string, unknown>;
  const diffIds = diffIdsOf(config, `config of ${what}`);
  if (diffIds.length !== parsed.layers.length)
    throw new ImageError('ERR_INVALID_IMAGE', `${what}: ${parsed.layers.length} layers but ${diffIds.length} diff ids`);
  const layers: ImageLayer[] = parsed.layers.map((l, i) => {
    const compression = compressionOf(l.mediaType);
    if (compression === null && /encrypted|\+xz|\+bzip/.test(l.mediaType))
      throw new ImageError('ERR_UNSUPPORTED', `${what}: layer ${i} media type ${quoteRemote(l.mediaType, 120)}`);
    return {
      index: i,
      digest: l.digest,
      diffId: diffIds[i]!,
      mediaType: l.mediaType,
      compression,
      size: l.size,
      file: null,
      open: (o = {}) =>
        verified(client.blob(l.digest, l.size, o.signal ?? opts.signal), l.digest, `${what} layer ${i}`, l.size),
    };
  });
  return {
    reference: ref,
    name: what,
    format: 'registry',
    repoTags: ref.tag ? [`${ref.registry === 'docker.io' ? '' : `${ref.registry}/`}${ref.repository}:${ref.tag}`] : [],
    manifestDigest: m.digest,
    mediaType: parsed.mediaType,
    platform: platformOf(config),
    configDigest: parsed.config.digest,
    config,
    layers,
    chainIds: chainIds(diffIds),
    close: async () => {},
  };
}
