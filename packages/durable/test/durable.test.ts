// The durable-write primitive: all or nothing, never through a planted symlink, no temporary file left on
// any failure, and the system calls in the order that makes it crash-safe (seen by strace).
import { spawn } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oracle, tempDir } from '@lcow/testkit';
import { DurableError, DurableFile, publishFile, tempPathFor, writeFileDurable } from '../src/index.ts';

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-durable-');
});
afterAll(() => dir?.cleanup());

const hidden = async (d: string): Promise<string[]> => (await readdir(d)).filter((f) => f.startsWith('.'));

describe('writeFileDurable', () => {
  it('writes, replaces, streams; the mode is the one asked; no temporary file stays', async () => {
    const d = join(dir.path, 'w');
    await mkdir(d);
    const p = join(d, 'f');
    await writeFileDurable(p, 'one');
    await writeFileDurable(p, Buffer.from('two'), { mode: 0o600 });
    expect(await readFile(p, 'utf8')).toBe('two');
    expect((await stat(p)).mode & 0o777).toBe(0o600);
    await writeFileDurable(p, Readable.from([Buffer.from('th'), Buffer.from('ree')]));
    expect(await readFile(p, 'utf8')).toBe('three');
    expect(await hidden(d)).toEqual([]);
  });

  it('a failing stream or an abort leaves the old content and no temporary file', async () => {
    const d = join(dir.path, 'fail');
    await mkdir(d);
    const p = join(d, 'f');
    await writeFile(p, 'old');
    async function* broken(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('new');
      throw new Error('source failed');
    }
    await expect(writeFileDurable(p, broken())).rejects.toThrow('source failed');
    const ac = new AbortController();
    ac.abort();
    await expect(writeFileDurable(p, 'new', { signal: ac.signal })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(await readFile(p, 'utf8')).toBe('old');
    expect(await hidden(d)).toEqual([]);
  });

  it('overwrite: false publishes only a new name (ERR_EXISTS otherwise, the old file kept)', async () => {
    const d = join(dir.path, 'noclobber');
    await mkdir(d);
    const p = join(d, 'f');
    await writeFileDurable(p, 'first', { overwrite: false });
    const e = await writeFileDurable(p, 'second', { overwrite: false }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(DurableError);
    expect(e).toMatchObject({ code: 'ERR_EXISTS', message: expect.stringContaining(p) });
    expect(await readFile(p, 'utf8')).toBe('first');
    expect(await hidden(d)).toEqual([]);
  });

  it('never writes through a symlink planted at the temporary name', async () => {
    const d = join(dir.path, 'planted');
    await mkdir(d);
    const victim = join(dir.path, 'victim');
    await writeFile(victim, 'untouched');
    const tempPath = tempPathFor(join(d, 'f'));
    await symlink(victim, tempPath);
    await expect(writeFileDurable(join(d, 'f'), 'x', { tempPath })).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(victim, 'utf8')).toBe('untouched');
    expect((await lstat(tempPath)).isSymbolicLink()).toBe(true);
  });

  it('a file is committed or discarded once', async () => {
    const p = join(dir.path, 'once');
    const f = await DurableFile.create(p);
    await f.handle.write(Buffer.from('x'));
    await f.commit();
    await expect(f.commit()).rejects.toMatchObject({ code: 'ERR_CLOSED' });
    await f.discard(); // after a commit: nothing to do, the file stays
    expect(await readFile(p, 'utf8')).toBe('x');
    const g = await DurableFile.create(join(dir.path, 'dropped'));
    await g.discard();
    await g.discard();
    await expect(g.commit()).rejects.toMatchObject({ code: 'ERR_CLOSED' });
    await expect(stat(join(dir.path, 'dropped'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe.skipIf(!oracle('strace'))('crash safety, as the kernel sees it', () => {
  it('exclusive no-follow create, fsync of the file, rename, fsync of the folder: in that order', async () => {
    const d = join(dir.path, 'traced');
    await mkdir(d);
    const log = join(dir.path, 'strace.log');
    const code = await new Promise<number | null>((resolve, reject) => {
      const c = spawn(
        'strace',
        ['-f', '-y', '-o', log, '-e', 'trace=openat,fsync,rename,renameat,renameat2', process.execPath]
          .concat(['--conditions=@lcow/source', '--import', 'tsx', join(import.meta.dirname, 'write-child.ts')])
          .concat([join(d, 'f'), 'traced']),
        { stdio: 'inherit' },
      );
      c.on('error', reject).on('close', resolve);
    });
    expect(code).toBe(0);
    const lines = (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes(d));
    const step = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    const created = step(/openat\(.*\/\.f-p\d+-[0-9a-f]+\.tmp", O_RDWR\|O_CREAT\|O_EXCL\|O_NOFOLLOW/);
    const synced = step(/fsync\(\d+<.*\/\.f-p\d+-[0-9a-f]+\.tmp>\)/);
    const renamed = step(/rename(at2?)?\(.*\.tmp", .*\/f"/);
    const dirOpened = step(new RegExp(`openat\\(.*"${d}", O_RDONLY\\|.*O_DIRECTORY`));
    const dirSynced = step(new RegExp(`fsync\\(\\d+<${d}>\\)`));
    expect(
      [created, synced, renamed, dirOpened, dirSynced].every((i) => i >= 0),
      lines.join('\n'),
    ).toBe(true);
    expect(created).toBeLessThan(synced);
    expect(synced).toBeLessThan(renamed);
    expect(renamed).toBeLessThan(dirSynced);
    expect(await readFile(join(d, 'f'), 'utf8')).toBe('traced');
  });
});

describe.skipIf(!oracle('strace'))('publishFile, as the kernel sees it', () => {
  it('fsync of the file, rename, then fsync of the folder', async () => {
    const d = join(dir.path, 'published');
    await mkdir(d);
    const log = join(dir.path, 'strace-publish.log');
    const code = await new Promise<number | null>((resolve, reject) => {
      const c = spawn(
        'strace',
        ['-f', '-y', '-o', log, '-e', 'trace=openat,fsync,rename,renameat,renameat2,link,linkat', process.execPath]
          .concat(['--conditions=@lcow/source', '--import', 'tsx', join(import.meta.dirname, 'write-child.ts')])
          .concat([join(d, 'f'), 'published', 'publish']),
        { stdio: 'inherit' },
      );
      c.on('error', reject).on('close', resolve);
    });
    expect(code).toBe(0);
    const lines = (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes(d));
    const step = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    const synced = step(/fsync\(\d+<.*\/f\.staged>\)/);
    const placed = step(/(rename|link)(at2?)?\(.*f\.staged", .*\/f"/);
    const dirSynced = step(new RegExp(`fsync\\(\\d+<${d}>\\)`));
    expect(
      [synced, placed, dirSynced].every((i) => i >= 0),
      lines.join('\n'),
    ).toBe(true);
    expect(synced).toBeLessThan(placed);
    expect(placed).toBeLessThan(dirSynced);
    expect(await readFile(join(d, 'f'), 'utf8')).toBe('published');
  });
});

describe('publishFile', () => {
  it('puts a file another writer made in place; refuses an existing target without overwrite', async () => {
    const d = join(dir.path, 'publish');
    await mkdir(d);
    const tmp = tempPathFor(join(d, 'f'));
    await writeFile(tmp, 'made elsewhere');
    await publishFile(tmp, join(d, 'f'));
    expect(await readFile(join(d, 'f'), 'utf8')).toBe('made elsewhere');
    const again = tempPathFor(join(d, 'f'));
    await writeFile(again, 'second');
    await expect(publishFile(again, join(d, 'f'), { overwrite: false })).rejects.toMatchObject({ code: 'ERR_EXISTS' });
    expect(await readFile(join(d, 'f'), 'utf8')).toBe('made elsewhere');
    expect(await hidden(d)).toEqual([]);
  });
});
