// moby's graph-driver suite against the inproc backend, which reads layers in process and cannot write:
// every layer is made with `applyDiff` from a tar that holds what moby's helpers would have written, and
// every check reads through `get` (the @lcow/ext4 reader behind a read-only union). No root needed.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { makeTar, tempDir, type TarSpec } from '@lcow/testkit';
import { LcowDriver, type Change } from '../src/index.ts';
import {
  checkChanges,
  checkFile,
  checkFileRemoved,
  checkManyFiles,
  checkManyLayers,
  randomContent,
  randomId,
  readDir,
  verifyBase,
  verifyFile,
} from './graphtest.ts';

let dir: { path: string; cleanup: () => Promise<void> };
let d: LcowDriver;
beforeAll(async () => {
  dir = await tempDir('lcow-graphtest-inproc-');
  d = await LcowDriver.init(dir.path, ['lcow.backend=inproc']);
});
afterAll(async () => {
  await d.cleanup();
  await dir.cleanup();
});

const T0 = 1_700_000_000;
const tar = (specs: TarSpec[]): Readable => Readable.from([Buffer.from(makeTar(specs))]);

async function layer(id: string, parent: string | null, specs: TarSpec[]): Promise<number> {
  await d.create(id, parent);
  return d.applyDiff(id, parent, tar(specs));
}

/** addManyFiles as tar entries. */
function manyFiles(count: number, seed: number, mtime = T0): TarSpec[] {
  const out: TarSpec[] = [];
  for (let i = 0; i < count; i += 100) {
    out.push({ path: `directory-${i}/`, type: 'dir', mode: 0o755, mtime });
    for (let j = 0; i + j < count && j < 100; j++)
      out.push({ path: `directory-${i}/file-${i + j}`, body: randomContent(64, seed + i + j), mode: 0o755, mtime });
  }
  return out;
}

const BASE_TAR: TarSpec[] = [
  { path: 'a subdir/', type: 'dir', mode: 0o1705, uid: 1, gid: 2, mtime: T0 },
  { path: 'a file', body: 'Some data', mode: 0o4222, mtime: T0 },
];

