// Runs a command the way a hostile-input test needs: in its own process group, killed with everything it
// started when it passes a time or memory limit, with the peak RSS of the whole tree recorded.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** What {@link runLimited} saw. */
export interface LimitedRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** Highest sum of the resident sets of the process and its descendants, sampled every 20 ms. */
  peakRssMiB: number;
  seconds: number;
  /** Killed for passing `timeoutMs` or `maxRssMiB`. */
  timedOut: boolean;
  overMemory: boolean;
}

/** Resident memory of a process and all its descendants, now (KiB). */
export function treeRssKiB(pid: number, depth = 0): number {
  let kib = 0;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (m) kib += Number(m[1]);
    if (depth < 8)
      for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean))
        kib += treeRssKiB(Number(c), depth + 1);
  } catch {
    // gone between samples
  }
  return kib;
}

/**
 * Runs `cmd args…` with `input` (bytes, or none) on stdin. Past `timeoutMs` of wall time or `maxRssMiB`
 * of resident memory (the whole process tree), the group is SIGKILLed and the run says which limit it hit.
 */
export function runLimited(
  cmd: string,
  args: readonly string[],
  opts: {
    timeoutMs: number;
    maxRssMiB: number;
    /** Bytes for stdin, or a generator streamed with backpressure (a tar far larger than memory). */
    input?: Uint8Array | AsyncIterable<Uint8Array>;
    env?: NodeJS.ProcessEnv;
    cwd?: string;
  },
): Promise<LimitedRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // its own process group, so the kill reaches what it started
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    const out: Buffer[] = [];
    let err = '';
    let peak = 0;
    let timedOut = false;
    let overMemory = false;
    const killAll = (): void => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.on('error', () => {}); // it may stop reading: its own error says why
    const input = opts.input ?? Buffer.alloc(0);
    if (input instanceof Uint8Array) child.stdin.end(input);
    else
      void (async () => {
        for await (const c of input) {
          if (child.stdin.destroyed) return;
          if (!child.stdin.write(c)) await new Promise((r) => child.stdin.once('drain', r).once('close', r));
        }
        child.stdin.end();
      })().catch(() => child.stdin.destroy());
    const sampler = setInterval(() => {
      const kib = treeRssKiB(child.pid!);
      peak = Math.max(peak, kib);
      if (kib > opts.maxRssMiB * 1024) {
        overMemory = true;
        killAll();
      }
    }, 20);
    const timer = setTimeout(() => {
      timedOut = true;
      killAll();
    }, opts.timeoutMs);
    child.on('error', (e) => {
      clearInterval(sampler);
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (status, signal) => {
      clearInterval(sampler);
      clearTimeout(timer);
      killAll(); // nothing it started outlives it
      resolve({
        status,
        signal,
        stdout: Buffer.concat(out),
        stderr: err,
        peakRssMiB: Math.round(peak / 1024),
        seconds: (performance.now() - started) / 1000,
        timedOut,
        overMemory,
      });
    });
  });
}
