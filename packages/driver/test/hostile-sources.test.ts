// Hostile sources of issue #28 through the `lcow` command, in a child process with a time and a memory
// limit and a canary beside the data root (hostile-kit.ts): a converter child that stops early while the
// command still feeds it, registries and proxies that misbehave (fake servers in this test), images that name
// layer ids already in the data root or far more layers than a chain may have, image folders that point
// outside, and 20 processes reading one layer at once.
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { imageConfig, makeTar, ociManifest, sha } from '@lcow/testkit';
import {
  canaryIntact,
  dir,
  dockerArchive,
  failed,
  file,
  host,
  layers,
  lcow,
  lcowArgs,
  leftovers,
  ok,
  root,
  useHostileRoots,
} from './hostile-kit.ts';

useHostileRoots('lcow-hostile-sources-');

/** Holds a data root's lock on one layer until killed, as another lcow process would (layerstore's test child). */
const LAYER_LOCK_CHILD = join(import.meta.dirname, '../../layerstore/test/layer-lock-child.ts');

const servers: Server[] = [];
const sockets = new Set<Socket>();
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** A server on 127.0.0.1, closed (its connections cut) after the file. */
async function listen(s: Server): Promise<number> {
  servers.push(s);
  s.on('connection', (c: Socket) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

/** 8 MiB of a good file, then a header block of garbage, then zeros for as long as anyone reads. */
async function* badMidLayer(): AsyncGenerator<Uint8Array> {
  yield makeTar([{ path: 'good', body: Buffer.alloc(8 << 20, 1) }], { end: false });
  yield Buffer.alloc(512, 0x41);
  const zeros = Buffer.alloc(1 << 20);
  for (;;) yield zeros;
}

describe('a converter that stops early is heard at once', () => {
  it('apply -i - of a stream refused at its first entry, and at a bad header mid-layer, while more keeps coming', async () => {
    ok(await lcow(['create', 'L']));
    async function* escapeFirst(): AsyncGenerator<Uint8Array> {
      yield makeTar([{ path: '../escape', body: 'x' }], { end: false });
      const zeros = Buffer.alloc(1 << 20);
      for (;;) yield zeros;
    }
    const first = await lcow(['apply', 'L', '-i', '-'], { input: escapeFirst(), timeoutMs: 30_000 });
    failed(first, 'ERR_TAR_FORMAT', 'layer L', '../escape');
    const mid = await lcow(['apply', 'L', '-i', '-'], { input: badMidLayer(), timeoutMs: 30_000 });
    failed(mid, 'ERR_TAR_FORMAT', 'layer L');
    expect((await layers()).map((l) => [l.id, l.kind])).toEqual([['L', 'empty']]);
    expect(await leftovers()).toEqual([]);
    await canaryIntact();
  });

  it('import from a registry whose layer is refused early: the error at once, the download stopped, nothing half-made', async () => {
    const tar = makeTar([
      { path: '../escape', body: 'x' },
      { path: 'big', body: Buffer.alloc(64 << 20, 3) },
    ]);
    const config = imageConfig([tar]);
    const manifest = ociManifest(config, [tar]);
    let sent = 0;
    const port = await listen(
      createServer((req, res) => {
        const u = req.url ?? '';
        if (u === '/v2/') return res.writeHead(200).end('{}');
        if (u.includes('/manifests/'))
          return res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(manifest);
        if (u.includes(sha(config).slice(7))) return res.writeHead(200).end(config);
        // The layer, slowly enough that the refusal comes long before its end.
        res.writeHead(200, { 'content-length': String(tar.length) });
        let at = 0;
        const t = setInterval(() => {
          if (res.destroyed || at >= tar.length) return clearInterval(t);
          res.write(tar.subarray(at, at + (256 << 10)));
          at += 256 << 10;
          sent = at;
        }, 50);
      }),
    );
    const r = await lcow(['import', `docker://127.0.0.1:${port}/evil/img:v1`, '--tls-verify=false', '--no-sandbox'], {
      timeoutMs: 30_000,
    });
    failed(r, 'ERR_TAR_FORMAT', '../escape');
    expect(sent).toBeLessThan(tar.length / 2);
    expect(await layers()).toEqual([]);
    expect(await leftovers()).toEqual([]);
  });
});

describe('limits before work, and nothing an image says removes what is there', () => {
  it('an image of 4 000 layers is refused before a byte is converted', async () => {
    const tiny = Array.from({ length: 4000 }, (_, i) => makeTar([{ path: `f${i}`, body: `${i}` }]));
    const image = await file('deep.tar', dockerArchive(tiny));
    const r = await lcow(['import', image, '--no-sandbox'], { timeoutMs: 30_000 });
    failed(r, 'ERR_CHAIN_TOO_DEEP', '4000 layers');
    expect(r.seconds).toBeLessThan(20);
    expect(await layers()).toEqual([]);
    expect(await leftovers()).toEqual([]);
  });

  it('an image naming a layer already in the data root as its own: refused, that layer untouched; a proven one is reused', async () => {
    const tar = makeTar([{ path: 'etc/os-release', body: 'ID=image\n' }]);
    const image = await file('img.tar', dockerArchive([tar]));
    const chainId = sha(tar).slice(7); // the first layer's chain id is its diff id
    // A layer of that id made some other way, with other content.
    ok(await lcow(['create', chainId]));
    const mine = await file('mine.tar', makeTar([{ path: 'precious', body: 'mine\n' }]));
    ok(await lcow(['apply', chainId, '-i', mine]));
    const before = await readFile(join(root, chainId, 'layer.vhd'));
    const r = await lcow(['import', image, '--no-sandbox']);
    failed(r, 'ERR_EXISTS', chainId, 'not proven');
    expect(await readFile(join(root, chainId, 'layer.vhd'))).toEqual(before);
    expect((await lcow(['cat', chainId, 'precious'])).out).toBe('mine\n');
    // Made room for it, the import makes the layer and records its proof; a second import reuses it.
    ok(await lcow(['rm', chainId]));
    ok(await lcow(['import', image, '--no-sandbox', '--json']));
    const again = await lcow(['import', image, '--no-sandbox', '--json']);
    ok(again);
    expect(JSON.parse(again.out)).toMatchObject({ reused: [chainId] });
    expect((await readFile(join(root, chainId, 'layer.vhd.diffid'), 'utf8')).trim()).toBe(sha(tar));
    // An apply over the layer is not what the proof was about: the proof goes, and a later import stops.
    ok(await lcow(['apply', chainId, '-i', mine]));
    failed(await lcow(['import', image, '--no-sandbox']), 'ERR_EXISTS', chainId);
    await canaryIntact();
  });

  it('a docker-save folder naming files outside itself: refused, the outside file never read into a layer or a message', async () => {
    const base = join(dir.path, 'folder-case');
    const folder = join(base, 'image');
    await mkdir(join(base, 'outside'), { recursive: true });
    const planted = makeTar([{ path: 'planted', body: 'SECRET-PLANTED\n' }]);
    await writeFile(join(base, 'outside', 'layer.tar'), planted);
    await writeFile(
      join(base, 'outside', 'config.json'),
      JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [sha(planted)] } }),
    );
    await mkdir(folder);
    await writeFile(
      join(folder, 'manifest.json'),
      JSON.stringify([{ Config: '../outside/config.json', Layers: ['../outside/layer.tar'] }]),
    );
    const r = await lcow(['import', folder, '--no-sandbox']);
    failed(r, 'ERR_INVALID_IMAGE', 'leaves the folder');
    expect(r.stderr).not.toContain('SECRET');
    expect(await layers()).toEqual([]);
    await canaryIntact();
  });
});

