// A compute system (a utility VM) through vmcompute: the hcsshim v1 flows (hcs-api.md §4) — every call on
// a worker thread, "operation pending" answered by the matching notification with a deadline and an
// AbortSignal, out-strings decoded and freed, failures as HcsError with the HRESULT and result document.
import { loadBindings, type Bindings } from './bindings.ts';
import { parseDocument } from './document.ts';
import { HcsError } from './errors.ts';
import { HResult, failed, toUnsigned } from './hresult.ts';
import { Notifications, type Watcher } from './notifications.ts';
import { HcsProcess } from './process.ts';
import { Notification, type HcsExport } from './prototypes.ts';

/** hcsshim's default for create, start, pause and resume (4 minutes). */
export const DEFAULT_HCS_TIMEOUT_MS = 240_000;

export interface HcsOptions {
  /** The vmcompute library (default: `vmcompute.dll` on Windows, `LCOW_VMCOMPUTE_LIB` elsewhere). */
  library?: string;
  /** Deadline for an operation's completion notification. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const trampolines = new WeakMap<Bindings, Notifications>();

function notificationsOf(b: Bindings): Notifications {
  let n = trampolines.get(b);
  if (!n) {
    n = new Notifications(b);
    trampolines.set(b, n);
  }
  return n;
}

/** The message HCS put in a result document, if any. */
function messageOf(doc: unknown): string | undefined {
  if (doc && typeof doc === 'object' && 'ErrorMessage' in doc)
    return String((doc as { ErrorMessage: unknown }).ErrorMessage);
  return undefined;
}

const stringify = (v: object | string): string => (typeof v === 'string' ? v : JSON.stringify(v));

/** A handle to one compute system. Close it (idempotent); afterwards every call is `ERR_HANDLE_CLOSED`. */
export class ComputeSystem {
  readonly id: string;
  readonly #b: Bindings;
  #handle: unknown;
  #watcher: Watcher;
  #callbackHandle: unknown = null;
  readonly #timeoutMs: number;
  #closing: Promise<void> | null = null;

  private constructor(b: Bindings, id: string, handle: unknown, timeoutMs: number) {
    this.#b = b;
    this.id = id;
    this.#handle = handle;
    this.#timeoutMs = timeoutMs;
    this.#watcher = notificationsOf(b).watch(`compute system ${id}`);
  }

  /** Calls an export with the handle and an out `result`; decodes and frees it; throws on failure (but pending). */
  async #call(op: string, name: HcsExport, args: unknown[], extraOut?: unknown[]): Promise<number> {
    if (this.#closing) throw new HcsError('ERR_HANDLE_CLOSED', op, `compute system ${this.id}: the handle is closed`);
    return ComputeSystem.#invoke(this.#b, op, name, [this.#handle, ...args], extraOut, this.id);
  }

  static async #invoke(
    b: Bindings,
    op: string,
    name: HcsExport,
    args: unknown[],
    extraOut: unknown[] | undefined,
    id: string,
  ): Promise<number> {
    const result: unknown[] = [null];
    const hr = await b.call(name, ...args, ...(extraOut ? [extraOut] : []), result);
    const doc = parseDocument(b.takeString(result[0]));
    if (failed(hr) && toUnsigned(hr) !== HResult.HCS_E_OPERATION_PENDING) {
      if (extraOut) b.takeString(extraOut[0]);
      throw new HcsError('ERR_HCS', op, `compute system ${id}${messageOf(doc) ? `: ${messageOf(doc)}` : ''}`, {
        hresult: hr,
        result: doc,
      });
    }
    return hr;
  }

