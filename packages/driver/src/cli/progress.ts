import { formatBytes } from './format.ts';

/** A progress callback that draws a one-line bar on a TTY and stays silent elsewhere. */
export interface ProgressBar {
  /** `total` -1: not known (a stream): bytes and rate, no percentage. `label` replaces the first one. */
  update(p: { done: number; total: number; label?: string }): void;
  done(): void;
}

/**
 * `unit`: what `done` and `total` count — bytes (shown as KiB, MiB…), or a thing named in the plural
 * (`'layers'`: "3 / 30 layers  1.5 layers/s"); figures are rounded either way.
 */
export function progressBar(
  label: string,
  stream: NodeJS.WriteStream = process.stderr,
  unit: 'bytes' | 'layers' = 'bytes',
): ProgressBar {
  if (!stream.isTTY) return { update: () => {}, done: () => {} };
  const count = (n: number): string => (unit === 'bytes' ? formatBytes(n) : `${Math.round(n)}`);
  const rateOf = (r: number): string =>
    unit === 'bytes' ? `${formatBytes(r)}/s` : `${r >= 10 ? r.toFixed(0) : r.toFixed(1)} ${unit}/s`;
  const suffix = unit === 'bytes' ? '' : ` ${unit}`;
  const started = Date.now();
  let last = 0;
  return {
    update({ done, total, label: nowLabel }) {
      const now = Date.now();
      if (now - last < 100 && (total < 0 || done < total)) return;
      last = now;
      const rate = done / Math.max(0.001, (now - started) / 1000);
      const name = nowLabel ?? label;
      if (total < 0) {
        stream.write(`\r${name} ${count(done)}${suffix}  ${rateOf(rate)}\x1b[K`);
        return;
      }
      const frac = total > 0 ? done / total : 1;
      const width = 24;
      const filled = Math.round(frac * width);
      stream.write(
        `\r${name} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ` +
          `${count(done)} / ${count(total)}${suffix}  ${rateOf(rate)}\x1b[K`,
      );
    },
    done() {
      stream.write('\r\x1b[K');
    },
  };
}
