// The `lcow` command's driver subcommands, end to end: an OCI-layout image built here is imported, its
// union is compared entry by entry with what its layers say (through the kernel's mount on the host
// backend, through the reader on inproc), and every subcommand's output form is checked.
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { lcow, lcowWith, type LcowRun } from './lcow.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, rootWithLoop, snapshotTree, tempDir, type FsEntry, type TarSpec } from '@lcow/testkit';
import { LcowDriver, type ContainerFs } from '../src/index.ts';

const T = 1_750_000_000;
const LAYER_A: TarSpec[] = [
  { path: 'etc/', type: 'dir', mode: 0o755, mtime: T },
  { path: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\n', mode: 0o644, mtime: T },
  { path: 'etc/shadow', body: 'root:*:1::::::\n', mode: 0o600, uid: 0, gid: 42, mtime: T },
  { path: 'bin/', type: 'dir', mode: 0o755, mtime: T },
  {
    path: 'bin/tool',
    body: '#!/bin/sh\necho tool\n',
    mode: 0o4755,
    mtime: T,
    pax: { 'SCHILY.xattr.user.origin': 'layer a' },
  },
  { path: 'bin/tool2', type: 'link', linkname: 'bin/tool', mtime: T },
  { path: 'bin/sh', type: 'symlink', linkname: 'tool', mtime: T },
  { path: 'run/', type: 'dir', mode: 0o755, mtime: T },
  { path: 'run/fifo', type: 'fifo', mode: 0o600, mtime: T },
  { path: 'opt/', type: 'dir', mode: 0o755, mtime: T },
  { path: 'opt/old/', type: 'dir', mode: 0o755, mtime: T },
  { path: 'opt/old/x', body: 'x', mtime: T },
  { path: 'home/user/', type: 'dir', mode: 0o700, uid: 1000, gid: 1000, mtime: T },
  { path: 'home/user/notes', body: 'a'.repeat(70_000), uid: 1000, gid: 1000, mode: 0o640, mtime: T },
];
const LAYER_B: TarSpec[] = [
  { path: 'etc/', type: 'dir', mode: 0o755, mtime: T + 60 },
  {
    path: 'etc/passwd',
    body: 'root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n',
    mode: 0o644,
    mtime: T + 60,
  },
  { path: 'etc/.wh.shadow', body: '' },
  { path: 'opt/old/', type: 'dir', mode: 0o755, mtime: T + 60 },
  { path: 'opt/old/.wh..wh..opq', body: '' },
  { path: 'opt/old/y', body: 'y', mtime: T + 60 },
];

/** The tree a ContainerFs shows, in the fields `expectedUnion` names. */
async function containerTree(fs: ContainerFs): Promise<Map<string, Partial<FsEntry>>> {
  const out = new Map<string, Partial<FsEntry>>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fs.readdir(dir)) {
      const p = `${dir}/${e.name}`.replace(/^\//, '');
      if (p === 'lost+found') continue;
      const st = await fs.lstat(`/${p}`);
      const base = { type: st.type, uid: st.uid, gid: st.gid };
      if (st.type === 'dir') out.set(p, { ...base, mode: st.mode });
      else if (st.type === 'symlink') out.set(p, { ...base, target: await fs.readlink(`/${p}`) });
      else if (st.type === 'file')
        out.set(p, {
          ...base,
          mode: st.mode,
          size: st.size,
          sha256: createHash('sha256')
            .update(await fs.readFile(`/${p}`))
            .digest('hex'),
        });
      else out.set(p, { ...base, mode: st.mode });
      if (st.type === 'dir') await walk(`/${p}`);
    }
  };
  await walk('');
  return out;
}

/** What the union of A and B holds: path → the entry fields the test compares. */
function expectedUnion(): Map<string, Partial<FsEntry>> {
  const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
  const e = new Map<string, Partial<FsEntry>>();
  const dir = (p: string, mode = 0o755, uid = 0, gid = 0): void => void e.set(p, { type: 'dir', mode, uid, gid });
  const file = (p: string, body: string, mode = 0o644, uid = 0, gid = 0): void =>
    void e.set(p, { type: 'file', mode, uid, gid, size: Buffer.byteLength(body), sha256: sha(body) });
  for (const d of ['etc', 'bin', 'run', 'opt', 'opt/old', 'home']) dir(d);
  dir('home/user', 0o700, 1000, 1000);
  file('etc/passwd', LAYER_B[1]!.body as string);
  file('bin/tool', '#!/bin/sh\necho tool\n', 0o4755);
  file('bin/tool2', '#!/bin/sh\necho tool\n', 0o4755);
  e.set('bin/sh', { type: 'symlink', target: 'tool', uid: 0, gid: 0 });
  e.set('run/fifo', { type: 'fifo', mode: 0o600, uid: 0, gid: 0 });
  file('opt/old/y', 'y');
  file('home/user/notes', 'a'.repeat(70_000), 0o640, 1000, 1000);
  return e;
}

