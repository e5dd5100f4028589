// The members of an image tarball (docker save, OCI archive) found without unpacking it: one pass over
// the tar headers gives every regular member's offset and size; links (docker save links a layer it
// already wrote) resolve to their targets.
import type { FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { ImageError } from './errors.ts';

const BLOCK = 512;
const MAX_MEMBERS = 1_000_000;

/** A member's data in the image file. */
export interface Member {
  offset: number;
  size: number;
}

function imageError(path: string, message: string): ImageError {
  return new ImageError('ERR_INVALID_IMAGE', `${path}: ${message}`);
}

function octal(b: Buffer, at: number, len: number): number {
  if (b[at]! & 0x80) {
    // base-256 (GNU), for members of 8 GiB and more
    let n = 0;
    for (let i = at + 1; i < at + len; i++) n = n * 256 + b[i]!;
    return n;
  }
  const s = b
    .toString('latin1', at, at + len)
    .replace(/\0.*$/s, '')
    .trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function cstr(b: Buffer, at: number, len: number): string {
  const end = b.indexOf(0, at);
  return b.toString('utf8', at, end < 0 || end > at + len ? at + len : end);
}

function paxPath(data: Buffer): string | null {
  let at = 0;
  let path: string | null = null;
  while (at < data.length) {
    const sp = data.indexOf(0x20, at);
    if (sp < 0) break;
    const len = Number(data.toString('latin1', at, sp));
    if (!Number.isInteger(len) || len <= 0 || at + len > data.length) break;
    const rec = data.toString('utf8', sp + 1, at + len - 1);
    const eq = rec.indexOf('=');
    if (rec.slice(0, eq) === 'path') path = rec.slice(eq + 1);
    at += len;
  }
  return path;
}

/** Every regular member of the tar: normalised name → where its data lies. */
export async function indexTar(fh: FileHandle, path: string): Promise<Map<string, Member>> {
  const size = (await fh.stat()).size;
  const out = new Map<string, Member>();
  const head = Buffer.alloc(BLOCK);
  let pos = 0;
  let longName: string | null = null;
  const links = new Map<string, string>();
  while (pos + BLOCK <= size) {
    await fh.read(head, 0, BLOCK, pos);
    if (head.every((x) => x === 0)) break;
    const want = octal(head, 148, 8);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : head[i]!;
    if (sum !== want) throw imageError(path, `bad tar header checksum at byte ${pos} (not a tar, or damaged)`);
    const len = octal(head, 124, 12);
    const type = String.fromCharCode(head[156]!);
    const dataAt = pos + BLOCK;
    if (dataAt + len > size) throw imageError(path, `tar member at byte ${pos} runs past the end of the file`);
    const next = dataAt + Math.ceil(len / BLOCK) * BLOCK;
    if (type === 'x' || type === 'L') {
      if (len > 1 << 20)
        throw imageError(path, `oversized ${type === 'x' ? 'pax' : 'long-name'} record at byte ${pos}`);
      const data = Buffer.alloc(len);
      await fh.read(data, 0, len, dataAt);
      longName = type === 'x' ? paxPath(data) : data.toString('utf8').replace(/\0.*$/s, '');
      pos = next;
      continue;
    }
    if (type === '0' || type === '\0' || type === '7') {
      const prefix = head.toString('latin1', 257, 262) === 'ustar' ? cstr(head, 345, 155) : '';
      const name = longName ?? (prefix ? `${prefix}/${cstr(head, 0, 100)}` : cstr(head, 0, 100));
      out.set(posix.normalize(`/${name}`).slice(1), { offset: dataAt, size: len });
      if (out.size > MAX_MEMBERS) throw imageError(path, `more than ${MAX_MEMBERS} members`);
    }
    if (type === '1' || type === '2') {
      // docker save links a layer it has already written (hard link, or a symlink next to it).
      const prefix = head.toString('latin1', 257, 262) === 'ustar' ? cstr(head, 345, 155) : '';
      const name = longName ?? (prefix ? `${prefix}/${cstr(head, 0, 100)}` : cstr(head, 0, 100));
      const target = cstr(head, 157, 100);
      const norm = posix.normalize(`/${name}`).slice(1);
      links.set(
        norm,
        type === '1'
          ? posix.normalize(`/${target}`).slice(1)
          : posix.normalize(posix.join('/', posix.dirname(norm), target)).slice(1),
      );
    }
    longName = null;
    pos = next;
  }
  for (const [name, target] of links) {
    let t = target;
    for (let hops = 0; hops < 8 && !out.has(t) && links.has(t); hops++) t = links.get(t)!;
    const m = out.get(t);
    if (m && !out.has(name)) out.set(name, m);
  }
  return out;
}
