// Loading vmcompute through koffi — lazily, on the first call, so importing the package never touches
// native code. The one place where Windows and Linux differ: the library name, and where the function
// that frees HCS out-strings lives (ole32's CoTaskMemFree on Windows, as hcsshim; the fake's own export
// in tests).
import { createRequire } from 'node:module';
import { HcsError } from './errors.ts';
import { NOTIFICATION_CALLBACK, PROCESS_INFORMATION, PROTOTYPES, type HcsExport } from './prototypes.ts';

/** A koffi function: called synchronously, or on a worker thread with `.async(...args, callback)`. */
interface KoffiFn {
  (...args: unknown[]): unknown;
  async(...args: unknown[]): void;
}

interface Koffi {
  load(path: string): { func(proto: string): KoffiFn };
  proto(proto: string): unknown;
  pointer(t: unknown): unknown;
  register(fn: (...args: never[]) => void, type: unknown): unknown;
  decode(ptr: unknown, type: string, len?: number): unknown;
  struct(name: string, fields: Record<string, string>): unknown;
  sizeof(t: unknown): number;
  address(p: unknown): bigint;
}

/** The loaded library: its exports, the out-string decoder and the notification callback type. */
export interface Bindings {
  readonly path: string;
  fn(name: HcsExport): KoffiFn;
  /** Decodes and frees an HCS out-string (null stays null). */
  takeString(ptr: unknown): string | null;
  /** Registers the process-wide notification trampoline (koffi runs it on the JS thread). */
  registerCallback(fn: (type: number, context: number, status: number, data: string | null) => void): unknown;
  /** A pointer (a koffi external or bigint) as an integer: stdio HANDLEs are file descriptors in the fake. */
  address(p: unknown): number;
  /** Calls `name` on a worker thread (HCS may block; a synchronous call could deadlock on a callback). */
  call(name: HcsExport, ...args: unknown[]): Promise<number>;
}

/** Where the library is: an explicit path, `LCOW_VMCOMPUTE_LIB`, or `vmcompute.dll` on Windows. */
export function libraryPath(explicit?: string, platform: NodeJS.Platform = process.platform): string {
  const path = explicit ?? process.env.LCOW_VMCOMPUTE_LIB ?? (platform === 'win32' ? 'vmcompute.dll' : undefined);
  if (!path) {
    throw new HcsError(
      'ERR_UNSUPPORTED_PLATFORM',
      'load vmcompute',
      `the Host Compute Service exists only on Windows (this is ${platform}); use the host or inproc backend, or set LCOW_VMCOMPUTE_LIB to a vmcompute-compatible library`,
    );
  }
  return path;
}

const loaded = new Map<string, Bindings>();

/** Loads (once per path) and returns the bindings. Failures are `ERR_UNSUPPORTED_PLATFORM` naming the library. */
export function loadBindings(explicit?: string): Bindings {
  const path = libraryPath(explicit);
  const hit = loaded.get(path);
  if (hit) return hit;
  let koffi: Koffi;
  let lib: ReturnType<Koffi['load']>;
  let freeLib: ReturnType<Koffi['load']>;
  try {
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
    lib = koffi.load(path);
    freeLib =
      process.platform === 'win32' && path.toLowerCase().endsWith('vmcompute.dll') ? koffi.load('ole32.dll') : lib;
  } catch (e) {
    throw new HcsError('ERR_UNSUPPORTED_PLATFORM', 'load vmcompute', `cannot load ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const callbackType = koffi.proto(NOTIFICATION_CALLBACK);
  const info = koffi.struct(PROCESS_INFORMATION.name, { ...PROCESS_INFORMATION.fields });
  if (koffi.sizeof(info) !== 32)
    throw new HcsError(
      'ERR_UNSUPPORTED_PLATFORM',
      'load vmcompute',
      `HCS_PROCESS_INFORMATION is ${koffi.sizeof(info)} bytes here, expected 32 (x64 only)`,
    );
  // hcsshim frees v1 result strings with CoTaskMemFree; Microsoft's v2 docs say LocalFree. One switch.
  const freeName = process.env.LCOW_HCS_FREE === 'LocalFree' ? 'LocalFree' : 'CoTaskMemFree';
  const free = (freeName === 'LocalFree' && freeLib !== lib ? koffi.load('kernel32.dll') : freeLib).func(
    `void __stdcall ${freeName}(void *pv)`,
  );
  const fns = new Map<HcsExport, KoffiFn>();
  const fn = (name: HcsExport): KoffiFn => {
    let f = fns.get(name);
    if (!f) {
      try {
        f = lib.func(PROTOTYPES[name]);
      } catch (e) {
        // hcsshim resolves each export lazily too: a missing one is an error of that call, not of the library.
        throw new HcsError('ERR_HCS', name, `${path} has no export ${name}`, { hresult: 0x8007007f, cause: e });
      }
      fns.set(name, f);
    }
    return f;
  };
  const b: Bindings = {
    path,
    fn,
    takeString(ptr) {
      if (ptr === null || ptr === undefined || ptr === 0n) return null;
      try {
        return koffi.decode(ptr, 'char16_t', -1) as string;
      } finally {
        free(ptr);
      }
    },
    registerCallback(handler) {
      return koffi.register(
        (type: number, context: number | bigint, status: number, data: string | null) =>
          handler(type >>> 0, Number(context), status | 0, data),
        koffi.pointer(callbackType),
      );
    },
    address(p) {
      if (p === null || p === undefined) return 0;
      return Number(typeof p === 'bigint' ? p : koffi.address(p));
    },
    call(name, ...args) {
      const f = fn(name);
      return new Promise<number>((resolve, reject) => {
        f.async(...args, (err: unknown, hr: number) => (err ? reject(err) : resolve(hr | 0)));
      });
    },
  };
  loaded.set(path, b);
  return b;
}
