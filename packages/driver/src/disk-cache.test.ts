// Sandboxes made ahead of need: taken by a rename, made again after, each whole (e2fsck, qemu-img), never
// taken twice when several takers race, and a killed maker's temporary file swept.
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkfs } from '@lcow/ext4';
import { oracle, run, tempDir } from '@lcow/testkit';
import { SpareSandboxes } from './disk-cache.ts';

const MiB = 2 ** 20;
const makeSmall = async (path: string, signal: AbortSignal): Promise<void> =>
  void (await mkfs(path, { size: 64 * MiB, format: 'vhdx', vhdxType: 'fixed', overwrite: true, signal }));

async function settle(s: SpareSandboxes, n: number): Promise<void> {
  for (let i = 0; i < 200 && (await s.ready()).length < n; i++) await new Promise((r) => setTimeout(r, 25));
}

describe('SpareSandboxes', () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    dir = await tempDir('lcow-spares-');
  });
  afterAll(() => dir?.cleanup());

  it('keeps `keep` spares; a take is a rename, and the next is made once takes pause', async () => {
    const spareDir = join(dir.path, 'a', 'spare');
    const prepared: string[] = [];
    const s = new SpareSandboxes(spareDir, '1g-fixed', 2, makeSmall, async (p) => void prepared.push(p));
    s.fill();
    await settle(s, 2);
    const before = await s.ready();
    expect(before).toHaveLength(2);
    expect(prepared.sort()).toEqual([...before].sort());
    const dest = join(dir.path, 'a', 'sandbox.vhdx');
    expect(await s.take(dest)).toBe(true);
    // Taken by rename: the file that was ready is the one now in place, nothing is made while the caller waits.
    expect(await s.ready()).toHaveLength(1);
    expect(s.counts).toEqual({ taken: 1, made: 2 });
    if (oracle('qemu-img')) expect(await run('qemu-img', ['check', '-f', 'vhdx', dest])).toMatch(/No errors/);
    await settle(s, 2);
    expect(s.counts.made).toBe(3);
    // Only whole spares have names of this kind: no temporary file left beside them.
    expect((await readdir(spareDir)).filter((n) => n.startsWith('.'))).toEqual([]);
    await s.close();
  });

  it('several takers racing on one folder: every spare is taken once; the losers make their own', async () => {
    const spareDir = join(dir.path, 'b', 'spare');
    const filler = new SpareSandboxes(spareDir, 'k', 3, makeSmall);
    filler.fill();
    await settle(filler, 3);
    await filler.close();
    const takers = Array.from({ length: 6 }, () => new SpareSandboxes(spareDir, 'k', 0, makeSmall));
    await mkdir(join(dir.path, 'b', 'out'));
    const got = await Promise.all(takers.map((t, i) => t.take(join(dir.path, 'b', 'out', `s${i}.vhdx`))));
    expect(got.filter(Boolean)).toHaveLength(3);
    expect(await readdir(join(dir.path, 'b', 'out'))).toHaveLength(3);
    await Promise.all(takers.map((t) => t.close()));
  });

  it('another kind is never taken; a dead maker’s temporary file is swept; close stops the filler', async () => {
    const spareDir = join(dir.path, 'c', 'spare');
    await mkdir(spareDir, { recursive: true });
    await writeFile(join(spareDir, '20g-fixed-0123456789abcdef.vhdx'), 'another size');
    // The name a killed process (pid 2^22 + 1 is above Linux's pid_max) leaves while it makes a spare.
    const dead = join(spareDir, `.1g-fixed-aaaa.vhdx-o${2 ** 22 + 1}.1-0011223344556677.tmp`);
    await writeFile(dead, 'half a disk');
    // A link under a spare's name (to a file outside) is not a spare: never moved into a layer.
    await symlink('/etc/passwd', join(spareDir, '1g-fixed-00000000000000ff.vhdx'));
    const s = new SpareSandboxes(spareDir, '1g-fixed', 1, makeSmall);
    expect(await s.take(join(dir.path, 'c', 'x.vhdx'))).toBe(false);
    s.fill();
    await settle(s, 1);
    const names = (await readdir(spareDir)).sort();
    expect(names).toHaveLength(3);
    expect(names).toContain('20g-fixed-0123456789abcdef.vhdx');
    expect(names).toContain('1g-fixed-00000000000000ff.vhdx');
    expect(names.some((n) => n.startsWith('1g-fixed-'))).toBe(true);
    await s.close();
    s.fill(); // closed: starts nothing
    expect(s.counts.made).toBe(1);
  });
});
