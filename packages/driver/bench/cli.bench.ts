// pnpm bench (in packages/driver, or from the root): the `lcow` command as users run it — a whole process,
// start-up, argument parsing and progress included — each row beside what it replaces, from the same run:
//  1. tar2ext4 of a real tar (GNU tar of /usr/share and /usr/local, made here) beside hcsshim's tar2ext4
//     (the converter Windows hosts run) and a plain copy; with and without our default fsync;
//  2. the dm-verity root digest of that tar in hcsshim's layout beside `hcsshim-tar2ext4 -digest`;
//  3. memory flat in the tar's size: synthetic tars of 1 and 10 GiB (made on the fly, streamed through a
//     pipe, never stored) converted by `lcow tar2ext4 -i -`;
//  4. cold start: `lcow --help` and `lcow vhd info` beside `node -e ""` (Node alone).
// Outputs go to /dev/shm when it exists (the disk's writeback noise does not decide the ranking); the
// large-tar rows write to the temporary folder's disk, which has room for them.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { printTable, runMeasured, tarOfTrees, type Measured } from '@lcow/testkit';

const here = import.meta.dirname;
const anchor = resolve(here, '../../../../shared/anchors/hcsshim-tar2ext4');
const bin = resolve(here, '../bin.js');
const runs = Number(process.env.LCOW_BENCH_RUNS ?? 3);
const trees = (process.env.LCOW_BENCH_TREES ?? '/usr/share /usr/local').split(/\s+/).filter(Boolean);
const largeGiB = (process.env.LCOW_BENCH_LARGE_GIB ?? '1 10').split(/\s+/).filter(Boolean).map(Number);
const outRoot = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Best, median and the peak RSS of each case over `runs` rounds, the cases taking turns in each round. */
async function rounds(
  cases: [string, () => Promise<Measured>][],
  n: number,
  outputs: string,
): Promise<Map<string, Measured[]>> {
  const got = new Map<string, Measured[]>(cases.map(([name]) => [name, []]));
  for (let r = 0; r < n; r++) {
    for (const [name, run] of cases) {
      execFileSync('sync');
      got.get(name)!.push(await run());
      for (const f of await readdir(outputs)) await rm(join(outputs, f), { force: true });
    }
  }
  return got;
}

/**
 * A tar of `bytes` of regular files (1 MiB each, 100 per directory), written to `out` as it is made: the
 * headers are built here, the bodies are one reused buffer, so the generator costs little beside the
 * converter it feeds.
 */
function syntheticTar(bytes: number, out: NodeJS.WritableStream): Promise<void> {
  const body = Buffer.alloc(1 << 20);
  for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE(Math.imul(i, 2654435761) >>> 0, i);
  const header = (name: string, size: number, type: '0' | '5'): Buffer => {
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, 'latin1');
    h.write(type === '5' ? '0000755\0' : '0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
    h.write('14700000000\0', 136);
    h.write('        ', 148);
    h.write(type, 156);
    h.write('ustar\u000000', 257, 'latin1');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    return h;
  };
  const files = Math.ceil(bytes / body.length);
  return new Promise((done, fail) => {
    let i = 0;
    out.on('error', fail);
    const more = (): void => {
      while (i < files) {
        const parts: Buffer[] = [];
        if (i % 100 === 0) parts.push(header(`d${i / 100}/`, 0, '5'));
        parts.push(header(`d${Math.floor(i / 100)}/f${i}`, body.length, '0'), body);
        i++;
        if (!out.write(Buffer.concat(parts))) {
          out.once('drain', more);
          return;
        }
      }
      out.end(Buffer.alloc(1024), () => done());
    };
    more();
  });
}

/** Runs `node bin.js tar2ext4 -i - …` fed by the synthetic tar; the peak RSS is the converter's alone. */
function convertSynthetic(bytes: number, output: string): Promise<Measured> {
  return new Promise((done, fail) => {
    const started = process.hrtime.bigint();
    const child = spawn(bin, ['tar2ext4', '-i', '-', '-o', output, '--vhd', '--no-fsync', '--force'], {
      stdio: ['pipe', 'ignore', 'pipe'],
      env,
    });
    let err = '';
    let rss = 0;
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) rss = Math.max(rss, Number(m[1]));
      } catch {
        // exited between samples
      }
    }, 20);
    syntheticTar(bytes, child.stdin).catch(() => {});
    child.on('error', fail);
    child.on('close', (code) => {
      clearInterval(timer);
      if (code !== 0) fail(new Error(`lcow tar2ext4 -i - exited ${code}: ${err.slice(0, 500)}`));
      else done({ seconds: Number(process.hrtime.bigint() - started) / 1e9, rssKiB: rss, stdout: '' });
    });
  });
}

/** Best wall time of `n` runs of a short command (start-up costs, so more runs and the minimum). */
function coldStart(cmd: string, args: string[], n: number): { best: number; median: number } {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    execFileSync(cmd, args, { stdio: 'ignore', env });
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return { best: Math.min(...times), median: median(times) };
}

