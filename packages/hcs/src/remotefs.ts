// The container filesystem of a union mounted in the utility VM, through the guest's `remotefs` tool
// (lcow-behaviour.md §2): one guest process per operation, arguments as an argument vector, results on
// stdout, errors as JSON on stderr; `openfile` keeps a process per open file and speaks a framed protocol.
// Fixed here: arguments are never split by a shell parser, stdout and stderr are drained together with an
// idle (not total) timeout, Seek sends a Seek, open-time errors keep their kind, a failing archive export
// fails the stream instead of ending it cleanly, and every process is closed.
import { PassThrough, Readable, type Writable } from 'node:stream';
import { HcsError } from './errors.ts';
import { FileCmd, FileHeader, OptionsHeader, SeekHeader, SeekResult } from './format/openfile.ts';

/** A process in the utility VM with its three pipes. */
export interface GuestProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number>;
  kill(): Promise<void>;
  /** Releases the process handle (and pipes); idempotent. */
  close(): Promise<void>;
}

/** Starts `argv` in the utility VM (the hcs backend: HcsCreateProcess with CommandArgs). */
export type GuestRunner = (argv: readonly string[]) => Promise<GuestProcess>;

/** What `stat` and `readdir` report (opengcs remotefs FileInfo; no owner or inode reaches the host). */
export interface RemoteFileInfo {
  name: string;
  size: number;
  /** Go `os.FileMode`: permission bits plus Go's type and special bits. */
  goMode: number;
  /** Unix mode (S_IF* type | permission | setuid/setgid/sticky), converted from `goMode`. */
  mode: number;
  mtimeNs: bigint;
  isDir: boolean;
}

export type RemoteFsErrorKind = 'ERR_NOT_FOUND' | 'ERR_EXISTS' | 'ERR_PERMISSION' | 'ERR_EOF' | 'ERR_REMOTEFS';

/** A failed remotefs operation: `code` says what the guest's error meant, `errno` gives its number. */
export class RemoteFsError extends HcsError {
  declare readonly code: RemoteFsErrorKind;
  readonly errno: number | undefined;
  constructor(code: RemoteFsErrorKind, op: string, message: string, errno?: number) {
    super(code, op, message);
    this.errno = errno;
  }
  override get name(): string {
    return 'RemoteFsError';
  }
}

// Go os.FileMode bits (io/fs).
const GoMode = {
  Dir: 2 ** 31,
  Append: 2 ** 30,
  Symlink: 2 ** 27,
  Device: 2 ** 26,
  NamedPipe: 2 ** 25,
  Socket: 2 ** 24,
  Setuid: 2 ** 23,
  Setgid: 2 ** 22,
  CharDevice: 2 ** 21,
  Sticky: 2 ** 20,
} as const;

/** Unix mode → Go FileMode (as the guest's `FileMode(ParseUint(s, 8, 32))` expects for mkdir and friends). */
export function toGoMode(mode: number): number {
  let m = mode & 0o777;
  if (mode & 0o4000) m += GoMode.Setuid;
  if (mode & 0o2000) m += GoMode.Setgid;
  if (mode & 0o1000) m += GoMode.Sticky;
  return m;
}

/** Go FileMode → unix mode. */
export function fromGoMode(g: number): number {
  const has = (bit: number): boolean => Math.floor(g / bit) % 2 === 1;
  let m = g % 512;
  if (has(GoMode.Setuid)) m |= 0o4000;
  if (has(GoMode.Setgid)) m |= 0o2000;
  if (has(GoMode.Sticky)) m |= 0o1000;
  if (has(GoMode.Dir)) m |= 0o040000;
  else if (has(GoMode.Symlink)) m |= 0o120000;
  else if (has(GoMode.NamedPipe)) m |= 0o010000;
  else if (has(GoMode.Socket)) m |= 0o140000;
  else if (has(GoMode.Device)) m |= has(GoMode.CharDevice) ? 0o020000 : 0o060000;
  else m |= 0o100000;
  return m;
}

const octal = (goMode: number): string => goMode.toString(8);

interface ExportedError {
  ErrString?: string;
  ErrNum?: number;
}

