import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { execFile } from 'node:child_process';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { expect } from 'vitest';
import { run, snapshotTree, withLoopMount, type FsEntry } from '@lcow/testkit';
import { convert, type ConvertOptions, type ConvertResult, type Ext4Fs, type PathLike } from '../src/index.ts';

let n = 0;

/** Converts tar bytes with our writer, checks the image with `e2fsck -fn`, and returns paths and result. */
export async function convertChecked(
  dir: string,
  tar: Uint8Array,
  opts: ConvertOptions = {},
): Promise<{ image: string; result: ConvertResult }> {
  const id = n++;
  const tarPath = join(dir, `in${id}.tar`);
  await writeFile(tarPath, tar);
  const image = join(dir, `out${id}.${opts.appendVhdFooter ? 'vhd' : 'img'}`);
  const result = await convert(createReadStream(tarPath), image, opts);
  expect((await stat(image)).size).toBe(result.size);
  await run('e2fsck', ['-fn', image]);
  return { image, result };
}

/** Mounts an image read-only (the footer hidden by the size limit) and snapshots it. */
export function mountedTree(image: string, result: ConvertResult, mnt: string): Promise<Map<string, FsEntry>> {
  return withLoopMount(image, result.bytes, mnt, (m) => snapshotTree(m, { skip: (rel) => rel === 'lost+found' }));
}

/** No temporary files left next to an output. */
export async function expectNoLeftovers(dir: string): Promise<void> {
  expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
}

/** Whole seconds of a nanosecond time, rounded down (as filesystems without nanoseconds store it). */
function floorSeconds(ns: bigint): bigint {
  const q = ns / 10n ** 9n;
  return ns % 10n ** 9n < 0n ? q - 1n : q;
}

/** Compares two trees (ours or the kernel's against a witness), entry by entry. */
export function compareTrees(
  got: Map<string, FsEntry>,
  want: Map<string, FsEntry>,
  opts: { nlink?: boolean; wholeSeconds?: boolean; rootTime?: boolean } = {},
): void {
  const missing = [...want.keys()].filter((k) => !got.has(k));
  const extra = [...got.keys()].filter((k) => !want.has(k));
  expect({ missing: missing.slice(0, 10), extra: extra.slice(0, 10) }).toEqual({ missing: [], extra: [] });
  for (const [path, w] of want) {
    const g = got.get(path)!;
    // The root differs by design: it holds lost+found (one more link) and takes no time from the tar.
    const strip = (e: FsEntry) => ({
      ...e,
      nlink: opts.nlink && path !== '' ? e.nlink : 0,
      mtimeNs: path === '' && !opts.rootTime ? 0n : opts.wholeSeconds ? floorSeconds(e.mtimeNs) * 10n ** 9n : e.mtimeNs,
    });
    if (
      JSON.stringify(strip(g), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) !==
      JSON.stringify(strip(w), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))
    ) {
      expect({ path, ...strip(g) }).toEqual({ path, ...strip(w) });
    }
  }
}

/**
 * What our reader sees under `root`, in the shape of testkit's `snapshotTree` (paths as latin1 byte
 * strings, xattr values as hex), so the two can be compared directly.
 */
export async function readerTree(
  fs: Ext4Fs,
  root: PathLike = '/',
  opts: { skip?: (rel: string) => boolean; xattrs?: boolean } = {},
): Promise<Map<string, FsEntry>> {
  const out = new Map<string, FsEntry>();
  const skipped: string[] = [];
  for await (const e of fs.walk(root)) {
    const rel = e.raw.toString('latin1');
    if (skipped.some((s) => rel.startsWith(`${s}/`))) continue;
    if (rel && opts.skip?.(rel)) {
      skipped.push(rel);
      continue;
    }
    const st = e.stat;
    let sha256: string | null = null;
    if (st.type === 'file') {
      const h = createHash('sha256');
      for await (const c of e.content()) h.update(c);
      sha256 = h.digest('hex');
    }
    const xattrs: Record<string, string> = {};
    if (opts.xattrs !== false) for (const [k, v] of await e.xattrs()) xattrs[k] = Buffer.from(v).toString('hex');
    out.set(rel, {
      type: st.type,
      mode: st.mode,
      uid: st.uid,
      gid: st.gid,
      size: st.type === 'file' || st.type === 'symlink' ? st.size : null,
      sha256,
      target: st.type === 'symlink' ? (await e.readlink()).toString('latin1') : null,
      rdev: st.rdev ? [st.rdev.major, st.rdev.minor] : null,
      xattrs,
      mtimeNs: BigInt(st.mtime.sec) * 10n ** 9n + BigInt(st.mtime.nsec),
      nlink: st.nlink,
    });
  }
  return out;
}

const execFileP = promisify(execFile);
const TYPE_BITS = {
  file: 0o100000,
  dir: 0o40000,
  symlink: 0o120000,
  chr: 0o20000,
  blk: 0o60000,
  fifo: 0o10000,
  socket: 0o140000,
};

/** A directory listing: name (latin1) → [inode, full mode, uid, gid, size (0 for directories and devices)]. */
export type Listing = Map<string, Map<string, number[]>>;

/** Directories as debugfs lists them (`ls -p`, one debugfs run for all); `work` holds its command file. */
export async function debugfsListing(image: string, dirs: string[], work: string): Promise<Listing> {
  const cmds = join(work, `debugfs-${n++}.cmds`);
  await writeFile(cmds, dirs.map((d) => `ls -p "/${d}"`).join('\n') + '\n');
  const { stdout } = await execFileP('debugfs', ['-f', cmds, image], { maxBuffer: 1 << 28, encoding: 'latin1' });
  const out: Listing = new Map();
  let cur: Map<string, number[]> | null = null;
  for (const line of stdout.split('\n')) {
    const cmd = /^debugfs: ls -p "\/(.*)"$/.exec(line);
    if (cmd) {
      cur = new Map();
      out.set(cmd[1]!, cur);
      continue;
    }
    // debugfs prints no size for directories, and an empty slot (inode 0) in inline directories.
    const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
    if (m && cur && m[5] !== '.' && m[5] !== '..' && m[1] !== '0')
      cur.set(m[5]!, [Number(m[1]), Number.parseInt(m[2]!, 8), Number(m[3]), Number(m[4]), Number(m[6] || 0)]);
  }
  return out;
}

/** The same listing through our reader. */
export async function readerListing(fs: Ext4Fs, dirs: string[]): Promise<Listing> {
  const out: Listing = new Map();
  for (const d of dirs) {
    const m = new Map<string, number[]>();
    for (const e of await fs.readdir(Buffer.from(`/${d}`, 'latin1'))) {
      const st = await fs.lstat(Buffer.concat([Buffer.from(`/${d}/`, 'latin1'), e.raw]));
      const size = st.type === 'file' || st.type === 'symlink' ? st.size : 0;
      m.set(e.raw.toString('latin1'), [e.ino, TYPE_BITS[st.type] | st.mode, st.uid, st.gid, size]);
    }
    out.set(d, m);
  }
  return out;
}

/** Directories whose paths debugfs's quoting can pass (printable ASCII, no double quote). */
export function debugfsSafe(path: string): boolean {
  return /^[\x20-\x7e]*$/.test(path) && !path.includes('"');
}
