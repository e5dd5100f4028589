// What a Docker user sees on lcow equals what they see on overlay2: two private dockerds side by side (Debian's
// 20.10), one on our plugin, one on overlay2, the same image loaded into both — every kind of tar entry, a
// whiteout, an opaque folder — and the same commands run on both: the container's root walked entry by entry
// (`stat`), `docker diff`, `docker export`, `docker commit` + `docker save` (the committed layer's tar), and a
// run of the committed image. Compared entry by entry: type, mode, owner, size, content, link target, device,
// xattrs; times where Docker keeps them.
import { createHash, randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { extract } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PARITY_CAP as CAP,
  buildOps,
  dockerSave,
  inCI,
  oracle,
  parityLayers,
  rootWithLoop,
  startDockerd,
  tempDir,
  type Dockerd,
} from '@lcow/testkit';
import { releaseLeftovers, startPlugin } from './client.ts';

const ready = process.platform === 'linux' && rootWithLoop() && oracle('dockerd') && oracle('cc');
if (!ready && !inCI)
  console.warn('[docker-plugin] skipping the overlay2 parity tests: they need Linux, root, dockerd and cc');

const NAME = `lcowparity${randomBytes(4).toString('hex')}`;
const SOCKET = `/run/docker/plugins/${NAME}.sock`;
const TAG = 'parity/every-kind:1';

let dir: { path: string; cleanup: () => Promise<void> };
let plugin: ChildProcess | null = null;
let lcow: Dockerd | null = null;
let overlay: Dockerd | null = null;

/** The parity image (testkit's): two layers holding every kind of entry Docker stores, a whiteout and an opaque folder. */
async function buildImage(): Promise<string> {
  const out = join(dir.path, 'image.tar');
  await dockerSave(out, parityLayers(await buildOps(dir.path)), TAG);
  return out;
}

interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha: string | null;
  linkname: string | null;
  dev: string | null;
  mtime: number;
  xattrs: Record<string, string>;
}

/** The entries of a tar (read with tar-stream, an implementation of neither side), by name. */
async function tarEntries(bytes: Buffer): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const x = extract();
  const done = (async () => {
    for await (const e of x) {
      const h = e.header;
      const hash = createHash('sha256');
      for await (const c of e) hash.update(c as Buffer);
      const xattrs: Record<string, string> = {};
      for (const [k, v] of Object.entries(h.pax ?? {}))
        if (k.startsWith('SCHILY.xattr.')) xattrs[k.slice(13)] = Buffer.from(v, 'latin1').toString('hex');
      out.set(h.name.replace(/^\.?\//, '').replace(/\/$/, ''), {
        type: h.type ?? 'file',
        mode: (h.mode ?? 0) & 0o7777,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        size: h.size ?? 0,
        sha: h.type === 'file' ? hash.digest('hex') : null,
        linkname: h.linkname ?? null,
        dev: h.type === 'character-device' || h.type === 'block-device' ? `${h.devmajor}:${h.devminor}` : null,
        mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000),
        xattrs,
      });
    }
  })();
  Readable.from([bytes]).pipe(x);
  await done;
  return out;
}

/** The raw bytes of a `docker …` command's standard output (export, save). */
async function dockerBytes(d: Dockerd, ...args: string[]): Promise<Buffer> {
  const file = join(dir.path, `out-${randomBytes(4).toString('hex')}.tar`);
  await d.docker(...args, '-o', file);
  try {
    return await readFile(file);
  } finally {
    await rm(file, { force: true });
  }
}

/** Paths whose times Docker itself sets when it starts a container (its init layer) or that changed. */
function timeKept(path: string, changed: ReadonlySet<string>): boolean {
  const p = `/${path.replace(/^\//, '')}`;
  if (
    [
      '/',
      '/etc',
      '/proc',
      '/sys',
      '/.dockerenv',
      '/etc/hosts',
      '/etc/hostname',
      '/etc/resolv.conf',
      '/etc/mtab',
    ].includes(p)
  )
    return false;
  if (p === '/dev' || p.startsWith('/dev/')) return false;
  return !changed.has(p) || FIXED_TIMES.has(p);
}

/** What the container changed with a time of its own choosing (2001-01-01): compared even though changed. */
const FIXED_TIMES = new Set(['/etc/motd', '/new/dir/file', '/srv/data2', '/tmp/scratch']);

