import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, join } from 'node:path';
import { DriverError } from '../errors.ts';
import { LOADERS, SPECS, type CommandName } from './registry.ts';
import type { Io } from './types.ts';

export type { Command, Io } from './types.ts';

function help(): string {
  return [
    'lcow — LCOW container layers as ext4 in VHD/VHDX, on Linux and Windows',
    '',
    'usage: lcow [--root DIR] [--backend host|inproc|hcs] [--storage-opt lcow.KEY=VALUE]… <command> …',
    '       (--help after any command; storage options as dockerd passes them, e.g. lcow.maxlayersize=GiB)',
    '',
    'commands:',
    ...Object.entries(SPECS).flatMap(([name, c]) => [
      `  ${name.padEnd(10)}${c.summary}`,
      ...c.usage.map((u) => `              ${u}`),
    ]),
    '',
    'Errors print "lcow: CODE: message" on stderr and exit with status 1 (2 for usage errors).',
  ].join('\n');
}

/** `lcow-NAME` on PATH, for a NAME that could be a command, or null. */
function findExternal(name: string): string | null {
  if (!/^[a-z][a-z0-9-]{0,40}$/.test(name)) return null;
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    if (!d) continue;
    const p = join(d, `lcow-${name}`);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/** Runs an external command with our stdio; signals reach it; resolves with its exit status. */
function runExternal(path: string, args: string[], signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { stdio: 'inherit' });
    const forward = (s: NodeJS.Signals) => (): void => void child.kill(s);
    const handlers = (['SIGTERM', 'SIGHUP'] as const).map((s) => [s, forward(s)] as const);
    for (const [s, h] of handlers) process.on(s, h);
    const onAbort = (): void => void child.kill('SIGINT');
    signal.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e) => reject(new DriverError('ERR_USAGE', `${path}: ${e.message}`)));
    child.on('exit', (code, sig) => {
      for (const [s, h] of handlers) process.off(s, h);
      signal.removeEventListener('abort', onAbort);
      resolve(code ?? 128 + (osConstants.signals[sig as NodeJS.Signals] ?? 0));
    });
  });
}

/** What an operating-system error means to a user, as one of our codes. */
const ERRNO_CODES: Record<string, string> = {
  ENOENT: 'ERR_NOT_FOUND',
  EEXIST: 'ERR_EXISTS',
  EISDIR: 'ERR_IS_A_DIRECTORY',
  ENOTDIR: 'ERR_NOT_A_DIRECTORY',
  ENOTEMPTY: 'ERR_NOT_EMPTY',
  EACCES: 'ERR_PERMISSION',
  EPERM: 'ERR_PERMISSION',
  EROFS: 'ERR_READ_ONLY',
  ENOSPC: 'ERR_DISK_FULL',
  EDQUOT: 'ERR_DISK_FULL',
  EFBIG: 'ERR_DISK_FULL',
  ELOOP: 'ERR_SYMLINK_LOOP',
  ENAMETOOLONG: 'ERR_INVALID_ARGUMENT',
  E2BIG: 'ERR_INVALID_ARGUMENT',
  EBUSY: 'ERR_LAYER_BUSY',
  ETXTBSY: 'ERR_LAYER_BUSY',
  EMFILE: 'ERR_RESOURCES',
  ENFILE: 'ERR_RESOURCES',
  ENOMEM: 'ERR_RESOURCES',
};

/**
 * The code and message the command prints for an error: ours as they are; an operating-system error
 * (`ENOENT`…) as one of our codes with the errno kept once at the end; anything else `ERR_INTERNAL`.
 */
export function describeError(e: unknown): { code: string; message: string } {
  const err = e as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
  const raw = typeof err?.code === 'string' ? err.code : null;
  const text = err instanceof Error ? err.message : String(e);
  if (raw && /^E[A-Z0-9]+$/.test(raw) && (typeof err.errno === 'number' || typeof err.syscall === 'string')) {
    const message = text.startsWith(`${raw}: `) ? text.slice(raw.length + 2) : text;
    return { code: ERRNO_CODES[raw] ?? 'ERR_IO', message: `${message} (${raw})` };
  }
  if (raw?.startsWith('ERR_')) return { code: raw, message: text };
  return { code: 'ERR_INTERNAL', message: text };
}