const digest = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** An OCI image layout tarball of layers A (gzip) and B (plain); returns it and the layers' chain ids. */
function ociImage(opts: { corruptDiffId?: boolean } = {}): { tar: Buffer; chain: string[] } {
  const a = makeTar(LAYER_A);
  const b = makeTar(LAYER_B);
  const aGz = gzipSync(a);
  const diffIds = [digest(a), opts.corruptDiffId ? digest(Buffer.from('other')) : digest(b)];
  const config = Buffer.from(
    JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: diffIds } }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digest(config), size: config.length },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digest(aGz), size: aGz.length },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digest(b), size: b.length },
      ],
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: digest(manifest),
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': 'test/image:1' },
        },
      ],
    }),
  );
  const blob = (x: Buffer): TarSpec => ({ path: `blobs/sha256/${digest(x).slice(7)}`, body: x });
  const tar = Buffer.from(
    makeTar([
      { path: 'oci-layout', body: '{"imageLayoutVersion":"1.0.0"}' },
      { path: 'index.json', body: index },
      { path: 'blobs/', type: 'dir' },
      { path: 'blobs/sha256/', type: 'dir' },
      blob(config),
      blob(manifest),
      blob(Buffer.from(aGz)),
      blob(Buffer.from(b)),
    ]),
  );
  const c1 = createHash('sha256').update(`${diffIds[0]} ${diffIds[1]}`).digest('hex');
  return { tar, chain: [diffIds[0]!.slice(7), c1] };
}

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-cli-driver-');
});
afterAll(() => dir?.cleanup());

function compare(got: Map<string, Partial<FsEntry>>, want: Map<string, Partial<FsEntry>>): void {
  got.delete('');
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [p, w] of want) {
    const g = got.get(p)!;
    const picked = Object.fromEntries(Object.keys(w).map((k) => [k, g[k as keyof FsEntry] ?? null]));
    expect(picked, p).toEqual(w);
  }
}

