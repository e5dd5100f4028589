// Regenerates golden.json with hcsshim's converter (../shared/anchors/hcsshim-tar2ext4, hcsshim main of
// November 2026): for every case tar and flag set, the sha256 of the ext4 image (or its error) and the
// `-digest` root digest. A refusal is recorded as "error: " and hcsshim's reason, so the tests can check that
// ours refuses the same entry for the same reason. Run: node --conditions=@lcow/source --import tsx test/hcsshim/make-golden.ts
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CASES, FLAG_SETS, caseTar } from './cases.ts';

/** "error: " and the last part of hcsshim's message (the entry and the reason, without its call chain). */
function refusal(e: unknown): string {
  const text = String((e as { stderr?: Buffer }).stderr ?? e).trim();
  const parts = text.split(': ');
  return `error: ${parts.slice(-2).join(': ')}`;
}

const anchor = resolve(import.meta.dirname, '../../../../../shared/anchors/hcsshim-tar2ext4');
const dir = mkdtempSync(join(tmpdir(), 'lcow-golden-'));
const golden: Record<string, { images: Record<string, string>; digest: string }> = {};
try {
  for (const name of Object.keys(CASES)) {
    const tar = join(dir, `${name}.tar`);
    writeFileSync(tar, caseTar(name));
    const images: Record<string, string> = {};
    for (const { flags } of FLAG_SETS) {
      const out = join(dir, 'out.img');
      try {
        execFileSync(anchor, ['-i', tar, '-o', out, ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
        images[flags.join(' ')] = createHash('sha256').update(readFileSync(out)).digest('hex');
      } catch (e) {
        images[flags.join(' ')] = refusal(e);
      }
      rmSync(out, { force: true });
    }
    let digest: string;
    try {
      digest = execFileSync(anchor, ['-i', tar, '-digest'], { stdio: ['ignore', 'pipe', 'pipe'] })
        .toString()
        .trim();
    } catch (e) {
      digest = refusal(e);
    }
    golden[name] = { images, digest };
    console.error(name, digest);
  }
  writeFileSync(join(import.meta.dirname, 'golden.json'), `${JSON.stringify(golden, null, 2)}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
