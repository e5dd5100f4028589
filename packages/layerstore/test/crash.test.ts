// Crash safety, proven by killing: a child process runs create / commit / chain rewrite / remove in a
// loop and is SIGKILLed at random moments, many times over the same data root. After each kill the store
// is reopened and cleaned: every layer is complete or absent, every layerchain.json parses and names
// existing parents, every file holds exactly the bytes it was given, and nothing half-made remains.
import { spawn } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { tempDir } from '@lcow/testkit';
import { LayerStore } from '../src/index.ts';
import { contentOf } from './crash-child.ts';

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-crash-');
});
afterAll(() => dir?.cleanup());

/**
 * Starts the child, waits until its loop runs (or, with `afterFirst`, until it has finished one layer, so
 * that the kills land among finished work however loaded the machine is), lets it work `ms` more, then
 * SIGKILLs it.
 */
function runAndKill(root: string, run: number, ms: number, afterFirst: boolean): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, 'crash-child.ts'), root, String(run)],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    let armed = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const started = afterFirst
        ? out.split('\n').filter((l) => l && l !== 'ready').length > 0
        : out.includes('ready\n');
      if (!armed && started) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), ms);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code, signal) => {
      if (signal === 'SIGKILL') resolve(out.split('\n').filter((l) => l && l !== 'ready'));
      else reject(new Error(`child ended with ${code}: ${err.slice(0, 2000)}`));
    });
  });
}

it('SIGKILL at 40 random moments: every layer complete or absent, nothing half-made after cleanup', async () => {
  const root = join(dir.path, 'root');
  const found = { removing: 0, partial: 0, tempFiles: 0 };
  let completed = 0;
  let seed = 7;
  for (let run = 0; run < 40; run++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const done = await runAndKill(root, run, seed % 120, run % 2 === 1);
    completed += done.length;
    found.partial += (await readdir(join(root, 'tmp')).catch(() => [])).length;
    const s = await LayerStore.open(root); // reopening clears partial creations under tmp/ …
    const r = await s.cleanup(); // … and cleanup the rest
    found.removing += r.removing.length;
    found.tempFiles += r.tempFiles.length;
    const entries = await readdir(root);
    expect(entries.filter((e) => e.endsWith('-removing'))).toEqual([]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
    const ids = await s.list();
    for (const id of ids) {
      const files = (await readdir(join(root, id))).sort();
      expect(
        files.filter((f) => f.startsWith('.')),
        id,
      ).toEqual([]);
      // Never partial JSON: it parses, and names folders that exist.
      const chain = await s.chain(id);
      for (const p of chain) expect(entries, `${id} → ${p}`).toContain(p.split('/').at(-1));
      const i = Number(id.split('-')[1]);
      if (i % 3 === 0) expect(files, id).toContain('sandbox.vhdx'); // part of the atomic create
      for (const [f, kind] of [
        ['layer.vhd', 'layer'],
        ['sandbox.vhdx', 'sandbox'],
      ] as const) {
        if (files.includes(f))
          expect((await readFile(join(root, id, f))).equals(contentOf(id, kind)), `${id}/${f}`).toBe(true);
      }
    }
    // Every layer the child reported as done and kept is still there, whole.
    for (const id of done) {
      const i = Number(id.split('-')[1]);
      if (i % 2 === 0) expect(ids).toContain(id);
      else expect(ids).not.toContain(id);
    }
  }
  console.log(
    `[crash] 40 kills; ${completed} layers done between them; after the kills: ${found.partial} partial creations, ` +
      `${found.removing} interrupted removals, ${found.tempFiles} temporary files — all undone or finished`,
  );
  // The kills must have landed among finished work, not only before the first layer: every other run is
  // killed only after its first finished layer, whatever the machine's load.
  expect(completed).toBeGreaterThanOrEqual(20);
  expect(found.partial + found.removing + found.tempFiles).toBeGreaterThan(0);
}, 600_000);