/** The signals that end a command cleanly (see {@link main}). */
const EXIT_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Runs the `lcow` command line; returns the exit status. */
export async function main(argv: string[], io?: Partial<Io>): Promise<number> {
  const ac = new AbortController();
  // SIGINT, SIGTERM and SIGHUP abort the command, which removes what it had not finished (temporary files,
  // half-made layers); the status is then 128 + the signal's number, as a shell reports a killed process. The
  // handler is taken once: a second signal of the same kind kills at once.
  let caught: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    caught ??= sig;
    ac.abort(new DriverError('ERR_ABORTED', `interrupted by ${sig}`));
  };
  // A reader that goes away (`lcow ext4 export … -o - | head`) ends the command quietly, as SIGPIPE ends cat.
  let pipeClosed = false;
  const onStdoutError = (e: NodeJS.ErrnoException): void => {
    if (e.code !== 'EPIPE') throw e;
    pipeClosed = true;
    ac.abort(new DriverError('ERR_ABORTED', 'standard output closed'));
  };
  const full: Io = {
    out: (t) => process.stdout.write(`${t}\n`),
    err: (t) => process.stderr.write(`${t}\n`),
    stdout: process.stdout,
    progress: process.stderr,
    signal: ac.signal,
    ...io,
  };
  const ownSignals = !io?.signal;
  if (ownSignals) for (const sig of EXIT_SIGNALS) process.once(sig, onSignal);
  const ownStdout = !io?.stdout;
  if (ownStdout) process.stdout.on('error', onStdoutError);
  const status = (code: number): number =>
    pipeClosed ? 128 + osConstants.signals.SIGPIPE : caught ? 128 + osConstants.signals[caught] : code;
  try {
    const args = [...argv];
    // Global options, before the command.
    for (;;) {
      const g = args[0];
      if (g === '--root' || g === '--backend' || g === '--storage-opt') {
        const v = args[1];
        if (v === undefined) throw new DriverError('ERR_USAGE', `${g} needs a value`);
        if (g === '--root') full.root = v;
        else if (g === '--storage-opt') {
          if (!/^lcow\.[a-z]+=/i.test(v))
            throw new DriverError('ERR_USAGE', `--storage-opt ${JSON.stringify(v)}: expected lcow.KEY=VALUE`);
          full.storageOpts = [...(full.storageOpts ?? []), v];
        } else {
          if (!['host', 'inproc', 'hcs'].includes(v))
            throw new DriverError('ERR_USAGE', `--backend ${JSON.stringify(v)}: host, inproc or hcs`);
          full.backend = v;
        }
        args.splice(0, 2);
      } else if (g?.startsWith('--root=') || g?.startsWith('--backend=') || g?.startsWith('--storage-opt=')) {
        const eq = g.indexOf('=');
        args.splice(0, 1, g.slice(0, eq), g.slice(eq + 1));
      } else break;
    }
    const [name, ...rest] = args;
    if (!name || name === 'help' || name === '--help' || name === '-h') {
      full.out(help());
      return name ? 0 : 2;
    }
    const known = Object.hasOwn(SPECS, name) ? (name as CommandName) : null;
    // `lcow NAME …` runs a separately installed `lcow-NAME` (as git does): `lcow docker-plugin` is
    // @lcow/docker-plugin's command, which depends on this package and so cannot be part of it.
    const external = known ? null : findExternal(name);
    if (external) return await runExternal(external, rest, full.signal);
    if (!known) {
      full.err(`lcow: ERR_USAGE: unknown command ${JSON.stringify(name)}\n\n${help()}`);
      return 2;
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      const spec = SPECS[known];
      full.out([`lcow ${known}: ${spec.summary}`, '', ...spec.usage.map((u) => `usage: ${u}`)].join('\n'));
      return 0;
    }
    const cmd = await LOADERS[known]();
    return status(await cmd.run(rest, full));
  } catch (e) {
    if (pipeClosed) return status(1);
    const { code, message } = describeError(caught ? ac.signal.reason : e);
    full.err(`lcow: ${code}: ${message}`);
    if (code === 'ERR_INTERNAL' && process.env.LCOW_DEBUG) full.err(String((e as Error).stack));
    // A reference that does not parse is a command line that cannot run, like a bad option.
    return status(code === 'ERR_USAGE' || code === 'ERR_INVALID_REFERENCE' ? 2 : 1);
  } finally {
    if (ownSignals) for (const sig of EXIT_SIGNALS) process.off(sig, onSignal);
    if (ownStdout) process.stdout.off('error', onStdoutError);
  }
}
