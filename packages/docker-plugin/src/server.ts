// The plugin server: dockerd's graph-driver calls mapped onto one LcowDriver, opened by `GraphDriver.Init`
// with dockerd's home folder and storage options. Tars stream in both directions; nothing holds a layer.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileDurable } from '@lcow/durable';
import {
  LcowDriver,
  Metrics,
  describeError,
  driverGauges,
  errorText,
  parseDriverOptions,
  serviceLog,
  type ServiceLog,
} from '@lcow/driver';
import { PluginError } from './errors.ts';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
import {
  ChangeKind,
  MAX_JSON_BODY,
  PLUGIN_MEDIA_TYPE,
  type DriverRequest,
  type DriverResponse,
  type InitRequest,
} from './protocol.ts';

/** Options of {@link PluginServer.listen}. */
/** Every method dockerd calls: the values of the `method` label (any other path counts as `other`). */
const METHODS = new Set([
  'Plugin.Activate',
  'GraphDriver.ApplyDiff',
  'GraphDriver.Diff',
  'GraphDriver.Capabilities',
  'GraphDriver.Changes',
  'GraphDriver.Cleanup',
  'GraphDriver.Create',
  'GraphDriver.CreateReadWrite',
  'GraphDriver.DiffSize',
  'GraphDriver.Exists',
  'GraphDriver.Get',
  'GraphDriver.GetMetadata',
  'GraphDriver.Init',
  'GraphDriver.Put',
  'GraphDriver.Remove',
  'GraphDriver.Status',
]);

export interface PluginServerOptions {
  /** The unix socket to serve on: dockerd finds `/run/docker/plugins/NAME.sock` as storage driver NAME. */
  socket: string;
  /** Where calls are counted (default: a registry of its own, {@link PluginServer.metrics}). */
  metrics?: Metrics;
  /** Driver options applied before the ones dockerd sends (`lcow.backend=host`…). */
  defaults?: readonly string[];
  /**
   * One event per failed call (`warn`) and per lifecycle step (`info`); default: standard error, with a
   * time and a level ({@link serviceLog}).
   */
  log?: ServiceLog;
  /**
   * Where the last `Init` is kept (default: under /run/lcow, named after the socket; null: nowhere). dockerd
   * sends `Init` once, when it starts; a plugin restarted while dockerd runs reads it back from here.
   */
  stateFile?: string | null;
  /** Also one line per call, with the layer it names and how long it took (`--trace-calls`). */
  traceCalls?: boolean;
}

/** The default state file of a socket: root-only, outside dockerd's plugin folders (which it scans). */
export function defaultStateFile(socket: string): string {
  const base =
    process.getuid?.() === 0
      ? '/run/lcow/docker-plugin'
      : join(tmpdir(), `lcow-docker-plugin-${process.getuid?.() ?? 0}`);
  return join(base, `${createHash('sha256').update(socket).digest('hex').slice(0, 16)}.init`);
}

/** `CODE: message` for a reply or a log line: controls escaped, cut to a line (the driver's one rule). */
const errText = (e: unknown): string => errorText(e);

/** Sandboxes kept made ahead of need: `docker run` makes two (the init layer's and the container's). */
const SPARE_SANDBOXES = 2;
/**
 * How long a container's union stays mounted after dockerd puts it: `docker run` mounts the root to create
 * the container, puts it, and mounts it again to start it moments later — the second get then finds it.
 */
const LINGER_UNIONS_MS = 2000;

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_JSON_BODY) {
        reject(new PluginError('ERR_INVALID_ARGUMENT', `request body over ${MAX_JSON_BODY} bytes`));
        req.destroy();
        return;
      }
      parts.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(parts).toString('utf8').trim();
      if (text === '') return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new PluginError('ERR_INVALID_ARGUMENT', 'request body is not JSON'));
      }
    });
    req.on('error', reject);
  });
}

