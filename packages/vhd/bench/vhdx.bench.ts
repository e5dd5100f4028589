// pnpm bench (in packages/vhd, or from the root): sequential write and read throughput through a VHDX,
// beside a plain file on the same data, and qemu-img's raw→VHDX conversion beside ours. Each case runs in
// its own process so its peak RSS is its own. Size: LCOW_BENCH_MB (default 512).
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { printTable, runMeasured } from '@lcow/testkit';
import { convertRawImage, createVhdx, openVhdx } from '../src/index.ts';

const execFileP = promisify(execFile);
const MiB = 1 << 20;
const CHUNK = MiB;
const totalMiB = Number(process.env.LCOW_BENCH_MB ?? 512);
const total = totalMiB * MiB;

/** Non-zero, non-repeating-per-MiB data, so nothing is skipped as zeros and nothing compresses. */
function chunkData(i: number, buf: Uint8Array): Uint8Array {
  const v = new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  let x = (i * 2654435761) >>> 0 || 1;
  for (let k = 0; k < v.length; k++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    v[k] = x >>> 0;
  }
  return buf;
}

const cases: Record<string, (dir: string) => Promise<void>> = {
  async 'plain file write'(dir) {
    const fh = await open(join(dir, 'plain.raw'), 'w');
    const buf = new Uint8Array(CHUNK);
    for (let i = 0; i < total / CHUNK; i++) await fh.write(chunkData(i, buf), 0, CHUNK, i * CHUNK);
    await fh.sync();
    await fh.close();
  },
  async 'plain file read'(dir) {
    const fh = await open(join(dir, 'plain.raw'), 'r');
    const buf = new Uint8Array(CHUNK);
    for (let at = 0; at < total; at += CHUNK) await fh.read(buf, 0, CHUNK, at);
    await fh.close();
  },
  async 'dynamic VHDX write'(dir) {
    const p = join(dir, 'dyn.vhdx');
    await createVhdx(p, { size: total, overwrite: true });
    const d = await openVhdx(p, { writable: true });
    const buf = new Uint8Array(CHUNK);
    for (let i = 0; i < total / CHUNK; i++) await d.write(i * CHUNK, chunkData(i, buf));
    await d.close();
  },
  async 'dynamic VHDX read'(dir) {
    const d = await openVhdx(join(dir, 'dyn.vhdx'));
    const buf = new Uint8Array(CHUNK);
    for (let at = 0; at < total; at += CHUNK) await d.readInto(buf, at);
    await d.close();
  },
  async 'fixed VHDX write'(dir) {
    const p = join(dir, 'fixed.vhdx');
    await createVhdx(p, { size: total, type: 'fixed', overwrite: true });
    const d = await openVhdx(p, { writable: true });
    const buf = new Uint8Array(CHUNK);
    for (let i = 0; i < total / CHUNK; i++) await d.write(i * CHUNK, chunkData(i, buf));
    await d.close();
  },
  async 'raw → VHDX, ours'(dir) {
    await convertRawImage(join(dir, 'plain.raw'), join(dir, 'ours.vhdx'), { format: 'vhdx', overwrite: true });
  },
  async 'raw → VHDX, qemu-img'(dir) {
    const args = [
      'convert',
      '-f',
      'raw',
      '-O',
      'vhdx',
      '-o',
      'block_size=1M',
      join(dir, 'plain.raw'),
      join(dir, 'qemu.vhdx'),
    ];
    externalRssKiB = (await runMeasured('qemu-img', args)).rssKiB;
  },
};

let externalRssKiB = 0;

async function child(name: string, dir: string): Promise<void> {
  const started = process.hrtime.bigint();
  await cases[name]!(dir);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(JSON.stringify({ seconds, maxRssKiB: externalRssKiB || process.resourceUsage().maxRSS }));
}

async function parent(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lcow-bench-'));
  const hasQemu = (() => {
    try {
      execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  const rows: string[][] = [];
  try {
    for (const name of Object.keys(cases)) {
      if (name.includes('qemu') && !hasQemu) {
        rows.push([name, '(qemu-img not installed)', '', '']);
        continue;
      }
      const args = ['--conditions=@lcow/source', '--import', 'tsx', import.meta.filename, name, dir];
      const { stdout } = await execFileP(process.execPath, args, { maxBuffer: 1 << 20 });
      const r = JSON.parse(stdout) as { seconds: number; maxRssKiB: number };
      rows.push([
        name,
        `${(totalMiB / r.seconds).toFixed(0)} MiB/s`,
        `${r.seconds.toFixed(2)} s`,
        `${(r.maxRssKiB / 1024).toFixed(0)} MiB`,
      ]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  console.log(
    `\n@lcow/vhd: ${totalMiB} MiB sequential, 1 MiB I/Os, fsync at the end of writes (peak RSS: of each case's own node process; for qemu-img, of qemu-img itself)\n`,
  );
  printTable(['case', 'throughput', 'time', 'peak RSS'], rows);
}

if (process.argv[2]) await child(process.argv[2], process.argv[3]!);
else await parent();
