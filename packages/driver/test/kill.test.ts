// Crash safety of the driver, proven by killing: a child runs applyDiff / createReadWrite / get+put /
// remove in a loop and is SIGKILLed at random moments. After each kill a fresh driver's init and cleanup
// must leave: no half-made layer visible (every layer folder is complete: a chain that parses, a
// layer.vhd the reader opens whose data matches its tar, or a sandbox that mounts), nothing committed
// lost (every layer the child reported applied is there unless its removal had begun), no temporary files,
// no -removing folders, and — on the host backend — no mount and no loop device left over.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inCI, rootWithLoop, run, tempDir } from '@lcow/testkit';
import { Ext4Fs } from '@lcow/ext4';
import { LcowDriver } from '../src/index.ts';
import { hostRunDir } from '../src/backends/host.ts';
import { layerTar } from './kill-child.ts';

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-kill-');
});
afterAll(() => dir?.cleanup());

/**
 * Starts the child, waits until its loop runs (or, with `afterFirst`, until it has committed something, so
 * that kills land among finished work however loaded the machine is), lets it work `ms` more, then kills it.
 */
function runAndKill(root: string, backend: string, n: number, ms: number, afterFirst: boolean): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--conditions=@lcow/source',
        '--import',
        'tsx',
        join(import.meta.dirname, 'kill-child.ts'),
        root,
        backend,
        String(n),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    let armed = false;
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const started = afterFirst ? /^(applied|rw) /m.test(out) : out.includes('ready\n');
      if (!armed && started) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), ms);
      }
    });
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('close', (code, signal) => {
      if (signal !== 'SIGKILL') return reject(new Error(`child ended by itself (${code}): ${err}`));
      resolve(out.split('\n').filter(Boolean));
    });
  });
}

/** Waits (up to 10 s) until no process names `root` on its command line. */
async function waitForOrphans(root: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const alive = (await readdir('/proc')).filter((p) => /^\d+$/.test(p));
    let found = false;
    for (const pid of alive) {
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmd.includes(root)) found = true;
    }
    if (!found) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`converter processes of ${root} still alive 10 s after their parent was killed`);
}

/** Mounts of this data root's run folder (other drivers on the machine may have their own). */
async function lcowMounts(root: string): Promise<string[]> {
  return (await run('findmnt', ['-rn', '-o', 'TARGET']))
    .split('\n')
    .filter((m) => m.startsWith(`${hostRunDir(root)}/`));
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

for (const backend of ['inproc', 'host'] as const) {
  const ready = backend === 'inproc' || rootWithLoop();
  describe.skipIf(!ready)(`SIGKILL during driver operations (${backend})`, () => {
    it('init + cleanup leave the data root consistent, every time', { timeout: 600_000 }, async () => {
      const root = join(dir.path, backend);
      const committed = new Set<string>();
      const removing = new Set<string>();
      const kills = inCI ? 8 : 12;
      const seen = { partial: 0, removing: 0, temp: 0, unmounted: 0 };
      const seed = Number(process.env.LCOW_TEST_SEED ?? Date.now() % 100_000);
      console.log(`[kill] ${backend}: seed ${seed} (LCOW_TEST_SEED to replay)`);
      let s = seed;
      const rand = (): number => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
      for (let k = 0; k < kills; k++) {
        const lines = await runAndKill(root, backend, k, 300 + Math.floor(rand() * 2500), k % 2 === 1);
        for (const l of lines) {
          const [what, id] = l.split(' ');
          if (what === 'applied' || what === 'rw') committed.add(id!);
          if (what === 'removing') removing.add(id!);
        }
        // Its converter child notices the death (its parent pid changes) and stops; wait for that, as a
        // restarted daemon would find it gone.
        await waitForOrphans(root);
        // What the kill left, before anything repairs it.
        const top = await readdir(root);
        seen.partial += (await readdir(join(root, 'tmp'))).length;
        seen.removing += top.filter((n) => n.endsWith('-removing')).length;
        for (const n of top)
          if (/^[LST]/.test(n) && !n.endsWith('-removing'))
            seen.temp += (await readdir(join(root, n))).filter((f) => f.startsWith('.')).length;
        if (backend === 'host') seen.unmounted += (await lcowMounts(root)).length;
        const d = await LcowDriver.init(root, [`lcow.backend=${backend}`]);
        await d.cleanup();
        // Nothing half-made remains.
        const names = await readdir(root);
        expect(names.filter((n) => n.endsWith('-removing'))).toEqual([]);
        expect(await readdir(join(root, 'tmp'))).toEqual([]);
        for (const id of await d.store.list()) {
          const info = await d.store.info(id);
          expect((await readdir(info.dir)).filter((f) => f.startsWith('.'))).toEqual([]);
          if (/^[LT]/.test(id)) expect(info.kind, id).toMatch(/^(layer|empty)$/);
          if (/^[LT]/.test(id) && info.kind === 'layer') {
            const fs = await Ext4Fs.open(info.file!);
            try {
              expect(sha(await fs.read('/data', 0, 3 << 20))).toBe(sha(layerTarData(id)));
              expect((await fs.readdir('/many')).length).toBe(300);
            } finally {
              await fs.close();
            }
          }
          if (id.startsWith('S')) expect(info.kind).toBe('sandbox');
        }
        // Nothing committed is lost.
        for (const id of committed) if (!removing.has(id)) expect(await d.exists(id), id).toBe(true);
        if (backend === 'host') {
          expect(
            await run('findmnt', ['-rn', '-o', 'TARGET']).then((t) =>
              t.split('\n').filter((m) => m.startsWith(`${hostRunDir(root)}/`)),
            ),
          ).toEqual([]);
          expect((await run('losetup', ['-a'])).split('\n').filter((l) => l.includes(root))).toEqual([]);
        }
        await d.close();
      }
      expect(committed.size).toBeGreaterThan(2);
      console.log(`${backend}: ${kills} kills, ${committed.size} layers applied; the kills left`, seen);
    });
  });
}

/** The `data` file of a layer's tar. */
function layerTarData(id: string): Uint8Array {
  const tar = layerTar(id);
  const size = parseInt(tar.toString('latin1', 124, 135), 8);
  return tar.subarray(512, 512 + size);
}