  /**
   * Creates a compute system from its configuration document and waits until it exists. On a timeout the
   * half-created system is terminated and closed.
   */
  static async create(id: string, config: object | string, opts: HcsOptions = {}): Promise<ComputeSystem> {
    if (id.includes('\0'))
      throw new HcsError('ERR_HCS', 'HcsCreateComputeSystem', `id ${JSON.stringify(id)} contains NUL`, {
        hresult: HResult.E_INVALIDARG,
      });
    const b = loadBindings(opts.library);
    const out: unknown[] = [null];
    const result: unknown[] = [null];
    const hr = await b.call('HcsCreateComputeSystem', id, stringify(config), null, out, result);
    const doc = parseDocument(b.takeString(result[0]));
    const pending = toUnsigned(hr) === HResult.HCS_E_OPERATION_PENDING;
    if (failed(hr) && !pending) {
      throw new HcsError(
        'ERR_HCS',
        'HcsCreateComputeSystem',
        `compute system ${id}${messageOf(doc) ? `: ${messageOf(doc)}` : ''}`,
        { hresult: hr, result: doc },
      );
    }
    const cs = new ComputeSystem(b, id, out[0], opts.timeoutMs ?? DEFAULT_HCS_TIMEOUT_MS);
    try {
      await cs.#register();
      if (pending)
        await cs.#watcher.wait(
          Notification.SystemCreateCompleted,
          'HcsCreateComputeSystem',
          cs.#timeoutMs,
          opts.signal,
        );
    } catch (e) {
      await cs.terminate().catch(() => {});
      await cs.close().catch(() => {});
      throw e;
    }
    return cs;
  }

  /** Opens an existing compute system by id. */
  static async open(id: string, opts: HcsOptions = {}): Promise<ComputeSystem> {
    const b = loadBindings(opts.library);
    const out: unknown[] = [null];
    await ComputeSystem.#invoke(b, 'HcsOpenComputeSystem', 'HcsOpenComputeSystem', [id, out], undefined, id);
    const cs = new ComputeSystem(b, id, out[0], opts.timeoutMs ?? DEFAULT_HCS_TIMEOUT_MS);
    try {
      await cs.#register();
    } catch (e) {
      await cs.close().catch(() => {});
      throw e;
    }
    return cs;
  }

  async #register(): Promise<void> {
    const handle: unknown[] = [null];
    const hr = await this.#b.call(
      'HcsRegisterComputeSystemCallback',
      this.#handle,
      notificationsOf(this.#b).callback,
      this.#watcher.context,
      handle,
    );
    if (failed(hr))
      throw new HcsError('ERR_HCS', 'HcsRegisterComputeSystemCallback', `compute system ${this.id}`, { hresult: hr });
    this.#callbackHandle = handle[0];
  }

  async #async(
    op: HcsExport,
    done: number,
    opts: { timeoutMs?: number; signal?: AbortSignal },
    options = '',
  ): Promise<void> {
    const hr = await this.#call(op, op, [options]);
    if (toUnsigned(hr) === HResult.HCS_E_OPERATION_PENDING)
      await this.#watcher.wait(done, op, opts.timeoutMs ?? this.#timeoutMs, opts.signal);
  }

  /** Starts the system and waits for StartCompleted. */
  start(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    return this.#async('HcsStartComputeSystem', Notification.SystemStartCompleted, opts);
  }

  /**
   * Asks the system to shut down (or, `terminate`, stops it hard). Not waited: call {@link waitExited}.
   * "Already stopped" and "not found" count as done, as in hcsshim.
   */
  shutdown(): Promise<void> {
    return this.#stop('HcsShutdownComputeSystem');
  }

  terminate(): Promise<void> {
    return this.#stop('HcsTerminateComputeSystem');
  }

  async #stop(op: HcsExport): Promise<void> {
    try {
      await this.#call(op, op, ['']);
    } catch (e) {
      const hr = (e as HcsError).hresult;
      if (
        hr === HResult.HCS_E_SYSTEM_ALREADY_STOPPED ||
        hr === HResult.HCS_E_SYSTEM_NOT_FOUND ||
        hr === HResult.ERROR_ELEMENT_NOT_FOUND
      )
        return;
      throw e;
    }
  }

  /** Waits for the SystemExited notification. */
  waitExited(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    if (this.#watcher.exited) return Promise.resolve();
    return this.#watcher.wait(Notification.SystemExited, 'wait', opts.timeoutMs ?? this.#timeoutMs, opts.signal);
  }

  /** HcsGetComputeSystemProperties: the decoded properties document. */
  async properties(query: object | string = {}): Promise<unknown> {
    const props: unknown[] = [null];
    await this.#call('HcsGetComputeSystemProperties', 'HcsGetComputeSystemProperties', [stringify(query)], props);
    return parseDocument(this.#b.takeString(props[0]));
  }

  /** HcsModifyComputeSystem (hot-add or hot-remove of a disk, …). */
  async modify(request: object | string): Promise<void> {
    await this.#call('HcsModifyComputeSystem', 'HcsModifyComputeSystem', [stringify(request)]);
  }

  /**
   * Starts a process in the system (`params`: a process document, see `processParameters`) with the stdio
   * pipes it asks for, as Node streams.
   */
  async createProcess(params: object | string): Promise<HcsProcess> {
    const op = 'HcsCreateProcess';
    if (this.#closing) throw new HcsError('ERR_HANDLE_CLOSED', op, `compute system ${this.id}: the handle is closed`);
    const info: Record<string, unknown> = {};
    const out: unknown[] = [null];
    const result: unknown[] = [null];
    const hr = await this.#b.call(op, this.#handle, stringify(params), info, out, result);
    const doc = parseDocument(this.#b.takeString(result[0]));
    if (failed(hr))
      throw new HcsError('ERR_HCS', op, `compute system ${this.id}${messageOf(doc) ? `: ${messageOf(doc)}` : ''}`, {
        hresult: hr,
        result: doc,
      });
    const n = notificationsOf(this.#b);
    const p = new HcsProcess(this.#b, n, out[0], info as never, `compute system ${this.id}`);
    try {
      await p.register(n);
    } catch (e) {
      await p.close().catch(() => {});
      throw e;
    }
    return p;
  }

  /** Unregisters the callback, then closes the handle. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#watcher.close();
      if (this.#callbackHandle) await this.#b.call('HcsUnregisterComputeSystemCallback', this.#callbackHandle);
      await this.#b.call('HcsCloseComputeSystem', this.#handle);
      this.#handle = null;
    })();
    return this.#closing;
  }
}
