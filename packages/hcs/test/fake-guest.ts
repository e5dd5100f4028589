// A fake utility-VM guest for the remotefs client: runs `remotefs <cmd>` over a host folder that plays the
// guest's root, speaking the guest tool's protocol (JSON FileInfo on stdout, ExportedError JSON on stderr
// with exit code 0, the framed openfile server). Every command it is given is recorded.
import { spawn } from 'node:child_process';
import {
  link,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  realpath,
  rm,
  stat,
  symlink,
  lchown,
  type FileHandle,
} from 'node:fs/promises';
import { basename, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { FileCmd, FileHeader, SeekHeader, SeekResult } from '../src/format/openfile.ts';
import { fromGoMode, toGoMode, type GuestProcess, type GuestRunner } from '../src/index.ts';

function goMode(mode: number): number {
  const t = mode & 0o170000;
  let g = toGoMode(mode);
  if (t === 0o040000) g += 2 ** 31;
  else if (t === 0o120000) g += 2 ** 27;
  else if (t === 0o010000) g += 2 ** 25;
  else if (t === 0o140000) g += 2 ** 24;
  else if (t === 0o020000) g += 2 ** 26 + 2 ** 21;
  else if (t === 0o060000) g += 2 ** 26;
  return g;
}

async function fileInfo(p: string, follow: boolean): Promise<Record<string, unknown>> {
  const s = follow ? await stat(p, { bigint: true }) : await lstat(p, { bigint: true });
  return {
    NameVar: basename(p),
    SizeVar: Number(s.size),
    ModeVar: goMode(Number(s.mode)),
    ModTimeVar: Number(s.mtimeNs),
    IsDirVar: s.isDirectory(),
  };
}

function exported(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  const errno = Math.abs((e as NodeJS.ErrnoException).errno ?? 0);
  const s =
    code === 'ENOENT'
      ? 'file does not exist'
      : code === 'EEXIST'
        ? 'file already exists'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : String((e as Error).message);
  return JSON.stringify(errno ? { ErrString: s, ErrNum: errno } : { ErrString: s });
}

/** Reads exactly n bytes from a stream. */
function reader(s: PassThrough): (n: number) => Promise<Buffer | null> {
  let buf = Buffer.alloc(0);
  let ended = false;
  let wake: (() => void) | null = null;
  s.on('data', (c: Buffer) => ((buf = Buffer.concat([buf, c])), wake?.()));
  s.on('end', () => ((ended = true), wake?.()));
  return async (n) => {
    while (buf.length < n) {
      if (ended) return null;
      await new Promise<void>((r) => (wake = r));
      wake = null;
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
}

export interface FakeGuest {
  run: GuestRunner;
  /** Every argv run, in order. */
  log: string[][];
  /** Processes started and not closed. */
  open(): number;
}

/** A guest whose "/" is `hostRoot`. */
export function fakeGuest(hostRoot: string): FakeGuest {
  const log: string[][] = [];
  let live = 0;
  const g = (p: string): string => join(hostRoot, p);
  const run: GuestRunner = async (argv) => {
    log.push([...argv]);
    live++;
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let closed = false;
    const exited = (async (): Promise<number> => {
      const [tool, cmd, ...a] = argv;
      if (tool !== 'remotefs') {
        stderr.end(`unknown tool ${tool}`);
        stdout.end();
        return 127;
      }
      try {
        if (cmd === 'openfile')
          return await openfileServer(
            g(a[0]!),
            Number(a[1]),
            fromGoMode(Number.parseInt(a[2]!, 8)) & 0o7777,
            stdin,
            stdout,
            stderr,
          );
        const out = await command(cmd!, a, stdin);
        stdout.end(out);
        stderr.end();
      } catch (e) {
        stdout.end();
        stderr.end(exported(e));
      }
      return 0;
    })();
    const proc: GuestProcess = {
      stdin,
      stdout,
      stderr,
      exited,
      kill: async () => {
        stdout.destroy();
      },
      close: async () => {
        if (!closed) {
          closed = true;
          live--;
        }
      },
    };
    return proc;
  };

  async function command(cmd: string, a: string[], stdin: PassThrough): Promise<Buffer | string> {
    const mode = (s: string): number => fromGoMode(Number.parseInt(s, 8)) & 0o7777;
    switch (cmd) {
      case 'stat':
        return JSON.stringify(await fileInfo(g(a[0]!), true));
      case 'lstat':
        return JSON.stringify(await fileInfo(g(a[0]!), false));
      case 'readlink':
        return await readlink(g(a[0]!));
      case 'readdir': {
        const names = (await readdir(g(a[0]!))).sort();
        const n = Number(a[1]);
        const pick = n > 0 ? names.slice(0, n) : names;
        return JSON.stringify(await Promise.all(pick.map((x) => fileInfo(join(g(a[0]!), x), false))));
      }
      case 'mkdir':
        await mkdir(g(a[0]!), mode(a[1]!));
        return '';
      case 'mkdirall':
        await mkdir(g(a[0]!), { recursive: true, mode: mode(a[1]!) });
        return '';
      case 'remove': {
        const s = await lstat(g(a[0]!));
        await rm(g(a[0]!), { recursive: false, force: false, ...(s.isDirectory() ? { recursive: false } : {}) }).catch(
          async (e) => {
            if (s.isDirectory()) await (await import('node:fs/promises')).rmdir(g(a[0]!));
            else throw e;
          },
        );
        return '';
      }
      case 'removeall':
        await rm(g(a[0]!), { recursive: true, force: true });
        return '';
      case 'link':
        await link(g(a[0]!), g(a[1]!));
        return '';
      case 'symlink':
        await symlink(a[0]!, g(a[1]!));
        return '';
      case 'lchown':
        await lchown(g(a[0]!), Number(a[1]), Number(a[2]));
        return '';
      case 'mkfifo':
        await new Promise<void>((resolve, reject) =>
          spawn('mkfifo', ['-m', a[1]!, g(a[0]!)]).on('close', (c) =>
            c === 0 ? resolve() : reject(Object.assign(new Error('mkfifo failed'), { code: 'EIO' })),
          ),
        );
        return '';
      case 'lchmod':
        // As the 2019 guest: its Fchmodat with AT_SYMLINK_NOFOLLOW is EOPNOTSUPP on every path.
        throw Object.assign(new Error('operation not supported'), { code: 'EOPNOTSUPP', errno: -95 });
      case 'resolvepath': {
        const real = await realpath(g(a[0]!)).catch(() => g(a[0]!));
        const inside = real.startsWith(hostRoot) ? real.slice(hostRoot.length) || '/' : a[1]!;
        return inside;
      }
      case 'extractarchive':
      case 'archivepath': {
        const read = reader(stdin);
        const len = Number((await read(8))!.readBigUInt64BE());
        JSON.parse((await read(len))!.toString() || 'null');
        if (cmd === 'archivepath') return await tarOf(g(a[0]!));
        const rest: Buffer[] = [];
        for (;;) {
          const c = await read(1);
          if (!c) break;
          rest.push(c);
        }
        await untar(Buffer.concat(rest), g(a[0]!));
        return '';
      }
      default:
        throw Object.assign(new Error(`unknown command ${cmd}`), { code: 'EINVAL' });
    }
  }

  return { run, log, open: () => live };
}

function tarOf(dir: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const t = spawn('tar', ['-C', dir, '-cf', '-', '.']);
    const parts: Buffer[] = [];
    t.stdout.on('data', (c: Buffer) => parts.push(c));
    t.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(parts)) : reject(Object.assign(new Error('tar failed'), { code: 'EIO' })),
    );
  });
}

