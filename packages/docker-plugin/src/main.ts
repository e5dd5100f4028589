// `lcow-docker-plugin` (also `lcow docker-plugin`): serves the graph-driver plugin protocol until SIGTERM,
// SIGINT or SIGHUP, then shuts down cleanly (in-flight ApplyDiffs aborted, unions released).
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { SERVICE_ARGS, SERVICE_HELP, serveUntilSignal, serviceCommon } from '@lcow/driver';
import { PluginServer } from './server.ts';

export const DEFAULT_SOCKET = '/run/docker/plugins/lcow.sock';

const USAGE = `usage: lcow docker-plugin [--socket PATH] [--storage-opt lcow.KEY=VALUE]…

Serves Docker's graph-driver plugin protocol on a unix socket. dockerd finds a plugin named NAME at
/run/docker/plugins/NAME.sock and uses it with \`dockerd --experimental --storage-driver NAME\`.

  --socket PATH        the socket (default ${DEFAULT_SOCKET}: storage driver "lcow")
  --storage-opt K=V    driver options applied before dockerd's own --storage-opt (repeatable)
  --state FILE         where the last Init is kept for a restart while dockerd runs
                       (default: /run/lcow/docker-plugin/<hash of the socket>.init)
  --trace-calls        log every call too: its layer and how long it took
${SERVICE_HELP}`;

function version(): string {
  const own = createRequire(import.meta.url)('../package.json') as { version: string };
  return `lcow-docker-plugin ${own.version}`;
}

/** Runs the plugin; resolves with the exit status once it has stopped. */
export async function main(argv: string[]): Promise<number> {
  let values: {
    socket?: string;
    'storage-opt'?: string[];
    state?: string;
    'trace-calls'?: boolean;
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
        'storage-opt': { type: 'string', multiple: true },
        state: { type: 'string' },
        'trace-calls': { type: 'boolean' },
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
  const bad = (values['storage-opt'] ?? []).find((o) => !/^lcow\.[a-z]+=/i.test(o));
  if (bad) {
    process.stderr.write(`lcow: ERR_USAGE: --storage-opt ${JSON.stringify(bad)}: expected lcow.KEY=VALUE\n`);
    return 2;
  }
  let server: PluginServer;
  try {
    server = await PluginServer.listen({
      socket: values.socket ?? DEFAULT_SOCKET,
      defaults: values['storage-opt'],
      ...(values.state ? { stateFile: values.state } : {}),
      traceCalls: values['trace-calls'] ?? false,
      log,
    });
  } catch (e) {
    const err = e as { code?: string; message?: string };
    process.stderr.write(`lcow: ${err.code?.startsWith('ERR_') ? err.code : 'ERR_INTERNAL'}: ${err.message}\n`);
    return 1;
  }
  return serveUntilSignal(server, log, 'lcow docker plugin', {
    address: values['metrics-address'],
    metrics: server.metrics,
  });
}