/** Both sides' entries, with times blanked where Docker does not keep them; equal maps expected. */
function comparable(
  m: Map<string, Entry>,
  changed: ReadonlySet<string>,
  opts: { dirTimes?: boolean } = {},
): Record<string, Entry> {
  const out: Record<string, Entry> = {};
  for (const [k, e] of [...m].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const whiteout = k.split('/').at(-1)!.startsWith('.wh.');
    const keep = timeKept(k, changed) && (opts.dirTimes !== false || e.type !== 'directory') && !whiteout;
    // overlay2's whiteouts share the kernel's one whiteout inode, so its tar makes the second and later ones
    // hard links to the first; on apply a `.wh.` name deletes whatever its type. Ours are plain empty files.
    out[k] = whiteout
      ? { ...e, mtime: 0, type: 'whiteout', linkname: null, sha: null }
      : { ...e, mtime: keep ? e.mtime : 0 };
  }
  return out;
}

/** The container's own view (`ops walk`), as lines keyed by path, times blanked as above. */
function walkLines(text: string, changed: ReadonlySet<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n').filter(Boolean)) {
    const f = line.split('\t');
    if (!timeKept(f[0]!, changed)) f[5] = '-';
    out[f[0]!] = f.slice(1).join('\t');
  }
  return out;
}

/** What the user does in the container: one of each kind of change. */
const OPS = [
  ...['t', '/etc/motd'],
  ...['r', '/var/cache/apt'],
  ...['w', '/new/dir/file', 'created'],
  ...['w', '/srv/data2', 'new contents'],
  ...['c', '/srv/tool', '0700'],
  ...['o', '/srv/owned', '1000', '1000'],
  ...['l', '../etc/motd', '/srv/link2'],
  ...['h', '/srv/data', '/srv/data.link'],
  ...['f', '/srv/fifo2'],
  ...['r', '/opaque/keep'],
  ...['r', '/srv/ünïcödé ✓'],
  ...['x', '/srv/empty', 'security.capability', CAP],
  ...['w', '/tmp/scratch', 'tmp'],
];

