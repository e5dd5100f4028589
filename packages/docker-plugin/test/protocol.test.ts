// The plugin protocol call by call, as dockerd makes the calls: the answers' shapes, the errors' form,
// streamed tars both ways, concurrency, shutdown with an ApplyDiff in flight, and a restart while the
// unions the previous process mounted are still there.
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, makeTar, rootWithLoop, run, tempDir } from '@lcow/testkit';
import { PluginServer } from '../src/index.ts';
import { applyDiff, call, diff, send, startPlugin } from './client.ts';

const host = process.platform === 'linux' && rootWithLoop();
const backend = host ? 'host' : 'inproc';

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-plugin-');
});
afterAll(() => dir?.cleanup());

const id = (s: string): string => createHash('sha256').update(s).digest('hex');
const BASE = makeTar([
  { path: 'etc/', type: 'dir' },
  { path: 'etc/os-release', body: 'ID=lcow-plugin\n' },
  { path: 'bin/', type: 'dir' },
  { path: 'bin/tool', body: 'x'.repeat(5000), mode: 0o755 },
]);
const UPPER = makeTar([
  { path: 'etc/', type: 'dir' },
  { path: 'etc/.wh.os-release', body: '' },
  { path: 'etc/new', body: 'new\n' },
]);

describe(`the plugin protocol (${backend} backend)`, () => {
  let server: PluginServer;
  let socket: string;
  let home: string;
  beforeAll(async () => {
    socket = join(dir.path, 'lcow-test.sock');
    home = join(dir.path, 'home');
    server = await PluginServer.listen({
      socket,
      defaults: [`lcow.backend=${backend}`],
      log: () => {},
      stateFile: join(dir.path, 'plugin.init'),
    });
  });
  afterAll(() => server?.close());

  it('Activate, then Init: refuses calls before Init, user namespace maps and bad options, in the Err form', async () => {
    expect(await call(socket, 'Plugin.Activate')).toEqual({ status: 200, body: { Implements: ['GraphDriver'] } });
    const early = await call(socket, 'GraphDriver.Exists', { ID: 'x' });
    expect(early).toEqual({ status: 500, body: { Err: 'ERR_NOT_INITIALISED: GraphDriver.Init has not been called' } });
    const userns = await call(socket, 'GraphDriver.Init', {
      Home: home,
      Opts: [],
      UIDMaps: [{ ContainerID: 0, HostID: 100000, Size: 65536 }],
      GIDMaps: [{ ContainerID: 0, HostID: 100000, Size: 65536 }],
    });
    expect(userns.status).toBe(500);
    expect(userns.body.Err).toMatch(/^ERR_UNSUPPORTED: user namespace remapping/);
    const bad = await call(socket, 'GraphDriver.Init', { Home: home, Opts: ['lcow.sandboxsize=5'] });
    expect(bad.body.Err).toMatch(/^ERR_[A-Z_]+: .*lcow.sandboxsize.*cannot be less than 20/);
    expect(await call(socket, 'GraphDriver.Init', { Home: home, Opts: ['lcow.sandboxsize=20'] })).toEqual({
      status: 200,
      body: {},
    });
    expect((await call(socket, 'GraphDriver.Capabilities')).body).toEqual({
      Capabilities: { ReproducesExactDiffs: false },
    });
  });

  it('Create, ApplyDiff (streamed), Exists, GetMetadata, Changes, DiffSize, Diff, Status', async () => {
    const base = id('base');
    const upper = id('upper');
    expect((await call(socket, 'GraphDriver.Create', { ID: base })).status).toBe(200);
    // The tar arrives in small pieces, as it does from a registry pull.
    const body = new PassThrough();
    const sent = applyDiff(socket, base, '', body);
    for (let at = 0; at < BASE.length; at += 700) body.write(BASE.subarray(at, at + 700));
    body.end();
    expect(await sent).toEqual({ status: 200, body: { Size: 5000 + 15 } });
    expect((await call(socket, 'GraphDriver.Create', { ID: upper, Parent: base })).status).toBe(200);
    expect((await applyDiff(socket, upper, base, UPPER)).body).toEqual({ Size: 4 });
    expect((await call(socket, 'GraphDriver.Exists', { ID: upper })).body).toEqual({ Exists: true });
    expect((await call(socket, 'GraphDriver.Exists', { ID: id('none') })).body).toEqual({ Exists: false });
    expect((await call(socket, 'GraphDriver.GetMetadata', { ID: upper })).body).toEqual({
      Metadata: { dir: join(home, upper) },
    });
    expect((await call(socket, 'GraphDriver.Changes', { ID: upper, Parent: base })).body).toEqual({
      Changes: [
        { Path: '/etc', Kind: 0 },
        { Path: '/etc/new', Kind: 1 },
        { Path: '/etc/os-release', Kind: 2 },
      ],
    });
    expect((await call(socket, 'GraphDriver.DiffSize', { ID: upper, Parent: base })).body).toEqual({ Size: 4 });
    // Diff → ApplyDiff onto a fresh child of the same parent gives the same changes.
    const tar = await diff(socket, upper, base);
    expect(tar.status).toBe(200);
    expect(tar.bytes.subarray(257, 262).toString()).toBe('ustar');
    const copy = id('copy');
    await call(socket, 'GraphDriver.Create', { ID: copy, Parent: base });
    expect((await applyDiff(socket, copy, base, tar.bytes)).body).toEqual({ Size: 4 });
    expect((await call(socket, 'GraphDriver.Changes', { ID: copy, Parent: base })).body).toEqual(
      (await call(socket, 'GraphDriver.Changes', { ID: upper, Parent: base })).body,
    );
    const status = (await call(socket, 'GraphDriver.Status')).body.Status as [string, string][];
    expect(Object.fromEntries(status)).toMatchObject({ Backend: backend, 'Data root': home, Layers: '3' });
    expect(Object.fromEntries(status)).toMatchObject({
      Mounted: '0',
      Plugin: expect.stringMatching(/^lcow-docker-plugin /),
    });
    // Every call counted by method, failures by code, the bytes applied; a path dockerd never calls is `other`.
    await call(socket, 'GraphDriver.NoSuchMethod');
    const metrics = await server.metrics.render();
    expect(metrics).toMatch(/^lcow_plugin_calls_total\{method="GraphDriver.Create"\} [2-9]$/m);
    expect(metrics).toMatch(/^lcow_plugin_call_seconds_count\{method="GraphDriver.ApplyDiff"\} [1-9]$/m);
    expect(metrics).toMatch(/^lcow_plugin_applied_bytes_total [1-9]\d*$/m);
    expect(metrics).toMatch(/^lcow_plugin_errors_total\{method="GraphDriver.Exists",code="ERR_NOT_INITIALISED"\} 1$/m);
    expect(metrics).toMatch(/^lcow_plugin_calls_total\{method="other"\} 1$/m);
    expect(metrics).toMatch(/^lcow_layers 3$/m);
    expect(metrics).not.toContain('NoSuchMethod');
    // dockerd restarted after a crash (no Cleanup) sends the same Init: the open driver is kept.
    expect((await call(socket, 'GraphDriver.Init', { Home: home, Opts: ['lcow.sandboxsize=20'] })).status).toBe(200);
    expect((await call(socket, 'GraphDriver.Exists', { ID: upper })).body).toEqual({ Exists: true });
  });

  it.runIf(host)(
    'CreateReadWrite, Get (the union on this host), writes, Put, Remove; a missing Remove is fine',
    async () => {
      const base = id('base');
      const init = id('ctr-init');
      const ctr = id('ctr');
      // What dockerd does for `docker run`: an -init layer, then the container's own on top.
      expect(
        (await call(socket, 'GraphDriver.CreateReadWrite', { ID: `${init}-init`, Parent: base, StorageOpt: {} }))
          .status,
      ).toBe(200);
      const initDir = (await call(socket, 'GraphDriver.Get', { ID: `${init}-init` })).body.Dir as string;
      await writeFile(join(initDir, 'etc', 'hostname'), 'box\n');
      expect((await call(socket, 'GraphDriver.Put', { ID: `${init}-init` })).status).toBe(200);
      await call(socket, 'GraphDriver.CreateReadWrite', {
        ID: ctr,
        Parent: `${init}-init`,
        StorageOpt: { 'lcow.sandboxsize': '25' },
      });
      const got = await call(socket, 'GraphDriver.Get', { ID: ctr, MountLabel: '' });
      const root = got.body.Dir as string;
      expect(await readFile(join(root, 'etc', 'os-release'), 'utf8')).toBe('ID=lcow-plugin\n');
      expect(await readFile(join(root, 'etc', 'hostname'), 'utf8')).toBe('box\n');
      expect((await stat(join(root, 'bin', 'tool'))).mode & 0o777).toBe(0o755);
      await writeFile(join(root, 'written'), 'by the container\n');
      // A second Get of the same layer is the same union, counted.
      expect((await call(socket, 'GraphDriver.Get', { ID: ctr })).body.Dir).toBe(root);
      expect((await call(socket, 'GraphDriver.Put', { ID: ctr })).status).toBe(200);
      expect((await call(socket, 'GraphDriver.Put', { ID: ctr })).status).toBe(200);
      // A Put without its Get (dockerd after a restart of its own): nil, as the original answered.
      expect((await call(socket, 'GraphDriver.Put', { ID: ctr })).status).toBe(200);
      const changes = (await call(socket, 'GraphDriver.Changes', { ID: ctr, Parent: `${init}-init` })).body.Changes;
      expect(changes).toEqual([{ Path: '/written', Kind: 1 }]);
      expect((await call(socket, 'GraphDriver.Remove', { ID: ctr })).status).toBe(200);
      expect((await call(socket, 'GraphDriver.Remove', { ID: `${init}-init` })).status).toBe(200);
      expect((await call(socket, 'GraphDriver.Remove', { ID: ctr })).status).toBe(200); // already gone: not an error
      // Gone when Remove answers (renamed, durably); the folders' deletion finishes just after.
      const left = async (): Promise<string[]> =>
        (await readdir(home)).filter((f) => f.startsWith(ctr) || f.startsWith(init));
      expect((await left()).every((f) => f.endsWith('-removing'))).toBe(true);
      expect(await eventually(async () => (await left()).length === 0, 10_000), (await left()).join(' ')).toBe(true);
    },
  );

  it('errors: a missing layer, a bad id, an unknown call, a body that is not JSON, a GET', async () => {
    const missing = await call(socket, 'GraphDriver.Get', { ID: id('missing') });
    expect(missing.status).toBe(500);
    expect(missing.body.Err).toMatch(/^ERR_LAYER_NOT_FOUND: layer [0-9a-f]{64}: not found/);
    expect((await call(socket, 'GraphDriver.Create', { ID: '../escape' })).body.Err).toMatch(/^ERR_INVALID_LAYER_ID: /);
    expect((await call(socket, 'GraphDriver.Mount', { ID: 'x' })).body.Err).toMatch(
      /^ERR_NOT_FOUND: GraphDriver.Mount/,
    );
    const notJson = await send(socket, '/GraphDriver.Exists', '{nope');
    expect([notJson.status, JSON.parse(notJson.bytes.toString()).Err]).toEqual([
      500,
      'ERR_INVALID_ARGUMENT: request body is not JSON',
    ]);
    expect((await send(socket, '/GraphDriver.Status', '', 'GET')).status).toBe(500);
    const badTar = await applyDiff(socket, id('base'), '', makeTar([{ path: '../x', body: 'y' }]));
    expect(badTar.body.Err).toMatch(/^ERR_(TAR_FORMAT|LAYER_EXISTS|[A-Z_]+): /);
    const d = await diff(socket, id('missing'));
    expect(d.status).toBe(500);
    expect(JSON.parse(d.bytes.toString()).Err).toMatch(/^ERR_LAYER_NOT_FOUND/);
  });

  it('ApplyDiff refused at its first entry while the client keeps sending: the Err at once, nothing left, the next call served', async () => {
    await call(socket, 'GraphDriver.Create', { ID: 'refused' });
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent === 0) this.push(Buffer.from(makeTar([{ path: '../escape', body: 'x' }], { end: false })));
        else this.push(Buffer.alloc(1 << 20));
        sent++;
      },
    });
    const started = performance.now();
    const answer = await applyDiff(socket, 'refused', '', body);
    body.destroy();
    expect(answer.status).toBe(500);
    expect(String(answer.body.Err)).toMatch(/^ERR_TAR_FORMAT: layer refused: .*\.\.\/escape/);
    expect(performance.now() - started).toBeLessThan(15_000);
    expect(sent).toBeLessThan(2048); // the client was not read to the end of its (endless) body
    expect(await readdir(join(home, 'refused'))).toEqual(['layerchain.json']);
    expect((await call(socket, 'GraphDriver.Exists', { ID: 'refused' })).body).toEqual({ Exists: true });
    await call(socket, 'GraphDriver.Remove', { ID: 'refused' });
  });

  it('parallel pulls and parallel container starts, as dockerd makes them', async () => {
    const layers = Array.from({ length: 8 }, (_, i) => id(`par${i}`));
    await Promise.all(layers.map((l) => call(socket, 'GraphDriver.Create', { ID: l, Parent: id('base') })));
    const tars = layers.map((_, i) => makeTar([{ path: `file${i}`, body: Buffer.alloc(100_000 + i, i) }]));
    const sizes = await Promise.all(layers.map((l, i) => applyDiff(socket, l, id('base'), tars[i]!)));
    expect(sizes.map((s) => s.body.Size)).toEqual(layers.map((_, i) => 100_000 + i));
    if (!host) return;
    const ctrs = layers.map((l) => `${l.slice(0, 60)}ctr`);
    await Promise.all(ctrs.map((c, i) => call(socket, 'GraphDriver.CreateReadWrite', { ID: c, Parent: layers[i] })));
    const dirs = await Promise.all(ctrs.map((c) => call(socket, 'GraphDriver.Get', { ID: c })));
    for (const [i, d] of dirs.entries())
      expect((await stat(join(d.body.Dir as string, `file${i}`))).size).toBe(100_000 + i);
    await Promise.all(ctrs.map((c) => call(socket, 'GraphDriver.Put', { ID: c })));
    const removed = await Promise.all([...ctrs, ...layers].map((c) => call(socket, 'GraphDriver.Remove', { ID: c })));
    // A layer is removed once its child container is gone; order among the parallel calls decides.
    for (const r of removed) expect([200, 500]).toContain(r.status);
    for (const l of layers) await call(socket, 'GraphDriver.Remove', { ID: l });
    expect((await readdir(home)).filter((f) => layers.includes(f))).toEqual([]);
  });
});

