// `lcow-containerd-snapshotter` (also `lcow containerd-snapshotter`): serves containerd's snapshots API until
// SIGTERM, SIGINT or SIGHUP, then stops cleanly (the unions stay mounted for the next process to adopt).
import { parseArgs } from 'node:util';
import { errorText } from '@lcow/driver';
import { DEFAULT_ROOT, DEFAULT_SOCKET, SnapshotterServer } from './server.ts';

const USAGE = `usage: lcow containerd-snapshotter [--socket PATH] [--root DIR] [--storage-opt lcow.KEY=VALUE]…

Serves containerd's snapshots API (a proxy plugin) on a unix socket. In containerd's config.toml:

  [proxy_plugins.lcow]
    type = "snapshot"
    address = "${DEFAULT_SOCKET}"

then \`ctr --snapshotter lcow …\`, or the CRI's snapshotter = "lcow".

  --socket PATH        the socket (default ${DEFAULT_SOCKET})
  --root DIR           the layers and the snapshot record (default ${DEFAULT_ROOT})
  --storage-opt K=V    driver options, as lcow --storage-opt (repeatable)
  --no-verity          no dm-verity tree on committed layers (and no root-hash label)
  -h, --help           this text`;

/** Runs the snapshotter; resolves with the exit status once it has stopped. */
export async function main(argv: string[]): Promise<number> {
  let values: { socket?: string; root?: string; 'storage-opt'?: string[]; 'no-verity'?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        root: { type: 'string' },
        'storage-opt': { type: 'string', multiple: true },
        'no-verity': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    process.stderr.write(`lcow: ERR_USAGE: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let server: SnapshotterServer;
  try {
    server = await SnapshotterServer.listen({
      socket: values.socket ?? DEFAULT_SOCKET,
      root: values.root ?? DEFAULT_ROOT,
      driverOptions: values['storage-opt'] ?? [],
      verity: !values['no-verity'],
    });
  } catch (e) {
    process.stderr.write(`lcow: ${errorText(e)}\n`);
    return 1;
  }
  process.stderr.write(`lcow containerd snapshotter: serving ${server.socket}\n`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  process.stderr.write(`lcow containerd snapshotter: ${signal}, stopping\n`);
  await server.close();
  process.stderr.write('lcow containerd snapshotter: stopped\n');
  return 0;
}
