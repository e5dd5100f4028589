import { readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Footer, openVhdx, parseFooter, VhdError } from '@lcow/vhd';
import { Ext4Error } from '../errors.ts';

/**
 * Where a filesystem's bytes come from: positioned reads over `size` bytes. Reads past `size` come back
 * short. A plain image, the payload of a fixed `.vhd`, or a VHDX through `@lcow/vhd`.
 */
export interface ByteSource {
  /** For messages: the file, and what wraps the filesystem in it. */
  readonly name: string;
  readonly size: number;
  readonly container: 'raw' | 'vhd' | 'vhdx';
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional synchronous positioned read, for small reads of a local file: from the page cache it costs
   * microseconds, where a trip through the thread pool costs tens of them.
   */
  readSync?(offset: number, length: number): Uint8Array;
  close(): Promise<void>;
}

function fileSource(
  fh: FileHandle,
  name: string,
  size: number,
  container: 'raw' | 'vhd' | 'vhdx',
  base = 0,
): ByteSource {
  return {
    name,
    size,
    container,
    async read(offset, length) {
      const n = Math.max(0, Math.min(length, size - offset));
      const buf = new Uint8Array(n);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await fh.read(buf, got, n - got, base + offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got === n ? buf : buf.subarray(0, got);
    },
    readSync(offset, length) {
      const n = Math.max(0, Math.min(length, size - offset));
      const buf = new Uint8Array(n);
      let got = 0;
      while (got < n) {
        const r = readSync(fh.fd, buf, got, n - got, base + offset + got);
        if (r === 0) break;
        got += r;
      }
      return got === n ? buf : buf.subarray(0, got);
    },
    close: () => fh.close(),
  };
}

/**
 * Opens an image file and finds the filesystem in it: a VHDX (`vhdxfile` at byte 0) is read through its
 * block table; a file ending in a fixed VHD footer (`conectix`) is read up to the footer; anything else is
 * taken as a plain filesystem image. Other VHD kinds (dynamic, differencing) are `ERR_EXT4_UNSUPPORTED`.
 */
export async function openImageSource(path: string): Promise<ByteSource> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const head = new Uint8Array(8);
    await fh.read(head, 0, 8, 0);
    if (Buffer.from(head).toString('latin1') === 'vhdxfile') {
      await fh.close();
      return vhdxSource(path);
    }
    if (size >= Footer.size) {
      const tail = new Uint8Array(Footer.size);
      await fh.read(tail, 0, Footer.size, size - Footer.size);
      if (Buffer.from(tail.subarray(0, 8)).toString('latin1') === 'conectix') {
        let footer;
        try {
          footer = parseFooter(tail);
        } catch (e) {
          if (e instanceof VhdError) throw new Ext4Error('ERR_EXT4_CORRUPT', `${path}: ${e.message}`, { cause: e });
          throw e;
        }
        if (footer.type !== 'fixed')
          throw new Ext4Error('ERR_EXT4_UNSUPPORTED', `${path}: a ${footer.type} VHD; only fixed VHDs are read`);
        return fileSource(fh, path, size - Footer.size, 'vhd');
      }
    }
    return fileSource(fh, path, size, 'raw');
  } catch (e) {
    await fh.close().catch(() => {});
    throw e;
  }
}

async function vhdxSource(path: string): Promise<ByteSource> {
  let disk;
  try {
    disk = await openVhdx(path);
  } catch (e) {
    if (e instanceof VhdError) throw new Ext4Error('ERR_EXT4_CORRUPT', `${path}: ${e.message}`, { cause: e });
    throw e;
  }
  const size = disk.size;
  // A VHDX whose blocks lie in one run (a fixed disk, such as our sandboxes) is read as the plain file
  // range it is: no block table on the way, and small reads stay synchronous.
  try {
    const run = (await disk.allocation()).contiguous;
    if (run) {
      const fh = await open(path, 'r');
      await disk.close();
      return fileSource(fh, path, size, 'vhdx', run.offset);
    }
  } catch (e) {
    await disk.close();
    if (e instanceof VhdError) throw new Ext4Error('ERR_EXT4_CORRUPT', `${path}: ${e.message}`, { cause: e });
    throw e;
  }
  return {
    name: path,
    size,
    container: 'vhdx',
    read: (offset, length) => disk.read(offset, Math.max(0, Math.min(length, size - offset))),
    close: () => disk.close(),
  };
}

/** A source over bytes in memory (tests, fuzzing, images already read). */
export function memorySource(bytes: Uint8Array, name = 'memory image'): ByteSource {
  return {
    name,
    size: bytes.length,
    container: 'raw',
    read: async (offset, length) => bytes.slice(offset, Math.min(bytes.length, offset + length)),
    close: async () => {},
  };
}
