import { mkdir, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from '@lcow/testkit';
import { KeyedLock, LayerStore, LayerStoreError } from './index.ts';

let dir: { path: string; cleanup: () => Promise<void> };
let root: string;
beforeEach(async () => {
  dir = await tempDir('lcow-store-');
  root = join(dir.path, 'lcow');
});
afterEach(() => dir.cleanup());

describe('LayerStore', () => {
  it('open makes the data root with cache/, scratch/ and tmp/, and deletes stale scratch disks', async () => {
    await mkdir(join(root, 'scratch'), { recursive: true });
    await writeFile(join(root, 'scratch', 'old-vm.vhdx'), 'stale');
    await LayerStore.open(root);
    expect((await readdir(root)).sort()).toEqual(['cache', 'scratch', 'tmp']);
    expect(await readdir(join(root, 'scratch'))).toEqual([]);
  });

  it('create writes layerchain.json as the original: null without a parent, parent folder then its chain', async () => {
    const s = await LayerStore.open(root);
    const base = await s.create('base', null);
    expect(await readFile(join(root, 'base', 'layerchain.json'), 'utf8')).toBe('null');
    expect(base).toMatchObject({ id: 'base', kind: 'empty', file: null, parents: [], parentIds: [] });
    await s.create('mid', 'base');
    const top = await s.create('top', 'mid');
    expect(JSON.parse(await readFile(join(root, 'top', 'layerchain.json'), 'utf8'))).toEqual([
      join(root, 'mid'),
      join(root, 'base'),
    ]);
    expect(top.parentIds).toEqual(['mid', 'base']);
    expect(await s.list()).toEqual(['base', 'mid', 'top']);
  });

  it('reads chains written as null, [] and arrays; a corrupt one is ERR_LAYER_CHAIN_CORRUPT naming the file', async () => {
    const s = await LayerStore.open(root);
    await s.create('a', null);
    await writeFile(join(root, 'a', 'layerchain.json'), '[]');
    expect(await s.chain('a')).toEqual([]);
    await writeFile(join(root, 'a', 'layerchain.json'), '["/x/y"');
    await expect(s.chain('a')).rejects.toMatchObject({
      code: 'ERR_LAYER_CHAIN_CORRUPT',
      message: expect.stringContaining(join(root, 'a', 'layerchain.json')),
    });
    await expect(s.create('b', 'a')).rejects.toMatchObject({ code: 'ERR_LAYER_CHAIN_CORRUPT' });
    expect(await s.exists('b')).toBe(false);
  });

  it('refuses bad ids, missing parents and existing ids; nothing is left behind', async () => {
    const s = await LayerStore.open(root);
    await expect(s.create('../x', null)).rejects.toMatchObject({ code: 'ERR_INVALID_LAYER_ID' });
    await expect(s.create('tmp', null)).rejects.toMatchObject({ code: 'ERR_INVALID_LAYER_ID' });
    await expect(s.create('c', 'nope')).rejects.toMatchObject({
      code: 'ERR_LAYER_NOT_FOUND',
      message: expect.stringMatching(/parent layer nope of c/),
    });
    await s.create('c', null);
    await expect(s.create('c', null)).rejects.toMatchObject({ code: 'ERR_LAYER_EXISTS' });
    await expect(s.info('zzz')).rejects.toBeInstanceOf(LayerStoreError);
    await expect(s.remove('zzz')).rejects.toMatchObject({ code: 'ERR_LAYER_NOT_FOUND' });
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('a failing populate leaves no folder; a successful one appears whole', async () => {
    const s = await LayerStore.open(root);
    await expect(
      s.create('sb', null, async (d) => {
        await writeFile(join(d, 'sandbox.vhdx'), 'half');
        throw new Error('mkfs failed');
      }),
    ).rejects.toThrow('mkfs failed');
    expect(await s.exists('sb')).toBe(false);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
    const info = await s.create('sb', null, (d) => writeFile(join(d, 'sandbox.vhdx'), 'x'.repeat(100)));
    expect(info).toMatchObject({ kind: 'sandbox', size: 100, file: join(root, 'sb', 'sandbox.vhdx') });
  });

  it('commitFile replaces atomically; layer.vhd wins over sandbox.vhdx as in the original', async () => {
    const s = await LayerStore.open(root);
    await s.create('l', null, (d) => writeFile(join(d, 'sandbox.vhdx'), 'sandbox'));
    await expect(
      s.commitFile('l', 'layer.vhd', async (tmp) => {
        await writeFile(tmp, 'partial');
        throw new Error('convert failed');
      }),
    ).rejects.toThrow('convert failed');
    expect((await s.info('l')).kind).toBe('sandbox');
    expect((await readdir(join(root, 'l'))).sort()).toEqual(['layerchain.json', 'sandbox.vhdx']);
    await s.commitFile('l', 'layer.vhd', (tmp) => writeFile(tmp, 'layer!'));
    expect(await s.info('l')).toMatchObject({ kind: 'layer', size: 6 });
    await expect(s.commitFile('l', '../evil', async () => {})).rejects.toBeInstanceOf(LayerStoreError);
  });

  it('remove renames to <id>-removing then deletes; cleanup finishes interrupted removals and temp files', async () => {
    const s = await LayerStore.open(root);
    await s.create('gone', null);
    await s.remove('gone');
    expect(await readdir(root)).not.toContain('gone-removing');
    expect(await s.exists('gone')).toBe(false);
    // What a crash leaves: a -removing folder, a partial creation, a temporary file in a layer.
    await s.create('kept', null);
    await s.create('half', null);
    await rename(join(root, 'half'), join(root, 'half-removing'));
    await mkdir(join(root, 'tmp', 'new-0123456789abcdef'));
    await writeFile(join(root, 'kept', '.layer.vhd.0123456789ab.tmp'), 'x');
    expect(await s.list()).toEqual(['kept']);
    const r = await s.cleanup();
    expect(r).toEqual({
      removing: ['half-removing'],
      partial: ['new-0123456789abcdef'],
      tempFiles: [join('kept', '.layer.vhd.0123456789ab.tmp')],
    });
    expect((await readdir(root)).sort()).toEqual(['cache', 'kept', 'scratch', 'tmp']);
    expect(await readdir(join(root, 'kept'))).toEqual(['layerchain.json']);
  });

  it('a background remove is durable at once, its deletion awaited by settled() and by a create of the same id', async () => {
    const s = await LayerStore.open(root);
    for (let i = 0; i < 3; i++) {
      await s.create('again', null);
      await mkdir(join(root, 'again', 'many'));
      for (let f = 0; f < 200; f++) await writeFile(join(root, 'again', 'many', `f${f}`), 'x');
      await s.remove('again', { background: true });
      // Gone for every reader the moment remove returns, whether or not its folder is deleted yet.
      expect(await s.exists('again')).toBe(false);
      expect(await s.list()).toEqual([]);
    }
    await s.settled();
    expect((await readdir(root)).sort()).toEqual(['cache', 'scratch', 'tmp']);
    // Another process's interrupted removal of the id is finished by the next create, not refused.
    await mkdir(join(root, 'other-removing', 'x'), { recursive: true });
    await s.create('other', null);
    expect((await readdir(root)).sort()).toEqual(['cache', 'other', 'scratch', 'tmp']);
  });
  it('operations on one id are serialised; different ids run in parallel', async () => {
    const s = await LayerStore.open(root);
    await s.create('p', null);
    const log: string[] = [];
    const slow = (tag: string, ms: number) => async (tmp: string) => {
      log.push(`${tag}+`);
      await new Promise((r) => setTimeout(r, ms));
      await writeFile(tmp, tag);
      log.push(`${tag}-`);
    };
    await Promise.all([s.commitFile('p', 'layer.vhd', slow('a', 30)), s.commitFile('p', 'layer.vhd', slow('b', 1))]);
    expect(log).toEqual(['a+', 'a-', 'b+', 'b-']);
    expect(await readFile(join(root, 'p', 'layer.vhd'), 'utf8')).toBe('b');
    // Different ids overlap: every populate has started before any of them ends (no wall-clock bound).
    const events: string[] = [];
    let started = 0;
    let release!: () => void;
    const allIn = new Promise<void>((r) => (release = r));
    await Promise.all(
      ['q1', 'q2', 'q3'].map((id) =>
        s.create(id, null, async () => {
          events.push(`${id}+`);
          if (++started === 3) release();
          await allIn;
          events.push(`${id}-`);
        }),
      ),
    );
    expect(events.slice(0, 3).every((e) => e.endsWith('+'))).toBe(true);
    expect((await stat(join(root, 'q3'))).isDirectory()).toBe(true);
  });
});

describe('KeyedLock', () => {
  it('a failing holder releases the lock; the map empties when idle', async () => {
    const l = new KeyedLock();
    await expect(
      l.run('k', async () => {
        throw new Error('x');
      }),
    ).rejects.toThrow('x');
    expect(await l.run('k', async () => 7)).toBe(7);
    expect(l.busy).toEqual([]);
  });
});
