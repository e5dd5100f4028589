// What Linux can check of the Windows ACL helpers: the struct layouts koffi computes (they must be the x64
// ones Windows expects), the SDDL constants, and the clean refusal elsewhere.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import {
  SDDL_NTVM_ADMINISTRATORS_LOCAL_SYSTEM,
  VM_GROUP_SID,
  grantVmGroupAccess,
  mkdirAllWithAcl,
  win32Types,
} from '../index.ts';

const koffi = createRequire(import.meta.url)('koffi') as {
  sizeof(t: unknown): number;
  offsetof(t: unknown, f: string): number;
};

describe('Win32 ACL helpers', () => {
  it('struct layouts: TRUSTEE_W 32, EXPLICIT_ACCESS_W 48 (trustee at 16), SECURITY_ATTRIBUTES 24', () => {
    const t = win32Types();
    expect(koffi.sizeof(t.trustee)).toBe(32);
    expect(koffi.offsetof(t.trustee, 'ptstrName')).toBe(24);
    expect(koffi.sizeof(t.explicitAccess)).toBe(48);
    expect(koffi.offsetof(t.explicitAccess, 'Trustee')).toBe(16);
    expect(koffi.sizeof(t.securityAttributes)).toBe(24);
    expect(koffi.offsetof(t.securityAttributes, 'lpSecurityDescriptor')).toBe(8);
    expect(koffi.offsetof(t.securityAttributes, 'bInheritHandle')).toBe(16);
  });

  it('the SDDL and SID of the original driver', () => {
    expect(VM_GROUP_SID).toBe('S-1-5-83-0');
    expect(SDDL_NTVM_ADMINISTRATORS_LOCAL_SYSTEM).toBe('D:P(A;OICI;GA;;;S-1-5-83-0)(A;OICI;GA;;;BA)(A;OICI;GA;;;SY)');
  });

  it.skipIf(process.platform === 'win32')(
    'off Windows: ERR_UNSUPPORTED_PLATFORM, before anything native loads',
    async () => {
      await expect(grantVmGroupAccess('/tmp/x')).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_PLATFORM' });
      await expect(mkdirAllWithAcl('/tmp/x')).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED_PLATFORM' });
    },
  );
});
