import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { convertRawImage, createVhdx, openVhdx } from '@lcow/vhd';
import { DriverError } from '../../errors.ts';
import { formatBytes, toJson } from '../format.ts';
import { describeReport, vhdReport, type VhdReport } from './vhd.ts';
import type { Command, Io } from '../main.ts';

const execFileP = promisify(execFile);
const MiB = 1 << 20;

/** The embedded default layer: a tiny root filesystem tree. */
const DEFAULT_TREE: Record<string, string> = {
  'etc/os-release': 'NAME="lcow demo layer"\nID=lcow-demo\n',
  'etc/hostname': 'lcow\n',
  'hello.txt': 'Hello from an LCOW layer: ext4 inside a VHD, made without root or a VM.\n',
  'usr/share/doc/lcow/README': 'This filesystem was built by `lcow demo` from an embedded tree.\n',
};

async function sha256(read: (at: number, len: number) => Promise<Uint8Array>, size: number): Promise<string> {
  const h = createHash('sha256');
  for (let at = 0; at < size; at += 4 * MiB) h.update(await read(at, Math.min(4 * MiB, size - at)));
  return h.digest('hex');
}

async function fileReader(
  path: string,
): Promise<{ read: (at: number, len: number) => Promise<Uint8Array>; close: () => Promise<void> }> {
  const fh = await open(path, 'r');
  return {
    read: async (at, len) => {
      const b = new Uint8Array(len);
      const { bytesRead } = await fh.read(b, 0, len, at);
      return b.subarray(0, bytesRead);
    },
    close: () => fh.close(),
  };
}

/** Builds the embedded layer as a raw ext4 image with e2fsprogs' `mkfs.ext4 -d` (no root needed). */
async function makeRawLayer(dir: string): Promise<string> {
  const tree = join(dir, 'rootfs');
  for (const [path, text] of Object.entries(DEFAULT_TREE)) {
    await mkdir(join(tree, path, '..'), { recursive: true });
    await writeFile(join(tree, path), text);
  }
  const raw = join(dir, 'layer.raw');
  await writeFile(raw, '');
  await truncate(raw, 64 * MiB);
  const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
  await execFileP(
    'mkfs.ext4',
    ['-q', '-F', '-L', 'lcow-demo', '-O', '^has_journal', '-E', 'root_owner=0:0', '-d', tree, raw],
    { env },
  ).catch((e: Error) => {
    throw new DriverError(
      'ERR_USAGE',
      `mkfs.ext4 (e2fsprogs) is needed for the demo layer until @lcow/ext4 writes layers itself: ${e.message}`,
    );
  });
  return raw;
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'build the embedded demo layer and show it as VHD, VHDX and a 20 GiB sandbox',
  usage: ['lcow demo [--dir DIR] [--json]'],
  async run(argv: string[], io: Io): Promise<number> {
    const args = [...argv];
    const json = args.includes('--json');
    const dirAt = args.indexOf('--dir');
    const dir = dirAt >= 0 ? args[dirAt + 1] : await mkdtemp(join(tmpdir(), 'lcow-demo-'));
    if (!dir) throw new DriverError('ERR_USAGE', '--dir needs a folder');
    await mkdir(dir, { recursive: true });
    const say = (t: string): void => {
      if (!json) io.out(t);
    };
    say(`lcow demo: working in ${dir}`);
    const raw = await makeRawLayer(dir);
    const rawSize = (await stat(raw)).size;
    const src = await fileReader(raw);
    const want = await sha256(src.read, rawSize);
    await src.close();
    say(
      `  layer.raw     64 MiB ext4 from the embedded tree (${Object.keys(DEFAULT_TREE).length} files), sha256 ${want.slice(0, 16)}…`,
    );

    const vhd = join(dir, 'layer.vhd');
    await convertRawImage(raw, vhd, { format: 'vhd', overwrite: true, signal: io.signal });
    const v = await fileReader(vhd);
    const vhdSum = await sha256(v.read, rawSize);
    await v.close();
    say(
      `  layer.vhd     fixed VHD: the image plus a 512-byte footer; payload sha256 ${vhdSum === want ? 'matches' : 'DIFFERS'}`,
    );

    const vhdx = join(dir, 'layer.vhdx');
    const conv = await convertRawImage(raw, vhdx, { format: 'vhdx', overwrite: true, signal: io.signal });
    const d = await openVhdx(vhdx);
    const vhdxSum = await sha256((at, len) => d.read(at, len), d.size);
    await d.close();
    say(
      `  layer.vhdx    dynamic VHDX, ${formatBytes(rawSize - conv.skippedZeroBytes)} of data stored; read back through the BAT: sha256 ${vhdxSum === want ? 'matches' : 'DIFFERS'}`,
    );

    const sandbox = join(dir, 'sandbox.vhdx');
    await createVhdx(sandbox, { size: 20 * 2 ** 30, overwrite: true, signal: io.signal });
    say(`  sandbox.vhdx  20 GiB dynamic VHDX, ${formatBytes((await stat(sandbox)).size)} on disk`);

    const reports: VhdReport[] = [];
    for (const f of [vhd, vhdx, sandbox]) reports.push(await vhdReport(f));
    const ok = vhdSum === want && vhdxSum === want && reports.every((r) => r.verdict === 'ok');
    if (json) io.out(toJson({ dir, verified: ok, reports }));
    else {
      for (const r of reports) say(`\n$ lcow vhd info ${r.disk.file}\n${describeReport(r)}`);
      say(`\n${ok ? 'demo OK: every disk verified' : 'demo FAILED: see above'}`);
    }
    return ok ? 0 : 1;
  },
};