describe.runIf(ready)('lcow beside overlay2: what Docker users see', () => {
  let image: string;
  const ran = new Map<Dockerd, string>(); // the container that made the changes, per daemon

  beforeAll(async () => {
    dir = await tempDir('lcow-parity-');
    image = await buildImage();
    plugin = await startPlugin(['--socket', SOCKET, '--state', join(dir.path, 'plugin.init')]);
    [lcow, overlay] = await Promise.all([
      startDockerd(join(dir.path, 'lcow'), ['--experimental', '--storage-driver', NAME]),
      startDockerd(join(dir.path, 'overlay2'), ['--storage-driver', 'overlay2']),
    ]);
    expect((await overlay.docker('info', '--format', '{{.Driver}}')).trim()).toBe('overlay2');
    expect((await lcow.docker('info', '--format', '{{.Driver}}')).trim()).toBe(NAME);
    for (const d of [lcow, overlay]) {
      expect(await d.docker('load', '-i', image)).toContain(TAG);
      const id = (await d.docker('run', '-d', '--network', 'none', TAG, '/ops', ...OPS)).trim();
      expect((await d.docker('wait', id)).trim()).toBe('0');
      ran.set(d, id);
    }
  }, 600_000);

  afterAll(async () => {
    await Promise.all([lcow?.stop(), overlay?.stop()]);
    if (plugin && plugin.exitCode === null) {
      const gone = new Promise((r) => plugin!.once('exit', r));
      plugin.kill('SIGTERM');
      await gone;
    }
    await rm(SOCKET, { force: true });
    if (dir) await releaseLeftovers(dir.path, join(dir.path, 'lcow', 'data', NAME));
    await dir?.cleanup();
  }, 600_000);

  const both = async (f: (d: Dockerd) => Promise<string>): Promise<[string, string]> => [
    await f(lcow!),
    await f(overlay!),
  ];

  it('a fresh container: every entry of its root, stat by stat (no /lost+found, symlinks 0777)', async () => {
    const [a, b] = await both((d) => d.docker('run', '--rm', '--network', 'none', TAG, '/ops', 'walk'));
    const none = new Set<string>();
    expect(walkLines(a, none)).toEqual(walkLines(b, none));
    expect(a).not.toContain('/lost+found');
    expect(a).toMatch(/^\/srv\/link\t120777\t/m);
  }, 300_000);

  it('every mount the plugin makes for a running container is nodev, as the kernel reports it', async () => {
    const root = join(dir.path, 'lcow', 'data', NAME);
    const runDir = `/run/lcow/${createHash('sha256').update(root).digest('hex').slice(0, 8)}/`;
    const id = (await lcow!.docker('run', '-d', '--network', 'none', TAG, '/ops', 's', '60')).trim();
    try {
      const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
        .split('\n')
        .map((l) => l.split(' '))
        .filter((f) => (f[4] ?? '').startsWith(runDir));
      // The image's two layers and the init layer (loop mounts of ext4), the container's sandbox, its union.
      expect(mounts.length).toBeGreaterThanOrEqual(4);
      for (const f of mounts) expect(f[5]!.split(','), f.join(' ')).toContain('nodev');
      expect(mounts.some((f) => f[f.indexOf('-') + 1] === 'overlay')).toBe(true);
    } finally {
      await lcow!.docker('rm', '-f', id);
    }
  }, 300_000);

  it('docker diff lists the same changes, folders holding a change included', async () => {
    const [a, b] = await both((d) => d.docker('diff', ran.get(d)!));
    const lines = (t: string): string[] => t.split('\n').filter(Boolean).sort();
    expect(lines(a)).toEqual(lines(b));
    expect(lines(a)).toEqual(
      expect.arrayContaining(['C /etc', 'C /etc/motd', 'C /var', 'C /var/cache', 'D /var/cache/apt']),
    );
  }, 300_000);

  it('the changed container: docker export and its root walked', async () => {
    const changed = new Set(
      (await overlay!.docker('diff', ran.get(overlay!)!))
        .split('\n')
        .filter(Boolean)
        .map((l) => l.slice(2)),
    );
    const [ea, eb] = [
      await dockerBytes(lcow!, 'export', ran.get(lcow!)!),
      await dockerBytes(overlay!, 'export', ran.get(overlay!)!),
    ];
    const [ta, tb] = [await tarEntries(ea), await tarEntries(eb)];
    expect(comparable(ta, changed)).toEqual(comparable(tb, changed));
    expect(ta.has('lost+found')).toBe(false);
    expect(ta.get('srv/link')?.mode).toBe(0o777);
    const [wa, wb] = await both((d) =>
      d
        .docker('commit', ran.get(d)!, 'parity/committed:1')
        .then(() => d.docker('run', '--rm', '--network', 'none', 'parity/committed:1', '/ops', 'walk')),
    );
    expect(walkLines(wa, changed)).toEqual(walkLines(wb, changed));
  }, 300_000);

  it('docker commit + docker save: the committed layer holds the same entries', async () => {
    const top = async (d: Dockerd): Promise<Map<string, Entry>> => {
      if (!(await d.docker('images', '-q', 'parity/committed:1')).trim())
        await d.docker('commit', ran.get(d)!, 'parity/committed:1');
      const saved = await tarEntriesRaw(await dockerBytes(d, 'save', 'parity/committed:1'));
      const manifest = JSON.parse(saved.get('manifest.json')!.toString()) as { Layers: string[] }[];
      return tarEntries(saved.get(manifest[0]!.Layers.at(-1)!)!);
    };
    const [a, b] = [await top(lcow!), await top(overlay!)];
    // Folder times are the moment of the change, whiteouts the moment of the commit: not kept.
    const changed = new Set(
      (await overlay!.docker('diff', ran.get(overlay!)!))
        .split('\n')
        .filter(Boolean)
        .map((l) => l.slice(2)),
    );
    expect(comparable(a, changed, { dirTimes: false })).toEqual(comparable(b, changed, { dirTimes: false }));
    expect(a.get('etc/motd')?.mtime).toBe(978_307_200);
    expect([...a.keys()]).toEqual(expect.arrayContaining(['etc', 'etc/motd', 'var', 'var/cache', 'var/cache/.wh.apt']));
  }, 300_000);
});

/** The files of a tar by name, whole (a docker-save archive). */
async function tarEntriesRaw(bytes: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const x = extract();
  const done = (async () => {
    for await (const e of x) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      out.set(e.header.name, Buffer.concat(parts));
    }
  })();
  Readable.from([bytes]).pipe(x);
  await done;
  return out;
}
