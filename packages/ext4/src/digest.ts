// The dm-verity root digest of the image a tar converts to, without writing the image anywhere: the
// writers see a file that keeps, for each 4 KiB block, only the block's leaf digest. That works because
// both layouts write every block once, in full, in increasing order (the head — superblock, descriptors —
// and hcsshim's rewritten xattr blocks come later, whole), except where a buffer flush ends inside a block
// and the next write continues it: such a block is held until the end.
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DEFAULT_SALT, LeafHasher, VERITY_BLOCK, VerityTree } from '@lcow/vhd';
import { convert, type ConvertOptions } from './convert.ts';
import { Ext4Error } from './errors.ts';

const DIGEST = 32;
/** Blocks per chunk of the leaf table: 1 MiB of digests (128 MiB of image). */
const CHUNK_BLOCKS = 32768;
/** A new chunk's first size in blocks (4 MiB of image). */
const FIRST_CHUNK_BLOCKS = 1024;
/**
 * Jobs of 1 MiB in flight to the hashing thread. It hashes faster than the tar is converted, so the window
 * fills only in the metadata burst at the end, where 8 in flight bought nothing but 4 MB.
 */
const HASH_WINDOW = 4;

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

/**
 * Options of {@link rootDigest}: the converter's, less those that only shape an output file (given anyway, as
 * in the `DMVERITY_VHD` preset, they are ignored).
 */
export type RootDigestOptions = Omit<ConvertOptions, 'appendVhdFooter' | 'verity' | 'fsync' | 'timestamp'> & {
  /** dm-verity salt (default 32 zero bytes, as hcsshim). */
  salt?: Uint8Array;
};

/**
 * Converts `input` as {@link convert} would and returns the dm-verity root digest of the resulting
 * filesystem, writing nothing to disk. With `{ layout: 'hcsshim', convertWhiteouts: true,
 * maximumDiskSize: 128 GiB }` it is hcsshim's ConvertAndComputeRootDigest: the digest a Windows host
 * computes for a layer, the one confidential-container policies pin. Memory: 33 bytes per 4 KiB of image
 * (the leaf digests) besides the converter's own.
 */
