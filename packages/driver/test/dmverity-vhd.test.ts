// Our `dmverity-vhd` against hcsshim's, command line by command line (dmverity-forms.ts): the same status,
// the same output lines (root hashes, "Layer VHD created at …", -v's debug lines), the same usage-error
// lines, help where it gives help. Against the recorded answers (fixtures/dmverity-forms.json, made by
// make-dmverity-golden.ts) always, and against the tool itself where ../shared/anchors has it. The VHDs it
// writes are checked byte for byte in image.test.ts; here, that they are there and have the layer's size.
import { spawnSync } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anchor, dockerSave, layerTars, tempDir } from '@lcow/testkit';
import { dmverityVhdMain } from '../src/cli/index.ts';
import { FORMS, runForm, spawnRunner, type Outcome, type Raw } from './dmverity-forms.ts';

const recorded = JSON.parse(await readFile(join(import.meta.dirname, 'fixtures/dmverity-forms.json'), 'utf8')) as {
  forms: (Outcome & { argv: string[] })[];
};
const theirs = anchor('dmverity-vhd');

/** Ours, in process: what `dmverity-vhd ARGV` prints on each stream, and its status. */
async function ours(argv: string[]): Promise<Raw> {
  let stdout = '';
  let stderr = '';
  const status = await dmverityVhdMain(argv, {
    out: (t) => (stdout += `${t}\n`),
    err: (t) => (stderr += `${t}\n`),
    progress: process.stderr,
    signal: new AbortController().signal,
  });
  return { status, stdout, stderr };
}

let dir: { path: string; cleanup: () => Promise<void> };
let paths: { archive: string; ref: string; out: string };
beforeAll(async () => {
  dir = await tempDir('lcow-dmverity-');
  paths = { archive: join(dir.path, 'seed1.tar'), ref: 'lcow/golden:1', out: join(dir.path, 'out') };
  // As make-dmverity-golden.ts builds it.
  await dockerSave(paths.archive, layerTars(1), 'lcow/golden:1', [true, false, false]);
});
afterAll(() => dir?.cleanup());

describe('dmverity-vhd: hcsshim’s command line, answered as hcsshim’s tool answers it', { timeout: 300_000 }, () => {
  it('covers every recorded form', () => {
    expect(recorded.forms.map((f) => f.argv)).toEqual(FORMS.map((f) => f.argv));
  });

  for (const [i, form] of FORMS.entries()) {
    it(`dmverity-vhd ${form.argv.join(' ') || '(no arguments)'}`, async () => {
      const got = await runForm(ours, form, paths);
      const { argv: _, ...want } = recorded.forms[i]!;
      expect(got).toEqual(want);
      if (theirs) expect(got).toEqual(await runForm(spawnRunner(theirs), form, paths));
    });
  }

  it('create: one VHD per layer, each a layer image with its tree and a footer', async () => {
    const names = (await readdir(join(paths.out, 'a'))).sort();
    expect(names).toHaveLength(3);
    for (const n of names) {
      expect(n).toMatch(/^[0-9a-f]{64}\.vhd$/);
      const s = await stat(join(paths.out, 'a', n));
      expect(s.size % 4096).toBe(512); // blocks of ext4 and tree, then the 512-byte VHD footer
    }
    expect((await readdir(join(paths.out, 'b', 'new'))).filter((n) => n.endsWith('.hash-dev.vhd'))).toHaveLength(3);
  });

  it('the installed bin: dmverity-vhd.js runs the same front end (built bundle)', async () => {
    const bin = resolve(import.meta.dirname, '..', 'dmverity-vhd.js');
    const built = await stat(resolve(import.meta.dirname, '..', 'dist', 'bin', 'main.js')).then(
      () => true,
      () => false,
    );
    if (!built && process.env.CI !== 'true') return; // pack.test.ts needs the build too; CI always has it
    const r = spawnSync(process.execPath, [bin, '--tarball', paths.archive, 'roothash', '-i', paths.ref], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(recorded.forms[0]!.stdout);
  });
});
