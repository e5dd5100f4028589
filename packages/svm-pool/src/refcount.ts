import { SvmPoolError } from './errors.ts';

/**
 * Exact reference counts per key (attached disks, union mounts). `acquire` says whether this was the first
 * reference (the caller must do the real work), `release` whether it was the last (the caller must undo
 * it). Releasing a key that holds no reference throws instead of going negative: the original driver's
 * Get/Put imbalance went unnoticed for exactly that reason.
 */
export class RefCounter<K> {
  #counts = new Map<K, number>();
  readonly #normalize: (key: K) => K;
  readonly #what: string;

  /** `normalize` maps equivalent keys together (case-insensitive host paths on Windows). */
  constructor(what: string, normalize: (key: K) => K = (k) => k) {
    this.#what = what;
    this.#normalize = normalize;
  }

  /** Adds a reference; true when it is the first. */
  acquire(key: K): boolean {
    const k = this.#normalize(key);
    const n = this.#counts.get(k) ?? 0;
    this.#counts.set(k, n + 1);
    return n === 0;
  }

  /** Drops a reference; true when it was the last. */
  release(key: K): boolean {
    const k = this.#normalize(key);
    const n = this.#counts.get(k);
    if (n === undefined)
      throw new SvmPoolError('ERR_REFCOUNT', `${this.#what} ${String(key)}: released more often than acquired`);
    if (n === 1) this.#counts.delete(k);
    else this.#counts.set(k, n - 1);
    return n === 1;
  }

  /** Current count (0 when absent). */
  count(key: K): number {
    return this.#counts.get(this.#normalize(key)) ?? 0;
  }

  /** Keys with at least one reference. */
  keys(): K[] {
    return [...this.#counts.keys()];
  }

  get size(): number {
    return this.#counts.size;
  }
}

/** Key normaliser for host paths: Windows paths compare case-insensitively with either separator. */
export function hostPathKey(platform: NodeJS.Platform = process.platform): (path: string) => string {
  return platform === 'win32' ? (p) => p.replace(/\//g, '\\').toLowerCase() : (p) => p;
}
