import { writeFileWhole } from '../output.ts';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Ext4Fs, exportTar, type Ext4Stat } from '@lcow/ext4';
import { DriverError } from '../../errors.ts';
import { flag, option, positional } from '../args.ts';
import { escapeName, formatBytes, toJson } from '../format.ts';
import { progressBar } from '../progress.ts';
import { SPECS } from '../registry.ts';
import type { Command, Io } from '../types.ts';

const LS = SPECS.ext4.usage[0];
const CAT = SPECS.ext4.usage[1];
const EXPORT = SPECS.ext4.usage[2];

const TYPE_CHAR: Record<Ext4Stat['type'], string> = {
  file: '-',
  dir: 'd',
  symlink: 'l',
  chr: 'c',
  blk: 'b',
  fifo: 'p',
  socket: 's',
};

function modeString(st: Ext4Stat): string {
  const m = st.mode;
  const rwx = (shift: number, special: number, ch: string): string => {
    const r = m & (4 << shift) ? 'r' : '-';
    const w = m & (2 << shift) ? 'w' : '-';
    const x = m & (1 << shift);
    const s = m & special;
    return r + w + (s ? (x ? ch : ch.toUpperCase()) : x ? 'x' : '-');
  };
  return TYPE_CHAR[st.type] + rwx(6, 0o4000, 's') + rwx(3, 0o2000, 's') + rwx(0, 0o1000, 't');
}

function isoTime(t: { sec: number; nsec: number }): string {
  const d = new Date(t.sec * 1000);
  return Number.isNaN(d.getTime()) ? String(t.sec) : d.toISOString().replace('.000Z', 'Z');
}

/** Opens IMAGE, runs `fn`, closes it. */
async function withFs<T>(image: string, fn: (fs: Ext4Fs) => Promise<T>): Promise<T> {
  const fs = await Ext4Fs.open(image);
  try {
    return await fn(fs);
  } finally {
    await fs.close();
  }
}

async function ls(args: string[], io: Io): Promise<number> {
  const json = flag(args, '--json');
  const [image, path = '/'] = args.length === 1 ? [args[0]!] : positional(args, 2, LS);
  if (!image) throw new DriverError('ERR_USAGE', `usage: ${LS}`);
  return withFs(image, async (fs) => {
    const st = await fs.lstat(path);
    const base = Buffer.from(path.endsWith('/') ? path : `${path}/`);
    const entries: { name: string; stat: Ext4Stat; target: string | null }[] = [];
    const add = async (name: string, p: Uint8Array | string, s?: Ext4Stat): Promise<void> => {
      const stat = s ?? (await fs.lstat(p));
      entries.push({ name, stat, target: stat.type === 'symlink' ? await fs.readlink(p) : null });
    };
    if (st.type !== 'dir') await add(path, path, st);
    else for (const e of await fs.readdir(path)) await add(e.name, Buffer.concat([base, e.raw]));
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (json) {
      io.out(toJson(entries.map((e) => ({ name: e.name, ...e.stat, target: e.target }))));
      return 0;
    }
    const rows = entries.map((e) => {
      const s = e.stat;
      const size = s.rdev ? `${s.rdev.major}, ${s.rdev.minor}` : String(s.size);
      return [
        modeString(s),
        String(s.nlink),
        `${s.uid}`,
        `${s.gid}`,
        size,
        isoTime(s.mtime),
        escapeName(e.name) + (e.target ? ` -> ${escapeName(e.target)}` : ''),
      ];
    });
    const widths = rows.reduce((w, r) => r.map((c, i) => Math.max(w[i] ?? 0, c.length)), [] as number[]);
    for (const r of rows) {
      io.out(
        r
          .map((c, i) => (i === r.length - 1 ? c : i === 0 || i === 5 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
          .join(' '),
      );
    }
    return 0;
  });
}

async function cat(args: string[], io: Io): Promise<number> {
  const [image, path] = positional(args, 2, CAT);
  return withFs(image!, async (fs) => {
    await pipeline(fs.readFile(path!, { signal: io.signal }), stdoutSink(io.stdout), { signal: io.signal });
    return 0;
  });
}

/** The command's standard output as a pipeline destination that is not closed at the end. */
function stdoutSink(out: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (out.write(chunk)) cb();
      else out.once('drain', () => cb());
    },
  });
}

async function exportCmd(args: string[], io: Io): Promise<number> {
  const json = flag(args, '--json');
  const noWhiteouts = flag(args, '--no-whiteouts');
  const out = option(args, '-o') ?? '-';
  const root = option(args, '--root') ?? '/';
  const [image] = positional(args, 1, EXPORT);
  return withFs(image!, async (fs) => {
    const total = (await fs.stat(root)).type === 'dir' ? fs.info.size - fs.info.freeBlocks * fs.info.blockSize : 0;
    const bar = progressBar(`export ${image}`, io.progress);
    let entries = 0;
    let bytes = 0;
    const tar = exportTar(fs, {
      root,
      whiteouts: noWhiteouts ? 'none' : 'oci',
      signal: io.signal,
      onProgress: (p) => {
        entries = p.entries;
        bytes = p.bytes;
        bar.update({ done: p.bytes, total: Math.max(total, p.bytes) });
      },
      onWarning: (w) => io.err(`lcow: warning: ${w.code}: ${w.message}`),
    });
    const started = process.hrtime.bigint();
    try {
      if (out === '-') await pipeline(tar, stdoutSink(io.stdout), { signal: io.signal });
      // Written under an exclusive temporary name and renamed: a failure leaves no partial archive.
      else await writeFileWhole(tar, out, io.signal);
    } finally {
      bar.done();
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const report = { image, root, output: out, entries, bytes, seconds };
    if (json) (out === '-' ? io.err : io.out)(toJson(report));
    else if (out !== '-') io.out(`${out}: ${entries} entries, ${formatBytes(bytes)} of tar in ${seconds.toFixed(2)} s`);
    return 0;
  });
}

export const ext4Command: Command = {
  name: 'ext4',
  summary: SPECS.ext4.summary,
  usage: [LS, CAT, EXPORT],
  async run(argv: string[], io: Io): Promise<number> {
    const [sub, ...rest] = argv;
    if (sub === 'ls') return ls(rest, io);
    if (sub === 'cat') return cat(rest, io);
    if (sub === 'export') return exportCmd(rest, io);
    throw new DriverError('ERR_USAGE', `usage: ${LS} | ${CAT} | ${EXPORT}`);
  },
};
