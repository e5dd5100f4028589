import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { extract, pack } from 'tar-stream';
import { Ext4Fs, convert, exportTar, mkfs } from '@lcow/ext4';
import { convertRawImage, openVhdx, readFooter } from '@lcow/vhd';
import { DriverError } from '../../errors.ts';
import type { Parsed } from '../args.ts';
import { formatBytes, toJson } from '../format.ts';
import { readerOf } from '../read-at.ts';
import { describeReport, vhdReport, type VhdReport } from './vhd.ts';
import type { Command, Io } from '../types.ts';

const MiB = 1 << 20;

/** The embedded default layer: a small root filesystem, with the things real layers carry. */
const DEFAULT_LAYER: {
  name: string;
  body?: string;
  type?: 'directory' | 'symlink' | 'link';
  linkname?: string;
  mode?: number;
  pax?: Record<string, string>;
}[] = [
  { name: 'etc/', type: 'directory', mode: 0o755 },
  { name: 'etc/os-release', body: 'NAME="lcow demo layer"\nID=lcow-demo\n' },
  { name: 'etc/hostname', body: 'lcow\n' },
  { name: 'hello.txt', body: 'Hello from an LCOW layer: ext4 inside a VHD, made without root or a VM.\n' },
  { name: 'usr/share/doc/lcow/README', body: 'Built by `lcow demo` from a tar embedded in the lcow command.\n' },
  {
    name: 'usr/bin/ping',
    body: '#!/bin/sh\necho pong\n',
    mode: 0o755,
    pax: { 'SCHILY.xattr.user.demo': 'xattrs survive' },
  },
  { name: 'usr/bin/pong', type: 'link', linkname: 'usr/bin/ping' },
  { name: 'etc/motd', type: 'symlink', linkname: '../hello.txt' },
  { name: 'var/cache/.wh.stale', body: '' },
  { name: 'tmp/.wh..wh..opq', body: '' },
];