async function main(): Promise<void> {
  if (!existsSync(resolve(here, '../dist/cli/main.js'))) throw new Error('bench: build first (pnpm build)');
  const work = await mkdtemp(join(tmpdir(), 'lcow-bench-cli-'));
  const out = await mkdtemp(join(outRoot, 'lcow-bench-cli-out-'));
  try {
    const tar = join(work, 'input.tar');
    const { bytes: tarBytes, dirs } = tarOfTrees(tar, trees);
    const lcow =
      (...args: string[]) =>
      (): Promise<Measured> =>
        runMeasured(bin, args, env);
    const image = join(out, 'out.vhd');
    const hasAnchor = existsSync(anchor);

    // 1 and 2: the real tar.
    const cases: [string, () => Promise<Measured>][] = [
      [
        'lcow tar2ext4 --vhd --whiteouts --no-fsync',
        lcow('tar2ext4', '-i', tar, '-o', image, '--vhd', '--whiteouts', '--no-fsync', '--force'),
      ],
      [
        'lcow tar2ext4 --vhd --whiteouts (fsync)',
        lcow('tar2ext4', '-i', tar, '-o', image, '--vhd', '--whiteouts', '--force'),
      ],
    ];
    if (hasAnchor)
      cases.push([
        'hcsshim-tar2ext4 -overlay -vhd',
        () => runMeasured(anchor, ['-i', tar, '-o', join(out, 'hcsshim.vhd'), '-overlay', '-vhd'], env),
      ]);
    cases.push(['lcow verity digest --layout hcsshim', lcow('verity', 'digest', tar, '--layout', 'hcsshim')]);
    if (hasAnchor) cases.push(['hcsshim-tar2ext4 -digest', () => runMeasured(anchor, ['-i', tar, '-digest'], env)]);
    cases.push(['cp of the tar', () => runMeasured('cp', [tar, join(out, 'copy.tar')], env)]);
    const got = await rounds(cases, runs, out);
    const reference = (name: string): number | null => {
      const r = got.get(name);
      return r ? Math.min(...r.map((m) => m.seconds)) : null;
    };
    const refConvert = reference('hcsshim-tar2ext4 -overlay -vhd');
    const refDigest = reference('hcsshim-tar2ext4 -digest');
    const rows = cases.map(([name]) => {
      const ms = got.get(name)!;
      const best = Math.min(...ms.map((m) => m.seconds));
      const ref = name.includes('digest') ? refDigest : refConvert;
      return [
        name,
        `${best.toFixed(2)} s`,
        `${median(ms.map((m) => m.seconds)).toFixed(2)} s`,
        `${(tarBytes / 1e6 / best).toFixed(0)} MB/s`,
        `${(Math.max(...ms.map((m) => m.rssKiB)) / 1024).toFixed(0)} MB`,
        ref && !name.startsWith('cp') ? `${(ref / best).toFixed(2)}×` : '',
      ];
    });
    console.log(
      `\nlcow CLI: ${(tarBytes / 1e6).toFixed(0)} MB tar of ${dirs.map((d) => `/${d}`).join(' ')}; ${runs} rounds; outputs on ${outRoot}`,
    );
    if (!hasAnchor) console.log(`(hcsshim-tar2ext4 not found at ${anchor}: its rows are left out)`);
    printTable(['case', 'best', 'median', 'throughput', 'peak RSS', 'vs hcsshim (best)'], rows);

    // 3: memory against the tar's size.
    const large: string[][] = [];
    for (const gib of largeGiB) {
      const bytes = gib * 2 ** 30;
      const output = join(work, 'large.vhd');
      const m = await convertSynthetic(bytes, output);
      await rm(output, { force: true });
      large.push([
        `lcow tar2ext4 -i - (synthetic ${gib} GiB, 1 MiB files)`,
        `${m.seconds.toFixed(1)} s`,
        `${(bytes / 1e6 / m.seconds).toFixed(0)} MB/s`,
        `${(m.rssKiB / 1024).toFixed(0)} MB`,
      ]);
    }
    console.log('\nMemory against tar size (a pipe into the converter; output on the disk, no fsync)');
    printTable(['case', 'time', 'throughput', 'peak RSS'], large);

    // 4: cold start.
    const probe = join(out, 'probe.vhd');
    execFileSync(process.execPath, [bin, 'vhd', 'create', probe, '--size', '1G'], { stdio: 'ignore', env });
    const starts: [string, string[]][] = [
      ['node -e "" (Node alone)', ['-e', '']],
      ['lcow --help', [bin, '--help']],
      ['lcow vhd info (1 GiB VHDX)', [bin, 'vhd', 'info', probe]],
    ];
    console.log('\nCold start (whole process, 20 runs)');
    printTable(
      ['command', 'best', 'median'],
      starts.map(([name, args]) => {
        const t = args[0] === bin ? coldStart(bin, args.slice(1), 20) : coldStart(process.execPath, args, 20);
        return [name, `${t.best.toFixed(0)} ms`, `${t.median.toFixed(0)} ms`];
      }),
    );
  } finally {
    // A failure above is what gets reported, not a folder the failed child was still writing into.
    await rm(work, { recursive: true, force: true, maxRetries: 3 }).catch(() => {});
    await rm(out, { recursive: true, force: true, maxRetries: 3 }).catch(() => {});
  }
}

await main();
