// The snapshots service on a unix socket, as containerd loads a proxy plugin
// (`[proxy_plugins.lcow] type = "snapshot"`, `address = "/run/lcow/containerd-snapshotter.sock"`). gRPC by
// @grpc/grpc-js; the messages come from our own .proto (proto/), loaded by @grpc/proto-loader — no codec of
// our own. Errors are answered with the gRPC status containerd's errdefs expect.
import { chmod, mkdir, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Metrics, describeError, driverGauges, errorText } from '@lcow/driver';
import { HostLock } from '@lcow/layerstore';
import { SnapshotError } from './errors.ts';
import { secondsAndNanos, type Snapshot } from './metadata.ts';
import { NAMESPACE_HEADER } from './content.ts';
import { loadProto } from './proto.ts';
import { Snapshotter, type CallContext, type Mount, type SnapshotterOptions } from './snapshotter.ts';

/** Where containerd's config points by default, and where the layers live (kubelet's image-fs accounting). */
export const DEFAULT_SOCKET = '/run/lcow/containerd-snapshotter.sock';
export const DEFAULT_ROOT = '/var/lib/containerd/io.containerd.snapshotter.v1.lcow';

/** Snapshots per `List` answer: the stream sends them in batches, as containerd's own service does. */
const LIST_BATCH = 100;
/** Largest message accepted: a request with 4 KiB labels is kilobytes; anything near this is not ours. */
const MAX_MESSAGE = 4 << 20;

/** The service definition from proto/snapshots.proto. */
export function snapshotsService(): grpc.ServiceDefinition {
  const pkg = loadProto('snapshots.proto') as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: { service: grpc.ServiceDefinition } } } } };
  };
  return pkg.containerd.services.snapshots.v1.Snapshots.service;
}

const KINDS = { view: 'VIEW', active: 'ACTIVE', committed: 'COMMITTED' } as const;

function info(s: Snapshot): Record<string, unknown> {
  return {
    name: s.key,
    parent: s.parent,
    kind: KINDS[s.kind],
    created_at: secondsAndNanos(s.created),
    updated_at: secondsAndNanos(s.updated),
    labels: s.labels,
  };
}

const mounts = (m: Mount[]): { mounts: Mount[] } => ({ mounts: m });

/** The gRPC status for one of our errors (containerd's errdefs read these). */
function status(e: unknown): grpc.StatusObject {
  const code = (e as { code?: unknown })?.code;
  const map: Record<string, grpc.status> = {
    ERR_NOT_FOUND: grpc.status.NOT_FOUND,
    ERR_LAYER_NOT_FOUND: grpc.status.NOT_FOUND,
    ERR_ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
    ERR_LAYER_EXISTS: grpc.status.ALREADY_EXISTS,
    ERR_FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
    ERR_LAYER_BUSY: grpc.status.FAILED_PRECONDITION,
    ERR_INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
    ERR_INVALID_LAYER_ID: grpc.status.INVALID_ARGUMENT,
    ERR_DISK_FULL: grpc.status.RESOURCE_EXHAUSTED,
    ERR_UNAVAILABLE: grpc.status.UNAVAILABLE,
  };
  return {
    code: (typeof code === 'string' && map[code]) || grpc.status.UNKNOWN,
    details: errorText(e),
    metadata: new grpc.Metadata(),
  };
}

type Unary<Req> = (call: grpc.ServerUnaryCall<Req, unknown>, done: grpc.sendUnaryData<unknown>) => void;

export interface SnapshotterServerOptions extends SnapshotterOptions {
  socket?: string;
  root?: string;
}

/** A served snapshotter: its socket, and `close()`. */
export class SnapshotterServer {
  readonly socket: string;
  readonly snapshotter: Snapshotter;
  readonly #server: grpc.Server;
  readonly #release: () => Promise<void>;
  #closing: Promise<void> | null = null;

  /** RPCs by method with durations and errors by code; layers and unions mounted. */
  readonly metrics = new Metrics();

  private constructor(socket: string, snapshotter: Snapshotter, server: grpc.Server, release: () => Promise<void>) {
    this.socket = socket;
    this.snapshotter = snapshotter;
    driverGauges(this.metrics, () => snapshotter.driver);
    this.#server = server;
    this.#release = release;
  }

