// containerd's content store, read over its Content API on containerd's own socket: the fast path takes a
// layer's compressed blob from there (where the pull put it) instead of letting containerd's applier extract
// it to disk. Every read is bounded in time and checked: the bytes must be the size and the digest the
// store says, or the stream ends in an error and nothing made from it is kept.
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SnapshotError } from './errors.ts';
import { loadProto } from './proto.ts';

/** Where a host's containerd listens. */
export const DEFAULT_CONTAINERD_ADDRESS = '/run/containerd/containerd.sock';
/** The gRPC header containerd reads a call's namespace from (its `namespaces` package). */
export const NAMESPACE_HEADER = 'containerd-namespace';

/** An answer to `Info` or a chunk of `Read` must come within this; a stalled containerd is an error. */
const CALL_TIMEOUT_MS = 30_000;
const IDLE_TIMEOUT_MS = 60_000;
/** containerd sends 1 MiB chunks; anything much larger is not containerd. */
const MAX_MESSAGE = 8 << 20;

export interface BlobInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

/** A download into the store under way (`ListStatuses`). */
export interface Ingest {
  ref: string;
  offset: number;
  total: number;
  expected: string;
}

type Callback<T> = (e: grpc.ServiceError | null, r?: T) => void;
interface ContentStub extends grpc.Client {
  Info(req: { digest: string }, md: grpc.Metadata, o: grpc.CallOptions, cb: Callback<{ info: BlobInfo }>): void;
  Read(
    req: { digest: string; offset: number; size: number },
    md: grpc.Metadata,
  ): grpc.ClientReadableStream<{ offset: number; data: Buffer }>;
  ListStatuses(
    req: { filters: string[] },
    md: grpc.Metadata,
    o: grpc.CallOptions,
    cb: Callback<{ statuses: Ingest[] }>,
  ): void;
}

function contentService(): new (address: string, creds: grpc.ChannelCredentials, o: object) => ContentStub {
  const pkg = loadProto('content.proto') as unknown as {
    containerd: { services: { content: { v1: { Content: new (...a: never[]) => ContentStub } } } };
  };
  return pkg.containerd.services.content.v1.Content as never;
}

/** A digest as the fast path accepts one: sha256, lower-case hex. */
export function isDigest(d: unknown): d is string {
  return typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d);
}

/** The content store of one containerd, read-only. */
export class ContentStore {
  readonly address: string;
  #client: ContentStub | null = null;

  constructor(address: string = DEFAULT_CONTAINERD_ADDRESS) {
    this.address = address;
  }

  #stub(): ContentStub {
    if (!this.#client) {
      const Content = contentService();
      this.#client = new Content(`unix:${this.address}`, grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': MAX_MESSAGE,
      });
    }
    return this.#client;
  }

  static #md(namespace: string): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(NAMESPACE_HEADER, namespace);
    return md;
  }

  static #error(e: grpc.ServiceError, what: string): SnapshotError {
    return new SnapshotError(
      e.code === grpc.status.NOT_FOUND ? 'ERR_NOT_FOUND' : 'ERR_UNAVAILABLE',
      `${what}: containerd's content store: ${e.details || e.message}`,
      { cause: e },
    );
  }

  /** A committed blob's size and labels, or null when the store of `namespace` does not have it. */
  info(namespace: string, digest: string): Promise<BlobInfo | null> {
    return new Promise((resolve, reject) =>
      this.#stub().Info({ digest }, ContentStore.#md(namespace), { deadline: Date.now() + CALL_TIMEOUT_MS }, (e, r) => {
        if (e?.code === grpc.status.NOT_FOUND) resolve(null);
        else if (e) reject(ContentStore.#error(e, `blob ${digest}`));
        else resolve({ digest: r!.info.digest, size: r!.info.size, labels: r!.info.labels ?? {} });
      }),
    );
  }

  /** The download of `digest` under way in `namespace`, if one is. */
  ingest(namespace: string, digest: string): Promise<Ingest | null> {
    return new Promise((resolve, reject) =>
      this.#stub().ListStatuses(
        { filters: [] },
        ContentStore.#md(namespace),
        { deadline: Date.now() + CALL_TIMEOUT_MS },
        (e, r) => {
          if (e) reject(ContentStore.#error(e, `blob ${digest}`));
          else resolve(r!.statuses.find((s) => s.expected === digest || s.ref.endsWith(digest)) ?? null);
        },
      ),
    );
  }

  /**
   * The bytes of blob `info`, in order: each chunk must start where the last ended, the whole must be
   * `info.size` bytes hashing to `info.digest`, and a chunk must come within a minute — otherwise the
   * iteration ends in an error (so a conversion fed from it keeps nothing). Leaving the loop early cancels
   * the read.
   */
  async *read(namespace: string, info: BlobInfo, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const call = this.#stub().Read({ digest: info.digest, offset: 0, size: 0 }, ContentStore.#md(namespace));
    const what = `blob ${info.digest}`;
    let idle: NodeJS.Timeout | null = null;
    let timedOut = false;
    const arm = (): void => {
      if (idle) clearTimeout(idle);
      idle = setTimeout(() => {
        timedOut = true;
        call.cancel();
      }, IDLE_TIMEOUT_MS);
    };
    const onAbort = (): void => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    const hash = createHash('sha256');
    let at = 0;
    try {
      arm();
      for await (const m of call as AsyncIterable<{ offset: number; data: Buffer }>) {
        arm();
        if (m.offset !== at)
          throw new SnapshotError('ERR_FAILED_PRECONDITION', `${what}: a chunk at ${m.offset}, expected ${at}`);
        at += m.data.length;
        if (at > info.size)
          throw new SnapshotError('ERR_FAILED_PRECONDITION', `${what}: more than its ${info.size} bytes`);
        hash.update(m.data);
        yield m.data;
      }
    } catch (e) {
      if (e instanceof SnapshotError) throw e;
      if (signal?.aborted) throw signal.reason;
      if (timedOut)
        throw new SnapshotError('ERR_UNAVAILABLE', `${what}: containerd sent nothing for ${IDLE_TIMEOUT_MS / 1000} s`);
      throw ContentStore.#error(e as grpc.ServiceError, what);
    } finally {
      if (idle) clearTimeout(idle);
      signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
    if (at !== info.size)
      throw new SnapshotError('ERR_FAILED_PRECONDITION', `${what}: ${at} bytes read, the store says ${info.size}`);
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== info.digest) throw new SnapshotError('ERR_FAILED_PRECONDITION', `${what}: its bytes hash to ${got}`);
  }

  close(): void {
    this.#client?.close();
    this.#client = null;
  }
}
