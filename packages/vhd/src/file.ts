import { fstat, fsync, ftruncate, read, write } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';

/** What the package needs of an open file: positioned reads and writes, size, truncate, sync. */
export interface RandomAccessFile {
  readonly name: string;
  read(buf: Uint8Array, position: number): Promise<number>;
  write(buf: Uint8Array, position: number): Promise<void>;
  size(): Promise<number>;
  truncate(length: number): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** A file to work on: a path (opened and closed for the call), an open `FileHandle`, or a numeric fd. */
export type FileTarget = string | number | FileHandle;

const fstatP = promisify(fstat);
const ftruncateP = promisify(ftruncate);
const fsyncP = promisify(fsync);
const readP = promisify(read);
const writeP = promisify(write);

async function writeAll(
  write1: (b: Uint8Array, off: number, len: number, pos: number) => Promise<number>,
  buf: Uint8Array,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < buf.length) done += await write1(buf, done, buf.length - done, position + done);
}

function fromHandle(fh: FileHandle, name: string, owned: boolean): RandomAccessFile {
  return {
    name,
    read: async (buf, position) => (await fh.read(buf, 0, buf.length, position)).bytesRead,
    write: (buf, position) => writeAll(async (b, o, l, p) => (await fh.write(b, o, l, p)).bytesWritten, buf, position),
    size: async () => (await fh.stat()).size,
    truncate: (length) => fh.truncate(length),
    sync: () => fh.sync(),
    close: async () => {
      if (owned) await fh.close();
    },
  };
}

function fromFd(fd: number): RandomAccessFile {
  return {
    name: `fd ${fd}`,
    read: async (buf, position) => (await readP(fd, buf, 0, buf.length, position)).bytesRead,
    write: (buf, position) =>
      writeAll(async (b, o, l, p) => (await writeP(fd, b, o, l, p)).bytesWritten, buf, position),
    size: async () => (await fstatP(fd)).size,
    truncate: (length) => ftruncateP(fd, length),
    sync: () => fsyncP(fd),
    close: async () => {},
  };
}

/** Opens a {@link FileTarget}. Only files opened here from a path are closed by `close()`. */
export async function openTarget(target: FileTarget, flags: 'r' | 'r+'): Promise<RandomAccessFile> {
  if (typeof target === 'string') return fromHandle(await open(target, flags), target, true);
  if (typeof target === 'number') return fromFd(target);
  return fromHandle(target, `fd ${target.fd}`, false);
}

/** Reads exactly `length` bytes at `position`, or fewer at end of file (the result is then shorter). */
export async function readAt(file: RandomAccessFile, position: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = await file.read(buf.subarray(got), position + got);
    if (n === 0) break;
    got += n;
  }
  return got === length ? buf : buf.subarray(0, got);
}

const ZEROS = new Uint8Array(64 * 1024);

/** Whether every byte of `b` is zero (compared 64 KiB at a time with a native compare). */
export function isZero(b: Uint8Array): boolean {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const part = b.subarray(at, at + ZEROS.length);
    if (Buffer.compare(part, ZEROS.subarray(0, part.length)) !== 0) return false;
  }
  return true;
}
