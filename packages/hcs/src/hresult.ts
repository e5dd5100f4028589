// HRESULTs the LCOW flow meets: winerror.h codes (E_*, ERROR_* as HRESULT_FROM_WIN32) and the HCS codes
// hcsshim special-cases (see ../shared/reference/hcs-api.md section 5). Names as Microsoft spells them.

export const HResult = {
  S_OK: 0x0000_0000,
  E_FAIL: 0x8000_4005,
  E_INVALIDARG: 0x8007_0057,
  E_ACCESSDENIED: 0x8007_0005,
  ERROR_FILE_NOT_FOUND: 0x8007_0002,
  ERROR_PATH_NOT_FOUND: 0x8007_0003,
  ERROR_INVALID_HANDLE: 0x8007_0006,
  ERROR_INVALID_DATA: 0x8007_000d,
  ERROR_GEN_FAILURE: 0x8007_001f,
  ERROR_NOT_SUPPORTED: 0x8007_0032,
  ERROR_PROC_NOT_FOUND: 0x8007_007f,
  ERROR_ELEMENT_NOT_FOUND: 0x8007_0490,
  ERROR_SHUTDOWN_IN_PROGRESS: 0x8007_045b,
  ERROR_TIMEOUT: 0x8007_05b4,
  WSAEINVAL: 0x8007_2726,
  HCS_E_OPERATION_PENDING: 0xc037_0103,
  HCS_E_INVALID_STATE: 0xc037_0105,
  HCS_E_UNEXPECTED_EXIT: 0xc037_0106,
  HCS_E_UNKNOWN_MESSAGE: 0xc037_010b,
  HCS_E_INVALID_JSON: 0xc037_010d,
  HCS_E_SYSTEM_NOT_FOUND: 0xc037_010e,
  HCS_E_SYSTEM_ALREADY_EXISTS: 0xc037_010f,
  HCS_E_SYSTEM_ALREADY_STOPPED: 0xc037_0110,
  HCS_E_PROCESS_ALREADY_STOPPED: 0x8037_011f,
  /** "The file size of this virtual hard disk is not valid" (a VHD payload not a multiple of 512). */
  ERROR_VHD_INVALID_FILE_SIZE: 0xc03a_0013,
} as const;
export type HResultName = keyof typeof HResult;

const BY_VALUE = new Map<number, string>();
for (const [name, value] of Object.entries(HResult)) if (!BY_VALUE.has(value)) BY_VALUE.set(value, name);

/** Normalises an HRESULT to unsigned 32 bits (koffi hands back signed `long`s). */
export function toUnsigned(hr: number): number {
  return hr >>> 0;
}

/** `0x8007000E` style text. */
export function formatHResult(hr: number): string {
  return `0x${toUnsigned(hr).toString(16).toUpperCase().padStart(8, '0')}`;
}

/**
 * A symbolic name for an HRESULT: a known name, else `HRESULT_FROM_WIN32(<code>)` for facility 7, else the hex.
 */
export function hresultName(hr: number): string {
  const u = toUnsigned(hr);
  const known = BY_VALUE.get(u);
  if (known) return known;
  if ((u & 0xffff_0000) >>> 0 === 0x8007_0000) return `HRESULT_FROM_WIN32(${u & 0xffff})`;
  return formatHResult(u);
}

/** True when the HRESULT's severity bit marks a failure. */
export function failed(hr: number): boolean {
  return (toUnsigned(hr) & 0x8000_0000) !== 0;
}
