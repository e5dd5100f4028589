import { open, rm, stat } from 'node:fs/promises';
import { DurableError, DurableFile, publishFile, tempPathFor } from '@lcow/durable';
import { VhdError, throwIfAborted } from './errors.ts';
import { isZero } from './file.ts';
import { appendFixedFooter, type AppendFooterOptions } from './footer/footer.ts';
import { createVhdx, type CreateVhdxOptions } from './vhdx/create.ts';
import { openVhdx } from './vhdx/vhdx.ts';

/** Progress of a long operation, in bytes. */
export interface Progress {
  done: number;
  total: number;
}

/** Options of {@link convertRawImage}. */
export interface ConvertOptions {
  /** `'vhd'`: a fixed VHD (copy + footer). `'vhdx'`: a VHDX that stores only the non-zero blocks. */
  format: 'vhd' | 'vhdx';
  /** For `'vhdx'`: `'dynamic'` (default) or `'fixed'`, and the block size. */
  vhdx?: Pick<CreateVhdxOptions, 'type' | 'blockSize' | 'logicalSectorSize' | 'physicalSectorSize'>;
  /** For `'vhd'`: footer identity and alignment. */
  footer?: AppendFooterOptions;
  /** Replace an existing output file; default false. */
  overwrite?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

/** What {@link convertRawImage} wrote. */
export interface ConvertResult {
  output: string;
  format: 'vhd' | 'vhdx';
  virtualSize: number;
  /** Bytes of the input that were all zeros in whole chunks and so were not written. */
  skippedZeroBytes: number;
}

const CHUNK = 1024 * 1024;

/**
 * Wraps a raw disk image into a fixed VHD or a VHDX. The output appears atomically (temporary file in the
 * same folder, fsync, rename): on error or abort, nothing is left at `output`. Zero chunks are skipped, so
 * the output is sparse. A raw size that is not a multiple of 512 is padded with zeros.
 */
export async function convertRawImage(input: string, output: string, opts: ConvertOptions): Promise<ConvertResult> {
  const { signal, onProgress } = opts;
  const total = (await stat(input)).size;
  if (total === 0) throw new VhdError('ERR_INVALID_ARGUMENT', `${input}: empty image`);
  if (!opts.overwrite) {
    const exists = await stat(output).then(
      () => true,
      () => false,
    );
    if (exists) throw new VhdError('ERR_EXISTS', `${output}: already exists`);
  }
  const publish = { overwrite: opts.overwrite === true };
  const src = await open(input, 'r');
  let tmp: string | null = null;
  let skipped = 0;
  try {
    const copyChunks = async (write: (buf: Uint8Array, at: number) => Promise<void>): Promise<void> => {
      const buf = new Uint8Array(CHUNK);
      for (let at = 0; at < total; at += CHUNK) {
        throwIfAborted(signal, input);
        const want = Math.min(CHUNK, total - at);
        const { bytesRead } = await src.read(buf, 0, want, at);
        if (bytesRead !== want) throw new VhdError('ERR_INVALID_ARGUMENT', `${input}: shrank while being read`);
        const piece = buf.subarray(0, want);
        if (isZero(piece)) skipped += want;
        else await write(piece, at);
        onProgress?.({ done: at + want, total });
      }
    };
    let virtualSize: number;
    if (opts.format === 'vhd') {
      const dst = await DurableFile.create(output, publish);
      try {
        await dst.handle.truncate(total);
        await copyChunks(async (b, at) => void (await dst.handle.write(b, 0, b.length, at)));
        virtualSize = (await appendFixedFooter(dst.handle, opts.footer)).payloadSize;
        throwIfAborted(signal, input);
      } catch (e) {
        await dst.discard();
        throw e;
      }
      await dst.commit();
    } else {
      // The VHDX library makes its own file: written under a temporary name, then published the same way.
      const logical = opts.vhdx?.logicalSectorSize ?? 512;
      virtualSize = Math.ceil(total / logical) * logical;
      tmp = tempPathFor(output);
      await createVhdx(tmp, { ...opts.vhdx, size: virtualSize, ...(signal ? { signal } : {}) });
      const disk = await openVhdx(tmp, { writable: true });
      try {
        await copyChunks((b, at) => disk.write(at, b));
      } finally {
        await disk.close();
      }
      throwIfAborted(signal, input);
      await publishFile(tmp, output, publish);
      tmp = null;
    }
    return { output, format: opts.format, virtualSize, skippedZeroBytes: skipped };
  } catch (e) {
    if (tmp) await rm(tmp, { force: true });
    if (e instanceof DurableError && e.code === 'ERR_EXISTS')
      throw new VhdError('ERR_EXISTS', `${output}: already exists`, { cause: e });
    throw e;
  } finally {
    await src.close();
  }
}
