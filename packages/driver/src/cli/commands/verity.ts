import { open } from 'node:fs/promises';
import { Ext4Error, hasExt4Magic, probeExt4, rootDigest as tarRootDigest } from '@lcow/ext4';
import { checkVerity, readVerity, verityDigest } from '@lcow/vhd';
import { DriverError } from '../../errors.ts';
import { flag, option, positional } from '../args.ts';
import { readerOf } from '../read-at.ts';
import { table, toJson } from '../format.ts';
import { SPECS } from '../registry.ts';
import type { Command, Io } from '../types.ts';

const INFO = SPECS.verity.usage[0];
const DIGEST = SPECS.verity.usage[1];
const CHECK = SPECS.verity.usage[2];

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

export const verityCommand: Command = {
  name: 'verity',
  summary: SPECS.verity.summary,
  usage: [INFO, DIGEST, CHECK],
  async run(argv: string[], io: Io): Promise<number> {
    const [sub, ...rest] = argv;
    const args = [...rest];
    const json = flag(args, '--json');
    if (sub === 'info') {
      const [image] = positional(args, 1, INFO);
      const info = await readVerity(image!, await requireExt4(image!));
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
    if (sub === 'digest') {
      const layout = option(args, '--layout') ?? 'lcow';
      if (layout !== 'lcow' && layout !== 'hcsshim')
        throw new DriverError('ERR_USAGE', `--layout ${JSON.stringify(layout)}: lcow or hcsshim`);
      const [input] = positional(args, 1, DIGEST);
      let size = await ext4Size(input!);
      let rootDigest: string;
      let source: 'image' | 'tar' = 'image';
      if (size !== null) rootDigest = await verityDigest(input!, size);
      else {
        // A tar: convert it as the LCOW driver does (whiteouts, 128 GiB maximum) and hash the image as it is
        // produced, writing nothing. With `--layout hcsshim` that is hcsshim's ConvertAndComputeRootDigest,
        // so the digest is a Windows host's.
        source = 'tar';
        const r = await tarRootDigest(input!, {
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
    if (sub === 'check') {
      const [image, digest] = positional(args, 2, CHECK);
      if (!/^[0-9a-fA-F]{64}$/.test(digest!))
        throw new DriverError('ERR_USAGE', `digest ${JSON.stringify(digest)}: expected 64 hex digits`);
      const r = await checkVerity(image!, await requireExt4(image!), digest!);
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
    }
    throw new DriverError('ERR_USAGE', `usage:\n  ${[INFO, DIGEST, CHECK].join('\n  ')}`);
  },
};
