// `lcow man [COMMAND]` and `lcow completion bash|zsh`: the manual pages and the shell completion, made from
// the same table as `--help` (registry.ts), so neither can say other than the command does.
import { DriverError } from '../../errors.ts';
import { GLOBAL_OPTIONS, formOptions, synopsis, type FormSpec, type OptionSpec } from '../args.ts';
import { SPECS, type CommandSpec } from '../registry.ts';
import type { Command } from '../types.ts';

/** roff text: backslashes, hyphens and non-ASCII escaped, a line never starting with a control character. */
function roff(text: string): string {
  return (
    text
      .replace(/\\/g, '\\e')
      .replace(/-/g, '\\-')
      // Beyond ASCII by code point (’, —, …), which every roff reads; raw UTF-8 is not portable.
      .replace(/[\u0080-\u{10FFFF}]/gu, (c) => `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`)
      .split('\n')
      .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
      .join('\n')
  );
}

function optionItems(options: Readonly<Record<string, OptionSpec>>): string[] {
  const out: string[] = [];
  for (const [name, o] of Object.entries(options)) {
    const arg = o.kind === 'bool' ? '[=true|false]' : o.arg ? ` ${o.arg}` : '';
    const names = [...(o.short ? [`-${o.short}`] : []), `--${name}${arg}`, ...(o.aliases ?? [])];
    out.push('.TP', `.B ${roff(names.join(', '))}`, roff(`${o.help}${o.default ? ` (default: ${o.default})` : ''}.`));
  }
  return out;
}

const EXIT_STATUS = [
  '.SH EXIT STATUS',
  roff(
    '0 on success; 1 on an error, printed as "lcow: CODE: message" on standard error; 2 for a command line ' +
      'that cannot run (a usage error); 128+n when ended by signal n.',
  ),
];

/** The date and version in every page's header. */
function header(title: string, version: string): string {
  return `.TH ${roff(title.toUpperCase())} 1 "" "lcow ${roff(version)}" "lcow manual"`;
}

/** lcow(1): the global options and every command, each with its own page. */
export function mainPage(version: string): string {
  const lines = [
    header('lcow', version),
    '.SH NAME',
    roff('lcow - LCOW container layers as ext4 in VHD/VHDX, on Linux and Windows'),
    '.SH SYNOPSIS',
    roff('lcow [global options] COMMAND [options] [operands]'),
    '.SH GLOBAL OPTIONS',
    ...optionItems(GLOBAL_OPTIONS),
    '.SH COMMANDS',
  ];
  for (const [name, c] of Object.entries(SPECS)) lines.push('.TP', `.BR lcow\\-${roff(name)} (1)`, roff(c.summary));
  lines.push(
    ...EXIT_STATUS,
    '.SH SEE ALSO',
    Object.keys(SPECS)
      .map((n) => `.BR lcow\\-${roff(n)} (1)`)
      .join(',\n'),
  );
  return `${lines.join('\n')}\n`;
}

/** lcow-COMMAND(1): each form's synopsis, meaning, options and notes. */
export function commandPage(name: string, version: string): string {
  if (!Object.hasOwn(SPECS, name))
    throw new DriverError('ERR_USAGE', `lcow man: no command ${JSON.stringify(name)} (see lcow --help)`);
  const spec = SPECS[name as keyof typeof SPECS] as CommandSpec;
  const forms = Object.entries(spec.forms as Record<string, FormSpec>);
  const what = (sub: string): string => `lcow ${name}${sub ? ` ${sub}` : ''}`;
  const lines = [
    header(`lcow-${name}`, version),
    '.SH NAME',
    roff(`lcow-${name} - ${spec.summary}`),
    '.SH SYNOPSIS',
    ...forms.flatMap(([sub, f]) => [roff(synopsis(what(sub), f)), '.br']),
  ];
  for (const [sub, f] of forms) {
    lines.push(forms.length > 1 ? `.SH ${roff(what(sub).toUpperCase())}` : '.SH DESCRIPTION');
    lines.push(roff(f.summary ?? spec.summary), '.SS Options', ...optionItems(formOptions(f)));
    for (const n of f.notes ?? []) lines.push('.PP', roff(n));
  }
  lines.push(...EXIT_STATUS, '.SH SEE ALSO', '.BR lcow (1)');
  return `${lines.join('\n')}\n`;
}

