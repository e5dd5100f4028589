import { describe, expect, it } from 'vitest';
import { inOrder } from './in-order.ts';

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('inOrder', () => {
  it('starts in order, at most `parallel` at once, and finishes in order whatever ends first', async () => {
    const log: string[] = [];
    let running = 0;
    let most = 0;
    const times = [40, 5, 5, 30, 5, 5];
    await inOrder(times, {
      parallel: 2,
      window: Infinity,
      start: async (ms) => {
        log.push(`start ${ms}`);
        most = Math.max(most, ++running);
        await tick(ms);
        running--;
        return ms * 2;
      },
      finish: (ms, r) => void log.push(`finish ${ms}=${r}`),
    });
    expect(most).toBe(2);
    expect(log.filter((l) => l.startsWith('finish'))).toEqual(times.map((t) => `finish ${t}=${t * 2}`));
    // With no window, the fast ones went on while the first was slow.
    expect(log.indexOf('start 30')).toBeLessThan(log.indexOf('finish 40=80'));
  });

  it('a window holds later items back behind a slow one; items needing no work take no place in it', async () => {
    const log: string[] = [];
    await inOrder(['a40', 'skip', 'b5', 'c5', 'd5'], {
      parallel: 2,
      start: (name) => {
        if (name === 'skip') return null;
        log.push(`start ${name}`);
        return tick(Number(name.slice(1))).then(() => name);
      },
      finish: (name, r) => void log.push(`finish ${name}:${r}`),
    });
    // Window 2: a40 and b5 start (the skipped item between them takes no place); c5 waits until a40 is done.
    expect(log.slice(0, 3)).toEqual(['start a40', 'start b5', 'finish a40:a40']);
    expect(log.filter((l) => l.startsWith('finish'))).toEqual([
      'finish a40:a40',
      'finish skip:null',
      'finish b5:b5',
      'finish c5:c5',
      'finish d5:d5',
    ]);
  });

  it('the first failure aborts what runs, discards what will never finish, starts nothing more, and is thrown', async () => {
    const started: number[] = [];
    const discarded: number[] = [];
    const aborted: number[] = [];
    const failure = new Error('layer 1 is bad');
    await expect(
      inOrder([0, 1, 2, 3, 4], {
        parallel: 3,
        start: (i, signal) => {
          started.push(i);
          if (i === 1) return tick(5).then(() => Promise.reject(failure));
          return new Promise<number>((resolve) => {
            const onAbort = (): void => {
              clearTimeout(t);
              aborted.push(i);
              resolve(i); // what it made so far, handed to discard
            };
            const t = setTimeout(
              () => {
                signal.removeEventListener('abort', onAbort);
                resolve(i);
              },
              i === 0 ? 1 : 50,
            );
            signal.addEventListener('abort', onAbort);
          });
        },
        finish: () => {},
        discard: (r) => void discarded.push(r),
      }),
    ).rejects.toBe(failure);
    expect(started).toEqual([0, 1, 2, 3]);
    expect(aborted.sort()).toEqual([2, 3]);
    expect(discarded.sort()).toEqual([2, 3]);
  });

  it('a caller’s abort stops it too', async () => {
    const ac = new AbortController();
    const p = inOrder([1, 2, 3], {
      parallel: 1,
      signal: ac.signal,
      start: (_, signal) => new Promise((_r, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
      finish: () => {},
    });
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
  });
});
