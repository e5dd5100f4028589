// The manual pages and completions come from the command table: every page renders through groff with no
// warning and names every option of its forms; bash completes commands, subcommands and options as typed.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { oracle } from '@lcow/testkit';
import { formOptions, type FormSpec } from '../args.ts';
import { SPECS } from '../registry.ts';
import { bashCompletion, commandPage, mainPage, zshCompletion } from './docs.ts';

describe('lcow man', () => {
  it.runIf(oracle('groff'))('every page renders with groff -ww and no warning, naming every option', () => {
    const pages: [string, string][] = [['lcow', mainPage('1.2.3')]];
    for (const name of Object.keys(SPECS)) pages.push([name, commandPage(name, '1.2.3')]);
    for (const [name, page] of pages) {
      const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z'], { input: page, encoding: 'utf8' });
      expect(r.stderr, name).toBe('');
      expect(r.status, name).toBe(0);
      if (name === 'lcow') continue;
      for (const f of Object.values(SPECS[name as keyof typeof SPECS].forms as Record<string, FormSpec>))
        for (const opt of Object.keys(formOptions(f)))
          expect(page, `${name} --${opt}`).toContain(`\\-\\-${opt.replace(/-/g, '\\-')}`);
    }
    const text = execFileSync('groff', ['-man', '-Tascii', '-P-c'], {
      input: commandPage('image', '1.2.3'),
    }).toString();
    expect(text).toMatch(/lcow\s+image\s+roothash\s+\[REF\]/);
    expect(() => commandPage('nonesuch', '1')).toThrow(expect.objectContaining({ code: 'ERR_USAGE' }));
  });
});

describe('lcow completion', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lcow-completion-'));
  const script = join(dir, 'lcow.bash');
  writeFileSync(script, bashCompletion());
  writeFileSync(join(dir, 'layer.tar'), '');

  /** What bash offers for the command line `words` (the last one being typed). */
  function complete(...words: string[]): string[] {
    const r = spawnSync(
      'bash',
      [
        '-c',
        `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _lcow; printf '%s\\n' "\${COMPREPLY[@]}"`,
        'bash',
        script,
        'lcow',
        ...words,
      ],
      { cwd: dir, encoding: 'utf8' },
    );
    expect(r.stderr).toBe('');
    return r.stdout.split('\n').filter(Boolean).sort();
  }

  it('bash: commands, subcommands, options of the form, files for operands and option values', () => {
    expect(complete('im')).toEqual(['image', 'import']);
    expect(complete('image', 'r')).toEqual(['roothash']);
    expect(complete('image', 'roothash', '--ta')).toEqual(['--tarball']);
    expect(complete('--root', '/x', 'tar2')).toEqual(['tar2ext4']);
    expect(complete('tar2ext4', '--lay')).toEqual(['--layout']);
    expect(complete('image', 'roothash', '--tarball', 'lay')).toEqual(['layer.tar']);
    expect(complete('import', 'lay')).toEqual(['layer.tar']);
    expect(complete('--ver')).toEqual(['--version']);
    expect(complete('')).toEqual(expect.arrayContaining(['man', 'completion', 'image', 'vhd']));
  });

  it.runIf(oracle('zsh'))('zsh: the script loads and defines the completion', () => {
    writeFileSync(join(dir, '_lcow'), zshCompletion());
    const r = spawnSync(
      'zsh',
      [
        '-f',
        '-c',
        `autoload -U compinit && compinit -u -D && source "$1" && (( $+functions[_lcow] )) && echo ok`,
        'zsh',
        join(dir, '_lcow'),
      ],
      { encoding: 'utf8' },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ok');
    rmSync(dir, { recursive: true, force: true });
  });
});
