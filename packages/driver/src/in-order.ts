// The one scheduler of image work, for `lcow import` and `lcow image` alike: layers are converted several at a
// time and used (committed, reported) one by one in layer order.

/** How {@link inOrder} runs. */
export interface InOrderOptions<I, R> {
  /** Most `start`s running at once. */
  parallel: number;
  /**
   * Most items with work started and not yet finished (default: `parallel`): a slow item holds later ones
   * back once this many wait behind it — what bounds the staged layers of an import. `Infinity` for results small
   * enough to keep (root hashes).
   */
  window?: number;
  /** Aborts everything; `start` gets a signal that also aborts at the first failure. */
  signal?: AbortSignal;
  /** The work for one item, or null for an item that needs none (it takes no slot). */
  start: (item: I, signal: AbortSignal) => Promise<R> | null;
  /** Each item's result (null where `start` gave none), in item order. */
  finish: (item: I, result: R | null) => Promise<void> | void;
  /** A result that will never reach `finish` because an earlier item failed. */
  discard?: (result: R) => Promise<void> | void;
}

/**
 * Runs `start` for every item, in item order, `parallel` at a time and at most `window` started and not
 * yet finished, and hands the results to `finish` in item order as soon as each and all before it are done. The
 * first failure (a `start`, a `finish`, the caller's signal) stops new starts, aborts the running ones,
 * waits for them, hands what they made to `discard`, and is rethrown.
 */
export async function inOrder<I, R>(items: readonly I[], opts: InOrderOptions<I, R>): Promise<void> {
  const parallel = Math.max(1, opts.parallel);
  const window = Math.max(parallel, opts.window ?? parallel);
  const ac = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, ac.signal]) : ac.signal;
  const started: (Promise<R> | null)[] = [];
  let running = 0; // started, not settled
  let pending = 0; // started, not finished
  let stopped = false;
  const more = (): void => {
    while (!stopped && started.length < items.length && running < parallel && pending < window) {
      const p = opts.start(items[started.length]!, signal);
      started.push(p);
      if (!p) continue;
      running++;
      pending++;
      p.then(
        () => {
          running--;
          more();
        },
        () => running--,
      );
    }
  };
  try {
    more();
    for (let i = 0; i < items.length; i++) {
      opts.signal?.throwIfAborted();
      const p = started[i] ?? null;
      const r = p === null ? null : await p;
      started[i] = null; // finished: nothing of it left to discard
      await opts.finish(items[i]!, r);
      if (p) pending--;
      more();
    }
  } catch (e) {
    stopped = true;
    ac.abort(e);
    for (const p of started)
      if (p)
        await p.then(
          (r) => opts.discard?.(r),
          () => {},
        );
    throw e;
  }
}
