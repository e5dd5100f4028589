import { open } from 'node:fs/promises';
import { Ext4Error, hasExt4Magic, probeExt4, rootDigest as tarRootDigest } from '@lcow/ext4';
import { checkVerity, readVerity, verityDigest } from '@lcow/vhd';
import { DriverError } from '../../errors.ts';
import type { Readable } from 'node:stream';
import type { Parsed } from '../args.ts';
import { readerOf } from '../read-at.ts';
import { table, toJson } from '../format.ts';
import type { Command, Io } from '../types.ts';

/** Bytes of the ext4 filesystem at the start of a file: where its verity area would begin. */
async function ext4Size(path: string): Promise<number | null> {
  const fh = await open(path, 'r');
  try {
    const read = readerOf(fh);
    if (!(await hasExt4Magic(read))) return null;
    return (await probeExt4(read, path)).size;
  } finally {
    await fh.close();
  }
}

async function requireExt4(path: string): Promise<number> {
  const size = await ext4Size(path);
  if (size === null) throw new Ext4Error('ERR_EXT4_CORRUPT', `${path}: no ext4 filesystem at the start of the file`);
  return size;
}

/**
 * The filesystem's size and the verity superblock after it, or a plain "no tree" error when there is none.
 */
async function verityOf(image: string): Promise<{ size: number; info: Awaited<ReturnType<typeof readVerity>> }> {
  const size = await requireExt4(image);
  const fh = await open(image, 'r');
  let head: Buffer;
  try {
    head = Buffer.alloc(8);
    const { bytesRead } = await fh.read(head, 0, 8, size);
    head = head.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  // A VHD footer ("conectix") or nothing at all after the filesystem: an image made without --verity.
  if (!head.subarray(0, 6).equals(Buffer.from('verity')))
    throw new DriverError(
      'ERR_NOT_FOUND',
      `${image}: no dm-verity tree after the ext4 filesystem (${size} bytes; ${head.length === 0 ? 'the file ends there' : head.subarray(0, 8).equals(Buffer.from('conectix')) ? 'a VHD footer follows' : 'other data follows'}); it was made without --verity`,
    );
  return { size, info: await readVerity(image, size) };
}

export const verityCommand: Command = {
  name: 'verity',
  async run(form: string, p: Parsed, io: Io): Promise<number> {
    const json = p.flag('json');
    if (form === 'info') {
      const { info } = await verityOf(p.operands[0]!);
      io.out(
        json
          ? toJson(info)
          : table([
              ['hash offset', String(info.hashOffset)],
              ['data blocks', `${info.dataBlocks} of ${info.dataBlockSize} bytes`],
              [
                'hash',
                `${info.algorithm}, type ${info.hashType}, ${info.hashBlockSize}-byte blocks, ${info.levelOffsets.length} levels`,
              ],
              ['salt', info.salt || '(none)'],
              ['uuid', info.uuid],
              ['hash area', `${info.hashSize} bytes`],
            ]),
      );
      return 0;
    }
    if (form === 'digest') {
      const layout = p.value('layout') ?? 'lcow';
      if (layout !== 'lcow' && layout !== 'hcsshim')
        throw new DriverError('ERR_USAGE', `--layout ${JSON.stringify(layout)}: lcow or hcsshim`);
      const input = p.operands[0]!;
      let size = input === '-' ? null : await ext4Size(input);
      let rootDigest: string;
      let source: 'image' | 'tar' = 'image';
      if (size !== null) rootDigest = await verityDigest(input, size);
      else {
        // A tar (`-`: on standard input): convert it as the LCOW driver does (whiteouts, 128 GiB maximum)
        // and hash the image as it is produced, writing nothing. With `--layout hcsshim` that is hcsshim's
        // ConvertAndComputeRootDigest, so the digest is a Windows host's.
        source = 'tar';
        const r = await tarRootDigest(input === '-' ? ((io.stdin ?? process.stdin) as Readable) : input, {
          layout,
          maximumDiskSize: 128 * 2 ** 30,
          convertWhiteouts: true,
          signal: io.signal,
        });
        rootDigest = r.rootDigest;
        size = r.dataBytes;
      }
      io.out(
        json ? toJson({ rootDigest, source, dataBytes: size, ...(source === 'tar' ? { layout } : {}) }) : rootDigest,
      );
      return 0;
    }
    const [image, digest] = p.operands;
    if (!/^[0-9a-fA-F]{64}$/.test(digest!))
      throw new DriverError('ERR_USAGE', `digest ${JSON.stringify(digest)}: expected 64 hex digits`);
    // One probe of the filesystem: its size is where the tree starts.
    const { size } = await verityOf(image!);
    const r = await checkVerity(image!, size, digest!);
    if (json) io.out(toJson(r));
    else if (r.ok) io.out(`${image}: OK, root digest ${r.rootDigest}`);
    if (!r.ok) {
      const where =
        r.firstBad.level === 'root'
          ? `root digest is ${r.rootDigest}`
          : `first bad hash block: level ${r.firstBad.level}, block ${r.firstBad.block}`;
      throw new DriverError('ERR_VERIFICATION', `${image}: does not match ${digest} (${where})`);
    }
    return 0;
  },
};