for (const backend of ['inproc', 'host'] as const) {
  const ready = backend === 'inproc' || rootWithLoop();
  describe.skipIf(!ready)(`lcow on the ${backend} backend`, () => {
    const root = (): string => join(dir.path, backend);
    const g = (...a: string[]): Promise<LcowRun> => lcow('--root', root(), '--backend', backend, ...a);

    it('import an OCI layout: chain ids, the union entry by entry, reuse on a second import', async () => {
      const { tar, chain } = ociImage();
      const image = join(dir.path, 'image.tar');
      await writeFile(image, tar);
      const r = await g('import', image, '--sandbox', 'box', '--json');
      expect(r.err).toBe('');
      expect(r.status).toBe(0);
      expect(JSON.parse(r.out)).toEqual({
        layers: chain,
        sandbox: 'box',
        reused: [],
        repoTags: ['test/image:1'],
        image,
        format: 'oci-layout',
        manifestDigest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      });

      if (backend === 'host') {
        const m = await g('mount', 'box');
        expect(m.status).toBe(0);
        const path = m.out.trim();
        try {
          compare(await snapshotTree(path, { skip: (rel) => rel === 'lost+found' || rel === '' }), expectedUnion());
          expect((await snapshotTree(path)).get('bin/tool')?.xattrs).toEqual({
            'user.origin': Buffer.from('layer a').toString('hex'),
          });
        } finally {
          expect((await g('unmount', 'box')).status).toBe(0);
        }
        expect((await g('unmount', 'box')).err).toMatch(/ERR_NOT_MOUNTED/);
      }
      // The same union through the driver's own ContainerFs (the reader on inproc, the mount on host).
      const d = await LcowDriver.init(root(), [`lcow.backend=${backend}`], { recover: false });
      try {
        const fs = await d.get('box');
        compare(await containerTree(fs), expectedUnion());
        await d.put('box');
      } finally {
        await d.close();
      }
      const cat = await g('cat', 'box', '/etc/passwd');
      expect(cat.bytes.toString()).toBe(LAYER_B[1]!.body);
      const again = JSON.parse((await g('import', image, '--no-sandbox', '--json')).out);
      expect(again).toMatchObject({ layers: chain, reused: chain, sandbox: null });
    });

    it('ls, status, changes, diff-size, diff and apply', async () => {
      const { chain } = ociImage();
      const ls = JSON.parse((await g('ls', '--json')).out) as { id: string; kind: string; parent: string | null }[];
      expect(ls.map((l) => [l.id, l.kind, l.parent])).toEqual(
        [
          [chain[0], 'layer', null],
          [chain[1], 'layer', chain[0]],
          ['box', 'sandbox', chain[1]],
        ].sort((x, y) => (x[0]! < y[0]! ? -1 : 1)),
      );
      const st = JSON.parse((await g('status', '--json')).out);
      expect(st).toMatchObject({ backend, root: root(), layers: 3 });

      const changes = JSON.parse((await g('changes', chain[1]!, '--json')).out);
      expect(changes).toEqual([
        { path: '/etc', kind: 'modify' },
        { path: '/etc/passwd', kind: 'modify' },
        { path: '/etc/shadow', kind: 'delete' },
        // Layer B has no entry for opt/: the converter made it (a directory the tar implies), so it is there.
        { path: '/opt', kind: 'modify' },
        { path: '/opt/old', kind: 'modify' },
        { path: '/opt/old/x', kind: 'delete' },
        { path: '/opt/old/y', kind: 'add' },
      ]);
      expect((await g('changes', chain[1]!)).out).toContain('D /etc/shadow\n');
      const size = Number((await g('diff-size', chain[1]!)).out);
      expect(size).toBe(Buffer.byteLength(LAYER_B[1]!.body as string) + 1);

      // diff → apply onto a fresh child of the same parent: the same changes, the same size.
      const out = join(dir.path, `${backend}-diff.tar`);
      expect((await g('diff', chain[1]!, '-o', out)).status).toBe(0);
      expect((await g('create', 'copy', '--parent', chain[0]!)).status).toBe(0);
      const applied = await g('apply', 'copy', '-i', out);
      expect(applied.out.trim()).toBe(String(size));
      expect(JSON.parse((await g('changes', 'copy', '--json')).out)).toEqual(changes);
      // apply from stdin (`-i -`) gives the same layer.
      const stdin = Readable.from([await readFile(out)]);
      expect((await g('create', 'copy2', '--parent', chain[0]!)).status).toBe(0);
      const viaStdin = await lcowWith({ stdin }, '--root', root(), '--backend', backend, 'apply', 'copy2', '-i', '-');
      expect(viaStdin.out.trim()).toBe(String(size));
      expect(JSON.parse((await g('changes', 'copy2', '--json')).out)).toEqual(changes);
      expect((await g('rm', 'copy2')).status).toBe(0);
      const diffToStdout = await g('diff', chain[1]!);
      expect(diffToStdout.bytes.equals(await readFile(out))).toBe(true);

      expect((await g('create-rw', 'rw30', '--parent', chain[1]!, '--size', '30')).status).toBe(0);
      // Checked before the data root is touched: a command line that cannot run (status 2).
      const small = await g('create-rw', 'rw19', '--size', '19');
      expect(small).toMatchObject({ status: 2 });
      expect(small.err).toContain("'lcow.sandboxsize' option cannot be less than 20");
      expect((await g('rm', 'copy', 'rw30')).status).toBe(0);
      expect((await g('ls', '--json')).out).not.toContain('"copy"');
    });

    it('errors: usage (status 2), a missing layer and a diff id that does not match (status 1, nothing left)', async () => {
      expect((await g('diff')).status).toBe(2);
      expect((await g('create', 'x', '--bogus')).status).toBe(2);
      expect((await lcow('--backend', 'vm', 'ls')).status).toBe(2);
      const missing = await g('cat', 'nope', '/x');
      expect(missing.status).toBe(1);
      expect(missing.err).toMatch(/^lcow: ERR_LAYER_NOT_FOUND: layer nope/);
      const bad = join(dir.path, 'bad.tar');
      await writeFile(bad, ociImage({ corruptDiffId: true }).tar);
      const fresh = join(dir.path, `${backend}-fresh`);
      const r = await lcow('--root', fresh, '--backend', backend, 'import', bad, '--json');
      expect(r.status).toBe(1);
      expect(r.err).toMatch(
        /ERR_VERIFICATION: image .*: layer 1: .*the tar.s diff id is sha256:[0-9a-f]{64}, expected sha256:/,
      );
      // Layer 0 was fine and stays; layer 1 is gone, and no sandbox was made.
      const left = JSON.parse((await lcow('--root', fresh, '--backend', backend, 'ls', '--json')).out);
      expect(left.map((l: { id: string }) => l.id)).toEqual([ociImage().chain[0]]);
      expect((await g('help')).status).toBe(0);
      expect((await g('import', '--help')).out).toMatch(/^lcow import: /);
    });

    it('import --verity keeps the dm-verity root digest of each layer, which ls --json shows and verity check accepts', async () => {
      const image = join(dir.path, 'image.tar');
      const vroot = join(dir.path, `${backend}-verity`);
      const v = (...a: string[]): Promise<LcowRun> => lcow('--root', vroot, '--backend', backend, ...a);
      expect((await v('import', image, '--verity', '--no-sandbox', '--json')).status).toBe(0);
      const ls = JSON.parse((await v('ls', '--json')).out) as { id: string; rootDigest: string | null }[];
      expect(ls).toHaveLength(2);
      for (const l of ls) {
        expect(l.rootDigest).toMatch(/^[0-9a-f]{64}$/);
        const check = await lcow('verity', 'check', join(vroot, l.id, 'layer.vhd'), l.rootDigest!);
        expect(check.status, check.err).toBe(0);
      }
    });

    it('cleanup', async () => {
      const r = JSON.parse((await g('cleanup', '--json')).out);
      expect(r).toMatchObject({ removing: [], partial: [], tempFiles: [], unmounted: [] });
    });
  });
}
