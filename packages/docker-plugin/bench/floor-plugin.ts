// The floor of the graph-driver plugin protocol, for the docker bench: overlay2's own design (plain folders,
// one overlayfs mount per container) served as a plugin over the same HTTP-on-a-unix-socket protocol, with
// the same mount(2)/umount2(2) calls lcow makes. What dockerd + this takes beyond dockerd's in-process
// overlay2 is the price of being a plugin; what lcow takes beyond this is the price of ext4 layers in VHDs.
// Only what `docker load`, `docker run` and `docker create` call; layers hold no whiteouts (the bench's
// images have none). Not a driver to use: no locking beyond refcounts, no crash safety.
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mountFs, unmount } from '../../driver/src/backends/linux.ts';

async function body(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const c of req) text += String(c);
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

/** Serves the floor plugin on `socket` until `close()`. */
export async function startFloorPlugin(socket: string): Promise<{ close(): Promise<void> }> {
  let home = '';
  const refs = new Map<string, number>();
  const dir = (id: string): string => join(home, id);
  /** The layer's diff folder and those of its parents, top first. */
  const chain = async (id: string): Promise<string[]> => {
    const parent = await readFile(join(dir(id), 'parent'), 'utf8').catch(() => '');
    return [join(dir(id), 'diff'), ...(parent ? await chain(parent) : [])];
  };
  const make = async (id: string, parent: string): Promise<void> => {
    await mkdir(join(dir(id), 'diff'), { recursive: true });
    await mkdir(join(dir(id), 'work'));
    await mkdir(join(dir(id), 'merged'));
    await writeFile(join(dir(id), 'parent'), parent);
  };
  const calls: Record<string, (b: Record<string, unknown>, req: IncomingMessage) => Promise<unknown>> = {
    'Plugin.Activate': async () => ({ Implements: ['GraphDriver'] }),
    'GraphDriver.Init': async (b) => {
      home = String(b.Home);
      await mkdir(home, { recursive: true });
      return {};
    },
    'GraphDriver.Capabilities': async () => ({ Capabilities: { ReproducesExactDiffs: false } }),
    'GraphDriver.Create': async (b) => make(String(b.ID), String(b.Parent ?? '')).then(() => ({})),
    'GraphDriver.CreateReadWrite': async (b) => make(String(b.ID), String(b.Parent ?? '')).then(() => ({})),
    'GraphDriver.Exists': async (b) => ({ Exists: existsSync(dir(String(b.ID))) }),
    'GraphDriver.Status': async () => ({ Status: [['Floor', 'overlay over folders, as a plugin']] }),
    'GraphDriver.GetMetadata': async () => ({ Metadata: {} }),
    'GraphDriver.Cleanup': async () => ({}),
    'GraphDriver.Get': async (b) => {
      const id = String(b.ID);
      const merged = join(dir(id), 'merged');
      const n = refs.get(id) ?? 0;
      if (n === 0) {
        const [upper, ...lowers] = await chain(id);
        // A layer without parents is still mounted as an overlay (over an empty lower), as overlay2 does.
        if (lowers.length === 0) {
          await mkdir(join(home, '.empty'), { recursive: true });
          lowers.push(join(home, '.empty'));
        }
        mountFs('overlay', merged, 'overlay', [
          `lowerdir=${lowers.join(':')},upperdir=${upper},workdir=${join(dir(id), 'work')}`,
        ]);
      }
      refs.set(id, n + 1);
      return { Dir: merged };
    },
    'GraphDriver.Put': async (b) => {
      const id = String(b.ID);
      const n = (refs.get(id) ?? 1) - 1;
      if (n <= 0) {
        refs.delete(id);
        await unmount(join(dir(id), 'merged'));
      } else refs.set(id, n);
      return {};
    },
    'GraphDriver.Remove': async (b) => {
      const id = String(b.ID);
      if (refs.has(id)) await unmount(join(dir(id), 'merged')).catch(() => {});
      refs.delete(id);
      await rm(dir(id), { recursive: true, force: true });
      return {};
    },
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://plugin');
    const method = url.pathname.slice(1);
    const reply = (status: number, value: unknown): void =>
      void res
        .writeHead(status, { 'content-type': 'application/vnd.docker.plugins.v1+json' })
        .end(JSON.stringify(value));
    (async () => {
      if (method === 'GraphDriver.ApplyDiff') {
        const target = join(dir(url.searchParams.get('id') ?? ''), 'diff');
        const tar = execFile('tar', ['-x', '-C', target]);
        let size = 0;
        for await (const c of req) {
          size += (c as Buffer).length;
          tar.stdin!.write(c);
        }
        tar.stdin!.end();
        await new Promise((r, j) => tar.on('exit', (code) => (code === 0 ? r(null) : j(new Error(`tar ${code}`)))));
        return { Size: size };
      }
      const fn = calls[method];
      if (!fn) throw new Error(`${method}: not served by the floor plugin`);
      return fn(await body(req), req);
    })().then(
      (v) => reply(200, v),
      (e: unknown) => reply(500, { Err: String(e) }),
    );
  });
  await rm(socket, { force: true });
  await new Promise<void>((r) => server.listen(socket, r));
  return {
    close: async () => {
      await new Promise((r) => server.close(r));
      for (const id of refs.keys()) await unmount(join(dir(id), 'merged')).catch(() => {});
    },
  };
}
