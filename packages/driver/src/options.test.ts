// The driver's own options, with the original's messages (lcow-behaviour.md §3.1–3.3); they fail as
// DriverError on every backend, not as an HCS error.
import { describe, expect, it } from 'vitest';
import { DriverError } from './errors.ts';
import { parseDriverOptions, parseGlobalMode, parseSandboxSize } from './options.ts';

describe('driver options', () => {
  it('lcow.globalmode and lcow.sandboxsize as the driver parsed them', () => {
    expect(parseGlobalMode(undefined)).toBe(false);
    expect(parseGlobalMode('T')).toBe(true);
    expect(parseGlobalMode('0')).toBe(false);
    expect(() => parseGlobalMode('yes')).toThrow(
      "lcowdriver: init: failed to parse value for 'lcow.globalmode' - must be 'true' or 'false'",
    );
    expect(parseSandboxSize(undefined, 'x')).toBe(20);
    expect(parseSandboxSize('50', 'x')).toBe(50);
    expect(() => parseSandboxSize('10', 'abc')).toThrow(
      "lcowdriver: createreadwrite: id abc 'lcow.sandboxsize' option cannot be less than 20",
    );
    expect(() => parseSandboxSize('20G', 'abc')).toThrow(
      "lcowdriver: createreadwrite: id abc failed to parse value '20G' for 'lcow.sandboxsize'",
    );
    expect(() => parseSandboxSize('-20', 'abc')).toThrow(/failed to parse value '-20'/);
  });

  it('fail as DriverError ERR_INVALID_ARGUMENT at init', () => {
    for (const bad of [['lcow.globalmode=yes'], ['lcow.sandboxsize=5'], ['lcow.maxlayersize=0'], ['lcow.backend=x']]) {
      let err: unknown;
      try {
        parseDriverOptions(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad[0]).toBeInstanceOf(DriverError);
      expect(err, bad[0]).toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    }
    expect(parseDriverOptions(['LCOW.GlobalMode=true', 'lcow.sandboxsize=30'])).toMatchObject({
      globalMode: true,
      sandboxSizeGb: 30,
    });
  });
});
