import { formatBytes } from './format.ts';

/** A progress callback that draws a one-line bar on a TTY and stays silent elsewhere. */
export interface ProgressBar {
  update(p: { done: number; total: number }): void;
  done(): void;
}

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr): ProgressBar {
  if (!stream.isTTY) return { update: () => {}, done: () => {} };
  const started = Date.now();
  let last = 0;
  return {
    update({ done, total }) {
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      const frac = total > 0 ? done / total : 1;
      const width = 24;
      const filled = Math.round(frac * width);
      const rate = done / Math.max(0.001, (now - started) / 1000);
      stream.write(
        `\r${label} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ` +
          `${formatBytes(done)} / ${formatBytes(total)}  ${formatBytes(rate)}/s\x1b[K`,
      );
    },
    done() {
      stream.write('\r\x1b[K');
    },
  };
}