/** The embedded layer as tar bytes (tar-stream). */
async function layerTar(): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  const mtime = new Date('2026-01-01T00:00:00Z');
  for (const e of DEFAULT_LAYER) {
    const { body, ...header } = e;
    p.entry({ mtime, mode: 0o644, ...header }, body ?? '');
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function sha256(read: (at: number, len: number) => Promise<Uint8Array>, size: number): Promise<string> {
  const h = createHash('sha256');
  for (let at = 0; at < size; at += 4 * MiB) h.update(await read(at, Math.min(4 * MiB, size - at)));
  return h.digest('hex');
}

async function fileSha256(path: string, size: number): Promise<string> {
  const fh = await open(path, 'r');
  try {
    return await sha256(readerOf(fh), size);
  } finally {
    await fh.close();
  }
}

/** Each entry of a tar: type, and the content hash of regular files. */
async function tarEntries(tar: NodeJS.ReadableStream): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const hash = createHash('sha256');
      stream.on('data', (c: unknown) => void hash.update(c as Buffer));
      stream.on('end', () => {
        out.set(h.name, h.type === 'file' ? hash.digest('hex') : `${h.type}${h.linkname ? ` → ${h.linkname}` : ''}`);
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  tar.pipe(ex);
  await done;
  return out;
}

export const demoCommand: Command = {
  name: 'demo',
  async run(_form: string, p: Parsed, io: Io): Promise<number> {
    const json = p.flag('json');
    const dirOpt = p.value('dir');
    // The demo's files replace those of an earlier demo only when asked, as every output does.
    if (dirOpt !== undefined && !p.flag('force')) {
      const there = await readdir(dirOpt).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return [];
        throw e;
      });
      if (there.length > 0)
        throw new DriverError('ERR_EXISTS', `${dirOpt}: not empty (--force to replace the demo's files in it)`);
    }
    const dir = dirOpt ?? (await mkdtemp(join(tmpdir(), 'lcow-demo-')));
    await mkdir(dir, { recursive: true });
    const say = (t: string): void => {
      if (!json) io.out(t);
    };
    say(`lcow demo: working in ${dir}`);
    const tarPath = join(dir, 'layer.tar');
    await writeFile(tarPath, await layerTar());
    say(
      `  layer.tar     the embedded layer: ${DEFAULT_LAYER.length} entries (files, a hard link, a symlink, an xattr, whiteouts)`,
    );

    const img = join(dir, 'layer.img');
    const conv = await convert(tarPath, img, {
      convertWhiteouts: true,
      label: 'lcow-demo',
      overwrite: true,
      signal: io.signal,
    });
    const want = await fileSha256(img, conv.size);
    say(
      `  layer.img     @lcow/ext4: ${formatBytes(conv.size)} read-only ext4, ${conv.entries} entries, ${conv.whiteouts} whiteouts; sha256 ${want.slice(0, 16)}…`,
    );

    const vhd = join(dir, 'layer.vhd');
    const withFooter = await convert(tarPath, vhd, {
      convertWhiteouts: true,
      label: 'lcow-demo',
      appendVhdFooter: true,
      overwrite: true,
      signal: io.signal,
    });
    const footer = await readFooter(vhd);
    const vhdSum = await fileSha256(vhd, footer.currentSize);
    say(
      `  layer.vhd     the same filesystem + a fixed VHD footer (${formatBytes(withFooter.size)}); payload sha256 ${vhdSum === want ? 'matches' : 'DIFFERS'}`,
    );

    const vhdx = join(dir, 'layer.vhdx');
    const asVhdx = await convertRawImage(img, vhdx, { format: 'vhdx', overwrite: true, signal: io.signal });
    const d = await openVhdx(vhdx);
    const vhdxSum = await sha256((at, len) => d.read(at, len), d.size);
    await d.close();
    say(
      `  layer.vhdx    dynamic VHDX, ${formatBytes(asVhdx.virtualSize - asVhdx.skippedZeroBytes)} stored; read back through the BAT: sha256 ${vhdxSum === want ? 'matches' : 'DIFFERS'}`,
    );

    // Read the layer back without mounting it: @lcow/ext4's reader, through the VHDX's block table, exported
    // as a tar again; every entry of the input must come back with the same type and contents.
    const fs = await Ext4Fs.open(vhdx);
    let back: Map<string, string>;
    try {
      back = await tarEntries(exportTar(fs, { signal: io.signal }));
    } finally {
      await fs.close();
    }
    const input = await tarEntries(Readable.from([await readFile(tarPath)]));
    const missing = [...input].filter(([name, v]) => back.get(name) !== v).map(([name]) => name);
    say(
      `  read back     @lcow/ext4 reader on layer.vhdx → tar: ${back.size} entries, ${missing.length === 0 ? 'every input entry identical' : `DIFFERS: ${missing.join(', ')}`}`,
    );

    const sandbox = join(dir, 'sandbox.vhdx');
    const sb = await mkfs(sandbox, { size: 20 * 2 ** 30, overwrite: true, signal: io.signal });
    say(
      `  sandbox.vhdx  @lcow/ext4 mkfs: an empty 20 GiB ext4 in a dynamic VHDX; ${formatBytes(sb.bytesWritten)} written, ${formatBytes((await stat(sandbox)).size)} file`,
    );

    const reports: VhdReport[] = [];
    for (const f of [vhd, vhdx, sandbox]) reports.push(await vhdReport(f));
    const ext4Ok = reports.slice(0, 2).every((r) => r.contents.type === 'ext4' && r.contents.label === 'lcow-demo');
    const sandboxOk = reports[2]!.contents.type === 'ext4';
    const ok =
      vhdSum === want &&
      vhdxSum === want &&
      ext4Ok &&
      sandboxOk &&
      missing.length === 0 &&
      reports.every((r) => r.verdict === 'ok');
    if (json)
      io.out(toJson({ dir, verified: ok, layer: conv, readBack: { entries: back.size, differing: missing }, reports }));
    else {
      for (const r of reports) say(`\n$ lcow vhd info ${r.disk.file}\n${describeReport(r)}`);
      say(`\n${ok ? 'demo OK: every disk verified' : 'demo FAILED: see above'}`);
    }
    if (!ok) throw new DriverError('ERR_VERIFICATION', 'demo: a disk did not read back as written (see above)');
    return 0;
  },
};
