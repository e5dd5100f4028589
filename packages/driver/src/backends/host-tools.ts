// What the host says of disks and mounts, for the `host` backend: what the kernel has mounted
// (/proc/self/mountinfo), which loop devices back a file, and where a disk's ext4 payload lies in its file.
import { readFile, stat } from 'node:fs/promises';
import { openVhdx, readFooter } from '@lcow/vhd';
import { DriverError } from '../errors.ts';
import { runTool } from '../run-tool.ts';
import { loopsOf } from './linux.ts';

/** Mount points (decoded) at or under `prefix`, deepest first: the order to unmount them in. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const decode = (s: string): string =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const target = line.split(' ')[4];
    if (target === undefined) continue;
    const p = decode(target);
    if (p === prefix || p.startsWith(`${prefix}/`)) out.push(p);
  }
  // Deepest first; a path mounted twice appears twice and is unmounted twice.
  return out.sort((a, b) => b.length - a.length);
}

/**
 * Makes what the kernel holds for a disk file visible in the file: every loop device over it, every
 * filesystem mounted from one of those, `syncfs` — whichever process mounted it (`lcow mount` leaves
 * mounts behind on purpose).
 */
export async function syncMountsOf(file: string): Promise<void> {
  const loops = await loopsOf(file);
  if (loops.length === 0) return;
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 0 || !loops.includes(f[dash + 2]!)) continue;
    await runTool('sync', [
      '-f',
      f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))),
    ]);
  }
}

/** Whether a loop device (of any process) is backed by `file`; false when the file does not exist. */
export async function loopAttached(file: string): Promise<boolean> {
  return (await loopsOf(file)).length > 0;
}

/** Where the ext4 payload of a layer or sandbox disk lies in its file, for a loop device. */
export interface DiskPayload {
  offset: number;
  size: number;
}

/**
 * `layer.vhd` (ext4 + fixed-VHD footer): the bytes before the footer. `*.vhdx`: the one contiguous run of
 * blocks that holds the virtual disk — what our sandboxes are made as; a VHDX whose blocks are scattered
 * (a dynamic disk written by Hyper-V) cannot be a loop device and is `ERR_UNSUPPORTED`.
 */
export async function diskPayload(path: string): Promise<DiskPayload> {
  // Scanning a 20 GiB sandbox's BAT takes longer than mounting it; a fixed VHDX's layout never changes
  // while the file (inode) and its size stay the same, so the answer is kept per file — by identity, not
  // name: a sandbox made ahead of need (and scanned then) keeps it when renamed into its layer folder.
  const st = await stat(path, { bigint: true });
  const key = `${st.dev}:${st.ino}:${st.size}`;
  const known = PAYLOADS.get(key);
  if (known) return known;
  const payload = await scanPayload(path);
  PAYLOADS.set(key, payload);
  if (PAYLOADS.size > 4096) PAYLOADS.delete(PAYLOADS.keys().next().value!);
  return payload;
}

const PAYLOADS = new Map<string, DiskPayload>();

async function scanPayload(path: string): Promise<DiskPayload> {
  if (/\.vhdx$/i.test(path)) {
    const v = await openVhdx(path);
    try {
      const a = await v.allocation();
      if (!a.contiguous)
        throw new DriverError(
          'ERR_UNSUPPORTED',
          `${path}: its blocks are not one contiguous run (${a.presentBlocks} of ${a.totalBlocks} present), so ` +
            'the host backend cannot loop-mount it; sandboxes made by lcow are; use the inproc backend to read it',
        );
      return { offset: a.contiguous.offset, size: a.contiguous.length };
    } finally {
      await v.close();
    }
  }
  const f = await readFooter(path);
  return { offset: 0, size: f.footerOffset };
}
