import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** True when tests run in CI, where a missing tool or privilege is a failure, never a skip. */
export const inCI: boolean = process.env.CI === 'true' || process.env.CI === '1';

/** Fails loudly in CI; elsewhere logs why a group of tests is skipped and returns false. */
function capability(what: string, ok: boolean, hint: string): boolean {
  if (ok) return true;
  if (inCI) throw new Error(`CI=true but ${what} is not available (${hint}); .ci/run must provide it`);
  console.warn(`[testkit] skipping tests that need ${what}: ${hint}`);
  return false;
}

function has(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], {
      stdio: 'ignore',
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
    });
    return true;
  } catch {
    return false;
  }
}

/** Whether an oracle tool (`qemu-img`, `e2fsck`, …) is on PATH; see {@link capability}. */
export function oracle(tool: string): boolean {
  return capability(tool, has(tool), `install it (scripts/setup.sh does)`);
}

/**
 * A reference program from `../shared/anchors` (hcsshim's converters, built for this machine; `LCOW_ANCHORS`
 * names another folder), or null with the reason logged. Not every machine has that folder, so tests that run
 * the program live are extra witnesses; the golden files recorded from it are checked everywhere.
 * `LCOW_REQUIRE_ANCHORS=1` makes a missing one a failure.
 */
export function anchor(name: string): string | null {
  const dir = process.env.LCOW_ANCHORS ?? resolve(import.meta.dirname, '../../../../shared/anchors');
  const path = join(dir, name);
  if (existsSync(path)) return path;
  const why = `${path} is not present (the golden files recorded from it are still checked)`;
  if (process.env.LCOW_REQUIRE_ANCHORS === '1') throw new Error(`LCOW_REQUIRE_ANCHORS=1 but ${why}`);
  console.warn(`[testkit] skipping live comparisons with ${name}: ${why}`);
  return null;
}

/** Whether we run as root with loop devices (for kernel mounts). */
export function rootWithLoop(): boolean {
  const root = process.getuid?.() === 0;
  return capability('root with loop devices', root && has('losetup'), root ? 'losetup missing' : 'not running as root');
}

/** Runs a command and returns stdout; rejects with stderr in the message. */
export async function run(cmd: string, args: string[], opts: { input?: string } = {}): Promise<string> {
  const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin`, LC_ALL: 'C' };
  try {
    const { stdout } = await execFileP(cmd, args, { env, maxBuffer: 64 << 20, ...opts });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; code?: number };
    throw new Error(`${cmd} ${args.join(' ')} failed (${err.code}): ${err.stderr ?? ''}${err.stdout ?? ''}`, {
      cause: e,
    });
  }
}

/** A fresh temporary folder; call the returned `cleanup` in `afterAll`. */
export async function tempDir(prefix = 'lcow-test-'): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/** Deterministic pseudo-random bytes (xorshift32), so failing cases can be replayed. */
export function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Parses a hex dump string (whitespace ignored) into bytes: hex`636f 6e65`. */
export function hex(strings: TemplateStringsArray, ...values: unknown[]): Uint8Array {
  const text = String.raw(strings, ...values).replace(/\s+/g, '');
  return Uint8Array.from(text.match(/../g) ?? [], (h) => Number.parseInt(h, 16));
}

/**
 * Asserts two byte arrays are equal, with a native compare (vitest's deep equality is slow on megabytes)
 * and a message naming the first differing offset.
 */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  if (actual.length === expected.length && Buffer.compare(actual, expected) === 0) return;
  let i = 0;
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i++;
  throw new Error(
    `${what}: differ at offset ${i} (lengths ${actual.length} and ${expected.length}; got ${actual[i]}, expected ${expected[i]})`,
  );
}

/**
 * Asks `check` until it answers true or `ms` have passed (every 20 ms), and returns its last answer: for
 * what a system finishes just after it answers (a folder deleted in the background, a timer's unmount).
 */
export async function eventually(check: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20)))
    if (await check()) return true;
  return check();
}

export { makeTar, type TarSpec } from './tar.ts';
export { snapshotTree, splitDev, type FsEntry } from './fstree.ts';

/**
 * Mounts `file` through a loop device of its own (`losetup --find`, never `mount -o loop`) and returns the
 * function that unmounts it and frees the device. util-linux's `mount -o loop` reuses a loop device that
 * is still bound to the same file, and one is for a moment after an unmount while another process
 * (any `losetup -a`/`-j` of a test beside) holds it open: the mount then fails with "already mounted or
 * mount point busy". A device of its own cannot be half-gone.
 */
export async function mountLoop(
  file: string,
  mnt: string,
  opts: { readOnly?: boolean; offset?: number; size?: number; fstype?: string } = {},
): Promise<() => Promise<void>> {
  const attach = ['--find', '--show'];
  if (opts.readOnly) attach.push('--read-only');
  if (opts.offset !== undefined) attach.push('--offset', String(opts.offset));
  if (opts.size !== undefined) attach.push('--sizelimit', String(opts.size));
  await run('mkdir', ['-p', mnt]);
  // A device of this file that an earlier unmount released is let go first.
  await loopsGone(file);
  // With loop devices coming and going in other tests beside, a mount has been seen to fail once
  // ("cannot mount read-only", "busy") and work on the next try: a few tries, each on a fresh device.
  for (let attempt = 1; ; attempt++) {
    const dev = (await run('losetup', [...attach, file])).trim();
    try {
      await run('mount', ['-t', opts.fstype ?? 'ext4', '-o', opts.readOnly ? 'ro' : 'rw', dev, mnt]);
    } catch (e) {
      await run('losetup', ['--detach', dev]).catch(() => {});
      if (attempt >= 4) throw e;
      console.warn(`[testkit] mount of ${file} failed (attempt ${attempt}), trying again: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 250 * attempt));
      continue;
    }
    return async () => {
      try {
        await run('umount', [mnt]);
      } finally {
        // Detaching a device another process still has open marks it to go when that one closes it.
        await run('losetup', ['--detach', dev]);
      }
    };
  }
}

/** Waits (up to 2 s) until no loop device is bound to `file`. */
async function loopsGone(file: string): Promise<void> {
  for (let i = 0; i < 40; i++) {
    if ((await run('losetup', ['-j', file]).catch(() => '')).trim() === '') return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Attaches `file` read-only through a loop device limited to `size` bytes, mounts it, runs `fn`, cleans up. */
export async function withLoopMount<T>(
  file: string,
  size: number,
  mnt: string,
  fn: (mnt: string) => Promise<T>,
  fstype = 'ext4',
): Promise<T> {
  const unmount = await mountLoop(file, mnt, { readOnly: true, size, fstype });
  try {
    return await fn(mnt);
  } finally {
    await unmount();
  }
}
export { printTable, runMeasured, tarOfTrees, type Measured } from './measure.ts';
export { runLimited, treeRssKiB, type LimitedRun } from './limits.ts';
export { runReadmeExample } from './readme.ts';

/**
 * Milliseconds of CPU this process has used (user + system, every thread). Per-case bounds in fuzz tests
 * use it rather than the wall clock: a busy machine slows the clock, not the work a quadratic loop does.
 */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
export { makeCerts, skopeoCopy, startRegistry, type Registry } from './registry.ts';
export {
  config as imageConfig,
  dockerSave,
  layerTars,
  multiPlatformLayout,
  ociManifest,
  sha,
  skopeo,
} from './images.ts';
export { startDockerd, type Dockerd } from './dockerd.ts';
export { startContainerd, type Containerd } from './containerd.ts';
export { PARITY_CAP, PARITY_MTIME, buildOps, parityLayers } from './parity.ts';
