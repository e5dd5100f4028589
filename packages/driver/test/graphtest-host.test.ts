// moby's graph-driver conformance suite, literally, against the host backend (loop devices, ext4 and
// overlayfs mounts): our driver implements what the original left as stubs, so every assertion applies,
// `applyDiff` size equal to `diffSize` included.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inCI, rootWithLoop, run, tempDir } from '@lcow/testkit';
import { LcowDriver } from '../src/index.ts';
import {
  addDirectory,
  addFile,
  addManyFiles,
  addManyLayers,
  changeManyFiles,
  checkChanges,
  checkFile,
  checkFileRemoved,
  checkManyFiles,
  checkManyLayers,
  createBase,
  randomId,
  readDir,
  removeAll,
  verifyBase,
  verifyFile,
} from './graphtest.ts';

const ready = rootWithLoop();
if (!ready && inCI) throw new Error('CI=true: the host-backend graphtest needs root with loop devices');
let dir: { path: string; cleanup: () => Promise<void> };
let d: LcowDriver;

beforeAll(async () => {
  if (!ready) return;
  dir = await tempDir('lcow-graphtest-');
  d = await LcowDriver.init(dir.path, ['lcow.backend=host']);
});
afterAll(async () => {
  if (!ready) return;
  await d.cleanup();
  const st = await d.status();
  expect(st.vms).toEqual([]);
  await dir.cleanup();
});

describe.skipIf(!ready)('graphtest on the host backend', () => {
  it('CreateEmpty', async () => {
    await d.create('empty', null);
    expect(await d.exists('empty')).toBe(true);
    const fs = await d.get('empty');
    await verifyFile(fs, '/', 'dir', 0o755, 0, 0);
    expect(await readDir(fs, '/')).toEqual([]);
    await d.put('empty');
    await d.remove('empty');
    expect(await d.exists('empty')).toBe(false);
  });

  it('CreateBase', async () => {
    await createBase(d, 'Base');
    await verifyBase(d, 'Base');
    await d.remove('Base');
  });

  it('CreateSnap', async () => {
    await createBase(d, 'Base');
    await d.create('Snap', 'Base');
    await verifyBase(d, 'Snap');
    await d.remove('Snap');
    await d.remove('Base');
  });

  it('DeepLayerRead with 50 layers', { timeout: 600_000 }, async () => {
    const base = randomId();
    await d.create(base, null);
    const content = Buffer.from('test content');
    await addFile(d, base, 'testfile.txt', content);
    const top = await addManyLayers(d, base, 50);
    await checkManyLayers(d, top, 50);
    await checkFile(d, top, 'testfile.txt', content);
  });

  it('DiffApply with 10 files', { timeout: 600_000 }, async () => {
    const base = randomId();
    const upper = randomId();
    const deleteFile = 'file-remove.txt';
    const deleteContent = Buffer.from('This file should get removed in upper!');
    const deleteDir = 'var/lib';
    await d.create(base, null);
    await addManyFiles(d, base, 10, 3);
    await addFile(d, base, deleteFile, deleteContent);
    await addDirectory(d, base, deleteDir);

    await d.create(upper, base);
    await addManyFiles(d, upper, 10, 6);
    await removeAll(d, upper, deleteFile, deleteDir);

    const diffSize = await d.diffSize(upper, null);

    const diff = randomId();
    await d.create(diff, base);
    await checkManyFiles(d, diff, 10, 3);
    await checkFile(d, diff, deleteFile, deleteContent);

    const chunks: Buffer[] = [];
    for await (const c of d.diff(upper, base)) chunks.push(c as Buffer);
    const applied = await d.applyDiff(diff, base, Readable.from([Buffer.concat(chunks)]));
    expect(applied, `Apply diff size different, got ${applied}, expected ${diffSize}`).toBe(diffSize);

    await checkManyFiles(d, diff, 10, 6);
    await checkFileRemoved(d, diff, deleteFile);
    await checkFileRemoved(d, diff, deleteDir);
  });

  it('Changes', { timeout: 600_000 }, async () => {
    const base = randomId();
    const upper = randomId();
    await d.create(base, null);
    await addManyFiles(d, base, 20, 3);
    await d.create(upper, base);
    const expected = await changeManyFiles(d, upper, 20, 6);
    expect(expected).toHaveLength(21);
    checkChanges(expected, await d.changes(upper, base));
  });

  it('SetQuota, as lcow.sandboxsize', { timeout: 600_000 }, async () => {
    await createBase(d, 'QuotaBase');
    await expect(d.createReadWrite('q19', 'QuotaBase', { storageOpt: { 'lcow.sandboxsize': '19' } })).rejects.toThrow(
      "lcowdriver: createreadwrite: id q19 'lcow.sandboxsize' option cannot be less than 20",
    );
    await expect(d.createReadWrite('qabc', 'QuotaBase', { storageOpt: { 'lcow.sandboxsize': 'abc' } })).rejects.toThrow(
      "lcowdriver: createreadwrite: id qabc failed to parse value 'abc' for 'lcow.sandboxsize'",
    );
    // A 20 GiB sandbox: half its size fits, its whole size cannot (moby's writeRandomFile on the host path;
    // fallocate allocates real blocks without writing them, so the test costs no 20 GiB of I/O).
    await d.createReadWrite('hostTest', 'QuotaBase', { storageOpt: { 'lcow.sandboxsize': '20' } });
    const fs = await d.get('hostTest');
    try {
      expect(fs.path).not.toBeNull();
      await run('fallocate', ['-l', String(10 * 2 ** 30), `${fs.path}/smallfile`]);
      expect((await fs.stat('/smallfile')).size).toBe(10 * 2 ** 30);
      const big = await run('fallocate', ['-l', String(20 * 2 ** 30), `${fs.path}/bigfile`]).then(
        () => 'fitted',
        (e: Error) => e.message,
      );
      expect(big).toMatch(/No space left on device|Disk quota exceeded/);
      await fs.removeAll('/bigfile');
      await fs.remove('/smallfile');
    } finally {
      await d.put('hostTest');
    }
  });
});

describe.skipIf(!ready)('diffSize of a sandbox with many files', () => {
  it('reads every file before its readers are closed (50 000 files: more inodes than the reader caches)', async () => {
    // Regression: diffSize returned the size walk's promise from inside its try, so the finally closed the
    // readers while the walk still ran; once the walk had to read inode tables again (past the reader's
    // caches, through the thread pool), every read hit a closed file — and a snapshotter asked for Usage
    // died of the unhandled rejection.
    const id = randomId();
    await d.createReadWrite(id, null);
    const fs = await d.get(id);
    const { mkdir, writeFile } = await import('node:fs/promises');
    let want = 0;
    for (let i = 0; i < 100; i++) {
      await mkdir(`${fs.path}/d${i}`);
      await Promise.all(
        Array.from({ length: 500 }, (_, j) => {
          want += `${i}-${j}\n`.length;
          return writeFile(`${fs.path}/d${i}/f${j}`, `${i}-${j}\n`);
        }),
      );
    }
    await d.put(id);
    try {
      expect(await d.diffSize(id, null)).toBe(want);
    } finally {
      await d.remove(id);
    }
  }, 300_000);
});