describe('graphtest on the inproc backend', () => {
  it('CreateEmpty, and writes are refused', async () => {
    await d.create('empty', null);
    expect(await d.exists('empty')).toBe(true);
    const fs = await d.get('empty');
    expect(fs.readOnly).toBe(true);
    await verifyFile(fs, '/', 'dir', 0o755, 0, 0);
    expect(await readDir(fs, '/')).toEqual([]);
    await expect(fs.writeFile('/x', 'y')).rejects.toMatchObject({ code: 'ERR_READ_ONLY' });
    await expect(fs.mkdir('/x')).rejects.toThrow(/mkdir \/x: the inproc backend is read-only/);
    await d.put('empty');
    await expect(d.put('empty')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
    await d.remove('empty');
  });

  it('CreateBase and CreateSnap', async () => {
    await layer('Base', null, BASE_TAR);
    await verifyBase(d, 'Base');
    await d.create('Snap', 'Base');
    await verifyBase(d, 'Snap');
    await d.remove('Snap');
    await d.remove('Base');
  });

  it('DeepLayerRead with 50 layers', { timeout: 600_000 }, async () => {
    // 51 conversions: inline here (the child process is exercised by every other test).
    process.env.LCOW_NOREEXEC = '1';
    onTestFinished(() => void delete process.env.LCOW_NOREEXEC);
    const base = randomId();
    await layer(base, null, [{ path: 'testfile.txt', body: 'test content' }]);
    let last = base;
    for (let i = 1; i <= 50; i++) {
      const next = randomId();
      await layer(next, last, [
        { path: 'top-id', body: next, mode: 0o755 },
        { path: `layer-${i}/`, type: 'dir', mode: 0o755 },
        { path: `layer-${i}/layer-id`, body: next, mode: 0o755 },
        { path: `layer-${i}/parent-id`, body: last, mode: 0o755 },
      ]);
      last = next;
    }
    await checkManyLayers(d, last, 50);
    await checkFile(d, last, 'testfile.txt', Buffer.from('test content'));
  });

  it('DiffApply with 10 files (diff against the parent, and the naive diff against nothing)', async () => {
    const [base, upper, diff, full] = [randomId(), randomId(), randomId(), randomId()];
    const deleted = Buffer.from('This file should get removed in upper!');
    await layer(base, null, [
      ...manyFiles(10, 3),
      { path: 'file-remove.txt', body: deleted, mode: 0o755 },
      { path: 'var/', type: 'dir', mode: 0o755 },
      { path: 'var/lib/', type: 'dir', mode: 0o755 },
    ]);
    await layer(upper, base, [
      ...manyFiles(10, 6, T0 + 5),
      { path: '.wh.file-remove.txt', body: '' },
      { path: 'var/', type: 'dir', mode: 0o755, mtime: T0 + 5 },
      { path: 'var/.wh.lib', body: '' },
    ]);
    const size = await d.diffSize(upper, null);
    expect(size).toBe(640); // the union's ten 64-byte files
    expect(await d.diffSize(upper, base)).toBe(640);

    await d.create(diff, base);
    await checkManyFiles(d, diff, 10, 3);
    await checkFile(d, diff, 'file-remove.txt', deleted);
    const chunks: Buffer[] = [];
    for await (const c of d.diff(upper, base)) chunks.push(c as Buffer);
    expect(await d.applyDiff(diff, base, Readable.from([Buffer.concat(chunks)]))).toBe(size);
    await checkManyFiles(d, diff, 10, 6);
    await checkFileRemoved(d, diff, 'file-remove.txt');
    await checkFileRemoved(d, diff, 'var/lib');

    // Against nothing: the whole union, which applied on nothing reads the same.
    const all: Buffer[] = [];
    for await (const c of d.diff(upper, null)) all.push(c as Buffer);
    await d.create(full, null);
    expect(await d.applyDiff(full, null, Readable.from([Buffer.concat(all)]))).toBe(size);
    await checkManyFiles(d, full, 10, 6);
    await checkFileRemoved(d, full, 'file-remove.txt');
    await checkFileRemoved(d, full, 'var/lib');
    expect(await d.changes(full, null)).toEqual(await d.changes(upper, null));
  });

  it('diffGetter reads one file of a layer by name: spaces and quotes too (the original built a shell line)', async () => {
    const id = randomId();
    await layer(id, null, [
      { path: 'with space', body: 'a' },
      { path: "it's", body: 'b' },
      { path: 'dir/"q"', body: 'c' },
    ]);
    const g = await d.diffGetter(id);
    try {
      for (const [name, want] of [
        ['with space', 'a'],
        ["it's", 'b'],
        ['dir/"q"', 'c'],
        ['/../with space', 'a'],
      ]) {
        const parts: Buffer[] = [];
        for await (const c of await g.get(name!)) parts.push(c as Buffer);
        expect(Buffer.concat(parts).toString(), name).toBe(want);
      }
      await expect(g.get('missing')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    } finally {
      await g.close();
    }
  });

  it('Changes', async () => {
    const [base, upper] = [randomId(), randomId()];
    await layer(base, null, manyFiles(20, 3));
    // changeManyFiles(upper, 20, 6) as a tar: j%3 == 0 rewritten, 1 added, 2 deleted.
    const specs: TarSpec[] = [{ path: 'directory-0/', type: 'dir', mode: 0o755, mtime: T0 + 9 }];
    const expected: Change[] = [{ path: '/directory-0', kind: 'modify' }];
    for (let j = 0; j < 20; j++) {
      if (j % 3 === 0) {
        specs.push({ path: `directory-0/file-${j}`, body: randomContent(64, 6 + j), mode: 0o755, mtime: T0 + 9 });
        expected.push({ path: `/directory-0/file-${j}`, kind: 'modify' });
      } else if (j % 3 === 1) {
        specs.push({ path: `directory-0/file-6-${j}`, body: randomContent(64, 6 + j), mode: 0o755, mtime: T0 + 9 });
        expected.push({ path: `/directory-0/file-6-${j}`, kind: 'add' });
      } else {
        specs.push({ path: `directory-0/.wh.file-${j}`, body: '' });
        expected.push({ path: `/directory-0/file-${j}`, kind: 'delete' });
      }
    }
    await layer(upper, base, specs);
    expect(expected).toHaveLength(21);
    checkChanges(expected, await d.changes(upper, base));
    // The naive comparison of the two unions finds the same.
    const top = randomId();
    await d.create(top, upper);
    checkChanges(expected, await d.changes(top, base));
  });
});
