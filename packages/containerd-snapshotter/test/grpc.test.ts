// The snapshots service spoken to directly over gRPC, as containerd would and as a hostile peer might: the codes
// containerd's errdefs read for every misuse, the same key prepared from 20 connections, keys and labels at
// and past their limits, oversized and malformed messages, a peer that is not root, filters, label updates,
// and the snapshotter SIGKILLed in the middle of a Commit.
import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inCI, oracle, rootWithLoop, tempDir } from '@lcow/testkit';
import { ROOT_HASH_LABEL, SnapshotterServer } from '../src/index.ts';
import { startSnapshotter } from './child.ts';
import { client, code, withMounted, type Client, type Req } from './client.ts';

const ready = process.platform === 'linux' && rootWithLoop();
if (!ready && inCI) throw new Error('CI=true: the snapshotter gRPC tests need root with loop devices');
const exec = promisify(execFile);

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-snap-grpc-');
});
afterAll(() => dir?.cleanup());

describe.runIf(ready)('the snapshots service over gRPC', () => {
  let server: SnapshotterServer;
  let c: Client;
  let socket: string;
  beforeAll(async () => {
    socket = join(dir.path, 'snap.sock');
    server = await SnapshotterServer.listen({ socket, root: join(dir.path, 'root'), verity: false, log: () => {} });
    c = client(socket);
  });
  afterAll(async () => {
    c?.close();
    await server?.close();
    const metrics = await server.metrics.render();
    expect(metrics).toMatch(/^lcow_snapshotter_calls_total\{method="Prepare"\} \d+$/m);
    expect(metrics).toMatch(/^lcow_snapshotter_errors_total\{method="Prepare",code="ERR_NOT_FOUND"\} 1$/m);
    expect(metrics).toMatch(/^lcow_snapshotter_call_seconds_sum\{method="Commit"\} [\d.e-]+$/m);
    expect(metrics).toMatch(/^lcow_layers \d+$/m);
  });

  it('the codes containerd reads: NotFound, AlreadyExists, FailedPrecondition, InvalidArgument', async () => {
    const S = grpc.status;
    expect(await code(c.call('Prepare', { key: 'a', parent: 'no such parent' }))).toBe(S.NOT_FOUND);
    await c.call('Prepare', { key: 'a', parent: '' });
    expect(await code(c.call('Prepare', { key: 'a', parent: '' }))).toBe(S.ALREADY_EXISTS);
    expect(await code(c.call('Prepare', { key: 'b', parent: 'a' }))).toBe(S.FAILED_PRECONDITION); // not committed
    expect(await code(c.call('View', { key: 'v', parent: 'a' }))).toBe(S.FAILED_PRECONDITION);
    await c.call('Commit', { name: 'A', key: 'a' });
    expect(await code(c.call('Stat', { key: 'a' }))).toBe(S.NOT_FOUND);
    await c.call('Prepare', { key: 'b', parent: 'A' });
    expect(await code(c.call('Commit', { name: 'A', key: 'b' }))).toBe(S.ALREADY_EXISTS);
    expect(await code(c.call('Remove', { key: 'A' }))).toBe(S.FAILED_PRECONDITION); // has a child
    expect(await code(c.call('Mounts', { key: 'A' }))).toBe(S.FAILED_PRECONDITION); // committed
    await c.call('View', { key: 'v', parent: 'A' });
    expect(await code(c.call('Commit', { name: 'V', key: 'v' }))).toBe(S.FAILED_PRECONDITION); // a view
    expect(await code(c.call('Remove', { key: 'nothing' }))).toBe(S.NOT_FOUND);
    expect(await code(c.call('Prepare', { key: '', parent: '' }))).toBe(S.INVALID_ARGUMENT);
    expect(await code(c.call('Prepare', { key: 'nul\u0000key', parent: '' }))).toBe(S.INVALID_ARGUMENT);
    expect(await code(c.call('Prepare', { key: 'k'.repeat(4097), parent: '' }))).toBe(S.INVALID_ARGUMENT);
    expect(await code(c.call('Prepare', { key: 'L', parent: '', labels: { big: 'x'.repeat(4094) } }))).toBe(
      S.INVALID_ARGUMENT,
    );
    expect(await code(c.call('Update', { info: { name: 'A', labels: {} }, update_mask: { paths: ['parent'] } }))).toBe(
      S.INVALID_ARGUMENT,
    );
    for (const k of ['v', 'b', 'A']) await c.call('Remove', { key: k });
    expect(await c.list([])).toEqual([]);
  }, 120_000);

  it('a key at the limits (4096 bytes, unicode, slashes, spaces) and labels of 4096 bytes are kept exactly', async () => {
    const key = `ns/1/ünï ✓ ${'k'.repeat(4096 - Buffer.byteLength('ns/1/ünï ✓ '))}`;
    expect(Buffer.byteLength(key)).toBe(4096);
    const labels = { 'containerd.io/snapshot.ref': 'x'.repeat(4096 - 'containerd.io/snapshot.ref'.length) };
    await c.call('Prepare', { key, parent: '', labels });
    const st = (await c.call('Stat', { key })) as { info: { name: string; kind: string; labels: Req } };
    expect(st.info).toMatchObject({ name: key, kind: 'ACTIVE', labels });
    await c.call('Remove', { key });
  }, 60_000);

  it('the same key prepared from 20 connections at once: one wins, 19 are told it exists, nothing is left over', async () => {
    const clients = Array.from({ length: 20 }, () => client(socket));
    try {
      const codes = await Promise.all(clients.map((k) => code(k.call('Prepare', { key: 'race', parent: '' }))));
      expect(codes.filter((x) => x === -1)).toHaveLength(1);
      expect(codes.filter((x) => x === grpc.status.ALREADY_EXISTS)).toHaveLength(19);
    } finally {
      for (const k of clients) k.close();
    }
    await c.call('Remove', { key: 'race' });
    expect((await server.snapshotter.cleanup()).removed).toEqual([]);
  }, 120_000);

  it('List filters (name, kind, labels, regular expressions; any of several), and label updates by path', async () => {
    await c.call('Prepare', { key: 'one', parent: '', labels: { 'containerd.io/gc.root': 'x', team: 'a' } });
    await c.call('Commit', { name: 'base', key: 'one', labels: { team: 'b' } });
    await c.call('Prepare', { key: 'two', parent: 'base', labels: { team: 'a' } });
    const names = async (...f: string[]): Promise<string[]> => (await c.list(f)).map((i) => i.name as string).sort();
    expect(await names()).toEqual(['base', 'two']);
    expect(await names('kind==committed')).toEqual(['base']);
    expect(await names('labels.team==a')).toEqual(['two']);
    expect(await names('labels."team"!=a')).toEqual(['base']);
    expect(await names('name~=^tw')).toEqual(['two']);
    expect(await names('parent==base,labels.team==a')).toEqual(['two']);
    expect(await names('kind==committed', 'name==two')).toEqual(['base', 'two']);
    expect(await code(c.list(['labels.team=='.concat('"unclosed')]))).toBe(grpc.status.INVALID_ARGUMENT);
    const upd = (labels: Req, paths: string[]): Promise<Req> =>
      c.call('Update', { info: { name: 'two', labels }, update_mask: { paths } });
    await upd({ x: '1', y: '2' }, ['labels.x']);
    expect(((await c.call('Stat', { key: 'two' })) as { info: { labels: Req } }).info.labels).toEqual({
      team: 'a',
      x: '1',
    });
    await upd({}, ['labels.team']);
    expect(((await c.call('Stat', { key: 'two' })) as { info: { labels: Req } }).info.labels).toEqual({ x: '1' });
    await upd({ only: 'this' }, []);
    expect(((await c.call('Stat', { key: 'two' })) as { info: { labels: Req } }).info.labels).toEqual({ only: 'this' });
    // Usage of what a client wrote into the active snapshot: the blocks and inodes it took (as containerd's
    // overlayfs counts the upper folder's blocks), read from the sandbox's filesystem at once.
    const m = (await c.call('Mounts', { key: 'two' })) as { mounts: { source: string }[] };
    expect(await c.call('Usage', { key: 'two' })).toEqual({ size: 0, inodes: 0 });
    await writeFile(join(m.mounts[0]!.source, 'written'), Buffer.alloc(10_000, 1));
    await mkdir(join(m.mounts[0]!.source, 'folder'));
    await writeFile(join(m.mounts[0]!.source, 'folder', 'big'), Buffer.alloc(3 << 20, 2));
    const u = (await c.call('Usage', { key: 'two' })) as { size: number; inodes: number };
    expect(u.inodes).toBe(3);
    expect(u.size).toBeGreaterThanOrEqual(10_000 + (3 << 20));
    expect(u.size).toBeLessThan(10_000 + (3 << 20) + (64 << 10));
    for (const k of ['two', 'base']) await c.call('Remove', { key: k });
  }, 120_000);

  it('an oversized message and a malformed one are refused; the service goes on', async () => {
    const huge = { key: 'h', parent: '', labels: { a: 'x'.repeat(5 << 20) } };
    expect(await code(c.call('Prepare', huge))).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const Raw = grpc.makeGenericClientConstructor(
      {
        Stat: {
          path: '/containerd.services.snapshots.v1.Snapshots/Stat',
          requestStream: false,
          responseStream: false,
          requestSerialize: () => Buffer.from([0x12]), // field 2, its length missing
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      'Raw',
    );
    const raw = new Raw(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as grpc.Client &
      Record<string, (r: unknown, cb: (e: grpc.ServiceError | null) => void) => void>;
    const rawCode = await new Promise<number>((r) => raw.Stat!({}, (e) => r(e ? e.code : -1)));
    raw.close();
    expect(rawCode).toBe(grpc.status.INTERNAL);
    expect(await c.list([])).toEqual([]);
  });

  it.runIf(oracle('setpriv'))('the socket is 0600: a peer that is not root cannot connect', async () => {
    const probe = `require('net').connect(${JSON.stringify(socket)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(0)})`;
    const { stdout } = await exec('setpriv', [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      process.execPath,
      '-e',
      probe,
    ]);
    expect(stdout.trim()).toBe('EACCES');
  });
});

describe.runIf(ready)('a committed layer is checked against its root hash before it is mounted', () => {
  it('a byte flipped in layer.vhd: Prepare and View on it are refused, naming it; a client cannot relabel the hash', async () => {
    const socket = join(dir.path, 'verity.sock');
    const root = join(dir.path, 'verity-root');
    let server = await SnapshotterServer.listen({ socket, root, log: () => {} });
    let c = client(socket);
    try {
      const m = (await c.call('Prepare', { key: 'w', parent: '' })) as { mounts: { source: string }[] };
      await writeFile(join(m.mounts[0]!.source, 'file'), Buffer.alloc(100_000, 7));
      await c.call('Commit', { name: 'L', key: 'w', labels: { [ROOT_HASH_LABEL]: 'f'.repeat(64) } });
      const info = ((await c.call('Stat', { key: 'L' })) as { info: { labels: Record<string, string> } }).info;
      const hash = info.labels[ROOT_HASH_LABEL]!;
      expect(hash).toMatch(/^[0-9a-f]{64}$/);
      expect(hash).not.toBe('f'.repeat(64)); // the snapshotter's, not the client's
      await c.call('Update', {
        info: { name: 'L', labels: { [ROOT_HASH_LABEL]: '0'.repeat(64) } },
        update_mask: { paths: [] },
      });
      expect(
        ((await c.call('Stat', { key: 'L' })) as { info: { labels: Record<string, string> } }).info.labels,
      ).toEqual({
        [ROOT_HASH_LABEL]: hash,
      });
      // Intact, it mounts (and is checked once per process).
      await c.call('View', { key: 'ok view', parent: 'L' });
      await c.call('Remove', { key: 'ok view' });
      c.close();
      await server.close();
      // A byte in the middle of the filesystem, flipped behind the snapshotter's back.
      const layerDir = (await readdir(root, { withFileTypes: true })).find(
        (e) => e.isDirectory() && !['tmp', 'cache', 'scratch'].includes(e.name),
      )!.name;
      const file = join(root, layerDir, 'layer.vhd');
      const bytes = await readFile(file);
      const at = 64 * 4096 + 123;
      bytes[at] = bytes[at]! ^ 0x01;
      await writeFile(file, bytes);
      server = await SnapshotterServer.listen({ socket, root, log: () => {} });
      c = client(socket);
      for (const method of ['Prepare', 'View']) {
        const e = await c.call(method, { key: `on bad ${method}`, parent: 'L' }).then(
          () => null,
          (x: grpc.ServiceError) => x,
        );
        expect(e?.code, method).toBe(grpc.status.FAILED_PRECONDITION);
        expect(e?.details).toMatch(/"L".*does not match its root hash/);
      }
      expect((await c.list([])).map((i) => i.name)).toEqual(['L']);
    } finally {
      c.close();
      await server.close();
    }
  }, 120_000);
});

describe.runIf(ready)('the snapshotter SIGKILLed in the middle of a Commit', () => {
  it('after a restart: the active snapshot is as it was, no half layer is named, Cleanup removes what was made, Commit works', async () => {
    const socket = join(dir.path, 'kill.sock');
    const root = join(dir.path, 'kill-root');
    const start = (): Promise<ChildProcess> => startSnapshotter(socket, root);
    let child = await start();
    let c = client(socket);
    try {
      const m = (await c.call('Prepare', { key: 'big', parent: '' })) as { mounts: { source: string }[] };
      // 300 MB of varied content: a Commit of it takes seconds, so the kill lands inside it.
      const block = createHash('sha512').update('seed').digest();
      const chunk = Buffer.alloc(1 << 20);
      for (let i = 0; i < chunk.length; i += block.length) block.copy(chunk, i);
      await writeFile(join(m.mounts[0]!.source, 'data'), Buffer.concat(Array.from({ length: 300 }, () => chunk)));
      const commit = c.call('Commit', { name: 'done', key: 'big' }).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 700));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      await commit;
      c.close();
      child = await start();
      c = client(socket);
      const st = (await c.call('Stat', { key: 'big' })) as { info: { kind: string } };
      expect(st.info.kind).toBe('ACTIVE');
      expect(await code(c.call('Stat', { key: 'done' }))).toBe(grpc.status.NOT_FOUND);
      await c.call('Cleanup', {});
      const layerDirs = async (): Promise<string[]> =>
        (await readdir(root, { withFileTypes: true }))
          .filter((e) => e.isDirectory() && !['tmp', 'cache', 'scratch'].includes(e.name))
          .map((e) => e.name);
      expect(await layerDirs()).toHaveLength(1); // the active snapshot's sandbox, and nothing half made
      expect(await readdir(join(root, 'tmp'))).toEqual([]);
      await c.call('Commit', { name: 'done', key: 'big' });
      expect((await c.list([])).map((i) => [i.name, i.kind])).toEqual([['done', 'COMMITTED']]);
      await c.call('Remove', { key: 'done' });
    } finally {
      c.close();
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    }
  }, 300_000);
});

describe.runIf(ready)('a full disk during Commit', () => {
  it('is RESOURCE_EXHAUSTED; the active snapshot is as it was, nothing half made; with room again, Commit works', async () => {
    // The snapshotter's root on a 256 MiB tmpfs; the sandbox, which lives there too, takes 150 MB of it.
    const fsDir = join(dir.path, 'small-fs');
    await exec('mkdir', ['-p', fsDir]);
    await exec('mount', ['-t', 'tmpfs', '-o', 'size=256m', 'lcow-full-test', fsDir]);
    const socket = join(dir.path, 'full.sock');
    const root = join(fsDir, 'root');
    let server: SnapshotterServer | null = null;
    let c: Client | null = null;
    try {
      server = await SnapshotterServer.listen({ socket, root, log: () => {} });
      c = client(socket);
      const m = (await c.call('Prepare', { key: 'big', parent: '' })) as { mounts: { source: string }[] };
      const data = Buffer.concat(
        Array.from({ length: 150 }, (_, i) => createHash('sha512').update(`block ${i}`).digest()),
      );
      const file = Buffer.concat(Array.from({ length: 16384 }, () => data)).subarray(0, 150 << 20);
      const want = createHash('sha256').update(file).digest('hex');
      await writeFile(join(m.mounts[0]!.source, 'data'), file);
      const err = (await c.call('Commit', { name: 'done', key: 'big' }).catch((e: unknown) => e)) as grpc.ServiceError;
      expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(err.details).toMatch(/free|full|space/i);
      // Nothing half made: the active snapshot alone, mounted, its file whole; no temporary file left.
      expect((await c.list([])).map((i) => [i.name, i.kind])).toEqual([['big', 'ACTIVE']]);
      const again = (await c.call('Mounts', { key: 'big' })) as { mounts: { source: string }[] };
      const read = await readFile(join(again.mounts[0]!.source, 'data'));
      expect(createHash('sha256').update(read).digest('hex')).toBe(want);
      const layerDirs = (await readdir(root, { withFileTypes: true })).filter(
        (e) => e.isDirectory() && !['tmp', 'cache', 'scratch'].includes(e.name),
      );
      expect(layerDirs).toHaveLength(1);
      expect(await readdir(join(root, 'tmp'))).toEqual([]);
      // Room again: the same Commit succeeds, and a view of it holds the file.
      await exec('mount', ['-o', 'remount,size=768m', fsDir]);
      await c.call('Commit', { name: 'done', key: 'big' });
      const v = (await c.call('View', { key: 'v', parent: 'done' })) as {
        mounts: { type: string; source: string; options: string[] }[];
      };
      const viewed = await withMounted(v.mounts, (at) => readFile(join(at, 'data')));
      expect(createHash('sha256').update(viewed).digest('hex')).toBe(want);
      await c.call('Remove', { key: 'v' });
      await c.call('Remove', { key: 'done' });
    } finally {
      c?.close();
      await server?.close();
      await exec('umount', ['-l', fsDir]).catch(() => {});
    }
  }, 300_000);
});