describe('what a server says, and servers that never answer', () => {
  it("a registry's forged, escape-laden, megabyte error reaches stderr as one quoted, escaped, bounded line", async () => {
    const forged = `\u001b[2J\u001b[H\rlcow: import OK\n${'A'.repeat(20_000)}`;
    const port = await listen(
      createServer((req, res) => {
        if (req.url === '/v2/') return res.writeHead(200).end('{}');
        res
          .writeHead(404, { 'content-type': 'application/json' })
          .end(JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: forged }] }));
      }),
    );
    const r = await lcow(['import', `docker://127.0.0.1:${port}/x/y:z`, '--tls-verify=false']);
    failed(r, 'ERR_IMAGE_NOT_FOUND');
    // eslint-disable-next-line no-control-regex
    expect(r.stderr.slice(0, -1)).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(r.stderr).toContain('"NAME_UNKNOWN: \\x1b[2J\\x1b[H\\rlcow: import OK\\nAAA');
    expect(r.stderr.length).toBeLessThan(1000);
  });

  it('an HTTPS proxy that never answers CONNECT: SIGTERM ends the command at once (status 143, ERR_ABORTED)', async () => {
    // The proxy tells when the command is at its CONNECT (signal handlers long in place), never answering.
    let connected!: () => void;
    const reached = new Promise<void>((r) => (connected = r));
    const port = await listen(
      createNetServer((c) => {
        c.on('error', () => {});
        c.once('data', () => connected());
      }) as unknown as Server,
    );
    const child = spawn(process.execPath, lcowArgs(['import', 'docker://registry.invalid/x/y:z']), {
      env: { ...process.env, HTTPS_PROXY: `http://127.0.0.1:${port}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await reached;
    await new Promise((r) => setTimeout(r, 500));
    const sent = performance.now();
    child.kill('SIGTERM');
    const status = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(null);
      }, 10_000);
      child.on('exit', (code) => {
        clearTimeout(t);
        resolve(code);
      });
    });
    expect(status, stderr).toBe(143);
    expect(performance.now() - sent).toBeLessThan(5000);
    expect(stderr).toMatch(/^lcow: ERR_ABORTED: /);
  });

  it('a registry asking for a login with --authfile a FIFO: refused at once, never waited on', async () => {
    const port = await listen(
      createServer((_q, res) => res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end()),
    );
    const fifo = join(dir.path, 'auth.fifo');
    await new Promise<void>((resolve, reject) =>
      spawn('mkfifo', [fifo]).on('exit', (c) => (c === 0 ? resolve() : reject(new Error(`mkfifo: ${c}`)))),
    );
    const r = await lcow(['import', `docker://127.0.0.1:${port}/x/y:z`, '--tls-verify=false', '--authfile', fifo], {
      timeoutMs: 20_000,
    });
    failed(r, 'ERR_UNAUTHORIZED', 'not a regular file');
  });
});

