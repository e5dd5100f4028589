// Command lines, parsed by Node's own `util.parseArgs` from one declaration per command form (the same table
// prints `--help`): `--flag=value`, `--` and `-` as an operand, repeated flags and option clusters behave as
// in every POSIX tool. What parseArgs does not do, and we need, is done before it in `normalize`: other
// spellings of an option (dmverity-vhd's `--hdv`, hcsshim's Go-style `-overlay`), and `--opt` alone for an
// option that takes `=true|false` (skopeo's `--tls-verify`).
import { parseArgs } from 'node:util';
import { DriverError } from '../errors.ts';

/** One option of a command form. */
export interface OptionSpec {
  /** `flag`: no value; `value`: one (the last given wins); `list`: repeatable; `bool`: `--x` or `--x=true|false`. */
  kind: 'flag' | 'value' | 'list' | 'bool';
  /** A one-letter form (`o` for `-o`). */
  short?: string;
  /** What the value is called in help (`SIZE`, `DIR`). */
  arg?: string;
  /** Its meaning, for `--help`. */
  help: string;
  /** The default, for `--help` (the code applies it). */
  default?: string;
  /** Other spellings accepted for it: `--hdv`, `-overlay` (a Go-style long option with one dash). */
  aliases?: readonly string[];
  /** Shown in the synopsis as `[GROUP options]` with others of its group, not one by one. */
  group?: string;
  /** Required (shown without brackets). */
  required?: boolean;
}

/** One form of a command: `lcow vhd create …` is the form `create` of `vhd`. */
export interface FormSpec {
  /** The operands, as the synopsis shows them: `ID`, `[PATH]`, `ID...`, `IN.tar|IMAGE`. */
  operands: readonly string[];
  options: Readonly<Record<string, OptionSpec>>;
  /** One line of meaning, shown by `--help` when the command has several forms. */
  summary?: string;
  /** Accepts the global options (`--root`, `--backend`, `--storage-opt`) after the command too. */
  driver?: boolean;
  /** A note printed after the options in `--help`. */
  notes?: readonly string[];
}

/** The options every `lcow` command line may start with. */
export const GLOBAL_OPTIONS = {
  root: { kind: 'value', arg: 'DIR', help: 'the data root', default: './lcow-data' },
  backend: {
    kind: 'value',
    arg: 'host|inproc|hcs',
    help: 'how layers are mounted: kernel loop devices and overlayfs (host), our own reader (inproc), or a Hyper-V utility VM (hcs)',
    default: 'host on Linux as root, inproc otherwise, hcs on Windows',
  },
  'storage-opt': {
    kind: 'list',
    arg: 'lcow.KEY=VALUE',
    help: 'a driver option as dockerd passes it (lcow.maxlayersize=GiB, lcow.sandboxsize=GB, lcow.timeout=s…); repeatable',
  },
} as const satisfies Record<string, OptionSpec>;

/** `--help` and `--version`, accepted by every form. */
const COMMON_OPTIONS = {
  help: { kind: 'flag', short: 'h', help: 'print this help and exit' },
  version: { kind: 'flag', help: "print lcow's version and exit" },
} as const satisfies Record<string, OptionSpec>;

/** What a command line says, once parsed and checked against its form. */
export class Parsed {
  readonly operands: readonly string[];
  readonly #values: Readonly<Record<string, string | boolean | string[] | undefined>>;

  /** The other spellings used (`-overlay`, `--hdv`), as given. */
  readonly aliasesUsed: ReadonlySet<string>;

  constructor(
    values: Record<string, string | boolean | string[] | undefined>,
    operands: string[],
    aliasesUsed: ReadonlySet<string> = new Set(),
  ) {
    this.#values = values;
    this.operands = operands;
    this.aliasesUsed = aliasesUsed;
  }

  /** A `flag` option: given or not. */
  flag(name: string): boolean {
    return this.#values[name] === true;
  }

  /** A `value` option, or undefined. */
  value(name: string): string | undefined {
    const v = this.#values[name];
    return typeof v === 'string' ? v : undefined;
  }

