import { createHash, hash, randomUUID, type Hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { BinaryError } from '@lcow/binary';
import { VhdError } from '../errors.ts';
import { openTarget, readAt, type FileTarget, type RandomAccessFile } from '../file.ts';
import { HASH_TYPE_NORMAL, VERITY_SIGNATURE, VeritySuperblock } from './format/superblock.ts';

/** dm-verity parameters lcow uses (and hcsshim): SHA-256, 4 KiB data and hash blocks. */
export const VERITY_BLOCK = 4096;
const DIGEST = 32;
const PER_BLOCK = VERITY_BLOCK / DIGEST;
/** hcsshim's salt: 32 zero bytes. */
export const DEFAULT_SALT: Uint8Array = new Uint8Array(32);

/**
 * Blocks in each tree level, leaves (level 0) first; the last level has one block. A single data block
 * has no tree at all: its own digest is the root (veritysetup counts levels while (blocks − 1) >> 7·k > 0).
 */
export function levelSizes(dataBlocks: number): number[] {
  if (!Number.isSafeInteger(dataBlocks) || dataBlocks <= 0) {
    throw new VhdError('ERR_INVALID_ARGUMENT', `dm-verity over ${dataBlocks} data blocks`);
  }
  const sizes: number[] = [];
  let n = dataBlocks;
  while (n > 1) {
    n = Math.ceil(n / PER_BLOCK);
    sizes.push(n);
  }
  return sizes;
}

/**
 * A streaming Merkle tree: feed data blocks in order; each completed hash block is handed to `onBlock`
 * (level, index, bytes) and hashed into the level above. Memory: one partial block per level.
 */
export class VerityTree {
  readonly dataBlocks: number;
  readonly sizes: number[];
  readonly #onBlock: ((level: number, index: number, block: Uint8Array) => void | Promise<void>) | undefined;
  readonly #partial: Uint8Array[];
  readonly #fill: number[];
  readonly #done: number[];
  #fed = 0;
  #root: string | null = null;
  readonly #salted: Hash;

  constructor(
    dataBlocks: number,
    salt: Uint8Array = DEFAULT_SALT,
    onBlock?: (level: number, index: number, block: Uint8Array) => void | Promise<void>,
  ) {
    this.dataBlocks = dataBlocks;
    this.sizes = levelSizes(dataBlocks);
    this.#salted = createHash('sha256').update(salt);
    this.#onBlock = onBlock;
    this.#partial = this.sizes.map(() => new Uint8Array(VERITY_BLOCK));
    this.#fill = this.sizes.map(() => 0);
    this.#done = this.sizes.map(() => 0);
  }

  /** H(salt ‖ block): the salted state is computed once and copied for every block. */
  #hash(block: Uint8Array): Buffer {
    return this.#salted.copy().update(block).digest();
  }

  // #push and #complete return a promise only when an onBlock callback does: a leaf is fed 290 000 times
  // for a 1 GB image, and an async call per leaf (a promise and a frame each) was 140 MB of garbage.
  #push(level: number, src: Uint8Array, at: number): void | Promise<void> {
    const part = this.#partial[level]!;
    const fill = this.#fill[level]!;
    // 32 bytes copied by hand: a subarray per leaf to set() from was another 26 MB of garbage.
    const to = fill * DIGEST;
    for (let i = 0; i < DIGEST; i++) part[to + i] = src[at + i]!;
    this.#fill[level] = fill + 1;
    if (fill + 1 === PER_BLOCK) return this.#complete(level);
  }

  #complete(level: number): void | Promise<void> {
    const block = this.#partial[level]!;
    const index = this.#done[level]!++;
    const written = this.#onBlock?.(level, index, block);
    if (written) return written.then(() => this.#completed(level, block));
    return this.#completed(level, block);
  }

  #completed(level: number, block: Uint8Array): void | Promise<void> {
    const digest = this.#hash(block);
    block.fill(0);
    this.#fill[level] = 0;
    if (level + 1 < this.sizes.length) return this.#push(level + 1, digest, 0);
    this.#root = digest.toString('hex');
  }

  /** Feeds whole data blocks (a multiple of 4096 bytes; the last may be short and is zero-padded). */
  async update(data: Uint8Array): Promise<void> {
    for (let at = 0; at < data.length; at += VERITY_BLOCK) {
      if (this.#fed >= this.dataBlocks)
        throw new VhdError('ERR_INVALID_ARGUMENT', `dm-verity: more than ${this.dataBlocks} data blocks`);
      let block = data.subarray(at, at + VERITY_BLOCK);
      if (block.length < VERITY_BLOCK) {
        const padded = new Uint8Array(VERITY_BLOCK);
        padded.set(block);
        block = padded;
      }
      this.#fed++;
      if (this.sizes.length === 0) this.#root = this.#hash(block).toString('hex');
      else {
        const pushed = this.#push(0, this.#hash(block), 0);
        if (pushed) await pushed;
      }
    }
  }

  /** Feeds precomputed leaf digests (32 bytes per data block, in order), as {@link leafDigests} yields them. */
  async updateDigests(digests: Uint8Array): Promise<void> {
    for (let at = 0; at < digests.length; at += DIGEST) {
      if (this.#fed >= this.dataBlocks)
        throw new VhdError('ERR_INVALID_ARGUMENT', `dm-verity: more than ${this.dataBlocks} data blocks`);
      this.#fed++;
      if (this.sizes.length === 0) this.#root = Buffer.from(digests.subarray(at, at + DIGEST)).toString('hex');
      else {
        const pushed = this.#push(0, digests, at);
        if (pushed) await pushed;
      }
    }
  }

  /** Completes the partial blocks, bottom up; returns the root digest (hex). */
  async finish(): Promise<string> {
    if (this.#fed !== this.dataBlocks)
      throw new VhdError('ERR_INVALID_ARGUMENT', `dm-verity: ${this.#fed} of ${this.dataBlocks} data blocks fed`);
    for (let level = 0; level < this.sizes.length; level++) {
      if (this.#fill[level]! > 0) await this.#complete(level);
    }
    return this.#root!;
  }
}

/**
 * Leaf-digest worker: for each job { id, first, count } it reads those 4 KiB blocks of the file and posts
 * back H(salt ‖ block) for each, in order; a short read (past the data) hashes zero padding.
 */
const HASH_WORKER = `
const { hash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');
const salt = Buffer.from(workerData.salt, 'hex');
const fd = openSync(workerData.path, 'r');
const buf = Buffer.alloc(4 << 20);
const scratch = Buffer.alloc(salt.length + 4096);
salt.copy(scratch, 0);
parentPort.on('message', (job) => {
  if (job === null) { closeSync(fd); parentPort.close(); return; }
  const out = Buffer.allocUnsafeSlow(job.count * 32);
  for (let done = 0; done < job.count; ) {
    const n = Math.min(buf.length / 4096, job.count - done);
    const got = readSync(fd, buf, 0, n * 4096, (job.first + done) * 4096);
    buf.fill(0, got, n * 4096);
    for (let i = 0; i < n; i++) {
      buf.copy(scratch, salt.length, i * 4096, (i + 1) * 4096);
      out.write(hash('sha256', scratch, 'latin1'), (done + i) * 32, 32, 'latin1');
    }
    done += n;
  }
  parentPort.postMessage({ id: job.id, digests: out }, [out.buffer]);
});
`;

/** Blocks per worker job (64 MiB of data). */
const JOB_BLOCKS = 16384;

/**
 * Leaf digests of the first `dataBlocks` blocks of a file, in order, hashed by worker threads (one per
 * core, at most four) — the hashing, not the reading, is what costs. Memory: a few jobs' digests.
 */
export async function* leafDigests(path: string, dataBlocks: number, salt: Uint8Array): AsyncGenerator<Uint8Array> {
  const count = Math.max(1, Math.min(4, availableParallelism()));
  const workerData = { path, salt: Buffer.from(salt).toString('hex') };
  // The worker is a short script run with eval, so it works the same from sources and from dist.
  const workers = Array.from({ length: count }, () => new Worker(HASH_WORKER, { eval: true, workerData }));
  const results = new Map<number, { resolve: (d: Uint8Array) => void; reject: (e: unknown) => void }>();
  for (const w of workers) {
    w.on('message', (m: { id: number; digests: Uint8Array }) => results.get(m.id)?.resolve(m.digests));
    w.on('error', (e) => {
      for (const r of results.values()) r.reject(e);
    });
  }
  const jobs = Math.ceil(dataBlocks / JOB_BLOCKS);
  const pending: Promise<Uint8Array>[] = [];
  const start = (id: number): void => {
    pending[id] = new Promise((resolve, reject) => results.set(id, { resolve, reject }));
    workers[id % count]!.postMessage({
      id,
      first: id * JOB_BLOCKS,
      count: Math.min(JOB_BLOCKS, dataBlocks - id * JOB_BLOCKS),
    });
  };
  try {
    let next = 0;
    for (; next < Math.min(jobs, count * 2); next++) start(next);
    for (let id = 0; id < jobs; id++) {
      const d = await pending[id]!;
      results.delete(id);
      delete pending[id];
      if (next < jobs) start(next++);
      yield d;
    }
  } finally {
    for (const w of workers) w.postMessage(null);
    await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
  }
}

/**
 * Leaf-digest worker for bytes handed over rather than read: for each job { id, data, length } (whole 4 KiB
 * blocks in the first `length` bytes of `data`) it posts back H(salt ‖ block) for each block, in order, and
 * hands `data` back for reuse.
 */
const LEAF_WORKER = `
const { hash } = require('node:crypto');
const { parentPort, workerData } = require('node:worker_threads');
// salt ‖ block in one buffer, hashed in one call: a Hash object copied per block costs a third more. The
// digest comes back as a 32-character latin1 string written into the output in place: a Buffer per digest
// cost 16 % more per block (3.5 against 3.0 µs, most of it not the SHA-256).
const salt = Buffer.from(workerData.salt, 'hex');
const scratch = Buffer.alloc(salt.length + 4096);
salt.copy(scratch, 0);
parentPort.on('message', (job) => {
  const data = Buffer.from(job.data, 0, job.length);
  const count = job.length / 4096;
  const out = Buffer.allocUnsafeSlow(count * 32);
  for (let i = 0; i < count; i++) {
    data.copy(scratch, salt.length, i * 4096, (i + 1) * 4096);
    out.write(hash('sha256', scratch, 'latin1'), i * 32, 32, 'latin1');
  }
  parentPort.postMessage({ id: job.id, digests: out, data: job.data }, [out.buffer, job.data]);
});
`;

/** Bytes per hashing job: the unit a {@link LeafHasher} copies into a reused buffer. */
const JOB_BYTES = 1 << 20;

/**
 * Bytes a {@link LeafHasher} hashes in the caller's thread before it starts its worker: a thread's start
 * (a V8 isolate, 30–50 ms here) is more than hashing this much (≈ 3 ms), and a small layer never needs one.
 */
const INLINE_BYTES = 4 << 20;

/**
 * Hashes data blocks into dm-verity leaf digests on a worker thread while the caller goes on producing them
 * (a converter hashes the image it writes as it writes it, instead of reading it back). The first
 * {@link INLINE_BYTES} are hashed in the caller's thread, at once; the thread starts only for more. Each call
 * to {@link LeafHasher.hash} copies its bytes; at most `window` calls are in flight, so memory stays bounded.
 * Digests arrive in the order the blocks were handed over.
 */
export class LeafHasher {
  #worker: Worker | null = null;
  readonly #salt: Buffer;
  #inline = INLINE_BYTES;
  /** salt ‖ one block, reused for every block hashed here. */
  #scratch: Buffer | null = null;
  /** Jobs in flight: id → first block. */
  readonly #jobs = new Map<number, number>();
  readonly #onDigests: (firstBlock: number, digests: Uint8Array) => void;
  readonly #window: number;
  /** Transfer buffers back from the thread, for the next jobs: fresh 1 MiB buffers cost page faults. */
  readonly #free: ArrayBuffer[] = [];
  #nextId = 0;
  #failure: unknown = null;
  readonly #waiters: (() => void)[] = [];
  #closed = false;

  /** `onDigests(first, digests)` receives the 32-byte leaf digests of blocks `first…`, in any order. */
  constructor(salt: Uint8Array, onDigests: (firstBlock: number, digests: Uint8Array) => void, window = 8) {
    this.#onDigests = onDigests;
    this.#window = window;
    this.#salt = Buffer.from(salt);
  }

  #start(): Worker {
    const worker = new Worker(LEAF_WORKER, { eval: true, workerData: { salt: this.#salt.toString('hex') } });
    worker.on('message', (m: { id: number; digests: Uint8Array; data: ArrayBuffer }) => {
      this.#free.push(m.data);
      const first = this.#jobs.get(m.id);
      if (first === undefined) return;
      this.#jobs.delete(m.id);
      this.#onDigests(first, m.digests);
      this.#wake();
    });
    worker.on('error', (e) => {
      this.#failure ??= e;
      this.#jobs.clear();
      this.#wake();
    });
    this.#worker = worker;
    return worker;
  }

  /** Leaf digests of whole blocks, here and now (what the worker does, for a little data). */
  #hashHere(first: number, data: Uint8Array): void {
    const scratch = (this.#scratch ??= Buffer.concat([this.#salt, Buffer.alloc(VERITY_BLOCK)]));
    const count = data.length / VERITY_BLOCK;
    const out = new Uint8Array(count * 32);
    for (let i = 0; i < count; i++) {
      scratch.set(data.subarray(i * VERITY_BLOCK, (i + 1) * VERITY_BLOCK), this.#salt.length);
      out.set(hash('sha256', scratch, 'buffer'), i * 32);
    }
    this.#onDigests(first, out);
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  #changed(): Promise<void> {
    return new Promise<void>((r) => this.#waiters.push(r));
  }

  #check(): void {
    // The thread's own error (out of memory, a crash) is the cause; it is passed on unchanged.
    if (this.#failure !== null) throw this.#failure;
  }

  /** Queues whole blocks `data` (a multiple of 4096 bytes) as blocks `first…`; waits while the window is full. */
  async hash(first: number, data: Uint8Array): Promise<void> {
    this.#check();
    if (this.#closed) throw new VhdError('ERR_INVALID_ARGUMENT', 'dm-verity hashing: hash() after close()');
    if (data.length % VERITY_BLOCK !== 0)
      throw new VhdError('ERR_INVALID_ARGUMENT', `dm-verity hashing: ${data.length} bytes is not whole blocks`);
    if (this.#worker === null && data.length <= this.#inline) {
      this.#inline -= data.length;
      return this.#hashHere(first, data);
    }
    const worker = this.#worker ?? this.#start();
    for (let at = 0; at < data.length; at += JOB_BYTES) {
      while (this.#jobs.size >= this.#window) {
        await this.#changed();
        this.#check();
      }
      const part = data.subarray(at, Math.min(data.length, at + JOB_BYTES));
      const buffer = this.#free.pop() ?? new ArrayBuffer(JOB_BYTES);
      new Uint8Array(buffer).set(part);
      const id = this.#nextId++;
      this.#jobs.set(id, first + at / VERITY_BLOCK);
      worker.postMessage({ id, data: buffer, length: part.length }, [buffer]);
    }
  }

  /** Waits for every queued block's digest. */
  async drain(): Promise<void> {
    while (this.#jobs.size > 0) await this.#changed();
    this.#check();
  }

  /** Stops the thread (after {@link LeafHasher.drain}, or to abandon the work). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#worker?.terminate();
  }
}

/** From this many data blocks (64 MiB) on, leaf digests are computed by worker threads. */
const PARALLEL_MIN = 16384;

/** A path a worker thread can open for `target`, or null (then the hashing stays on this thread). */
function workerPath(target: FileTarget): string | null {
  if (typeof target === 'string') return target;
  if (process.platform !== 'linux') return null;
  return `/proc/self/fd/${typeof target === 'number' ? target : target.fd}`;
}

/** Feeds the first `dataBlocks` blocks of `target` into `tree`: through workers when large, else here. */
async function feed(
  tree: VerityTree,
  target: FileTarget,
  file: RandomAccessFile,
  dataBlocks: number,
  salt: Uint8Array,
  signal?: AbortSignal,
): Promise<void> {
  const dataSize = dataBlocks * VERITY_BLOCK;
  if ((await file.size()) < dataSize)
    throw new VhdError('ERR_INVALID_ARGUMENT', `${file.name}: shorter than ${dataSize} bytes`);
  const path = workerPath(target);
  if (path && dataBlocks >= PARALLEL_MIN) {
    for await (const digests of leafDigests(path, dataBlocks, salt)) {
      if (signal?.aborted) throw new VhdError('ERR_ABORTED', 'dm-verity: aborted');
      await tree.updateDigests(digests);
    }
    return;
  }
  for (let at = 0; at < dataSize; at += 1 << 20) {
    if (signal?.aborted) throw new VhdError('ERR_ABORTED', `dm-verity: aborted at byte ${at}`);
    await tree.update(await readAt(file, at, Math.min(1 << 20, dataSize - at)));
  }
}

/** Where a verity area lies in a file: the superblock at `hashOffset`, the tree one block after it. */
export interface VerityLayout {
  dataBlocks: number;
  hashOffset: number;
  /** File offset of each level, leaves first (the tree stores the top level first). */
  levelOffsets: number[];
  /** Bytes of superblock and tree. */
  hashSize: number;
}

export function verityLayout(dataBlocks: number, hashOffset: number): VerityLayout {
  const sizes = levelSizes(dataBlocks);
  const levelOffsets = new Array<number>(sizes.length);
  let at = hashOffset + VERITY_BLOCK;
  for (let level = sizes.length - 1; level >= 0; level--) {
    levelOffsets[level] = at;
    at += sizes[level]! * VERITY_BLOCK;
  }
  return { dataBlocks, hashOffset, levelOffsets, hashSize: at - hashOffset };
}

/** Options of {@link appendVerity}. */
export interface VerityOptions {
  /** Salt; default 32 zero bytes, as hcsshim. */
  salt?: Uint8Array;
  /** UUID in the superblock; default random (veritysetup's habit). */
  uuid?: string;
  signal?: AbortSignal;
}

/** What {@link appendVerity} wrote. */
export interface VerityResult extends VerityLayout {
  rootDigest: string;
  salt: string;
}

/**
 * Appends a dm-verity superblock and hash tree after the first `dataSize` bytes of a file (a multiple of
 * 4096), as `veritysetup format DATA DATA --hash-offset=dataSize` would, streaming: the data is read once,
 * tree blocks are written as they complete. The file is truncated to the end of the tree.
 */
export async function appendVerity(
  target: FileTarget,
  dataSize: number,
  opts: VerityOptions = {},
): Promise<VerityResult> {
  if (!Number.isSafeInteger(dataSize) || dataSize <= 0 || dataSize % VERITY_BLOCK !== 0) {
    throw new VhdError('ERR_INVALID_ARGUMENT', `dm-verity: data size ${dataSize} is not a positive multiple of 4096`);
  }
  const salt = opts.salt ?? DEFAULT_SALT;
  if (salt.length > 256)
    throw new VhdError('ERR_INVALID_ARGUMENT', `dm-verity: salt of ${salt.length} bytes (max 256)`);
  const file = await openTarget(target, 'r+');
  try {
    const dataBlocks = dataSize / VERITY_BLOCK;
    const layout = verityLayout(dataBlocks, dataSize);
    await file.truncate(dataSize + layout.hashSize);
    const tree = new VerityTree(dataBlocks, salt, (level, index, block) =>
      file.write(block, layout.levelOffsets[level]! + index * VERITY_BLOCK),
    );
    await feed(tree, target, file, dataBlocks, salt, opts.signal);
    const rootDigest = await tree.finish();
    const saltField = new Uint8Array(256);
    saltField.set(salt);
    const sb = new Uint8Array(VERITY_BLOCK);
    VeritySuperblock.encodeInto(
      {
        signature: VERITY_SIGNATURE,
        version: 1,
        hashType: HASH_TYPE_NORMAL,
        uuid: opts.uuid ?? randomUUID(),
        algorithm: 'sha256',
        dataBlockSize: VERITY_BLOCK,
        hashBlockSize: VERITY_BLOCK,
        dataBlocks,
        saltSize: salt.length,
        salt: saltField,
      },
      sb,
      0,
    );
    await file.write(sb, dataSize);
    await file.sync();
    return { ...layout, rootDigest, salt: Buffer.from(salt).toString('hex') };
  } finally {
    await file.close();
  }
}

/** The root digest of the first `dataSize` bytes of a file, or of a stream of bytes, without writing a tree. */
export async function verityDigest(
  source: FileTarget | AsyncIterable<Uint8Array>,
  dataSize: number,
  salt: Uint8Array = DEFAULT_SALT,
): Promise<string> {
  const tree = new VerityTree(Math.ceil(dataSize / VERITY_BLOCK), salt);
  if (typeof source === 'object' && source !== null && Symbol.asyncIterator in source) {
    let carry = new Uint8Array(0);
    let seen = 0;
    for await (const c of source as AsyncIterable<Uint8Array>) {
      const take = c.subarray(0, Math.max(0, dataSize - seen));
      seen += take.length;
      const joined = carry.length ? Buffer.concat([carry, take]) : take;
      const whole = joined.length - (joined.length % VERITY_BLOCK);
      await tree.update(joined.subarray(0, whole));
      carry = Uint8Array.from(joined.subarray(whole));
      if (seen >= dataSize) break;
    }
    if (carry.length) await tree.update(carry);
    return tree.finish();
  }
  const file = await openTarget(source as FileTarget, 'r');
  try {
    await feed(tree, source as FileTarget, file, tree.dataBlocks, salt);
    return await tree.finish();
  } finally {
    await file.close();
  }
}

/** What {@link readVerity} found at a hash offset. */
export interface VerityInfo extends VerityLayout {
  version: number;
  hashType: number;
  uuid: string;
  algorithm: string;
  dataBlockSize: number;
  hashBlockSize: number;
  salt: string;
}

/**
 * Reads and checks the verity superblock at `hashOffset`. Anything but version 1, hash type 1, SHA-256 and
 * 4 KiB blocks with the data in front of it is `ERR_VHD_FORMAT` (malformed) or `ERR_VHD_UNSUPPORTED`.
 */
export async function readVerity(target: FileTarget, hashOffset: number): Promise<VerityInfo> {
  const file = await openTarget(target, 'r');
  try {
    const size = await file.size();
    const bytes = await readAt(file, hashOffset, VeritySuperblock.size);
    const bad = (why: string): VhdError =>
      new VhdError('ERR_VHD_FORMAT', `${file.name}: verity superblock at ${hashOffset}: ${why}`);
    if (bytes.length < VeritySuperblock.size) throw bad('truncated');
    let sb: VeritySuperblock;
    try {
      sb = VeritySuperblock.decode(bytes);
    } catch (e) {
      if (e instanceof BinaryError) throw bad(e.message);
      throw e;
    }
    if (sb.signature !== VERITY_SIGNATURE) throw bad(`signature ${JSON.stringify(sb.signature)}, expected "verity"`);
    if (sb.version !== 1)
      throw new VhdError('ERR_VHD_UNSUPPORTED', `${file.name}: verity superblock version ${sb.version}`);
    if (
      sb.hashType !== HASH_TYPE_NORMAL ||
      sb.algorithm !== 'sha256' ||
      sb.dataBlockSize !== VERITY_BLOCK ||
      sb.hashBlockSize !== VERITY_BLOCK
    ) {
      throw new VhdError(
        'ERR_VHD_UNSUPPORTED',
        `${file.name}: verity hash type ${sb.hashType}, ${sb.algorithm}, blocks ${sb.dataBlockSize}/${sb.hashBlockSize} (only 1, sha256, 4096/4096)`,
      );
    }
    if (sb.saltSize > 256) throw bad(`salt size ${sb.saltSize}`);
    if (sb.dataBlocks === 0 || sb.dataBlocks * VERITY_BLOCK > hashOffset)
      throw bad(`${sb.dataBlocks} data blocks do not fit before the hash area`);
    const layout = verityLayout(sb.dataBlocks, hashOffset);
    if (hashOffset + layout.hashSize > size)
      throw bad(
        `the tree needs ${layout.hashSize} bytes, the file ends ${size - hashOffset} bytes after the superblock`,
      );
    return {
      ...layout,
      version: sb.version,
      hashType: sb.hashType,
      uuid: sb.uuid,
      algorithm: sb.algorithm,
      dataBlockSize: sb.dataBlockSize,
      hashBlockSize: sb.hashBlockSize,
      salt: Buffer.from(sb.salt.subarray(0, sb.saltSize)).toString('hex'),
    };
  } finally {
    await file.close();
  }
}

/** Result of {@link checkVerity}. */
export type VerityCheck =
  | { ok: true; rootDigest: string }
  | { ok: false; rootDigest: string; firstBad: { level: number | 'data' | 'root'; block: number } };

/**
 * Recomputes the tree from the data and compares every stored hash block and the root with `expected`;
 * reports the first block that differs (tree level and index, or the root). Bounded memory.
 */
export async function checkVerity(target: FileTarget, hashOffset: number, expected: string): Promise<VerityCheck> {
  const info = await readVerity(target, hashOffset);
  const file = await openTarget(target, 'r');
  try {
    let firstBad: { level: number | 'data' | 'root'; block: number } | null = null;
    const tree = new VerityTree(info.dataBlocks, Buffer.from(info.salt, 'hex'), async (level, index, block) => {
      if (firstBad) return;
      const stored = await readAt(file, info.levelOffsets[level]! + index * VERITY_BLOCK, VERITY_BLOCK);
      if (Buffer.compare(stored, block) !== 0) firstBad = { level, block: index };
    });
    await feed(tree, target, file, info.dataBlocks, Buffer.from(info.salt, 'hex'));
    const rootDigest = await tree.finish();
    if (firstBad) return { ok: false, rootDigest, firstBad };
    if (rootDigest !== expected.toLowerCase()) return { ok: false, rootDigest, firstBad: { level: 'root', block: 0 } };
    return { ok: true, rootDigest };
  } finally {
    await file.close();
  }
}
