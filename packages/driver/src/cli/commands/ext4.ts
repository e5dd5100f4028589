import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Ext4Fs, exportTar, type Ext4Stat } from '@lcow/ext4';
import { DriverError } from '../../errors.ts';
import type { Parsed } from '../args.ts';
import { escapeName, formatBytes, toJson } from '../format.ts';
import { checkOutput, writeFileWhole } from '../output.ts';
import { progressBar } from '../progress.ts';
import type { Command, Io } from '../types.ts';

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

/** An image is read by position: standard input will not do. */
function imageOperand(p: Parsed): string {
  const image = p.operands[0]!;
  if (image === '-') throw new DriverError('ERR_USAGE', 'IMAGE -: an image is read by position, so it must be a file');
  return image;
}

async function ls(p: Parsed, io: Io): Promise<number> {
  const json = p.flag('json');
  const image = imageOperand(p);
  const path = p.operands[1] ?? '/';
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

async function cat(p: Parsed, io: Io): Promise<number> {
  const image = imageOperand(p);
  const path = p.operands[1]!;
  return withFs(image, async (fs) => {
    await pipeline(fs.readFile(path, { signal: io.signal }), stdoutSink(io.stdout), { signal: io.signal });
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

async function exportCmd(p: Parsed, io: Io): Promise<number> {
  const json = p.flag('json');
  const noWhiteouts = p.flag('no-whiteouts');
  const out = p.value('output') ?? '-';
  const root = p.value('root') ?? '/';
  const image = imageOperand(p);
  if (out !== '-') await checkOutput(out, p.flag('force'));
  return withFs(image, async (fs) => {
    // The whole filesystem: its used bytes are about the tar's size. A folder of it: not known.
    await fs.stat(root);
    const total = root === '/' ? fs.info.size - fs.info.freeBlocks * fs.info.blockSize : -1;
    const bar = progressBar(`export ${image}`, io.progress);
    let entries = 0;
    let bytes = 0;
    const tar = exportTar(fs, {
      root,
      whiteouts: noWhiteouts ? 'none' : 'oci',
      signal: io.signal,
      onProgress: (q) => {
        entries = q.entries;
        bytes = q.bytes;
        bar.update({ done: q.bytes, total: total < 0 ? -1 : Math.max(total, q.bytes) });
      },
      onWarning: (w) => io.err(`lcow: warning: ${w.code}: ${w.message}`),
    });
    const started = process.hrtime.bigint();
    try {
      if (out === '-') await pipeline(tar, stdoutSink(io.stdout), { signal: io.signal });
      // Written under an exclusive temporary name and renamed: a failure leaves no partial archive.
      else await writeFileWhole(tar, out, { signal: io.signal, force: p.flag('force') });
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
  async run(form: string, p: Parsed, io: Io): Promise<number> {
    if (form === 'ls') return ls(p, io);
    if (form === 'cat') return cat(p, io);
    return exportCmd(p, io);
  },
};
