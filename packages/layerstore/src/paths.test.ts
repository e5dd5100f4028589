import fc from 'fast-check';
import { relative, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  LayerStoreError,
  dataRootPaths,
  formatLayerChain,
  layerPaths,
  parseLayerChain,
  validateLayerId,
} from './index.ts';

describe('validateLayerId', () => {
  it('accepts moby ids and names', () => {
    for (const id of ['a'.repeat(64), 'abc123', 'my-layer_1', 'x.y']) expect(validateLayerId(id)).toBe(id);
  });

  it.each([
    '',
    '.',
    '..',
    '../x',
    'a/b',
    'a\\b',
    'a\0b',
    'a\nb',
    'x'.repeat(129),
    'abc-removing',
    'cache',
    'SCRATCH',
    'nul',
    'a:b',
    'trailing.',
    'trailing ',
  ])('refuses %j', (id) => {
    expect(() => validateLayerId(id)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_LAYER_ID' }));
  });

  it('no accepted id ever leaves its folder in the data root (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 140, unit: 'binary' }), (id) => {
        let ok = true;
        try {
          validateLayerId(id);
        } catch (e) {
          expect(e).toBeInstanceOf(LayerStoreError);
          ok = false;
        }
        if (ok) {
          const rel = relative('/data', layerPaths('/data', id).dir);
          expect(rel).toBe(id);
          expect(rel.includes(sep)).toBe(false);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('data-root layout', () => {
  it('matches the on-disk contract', () => {
    const p = layerPaths('/var/lib/docker/lcow', 'abc');
    expect(p).toEqual({
      dir: '/var/lib/docker/lcow/abc',
      layerVhd: '/var/lib/docker/lcow/abc/layer.vhd',
      sandboxVhdx: '/var/lib/docker/lcow/abc/sandbox.vhdx',
      layerChain: '/var/lib/docker/lcow/abc/layerchain.json',
      removing: '/var/lib/docker/lcow/abc-removing',
    });
    const r = dataRootPaths('/var/lib/docker/lcow/');
    expect(r.cachedSandbox).toBe('/var/lib/docker/lcow/cache/sandbox.vhdx');
    expect(r.scratch('vm1')).toBe('/var/lib/docker/lcow/scratch/vm1.vhdx');
    expect(() => dataRootPaths('relative/root')).toThrow(LayerStoreError);
  });
});

describe('layerchain.json', () => {
  it('reads null, [] and arrays of absolute paths (POSIX and Windows)', () => {
    expect(parseLayerChain('null', 'f')).toEqual([]);
    expect(parseLayerChain('[]', 'f')).toEqual([]);
    expect(parseLayerChain('["/r/b","C:\\\\ProgramData\\\\docker\\\\lcow\\\\a"]', 'f')).toEqual([
      '/r/b',
      'C:\\ProgramData\\docker\\lcow\\a',
    ]);
    expect(formatLayerChain([])).toBe('null');
    expect(formatLayerChain(['/r/b', '/r/a'])).toBe('["/r/b","/r/a"]');
  });

  it.each(['', '{', '{}', '"x"', '[1]', '["relative/x"]', '[""]', '[null]', '["/a\\u0000b"]'])(
    'refuses %j naming the file',
    (text) => {
      expect(() => parseLayerChain(text, '/r/x/layerchain.json')).toThrow(
        expect.objectContaining({
          code: 'ERR_LAYER_CHAIN_CORRUPT',
          message: expect.stringContaining('/r/x/layerchain.json'),
        }),
      );
    },
  );
});
