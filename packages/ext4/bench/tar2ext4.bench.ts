// pnpm bench (in packages/ext4, or from the root): converts one large real tar — GNU tar of /usr/share and
// /usr/local, made here at bench time — with our converter (our layout and hcsshim's), hcsshim's tar2ext4 (the tool Windows hosts
// run), tar -x + mkfs.ext4 -d, and a plain copy. Each case runs 3 times in its own process; the table
// shows the best and median wall time, in rounds,, throughput over the tar size, and the peak RSS of that process.
// Outputs go to /dev/shm when it exists, so the disk's writeback noise does not decide the ranking.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { printTable, runMeasured, tarOfTrees } from '@lcow/testkit';

const here = import.meta.dirname;
const anchor = resolve(here, '../../../../shared/anchors/hcsshim-tar2ext4');
const trees = (process.env.LCOW_BENCH_TREES ?? '/usr/share /usr/local').split(/\s+/).filter(Boolean);
const runs = Number(process.env.LCOW_BENCH_RUNS ?? 3);
const outRoot = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };

interface Sample {
  seconds: number;
  rssKiB: number;
}

const measure = (cmd: string, args: string[]): Promise<Sample> => runMeasured(cmd, args, env);

function hasTool(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { env, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'lcow-bench-'));
  const out = await mkdtemp(join(outRoot, 'lcow-bench-out-'));
  try {
    const tar = join(work, 'input.tar');
    const { bytes: tarBytes, dirs } = tarOfTrees(tar, trees);
    const entries = Number(
      execFileSync('sh', ['-c', `tar -tf '${tar}' | wc -l`])
        .toString()
        .trim(),
    );
    const ours = `import(${JSON.stringify(resolve(here, '../dist/index.js'))}).then((m) => m.convert(process.argv[1], process.argv[2], { convertWhiteouts: true, appendVhdFooter: true, fsync: false }))`;
    const cases: [string, () => Promise<Sample>][] = [
      [
        '@lcow/ext4 convert (whiteouts, VHD footer)',
        () => measure(process.execPath, ['-e', ours, tar, join(out, 'ours.vhd')]),
      ],
    ];
    const oursHcsshim = ours.replace('fsync: false', "fsync: false, layout: 'hcsshim'");
    cases.push([
      '@lcow/ext4 convert, layout hcsshim',
      () => measure(process.execPath, ['-e', oursHcsshim, tar, join(out, 'ours.vhd')]),
    ]);
    const oursVerity = ours.replace('fsync: false', 'fsync: false, verity: true');
    cases.push([
      '@lcow/ext4 convert + dm-verity',
      () => measure(process.execPath, ['-e', oursVerity, tar, join(out, 'ours.vhd')]),
    ]);
    if (existsSync(anchor)) {
      cases.push([
        'hcsshim tar2ext4 -overlay -vhd',
        () => measure(anchor, ['-i', tar, '-o', join(out, 'hcsshim.vhd'), '-overlay', '-vhd']),
      ]);
      cases.push([
        'hcsshim tar2ext4 -overlay -vhd -verity',
        () => measure(anchor, ['-i', tar, '-o', join(out, 'hcsshim.vhd'), '-overlay', '-vhd', '-verity']),
      ]);
    }
    cases.push([
      'tar -x, then mkfs.ext4 -d',
      async () => {
        const tree = join(out, 'tree');
        await rm(tree, { recursive: true, force: true });
        await mkdir(tree);
        const x = await measure('tar', ['-xf', tar, '-C', tree]);
        const img = join(out, 'mkfs.img');
        await rm(img, { force: true });
        execFileSync('truncate', ['-s', String(Math.ceil((tarBytes * 1.3) / 4096) * 4096 + (64 << 20)), img]);
        const m = await measure('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', '-d', tree, img]);
        await rm(tree, { recursive: true, force: true });
        return { seconds: x.seconds + m.seconds, rssKiB: Math.max(x.rssKiB, m.rssKiB) };
      },
    ]);
    if (hasTool('veritysetup')) {
      // The same hash tree made by cryptsetup's tool over our image (converted once, outside the timing).
      const plain = join(out, 'plain.img');
      execFileSync(process.execPath, [
        '-e',
        ours.replace('appendVhdFooter: true', 'appendVhdFooter: false'),
        tar,
        plain,
      ]);
      cases.push([
        'veritysetup format of that image (its hash tree only)',
        () =>
          measure('veritysetup', [
            'format',
            '--data-block-size=4096',
            '--hash-block-size=4096',
            `--salt=${'0'.repeat(64)}`,
            plain,
            join(out, 'plain.hash'),
          ]),
      ]);
    }
    cases.push(['plain copy of the tar (cp)', () => measure('cp', [tar, join(out, 'copy.tar')])]);

    // Rounds go case by case (ours, hcsshim, mkfs, cp, then again), so a slow phase of the machine
    // (writeback, page reclaim) hits every case alike instead of one case's three runs.
    const samples = new Map<string, Sample[]>(cases.map(([name]) => [name, []]));
    for (let i = 0; i < runs; i++) {
      for (const [name, run] of cases) {
        execFileSync('sync');
        samples.get(name)!.push(await run());
        for (const f of ['ours.vhd', 'hcsshim.vhd', 'copy.tar', 'mkfs.img', 'plain.hash'])
          await rm(join(out, f), { force: true });
      }
    }
    const rows: string[][] = [];
    let reference = 0;
    for (const [name] of cases) {
      const got = samples.get(name)!;
      const times = got.map((s) => s.seconds).sort((a, b) => a - b);
      const best = times[0]!;
      const median = times[Math.floor(times.length / 2)]!;
      if (name === 'hcsshim tar2ext4 -overlay -vhd') reference = best;
      const rss = Math.max(...got.map((s) => s.rssKiB));
      rows.push([
        name,
        `${best.toFixed(2)} s`,
        `${median.toFixed(2)} s`,
        `${(tarBytes / 1e6 / best).toFixed(0)} MB/s`,
        `${(rss / 1024).toFixed(0)} MB`,
        String(best),
      ]);
    }
    for (const r of rows) r[5] = reference ? `${(reference / Number(r[5])).toFixed(2)}× hcsshim` : '';
    console.log(
      `\n@lcow/ext4: ${(tarBytes / 1e6).toFixed(0)} MB tar, ${entries} entries (${dirs.map((d) => `/${d}`).join(' ')}); ${runs} runs each; outputs on ${outRoot}`,
    );
    if (!existsSync(anchor)) console.log(`(hcsshim-tar2ext4 not found at ${anchor}: its row is left out)`);
    printTable(['case', 'best', 'median', 'throughput (best)', 'peak RSS', 'speed'], rows);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
}

await main();
