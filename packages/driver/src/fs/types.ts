import type { Readable } from 'node:stream';

export type EntryKind = 'file' | 'dir' | 'symlink' | 'chr' | 'blk' | 'fifo' | 'socket';

/** What `stat`/`lstat` report about an entry of a container filesystem. */
export interface FileInfo {
  /** The last path component ("/" for the root). */
  name: string;
  ino: number;
  type: EntryKind;
  /** Permission bits with setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  /** Modification time: seconds and nanoseconds. */
  mtime: { sec: number; nsec: number };
  rdev: { major: number; minor: number } | null;
}

export interface DirEntry {
  name: string;
  type: EntryKind;
}

/** An open file of a container filesystem (the original's `containerfs` file handle). */
export interface ContainerFile {
  /** Reads at the current offset (or `position`); returns the bytes read, 0 at the end. */
  read(buf: Uint8Array, position?: number): Promise<number>;
  write(buf: Uint8Array, position?: number): Promise<number>;
  /** `whence` 0: from the start, 1: from the current offset, 2: from the end. Returns the new offset. */
  seek(offset: number, whence: 0 | 1 | 2): Promise<number>;
  close(): Promise<void>;
}

/**
 * The filesystem `get()` returns: container paths (`/etc/passwd`), always resolved inside the layer's root —
 * `..` stops at the root and symlinks, absolute or relative, resolve against it. Operations whose last
 * component is a symlink (`lstat`, `readlink`, `remove`, `lchown`, `lchmod`) act on the link itself.
 */
export interface ContainerFs {
  /** The union's folder on this host (`host` backend), else null. */
  readonly path: string | null;
  /** True where writes fail with `ERR_READ_ONLY` (the `inproc` backend). */
  readonly readOnly: boolean;
  stat(path: string): Promise<FileInfo>;
  lstat(path: string): Promise<FileInfo>;
  /** Entries sorted by name. */
  readdir(path: string): Promise<DirEntry[]>;
  readFile(path: string): Promise<Buffer>;
  createReadStream(path: string): Promise<Readable>;
  /** Creates or truncates the file, and sets exactly `mode` (default 0o644), whatever the umask. */
  writeFile(path: string, data: Uint8Array | string, mode?: number): Promise<void>;
  /** `flags` as `fs.open` takes them (`'r'`, `'r+'`, `'w'`, `'a'`, …). */
  open(path: string, flags?: string, mode?: number): Promise<ContainerFile>;
  mkdir(path: string, mode?: number): Promise<void>;
  mkdirAll(path: string, mode?: number): Promise<void>;
  remove(path: string): Promise<void>;
  removeAll(path: string): Promise<void>;
  link(existing: string, newPath: string): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  readlink(path: string): Promise<string>;
  lchown(path: string, uid: number, gid: number): Promise<void>;
  lchmod(path: string, mode: number): Promise<void>;
  mknod(path: string, type: 'chr' | 'blk', mode: number, major: number, minor: number): Promise<void>;
  mkfifo(path: string, mode: number): Promise<void>;
  /** The container path `path` names once every symlink in it is resolved inside the root. */
  resolveScopedPath(path: string): Promise<string>;
  /** Unpacks a tar into the folder `dest` (created when missing); entries never land outside the root. */
  extractArchive(tar: AsyncIterable<Uint8Array>, dest: string): Promise<void>;
  /** A tar of `path` (a file or a whole folder), names relative to its parent folder. */
  archivePath(path: string): Readable;
}

/** Splits a container path into its components ("" and "." dropped; ".." kept for the resolver). */
export function splitPath(p: string): string[] {
  return p.split('/').filter((x) => x !== '' && x !== '.');
}
