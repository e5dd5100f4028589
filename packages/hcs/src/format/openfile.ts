// The `remotefs openfile` binary protocol — opengcs remotefs (lcow-behaviour.md §2.3): every message is a
// 12-byte big-endian header, then `size` bytes. Seek carries a 12-byte header of its own and is answered
// with the new offset as a big-endian 64-bit integer.
import { struct, u32, u64, u64n, type Infer } from '@lcow/binary';

export const FileHeader = struct('RemotefsFileHeader', 'be', { cmd: u32, size: u64n });
export type FileHeader = Infer<typeof FileHeader>;

/** `offset` is a signed 64-bit value on the wire (two's complement); `whence` a signed 32-bit one. */
export const SeekHeader = struct('RemotefsSeekHeader', 'be', { offset: u64, whence: u32 });
export type SeekHeader = Infer<typeof SeekHeader>;

export const SeekResult = struct('RemotefsSeekResult', 'be', { offset: u64n });

export const FileCmd = { Read: 0, Write: 1, Seek: 2, Close: 3, OK: 4, Failed: 5 } as const;

/**
 * `remotefs extractarchive` and `archivepath` read their options first: the JSON's length as a big-endian
 * 64-bit integer, then the JSON (moby archive.TarOptions).
 */
export const OptionsHeader = struct('RemotefsOptionsHeader', 'be', { length: u64n });
