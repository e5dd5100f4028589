import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RefCounter, SvmPoolError, hostPathKey } from './index.ts';

describe('RefCounter', () => {
  it('reports first acquire and last release', () => {
    const r = new RefCounter<string>('disk');
    expect(r.acquire('a')).toBe(true);
    expect(r.acquire('a')).toBe(false);
    expect(r.count('a')).toBe(2);
    expect(r.release('a')).toBe(false);
    expect(r.release('a')).toBe(true);
    expect(r.size).toBe(0);
    expect(() => r.release('a')).toThrow(SvmPoolError);
  });

  it('normalises Windows host paths', () => {
    const r = new RefCounter<string>('disk', hostPathKey('win32'));
    expect(r.acquire('C:/Data/Layer.vhd')).toBe(true);
    expect(r.acquire('c:\\data\\layer.VHD')).toBe(false);
    expect(r.count('C:\\DATA\\LAYER.VHD')).toBe(2);
    const posix = new RefCounter<string>('disk', hostPathKey('linux'));
    posix.acquire('/a/B');
    expect(posix.count('/a/b')).toBe(0);
  });

  it('matches a model under any sequence of operations (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.constantFrom('a', 'b', 'c'))), (ops) => {
        const r = new RefCounter<string>('mount');
        const model = new Map<string, number>();
        for (const [acq, k] of ops) {
          const n = model.get(k) ?? 0;
          if (acq) {
            expect(r.acquire(k)).toBe(n === 0);
            model.set(k, n + 1);
          } else if (n === 0) {
            expect(() => r.release(k)).toThrow(expect.objectContaining({ code: 'ERR_REFCOUNT' }));
          } else {
            expect(r.release(k)).toBe(n === 1);
            model.set(k, n - 1);
          }
          expect(r.count(k)).toBe(model.get(k) ?? 0);
        }
        expect(r.keys().sort()).toEqual(
          [...model]
            .filter(([, v]) => v > 0)
            .map(([k]) => k)
            .sort(),
        );
      }),
    );
  });
});