export async function rootDigest(
  input: string | Readable | AsyncIterable<Uint8Array>,
  options: RootDigestOptions = {},
): Promise<RootDigestResult> {
  // A preset made for convert (DMVERITY_VHD) serves here too: what only shapes an output file is dropped.
  const {
    salt,
    appendVhdFooter: _footer,
    verity: _verity,
    fsync: _fsync,
    timestamp: _time,
    ...rest
  } = options as RootDigestOptions & Pick<ConvertOptions, 'appendVhdFooter' | 'verity' | 'fsync' | 'timestamp'>;
  const file = new LeafDigestFile(salt ?? DEFAULT_SALT);
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
  /**
   * Leaf digests in chunks of {@link CHUNK_BLOCKS} blocks, made as the image reaches them: a table that
   * grows by chunks is copied only while its last chunk is under 1 MiB, and needs no guess of the image's size (growing one array meant, for
   * a moment, the old table and the new one at once — 20 MB on a 1 GB tar).
   */
  readonly #leaves: Uint8Array[] = [];
  /** 1 where a block's leaf digest is known, in the same chunks. */
  readonly #have: Uint8Array[] = [];
  /** Blocks written in part so far: their bytes, zero elsewhere, hashed at the end. */
  readonly #partial = new Map<number, Uint8Array>();
  #blocks = 0;

  constructor(salt: Uint8Array) {
    this.#salt = salt;
    this.#salted = createHash('sha256').update(salt);
    this.#hasher = new LeafHasher(salt, (first, digests) => this.#store(first, digests), HASH_WINDOW);
  }

  /** Stops the hashing thread. */
  async dispose(): Promise<void> {
    await this.#hasher.close();
  }

  /**
   * Makes room for the digests of blocks `0…blocks − 1`. The last chunk starts small and doubles up to
   * {@link CHUNK_BLOCKS}: a small layer's image needs a few hundred blocks, and two zeroed arrays of 1 MiB and
   * 32 KiB per layer were most of the digest's fixed cost on images of many small layers.
   */
  #grow(blocks: number): void {
    for (;;) {
      const last = this.#have.length - 1;
      const lastLength = last < 0 ? CHUNK_BLOCKS : this.#have[last]!.length;
      const room = last < 0 ? 0 : last * CHUNK_BLOCKS + lastLength;
      if (room >= blocks) return;
      if (lastLength < CHUNK_BLOCKS) {
        const n = Math.min(CHUNK_BLOCKS, Math.max(blocks - last * CHUNK_BLOCKS, 2 * lastLength));
        const leaves = new Uint8Array(n * DIGEST);
        leaves.set(this.#leaves[last]!);
        const have = new Uint8Array(n);
        have.set(this.#have[last]!);
        this.#leaves[last] = leaves;
        this.#have[last] = have;
      } else {
        const n = Math.min(CHUNK_BLOCKS, Math.max(blocks - (last + 1) * CHUNK_BLOCKS, FIRST_CHUNK_BLOCKS));
        this.#leaves.push(new Uint8Array(n * DIGEST));
        this.#have.push(new Uint8Array(n));
      }
    }
  }

  /** Marks blocks `first…first + count − 1` as known (their digests come later, from the hashing thread). */
  #mark(first: number, count: number): void {
    this.#grow(first + count);
    for (let b = first; b < first + count;) {
      const chunk = Math.floor(b / CHUNK_BLOCKS);
      const end = Math.min(first + count, (chunk + 1) * CHUNK_BLOCKS);
      this.#have[chunk]!.fill(1, b - chunk * CHUNK_BLOCKS, end - chunk * CHUNK_BLOCKS);
      b = end;
    }
    this.#blocks = Math.max(this.#blocks, first + count);
  }

  #known(block: number): boolean {
    return this.#have[Math.floor(block / CHUNK_BLOCKS)]?.[block % CHUNK_BLOCKS] === 1;
  }

  /** Digests of blocks `first…`, which may run across chunks. */
  #store(first: number, digests: Uint8Array): void {
    for (let at = 0; at < digests.length;) {
      const b = first + at / DIGEST;
      const chunk = Math.floor(b / CHUNK_BLOCKS);
      const n = Math.min(digests.length - at, ((chunk + 1) * CHUNK_BLOCKS - b) * DIGEST);
      this.#leaves[chunk]!.set(digests.subarray(at, at + n), (b - chunk * CHUNK_BLOCKS) * DIGEST);
      at += n;
    }
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
        if (this.#partial.size > 0) for (let b = block; b < block + whole; b++) this.#partial.delete(b);
        this.#mark(block, whole);
        await this.#hasher.hash(block, buffer.subarray(from, from + whole * VERITY_BLOCK));
        from += whole * VERITY_BLOCK;
        at += whole * VERITY_BLOCK;
        continue;
      }
      const n = Math.min(VERITY_BLOCK - inBlock, end - from);
      if (this.#known(block) && !this.#partial.has(block))
        throw new Ext4Error('ERR_INTERNAL', `digest-only image: block ${block} is written again in part`);
      let part = this.#partial.get(block);
      if (!part) this.#partial.set(block, (part = new Uint8Array(VERITY_BLOCK)));
      part.set(buffer.subarray(from, from + n), inBlock);
      this.#mark(block, 1);
      from += n;
      at += n;
    }
    return { bytesWritten: length, buffer };
  }

  async truncate(len = 0): Promise<void> {
    if (len === 0) {
      for (const have of this.#have) have.fill(0);
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
    for (const [block, bytes] of this.#partial) this.#store(block, this.#salted.copy().update(bytes).digest());
    const zero = this.#salted.copy().update(new Uint8Array(VERITY_BLOCK)).digest();
    const tree = new VerityTree(blocks, this.#salt);
    for (let chunk = 0; chunk * CHUNK_BLOCKS < blocks; chunk++) {
      const leaves = this.#leaves[chunk]!;
      const have = this.#have[chunk]!;
      const n = Math.min(CHUNK_BLOCKS, blocks - chunk * CHUNK_BLOCKS);
      for (let i = 0; i < n; i++) if (have[i] !== 1) leaves.set(zero, i * DIGEST);
      await tree.updateDigests(leaves.subarray(0, n * DIGEST));
    }
    return tree.finish();
  }
}
