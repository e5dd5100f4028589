import { accessSync, constants, readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { DriverError, describeError } from '../errors.ts';
import {
  GLOBAL_OPTIONS,
  formOptions,
  optionHelp,
  parseForm,
  wrap,
  splitSubcommand,
  synopsis,
  type FormSpec,
  type Parsed,
} from './args.ts';
import { version } from './version.ts';
import { LOADERS, SPECS, type CommandName, type CommandSpec } from './registry.ts';
import type { Io } from './types.ts';

export type { Command, Io } from './types.ts';
export { version } from './version.ts';

/** `lcow X.Y.Z`, from the package this command belongs to. */
/** Every form's synopsis, as `lcow --help` and the README list them. */
export function synopses(): string[] {
  return Object.entries(SPECS).flatMap(([name, c]) =>
    Object.entries(c.forms as Record<string, FormSpec>).map(([sub, f]) =>
      synopsis(`lcow ${name}${sub ? ` ${sub}` : ''}`, f),
    ),
  );
}

/** `lcow --help`. */
export function help(): string {
  return [
    'lcow — LCOW container layers as ext4 in VHD/VHDX, on Linux and Windows',
    '',
    'usage: lcow [global options] COMMAND [options] [operands]',
    '       lcow COMMAND --help    (its options, their meanings and defaults)',
    '',
    'global options (before or after a command that opens the data root):',
    ...optionHelp({
      ...GLOBAL_OPTIONS,
      help: { kind: 'flag', short: 'h', help: 'print this help and exit' },
      version: { kind: 'flag', help: "print lcow's version and exit" },
    }),
    '',
    'commands:',
    ...Object.entries(SPECS).flatMap(([name, c]) =>
      wrap(c.summary, 96).map((line, i) => `  ${(i === 0 ? name : '').padEnd(11)}${line}`),
    ),
    '',
    'service commands (each its own package, installed beside this one; also run as lcow-NAME):',
    ...Object.entries(SERVICES).flatMap(([name, summary]) =>
      wrap(summary, 96).map((line, i) => `  ${(i === 0 ? name : '').padEnd(23)}${line}`),
    ),
    '',
    'synopses:',
    ...synopses().map((s) => `  ${s}`),
    '',
    'Errors print "lcow: CODE: message" on stderr and exit with status 1 (2 for usage errors, 128+n when',
    'ended by signal n). Outputs are written under a temporary name and renamed when complete.',
  ].join('\n');
}

/** `lcow COMMAND --help`, or `lcow COMMAND SUB --help` for one form. */
function commandHelp(name: string, spec: CommandSpec, only?: string): string {
  const forms = Object.entries(spec.forms).filter(([sub]) => only === undefined || sub === only);
  const lines = [`lcow ${name}: ${spec.summary}`];
  for (const [sub, f] of forms) {
    const what = `lcow ${name}${sub ? ` ${sub}` : ''}`;
    lines.push('', `usage: ${synopsis(what, f)}`);
    if (f.summary) lines.push(`  ${f.summary}`);
    lines.push('', 'options:', ...optionHelp(formOptions(f)));
    for (const n of f.notes ?? []) lines.push('', n);
  }
  return lines.join('\n');
}

/** `lcow-NAME` on PATH, for a NAME that could be a command, or null. */
/** The services `lcow` runs from their own packages (`@lcow/NAME`, bin `lcow-NAME`). */
const SERVICES: Record<string, string> = {
  'docker-plugin': "serve dockerd's graph-driver plugin API on a unix socket (@lcow/docker-plugin)",
  'containerd-snapshotter': "serve containerd's snapshots API as a proxy plugin (@lcow/containerd-snapshotter)",
};

/**
 * Where `lcow NAME` finds `lcow-NAME`: a service's package installed beside this one (a global npm install
 * puts every `@lcow/*` package in one node_modules, and `lcow` is then called without that folder's
 * `.bin` on PATH), else an executable `lcow-NAME` on PATH (as git finds its commands). Run with the node
 * running us, so it works where `#!/usr/bin/env node` would find another.
 */
function findExternal(name: string): { cmd: string; args: string[] } | null {
  if (!/^[a-z][a-z0-9-]{0,40}$/.test(name)) return null;
  if (Object.hasOwn(SERVICES, name)) {
    try {
      const manifest = createRequire(import.meta.url).resolve(`@lcow/${name}/package.json`);
      const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { bin?: Record<string, string> };
      const bin = pkg.bin?.[`lcow-${name}`];
      if (bin) return { cmd: process.execPath, args: [join(dirname(manifest), bin)] };
    } catch {
      // not installed beside us: try PATH
    }
  }
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    if (!d) continue;
    const p = join(d, `lcow-${name}`);
    try {
      accessSync(p, constants.X_OK);
      return { cmd: p, args: [] };
    } catch {
      // not here
    }
  }
  return null;
}