function untar(data: Buffer, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = spawn('tar', ['-C', dir, '-xf', '-']);
    t.on('close', (code) =>
      code === 0 ? resolve() : reject(Object.assign(new Error('not a tar archive'), { code: 'EIO' })),
    );
    t.stdin.end(data);
  });
}

/** The openfile server: the guest's framing, with Seek answered by the new offset. */
async function openfileServer(
  path: string,
  flags: number,
  perm: number,
  stdin: PassThrough,
  stdout: PassThrough,
  stderr: PassThrough,
): Promise<number> {
  const read = reader(stdin);
  const send = (cmd: number, payload?: Uint8Array): void => {
    stdout.write(FileHeader.encode({ cmd, size: payload?.length ?? 0 }));
    if (payload?.length) stdout.write(payload);
  };
  const fail = (e: unknown): number => {
    send(FileCmd.Failed);
    stdout.end();
    stderr.end(typeof e === 'string' ? e : exported(e));
    return 0;
  };
  let fh: FileHandle;
  try {
    // Linux O_* numbers → Node's flags: the same numbers on Linux.
    fh = await open(path, flags, perm);
  } catch (e) {
    return fail(e);
  }
  send(FileCmd.OK);
  let pos = 0;
  for (;;) {
    const hb = await read(FileHeader.size);
    if (!hb) break;
    const h = FileHeader.decode(hb);
    if (h.cmd === FileCmd.Read) {
      const buf = Buffer.alloc(h.size);
      const { bytesRead } = await fh.read(buf, 0, h.size, pos);
      if (bytesRead === 0) {
        await fh.close();
        return fail(JSON.stringify({ ErrString: 'EOF' }));
      }
      pos += bytesRead;
      send(FileCmd.OK, buf.subarray(0, bytesRead));
    } else if (h.cmd === FileCmd.Write) {
      const data = (await read(h.size))!;
      try {
        await fh.write(data, 0, data.length, pos);
      } catch (e) {
        await fh.close();
        return fail(e);
      }
      pos += data.length;
      send(FileCmd.OK);
    } else if (h.cmd === FileCmd.Seek) {
      const s = SeekHeader.decode((await read(h.size))!);
      const off = Number(BigInt.asIntN(64, s.offset));
      const whence = s.whence | 0;
      const base = whence === 0 ? 0 : whence === 1 ? pos : (await fh.stat()).size;
      pos = base + off;
      send(FileCmd.OK, SeekResult.encode({ offset: pos }));
    } else if (h.cmd === FileCmd.Close) {
      await fh.close();
      send(FileCmd.OK);
      break;
    }
  }
  stdout.end();
  stderr.end();
  return 0;
}
