// The embedded default of `lcow import`: a two-layer image in `docker save` form, built from real files —
// the files of this package as installed (its README, package.json, bin.js and sources) — plus the things
// real layers carry: a gzip layer and a plain one, a symlink, a hard link, an executable, an opaque
// directory, a deleted file and a modified one.
import { createHash } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

export const EXAMPLE_TAG = 'lcow/example:latest';
/** What the example's top layer leaves in /etc/os-release (the bottom layer's version is replaced). */
export const EXAMPLE_OS_RELEASE = 'NAME="lcow example"\nID=lcow-example\nVERSION_ID=2\n';
/** Where the package's own files land in the image. */
export const EXAMPLE_SHARE = 'usr/share/lcow';

interface Entry {
  name: string;
  body?: Buffer;
  type?: 'directory' | 'symlink' | 'link';
  linkname?: string;
  mode?: number;
}

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  const mtime = new Date('2026-01-01T00:00:00Z');
  for (const e of entries) {
    const { body, ...h } = e;
    await new Promise<void>((resolve, reject) =>
      p.entry({ mtime, mode: e.type === 'directory' ? 0o755 : 0o644, ...h }, body ?? Buffer.alloc(0), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** This package's directory (where package.json is), from the running module. */
function packageDir(): string {
  return fileURLToPath(new URL('../../', import.meta.url));
}

/** The package's real files that go into the bottom layer: relative path → contents. */
export async function exampleFiles(): Promise<Map<string, Buffer>> {
  const root = packageDir();
  const out = new Map<string, Buffer>();
  for (const f of ['README.md', 'package.json', 'bin.js']) out.set(f, await readFile(join(root, f)));
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && /\.(ts|js)$/.test(e.name) && !/\.test\.(ts|js)$/.test(e.name))
        out.set(relative(root, p), await readFile(p));
    }
  };
  for (const d of ['src', 'dist']) if (await stat(join(root, d)).catch(() => null)) await walk(join(root, d));
  return out;
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Writes the example image to `path`; returns what its layers hold, for checking a read-back. */
export async function writeExampleImage(path: string): Promise<{ files: Map<string, Buffer> }> {
  const files = await exampleFiles();
  const dirs = new Set<string>();
  for (const f of files.keys()) {
    const parts = `${EXAMPLE_SHARE}/${f}`.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const bottom = await tarOf([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/os-release', body: Buffer.from('NAME="lcow example"\nID=lcow-example\nVERSION_ID=1\n') },
    { name: 'etc/motd', type: 'symlink', linkname: '../hello.txt' },
    { name: 'bin/', type: 'directory' },
    { name: 'bin/hello', body: Buffer.from('#!/bin/sh\ncat /hello.txt\n'), mode: 0o755 },
    { name: 'bin/hi', type: 'link', linkname: 'bin/hello' },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
    { name: 'tmp/scratch', body: Buffer.from('left by the build\n') },
    ...[...dirs].sort().map((d) => ({ name: `${d}/`, type: 'directory' as const })),
    ...[...files].map(([f, body]) => ({ name: `${EXAMPLE_SHARE}/${f}`, body })),
  ]);
  const top = await tarOf([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/os-release', body: Buffer.from(EXAMPLE_OS_RELEASE) },
    { name: 'hello.txt', body: Buffer.from('Hello from an LCOW layer chain: ext4 in VHD files, stacked.\n') },
    { name: `${EXAMPLE_SHARE}/.wh.bin.js` },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
    { name: 'tmp/.wh..wh..opq' },
  ]);
  const gz = gzipSync(bottom);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/hello'] },
      rootfs: { type: 'layers', diff_ids: [sha(bottom), sha(top)] },
    }),
  );
  const configName = `${sha(config).slice(7)}.json`;
  const manifest = Buffer.from(
    JSON.stringify([{ Config: configName, RepoTags: [EXAMPLE_TAG], Layers: ['l0/layer.tar', 'l1/layer.tar'] }]),
  );
  await writeFile(
    path,
    await tarOf([
      { name: 'l0/', type: 'directory' },
      { name: 'l0/layer.tar', body: gz },
      { name: 'l1/', type: 'directory' },
      { name: 'l1/layer.tar', body: top },
      { name: configName, body: config },
      { name: 'manifest.json', body: manifest },
    ]),
  );
  return { files };
}