/** The guest's error JSON → a RemoteFsError naming the operation and path (ENOENT keeps its kind). */
function mapError(op: string, where: string, stderr: string): RemoteFsError | null {
  const text = stderr.trim();
  if (!text) return null;
  let e: ExportedError;
  try {
    e = JSON.parse(text) as ExportedError;
  } catch {
    return new RemoteFsError('ERR_REMOTEFS', op, `${where}: the guest said ${JSON.stringify(text.slice(0, 500))}`);
  }
  const s = e.ErrString ?? 'unknown error';
  const kind: RemoteFsErrorKind =
    s === 'file does not exist'
      ? 'ERR_NOT_FOUND'
      : s === 'file already exists'
        ? 'ERR_EXISTS'
        : s === 'permission denied'
          ? 'ERR_PERMISSION'
          : s === 'EOF'
            ? 'ERR_EOF'
            : 'ERR_REMOTEFS';
  return new RemoteFsError(kind, op, `${where}: ${s}`, e.ErrNum);
}

/** Collects a stream into one buffer, failing if it stays silent past `idleMs` between chunks. */
export async function collect(s: Readable, idleMs: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let timer: NodeJS.Timeout | undefined;
  const idle = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => s.destroy(new HcsError('ERR_TIMEOUT', what, `no data for ${idleMs / 1000} s`)), idleMs);
  };
  idle();
  try {
    for await (const c of s) {
      parts.push(c as Buffer);
      idle();
    }
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(parts);
}

/**
 * The container filesystem at `root` (a union mount's guest path). Paths given to methods are guest paths;
 * `resolveScopedPath` turns a container path into one that cannot escape `root`.
 */
export class RemoteFs {
  readonly root: string;
  readonly #run: GuestRunner;
  readonly #idleMs: number;

  constructor(run: GuestRunner, root: string, opts: { idleTimeoutMs?: number } = {}) {
    this.#run = run;
    this.root = root;
    this.#idleMs = opts.idleTimeoutMs ?? 300_000;
  }

  /** Runs one remotefs command; stdin is `input` (or closed at once); returns stdout. */
  async #cmd(cmd: string, args: readonly string[], input?: Uint8Array | Readable): Promise<Buffer> {
    const op = `remotefs ${cmd}`;
    const p = await this.#run(['remotefs', cmd, ...args]);
    try {
      // Both outputs are drained together: a guest that fills stderr first cannot block on it.
      const out = collect(p.stdout, this.#idleMs, op);
      const err = collect(p.stderr, this.#idleMs, op);
      if (input instanceof Readable) input.pipe(p.stdin);
      else p.stdin.end(input ?? undefined);
      const [stdout, stderr, code] = await Promise.all([out, err, p.exited]);
      const e = mapError(op, args[0] ?? '', stderr.toString('utf8'));
      if (e) throw e;
      if (code !== 0) throw new RemoteFsError('ERR_REMOTEFS', op, `${args[0] ?? ''}: exit code ${code}`);
      return stdout;
    } finally {
      await p.close();
    }
  }

  #info(buf: Buffer): RemoteFileInfo {
    const j = JSON.parse(buf.toString('utf8')) as {
      NameVar: string;
      SizeVar: number;
      ModeVar: number;
      ModTimeVar: number | string;
      IsDirVar: boolean;
    };
    return {
      name: j.NameVar,
      size: j.SizeVar,
      goMode: j.ModeVar,
      mode: fromGoMode(j.ModeVar),
      mtimeNs: BigInt(j.ModTimeVar),
      isDir: j.IsDirVar,
    };
  }

  async stat(p: string): Promise<RemoteFileInfo> {
    return this.#info(await this.#cmd('stat', [p]));
  }

  async lstat(p: string): Promise<RemoteFileInfo> {
    return this.#info(await this.#cmd('lstat', [p]));
  }

