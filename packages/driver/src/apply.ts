// applyDiff's conversion: tar → ext4 + VHD footer, in a child process by default (as the original
// re-exec'd itself: a bad tar or a crash in the converter cannot take the daemon down, and parallel
// applies use every core), inline with `LCOW_NOREEXEC=1`.
import { spawn } from 'node:child_process';
import { extname } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Readable } from 'node:stream';
import { convert, type ConvertOptions } from '@lcow/ext4';
import { DriverError } from './errors.ts';

/** What one conversion reports back. */
export interface ApplyResult {
  /** Bytes of the image (`layer.vhd`). */
  size: number;
  /** Bytes of regular-file content in the tar: what `applyDiff` returns, as moby's drivers do. */
  fileBytes: number;
  rootDigest?: string;
}

/** The converter options every layer gets: overlay whiteouts, a fixed-VHD footer, fsync. */
export function layerOptions(verity: boolean, signal?: AbortSignal): ConvertOptions {
  return { convertWhiteouts: true, appendVhdFooter: true, verity, fsync: true, signal };
}

export async function convertInline(
  tar: string | AsyncIterable<Uint8Array>,
  out: string,
  opts: { verity: boolean; signal?: AbortSignal },
): Promise<ApplyResult> {
  const r = await convert(tar, out, layerOptions(opts.verity, opts.signal));
  return { size: r.size, fileBytes: r.fileBytes, ...(r.rootDigest ? { rootDigest: r.rootDigest } : {}) };
}

/** How to start the child: the built `.js` under node, or the `.ts` source under tsx (tests, development). */
function childCommand(): { execPath: string; args: string[] } {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  const script = fileURLToPath(new URL(`./apply-child${ext}`, import.meta.url));
  // tsx is found from this file, not from the working directory (which may be anywhere).
  const args =
    ext === '.ts'
      ? [
          '--conditions=@lcow/source',
          '--import',
          pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href,
          script,
        ]
      : [script];
  return { execPath: process.execPath, args };
}

/**
 * Converts in a child process: the tar goes to its stdin, the image to `out`, the result back as one JSON
 * line. An abort kills the child; its error (a typed `Ext4Error` there) comes back with code and message.
 */
export function convertInChild(
  tar: string | AsyncIterable<Uint8Array>,
  out: string,
  opts: { verity: boolean; signal?: AbortSignal; what: string },
): Promise<ApplyResult> {
  const { execPath, args } = childCommand();
  return new Promise((resolve, reject) => {
    // A file is opened by the child itself (4 MiB reads, no pipe); a stream is piped to its stdin.
    const input = typeof tar === 'string' ? [tar] : [];
    const child = spawn(execPath, [...args, out, opts.verity ? 'verity' : 'plain', ...input], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '8' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const onAbort = (): void => void child.kill('SIGKILL');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let fedError: unknown = null;
    const feed = (async () => {
      if (typeof tar === 'string') return void child.stdin.end();
      try {
        for await (const c of tar) {
          if (!child.stdin.write(c)) await new Promise((r) => child.stdin.once('drain', r));
        }
        child.stdin.end();
      } catch (e) {
        fedError = e;
        child.kill('SIGKILL');
      }
    })();
    child.stdin.on('error', () => {}); // the child stopped reading: its own error says why
    child.on('error', (e) =>
      reject(new DriverError('ERR_APPLY', `${opts.what}: cannot start the converter: ${e.message}`)),
    );
    child.on('close', (code, sig) => {
      opts.signal?.removeEventListener('abort', onAbort);
      void feed.then(() => {
        if (opts.signal?.aborted) return reject(opts.signal.reason);
        if (fedError) return reject(fedError);
        const line = stdout.trim().split('\n').pop() ?? '';
        let msg: { ok?: ApplyResult; error?: { code?: string; message?: string } } = {};
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          // fall through
        }
        if (code === 0 && msg.ok) return resolve(msg.ok);
        if (msg.error)
          return reject(
            new DriverError(
              'ERR_APPLY',
              `${opts.what}: ${msg.error.code ?? 'ERR_APPLY'}: ${msg.error.message ?? 'conversion failed'}`,
            ),
          );
        reject(
          new DriverError(
            'ERR_APPLY',
            `${opts.what}: the converter exited with ${sig ?? code}${stderr ? `: ${stderr.trim().slice(-2000)}` : ''}`,
          ),
        );
      });
    });
  });
}

/** Converts `tar` (a file path, or a stream) into `out`: in a child unless `LCOW_NOREEXEC=1`. */
export function convertLayer(
  tar: string | Readable | AsyncIterable<Uint8Array>,
  out: string,
  opts: { verity: boolean; signal?: AbortSignal; what: string },
): Promise<ApplyResult> {
  return process.env.LCOW_NOREEXEC === '1' ? convertInline(tar, out, opts) : convertInChild(tar, out, opts);
}
