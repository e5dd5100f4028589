import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { treeRssKiB } from './limits.ts';

/** Wall time and peak RSS of one child process. */
export interface Measured {
  seconds: number;
  rssKiB: number;
  /** With `tree`: the peak of the whole process tree's resident memory, summed (KiB). */
  treeRssKiB?: number;
  stdout: string;
}

/**
 * Runs a command and samples its VmHWM (peak RSS) from /proc while it runs — Node cannot read a child's
 * rusage. Rejects with the start of stderr when the command fails.
 */
export function runMeasured(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  opts: { tree?: boolean } = {},
): Promise<Measured> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let rss = 0;
    let tree = 0;
    let ticks = 0;
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) rss = Math.max(rss, Number(m[1]));
        // The tree is walked every 20 ms: walking it every 2 ms would take CPU from what is measured.
        if (opts.tree && ++ticks % 10 === 0) tree = Math.max(tree, treeRssKiB(child.pid!));
      } catch {
        // exited between samples
      }
    }, 2);
    child.on('error', reject);
    child.on('close', (code) => {
      clearInterval(timer);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code === 0) resolve({ seconds, rssKiB: rss, ...(opts.tree ? { treeRssKiB: tree } : {}), stdout: out });
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.slice(0, 500)}`));
    });
  });
}

/** Prints rows as an aligned text table with a header rule. */
export function printTable(head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => (c ?? '').padEnd(w[i]!))
      .join('  ')
      .trimEnd();
  console.log(line(head));
  console.log(line(w.map((n) => '-'.repeat(n))));
  for (const r of rows) console.log(line(r));
}

/**
 * The benchmarks' real input: a GNU tar (pax format) of the folders of `trees` that exist on this machine,
 * written to `path`. Returns its size and the folders it holds.
 */
export function tarOfTrees(path: string, trees: string[]): { bytes: number; dirs: string[] } {
  const dirs = trees.filter((t) => existsSync(t)).map((t) => t.replace(/^\//, ''));
  process.stderr.write(`bench: making the input: tar of ${dirs.map((d) => `/${d}`).join(' ')} …\n`);
  execFileSync('tar', ['--format=posix', '-C', '/', '-cf', path, ...dirs], { stdio: 'ignore' });
  return { bytes: statSync(path).size, dirs };
}
