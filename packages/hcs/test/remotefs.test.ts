// The remotefs client against a fake guest that speaks the guest tool's protocol over streams: argument
// vectors (names with spaces, quotes and shell characters), every error mapping, the openfile framing
// (Read, Write, a real Seek, Close, EOF), archives, and no process left open.
import { mkdtemp, readFile, rm, writeFile, mkdir, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RemoteFs, RemoteFsError, fromGoMode, toGoMode } from '../src/index.ts';
import { fakeGuest, type FakeGuest } from './fake-guest.ts';

let host: string;
let guest: FakeGuest;
let fs: RemoteFs;
const ROOT = '/tmp/c1-mount';

beforeEach(async () => {
  host = await mkdtemp(join(tmpdir(), 'lcow-guest-'));
  await mkdir(join(host, ROOT), { recursive: true });
  guest = fakeGuest(host);
  fs = new RemoteFs(guest.run, ROOT, { idleTimeoutMs: 5000 });
});
afterEach(async () => {
  expect(guest.open()).toBe(0); // every guest process was closed
});
afterEach(() => rm(host, { recursive: true, force: true }));

describe('modes', () => {
  it('unix modes ↔ Go FileMode bits as the guest formats them', () => {
    expect(toGoMode(0o755).toString(8)).toBe('755');
    expect(toGoMode(0o1705).toString(8)).toBe('4000705');
    expect(toGoMode(0o4222).toString(8)).toBe('40000222');
    expect(fromGoMode(2 ** 31 + 0o755)).toBe(0o40755);
    expect(fromGoMode(2 ** 27 + 0o777)).toBe(0o120777);
    expect(fromGoMode(2 ** 26 + 2 ** 21 + 0o600)).toBe(0o20600);
    expect(fromGoMode(0o644)).toBe(0o100644);
  });
});

describe('operations', () => {
  it('names with spaces, quotes and shell characters reach the guest whole', async () => {
    const name = `${ROOT}/it's a "file"; rm -rf ~ & echo |>`;
    await fs.mkdirAll(`${ROOT}/dir with space/sub`, 0o750);
    const f = await fs.openFile(name, 0o1 | 0o100 | 0o1000, 0o640); // O_WRONLY|O_CREAT|O_TRUNC
    await f.write(Buffer.from('payload'));
    await f.close();
    expect(await readFile(join(host, name), 'utf8')).toBe('payload');
    expect(guest.log.some((a) => a.includes(name))).toBe(true);
    const st = await fs.stat(name);
    expect(st).toMatchObject({ name: `it's a "file"; rm -rf ~ & echo |>`, size: 7, isDir: false });
    expect(st.mode & 0o777).toBe(0o640);
    expect((await fs.stat(`${ROOT}/dir with space`)).mode).toBe(0o40750);
  });

  it('stat, lstat, readlink, readdir, link, symlink, remove, removeAll, mkfifo, lchown', async () => {
    await writeFile(join(host, ROOT, 'a'), 'A');
    await fs.symlink('a', `${ROOT}/ln`);
    expect(await fs.readlink(`${ROOT}/ln`)).toBe('a');
    expect((await fs.lstat(`${ROOT}/ln`)).mode & 0o170000).toBe(0o120000);
    expect((await fs.stat(`${ROOT}/ln`)).size).toBe(1);
    await fs.link(`${ROOT}/a`, `${ROOT}/hard`);
    await fs.mkfifo(`${ROOT}/pipe`, 0o600);
    expect((await fs.lstat(`${ROOT}/pipe`)).mode).toBe(0o10600);
    expect((await fs.readdir(ROOT)).map((e) => e.name)).toEqual(['a', 'hard', 'ln', 'pipe']);
    expect((await fs.readdir(ROOT, 2)).map((e) => e.name)).toEqual(['a', 'hard']);
    if (process.getuid?.() === 0) await fs.lchown(`${ROOT}/a`, 1000, 1000);
    await fs.remove(`${ROOT}/hard`);
    await fs.mkdirAll(`${ROOT}/deep/er/est`);
    await fs.removeAll(`${ROOT}/deep`);
    expect((await fs.readdir(ROOT)).map((e) => e.name)).toEqual(['a', 'ln', 'pipe']);
  });

  it('errors keep their code and name the path (not found survives open, unlike the original)', async () => {
    await expect(fs.stat(`${ROOT}/missing`)).rejects.toMatchObject({
      code: 'ERR_NOT_FOUND',
      errno: 2,
      message: expect.stringContaining(`${ROOT}/missing`),
    });
    await expect(fs.openFile(`${ROOT}/missing`)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    await fs.mkdir(`${ROOT}/d`);
    await expect(fs.mkdir(`${ROOT}/d`)).rejects.toMatchObject({ code: 'ERR_EXISTS' });
    const e = await fs.remove(`${ROOT}/nope/x`).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RemoteFsError);
    expect(e).toMatchObject({ code: 'ERR_NOT_FOUND' });
  });

  it('resolveScopedPath never leaves the root', async () => {
    await mkdir(join(host, ROOT, 'etc'));
    await symlink('/etc', join(host, ROOT, 'etc', 'escape'));
    expect(await fs.resolveScopedPath('../../../etc')).toBe(`${ROOT}/etc`);
    expect(guest.log.at(-1)).toEqual(['remotefs', 'resolvepath', `${ROOT}/etc`, ROOT]);
  });
});