  /** A `list` option: every value, in order. */
  list(name: string): string[] {
    const v = this.#values[name];
    return Array.isArray(v) ? v : [];
  }

  /** A `bool` option: true, false, or undefined when absent. */
  bool(name: string): boolean | undefined {
    const v = this.#values[name];
    if (v === undefined) return undefined;
    if (v === 'true') return true;
    if (v === 'false') return false;
    throw new DriverError('ERR_USAGE', `--${name}=${String(v)}: true or false`);
  }

  /** True when an option of this name was on the command line. */
  has(name: string): boolean {
    return this.#values[name] !== undefined;
  }
}

/** The options a form accepts, global and common ones included. */
export function formOptions(form: FormSpec): Record<string, OptionSpec> {
  return { ...(form.driver ? GLOBAL_OPTIONS : {}), ...form.options, ...COMMON_OPTIONS };
}

/** The spelling of each alias, and each option that takes a value, for {@link normalize}. */
function spellings(options: Record<string, OptionSpec>): {
  alias: Map<string, string>;
  takesValue: Set<string>;
} {
  const alias = new Map<string, string>();
  const takesValue = new Set<string>();
  for (const [name, o] of Object.entries(options)) {
    for (const a of o.aliases ?? []) alias.set(a, `--${name}`);
    if (o.kind === 'value' || o.kind === 'list') {
      takesValue.add(`--${name}`);
      if (o.short) takesValue.add(`-${o.short}`);
      for (const a of o.aliases ?? []) takesValue.add(a);
    }
  }
  return { alias, takesValue };
}

/**
 * Rewrites other spellings to ours before parseArgs sees them, and `--x` alone to `--x=true` for a `bool`
 * option. A token that is an option's value (`-o -vhd` names a file `-vhd`) or follows `--` is left alone.
 * Returns the new argument list and the other spellings that were used.
 */
export function normalize(
  args: readonly string[],
  options: Record<string, OptionSpec>,
): { args: string[]; aliasesUsed: Set<string> } {
  const { alias, takesValue } = spellings(options);
  const out: string[] = [];
  const aliasesUsed = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const eq = a.indexOf('=');
    const head = eq > 0 ? a.slice(0, eq) : a;
    const tail = eq > 0 ? a.slice(eq) : '';
    const canonical = alias.get(head) ?? head;
    if (canonical !== head) aliasesUsed.add(head);
    const name = canonical.startsWith('--') ? canonical.slice(2) : null;
    const spec = name !== null ? options[name] : undefined;
    out.push(spec?.kind === 'bool' && !tail ? `${canonical}=true` : canonical + tail);
    // The next token is this option's value: kept as it is, even if it looks like an option.
    if (!tail && takesValue.has(head) && i + 1 < args.length) out.push(args[++i]!);
  }
  return { args: out, aliasesUsed };
}

/** Minimum and maximum operand counts of a form (`[X]` optional, `X...` one or more, `[X...]` any). */
function operandCounts(operands: readonly string[]): { min: number; max: number } {
  let min = 0;
  let max = 0;
  for (const o of operands) {
    const optional = o.startsWith('[');
    const many = o.endsWith('...') || o.endsWith('...]');
    if (!optional) min++;
    max = many || max === Infinity ? Infinity : max + 1;
  }
  return { min, max };
}

/**
 * Parses `args` against `form`: unknown options, a missing value, too many or too few operands are
 * `ERR_USAGE` errors naming the command (`what`, as `lcow vhd create`).
 */
