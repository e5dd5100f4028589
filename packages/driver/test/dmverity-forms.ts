// The dmverity-vhd command lines our `dmverity-vhd` must answer as hcsshim's does: every argument form its
// help documents (short and long names, `-name=value`, the global flags az confcom passes), its help and
// usage errors, and failures. Shared by make-dmverity-golden.ts (which records what hcsshim's tool does) and
// dmverity-vhd.test.ts (which holds ours to it). ARCHIVE, REF and OUT stand for the test's own paths.
import { spawnSync } from 'node:child_process';

export interface Form {
  argv: string[];
  /** Help output: only its presence is compared (the text is each tool's own). */
  help?: boolean;
  /** Compare standard error's first line exactly (the usage errors' wording). */
  usageError?: boolean;
}

export const FORMS: Form[] = [
  { argv: ['--tarball', 'ARCHIVE', 'roothash', '-i', 'REF'] },
  { argv: ['-t', 'ARCHIVE', 'roothash', '--image', 'REF'] },
  { argv: ['--tarball=ARCHIVE', 'roothash', '--image=REF'] },
  { argv: ['-tarball', 'ARCHIVE', 'roothash', '-image', 'REF', 'ignored-operand'] },
  { argv: ['-b', '-t', 'ARCHIVE', 'roothash', '-i', 'REF'] },
  { argv: ['--buffered-reader', '--verbose', '-t', 'ARCHIVE', 'roothash', '-i', 'REF'] },
  { argv: ['-v', '-t', 'ARCHIVE', 'roothash', '-i', 'REF'] },
  { argv: ['-t', 'ARCHIVE', 'create', '-i', 'REF', '-o', 'OUT/a'] },
  { argv: ['-t', 'ARCHIVE', 'create', '--image', 'REF', '--out-dir', 'OUT/b/new', '--hdv'] },
  { argv: ['-b', '-t', 'ARCHIVE', 'create', '--hash-dev-vhd', '-i', 'REF', '-o=OUT/c'] },
  { argv: [], help: true },
  { argv: ['-h'], help: true },
  { argv: ['--help'], help: true },
  { argv: ['-v'], help: true },
  { argv: ['help'], help: true },
  { argv: ['help', 'roothash'], help: true },
  { argv: ['h', 'create'], help: true },
  { argv: ['roothash', '-h'], help: true },
  { argv: ['create', '--help'], help: true },
  { argv: ['roothash'], help: true, usageError: true },
  { argv: ['create', '-i', 'REF'], help: true, usageError: true },
  { argv: ['create'], help: true, usageError: true },
  { argv: ['-x'], help: true, usageError: true },
  { argv: ['roothash', '-x'], help: true, usageError: true },
  { argv: ['roothash', '-t', 'ARCHIVE', '-i', 'REF'], help: true, usageError: true },
  { argv: ['--tarball'], help: true, usageError: true },
  { argv: ['roothash', '-i'], help: true, usageError: true },
  { argv: ['bogus'], usageError: true },
  { argv: ['help', 'bogus'], usageError: true },
  { argv: ['-t', 'ARCHIVE', 'roothash', '-i', 'lcow/no-such:1'] },
  { argv: ['-t', 'ARCHIVE-missing', 'roothash', '-i', 'REF'] },
];

export interface Outcome {
  status: number | null;
  /** Standard output's lines with OUT put back (help: `["<help>"]`). */
  stdout: string[];
  /** Standard error's first line when the form compares it, else whether it said anything. */
  stderr: string | boolean;
}

/** What one run printed and returned. */
export interface Raw {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A runner that starts `cmd` (with `prefix` arguments first, e.g. a script) as a child process. */
export function spawnRunner(cmd: string, prefix: string[] = []): (argv: string[]) => Promise<Raw> {
  return async (argv) => {
    const r = spawnSync(cmd, [...prefix, ...argv], { encoding: 'utf8', timeout: 120_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
}

/** Runs `form` through `runner`, normalised for comparison (paths put back, help reduced to a mark). */
export async function runForm(
  runner: (argv: string[]) => Promise<Raw>,
  form: Form,
  paths: { archive: string; ref: string; out: string },
): Promise<Outcome> {
  const argv = form.argv.map((a) =>
    a.replace('ARCHIVE', paths.archive).replace('REF', paths.ref).replace('OUT', paths.out),
  );
  const r = await runner(argv);
  const out = r.stdout.trim();
  const stdout = form.help
    ? [out.startsWith('NAME:') || out.startsWith('Incorrect Usage') ? '<help>' : out]
    : out === ''
      ? []
      : out.split('\n').map((l) => l.replaceAll(paths.out, 'OUT'));
  const err = r.stderr.trim();
  return { status: r.status, stdout, stderr: form.usageError ? (err.split('\n')[0] ?? '') : err !== '' };
}