/** Every word that may follow `lcow`, `lcow CMD` or `lcow CMD SUB`, and the options that take a value. */
function completionTable(): { words: Map<string, string[]>; valued: Set<string> } {
  const words = new Map<string, string[]>();
  const valued = new Set<string>();
  const optionWords = (o: Readonly<Record<string, OptionSpec>>): string[] =>
    Object.entries(o).flatMap(([n, s]) => {
      const all = [`--${n}`, ...(s.short ? [`-${s.short}`] : []), ...(s.aliases ?? [])];
      if (s.kind === 'value' || s.kind === 'list') for (const w of all) valued.add(w);
      return all;
    });
  words.set('', [...Object.keys(SPECS), ...optionWords(GLOBAL_OPTIONS), '--help', '--version']);
  for (const [name, c] of Object.entries(SPECS)) {
    const forms = Object.entries(c.forms as Record<string, FormSpec>);
    if (forms.length === 1 && forms[0]![0] === '') words.set(name, optionWords(formOptions(forms[0]![1])));
    else {
      words.set(name, [...forms.map(([sub]) => sub), '--help']);
      for (const [sub, f] of forms) words.set(`${name} ${sub}`, optionWords(formOptions(f)));
    }
  }
  return { words, valued };
}

const shellWords = (ws: string[]): string => ws.map((w) => w.replace(/[^A-Za-z0-9_.=:+-]/g, '')).join(' ');

/**
 * A bash completion function for `lcow`: commands, then a command's subcommands, then each form's options
 * (after `-`); file names for operands and option values.
 */
export function bashCompletion(): string {
  const { words, valued } = completionTable();
  const cases = [...words]
    .map(([path, ws]) => {
      const subs = shellWords(ws.filter((w) => !w.startsWith('-')));
      const opts = shellWords(ws.filter((w) => w.startsWith('-')));
      return `      ${JSON.stringify(path)}) subs=${JSON.stringify(subs)} opts=${JSON.stringify(opts)} ;;`;
    })
    .join('\n');
  const takesValue = shellWords([...valued]);
  return `# bash completion for lcow (made by \`lcow completion bash\` from its own option table)
_lcow() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} path="" depth=0 i w subs="" opts=""
  case " ${takesValue} " in *" $prev "*) COMPREPLY=($(compgen -f -- "$cur")); return ;; esac
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    case " ${takesValue} " in *" $w "*) ((i++)); continue ;; esac
    [[ $w == -* ]] && continue
    if ((depth < 2)); then
      path=\${path:+$path }$w
      ((depth++))
    fi
  done
  while :; do
    case "$path" in
${cases}
      *) if [[ $path == *" "* ]]; then path=\${path% *}; continue; fi ;;
    esac
    break
  done
  # Past a command's last level, words are operands: files.
  if ((depth > 1)) && [[ $path != *" "* ]]; then subs=""; fi
  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -n $subs ]]; then COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o filenames -F _lcow lcow
`;
}

/** zsh: the bash function through zsh's bashcompinit (the same table, one implementation). */
export function zshCompletion(): string {
  return `#compdef lcow
# zsh completion for lcow (made by \`lcow completion zsh\`): the bash completion through bashcompinit.
autoload -U +X bashcompinit && bashcompinit
${bashCompletion()}`;
}

export const docsCommands = {
  man: {
    name: 'man',
    run: async (_form, p, io) => {
      const { version } = await import('../version.ts');
      const v = version().replace(/^lcow /, '');
      const name = p.operands[0];
      const dir = p.value('out-dir');
      if (dir === undefined) {
        io.out((name === undefined ? mainPage(v) : commandPage(name, v)).trimEnd());
        return 0;
      }
      if (name !== undefined) throw new DriverError('ERR_USAGE', 'lcow man: a COMMAND or --out-dir, not both');
      const { mkdir } = await import('node:fs/promises');
      const { writeFileDurable } = await import('@lcow/durable');
      const { join } = await import('node:path');
      await mkdir(dir, { recursive: true });
      const pages: [string, string][] = [['lcow.1', mainPage(v)]];
      for (const c of Object.keys(SPECS)) pages.push([`lcow-${c}.1`, commandPage(c, v)]);
      for (const [file, page] of pages) {
        await writeFileDurable(join(dir, file), page);
        io.out(join(dir, file));
      }
      return 0;
    },
  },
  completion: {
    name: 'completion',
    run: async (_form, p, io) => {
      const shell = p.operands[0];
      if (shell === 'bash') io.out(bashCompletion().trimEnd());
      else if (shell === 'zsh') io.out(zshCompletion().trimEnd());
      else throw new DriverError('ERR_USAGE', `lcow completion ${JSON.stringify(shell ?? '')}: bash or zsh`);
      return 0;
    },
  },
} satisfies Record<string, Command>;