function str(v: unknown, what: string, required = true): string {
  if (v === undefined || v === null || v === '') {
    if (required) throw new PluginError('ERR_INVALID_ARGUMENT', `${what} is missing`);
    return '';
  }
  if (typeof v !== 'string') throw new PluginError('ERR_INVALID_ARGUMENT', `${what} is not a string`);
  return v;
}

/**
 * Serves Docker's graph-driver plugin protocol on a unix socket over an {@link LcowDriver} (host backend
 * on Linux: `Get` answers with the union's host folder, which runc uses as the container's root). Calls run
 * concurrently as dockerd makes them; the driver serialises what must be.
 */
export class PluginServer {
  readonly socket: string;
  readonly #server: Server;
  readonly #defaults: readonly string[];
  readonly #log: ServiceLog;
  readonly #stateFile: string | null;
  readonly #traceCalls: boolean;
  /** Calls by method with durations and errors by code, bytes applied, layers and unions mounted. */
  readonly metrics: Metrics;
  #driver: LcowDriver | null = null;
  #home: string | null = null;
  #opts: string[] = [];
  /** In-flight ApplyDiffs, aborted by close(). */
  readonly #applies = new Set<AbortController>();
  #closing: Promise<void> | null = null;

  private constructor(server: Server, opts: PluginServerOptions) {
    this.#server = server;
    this.socket = opts.socket;
    this.#defaults = opts.defaults ?? [];
    this.#log = opts.log ?? serviceLog();
    this.#stateFile = opts.stateFile === undefined ? defaultStateFile(opts.socket) : opts.stateFile;
    this.#traceCalls = opts.traceCalls ?? false;
    this.metrics = opts.metrics ?? new Metrics();
    driverGauges(this.metrics, () => this.#driver);
  }

  /**
   * Starts serving. A socket file left by a plugin that is gone is replaced; one that answers is
   * another plugin at work, and an error.
   */
  static async listen(opts: PluginServerOptions): Promise<PluginServer> {
    await mkdir(dirname(opts.socket), { recursive: true, mode: 0o755 });
    if (await answers(opts.socket))
      throw new PluginError('ERR_EXISTS', `${opts.socket}: another plugin is serving on this socket`);
    await rm(opts.socket, { force: true });
    const server = createServer({ keepAliveTimeout: 30_000 });
    const plugin = new PluginServer(server, opts);
    server.on('request', (req, res) => void plugin.#handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.socket, () => resolve());
    });
    // dockerd runs as root; nobody else has business on this socket.
    await chmod(opts.socket, 0o660);
    await plugin.#resume();
    return plugin;
  }

