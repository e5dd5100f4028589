import { DriverError } from '../errors.ts';
import { demoCommand } from './commands/demo.ts';
import { ext4Command } from './commands/ext4.ts';
import { mkfsCommand } from './commands/mkfs.ts';
import { tar2ext4Command } from './commands/tar2ext4.ts';
import { verityCommand } from './commands/verity.ts';
import { vhdCommand } from './commands/vhd.ts';
import { LAYER_COMMANDS } from './commands/layers.ts';

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
}

/** One `lcow` subcommand. */
export interface Command {
  name: string;
  summary: string;
  usage: string[];
  run(argv: string[], io: Io): Promise<number>;
}

const COMMANDS: Command[] = [
  ...LAYER_COMMANDS,
  tar2ext4Command,
  ext4Command,
  mkfsCommand,
  verityCommand,
  vhdCommand,
  demoCommand,
];

function help(): string {
  return [
    'lcow — LCOW container layers as ext4 in VHD/VHDX, on Linux and Windows',
    '',
    'usage: lcow [--root DIR] [--backend host|inproc|hcs] <command> …   (--help after any command)',
    '',
    'commands:',
    ...COMMANDS.flatMap((c) => [`  ${c.name.padEnd(10)}${c.summary}`, ...c.usage.map((u) => `              ${u}`)]),
    '',
    'Errors print "lcow: CODE: message" on stderr and exit with status 1 (2 for usage errors).',
  ].join('\n');
}

/** Runs the `lcow` command line; returns the exit status. */
export async function main(argv: string[], io?: Partial<Io>): Promise<number> {
  const ac = new AbortController();
  const onSigint = (): void => ac.abort();
  const full: Io = {
    out: (t) => process.stdout.write(`${t}\n`),
    err: (t) => process.stderr.write(`${t}\n`),
    stdout: process.stdout,
    progress: process.stderr,
    signal: ac.signal,
    ...io,
  };
  if (!io?.signal) process.once('SIGINT', onSigint);
  try {
    const args = [...argv];
    // Global options, before the command.
    for (;;) {
      const g = args[0];
      if (g === '--root' || g === '--backend') {
        const v = args[1];
        if (v === undefined) throw new DriverError('ERR_USAGE', `${g} needs a value`);
        if (g === '--root') full.root = v;
        else {
          if (!['host', 'inproc', 'hcs'].includes(v))
            throw new DriverError('ERR_USAGE', `--backend ${JSON.stringify(v)}: host, inproc or hcs`);
          full.backend = v;
        }
        args.splice(0, 2);
      } else if (g?.startsWith('--root=') || g?.startsWith('--backend=')) {
        const eq = g.indexOf('=');
        args.splice(0, 1, g.slice(0, eq), g.slice(eq + 1));
      } else break;
    }
    const [name, ...rest] = args;
    if (!name || name === 'help' || name === '--help' || name === '-h') {
      full.out(help());
      return name ? 0 : 2;
    }
    const cmd = COMMANDS.find((c) => c.name === name);
    if (!cmd) {
      full.err(`lcow: ERR_USAGE: unknown command ${JSON.stringify(name)}\n\n${help()}`);
      return 2;
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      full.out([`lcow ${cmd.name}: ${cmd.summary}`, '', ...cmd.usage.map((u) => `usage: ${u}`)].join('\n'));
      return 0;
    }
    return await cmd.run(rest, full);
  } catch (e) {
    const err = e as Error & { code?: unknown };
    const code = typeof err.code === 'string' ? err.code : 'ERR_INTERNAL';
    full.err(`lcow: ${code}: ${err.message}`);
    if (code === 'ERR_INTERNAL' && process.env.LCOW_DEBUG) full.err(String(err.stack));
    return code === 'ERR_USAGE' ? 2 : 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
