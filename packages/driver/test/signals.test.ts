// The command ended from outside, as a real child process: SIGTERM, SIGHUP and SIGINT abort it, remove what it
// had not finished and exit 128 + the signal's number; a reader that goes away ends it quietly (141).
import { spawn } from 'node:child_process';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, pseudoRandomBytes, tempDir } from '@lcow/testkit';
import { convert } from '@lcow/ext4';

const BIN = join(import.meta.dirname, 'lcow-bin.ts');
const NODE_ARGS = ['--conditions=@lcow/source', '--import', 'tsx', BIN];
const SIGNAL_NUMBER = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-signals-');
});
afterAll(() => dir?.cleanup());

/** Resolves once `check` holds (polled every 50 ms, for at most 30 s). */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within 30 s`);
}

describe('signals and closed pipes', () => {
  const body = pseudoRandomBytes(40 << 20, 5);
  const tar = Buffer.from(makeTar([{ path: 'big', body }]));

  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
    it(`${sig} during tar2ext4 -i -: exit ${128 + SIGNAL_NUMBER[sig]}, one error line, no temporary file left`, async () => {
      const out = join(dir.path, sig);
      await mkdir(out);
      const child = spawn(process.execPath, [
        ...NODE_ARGS,
        'tar2ext4',
        '-i',
        '-',
        '-o',
        join(out, 'layer.vhd'),
        '--vhd',
      ]);
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.stdin.on('error', () => {}); // the rest of our write meets a closed pipe once the child is gone
      const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
      // Half the tar, then the pipe stays open: the converter is mid-file, its temporary output on disk.
      child.stdin.write(tar.subarray(0, 20 << 20));
      await until(async () => (await readdir(out)).some((f) => f.endsWith('.tmp')), 'the temporary output');
      child.kill(sig);
      const code = await exited;
      child.stdin.destroy();
      expect(code, stderr).toBe(128 + SIGNAL_NUMBER[sig]);
      expect(stderr).toBe(`lcow: ERR_ABORTED: interrupted by ${sig}\n`);
      expect(await readdir(out)).toEqual([]);
    }, 60_000);
  }

  it('SIGTERM while the input stalls (its writer keeps the pipe open, sends nothing): ends at once', async () => {
    const out = join(dir.path, 'stalled');
    await mkdir(out);
    const child = spawn(process.execPath, [...NODE_ARGS, 'tar2ext4', '-i', '-', '-o', join(out, 'layer.vhd')]);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdin.on('error', () => {});
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    child.stdin.write(tar.subarray(0, 2 << 20)); // all of it read long before the signal
    await until(async () => (await readdir(out)).some((f) => f.endsWith('.tmp')), 'the temporary output');
    await new Promise((r) => setTimeout(r, 1500));
    const sent = Date.now();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000))]);
    child.stdin.destroy();
    expect(code, stderr).toBe(143);
    expect(Date.now() - sent).toBeLessThan(20_000);
    expect(stderr).toBe('lcow: ERR_ABORTED: interrupted by SIGTERM\n');
    expect(await readdir(out)).toEqual([]);
  }, 60_000);

  it('a reader that closes early (ext4 export -o - | head): exit 141, nothing on stderr', async () => {
    const image = join(dir.path, 'export.img');
    await convert(Readable.from([tar]), image, { fsync: false });
    const child = spawn(process.execPath, [...NODE_ARGS, 'ext4', 'export', image, '-o', '-']);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.stdout.destroy();
    expect(await exited, stderr).toBe(141);
    expect(stderr).toBe('');
  }, 60_000);
});
