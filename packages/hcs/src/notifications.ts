// Notifications: HCS calls one registered function, from its own threads (koffi hands each call to the
// JS thread). One trampoline serves the whole process; a small integer `context` picks the watcher of a
// handle. A watcher keeps notifications that arrive before anyone waits (HCS may complete Create before
// the callback is registered, and queues it), so no completion is ever lost.
import type { Bindings } from './bindings.ts';
import { parseDocument } from './document.ts';
import { HcsError } from './errors.ts';
import { HResult } from './hresult.ts';
import { Notification } from './prototypes.ts';

interface Waiter {
  type: number;
  resolve(): void;
  reject(e: Error): void;
}

/** The notifications of one handle. */
export class Watcher {
  readonly context: number;
  readonly #what: string;
  readonly #arrived: { type: number; status: number; data: string | null }[] = [];
  readonly #waiters = new Set<Waiter>();
  #closed = false;
  readonly #onClose: () => void;

  constructor(context: number, what: string, onClose: () => void) {
    this.context = context;
    this.#what = what;
    this.#onClose = onClose;
  }

  /** @internal Called by the trampoline. */
  deliver(type: number, status: number, data: string | null): void {
    this.#arrived.push({ type, status, data });
    this.#drain();
  }

  #drain(): void {
    for (const w of [...this.#waiters]) {
      const i = this.#arrived.findIndex(
        (n) => n.type === w.type || n.type === Notification.SystemExited || n.type === Notification.ServiceDisconnect,
      );
      if (i < 0) continue;
      const n = this.#arrived[i]!;
      // SystemExited and ServiceDisconnect stay for every later waiter: the system is gone for all of them.
      if (n.type === w.type) this.#arrived.splice(i, 1);
      this.#waiters.delete(w);
      if (n.type !== w.type && n.type === Notification.SystemExited)
        w.reject(
          new HcsError('ERR_HCS', this.#what, 'the system exited while waiting', {
            hresult: HResult.HCS_E_UNEXPECTED_EXIT,
            result: parseDocument(n.data),
          }),
        );
      else if (n.type !== w.type)
        w.reject(
          new HcsError('ERR_HCS', this.#what, 'lost communication with the compute service', {
            hresult: HResult.ERROR_GEN_FAILURE,
          }),
        );
      else if (n.status < 0)
        w.reject(
          new HcsError('ERR_HCS', this.#what, 'the operation failed', {
            hresult: n.status,
            result: parseDocument(n.data),
          }),
        );
      else w.resolve();
    }
  }

  /**
   * Waits for notification `type`, at most `timeoutMs` and not past `signal`. A SystemExited (when not the
   * one awaited) or a ServiceDisconnect ends the wait with an error, as a failed status does.
   */
  wait(type: number, op: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.#closed)
      return Promise.reject(new HcsError('ERR_HANDLE_CLOSED', op, `${this.#what}: the handle is closed`));
    if (signal?.aborted)
      return Promise.reject(new HcsError('ERR_ABORTED', op, `${this.#what}: aborted`, { cause: signal.reason }));
    return new Promise<void>((resolve, reject) => {
      const finish = (f: () => void): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#waiters.delete(w);
        f();
      };
      const onAbort = (): void =>
        finish(() => reject(new HcsError('ERR_ABORTED', op, `${this.#what}: aborted`, { cause: signal?.reason })));
      const w: Waiter = { type, resolve: () => finish(resolve), reject: (e) => finish(() => reject(e)) };
      // The timer also keeps the event loop alive while a notification is due.
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(new HcsError('ERR_TIMEOUT', op, `${this.#what}: no notification after ${timeoutMs / 1000} s`)),
          ),
        timeoutMs,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(w);
      this.#drain();
    });
  }

  /** Whether the system's SystemExited has arrived. */
  get exited(): boolean {
    return this.#arrived.some((n) => n.type === Notification.SystemExited);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#waiters])
      w.reject(new HcsError('ERR_HANDLE_CLOSED', this.#what, 'the handle was closed while waiting'));
    this.#onClose();
  }
}

/** The process-wide trampoline and its watchers, per library. */
export class Notifications {
  readonly callback: unknown;
  readonly #watchers = new Map<number, Watcher>();
  #next = 1;

  constructor(b: Bindings) {
    this.callback = b.registerCallback((type, context, status, data) =>
      this.#watchers.get(context)?.deliver(type, status, data),
    );
  }

  watch(what: string): Watcher {
    const context = this.#next++;
    const w = new Watcher(context, what, () => this.#watchers.delete(context));
    this.#watchers.set(context, w);
    return w;
  }

  get size(): number {
    return this.#watchers.size;
  }
}
