// The shapes shared by `main` and the commands (kept apart so that neither imports the other).

/** Where a command writes, and how it is cancelled. Tests pass their own. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Binary output (`cat`, a tar to `-`); default process.stdout. */
  stdout: NodeJS.WritableStream;
  /** Stream for a progress bar (drawn only when it is a TTY). */
  progress: NodeJS.WriteStream;
  signal: AbortSignal;
  /** Binary input (`apply -`); default process.stdin. */
  stdin?: NodeJS.ReadableStream;
  /** `--root DIR` (default ./lcow-data) and `--backend host|inproc|hcs`, given before the command. */
  root?: string;
  backend?: string;
  /** `--storage-opt KEY=VALUE`, given before the command: driver options (`lcow.maxlayersize=8`…). */
  storageOpts?: string[];
}

/** One `lcow` subcommand. */
export interface Command {
  name: string;
  summary: string;
  usage: string[];
  run(argv: string[], io: Io): Promise<number>;
}
