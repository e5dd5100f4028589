// A client of the snapshots service on a socket (ours, on its own connection), for the tests that speak to
// the snapshotter directly rather than through containerd.
import { join } from 'node:path';
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

/**
 * Runs `fn` on the folder a snapshot's mounts give, mounted as containerd mounts them: a bind mount is its
 * source as it is; an `ext4` mount with `loop` gets a new read-only loop device of its own (as containerd's
 * mount package makes one; mount(8) would refuse a device that overlaps the driver's own attachment) and
 * the other options.
 */
export async function withMounted<T>(
  mounts: { type: string; source: string; options: string[] }[],
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const [m] = mounts;
  if (mounts.length !== 1 || !m) throw new Error(`expected one mount, got ${JSON.stringify(mounts)}`);
  if (m.type === 'bind') return fn(m.source);
  const { mkdtemp, rmdir } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { run } = await import('@lcow/testkit');
  const at = await mkdtemp(join(tmpdir(), 'lcow-mounted-'));
  const dev = (await run('losetup', ['--find', '--show', '--read-only', m.source])).trim();
  try {
    const opts = m.options.filter((o) => o !== 'loop').join(',');
    await run('mount', ['-t', m.type, '-o', opts, dev, at]);
    try {
      return await fn(at);
    } finally {
      await run('umount', [at]);
    }
  } finally {
    await run('losetup', ['-d', dev]);
    await rmdir(at);
  }
}
