import { describe, expect, it } from 'vitest';
import { HResult, HcsError, assertWindows, failed, formatHResult, hresultName } from './index.ts';

describe('HRESULTs', () => {
  it('names known codes, signed or unsigned', () => {
    expect(hresultName(HResult.HCS_E_OPERATION_PENDING)).toBe('HCS_E_OPERATION_PENDING');
    expect(hresultName(0xc0370103 | 0)).toBe('HCS_E_OPERATION_PENDING'); // a signed HRESULT
    expect(hresultName(0x80070020)).toBe('HRESULT_FROM_WIN32(32)');
    expect(hresultName(0x12345678)).toBe('0x12345678');
    expect(formatHResult(-2147024891)).toBe('0x80070005');
    expect(failed(0)).toBe(false);
    expect(failed(HResult.E_ACCESSDENIED)).toBe(true);
  });

  it('HcsError carries op, HRESULT and result document', () => {
    const e = new HcsError('ERR_HCS', 'HcsStartComputeSystem', 'start failed', {
      hresult: 0xc037010e | 0,
      result: { Error: -1 },
    });
    expect(e.message).toBe('HcsStartComputeSystem: start failed: HCS_E_SYSTEM_NOT_FOUND (0xC037010E)');
    expect(e).toMatchObject({
      code: 'ERR_HCS',
      op: 'HcsStartComputeSystem',
      hresult: 0xc037010e,
      result: { Error: -1 },
    });
  });

  it('refuses off Windows with ERR_UNSUPPORTED_PLATFORM', () => {
    expect(() => assertWindows('HcsCreateComputeSystem', 'linux')).toThrow(
      expect.objectContaining({ code: 'ERR_UNSUPPORTED_PLATFORM' }),
    );
    expect(() => assertWindows('HcsCreateComputeSystem', 'win32')).not.toThrow();
  });
});
