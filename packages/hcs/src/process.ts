// A process in a compute system (HcsCreateProcess): its stdio HANDLEs as Node streams with back-pressure,
// its exit code once ProcessExited arrives, kill and close. Unlike the original, nothing drains the pipes
// one after the other (callers read stdout and stderr as they like) and timeouts are the caller's.
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { Bindings } from './bindings.ts';
import { parseDocument } from './document.ts';
import { HcsError } from './errors.ts';
import { HResult, failed } from './hresult.ts';
import type { Notifications } from './notifications.ts';
import { type Watcher } from './notifications.ts';
import { Notification } from './prototypes.ts';
import { overlappedReadable, overlappedWritable } from './win32/pipes.ts';

/**
 * Turns stdio HANDLEs into streams: overlapped pipe HANDLEs on Windows (win32/pipes.ts), file descriptors
 * of pipes elsewhere (the fake vmcompute).
 */
function handleStream(b: Bindings, handle: unknown, mode: 'r' | 'w'): Readable | Writable | null {
  const fd = b.address(handle);
  if (!fd) return null;
  if (process.platform === 'win32') return mode === 'r' ? overlappedReadable(handle) : overlappedWritable(handle);
  return new Socket({ fd, readable: mode === 'r', writable: mode === 'w' });
}

/** A process started by {@link ComputeSystem.createProcess}. */
export class HcsProcess {
  readonly pid: number;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly #b: Bindings;
  #handle: unknown;
  readonly #watcher: Watcher;
  #callbackHandle: unknown = null;
  #closing: Promise<void> | null = null;
  readonly #what: string;

  /** @internal */
  constructor(
    b: Bindings,
    n: Notifications,
    handle: unknown,
    info: { ProcessId: number; StdInput: unknown; StdOutput: unknown; StdError: unknown },
    what: string,
  ) {
    this.#b = b;
    this.#handle = handle;
    this.pid = info.ProcessId;
    this.#what = `${what} process ${info.ProcessId}`;
    this.#watcher = n.watch(this.#what);
    this.stdin = handleStream(b, info.StdInput, 'w') as Writable | null;
    this.stdout = handleStream(b, info.StdOutput, 'r') as Readable | null;
    this.stderr = handleStream(b, info.StdError, 'r') as Readable | null;
  }

  /** @internal */
  async register(n: Notifications): Promise<void> {
    const out: unknown[] = [null];
    const hr = await this.#b.call('HcsRegisterProcessCallback', this.#handle, n.callback, this.#watcher.context, out);
    if (failed(hr)) throw new HcsError('ERR_HCS', 'HcsRegisterProcessCallback', this.#what, { hresult: hr });
    this.#callbackHandle = out[0];
  }

  #live(op: string): void {
    if (this.#closing) throw new HcsError('ERR_HANDLE_CLOSED', op, `${this.#what}: the handle is closed`);
  }

  /**
   * Waits for the process to exit and returns its exit code (-1 when HCS could not wait for it, as
   * hcsshim reports a non-zero LastWaitResult).
   */
  async wait(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<number> {
    this.#live('wait');
    await this.#watcher.wait(Notification.ProcessExited, 'wait', opts.timeoutMs ?? 240_000, opts.signal);
    const props = (await this.properties()) as { ExitCode?: number; LastWaitResult?: number; Exited?: boolean };
    if (!props.Exited)
      throw new HcsError('ERR_HCS', 'HcsGetProcessProperties', `${this.#what}: not exited`, {
        hresult: HResult.HCS_E_INVALID_STATE,
      });
    return props.LastWaitResult ? -1 : (props.ExitCode ?? -1);
  }

  /** HcsGetProcessProperties, decoded. */
  async properties(): Promise<unknown> {
    this.#live('HcsGetProcessProperties');
    const props: unknown[] = [null];
    const result: unknown[] = [null];
    const hr = await this.#b.call('HcsGetProcessProperties', this.#handle, props, result);
    const doc = parseDocument(this.#b.takeString(result[0]));
    const text = this.#b.takeString(props[0]);
    if (failed(hr)) throw new HcsError('ERR_HCS', 'HcsGetProcessProperties', this.#what, { hresult: hr, result: doc });
    return parseDocument(text);
  }

  /** Terminates the process; one already gone counts as done. */
  async kill(): Promise<void> {
    this.#live('HcsTerminateProcess');
    const result: unknown[] = [null];
    const hr = await this.#b.call('HcsTerminateProcess', this.#handle, result);
    const doc = parseDocument(this.#b.takeString(result[0]));
    const u = hr >>> 0;
    if (
      failed(hr) &&
      u !== HResult.HCS_E_PROCESS_ALREADY_STOPPED &&
      u !== HResult.HCS_E_INVALID_STATE &&
      u !== HResult.ERROR_ELEMENT_NOT_FOUND
    )
      throw new HcsError('ERR_HCS', 'HcsTerminateProcess', this.#what, { hresult: hr, result: doc });
  }

  /** Unregisters the callback, destroys the stdio streams and closes the handle. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#watcher.close();
      for (const s of [this.stdin, this.stdout, this.stderr]) s?.destroy();
      if (this.#callbackHandle) await this.#b.call('HcsUnregisterProcessCallback', this.#callbackHandle);
      await this.#b.call('HcsCloseProcess', this.#handle);
      this.#handle = null;
    })();
    return this.#closing;
  }
}
