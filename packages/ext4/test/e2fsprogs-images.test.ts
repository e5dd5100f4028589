// e2fsprogs' own test images (most deliberately corrupt; fixtures/e2fsprogs/README.md): every one reads
// or fails with an Ext4Error, in bounded time; on the ones e2fsck calls clean, our listing of every
// directory equals debugfs's.
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oracle, tempDir } from '@lcow/testkit';
import { Ext4Error, Ext4Fs, memorySource } from '../src/index.ts';
import { debugfsListing, debugfsSafe, readerListing } from './helpers.ts';
import { exercise } from './hostile.ts';

const FIXTURES = join(import.meta.dirname, 'fixtures/e2fsprogs');
const hasDebugfs = oracle('debugfs');
let dir: { path: string; cleanup: () => Promise<void> };
let expected: Map<string, string>;

beforeAll(async () => {
  dir = await tempDir('lcow-e2fs-');
  const tsv = await readFile(join(FIXTURES, 'expected-e2fsck.tsv'), 'utf8');
  expected = new Map(
    tsv
      .trim()
      .split('\n')
      .map((l) => l.split('\t') as [string, string]),
  );
});
afterAll(() => dir?.cleanup());

describe('e2fsprogs test images', () => {
  it('every image: a result or an Ext4Error, never another error, within 10 s', async () => {
    const files = (await readdir(FIXTURES)).filter((f) => f.endsWith('.img.gz')).sort();
    expect(files.length).toBeGreaterThan(200);
    const tally: Record<string, number> = {};
    for (const f of files) {
      const bytes = new Uint8Array(gunzipSync(await readFile(join(FIXTURES, f))));
      for (const policy of ['strict', 'off'] as const) {
        const o = await exercise(bytes, policy, f);
        expect(o.ms, `${f} (${policy})`).toBeLessThan(10_000);
        tally[`${policy}:${o.result}`] = (tally[`${policy}:${o.result}`] ?? 0) + 1;
      }
    }
    console.log(`[e2fsprogs images] ${files.length} images × 2 checksum policies: ${JSON.stringify(tally)}`);
  }, 600_000);

  it.skipIf(!hasDebugfs)(
    'images e2fsck calls clean: every directory as debugfs lists it',
    async () => {
      const clean = [...expected].filter(([, s]) => s === '0').map(([f]) => f);
      let compared = 0;
      const refused: string[] = [];
      for (const f of clean) {
        const bytes = new Uint8Array(gunzipSync(await readFile(join(FIXTURES, f))));
        let fs: Ext4Fs;
        try {
          // 'warn': some "clean" images carry a checksum e2fsck fixes without counting it (f_bad_gdt_csum).
          fs = await Ext4Fs.open(memorySource(bytes, f), { checksums: 'warn' });
        } catch (e) {
          // Clean to e2fsck, but using what a reader must refuse (an external journal, journal replay).
          expect(e).toBeInstanceOf(Ext4Error);
          expect((e as Ext4Error).code, `${f}: ${(e as Error).message}`).toBe('ERR_EXT4_UNSUPPORTED');
          refused.push(f);
          continue;
        }
        const image = join(dir.path, f.replace(/\.gz$/, ''));
        await writeFile(image, bytes);
        const dirs: string[] = [];
        for await (const e of fs.walk()) if (e.stat.type === 'dir' && debugfsSafe(e.path)) dirs.push(e.path);
        const ours = await readerListing(fs, dirs);
        await fs.close();
        const theirs = await debugfsListing(image, dirs, dir.path);
        for (const d of dirs)
          expect(Object.fromEntries(ours.get(d)!), `${f} /${d}`).toEqual(Object.fromEntries(theirs.get(d) ?? []));
        compared++;
      }
      console.log(
        `[e2fsprogs images] ${compared} clean images compared with debugfs; refused: ${refused.join(', ') || 'none'}`,
      );
      expect(compared).toBeGreaterThan(20);
    },
    300_000,
  );
});
