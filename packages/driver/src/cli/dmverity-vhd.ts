// `dmverity-vhd`: lcow under the name and command line of hcsshim's tool, so that scripts and `az confcom`
// run ours unchanged. Its parser is urfave/cli v1 over Go's flag package: global flags, then a command,
// then that command's flags, each as `-name value`, `--name value`, `-name=value`, with boolean flags bare;
// parsing stops at the first operand or `--`. What it prints on standard output for every form is what
// hcsshim's prints ("Layer N root hash: HEX", "Layer VHD created at DIR/HEX.vhd"), as are the exit status
// and which stream gets what: help on standard output (status 0; 1 after a usage error, whose one line goes
// to standard error); an unknown command: status 3. The work is `lcow image roothash|create`.
import type { Io } from './types.ts';

interface Flag {
  names: readonly string[];
  arg?: string;
  help: string;
}

const GLOBAL: readonly Flag[] = [
  { names: ['verbose', 'v'], help: "log each step (on standard output, as hcsshim's tool does)" },
  { names: ['docker', 'd'], help: 'the image is in the local Docker daemon' },
  { names: ['tarball', 't'], arg: 'value', help: 'the image is in this docker-save archive' },
  { names: ['buffered-reader', 'b'], help: 'accepted for compatibility (reads are always buffered)' },
  { names: ['help', 'h'], help: 'show this help' },
];

const IMAGE: Flag = { names: ['image', 'i'], arg: 'value', help: 'Required: the image reference' };
const USER: Flag = { names: ['username', 'u'], arg: 'value', help: 'Optional: registry user name' };
const PASS: Flag = { names: ['password', 'p'], arg: 'value', help: 'Optional: registry password' };
const HELP: Flag = { names: ['help', 'h'], help: 'show this help' };

interface CommandDef {
  summary: string;
  flags: readonly Flag[];
  required: readonly string[];
}

const COMMANDS: Record<'create' | 'roothash', CommandDef> = {
  create: {
    summary: 'writes one VHD per layer (ext4, dm-verity superblock and tree, VHD footer) into the output folder',
    flags: [
      IMAGE,
      { names: ['out-dir', 'o'], arg: 'value', help: 'Required: the folder the VHDs go to (made if missing)' },
      USER,
      PASS,
      { names: ['hash-dev-vhd', 'hdv'], help: 'Optional: the dm-verity tree in a VHD of its own' },
      HELP,
    ],
    required: ['image', 'out-dir'],
  },
  roothash: {
    summary: "prints each layer's dm-verity root hash",
    flags: [IMAGE, USER, PASS, HELP],
    required: ['image'],
  },
};

const NAME = 'dmverity-vhd';

function flagLines(flags: readonly Flag[]): string[] {
  const left = flags.map((f) =>
    f.names.map((n) => `${n.length === 1 ? '-' : '--'}${n}${f.arg ? ` ${f.arg}` : ''}`).join(', '),
  );
  const width = Math.max(...left.map((l) => l.length)) + 2;
  return flags.map((f, i) => `   ${left[i]!.padEnd(width)}${f.help}`);
}

function appHelp(): string {
  return [
    'NAME:',
    `   ${NAME} - LCOW layer VHDs with dm-verity hashes (lcow's implementation of hcsshim's tool)`,
    '',
    'USAGE:',
    `   ${NAME} [global options] command [command options] [arguments...]`,
    '',
    'COMMANDS:',
    `   create    ${COMMANDS.create.summary}`,
    `   roothash  ${COMMANDS.roothash.summary}`,
    '   help, h   shows the commands, or the help of one',
    '',
    'GLOBAL OPTIONS:',
    ...flagLines(GLOBAL),
    '',
  ].join('\n');
}

function commandHelp(name: keyof typeof COMMANDS): string {
  return [
    'NAME:',
    `   ${NAME} ${name} - ${COMMANDS[name].summary}`,
    '',
    'USAGE:',
    `   ${NAME} ${name} [command options] [arguments...]`,
    '',
    'OPTIONS:',
    ...flagLines(COMMANDS[name].flags),
    '',
  ].join('\n');
}

type Values = Map<string, string | true>;

