// `archivePath` and `extractArchive` for every container filesystem, written once over the ContainerFs
// operations (so they inherit its scoping: nothing is read or written outside the root).
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { extract, pack, type Pack } from 'tar-stream';

type Headers = Parameters<Pack['entry']>[0];
import { DriverError } from '../errors.ts';
import type { ContainerFs, FileInfo } from './types.ts';

const TAR_TYPE = {
  file: 'file',
  dir: 'directory',
  symlink: 'symlink',
  chr: 'character-device',
  blk: 'block-device',
  fifo: 'fifo',
} as const;

/** A tar of `path` in `fs`: names relative to its parent, hard links as links, sockets left out. */
export function archiveOf(fs: ContainerFs, path: string): Readable {
  const p = pack();
  const base = posix.normalize(`/${path}`);
  const prefix = base === '/' ? '' : posix.basename(base);
  const seen = new Map<number, string>(); // inode → first name, for hard links
  const entry = (h: Headers, body?: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      p.entry(h, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  const header = (name: string, st: FileInfo): Headers => ({
    name,
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    mtime: new Date(st.mtime.sec * 1000 + Math.floor(st.mtime.nsec / 1e6)),
  });
  const walk = async (cpath: string, name: string): Promise<void> => {
    const st = await fs.lstat(cpath);
    if (st.type === 'socket') return;
    const h = header(name || '.', st);
    if (st.type === 'file') {
      const first = st.nlink > 1 ? seen.get(st.ino) : undefined;
      if (first !== undefined) return entry({ ...h, type: 'link', linkname: first });
      if (st.nlink > 1) seen.set(st.ino, h.name);
      await entry({ ...h, type: 'file', size: st.size }, await fs.readFile(cpath));
      return;
    }
    if (st.type === 'dir') {
      await entry({ ...h, name: name ? `${name}/` : './', type: 'directory' });
      for (const e of await fs.readdir(cpath))
        await walk(posix.join(cpath, e.name), name ? `${name}/${e.name}` : e.name);
      return;
    }
    if (st.type === 'symlink') {
      await entry({ ...h, type: 'symlink', linkname: await fs.readlink(cpath) });
      return;
    }
    await entry({
      ...h,
      type: TAR_TYPE[st.type],
      devmajor: st.rdev?.major ?? 0,
      devminor: st.rdev?.minor ?? 0,
    });
  };
  walk(base, prefix).then(
    () => p.finalize(),
    (e: unknown) => p.destroy(e as Error),
  );
  return Readable.from(p);
}

/** Unpacks `tar` into folder `dest` of `fs`: modes, owners, links and devices as the archive says. */
export async function extractInto(fs: ContainerFs, tar: AsyncIterable<Uint8Array>, dest: string): Promise<void> {
  if (fs.readOnly) throw new DriverError('ERR_READ_ONLY', `extract into ${dest}: this filesystem is read-only`);
  await fs.mkdirAll(dest, 0o755);
  const x = extract();
  const feed = (async () => {
    try {
      for await (const c of tar) if (!x.write(c)) await new Promise<void>((r) => x.once('drain', () => r()));
      x.end(undefined);
    } catch (e) {
      x.destroy(e as Error);
    }
  })();
  const dirs: { path: string; mode: number }[] = [];
  for await (const e of x) {
    const h = e.header;
    const rel = posix.normalize(`/${h.name}`);
    const target = posix.join(dest, rel);
    const where = `tar entry ${JSON.stringify(h.name)}`;
    const mode = (h.mode ?? 0o644) & 0o7777;
    try {
      if (rel !== '/') await fs.mkdirAll(posix.dirname(target), 0o755);
      switch (h.type) {
        case 'directory':
          await fs.mkdirAll(target, 0o755);
          dirs.push({ path: target, mode });
          break;
        case 'file':
        case 'contiguous-file': {
          const chunks: Buffer[] = [];
          for await (const c of e) chunks.push(c as Buffer);
          await fs.removeAll(target).catch(() => {});
          await fs.writeFile(target, Buffer.concat(chunks), mode);
          break;
        }
        case 'symlink':
          await fs.removeAll(target).catch(() => {});
          await fs.symlink(h.linkname ?? '', target);
          break;
        case 'link':
          await fs.removeAll(target).catch(() => {});
          await fs.link(posix.join(dest, posix.normalize(`/${h.linkname ?? ''}`)), target);
          break;
        case 'character-device':
        case 'block-device':
          await fs.removeAll(target).catch(() => {});
          await fs.mknod(target, h.type === 'block-device' ? 'blk' : 'chr', mode, h.devmajor ?? 0, h.devminor ?? 0);
          break;
        case 'fifo':
          await fs.removeAll(target).catch(() => {});
          await fs.mkfifo(target, mode);
          break;
        default:
          e.resume();
          continue;
      }
      await fs.lchown(target, h.uid ?? 0, h.gid ?? 0);
      if (h.type !== 'symlink' && h.type !== 'directory') await fs.lchmod(target, mode);
    } catch (err) {
      e.resume();
      const c = err as { code?: string; message?: string };
      throw new DriverError(
        c.code === 'ERR_READ_ONLY' ? 'ERR_READ_ONLY' : 'ERR_INVALID_ARGUMENT',
        `${where}: ${c.message ?? String(err)}`,
        { cause: err },
      );
    }
  }
  await feed;
  // Directory modes last, so a read-only directory does not stop its own entries.
  for (const d of dirs.reverse()) await fs.lchmod(d.path, d.mode);
}