describe('the plugin holds its defences', () => {
  it('Init and Cleanup finish interrupted removals and abandoned temporary files, as `lcow cleanup` does', async () => {
    const socket = join(dir.path, 'cleanup.sock');
    const home = join(dir.path, 'cleanup-home');
    const server = await PluginServer.listen({
      socket,
      defaults: [`lcow.backend=${backend}`],
      log: () => {},
      stateFile: null,
    });
    try {
      const leftovers = async (): Promise<void> => {
        await mkdir(join(home, `${id('gone')}-removing`, 'deep'), { recursive: true });
        await writeFile(join(home, `${id('gone')}-removing`, 'deep', 'layer.vhd'), 'x');
      };
      await mkdir(home, { recursive: true });
      await leftovers();
      expect((await call(socket, 'GraphDriver.Init', { Home: home, Opts: [] })).status).toBe(200);
      expect((await readdir(home)).filter((f) => f.endsWith('-removing'))).toEqual([]);
      await leftovers();
      expect((await call(socket, 'GraphDriver.Cleanup')).status).toBe(200);
      expect((await readdir(home)).filter((f) => f.endsWith('-removing'))).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('--trace-calls: one line per call with its layer and duration; a hostile id cannot forge a log line', async () => {
    const socket = join(dir.path, 'trace.sock');
    const lines: string[] = [];
    const server = await PluginServer.listen({ socket, log: (l) => lines.push(l), stateFile: null, traceCalls: true });
    try {
      expect((await call(socket, 'Plugin.Activate')).status).toBe(200);
      const forged = 'x\nlcow docker plugin: call GraphDriver.Remove everything 0.0 ms';
      expect((await call(socket, 'GraphDriver.Exists', { ID: forged })).status).toBe(500); // no Init yet
      const traced = lines.filter((l) => l.includes(' call '));
      expect(traced).toHaveLength(2);
      expect(traced[0]).toMatch(/^lcow docker plugin: call Plugin\.Activate - [\d.]+ ms$/);
      expect(traced[1]).toMatch(/^lcow docker plugin: call GraphDriver\.Exists "x\\nlcow .*" [\d.]+ ms \(failed\)$/);
      expect(lines.every((l) => !l.includes('\n'))).toBe(true);
    } finally {
      await server.close();
    }
  });

  it('the socket is 0660 and a peer that is not root cannot connect', async () => {
    const socket = join(dir.path, 'mode.sock');
    const server = await PluginServer.listen({ socket, log: () => {}, stateFile: null });
    try {
      expect((await stat(socket)).mode & 0o777).toBe(0o660);
      if (process.getuid?.() !== 0) return;
      // The kernel checks the socket's mode on connect: nobody (65534, no groups) is refused.
      const probe = `require('net').connect(${JSON.stringify(socket)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(0)})`;
      const out = await run('setpriv', [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        '-e',
        probe,
      ]);
      expect(out.trim()).toBe('EACCES');
    } finally {
      await server.close();
    }
  });

  it.runIf(host)('Remove of a layer a container still uses answers an error, and the layer stays', async () => {
    const socket = join(dir.path, 'busy.sock');
    const home = join(dir.path, 'busy-home');
    const server = await PluginServer.listen({
      socket,
      defaults: ['lcow.backend=host'],
      log: () => {},
      stateFile: null,
    });
    try {
      await call(socket, 'GraphDriver.Init', { Home: home, Opts: [] });
      await call(socket, 'GraphDriver.Create', { ID: id('busy-img') });
      expect((await applyDiff(socket, id('busy-img'), '', BASE)).status).toBe(200);
      await call(socket, 'GraphDriver.CreateReadWrite', { ID: id('busy-box'), Parent: id('busy-img') });
      const root = (await call(socket, 'GraphDriver.Get', { ID: id('busy-box') })).body.Dir as string;
      // The image layer under the running container: refused, and dockerd hears it (it would forget the layer).
      const r = await call(socket, 'GraphDriver.Remove', { ID: id('busy-img') });
      expect(r.status).toBe(500);
      expect(r.body.Err).toMatch(/^ERR_LAYER_BUSY: /);
      expect((await call(socket, 'GraphDriver.Exists', { ID: id('busy-img') })).body).toEqual({ Exists: true });
      expect(await readFile(join(root, 'etc', 'os-release'), 'utf8')).toBe('ID=lcow-plugin\n');
      expect((await call(socket, 'GraphDriver.Put', { ID: id('busy-box') })).status).toBe(200);
      expect((await call(socket, 'GraphDriver.Remove', { ID: id('busy-box') })).status).toBe(200);
      expect((await call(socket, 'GraphDriver.Remove', { ID: id('busy-img') })).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});

/** The plugin command in a child process on `socket`, with its state file beside it. */
function startPluginOn(socket: string): Promise<ChildProcess> {
  return startPlugin(['--socket', socket, '--storage-opt', `lcow.backend=${backend}`, '--state', `${socket}.init`]);
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c))));
}

describe('the plugin process', () => {
  it('SIGTERM with an ApplyDiff in flight: the call fails, nothing is committed, the socket is gone, exit 0', async () => {
    const socket = join(dir.path, 'term.sock');
    const home = join(dir.path, 'term-home');
    const child = await startPluginOn(socket);
    expect((await call(socket, 'GraphDriver.Init', { Home: home, Opts: [] })).status).toBe(200);
    await call(socket, 'GraphDriver.Create', { ID: 'slow' });
    const body = new PassThrough();
    const pending = applyDiff(socket, 'slow', '', body).catch((e: unknown) => ({ status: -1, body: { e } }));
    body.write(makeTar([{ path: 'a', body: Buffer.alloc(1 << 20, 1) }], { end: false }));
    await new Promise((r) => setTimeout(r, 500));
    child.kill('SIGTERM');
    expect(await exited(child)).toBe(0);
    body.destroy();
    expect((await pending).status).not.toBe(200);
    await expect(stat(socket)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(join(home, 'slow')), 'what the stop left').toEqual(['layerchain.json']);
  }, 600_000);

  it.runIf(host)(
    'a restart while dockerd keeps running: the new process puts and removes what the old one mounted',
    async () => {
      const socket = join(dir.path, 'restart.sock');
      const home = join(dir.path, 'restart-home');
      const first = await startPluginOn(socket);
      await call(socket, 'GraphDriver.Init', { Home: home, Opts: [] });
      await call(socket, 'GraphDriver.Create', { ID: 'img' });
      await applyDiff(socket, 'img', '', BASE);
      await call(socket, 'GraphDriver.CreateReadWrite', { ID: 'box', Parent: 'img' });
      const root = (await call(socket, 'GraphDriver.Get', { ID: 'box' })).body.Dir as string;
      first.kill('SIGKILL'); // no chance to release anything
      await exited(first);
      expect(await readFile(join(root, 'etc', 'os-release'), 'utf8')).toBe('ID=lcow-plugin\n'); // the container keeps its root
      const second = await startPluginOn(socket); // the stale socket file is replaced
      try {
        // dockerd sends no new Init: the saved one is in force.
        expect((await call(socket, 'GraphDriver.Exists', { ID: 'box' })).body).toEqual({ Exists: true });
        expect((await call(socket, 'GraphDriver.Put', { ID: 'box' })).status).toBe(200);
        expect((await call(socket, 'GraphDriver.Remove', { ID: 'box' })).status).toBe(200);
        expect((await call(socket, 'GraphDriver.Remove', { ID: 'img' })).status).toBe(200);
      } finally {
        second.kill('SIGTERM');
        expect(await exited(second)).toBe(0);
      }
    },
    120_000,
  );
});
