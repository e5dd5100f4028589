// The driver's own options, with the original's messages (lcow-behaviour.md §3.1–3.3); they fail as
// DriverError on every backend, not as an HCS error.
import { describe, expect, it } from 'vitest';
import { DriverError } from './errors.ts';
import { DAEMON_OPTIONS, parseDriverOptions, parseGlobalMode, parseLayerOptions, parseSandboxSize } from './options.ts';

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

  it('unknown daemon options are refused, naming the key and the known ones (as overlay2)', () => {
    const known = Object.keys(DAEMON_OPTIONS).join(', ');
    expect(() => parseDriverOptions(['lcow.bogus=1'])).toThrow(
      `lcowdriver: init: unknown option "lcow.bogus"; known: ${known}`,
    );
    expect(() => parseDriverOptions(['bogus=1'])).toThrow(/unknown option "bogus"/);
    expect(() => parseDriverOptions({ 'overlay2.size': '1G' })).toThrow(/unknown option "overlay2.size"/);
    expect(() => parseDriverOptions(['lcow.vhdx=x'])).toThrow(/removed in 2019/);
    expect(() => parseDriverOptions(['lcow.sandboxsize'])).toThrow(/"lcow.sandboxsize": expected KEY=VALUE/);
    // Every key the driver and the utility VM read is known.
    expect(() =>
      parseDriverOptions([
        'lcow.kirdpath=/k',
        'lcow.kernel=k',
        'lcow.initrd=i',
        'lcow.bootparameters=a b',
        'lcow.timeout=10',
        'LCOW.SandboxType=fixed',
      ]),
    ).not.toThrow();
  });

  it("a layer's own options: Docker's size= and lcow.sandboxsize for a sandbox, nothing for a read-only layer", () => {
    const sandbox = (o: Record<string, string>) => parseLayerOptions(o, 'c1', 'createreadwrite');
    expect(sandbox({})).toEqual({});
    expect(sandbox({ size: '5G' })).toEqual({ sandboxSizeGb: 5 });
    expect(sandbox({ size: '512m' })).toEqual({ sandboxSizeGb: 0.5 });
    expect(sandbox({ size: '1.5GiB' })).toEqual({ sandboxSizeGb: 1.5 });
    expect(sandbox({ size: '1073741824' })).toEqual({ sandboxSizeGb: 1 });
    expect(sandbox({ size: '100000001' })).toEqual({ sandboxSizeGb: 96 / 1024 }); // up to a whole MiB
    expect(sandbox({ 'lcow.sandboxsize': '30' })).toEqual({ sandboxSizeGb: 30 });
    expect(() => sandbox({ size: '10m' })).toThrow(/size "10m": a size from 64M to 64T/);
    expect(() => sandbox({ size: 'lots' })).toThrow(/size "lots"/);
    expect(() => sandbox({ size: '65T' })).toThrow(/size "65T"/);
    expect(() => sandbox({ size: '5G', 'lcow.sandboxsize': '30' })).toThrow(/not both/);
    expect(() => sandbox({ bogus: '1' })).toThrow(
      'lcowdriver: createreadwrite: id c1: unknown storage option "bogus"; known: size, lcow.sandboxsize',
    );
    expect(() => parseLayerOptions({ size: '5G' }, 'l1', 'create')).toThrow(
      'lcowdriver: create: id l1: --storage-opt is not supported for read-only layers ("size")',
    );
    expect(parseLayerOptions({}, 'l1', 'create')).toEqual({});
  });
});
