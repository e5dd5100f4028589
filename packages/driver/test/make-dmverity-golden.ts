// Records test/fixtures/dmverity-golden.json: the root hashes hcsshim's dmverity-vhd prints for the test
// images image.test.ts builds (testkit's layerTars, seeds 1 and 2, as docker-save archives), and
// test/fixtures/dmverity-forms.json: what it does for each command line of dmverity-forms.ts (status,
// output lines) on the seed 1 archive. Run on a machine with ../shared/anchors:
// node --conditions=@lcow/source --import tsx test/make-dmverity-golden.ts
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { dockerSave, layerTars } from '@lcow/testkit';
import { FORMS, runForm, spawnRunner } from './dmverity-forms.ts';

const anchor = resolve(import.meta.dirname, '../../../../shared/anchors/dmverity-vhd');
const dir = mkdtempSync(join(tmpdir(), 'lcow-golden-'));
const out: Record<string, { how: string; lines: string[] }> = {};
try {
  for (const seed of [1, 2]) {
    const tar = join(dir, `seed${seed}.tar`);
    await dockerSave(tar, layerTars(seed), `lcow/golden:${seed}`, [true, false, seed === 2]);
    const text = execFileSync(anchor, ['--tarball', tar, 'roothash', '-i', `lcow/golden:${seed}`]).toString();
    out[`seed${seed}`] = {
      how: `dmverity-vhd --tarball seed${seed}.tar roothash -i lcow/golden:${seed} (hcsshim's dmverity-vhd, ../shared/anchors, ${new Date().toISOString().slice(0, 10)})`,
      lines: text.trim().split('\n'),
    };
  }
  writeFileSync(join(import.meta.dirname, 'fixtures/dmverity-golden.json'), `${JSON.stringify(out, null, 2)}\n`);
  const paths = { archive: join(dir, 'seed1.tar'), ref: 'lcow/golden:1', out: join(dir, 'out') };
  const forms = [];
  for (const f of FORMS) forms.push({ argv: f.argv, ...(await runForm(spawnRunner(anchor), f, paths)) });
  writeFileSync(
    join(import.meta.dirname, 'fixtures/dmverity-forms.json'),
    `${JSON.stringify({ how: `hcsshim's dmverity-vhd (../shared/anchors), ${new Date().toISOString().slice(0, 10)}`, forms }, null, 2)}\n`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
