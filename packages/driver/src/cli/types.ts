// The shapes shared by `main` and the commands (kept apart so that neither imports the other).
import type { Parsed } from './args.ts';

/** Where a command writes, and how it is cancelled. Tests pass their own. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Where `-v`'s debug lines go; default {@link err}. */
  debug?: (text: string) => void;
  /** Binary output (`cat`, a tar to `-`); default process.stdout. */
  stdout: NodeJS.WritableStream;
  /** Stream for a progress bar (drawn only when it is a TTY). */
  progress: NodeJS.WriteStream;
  signal: AbortSignal;
  /** Binary input (`apply -`); default process.stdin. */
  stdin?: NodeJS.ReadableStream;
  /** `--root DIR` (default ./lcow-data) and `--backend host|inproc|hcs`, before or after the command. */
  root?: string;
  backend?: string;
  /** `--storage-opt KEY=VALUE`: driver options (`lcow.maxlayersize=8`…). */
  storageOpts?: string[];
  /** The environment (`SOURCE_DATE_EPOCH`); default process.env. */
  env?: Record<string, string | undefined>;
}

/** One `lcow` command: runs a form (`''`, or the subcommand) with its checked arguments. */
export interface Command {
  name: string;
  run(form: string, args: Parsed, io: Io): Promise<number>;
}