/** Go's flag.Parse over `args`: the flags' values by their first name, and where the operands start. */
function parseFlags(args: readonly string[], flags: readonly Flag[]): { values: Values; rest: number } | string {
  const values: Values = new Map();
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return { values, rest: i + 1 };
    if (a.length < 2 || a[0] !== '-') break;
    const body = a.startsWith('--') ? a.slice(2) : a.slice(1);
    if (body === '' || body.startsWith('-') || body.startsWith('=')) return `bad flag syntax: ${a}`;
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const flag = flags.find((f) => f.names.includes(name));
    if (!flag) return `flag provided but not defined: -${name}`;
    const key = flag.names[0]!;
    if (!flag.arg) {
      const v = eq < 0 ? 'true' : body.slice(eq + 1);
      if (!/^(1|t|T|TRUE|true|True|0|f|F|FALSE|false|False)$/.test(v))
        return `invalid boolean value ${JSON.stringify(v)} for -${name}: parse error`;
      if (/^(1|t|T|TRUE|true|True)$/.test(v)) values.set(key, true);
      else values.delete(key);
      continue;
    }
    if (eq >= 0) values.set(key, body.slice(eq + 1));
    else if (i + 1 < args.length) values.set(key, args[++i]!);
    else return `flag needs an argument: -${name}`;
  }
  return { values, rest: i };
}

/**
 * Runs `argv` as hcsshim's dmverity-vhd would, through `lcow` (`run`, which is `main` with the
 * arguments of `lcow image roothash|create`). Returns the exit status.
 */
export async function dmverityVhd(
  argv: readonly string[],
  io: Io,
  run: (argv: string[], io: Io) => Promise<number>,
): Promise<number> {
  const global = parseFlags(argv, GLOBAL);
  if (typeof global === 'string') {
    io.out(`Incorrect Usage. ${global}\n\n${appHelp()}`);
    io.err(global);
    return 1;
  }
  const [command, ...rest] = argv.slice(global.rest);
  if (global.values.has('help') || command === undefined) {
    io.out(appHelp());
    return 0;
  }
  if (command === 'help' || command === 'h') {
    const topic = rest[0];
    if (topic === undefined) io.out(appHelp());
    else if (topic === 'create' || topic === 'roothash') io.out(commandHelp(topic));
    else {
      io.err(`No help topic for '${topic}'`);
      return 3;
    }
    return 0;
  }
  if (command !== 'create' && command !== 'roothash') {
    io.err(`No help topic for '${command}'`);
    return 3;
  }
  const parsed = parseFlags(rest, COMMANDS[command].flags);
  if (typeof parsed === 'string') {
    io.out(`Incorrect Usage: ${parsed}\n\n${commandHelp(command)}`);
    io.err(parsed);
    return 1;
  }
  const { values } = parsed;
  if (values.has('help')) {
    io.out(commandHelp(command));
    return 0;
  }
  const missing = COMMANDS[command].required.filter((r) => !values.has(r));
  if (missing.length > 0) {
    io.out(commandHelp(command));
    io.err(
      missing.length === 1 ? `Required flag "${missing[0]}" not set` : `Required flags "${missing.join(', ')}" not set`,
    );
    return 1;
  }
  const args = ['image', command];
  const value = (m: Values, k: string): string | undefined => {
    const v = m.get(k);
    return typeof v === 'string' ? v : undefined;
  };
  const tarball = value(global.values, 'tarball');
  if (tarball !== undefined) args.push('--tarball', tarball);
  if (global.values.has('docker')) args.push('--docker');
  if (global.values.has('verbose')) args.push('--verbose');
  args.push('--image', value(values, 'image')!);
  for (const k of ['username', 'password', 'out-dir']) {
    const v = value(values, k);
    if (v !== undefined) args.push(`--${k}`, v);
  }
  if (values.has('hash-dev-vhd')) args.push('--hash-dev-vhd');
  // dmverity-vhd replaces VHDs already in the folder.
  if (command === 'create') args.push('--force');
  // lcow's status 2 (a command line or reference that cannot run) is dmverity-vhd's 1, as any failure.
  // Its -v logs go to standard output, between the result lines.
  const status = await run(args, { ...io, debug: io.out });
  return status === 2 ? 1 : status;
}
