import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';

/**
 * Per-key asynchronous mutexes: operations on one key run one at a time, in call order; different keys
 * run in parallel. A key's entry exists only while someone holds or waits for it.
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier holder of `key` has finished (whether it succeeded or failed). */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = previous.then(() => mine);
    this.#tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  /** Keys held or waited for right now. */
  get busy(): string[] {
    return [...this.#tails.keys()];
  }
}

/**
 * A lock shared by every process of this machine, held as a listening socket whose name is the lock's:
 * an abstract unix socket on Linux, a named pipe on Windows. The kernel lets one process bind a name at a
 * time and frees it when that process exits however it exits, so a lock is never left stale and
 * never needs breaking. Elsewhere (no abstract sockets) it is a no-op and only in-process locks apply.
 */
export class HostLock {
  readonly #name: string | null;

  /** `key` is any text; it is hashed into the socket name (abstract names hold 107 bytes). */
  constructor(key: string) {
    const h = createHash('sha256').update(key).digest('hex').slice(0, 40);
    this.#name =
      process.platform === 'linux'
        ? `\0lcow-lock-${h}`
        : process.platform === 'win32'
          ? `\\\\?\\pipe\\lcow-lock-${h}`
          : null;
  }

  /** Whether this platform gives cross-process locks. */
  get crossProcess(): boolean {
    return this.#name !== null;
  }

  /**
   * Waits until this process holds the lock (polling, 5 ms growing to 100 ms), then returns its release.
   * An abort while waiting rejects with the signal's reason.
   */
  async acquire(signal?: AbortSignal): Promise<() => Promise<void>> {
    for (let wait = 5; ; wait = Math.min(100, wait * 2)) {
      signal?.throwIfAborted();
      const release = await this.tryAcquire();
      if (release) return release;
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /** The lock's release if it was free, or null when another process (or this one) holds it. */
  async tryAcquire(): Promise<(() => Promise<void>) | null> {
    if (this.#name === null) return async () => {};
    const server = createServer();
    const got = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(false) : reject(e)));
      server.listen(this.#name!, () => resolve(true));
    });
    if (!got) return null;
    server.unref(); // a held lock does not keep the process alive
    return () => new Promise<void>((r) => server.close(() => r()));
  }
}

/**
 * {@link KeyedLock} within this process plus a {@link HostLock} per key across processes; re-entrant within
 * one async call chain, so a locked operation may call another that takes the same key.
 */
export class SharedKeyedLock {
  readonly #local = new KeyedLock();
  readonly #scope: string;
  readonly #held = new AsyncLocalStorage<ReadonlySet<string>>();

  /** `scope` separates the keys of different owners (a data root's absolute path). */
  constructor(scope: string) {
    this.#scope = scope;
  }

  async run<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const held = this.#held.getStore();
    if (held?.has(key)) return fn();
    return this.#local.run(key, async () => {
      const release = await new HostLock(`${this.#scope}\0${key}`).acquire(signal);
      try {
        return await this.#held.run(new Set([...(held ?? []), key]), fn);
      } finally {
        await release();
      }
    });
  }
}
