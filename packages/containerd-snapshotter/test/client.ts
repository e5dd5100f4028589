// A client of the snapshots service on a socket (ours, on its own connection), for the tests that speak to
// the snapshotter directly rather than through containerd.
import * as grpc from '@grpc/grpc-js';
import { snapshotsService } from '../src/index.ts';

export type Req = Record<string, unknown>;
export interface Client {
  call(method: string, req: Req): Promise<Req>;
  list(filters: string[]): Promise<Req[]>;
  close(): void;
}

const Ctor = grpc.makeGenericClientConstructor(snapshotsService(), 'Snapshots');

/** A client on its own connection. */
export function client(socket: string): Client {
  const c = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure(), {
    'grpc.max_send_message_length': 64 << 20,
  }) as unknown as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
  return {
    call: (method, req) =>
      new Promise((resolve, reject) =>
        c[method]!(req, (e: grpc.ServiceError | null, r: Req) => (e ? reject(e) : resolve(r))),
      ),
    list: (filters) =>
      new Promise((resolve, reject) => {
        const out: Req[] = [];
        const s = c.List!({ filters }) as grpc.ClientReadableStream<{ info: Req[] }>;
        s.on('data', (m: { info: Req[] }) => out.push(...m.info));
        s.on('end', () => resolve(out));
        s.on('error', reject);
      }),
    close: () => c.close(),
  };
}

/** Resolves with the gRPC status code of a failed call. */
export const code = (p: Promise<unknown>): Promise<number> =>
  p.then(
    () => -1,
    (e: grpc.ServiceError) => e.code,
  );