  /**
   * Opens the root (one server per root on this machine) and serves on the socket (0600, in a folder made
   * root-only). A socket that another server answers on is an error; a stale one is replaced.
   */
  static async listen(opts: SnapshotterServerOptions = {}): Promise<SnapshotterServer> {
    const socket = opts.socket ?? DEFAULT_SOCKET;
    const root = opts.root ?? DEFAULT_ROOT;
    const release = await new HostLock(`lcow-containerd-snapshotter\0${root}`).tryAcquire();
    if (!release) throw new SnapshotError('ERR_UNAVAILABLE', `${root}: another snapshotter serves this root`);
    try {
      await mkdir(root, { recursive: true, mode: 0o700 });
      await mkdir(dirname(socket), { recursive: true, mode: 0o700 });
      if (await answers(socket)) throw new SnapshotError('ERR_UNAVAILABLE', `${socket}: another server answers there`);
      await rm(socket, { force: true });
      const snapshotter = await Snapshotter.open(root, opts);
      const server = new grpc.Server({
        'grpc.max_receive_message_length': MAX_MESSAGE,
        'grpc.max_send_message_length': MAX_MESSAGE,
      });
      const served = new SnapshotterServer(socket, snapshotter, server, release);
      server.addService(snapshotsService(), served.#handlers());
      await new Promise<void>((resolve, reject) =>
        server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
      );
      // containerd runs as root; nobody else may speak to the snapshotter.
      await chmod(socket, 0o600);
      return served;
    } catch (e) {
      await release();
      throw e;
    }
  }

  #handlers(): grpc.UntypedServiceImplementation {
    const s = this.snapshotter;
    const unary =
      <Req>(method: string, fn: (req: Req, ctx: CallContext) => Promise<unknown> | unknown): Unary<Req> =>
      (call, done) => {
        if (this.#closing) return done(status(new SnapshotError('ERR_UNAVAILABLE', 'the snapshotter is stopping')));
        const ns = call.metadata.get(NAMESPACE_HEADER)[0];
        const started = performance.now();
        const seconds = (): number => (performance.now() - started) / 1000;
        Promise.resolve()
          .then(() => fn(call.request, typeof ns === 'string' && ns !== '' ? { namespace: ns } : {}))
          .then(
            (r) => {
              this.metrics.call('lcow_snapshotter', method, seconds());
              done(null, r);
            },
            (e: unknown) => {
              this.metrics.call('lcow_snapshotter', method, seconds(), describeError(e).code);
              done(status(e));
            },
          );
      };
    type KeyReq = { key: string; parent: string; labels: Record<string, string> };
    return {
      Prepare: unary<KeyReq>('Prepare', async (r, ctx) => mounts(await s.prepare(r.key, r.parent, r.labels, ctx))),
      View: unary<KeyReq>('View', async (r) => mounts(await s.view(r.key, r.parent, r.labels))),
      Mounts: unary<{ key: string }>('Mounts', async (r) => mounts(await s.mounts(r.key))),
      Commit: unary<{ name: string; key: string; labels: Record<string, string> }>('Commit', async (r, ctx) => {
        await s.commit(r.name, r.key, r.labels, ctx);
        return {};
      }),
      Remove: unary<{ key: string }>('Remove', async (r) => {
        await s.remove(r.key);
        return {};
      }),
      Stat: unary<{ key: string }>('Stat', (r) => ({ info: info(s.stat(r.key)) })),
      Update: unary<{
        info: { name: string; labels: Record<string, string> } | null;
        update_mask: { paths: string[] } | null;
      }>('Update', async (r) => ({
        info: info(await s.update(r.info?.name ?? '', r.info?.labels ?? {}, r.update_mask?.paths ?? [])),
      })),
      List: (call: grpc.ServerWritableStream<{ filters: string[] }, unknown>) => {
        const started = performance.now();
        try {
          const all = s.list(call.request.filters ?? []);
          for (let i = 0; i < all.length; i += LIST_BATCH) call.write({ info: all.slice(i, i + LIST_BATCH).map(info) });
          call.end();
          this.metrics.call('lcow_snapshotter', 'List', (performance.now() - started) / 1000);
        } catch (e) {
          this.metrics.call('lcow_snapshotter', 'List', (performance.now() - started) / 1000, describeError(e).code);
          // A server stream's error is emitted as its status.
          call.emit('error', status(e));
        }
      },
      Usage: unary<{ key: string }>('Usage', (r) => s.usage(r.key)),
      Cleanup: unary<object>('Cleanup', async () => {
        await s.cleanup();
        return {};
      }),
    };
  }

  /** Stops serving (calls in flight finish); the unions stay mounted for the next process to adopt. */
  close(): Promise<void> {
    return (this.#closing ??= (async () => {
      await new Promise<void>((r) => this.#server.tryShutdown(() => r()));
      await this.snapshotter.close();
      await rm(this.socket, { force: true });
      await this.#release();
    })());
  }
}

/** Whether a server answers on `socket`. */
function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