  async readlink(p: string): Promise<string> {
    return (await this.#cmd('readlink', [p])).toString('utf8');
  }

  async readdir(p: string, n = -1): Promise<RemoteFileInfo[]> {
    const j = JSON.parse((await this.#cmd('readdir', [p, String(n)])).toString('utf8') || '[]') as unknown[];
    return j.map((x) => this.#info(Buffer.from(JSON.stringify(x))));
  }

  async mkdir(p: string, mode = 0o755): Promise<void> {
    await this.#cmd('mkdir', [p, octal(toGoMode(mode))]);
  }

  async mkdirAll(p: string, mode = 0o755): Promise<void> {
    await this.#cmd('mkdirall', [p, octal(toGoMode(mode))]);
  }

  async remove(p: string): Promise<void> {
    await this.#cmd('remove', [p]);
  }

  async removeAll(p: string): Promise<void> {
    await this.#cmd('removeall', [p]);
  }

  async link(oldname: string, newname: string): Promise<void> {
    await this.#cmd('link', [oldname, newname]);
  }

  async symlink(target: string, newname: string): Promise<void> {
    await this.#cmd('symlink', [target, newname]);
  }

  async lchown(p: string, uid: number, gid: number): Promise<void> {
    await this.#cmd('lchown', [p, String(uid), String(gid)]);
  }

  /** Sent as raw unix bits, which is what the guest hands to fchmodat. */
  async lchmod(p: string, mode: number): Promise<void> {
    await this.#cmd('lchmod', [p, octal(mode & 0o7777)]);
  }

  /** Sent as raw unix bits including S_IFCHR/S_IFBLK (the original sent Go's type bits, which mknod ignores). */
  async mknod(p: string, mode: number, major: number, minor: number): Promise<void> {
    await this.#cmd('mknod', [p, octal(mode), String(major), String(minor)]);
  }

  async mkfifo(p: string, mode = 0o644): Promise<void> {
    await this.#cmd('mkfifo', [p, octal(mode & 0o7777)]);
  }

  /** `path` inside the container → a guest path under `root`, symlinks resolved without leaving it. */
  async resolveScopedPath(path: string, raw = false): Promise<string> {
    const join = (...parts: string[]): string => normalize(parts.join('/'));
    const a = raw ? join(this.root, path) : join(this.root, normalize(`/${path}`));
    return (await this.#cmd('resolvepath', [a, this.root])).toString('utf8');
  }

  /** Unpacks a tar into `dst` in the guest; `opts` are moby archive.TarOptions (Go field names). */
  async extractArchive(src: Readable, dst: string, opts: Record<string, unknown> | null = null): Promise<void> {
    const json = Buffer.from(JSON.stringify(opts));
    const head = OptionsHeader.encode({ length: json.length });
    const input = new PassThrough();
    input.write(head);
    input.write(json);
    src.pipe(input);
    await this.#cmd('extractarchive', [dst], input);
  }

  /** A tar of `src` in the guest. A guest failure fails the stream (the original ended it as if complete). */
  archivePath(src: string, opts: Record<string, unknown> | null = null): Readable {
    const json = Buffer.from(JSON.stringify(opts));
    const head = OptionsHeader.encode({ length: json.length });
    const out = new PassThrough();
    void (async () => {
      const p = await this.#run(['remotefs', 'archivepath', src]);
      try {
        const err = collect(p.stderr, this.#idleMs, 'remotefs archivepath');
        p.stdin.end(Buffer.concat([head, json]));
        p.stdout.pipe(out, { end: false });
        const [stderr, code] = await Promise.all([err, p.exited, new Promise((r) => p.stdout.on('end', r))]).then(
          ([e, c]) => [e, c] as const,
        );
        const e = mapError('remotefs archivepath', src, stderr.toString('utf8'));
        if (e) throw e;
        if (code !== 0) throw new RemoteFsError('ERR_REMOTEFS', 'remotefs archivepath', `${src}: exit code ${code}`);
        out.end();
      } finally {
        await p.close();
      }
    })().catch((e: unknown) => out.destroy(e as Error));
    return out;
  }

  /** Opens a file in the guest: `flags` are Linux O_* values, `perm` its permission bits. */
  async openFile(p: string, flags = 0, perm = 0o644): Promise<RemoteFile> {
    const proc = await this.#run(['remotefs', 'openfile', p, String(flags), octal(toGoMode(perm))]);
    const f = new RemoteFile(proc, p, this.#idleMs);
    try {
      await f.opened();
    } catch (e) {
      await proc.close();
      throw e;
    }
    return f;
  }
}

function normalize(p: string): string {
  const abs = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return (abs ? '/' : '') + out.join('/');
}

/** Reads exact byte counts from a stream, in order. */
class ByteReader {
  #buf = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | null = null;
  #error: Error | null = null;

  constructor(s: Readable) {
    s.on('data', (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      this.#wake?.();
    });
    s.on('end', () => {
      this.#ended = true;
      this.#wake?.();
    });
    s.on('error', (e) => {
      this.#error = e;
      this.#wake?.();
    });
  }

  async take(n: number, idleMs: number, what: string): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.#error) throw this.#error;
      if (this.#ended) throw new RemoteFsError('ERR_EOF', what, 'the file server ended');
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new HcsError('ERR_TIMEOUT', what, `no data for ${idleMs / 1000} s`)), idleMs);
        this.#wake = () => {
          clearTimeout(t);
          this.#wake = null;
          resolve();
        };
      });
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
}

/** One file opened in the guest, served by its own `remotefs openfile` process. */
export class RemoteFile {
  readonly #p: GuestProcess;
  readonly #path: string;
  readonly #in: ByteReader;
  readonly #idleMs: number;
  #queue: Promise<unknown> = Promise.resolve();
  #gone = false;

  constructor(p: GuestProcess, path: string, idleMs: number) {
    this.#p = p;
    this.#path = path;
    this.#idleMs = idleMs;
    this.#in = new ByteReader(p.stdout);
  }

  async #header(what: string): Promise<FileHeader> {
    return FileHeader.decode(await this.#in.take(FileHeader.size, this.#idleMs, what));
  }

  /** The failure the guest reported: it writes CmdFailed, then its error JSON on stderr, then exits. */
  async #failure(op: string): Promise<RemoteFsError> {
    this.#gone = true;
    const stderr = await collect(this.#p.stderr, this.#idleMs, op);
    await this.#p.close();
    return (
      mapError(op, this.#path, stderr.toString('utf8')) ??
      new RemoteFsError('ERR_REMOTEFS', op, `${this.#path}: unknown error`)
    );
  }

  /** @internal The first answer: the open itself. */
  async opened(): Promise<void> {
    const h = await this.#header('remotefs openfile');
    if (h.cmd !== FileCmd.OK) throw await this.#failure('remotefs openfile');
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Sends a header (`size` defaults to the payload's length: a Read sends the length it wants, no payload). */
  #send(cmd: number, payload?: Uint8Array, size = payload?.length ?? 0): void {
    if (this.#gone) throw new RemoteFsError('ERR_EOF', 'remotefs openfile', `${this.#path}: the file is closed`);
    this.#p.stdin.write(FileHeader.encode({ cmd, size }));
    if (payload && payload.length) this.#p.stdin.write(payload);
  }

  /** Reads up to `length` bytes; an empty result means end of file (the guest's server then exits). */
  read(length: number): Promise<Uint8Array> {
    return this.#serial(async () => {
      if (this.#gone) return new Uint8Array(0);
      this.#send(FileCmd.Read, undefined, length);
      const h = await this.#header('remotefs openfile read');
      if (h.cmd !== FileCmd.OK) {
        const e = await this.#failure('remotefs openfile read');
        if (e.code === 'ERR_EOF') return new Uint8Array(0);
        throw e;
      }
      return this.#in.take(h.size, this.#idleMs, 'remotefs openfile read');
    });
  }

  write(data: Uint8Array): Promise<number> {
    return this.#serial(async () => {
      this.#send(FileCmd.Write, data);
      const h = await this.#header('remotefs openfile write');
      if (h.cmd !== FileCmd.OK) throw await this.#failure('remotefs openfile write');
      return data.length;
    });
  }

  /** Sets the offset (whence 0 start, 1 current, 2 end); returns the new offset. */
  seek(offset: number, whence: 0 | 1 | 2 = 0): Promise<number> {
    return this.#serial(async () => {
      this.#send(FileCmd.Seek, SeekHeader.encode({ offset: BigInt.asUintN(64, BigInt(offset)), whence }));
      const h = await this.#header('remotefs openfile seek');
      if (h.cmd !== FileCmd.OK) throw await this.#failure('remotefs openfile seek');
      return SeekResult.decode(await this.#in.take(h.size, this.#idleMs, 'remotefs openfile seek')).offset;
    });
  }

  /** Closes the file and releases the guest process (the original leaked one handle per opened file). */
  close(): Promise<void> {
    return this.#serial(async () => {
      try {
        if (!this.#gone) {
          this.#send(FileCmd.Close);
          const h = await this.#header('remotefs openfile close');
          this.#gone = true;
          if (h.cmd !== FileCmd.OK) throw await this.#failure('remotefs openfile close');
        }
      } finally {
        this.#gone = true;
        await this.#p.close();
      }
    });
  }
}
