import { formatBytes } from './format.ts';

/** A progress callback that draws a one-line bar on a TTY and stays silent elsewhere. */
export interface ProgressBar {
  /** `total` -1: not known (a stream): bytes and rate, no percentage. `label` replaces the first one. */
  update(p: { done: number; total: number; label?: string }): void;
  done(): void;
}

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): ProgressBar {
  if (!stream.isTTY) return { update: () => {}, done: () => {} };
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
        stream.write(`\r${name} ${formatBytes(done)}  ${formatBytes(rate)}/s\x1b[K`);
        return;
      }
      const frac = total > 0 ? done / total : 1;
      const width = 24;
      const filled = Math.round(frac * width);
      stream.write(
        `\r${name} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ` +
          `${formatBytes(done)} / ${formatBytes(total)}  ${formatBytes(rate)}/s\x1b[K`,
      );
    },
    done() {
      stream.write('\r\x1b[K');
    },
  };
}