export function parseForm(what: string, form: FormSpec, args: readonly string[]): Parsed {
  const options = formOptions(form);
  const config: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(options))
    config[name] = {
      type: o.kind === 'flag' ? 'boolean' : 'string',
      ...(o.short ? { short: o.short } : {}),
      ...(o.kind === 'list' ? { multiple: true } : {}),
    };
  let parsed: { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] };
  const normal = normalize(args, options);
  try {
    parsed = parseArgs({ args: normal.args, options: config, strict: true, allowPositionals: true });
  } catch (e) {
    const code = (e as { code?: string }).code ?? '';
    if (!code.startsWith('ERR_PARSE_ARGS')) throw e;
    // parseArgs' own sentences, shortened to what a command line needs.
    const message = (e as Error).message
      .replace(/\. To specify a positional argument starting with a '-'.*$/s, '')
      .replace(/\. Did you forget.*$/s, '');
    throw new DriverError('ERR_USAGE', `${what}: ${message} (see ${what} --help)`);
  }
  const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
  const result = new Parsed(values, parsed.positionals, normal.aliasesUsed);
  if (result.flag('help') || result.flag('version')) return result;
  const { min, max } = operandCounts(form.operands);
  const n = parsed.positionals.length;
  if (n < min || n > max) {
    const expected = form.operands.length ? form.operands.join(' ') : 'no operands';
    const extra = n > max ? `: unexpected ${JSON.stringify(parsed.positionals[max])}` : '';
    throw new DriverError('ERR_USAGE', `${what} takes ${expected}${extra} (see ${what} --help)`);
  }
  for (const [name, o] of Object.entries(options))
    if (o.required && values[name] === undefined)
      throw new DriverError('ERR_USAGE', `${what}: --${name} is required (see ${what} --help)`);
  return result;
}

/** `--name ARG` as help and synopses show it. */
function spelled(name: string, o: OptionSpec): string {
  const long = `--${name}`;
  if (o.kind === 'bool') return `${long}[=true|false]`;
  return o.arg ? `${long} ${o.arg}` : long;
}

/** The synopsis of a form: `lcow vhd create OUT --size SIZE [--fixed] … [--json]`. */
export function synopsis(what: string, form: FormSpec): string {
  const parts = [what, ...form.operands];
  const groups = new Set<string>();
  for (const [name, o] of Object.entries(form.options)) {
    if (o.group) {
      if (!groups.has(o.group)) parts.push(`[${o.group} options]`);
      groups.add(o.group);
      continue;
    }
    const s = o.short ? (o.arg ? `-${o.short} ${o.arg}` : `-${o.short}`) : spelled(name, o);
    parts.push(o.required ? s : `[${s}]`);
  }
  return parts.join(' ');
}

/** Wraps `text` to lines of at most `width` characters. */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

/** The option table of `--help`: each option, its other spellings, its meaning and default. */
export function optionHelp(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    const spelledAs = [o.short ? `-${o.short}, ${spelled(name, o)}` : spelled(name, o)];
    const also = (o.aliases ?? []).filter((a) => a !== `-${o.short}`);
    const meaning = `${o.help}${o.default ? ` (default: ${o.default})` : ''}${also.length ? `; also ${also.join(', ')}` : ''}`;
    return { left: spelledAs.join(''), meaning };
  });
  const width = Math.min(34, Math.max(...rows.map((r) => r.left.length)) + 2);
  const out: string[] = [];
  for (const r of rows) {
    const text = wrap(r.meaning, 110 - width - 2);
    if (r.left.length + 2 > width) {
      out.push(`  ${r.left}`);
      for (const t of text) out.push(`  ${' '.repeat(width)}${t}`);
    } else {
      out.push(`  ${r.left.padEnd(width)}${text[0] ?? ''}`);
      for (const t of text.slice(1)) out.push(`  ${' '.repeat(width)}${t}`);
    }
  }
  return out;
}

/**
 * The subcommand of a command with several forms (`vhd info`): the first operand, wherever it stands
 * (dmverity-vhd puts `--tarball FILE` before it), skipping the values of options; the rest in order.
 */
export function splitSubcommand(
  args: readonly string[],
  forms: Readonly<Record<string, FormSpec>>,
): { sub: string | undefined; rest: string[] } {
  const all: Record<string, OptionSpec> = {};
  for (const f of Object.values(forms)) Object.assign(all, formOptions(f));
  const { takesValue } = spellings(all);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (!a.startsWith('-') || a === '-') return { sub: a, rest: [...args.slice(0, i), ...args.slice(i + 1)] };
    if (!a.includes('=') && takesValue.has(a)) i++;
  }
  return { sub: undefined, rest: [...args] };
}
