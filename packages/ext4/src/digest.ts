// The dm-verity root digest of the image a tar converts to, without writing the image anywhere: the
// writers see a file that keeps, for each 4 KiB block, only the block's leaf digest. That works because
// both layouts write every block once, in full, in increasing order (the head — superblock, descriptors —
// and hcsshim's rewritten xattr blocks come later, whole), except where a buffer flush ends inside a block
// and the next write continues it: such a block is held until the end.
import { createHash, type Hash } from 'node:crypto';
import { stat, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DEFAULT_SALT, LeafHasher, VERITY_BLOCK, VerityTree } from '@lcow/vhd';
import { convert, type ConvertOptions } from './convert.ts';
import { Ext4Error } from './errors.ts';

const DIGEST = 32;

/** What {@link rootDigest} computed. */
export interface RootDigestResult {
  /** The dm-verity root digest (hex) of the filesystem image. */
  rootDigest: string;
  /** Bytes of the filesystem the digest covers (the image without tree or footer). */
  dataBytes: number;
  /** Bytes of tar read (after decompression). */
  tarBytes: number;
  /** Regular files' content bytes. */
  fileBytes: number;
}

/** Options of {@link rootDigest}: the converter's, less those that only shape an output file. */
export type RootDigestOptions = Omit<ConvertOptions, 'appendVhdFooter' | 'verity' | 'fsync' | 'timestamp'> & {
  /** dm-verity salt (default 32 zero bytes, as hcsshim). */
  salt?: Uint8Array;
};

/**
 * Converts `input` as {@link convert} would and returns the dm-verity root digest of the resulting
 * filesystem, writing nothing to disk. With `{ layout: 'hcsshim', convertWhiteouts: true,
 * maximumDiskSize: 128 GiB }` it is hcsshim's ConvertAndComputeRootDigest: the digest a Windows host
 * computes for a layer, the one confidential-container policies pin. Memory: 32 bytes per 4 KiB of image.
 */
export async function rootDigest(
  input: string | Readable | AsyncIterable<Uint8Array>,
  options: RootDigestOptions = {},
): Promise<RootDigestResult> {
  const { salt, ...rest } = options;
  const file = new LeafDigestFile(salt ?? DEFAULT_SALT);
  // A tar file's size foretells the image's (data plus a few percent of metadata): room for its digests at
  // once, instead of growing (and copying) the table a dozen times on the way.
  if (typeof input === 'string')
    await stat(input).then(
      (s) => file.reserve(Math.ceil((s.size * 1.05) / VERITY_BLOCK) + 1024),
      () => {},
    );
  try {
    const r = await convert(input, file as unknown as FileHandle, { ...rest, fsync: false });
    return {
      rootDigest: await file.rootDigest(r.bytes),
      dataBytes: r.bytes,
      tarBytes: r.tarBytes,
      fileBytes: r.fileBytes,
    };
  } finally {
    await file.dispose();
  }
}

/**
 * The part of a `FileHandle` the writers use, keeping leaf digests instead of bytes. Whole blocks are hashed
 * on a worker thread while the converter goes on (one thread, so a block written twice keeps the later
 * digest); blocks written in part are gathered here and hashed at the end.
 */
class LeafDigestFile {
  readonly #salt: Uint8Array;
  readonly #salted: Hash;
  readonly #hasher: LeafHasher;
  #leaves = new Uint8Array(DIGEST * 1024);
  /** 1 where a block's leaf digest is known. */
  #have = new Uint8Array(1024);
  /** Blocks written in part so far: their bytes, zero elsewhere, hashed at the end. */
  readonly #partial = new Map<number, Uint8Array>();
  #blocks = 0;

  constructor(salt: Uint8Array) {
    this.#salt = salt;
    this.#salted = createHash('sha256').update(salt);
    this.#hasher = new LeafHasher(salt, (first, digests) => this.#leaves.set(digests, first * DIGEST));
  }

  /** Stops the hashing thread. */
  async dispose(): Promise<void> {
    await this.#hasher.close();
  }

