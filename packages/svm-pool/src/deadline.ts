import { SvmPoolError } from './errors.ts';

/**
 * Waits for `p`, but at most `ms` milliseconds and not past `signal`: `ERR_TIMEOUT` or `ERR_ABORTED`
 * naming `what`. `p` itself is not cancelled (whoever started it decides what a late result means).
 */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string, signal?: AbortSignal): Promise<T> {
  if (signal?.aborted)
    return Promise.reject(new SvmPoolError('ERR_ABORTED', `${what}: aborted`, { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        done(() => reject(new SvmPoolError('ERR_TIMEOUT', `${what}: no answer after ${ms / 1000} s (lcow.timeout)`))),
      ms,
    );
    const onAbort = (): void =>
      done(() => reject(new SvmPoolError('ERR_ABORTED', `${what}: aborted`, { cause: signal?.reason })));
    signal?.addEventListener('abort', onAbort, { once: true });
    let settled = false;
    const done = (f: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      f();
    };
    p.then(
      (v) => done(() => resolve(v)),
      (e: unknown) => done(() => reject(e)),
    );
  });
}
