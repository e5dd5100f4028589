// A small CRI client (Kubernetes' runtime.v1, test/cri.proto) over containerd's socket, calling what kubelet
// calls; for the CRI test and the benchmark.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadProto } from '../src/proto.ts';

export type Call = <T>(method: string, req: object) => Promise<T>;

/** A CRI client over containerd's socket: `runtime.v1` RuntimeService and ImageService. */
export function criClient(address: string): { runtime: Call; image: Call; close(): void } {
  const pkg = loadProto(fileURLToPath(new URL('./cri.proto', import.meta.url))) as unknown as {
    runtime: {
      v1: Record<'RuntimeService' | 'ImageService', new (a: string, c: grpc.ChannelCredentials) => grpc.Client>;
    };
  };
  const make = (svc: 'RuntimeService' | 'ImageService'): { client: grpc.Client; call: Call } => {
    const client = new pkg.runtime.v1[svc](`unix:${address}`, grpc.credentials.createInsecure());
    const call: Call = (method, req) =>
      new Promise((resolve, reject) =>
        (client as unknown as Record<string, (...a: unknown[]) => void>)[method]!.call(
          client,
          req,
          { deadline: Date.now() + 240_000 },
          (e: Error | null, r: unknown) => (e ? reject(e) : resolve(r as never)),
        ),
      );
    return { client, call };
  };
  const rt = make('RuntimeService');
  const im = make('ImageService');
  return {
    runtime: rt.call,
    image: im.call,
    close: () => {
      rt.client.close();
      im.client.close();
    },
  };
}

/**
 * containerd's config for its CRI plugin as the tests and the benchmark run it: `lcow` as the snapshotter with
 * snapshot annotations on, `sandboxImage` as the pause image, registries from `hostsDir`, and no CNI (pods
 * use the host network). This machine may not lower a process's `oom_score_adj` (the CRI asks -998 for a
 * pod's pause), so the CRI is told to keep it.
 */
export function criToml(dir: string, sandboxImage: string, hostsDir: string): string {
  const P = 'plugins."io.containerd.grpc.v1.cri"';
  return [
    `[${P}]`,
    `  sandbox_image = "${sandboxImage}"`,
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    '  restrict_oom_score_adj = true',
    `[${P}.containerd]`,
    '  snapshotter = "lcow"',
    '  disable_snapshot_annotations = false',
    `[${P}.cni]`,
    `  bin_dir = ${JSON.stringify(`${dir}/cni-bin`)}`,
    `  conf_dir = ${JSON.stringify(`${dir}/cni-conf`)}`,
    `[${P}.registry]`,
    `  config_path = ${JSON.stringify(hostsDir)}`,
  ].join('\n');
}

/** A `hosts.toml` folder for containerd naming `host` as an HTTPS registry whose CA is `caFile`. */
export async function hostsFor(hostsDir: string, host: string, caFile: string): Promise<void> {
  await mkdir(join(hostsDir, host), { recursive: true });
  await writeFile(
    join(hostsDir, host, 'hosts.toml'),
    `server = "https://${host}"\n[host."https://${host}"]\n  capabilities = ["pull", "resolve"]\n  ca = ${JSON.stringify(caFile)}\n`,
  );
}
