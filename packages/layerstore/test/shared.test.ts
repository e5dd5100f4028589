// The data root shared by several processes: cross-process locks that die with their holder, leftovers
// removed only when their owner is gone, links inside the root refused.
import { spawn } from 'node:child_process';
import { mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { tempDir } from '@lcow/testkit';
import { HostLock, LayerStore, MAX_CHAIN_DEPTH, SharedKeyedLock } from '../src/index.ts';

let dir: { path: string; cleanup: () => Promise<void> };
let root: string;
beforeEach(async () => {
  dir = await tempDir('lcow-shared-');
  root = join(dir.path, 'root');
});
afterEach(() => dir.cleanup());

/** A child that holds `key` until killed; resolves once it holds it. */
function holder(key: string): Promise<{ kill: () => Promise<void> }> {
  const child = spawn(
    process.execPath,
    ['--conditions=@lcow/source', '--import', 'tsx', join(import.meta.dirname, 'lock-child.ts'), key],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.once('data', () =>
      resolve({
        kill: () =>
          new Promise<void>((r) => {
            child.once('exit', () => r());
            child.kill('SIGKILL');
          }),
      }),
    );
  });
}

it.runIf(process.platform === 'linux')(
  "a layer locked by another process: this one's remove waits for it, and goes on once it is gone",
  async () => {
    const store = await LayerStore.open(root);
    await store.create('busy', null);
    const child = spawn(
      process.execPath,
      ['--conditions=@lcow/source', '--import', 'tsx', join(import.meta.dirname, 'layer-lock-child.ts'), root, 'busy'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      child.on('error', reject);
      child.stdout.once('data', () => resolve());
    });
    let removed = false;
    const removing = store.remove('busy').then(() => (removed = true));
    await new Promise((r) => setTimeout(r, 500));
    // Still there, untouched, while the other process holds it (the rename would otherwise hide the race).
    expect(removed).toBe(false);
    expect(await store.exists('busy')).toBe(true);
    expect(await readdir(root)).toContain('busy');
    await new Promise<void>((r) => {
      child.once('exit', () => r());
      child.kill('SIGKILL');
    });
    await removing;
    expect(await store.exists('busy')).toBe(false);
  },
);

it.runIf(process.platform === 'linux')(
  'a HostLock held by another process waits, and is free the moment that process dies',
  async () => {
    const key = `test-${process.pid}-${Date.now()}`;
    const other = await holder(key);
    const lock = new HostLock(key);
    expect(lock.crossProcess).toBe(true);
    expect(await lock.tryAcquire()).toBeNull();
    const waiting = lock.acquire();
    let got = false;
    void waiting.then(() => (got = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toBe(false);
    await other.kill(); // SIGKILL: nothing released it but the kernel
    const release = await waiting;
    expect(await new HostLock(key).tryAcquire()).toBeNull(); // held by us now
    await release();
    const again = await new HostLock(key).tryAcquire();
    expect(again).not.toBeNull();
    await again!();
  },
);

it('SharedKeyedLock is re-entrant within one call chain and serialises separate ones', async () => {
  const l = new SharedKeyedLock(root);
  const log: string[] = [];
  await l.run('k', async () => {
    log.push('outer');
    await l.run('k', async () => void log.push('inner')); // would deadlock if not re-entrant
  });
  const slow = (tag: string) =>
    l.run('k', async () => {
      log.push(`${tag}+`);
      await new Promise((r) => setTimeout(r, 20));
      log.push(`${tag}-`);
    });
  await Promise.all([slow('a'), slow('b')]);
  expect(log).toEqual(['outer', 'inner', 'a+', 'a-', 'b+', 'b-']);
});

it("open and cleanup remove what dead processes left, never a live process's work", async () => {
  const store = await LayerStore.open(root);
  await store.create('kept', null);
  // A process that has exited: its pid and start time name nothing alive any more.
  const dead = await new Promise<number>((resolve) => {
    const c = spawn(process.execPath, ['-e', '0']);
    c.on('exit', () => resolve(c.pid!));
  });
  const me = (await import('../src/owner.ts')).ownerToken();
  await mkdir(join(root, 'tmp', `new-o${me}-aaaa`));
  await mkdir(join(root, 'tmp', `new-o${dead}.1-bbbb`));
  await writeFile(join(root, 'kept', `.layer.vhd-o${me}-cccc.tmp`), 'mine, in flight');
  await writeFile(join(root, 'kept', `.layer.vhd-o${dead}.1-dddd.tmp`), 'orphan');
  await LayerStore.open(root); // another process opening the root
  expect((await readdir(join(root, 'tmp'))).sort()).toEqual([`new-o${me}-aaaa`]);
  const report = await store.cleanup();
  expect(report.tempFiles).toEqual([join('kept', `.layer.vhd-o${dead}.1-dddd.tmp`)]);
  expect((await readdir(join(root, 'kept'))).sort()).toEqual([`.layer.vhd-o${me}-cccc.tmp`, 'layerchain.json']);
});

it('links inside the data root, chains out of it or too deep: typed errors, nothing followed or created', async () => {
  const outside = join(dir.path, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, 'precious'), 'x');
  await mkdir(root);
  await symlink(outside, join(root, 'tmp'));
  await expect(LayerStore.open(root)).rejects.toMatchObject({
    code: 'ERR_DATA_ROOT',
    message: expect.stringContaining('symbolic link'),
  });
  expect(await readdir(outside)).toEqual(['precious']);
  await rm(root, { recursive: true });
  const s = await LayerStore.open(root);
  await s.create('a', null);
  await writeFile(join(root, 'a', 'layerchain.json'), JSON.stringify([outside]));
  await expect(s.info('a')).rejects.toMatchObject({
    code: 'ERR_LAYER_CHAIN_CORRUPT',
    message: expect.stringContaining('not a layer folder'),
  });
  await writeFile(join(root, 'a', 'layerchain.json'), 'null');
  await symlink(outside, join(root, 'b'));
  await expect(s.info('b')).rejects.toMatchObject({ code: 'ERR_LAYER_CORRUPT' });
  await expect(s.create('b', null)).rejects.toMatchObject({ code: 'ERR_LAYER_CORRUPT' });
  await s.remove('b'); // removes the link, not what it points to
  expect(await readdir(outside)).toEqual(['precious']);
  let parent = 'a';
  for (let i = 0; i < MAX_CHAIN_DEPTH; i++) {
    await s.create(`l${i}`, parent);
    parent = `l${i}`;
  }
  await expect(s.create('over', parent)).rejects.toMatchObject({ code: 'ERR_CHAIN_TOO_DEEP' });
  expect(await s.exists('over')).toBe(false);
});
