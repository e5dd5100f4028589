// `lcow-docker-plugin` (also `lcow docker-plugin`): serves the graph-driver plugin protocol until SIGTERM,
// SIGINT or SIGHUP, then shuts down cleanly (in-flight ApplyDiffs aborted, unions released).
import { parseArgs } from 'node:util';
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
  -h, --help           this text`;

/** Runs the plugin; resolves with the exit status once it has stopped. */
export async function main(argv: string[]): Promise<number> {
  let values: { socket?: string; 'storage-opt'?: string[]; state?: string; 'trace-calls'?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        'storage-opt': { type: 'string', multiple: true },
        state: { type: 'string' },
        'trace-calls': { type: 'boolean' },
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
    });
  } catch (e) {
    const err = e as { code?: string; message?: string };
    process.stderr.write(`lcow: ${err.code?.startsWith('ERR_') ? err.code : 'ERR_INTERNAL'}: ${err.message}\n`);
    return 1;
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  await server.close();
  return signal === 'SIGTERM' ? 0 : 128 + ({ SIGINT: 2, SIGHUP: 1 } as Record<string, number>)[signal]!;
}
