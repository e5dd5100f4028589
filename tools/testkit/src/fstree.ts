import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** What a test compares about one filesystem entry. */
export interface FsEntry {
  type: 'file' | 'dir' | 'symlink' | 'chr' | 'blk' | 'fifo' | 'socket';
  mode: number;
  uid: number;
  gid: number;
  size: number | null;
  sha256: string | null;
  target: string | null;
  rdev: [number, number] | null;
  /** Extended attributes as hex, by name. */
  xattrs: Record<string, string>;
  mtimeNs: bigint;
  nlink: number;
}

function typeOf(mode: number): FsEntry['type'] {
  switch (mode & 0o170000) {
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'dir';
    case 0o120000:
      return 'symlink';
    case 0o020000:
      return 'chr';
    case 0o060000:
      return 'blk';
    case 0o010000:
      return 'fifo';
    default:
      return 'socket';
  }
}

/** Linux dev_t → [major, minor] (glibc's gnu_dev_major/minor). */
export function splitDev(rdev: number): [number, number] {
  const d = BigInt(rdev);
  const major = Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn));
  const minor = Number((d & 0xffn) | ((d >> 12n) & ~0xffn));
  return [major, minor];
}

/** All extended attributes under `root`, by relative path (needs getfattr from the attr package). */
async function xattrsUnder(root: string): Promise<Map<string, Record<string, string>>> {
  const out = new Map<string, Record<string, string>>();
  let text = '';
  try {
    ({ stdout: text } = await execFileP(
      'getfattr',
      ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root],
      { maxBuffer: 1 << 28 },
    ));
  } catch (e) {
    text = (e as { stdout?: string }).stdout ?? '';
  }
  let cur: Record<string, string> | null = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const p = line.slice(8);
      const rel = p === root ? '' : p.slice(root.length + 1);
      cur = {};
      out.set(rel, cur);
    } else if (cur && line.includes('=')) {
      const eq = line.indexOf('=');
      cur[line.slice(0, eq)] = line.slice(eq + 1).replace(/^0x/, '');
    }
  }
  return out;
}

/** Walks a mounted tree (not following symlinks) into comparable entries, keyed by relative path. */
export async function snapshotTree(
  root: string,
  opts: { skip?: (rel: string) => boolean; xattrs?: boolean } = {},
): Promise<Map<string, FsEntry>> {
  const out = new Map<string, FsEntry>();
  const attrs = opts.xattrs === false ? new Map() : await xattrsUnder(root);
  // Paths are bytes: names that are not UTF-8 must reach the kernel unchanged, so they go as Buffers.
  const rootBytes = Buffer.from(root);
  const pathOf = (rel: string): Buffer =>
    rel ? Buffer.concat([rootBytes, Buffer.from('/'), Buffer.from(rel, 'latin1')]) : rootBytes;
  const walk = async (rel: string): Promise<void> => {
    const abs = pathOf(rel);
    const st = await lstat(abs, { bigint: true });
    const type = typeOf(Number(st.mode));
    out.set(rel, {
      type,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: type === 'file' || type === 'symlink' ? Number(st.size) : null,
      sha256:
        type === 'file'
          ? createHash('sha256')
              .update(await readFile(abs))
              .digest('hex')
          : null,
      target: type === 'symlink' ? (await readlink(abs, { encoding: 'buffer' })).toString('latin1') : null,
      rdev: type === 'chr' || type === 'blk' ? splitDev(Number(st.rdev)) : null,
      xattrs: attrs.get(rel) ?? {},
      mtimeNs: st.mtimeNs,
      nlink: Number(st.nlink),
    });
    if (type === 'dir') {
      const names = (await readdir(abs, { encoding: 'buffer' })).map((b) => b.toString('latin1')).sort();
      for (const name of names) {
        const child = rel ? `${rel}/${name}` : name;
        if (!opts.skip?.(child)) await walk(child);
      }
    }
  };
  await walk('');
  return out;
}