  /** A restart while dockerd runs: the `Init` it sent to the previous process, applied again. */
  async #resume(): Promise<void> {
    if (!this.#stateFile) return;
    let saved: InitRequest;
    try {
      saved = JSON.parse(await readFile(this.#stateFile, 'utf8')) as InitRequest;
    } catch {
      return; // none: dockerd will send Init
    }
    await this.#init(saved).catch((e: unknown) =>
      this.#log(`lcow docker plugin: the saved Init (${this.#stateFile}) failed: ${errText(e)}`, 'warn'),
    );
  }

  /** The driver dockerd's `Init` opened, or null before it. */
  get driver(): LcowDriver | null {
    return this.#driver;
  }

  /**
   * Stops: no new calls, in-flight ApplyDiffs aborted (their layers are not committed), the socket removed.
   * The unions stay mounted — dockerd may be running containers on them — and the next plugin process
   * adopts them (same folders) from the saved `Init`; dockerd's own shutdown (`Cleanup`) releases them.
   * Idempotent.
   */
  close(): Promise<void> {
    return (this.#closing ??= (async () => {
      const stopped = new Promise<void>((r) => this.#server.close(() => r()));
      for (const ac of this.#applies) ac.abort(new PluginError('ERR_ABORTED', 'the plugin is shutting down'));
      this.#server.closeIdleConnections();
      const d = this.#driver;
      this.#driver = null;
      // Give aborted applies a moment to unwind through the driver's own cleanup.
      const deadline = Date.now() + 10_000;
      while (this.#applies.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      this.#server.closeAllConnections();
      await stopped;
      if (d)
        await d
          .close({ detach: true })
          .catch((e: unknown) => this.#log(`lcow docker plugin: close: ${errText(e)}`, 'warn'));
      await rm(this.socket, { force: true });
    })());
  }

  #need(): LcowDriver {
    if (!this.#driver) throw new PluginError('ERR_NOT_INITIALISED', 'GraphDriver.Init has not been called');
    return this.#driver;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://plugin');
    const method = url.pathname.slice(1);
    const started = performance.now();
    let layer = url.searchParams.get('id') ?? '';
    let failed: string | null = null;
    try {
      if (req.method !== 'POST')
        throw new PluginError('ERR_INVALID_ARGUMENT', `${req.method} ${url.pathname}: POST only`);
      if (this.#closing) throw new PluginError('ERR_UNAVAILABLE', 'the plugin is shutting down');
      if (method === 'GraphDriver.ApplyDiff') return this.#reply(res, await this.#applyDiff(req, url));
      const body = (await readJson(req)) as DriverRequest & InitRequest;
      if (typeof body !== 'object' || body === null || Array.isArray(body))
        throw new PluginError('ERR_INVALID_ARGUMENT', 'request body is not a JSON object');
      if (typeof body.ID === 'string') layer = body.ID;
      if (method === 'GraphDriver.Diff') return await this.#diff(body, res);
      this.#reply(res, await this.#call(method, body));
    } catch (e) {
      failed = describeError(e).code;
      const text = errText(e);
      this.#log(`lcow docker plugin: ${method}: ${text}`, 'warn');
      if (res.headersSent)
        res.destroy(); // a tar cut short: dockerd sees the stream fail
      else {
        // A body not read to its end (an ApplyDiff refused early) is not read on: the answer goes out,
        // then the connection, so a client still sending cannot keep this process busy.
        if (!req.complete) {
          res.setHeader('connection', 'close');
          res.once('finish', () => req.destroy());
        }
        this.#reply(res, { Err: text }, 500);
      }
    } finally {
      this.metrics.call(
        'lcow_plugin',
        METHODS.has(method) ? method : 'other',
        (performance.now() - started) / 1000,
        failed,
      );
      if (this.#traceCalls) {
        const ms = (performance.now() - started).toFixed(1);
        // The id is the client's text: quoted and escaped, it cannot start a line of its own in the log.
        const id = layer ? JSON.stringify(layer) : '-';
        this.#log(`lcow docker plugin: call ${method} ${id} ${ms} ms${failed ? ' (failed)' : ''}`);
      }
    }
  }

  #reply(res: ServerResponse, body: DriverResponse, status = 200): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': PLUGIN_MEDIA_TYPE, 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** One protocol call: the driver's verb for it, its answer in the protocol's form. */
  async #call(method: string, b: DriverRequest & InitRequest): Promise<DriverResponse> {
    const id = (): string => str(b.ID, 'ID');
    const parent = (): string | null => str(b.Parent, 'Parent', false) || null;
    switch (method) {
      case 'Plugin.Activate':
        return { Implements: ['GraphDriver'] };
      case 'GraphDriver.Init':
        await this.#init(b);
        return {};
      case 'GraphDriver.Capabilities':
        // Our diff is the layer read back from its ext4 image, not the bytes that were applied.
        return { Capabilities: { ReproducesExactDiffs: false } };
      case 'GraphDriver.Create':
        await this.#need().create(id(), parent(), storageOpt(b));
        return {};
      case 'GraphDriver.CreateReadWrite':
        await this.#need().createReadWrite(id(), parent(), storageOpt(b));
        return {};
      case 'GraphDriver.Remove':
        await this.#remove(id());
        return {};
      case 'GraphDriver.Get':
        return { Dir: await this.#get(id()) };
      case 'GraphDriver.Put':
        await this.#put(id());
        return {};
      case 'GraphDriver.Exists':
        return { Exists: await this.#need().exists(id()) };
      case 'GraphDriver.Status':
        return { Status: await this.#status() };
      case 'GraphDriver.GetMetadata':
        return { Metadata: { ...(await this.#need().getMetadata(id())) } };
      case 'GraphDriver.Cleanup':
        await this.#cleanup();
        return {};
      case 'GraphDriver.Changes': {
        const changes = await this.#need().changes(id(), parent());
        return { Changes: changes.map((c) => ({ Path: c.path, Kind: ChangeKind[c.kind] })) };
      }
      case 'GraphDriver.DiffSize':
        return { Size: await this.#need().diffSize(id(), parent()) };
      default:
        throw new PluginError('ERR_NOT_FOUND', `${method}: not a graph-driver call`);
    }
  }

  async #remove(id: string): Promise<void> {
    try {
      await this.#need().remove(id);
    } catch (e) {
      // dockerd removes what a failed create may never have made; moby's drivers answer nil then.
      if ((e as { code?: string }).code !== 'ERR_LAYER_NOT_FOUND') throw e;
    }
  }

  /** The union's folder on this host: dockerd runs the container there. */
  async #get(id: string): Promise<string> {
    const fs = await this.#need().get(id);
    if (fs.path === null) {
      await this.#need().put(id);
      throw new PluginError('ERR_UNSUPPORTED', 'Get needs a backend that mounts on this host (lcow.backend=host)');
    }
    return fs.path;
  }

  async #put(id: string): Promise<void> {
    const d = this.#need();
    try {
      await d.put(id);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_NOT_MOUNTED') throw e;
      // A union an earlier plugin process mounted (dockerd kept running across our restart) is unmounted;
      // nothing mounted at all is fine, as the original and overlay2 answer a Put without its Get.
      await d.unmount(id);
    }
  }

  /**
   * What `docker info` prints under "Storage Driver": counts as they are now (a union adopted after a
   * restart counts before its next Get), as overlay2 prints its backing filesystem.
   */
  async #status(): Promise<[string, string][]> {
    const s = await this.#need().status();
    return [
      ['Backend', s.backend],
      ['Data root', s.root],
      ['Backing Filesystem', s.backingFilesystem],
      ['Layers', String(s.layers)],
      ['Mounted', String(s.mounted.length)],
      ['Sandbox size', `${s.sandboxSizeGb} GiB (${s.sandboxType} VHDX)`],
      ['Mode', s.mode],
      ['Plugin', `lcow-docker-plugin ${VERSION}`],
    ];
  }

  /** dockerd's shutdown: release everything; a restarted dockerd calls Init again. */
  async #cleanup(): Promise<void> {
    const d = this.#driver;
    this.#driver = null;
    this.#home = null;
    if (this.#stateFile) await rm(this.#stateFile, { force: true });
    // As `lcow cleanup` leaves it: unions put, leftovers of dead processes unmounted, interrupted removals
    // and creations finished.
    await d?.cleanup();
  }

  async #init(b: InitRequest): Promise<void> {
    const home = str(b.Home, 'Home');
    if ((b.UIDMaps?.length ?? 0) > 0 || (b.GIDMaps?.length ?? 0) > 0)
      throw new PluginError(
        'ERR_UNSUPPORTED',
        'user namespace remapping (dockerd --userns-remap) is not supported by lcow: its layers are ext4 images whose owners are stored as the image has them',
      );
    if (b.Opts !== undefined && b.Opts !== null && !Array.isArray(b.Opts))
      throw new PluginError('ERR_INVALID_ARGUMENT', 'Opts is not a list');
    const opts = (b.Opts ?? []).map((o) => str(o, 'an option'));
    // A dockerd that restarted while we kept running (after a crash: no Cleanup came) and asks for the same
    // root: the open driver stays, with its unions at the paths dockerd already knows.
    if (this.#driver && this.#home === home && JSON.stringify(opts) === JSON.stringify(this.#opts)) {
      this.#log(`lcow docker plugin: Init ${home} again: kept`);
      return;
    }
    // Options checked before the open driver is let go: an Init that is refused (a second dockerd with a
    // bad --storage-opt) leaves the dockerd this plugin serves undisturbed.
    parseDriverOptions([...this.#defaults, ...opts]);
    const old = this.#driver;
    this.#driver = null;
    await old?.close({ detach: true });
    // Unions a previous plugin process mounted stay: dockerd may still run containers on them, and puts
    // them one by one (Put unmounts what an earlier process left); `lcow cleanup` removes true leftovers.
    this.#driver = await LcowDriver.init(home, [...this.#defaults, ...opts], {
      containerRoots: true,
      recover: false,
      spareSandboxes: SPARE_SANDBOXES,
      lingerUnionsMs: LINGER_UNIONS_MS,
    });
    // Removals and creations a killed process left are finished now, not at the next `lcow` command (the
    // mounts stay: dockerd may be running containers on them).
    const left = await this.#driver.store.cleanup();
    if (left.removing.length + left.partial.length + left.tempFiles.length > 0)
      this.#log(
        `lcow docker plugin: Init ${home}: finished ${left.removing.length} removals, ${left.partial.length} partial creations, ${left.tempFiles.length} temporary files`,
      );
    this.#home = home;
    this.#opts = opts;
    if (this.#stateFile) {
      await mkdir(dirname(this.#stateFile), { recursive: true, mode: 0o700 });
      await writeFileDurable(this.#stateFile, JSON.stringify({ Home: home, Opts: opts }), { mode: 0o600 });
    }
    this.#log(`lcow docker plugin: Init ${this.#home} (${this.#driver.backend.name} backend)`);
  }

  async #applyDiff(req: IncomingMessage, url: URL): Promise<DriverResponse> {
    const d = this.#need();
    const id = str(url.searchParams.get('id'), 'id');
    const parent = url.searchParams.get('parent') || null;
    const ac = new AbortController();
    // dockerd gave up (its client was cancelled): stop converting; nothing is committed.
    const onClose = (): void => {
      if (!req.complete) ac.abort(new PluginError('ERR_ABORTED', `ApplyDiff ${id}: dockerd closed the request`));
    };
    req.on('close', onClose);
    this.#applies.add(ac);
    try {
      const size = await d.applyDiff(id, parent, req, { signal: ac.signal });
      this.metrics.count('lcow_plugin_applied_bytes_total', 'Bytes of layer tars applied (ApplyDiff).', {}, size);
      return { Size: size };
    } finally {
      this.#applies.delete(ac);
      req.off('close', onClose);
    }
  }

  async #diff(b: DriverRequest, res: ServerResponse): Promise<void> {
    const tar = this.#need().diff(str(b.ID, 'ID'), str(b.Parent, 'Parent', false) || null);
    const it = tar[Symbol.asyncIterator]();
    // The first chunk decides between an error answer and a stream: a missing layer is an Err, not a tar.
    const first = await it.next();
    res.writeHead(200, { 'Content-Type': 'application/x-tar' });
    if (!first.done) await write(res, first.value as Buffer);
    for (let n = await it.next(); !n.done; n = await it.next()) await write(res, n.value as Buffer);
    res.end();
  }
}

function storageOpt(b: DriverRequest): { storageOpt: Record<string, string> } {
  const o = b.StorageOpt ?? {};
  if (typeof o !== 'object' || Array.isArray(o))
    throw new PluginError('ERR_INVALID_ARGUMENT', 'StorageOpt is not a map');
  return { storageOpt: o };
}

/** Writes with backpressure; rejects when dockerd went away. */
function write(res: ServerResponse, chunk: Buffer): Promise<void> {
  if (res.destroyed) return Promise.reject(new PluginError('ERR_ABORTED', 'dockerd closed the stream'));
  if (res.write(chunk)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', gone);
      resolve();
    };
    const gone = (): void => {
      res.off('drain', done);
      reject(new PluginError('ERR_ABORTED', 'dockerd closed the stream'));
    };
    res.once('drain', done);
    res.once('close', gone);
  });
}

/** Whether something accepts connections on `socket` (a live plugin), as opposed to a stale file. */
function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
