// HCS process stdio on Windows: the HANDLEs are overlapped pipe handles (hcsshim wraps them with an IO
// completion port), which Node cannot adopt as streams. Each is driven here with ReadFile/WriteFile on an
// OVERLAPPED and GetOverlappedResult(wait) on a libuv worker thread, through memory koffi allocates (so
// it stays valid while the kernel fills it). Each pending wait holds one worker thread: the process that
// runs many guest processes must start with a larger UV_THREADPOOL_SIZE (hcs-api.md §4 of the Win32 part).
// Only a Windows machine can prove this module; Linux tests do not load it.
import { createRequire } from 'node:module';
import { Readable, Writable } from 'node:stream';
import { HcsError } from '../errors.ts';

const CHUNK = 64 << 10;

type Fn = ((...args: unknown[]) => unknown) & { async(...args: unknown[]): void };

interface KoffiMem {
  load(path: string): { func(proto: string): Fn };
  struct(name: string, fields: Record<string, string>): unknown;
  alloc(type: unknown, n: number): unknown;
  free(p: unknown): void;
  encode(p: unknown, type: unknown, value: unknown): void;
  view(p: unknown, len: number): ArrayBuffer;
}

let k32: { k: KoffiMem; ov: unknown; f: Record<string, Fn> } | null = null;

function kernel32(): { k: KoffiMem; ov: unknown; f: Record<string, Fn> } {
  if (k32) return k32;
  const k = createRequire(import.meta.url)('koffi') as KoffiMem;
  const lib = k.load('kernel32.dll');
  const ov = k.struct('OVERLAPPED', {
    Internal: 'uintptr_t',
    InternalHigh: 'uintptr_t',
    Offset: 'uint32_t',
    OffsetHigh: 'uint32_t',
    hEvent: 'void *',
  });
  k32 = {
    k,
    ov,
    f: {
      CreateEventW: lib.func(
        'void *__stdcall CreateEventW(void *sa, int manualReset, int initialState, const char16_t *name)',
      ),
      ReadFile: lib.func('int __stdcall ReadFile(void *h, void *buf, uint32_t n, void *read, void *ov)'),
      WriteFile: lib.func('int __stdcall WriteFile(void *h, void *buf, uint32_t n, void *written, void *ov)'),
      GetOverlappedResult: lib.func(
        'int __stdcall GetOverlappedResult(void *h, void *ov, _Out_ uint32_t *n, int wait)',
      ),
      CancelIoEx: lib.func('int __stdcall CancelIoEx(void *h, void *ov)'),
      CloseHandle: lib.func('int __stdcall CloseHandle(void *h)'),
    },
  };
  return k32;
}

const call = (f: Fn, ...args: unknown[]): Promise<number> =>
  new Promise((resolve, reject) => f.async(...args, (err: unknown, r: number) => (err ? reject(err) : resolve(r))));

/** One overlapped operation's memory: a buffer, an OVERLAPPED with its event. */
function resources(): { buf: unknown; ov: unknown; event: unknown; free(): void } {
  const { k, ov, f } = kernel32();
  const event = f.CreateEventW!(null, 1, 0, null);
  if (!event) throw new HcsError('ERR_HCS', 'CreateEventW', 'cannot create an event for pipe I/O');
  const o = k.alloc(ov, 1);
  k.encode(o, ov, { Internal: 0, InternalHigh: 0, Offset: 0, OffsetHigh: 0, hEvent: event });
  const buf = k.alloc('uint8_t', CHUNK);
  return {
    buf,
    ov: o,
    event,
    free() {
      k.free(buf);
      k.free(o);
      f.CloseHandle!(event);
    },
  };
}

/** A pipe HANDLE the process writes (stdout, stderr) as a Readable; the handle is closed at end or destroy. */
export function overlappedReadable(handle: unknown): Readable {
  const { k, f } = kernel32();
  const r = resources();
  let reading = false;
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    f.CancelIoEx!(handle, null);
    f.CloseHandle!(handle);
    r.free();
  };
  return new Readable({
    highWaterMark: CHUNK,
    read() {
      if (reading || done) return;
      reading = true;
      void (async () => {
        try {
          for (;;) {
            await call(f.ReadFile!, handle, r.buf, CHUNK, null, r.ov);
            const n: number[] = [0];
            const ok = await call(f.GetOverlappedResult!, handle, r.ov, n, 1);
            // A failed wait is the end of the pipe (ERROR_BROKEN_PIPE when the process closed it).
            if (!ok || n[0] === 0) {
              this.push(null);
              finish();
              return;
            }
            if (!this.push(Buffer.from(k.view(r.buf, n[0]!).slice(0)))) break;
          }
        } catch (e) {
          this.destroy(e as Error);
        } finally {
          reading = false;
        }
      })();
    },
    destroy(err, cb) {
      finish();
      cb(err);
    },
  });
}

/** A pipe HANDLE the process reads (stdin) as a Writable; ending it closes the handle (EOF for the process). */
export function overlappedWritable(handle: unknown): Writable {
  const { k, f } = kernel32();
  const r = resources();
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    f.CloseHandle!(handle);
    r.free();
  };
  return new Writable({
    highWaterMark: CHUNK,
    write(chunk: Buffer, _enc, cb) {
      void (async () => {
        try {
          for (let at = 0; at < chunk.length;) {
            const piece = chunk.subarray(at, at + CHUNK);
            new Uint8Array(k.view(r.buf, piece.length)).set(piece);
            await call(f.WriteFile!, handle, r.buf, piece.length, null, r.ov);
            const n: number[] = [0];
            if (!(await call(f.GetOverlappedResult!, handle, r.ov, n, 1)))
              throw new HcsError('ERR_HCS', 'WriteFile', 'the process closed its stdin');
            at += n[0]!;
          }
          cb();
        } catch (e) {
          cb(e as Error);
        }
      })();
    },
    final(cb) {
      finish();
      cb();
    },
    destroy(err, cb) {
      finish();
      cb(err);
    },
  });
}
