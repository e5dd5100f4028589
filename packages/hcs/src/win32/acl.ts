// Windows ACL helpers the LCOW driver needs (hcs-api.md "Win32 helpers"): give the Hyper-V VM group read
// access to a disk file (go-winio GrantVmGroupAccess), and create a layer directory with the original's
// SDDL (moby MkdirAllWithACL). koffi loads advapi32/kernel32 only when a helper runs on Windows.
import { lstat, mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { HcsError } from '../errors.ts';

/** The well-known SID of "NT VIRTUAL MACHINE\Virtual Machines". */
export const VM_GROUP_SID = 'S-1-5-83-0';
/** Protected DACL: full control for the VM group, Administrators and LocalSystem, inherited (moby). */
export const SDDL_NTVM_ADMINISTRATORS_LOCAL_SYSTEM = 'D:P(A;OICI;GA;;;S-1-5-83-0)(A;OICI;GA;;;BA)(A;OICI;GA;;;SY)';
export const SDDL_ADMINISTRATORS_LOCAL_SYSTEM = 'D:P(A;OICI;GA;;;BA)(A;OICI;GA;;;SY)';

const GENERIC_READ = 0x8000_0000;
const GRANT_ACCESS = 1;
const NO_INHERITANCE = 0;
const SUB_CONTAINERS_AND_OBJECTS_INHERIT = 3;
const TRUSTEE_IS_SID = 0;
const TRUSTEE_IS_WELL_KNOWN_GROUP = 5;
const SE_FILE_OBJECT = 1;
const DACL_SECURITY_INFORMATION = 4;
const READ_CONTROL_WRITE_DAC = 0x20000 | 0x40000;
const FILE_SHARE_READ_WRITE = 1 | 2;
const OPEN_EXISTING = 3;
const FILE_ATTRIBUTE_NORMAL = 0x80;
const FILE_FLAG_BACKUP_SEMANTICS = 0x0200_0000;
const SDDL_REVISION_1 = 1;

interface KoffiLike {
  struct(name: string, fields: Record<string, unknown>): unknown;
  sizeof(t: unknown): number;
  offsetof(t: unknown, field: string): number;
  load(path: string): { func(proto: string): (...args: unknown[]) => unknown };
}

function koffi(): KoffiLike {
  return createRequire(import.meta.url)('koffi') as KoffiLike;
}

let types: { trustee: unknown; explicitAccess: unknown; securityAttributes: unknown } | null = null;

/** The Win32 structs, declared once (x64 layouts: TRUSTEE_W 32, EXPLICIT_ACCESS_W 48, SECURITY_ATTRIBUTES 24). */
export function win32Types(): { trustee: unknown; explicitAccess: unknown; securityAttributes: unknown } {
  if (types) return types;
  const k = koffi();
  const trustee = k.struct('TRUSTEE_W', {
    pMultipleTrustee: 'void *',
    MultipleTrusteeOperation: 'int',
    TrusteeForm: 'int',
    TrusteeType: 'int',
    ptstrName: 'void *',
  });
  const explicitAccess = k.struct('EXPLICIT_ACCESS_W', {
    grfAccessPermissions: 'uint32_t',
    grfAccessMode: 'uint32_t',
    grfInheritance: 'uint32_t',
    Trustee: trustee,
  });
  const securityAttributes = k.struct('SECURITY_ATTRIBUTES', {
    nLength: 'uint32_t',
    lpSecurityDescriptor: 'void *',
    bInheritHandle: 'int',
  });
  types = { trustee, explicitAccess, securityAttributes };
  return types;
}

function requireWindows(op: string): void {
  if (process.platform !== 'win32')
    throw new HcsError(
      'ERR_UNSUPPORTED_PLATFORM',
      op,
      `Windows ACLs exist only on Windows (this is ${process.platform})`,
    );
}

let api: Record<string, (...args: unknown[]) => unknown> | null = null;

function win32(): Record<string, (...args: unknown[]) => unknown> {
  if (api) return api;
  win32Types();
  const k = koffi();
  const advapi = k.load('advapi32.dll');
  const kernel = k.load('kernel32.dll');
  api = {
    CreateFileW: kernel.func(
      'void *__stdcall CreateFileW(const char16_t *name, uint32_t access, uint32_t share, void *sa, uint32_t disposition, uint32_t flags, void *template)',
    ),
    CloseHandle: kernel.func('int __stdcall CloseHandle(void *h)'),
    GetLastError: kernel.func('uint32_t __stdcall GetLastError(void)'),
    LocalFree: kernel.func('void *__stdcall LocalFree(void *p)'),
    CreateDirectoryW: kernel.func('int __stdcall CreateDirectoryW(const char16_t *name, SECURITY_ATTRIBUTES *sa)'),
    GetSecurityInfo: advapi.func(
      'uint32_t __stdcall GetSecurityInfo(void *h, int type, uint32_t info, void *owner, void *group, _Out_ void **dacl, void *sacl, _Out_ void **sd)',
    ),
    SetSecurityInfo: advapi.func(
      'uint32_t __stdcall SetSecurityInfo(void *h, int type, uint32_t info, void *owner, void *group, void *dacl, void *sacl)',
    ),
    SetEntriesInAclW: advapi.func(
      'uint32_t __stdcall SetEntriesInAclW(uint32_t n, EXPLICIT_ACCESS_W *ea, void *old, _Out_ void **newAcl)',
    ),
    ConvertStringSidToSidW: advapi.func('int __stdcall ConvertStringSidToSidW(const char16_t *sid, _Out_ void **psid)'),
    ConvertStringSecurityDescriptorToSecurityDescriptorW: advapi.func(
      'int __stdcall ConvertStringSecurityDescriptorToSecurityDescriptorW(const char16_t *sddl, uint32_t revision, _Out_ void **sd, void *size)',
    ),
  };
  return api;
}

const failure = (op: string, path: string, code: number): HcsError =>
  new HcsError('ERR_HCS', op, `${path}: Win32 error ${code}`, {
    hresult: code === 0 ? 0x80004005 : (0x8007_0000 | (code & 0xffff)) >>> 0,
  });

/**
 * Adds an allow-ACE for the VM group (GENERIC_READ; inheritable on a directory) to `path`'s DACL, keeping
 * the others — what the original did to every `layer.vhd` so the utility VM can open it.
 */
export async function grantVmGroupAccess(path: string): Promise<void> {
  requireWindows('grantVmGroupAccess');
  const isDir = (await lstat(path)).isDirectory();
  const w = win32();
  const h = w.CreateFileW!(
    path,
    READ_CONTROL_WRITE_DAC,
    FILE_SHARE_READ_WRITE,
    null,
    OPEN_EXISTING,
    FILE_ATTRIBUTE_NORMAL | (isDir ? FILE_FLAG_BACKUP_SEMANTICS : 0),
    null,
  );
  if (h === null || h === BigInt(-1) || h === -1) throw failure('CreateFileW', path, w.GetLastError!() as number);
  const sid: unknown[] = [null];
  const sd: unknown[] = [null];
  const dacl: unknown[] = [null];
  const newAcl: unknown[] = [null];
  try {
    let rc = w.GetSecurityInfo!(h, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, null, null, dacl, null, sd) as number;
    if (rc !== 0) throw failure('GetSecurityInfo', path, rc);
    if (!w.ConvertStringSidToSidW!(VM_GROUP_SID, sid))
      throw failure('ConvertStringSidToSidW', path, w.GetLastError!() as number);
    const ea = {
      grfAccessPermissions: GENERIC_READ,
      grfAccessMode: GRANT_ACCESS,
      grfInheritance: isDir ? SUB_CONTAINERS_AND_OBJECTS_INHERIT : NO_INHERITANCE,
      Trustee: {
        pMultipleTrustee: null,
        MultipleTrusteeOperation: 0,
        TrusteeForm: TRUSTEE_IS_SID,
        TrusteeType: TRUSTEE_IS_WELL_KNOWN_GROUP,
        ptstrName: sid[0],
      },
    };
    rc = w.SetEntriesInAclW!(1, ea, dacl[0], newAcl) as number;
    if (rc !== 0) throw failure('SetEntriesInAclW', path, rc);
    rc = w.SetSecurityInfo!(h, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, null, null, newAcl[0], null) as number;
    if (rc !== 0) throw failure('SetSecurityInfo', path, rc);
  } finally {
    for (const p of [newAcl[0], sid[0], sd[0]]) if (p) w.LocalFree!(p);
    w.CloseHandle!(h);
  }
}

/**
 * Creates `path` and its missing parents; the last one with the security descriptor `sddl` (parents get the
 * default, inherited ACL; an existing directory is left as it is), as moby's MkdirAllWithACL.
 */
export async function mkdirAllWithAcl(path: string, sddl = SDDL_NTVM_ADMINISTRATORS_LOCAL_SYSTEM): Promise<void> {
  requireWindows('mkdirAllWithAcl');
  if (/^\\\\\?\\Volume\{[^}]+\}\\?$/i.test(path)) return;
  try {
    const st = await lstat(path);
    if (st.isDirectory()) return;
    throw new HcsError('ERR_HCS', 'mkdirAllWithAcl', `${path}: exists and is not a directory`, { hresult: 0x80070010 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await mkdir(dirname(path), { recursive: true });
  const w = win32();
  const sd: unknown[] = [null];
  if (!w.ConvertStringSecurityDescriptorToSecurityDescriptorW!(sddl, SDDL_REVISION_1, sd, null))
    throw failure('ConvertStringSecurityDescriptorToSecurityDescriptorW', path, w.GetLastError!() as number);
  try {
    const sa = {
      nLength: koffi().sizeof(win32Types().securityAttributes),
      lpSecurityDescriptor: sd[0],
      bInheritHandle: 1,
    };
    if (!w.CreateDirectoryW!(path, sa)) {
      const code = w.GetLastError!() as number;
      const now = await lstat(path).catch(() => null);
      if (!now?.isDirectory()) throw failure('CreateDirectoryW', path, code);
    }
  } finally {
    w.LocalFree!(sd[0]);
  }
}
