import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

/**
 * Sequential writer for the image: everything but the superblock and group descriptors is written in
 * increasing offsets (file data while the tar streams, metadata at the end), so it goes through one
 * large buffer and a few big `pwrite`s. Metadata bytes can be hashed on the way (for the default UUID).
 */
export class ImageWriter {
  readonly #fh: FileHandle;
  /** The buffer being filled; full ones go to the disk while the next fills (write-behind). */
  #buf: Uint8Array;
  /** Buffers free for filling, and writes in flight in order, each with the buffer it releases. */
  readonly #free: Uint8Array[] = [];
  readonly #inFlight: { done: Promise<void>; buf: Uint8Array }[] = [];
  #start = 0;
  #len = 0;
  #hash: Hash | null = null;
  /** Buffers not made yet: made when first needed, so a small image never pays for (zeroes) them. */
  #unmade: number;
  readonly #bufferSize: number;
  /** Bytes written so far (the next byte's offset). */
  get offset(): number {
    return this.#start + this.#len;
  }

  /**
   * `depth` buffers of `bufferSize` bytes: up to `depth − 1` writes in flight while the next buffer fills.
   * Writes of 1 MiB keep memory small; several in flight keep the disk (or page cache) busy on the thread
   * pool while the tar is parsed, which a single write-behind buffer did not when file bodies are large.
   */
  constructor(fh: FileHandle, start: number, bufferSize = 1 << 20, depth = 3) {
    this.#fh = fh;
    this.#start = start;
    this.#buf = new Uint8Array(bufferSize);
    this.#bufferSize = bufferSize;
    this.#unmade = depth - 1;
  }

  /** Starts hashing everything appended from now on. */
  hashFromHere(): void {
    this.#hash = createHash('sha256');
  }

  digest(): Buffer {
    return this.#hash ? this.#hash.digest() : Buffer.alloc(32);
  }

  /** Appends bytes; returns a promise only when it has to wait for the disk. */
  append(data: Uint8Array): void | Promise<void> {
    this.#hash?.update(data);
    if (this.#len + data.length < this.#buf.length) {
      this.#buf.set(data, this.#len);
      this.#len += data.length;
      return;
    }
    return this.#appendSlow(data);
  }

  async #appendSlow(data: Uint8Array): Promise<void> {
    let at = 0;
    while (at < data.length) {
      const n = Math.min(this.#buf.length - this.#len, data.length - at);
      this.#buf.set(data.subarray(at, at + n), this.#len);
      this.#len += n;
      at += n;
      if (this.#len === this.#buf.length) await this.#rotate();
    }
  }

  /** Hands the full buffer to the disk and continues in a free one, waiting for the oldest write if none is. */
  async #rotate(): Promise<void> {
    const buf = this.#buf;
    const len = this.#len;
    const at = this.#start;
    const done = this.#writeAll(buf, len, at);
    // Marked handled now: a failure is thrown where the write is awaited, not reported as unhandled first.
    done.catch(() => {});
    this.#inFlight.push({ done, buf });
    this.#start += len;
    this.#len = 0;
    if (this.#free.length === 0 && this.#unmade > 0) {
      this.#unmade--;
      this.#free.push(new Uint8Array(this.#bufferSize));
    }
    if (this.#free.length === 0) await this.#retireOldest();
    this.#buf = this.#free.pop()!;
  }

  async #retireOldest(): Promise<void> {
    const oldest = this.#inFlight.shift()!;
    await oldest.done;
    this.#free.push(oldest.buf);
  }

  async #writeAll(buf: Uint8Array, len: number, at: number): Promise<void> {
    let done = 0;
    while (done < len) {
      const { bytesWritten } = await this.#fh.write(buf, done, len - done, at + done);
      done += bytesWritten;
    }
  }

  /** Appends `n` zero bytes. */
  zeros(n: number): void | Promise<void> {
    if (n <= 0) return;
    if (this.#hash) this.#hash.update(new Uint8Array(n));
    if (this.#len + n < this.#buf.length) {
      this.#buf.fill(0, this.#len, this.#len + n);
      this.#len += n;
      return;
    }
    return this.#zerosSlow(n);
  }

  async #zerosSlow(n: number): Promise<void> {
    // Large gaps are skipped in the file (it stays sparse there) rather than written.
    await this.flush();
    this.#start += n;
  }

  /** Pads with zeros to a multiple of `to`. */
  align(to: number): void | Promise<void> {
    const rem = this.offset % to;
    return rem === 0 ? undefined : this.zeros(to - rem);
  }

  /** Writes everything buffered and waits for it. */
  async flush(): Promise<void> {
    if (this.#len > 0) await this.#rotate();
    // Every write is awaited, even after one fails, so none is left running against a closed file.
    let failure: unknown = null;
    while (this.#inFlight.length > 0) await this.#retireOldest().catch((e: unknown) => void (failure ??= e));
    if (failure !== null) throw failure;
  }
}