/** Runs an external command with our stdio; signals reach it; resolves with its exit status. */
async function runExternal(
  external: { cmd: string; args: string[] },
  args: string[],
  signal: AbortSignal,
): Promise<number> {
  const path = external.cmd;
  // Loaded here, not at the top: node:child_process costs every other command ~7 ms of start-up.
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = spawn(path, [...external.args, ...args], { stdio: 'inherit' });
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

/** `--root`, `--backend` and `--storage-opt`, checked, into the command's I/O. */
function applyGlobals(p: Parsed, io: Io): void {
  const root = p.value('root');
  if (root !== undefined) io.root = root;
  const backend = p.value('backend');
  if (backend !== undefined) {
    if (!['host', 'inproc', 'hcs'].includes(backend))
      throw new DriverError('ERR_USAGE', `--backend ${JSON.stringify(backend)}: host, inproc or hcs`);
    io.backend = backend;
  }
  for (const v of p.list('storage-opt')) {
    if (!/^lcow\.[a-z]+=/i.test(v))
      throw new DriverError('ERR_USAGE', `--storage-opt ${JSON.stringify(v)}: expected lcow.KEY=VALUE`);
    io.storageOpts = [...(io.storageOpts ?? []), v];
  }
}

function ignoreEpipe(e: NodeJS.ErrnoException): void {
  if (e.code !== 'EPIPE') throw e;
}

/** The signals that end a command cleanly (see {@link main}). */
const EXIT_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Runs the `lcow` command line; returns the exit status. */
export function main(argv: string[], io?: Partial<Io>): Promise<number> {
  return run(argv, io, 'lcow');
}

/**
 * Runs a `dmverity-vhd` command line (hcsshim's tool: its flags, output lines and exit statuses) through
 * `lcow image`; returns the exit status.
 */
export function dmverityVhdMain(argv: string[], io?: Partial<Io>): Promise<number> {
  return run(argv, io, 'dmverity-vhd');
}

async function run(argv: string[], io: Partial<Io> | undefined, as: 'lcow' | 'dmverity-vhd'): Promise<number> {
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
    if (as === 'dmverity-vhd') {
      const { dmverityVhd } = await import('./dmverity-vhd.ts');
      return status(await dmverityVhd(argv, full, (args, inner) => run(args, inner, 'lcow')));
    }
    // Global options before the command (checked by the same parser).
    let at = 0;
    while (at < argv.length) {
      const g = argv[at]!;
      const bare = g.split('=')[0]!;
      if (bare === '--root' || bare === '--backend' || bare === '--storage-opt') at += g.includes('=') ? 1 : 2;
      else if (g === '--help' || g === '-h' || g === '--version') at++;
      else break;
    }
    const lead = parseForm('lcow', { operands: [], options: GLOBAL_OPTIONS, driver: false }, argv.slice(0, at));
    applyGlobals(lead, full);
    const [name, ...rest] = argv.slice(at);
    if (lead.flag('version') && !lead.flag('help')) {
      full.out(version());
      return 0;
    }
    if (!name || name === 'help' || lead.flag('help')) {
      // A bare `lcow` is a command line that cannot run: its help goes to stderr, status 2.
      if (!name && !lead.flag('help')) {
        full.err(help());
        return 2;
      }
      full.out(help());
      return 0;
    }
    const known = Object.hasOwn(SPECS, name) ? (name as CommandName) : null;
    // `lcow NAME …` runs a separately installed `lcow-NAME` (as git does): `lcow docker-plugin` is
    // @lcow/docker-plugin's command, which depends on this package and so cannot be part of it.
    const external = known ? null : findExternal(name);
    if (external) return await runExternal(external, rest, full.signal);
    if (!known) {
      full.err(`lcow: ERR_USAGE: unknown command ${JSON.stringify(name)} (see lcow --help)`);
      return 2;
    }
    const spec: CommandSpec = SPECS[known];
    const forms = spec.forms as Record<string, FormSpec>;
    let form = '';
    let args = rest;
    if (!Object.hasOwn(forms, '')) {
      const split = splitSubcommand(rest, forms);
      if (split.sub === undefined || !Object.hasOwn(forms, split.sub)) {
        if (split.sub === undefined && (rest.includes('--help') || rest.includes('-h'))) {
          full.out(commandHelp(known, spec));
          return 0;
        }
        const subs = Object.keys(forms).join(', ');
        throw new DriverError(
          'ERR_USAGE',
          `lcow ${known}: ${split.sub === undefined ? 'a subcommand is needed' : `unknown subcommand ${JSON.stringify(split.sub)}`}: ${subs} (see lcow ${known} --help)`,
        );
      }
      form = split.sub;
      args = split.rest;
    }
    const what = `lcow ${known}${form ? ` ${form}` : ''}`;
    const parsed = parseForm(what, forms[form]!, args);
    if (parsed.flag('help')) {
      full.out(commandHelp(known, spec, form));
      return 0;
    }
    if (parsed.flag('version')) {
      full.out(version());
      return 0;
    }
    applyGlobals(parsed, full);
    const cmd = await LOADERS[known]();
    return status(await cmd.run(form, parsed, full));
  } catch (e) {
    if (pipeClosed) return status(1);
    const failure = caught ? ac.signal.reason : e;
    const { code } = describeError(failure);
    const { errorText } = await import('../error-text.ts');
    full.err(`lcow: ${errorText(failure)}`);
    if (code === 'ERR_INTERNAL' && process.env.LCOW_DEBUG) full.err(String((e as Error).stack));
    // A reference that does not parse is a command line that cannot run, like a bad option.
    return status(code === 'ERR_USAGE' || code === 'ERR_INVALID_REFERENCE' ? 2 : 1);
  } finally {
    if (ownSignals) for (const sig of EXIT_SIGNALS) process.off(sig, onSignal);
    if (ownStdout) {
      process.stdout.off('error', onStdoutError);
      // A write of the command's last output can fail after it ended (a fast command into `| head`): the
      // reader's going away is not an error then either. One listener per process.
      if (!process.stdout.listeners('error').includes(ignoreEpipe)) process.stdout.on('error', ignoreEpipe);
    }
  }
}
