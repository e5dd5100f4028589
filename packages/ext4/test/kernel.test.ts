// The kernel as witness: overlayfs over converted layers, a real directory tree, and random trees.
import { execFile } from 'node:child_process';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, oracle, rootWithLoop, run, snapshotTree, tempDir, withLoopMount } from '@lcow/testkit';
import { Ext4Fs, convert } from '../src/index.ts';
import { compareTrees, convertChecked, mountedTree, readerTree } from './helpers.ts';

const execFileP = promisify(execFile);
const ready = oracle('e2fsck') && oracle('getfattr') && rootWithLoop();
let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-kern-');
});
afterAll(() => dir?.cleanup());

describe.skipIf(!ready)('overlayfs honours converted whiteouts', () => {
  it('deleted names and opaque directories vanish from the union', async () => {
    const lower = await convertChecked(
      dir.path,
      makeTar([
        { path: 'a', body: 'lower a' },
        { path: 'b/x', body: 'lower b/x' },
        { path: 'b/y', body: 'lower b/y' },
        { path: 'c/keep', body: 'lower c/keep' },
        { path: 'c/gone', body: 'lower c/gone' },
        { path: 'same', body: 'lower' },
      ]),
      { convertWhiteouts: true },
    );
    const upper = await convertChecked(
      dir.path,
      makeTar([
        { path: '.wh.a', body: '' },
        { path: 'b/.wh..wh..opq', body: '' },
        { path: 'b/z', body: 'upper b/z' },
        { path: 'c/.wh.gone', body: '' },
        { path: 'same', body: 'upper' },
        { path: 'new', body: 'upper new' },
      ]),
      { convertWhiteouts: true },
    );
    expect(upper.result.whiteouts).toBe(3);
    const lm = join(dir.path, 'lower');
    const um = join(dir.path, 'upper');
    const merged = join(dir.path, 'merged');
    await mkdir(merged, { recursive: true });
    await withLoopMount(lower.image, lower.result.bytes, lm, () =>
      withLoopMount(upper.image, upper.result.bytes, um, async () => {
        const u = await snapshotTree(um);
        expect(u.get('a')).toMatchObject({ type: 'chr', rdev: [0, 0] });
        expect(u.get('c/gone')).toMatchObject({ type: 'chr', rdev: [0, 0] });
        expect(u.get('b')?.xattrs).toEqual({ 'trusted.overlay.opaque': '79' });
        await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${um}:${lm}`, merged]);
        try {
          const m = await snapshotTree(merged, { xattrs: false });
          expect([...m.keys()].sort()).toEqual(['', 'b', 'b/z', 'c', 'c/keep', 'lost+found', 'new', 'same']);
          expect(m.get('same')?.size).toBe(5);
          expect(m.get('c/keep')?.size).toBe('lower c/keep'.length);
        } finally {
          await run('umount', [merged]);
        }
      }),
    );
  });
});

describe.skipIf(!ready)('a real directory tree', () => {
  it('GNU tar of /usr/share and /usr/local (1 GB+) → ext4 → mount: identical to the source, entry by entry', async () => {
    // The machine's own tree, which nobody here wrote; static while the tests run.
    const roots = ['usr/share', 'usr/local'];
    const tar = join(dir.path, 'real.tar');
    await execFileP('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '-C', '/', '-cf', tar, ...roots]);
    const image = join(dir.path, 'real.vhd');
    const result = await convert(tar, image, { appendVhdFooter: true, convertWhiteouts: true });
    await run('e2fsck', ['-fn', image]);
    expect(result.entries).toBeGreaterThan(10_000);
    const fs = await Ext4Fs.open(image);
    try {
      await withLoopMount(image, result.bytes, join(dir.path, 'realmnt'), async (m) => {
        for (const r of roots) {
          // Link counts are left out: files here may have links outside the tarred trees.
          const want = await snapshotTree(`/${r}`);
          compareTrees(await snapshotTree(join(m, r)), want);
          // Our reader, on the same image, sees what the kernel sees.
          compareTrees(await readerTree(fs, r), want);
        }
      });
    } finally {
      await fs.close();
    }
    console.log(`[real tree] ${result.entries} entries, ${(result.tarBytes / 1e9).toFixed(2)} GB of tar compared`);
  }, 1_500_000);
});

describe.skipIf(!ready)('big directories and GNU long names', () => {
  it('a directory of 120 000 entries', async () => {
    const specs = Array.from({ length: 120_000 }, (_, i) => ({
      path: `many/entry-${String(i).padStart(6, '0')}`,
      body: '',
    }));
    const { image, result } = await convertChecked(dir.path, makeTar(specs));
    await withLoopMount(image, result.bytes, join(dir.path, 'many'), async (m) => {
      const names = await readdir(join(m, 'many'));
      expect(names.length).toBe(120_000);
      expect(names).toContain('entry-119999');
    });
  }, 600_000);

  it('GNU tar --format=gnu long names and link targets (L and K records)', async () => {
    const src = join(dir.path, 'gnu-src');
    const long = 'd'.repeat(150);
    await mkdir(join(src, long), { recursive: true });
    await run('sh', [
      '-c',
      `echo hi > '${src}/${long}/${'f'.repeat(200)}' && ln -s '${long}/${'f'.repeat(200)}' '${src}/link' && ln '${src}/${long}/${'f'.repeat(200)}' '${src}/${'h'.repeat(120)}'`,
    ]);
    const tar = join(dir.path, 'gnu.tar');
    await execFileP('tar', ['--format=gnu', '-C', src, '-cf', tar, '.']);
    const image = join(dir.path, 'gnu.img');
    const result = await convert(tar, image);
    await run('e2fsck', ['-fn', image]);
    const got = await withLoopMount(image, result.bytes, join(dir.path, 'gnumnt'), (m) =>
      snapshotTree(m, { skip: (r) => r === 'lost+found' }),
    );
    // The GNU format stores whole seconds.
    compareTrees(got, await snapshotTree(src), { nlink: true, wholeSeconds: true });
  });
});

describe.skipIf(!ready)('random trees (property)', () => {
  const name = fc
    .stringMatching(/^[a-zA-Z0-9._ -]{1,20}$/)
    .filter((s) => s !== '.' && s !== '..' && !s.startsWith('.wh.'));
  type Item =
    | { kind: 'file'; body: Uint8Array; mode: number }
    | { kind: 'dir'; mode: number }
    | { kind: 'symlink'; target: string };
  const item: fc.Arbitrary<Item> = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        kind: fc.constant('file' as const),
        body: fc.uint8Array({ maxLength: 9000 }),
        // tar-stream writes 0644 for a mode of 0, so modes start at 1
        mode: fc.integer({ min: 1, max: 0o7777 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant('dir' as const), mode: fc.integer({ min: 0o500, max: 0o7777 }) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('symlink' as const),
        target: fc.string({ minLength: 1, maxLength: 200 }),
      }),
    },
  );
  const tree = fc.uniqueArray(
    fc.tuple(
      fc.array(name, { minLength: 1, maxLength: 3 }),
      item,
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      fc.nat(70000),
    ),
    {
      selector: ([p]) => p.join('/'),
      maxLength: 30,
    },
  );

  it('tar-stream → ext4 → mount shows the same tree', async () => {
    let run_ = 0;
    await fc.assert(
      fc.asyncProperty(tree, async (items) => {
        // Keep only paths whose parents are not files or symlinks.
        const kinds = new Map<string, string>();
        const kept = items.filter(([parts, it]) => {
          for (let i = 1; i < parts.length; i++) {
            const k = kinds.get(parts.slice(0, i).join('/'));
            if (k && k !== 'dir') return false;
          }
          const p = parts.join('/');
          if (kinds.has(p)) return false;
          for (const other of kinds.keys()) if (other.startsWith(`${p}/`) && it.kind !== 'dir') return false;
          kinds.set(p, it.kind);
          return true;
        });
        const tp = pack();
        const chunks: Buffer[] = [];
        tp.on('data', (c: unknown) => chunks.push(c as Buffer));
        const done = new Promise<void>((r) => tp.on('end', () => r()));
        for (const [parts, it, mtime, uid] of kept) {
          const common = { name: parts.join('/'), mtime: new Date(mtime * 1000), uid, gid: uid + 1 };
          if (it.kind === 'file') tp.entry({ ...common, mode: it.mode }, Buffer.from(it.body));
          else if (it.kind === 'dir') tp.entry({ ...common, type: 'directory', mode: it.mode });
          else tp.entry({ ...common, type: 'symlink', linkname: it.target, mode: 0o777 });
        }
        tp.finalize();
        await done;
        const { image, result } = await convertChecked(dir.path, Buffer.concat(chunks));
        const got = await mountedTree(image, result, join(dir.path, `prop${run_++}`));
        for (const [parts, it, mtime, uid] of kept) {
          const g = got.get(parts.join('/'));
          expect(g, parts.join('/')).toBeDefined();
          expect(g!.uid).toBe(uid);
          expect(g!.mtimeNs).toBe(BigInt(mtime) * 10n ** 9n);
          if (it.kind === 'file') expect(g).toMatchObject({ type: 'file', size: it.body.length, mode: it.mode });
          if (it.kind === 'dir') expect(g).toMatchObject({ type: 'dir', mode: it.mode });
          if (it.kind === 'symlink')
            expect(g).toMatchObject({ type: 'symlink', target: Buffer.from(it.target).toString('latin1') });
        }
        expect((await readdir(dir.path)).length).toBeGreaterThan(0);
      }),
      { numRuns: 20 },
    );
  }, 600_000);
});