describe('one layer read by many processes at once', () => {
  it.runIf(host)(
    '20 `lcow cat` of one layer from 20 processes, twice: every one sees the file',
    async () => {
      const tar = await file('cat.tar', makeTar([{ path: 'etc/motd', body: 'shared layer\n' }]));
      ok(await lcow(['create', 'S']));
      ok(await lcow(['apply', 'S', '-i', tar]));
      for (let round = 0; round < 2; round++) {
        const runs = await Promise.all(
          Array.from({ length: 20 }, () => lcow(['cat', 'S', 'etc/motd'], { timeoutMs: 180_000 })),
        );
        for (const r of runs) {
          expect(r.stderr).toBe('');
          expect(r.out).toBe('shared layer\n');
        }
      }
      ok(await lcow(['rm', 'S']));
      expect(await leftovers()).toEqual([]);
    },
    600_000,
  );
});

describe('a union is let go under the lock that makes one', () => {
  it('put waits while another process holds the layer (its get sees the union whole, never half gone)', async () => {
    const { LcowDriver } = await import('../src/index.ts');
    const d = await LcowDriver.init(root, [`lcow.backend=${host ? 'host' : 'inproc'}`]);
    try {
      await d.create('P', null);
      await d.applyDiff('P', null, Readable.from([Buffer.from(makeTar([{ path: 'f', body: 'x' }]))]));
      const fs = await d.get('P');
      // Another process takes the lock a get or an apply of P takes (as a second `lcow cat` would).
      const holder = spawn(
        process.execPath,
        ['--conditions=@lcow/source', '--import', 'tsx', LAYER_LOCK_CHILD, root, 'P'],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      try {
        await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
        let done = false;
        const put = d.put('P').then(() => (done = true));
        await new Promise((r) => setTimeout(r, 1500));
        expect(done, 'put finished while another process held the layer').toBe(false);
        expect((await fs.readFile('f')).toString()).toBe('x');
        holder.kill('SIGKILL');
        await put;
      } finally {
        holder.kill('SIGKILL');
      }
    } finally {
      await d.close();
    }
  }, 60_000);
});