describe('openfile protocol', () => {
  it('read in pieces, a real Seek (the original wrote the seek header into the file), write, close', async () => {
    await writeFile(join(host, ROOT, 'f'), '0123456789');
    const f = await fs.openFile(`${ROOT}/f`, 2); // O_RDWR
    expect(Buffer.from(await f.read(4)).toString()).toBe('0123');
    expect(await f.seek(-2, 2)).toBe(8);
    expect(Buffer.from(await f.read(100)).toString()).toBe('89');
    expect(await f.seek(1, 0)).toBe(1);
    await f.write(Buffer.from('XY'));
    expect(await f.seek(0, 1)).toBe(3);
    await f.close();
    await f.close();
    expect(await readFile(join(host, ROOT, 'f'), 'utf8')).toBe('0XY3456789');
  });

  it('end of file: an empty read, the server gone, its process released', async () => {
    await writeFile(join(host, ROOT, 'small'), 'ab');
    const f = await fs.openFile(`${ROOT}/small`);
    expect(Buffer.from(await f.read(10)).toString()).toBe('ab');
    expect((await f.read(10)).length).toBe(0);
    expect((await f.read(10)).length).toBe(0);
    await f.close();
  });
});

describe('archives', () => {
  it('archivePath streams a tar; extractArchive unpacks one (options framed as u64 BE length + JSON)', async () => {
    await mkdir(join(host, ROOT, 'src'));
    await writeFile(join(host, ROOT, 'src', 'x.txt'), 'xx');
    const chunks: Buffer[] = [];
    for await (const c of fs.archivePath(`${ROOT}/src`, { IncludeSourceDir: false })) chunks.push(c as Buffer);
    const tar = Buffer.concat(chunks);
    expect(tar.includes(Buffer.from('x.txt'))).toBe(true);
    await fs.mkdir(`${ROOT}/dst`);
    await fs.extractArchive(Readable.from([tar]), `${ROOT}/dst`, { NoLchown: true });
    expect(await readFile(join(host, ROOT, 'dst', 'x.txt'), 'utf8')).toBe('xx');
  });

  it('a failing archive export fails the stream (the original ended it as if complete); a bad tar fails extract', async () => {
    const failing = fs.archivePath(`${ROOT}/does-not-exist`);
    await expect(failing.toArray()).rejects.toMatchObject({ code: 'ERR_REMOTEFS' });
    await fs.mkdir(`${ROOT}/dst2`);
    await expect(fs.extractArchive(Readable.from([Buffer.from('not a tar')]), `${ROOT}/dst2`)).rejects.toMatchObject({
      message: expect.stringMatching(/not a tar archive/),
    });
  });
});

describe('error mapping', () => {
  /** A guest that answers every command with the given stderr text. */
  function answering(stderr: string, code = 0): RemoteFs {
    return new RemoteFs(async () => {
      const { PassThrough } = await import('node:stream');
      const stdin = new PassThrough();
      const stdout = new PassThrough();
      const err = new PassThrough();
      stdout.end();
      err.end(stderr);
      stdin.resume();
      return { stdin, stdout, stderr: err, exited: Promise.resolve(code), kill: async () => {}, close: async () => {} };
    }, '/r');
  }
  afterEach(() => {}); // these guests hold no processes

  it.each([
    ['{"ErrString":"file does not exist","ErrNum":2}', 'ERR_NOT_FOUND', 2],
    ['{"ErrString":"file already exists","ErrNum":17}', 'ERR_EXISTS', 17],
    ['{"ErrString":"permission denied","ErrNum":13}', 'ERR_PERMISSION', 13],
    ['{"ErrString":"EOF"}', 'ERR_EOF', undefined],
    ['{"ErrString":"operation not supported","ErrNum":95}', 'ERR_REMOTEFS', 95],
    ['panic: runtime error', 'ERR_REMOTEFS', undefined],
  ])('%s → %s', async (stderr, kind, errno) => {
    const e = await answering(stderr)
      .remove('/r/x')
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RemoteFsError);
    expect(e).toMatchObject({ code: kind, errno, message: expect.stringContaining('/r/x') });
  });

  it('a non-zero exit without an error document is an error too', async () => {
    await expect(answering('', 1).mkdir('/r/d')).rejects.toMatchObject({
      code: 'ERR_REMOTEFS',
      message: expect.stringMatching(/exit code 1/),
    });
  });
});

describe('the 2019 guest', () => {
  it('lchmod is EOPNOTSUPP on every path, as its Fchmodat with AT_SYMLINK_NOFOLLOW was', async () => {
    await writeFile(join(host, ROOT, 'm'), 'x');
    await expect(fs.lchmod(`${ROOT}/m`, 0o600)).rejects.toMatchObject({ code: 'ERR_REMOTEFS', errno: 95 });
  });
});
