// `lcow-containerd-snapshotter` (also `lcow containerd-snapshotter`): serves containerd's snapshots API until
// SIGTERM, SIGINT or SIGHUP, then stops cleanly (the unions stay mounted for the next process to adopt).
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { SERVICE_ARGS, SERVICE_HELP, errorText, serveUntilSignal, serviceCommon } from '@lcow/driver';
import { DEFAULT_CONTAINERD_ADDRESS } from './content.ts';
import { loadPins } from './pins.ts';
import { DEFAULT_ROOT, DEFAULT_SOCKET, SnapshotterServer } from './server.ts';

const USAGE = `usage: lcow containerd-snapshotter [--socket PATH] [--root DIR] [--containerd-address PATH]
                                   [--layout lcow|hcsshim] [--pins FILE] [--storage-opt lcow.KEY=VALUE]…

Serves containerd's snapshots API (a proxy plugin) on a unix socket. In containerd's config.toml:

  [proxy_plugins.lcow]
    type = "snapshot"
    address = "${DEFAULT_SOCKET}"

then \`ctr --snapshotter lcow …\`, or the CRI's snapshotter = "lcow".

  --socket PATH        the socket (default ${DEFAULT_SOCKET})
  --root DIR           the layers and the snapshot record (default ${DEFAULT_ROOT})
  --containerd-address PATH
                       containerd's socket, whose content store the fast path reads layer blobs
                       from when the CRI names them (default ${DEFAULT_CONTAINERD_ADDRESS})
  --no-fast-path       never read blobs from containerd: its applier extracts every layer
  --layout L           lcow (default) or hcsshim: hcsshim's layout and dmverity-vhd's settings, so
                       the root-hash labels equal a confidential-container policy's
  --pins FILE          JSON {"sha256:<diff id>": "<root hash>", …}: a pinned layer that hashes
                       otherwise is refused at commit and before any mount
  --storage-opt K=V    driver options, as lcow --storage-opt (repeatable)
  --no-verity          no dm-verity tree on committed layers (and no root-hash label)
${SERVICE_HELP}`;

function version(): string {
  const own = createRequire(import.meta.url)('../package.json') as { version: string };
  return `lcow-containerd-snapshotter ${own.version}`;
}

/** Runs the snapshotter; resolves with the exit status once it has stopped. */
export async function main(argv: string[]): Promise<number> {
  let values: {
    socket?: string;
    root?: string;
    'containerd-address'?: string;
    'no-fast-path'?: boolean;
    layout?: string;
    pins?: string;
    'storage-opt'?: string[];
    'no-verity'?: boolean;
    'metrics-address'?: string;
    'log-level'?: string;
    'log-format'?: string;
    version?: boolean;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        root: { type: 'string' },
        'containerd-address': { type: 'string' },
        'no-fast-path': { type: 'boolean' },
        layout: { type: 'string' },
        pins: { type: 'string' },
        'storage-opt': { type: 'string', multiple: true },
        'no-verity': { type: 'boolean' },
        ...SERVICE_ARGS,
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    process.stderr.write(`lcow: ERR_USAGE: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const log = serviceCommon(values, USAGE, version);
  if (typeof log === 'number') return log;
  const layout = values.layout ?? 'lcow';
  if (layout !== 'lcow' && layout !== 'hcsshim') {
    process.stderr.write(`lcow: ERR_USAGE: --layout ${JSON.stringify(layout)}: lcow or hcsshim\n`);
    return 2;
  }
  let server: SnapshotterServer;
  try {
    server = await SnapshotterServer.listen({
      socket: values.socket ?? DEFAULT_SOCKET,
      root: values.root ?? DEFAULT_ROOT,
      driverOptions: values['storage-opt'] ?? [],
      verity: !values['no-verity'],
      layout,
      ...(values.pins !== undefined ? { pins: await loadPins(values.pins) } : {}),
      containerdAddress: values['no-fast-path'] ? null : (values['containerd-address'] ?? DEFAULT_CONTAINERD_ADDRESS),
      log,
    });
  } catch (e) {
    process.stderr.write(`lcow: ${errorText(e)}\n`);
    return 1;
  }
  return serveUntilSignal(server, log, 'lcow containerd snapshotter', {
    address: values['metrics-address'],
    metrics: server.metrics,
  });
}