  /** Makes room for the digests of `blocks` blocks. */
  reserve(blocks: number): void {
    this.#grow(blocks);
  }

  #grow(blocks: number): void {
    if (blocks <= this.#have.length) return;
    // A quarter more, not double: the table is most of this path's memory (32 bytes a block), and the
    // reserve made from the tar's size is usually only a little short (small files round up to a block).
    const n = Math.max(blocks, Math.ceil(this.#have.length * 1.25));
    const leaves = new Uint8Array(n * DIGEST);
    leaves.set(this.#leaves);
    this.#leaves = leaves;
    const have = new Uint8Array(n);
    have.set(this.#have);
    this.#have = have;
  }

  #leaf(block: number, data: Uint8Array): void {
    this.#grow(block + 1);
    this.#leaves.set(this.#salted.copy().update(data).digest(), block * DIGEST);
    this.#have[block] = 1;
    this.#blocks = Math.max(this.#blocks, block + 1);
  }

  async write(
    buffer: Uint8Array,
    offset = 0,
    length = buffer.length - offset,
    position: number | null = null,
  ): Promise<{ bytesWritten: number; buffer: Uint8Array }> {
    if (position === null) throw new Ext4Error('ERR_INTERNAL', 'digest-only image: a write without a position');
    let at = position;
    let from = offset;
    const end = offset + length;
    while (from < end) {
      const block = Math.floor(at / VERITY_BLOCK);
      const inBlock = at % VERITY_BLOCK;
      const whole = inBlock === 0 ? Math.floor((end - from) / VERITY_BLOCK) : 0;
      if (whole > 0) {
        // A run of whole blocks: to the hashing thread, one job for the run. A block gathered in part
        // before is now written whole: the whole write is what the image holds.
        for (let b = block; b < block + whole; b++) this.#partial.delete(b);
        this.#grow(block + whole);
        this.#have.fill(1, block, block + whole);
        this.#blocks = Math.max(this.#blocks, block + whole);
        await this.#hasher.hash(block, buffer.subarray(from, from + whole * VERITY_BLOCK));
        from += whole * VERITY_BLOCK;
        at += whole * VERITY_BLOCK;
        continue;
      }
      const n = Math.min(VERITY_BLOCK - inBlock, end - from);
      if (this.#have[block] === 1 && !this.#partial.has(block))
        throw new Ext4Error('ERR_INTERNAL', `digest-only image: block ${block} is written again in part`);
      let part = this.#partial.get(block);
      if (!part) this.#partial.set(block, (part = new Uint8Array(VERITY_BLOCK)));
      part.set(buffer.subarray(from, from + n), inBlock);
      this.#grow(block + 1);
      this.#have[block] = 1;
      this.#blocks = Math.max(this.#blocks, block + 1);
      from += n;
      at += n;
    }
    return { bytesWritten: length, buffer };
  }

  async truncate(len = 0): Promise<void> {
    if (len === 0) {
      this.#have.fill(0);
      this.#partial.clear();
      this.#blocks = 0;
    }
  }

  async sync(): Promise<void> {}
  async close(): Promise<void> {}

  /** The root digest over the first `dataBytes` of the image; blocks never written are zeros. */
  async rootDigest(dataBytes: number): Promise<string> {
    const blocks = Math.ceil(dataBytes / VERITY_BLOCK);
    if (this.#blocks > blocks)
      throw new Ext4Error('ERR_INTERNAL', `digest-only image: block ${this.#blocks - 1} written past the end`);
    await this.#hasher.drain();
    this.#grow(blocks);
    for (const [block, bytes] of this.#partial) this.#leaf(block, bytes);
    const zero = this.#salted.copy().update(new Uint8Array(VERITY_BLOCK)).digest();
    for (let b = 0; b < blocks; b++) if (this.#have[b] !== 1) this.#leaves.set(zero, b * DIGEST);
    const tree = new VerityTree(blocks, this.#salt);
    await tree.updateDigests(this.#leaves.subarray(0, blocks * DIGEST));
    return tree.finish();
  }
}
