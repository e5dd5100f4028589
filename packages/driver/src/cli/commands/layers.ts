// The driver's operations as `lcow` subcommands, on the data root `--root` (default ./lcow-data) with the
// backend `--backend` (default: host on Linux as root, else inproc; hcs on Windows).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DriverError } from '../../errors.ts';
import { LcowDriver } from '../../driver.ts';
import { importImage } from '../../import.ts';
import { parseSandboxSize } from '../../options.ts';
import { parallelism, sourceOptions } from './image.ts';
import type { Parsed } from '../args.ts';
import { checkOutput, writeFileWhole } from '../output.ts';
import { escapeName, formatBytes, toJson } from '../format.ts';
import { progressBar } from '../progress.ts';
import { EXAMPLE_OS_RELEASE, EXAMPLE_SHARE, EXAMPLE_TAG, writeExampleImage } from '../example-image.ts';
import type { Command, Io } from '../types.ts';

export const DEFAULT_ROOT = './lcow-data';

/** Opens the driver for one command; `lcow mount` keeps what it mounted, everything else closes. */
export async function withDriver<T>(
  io: Io,
  fn: (d: LcowDriver) => Promise<T>,
  opts: { keepMounts?: boolean } = {},
): Promise<T> {
  const options = [...(io.storageOpts ?? []), ...(io.backend ? [`lcow.backend=${io.backend}`] : [])];
  const d = await LcowDriver.init(resolve(io.root ?? DEFAULT_ROOT), options, { recover: false });
  let ok = false;
  try {
    const r = await fn(d);
    ok = true;
    return r;
  } finally {
    if (!(opts.keepMounts && ok)) await d.close();
  }
}

/** Writes `tar` to `out` (`-`: stdout) — a file through a temporary name, renamed when complete. */
async function writeOut(tar: Readable, out: string, io: Io, force: boolean): Promise<void> {
  if (out === '-') {
    await pipeline(tar, io.stdout);
    return;
  }
  await writeFileWhole(tar, out, { signal: io.signal, force });
}

function command(name: string, run: (p: Parsed, io: Io) => Promise<number>): Command {
  return { name, run: (_form, p, io) => run(p, io) };
}

export const importCommand = command('import', async (p, io) => {
  const json = p.flag('json');
  const verity = p.flag('verity');
  const none = p.flag('no-sandbox');
  let sandbox = p.value('sandbox');
  if (none && sandbox !== undefined) throw new DriverError('ERR_USAGE', '--sandbox or --no-sandbox, not both');
  const parallel = p.has('parallel') ? parallelism(p) : undefined;
  const source = sourceOptions(p);
  const given = p.operands[0];
  let image = given;
  let tmp: string | null = null;
  let example: Map<string, Buffer> | null = null;
  if (!image) {
    tmp = await mkdtemp(join(tmpdir(), 'lcow-example-'));
    image = join(tmp, 'lcow-example.tar');
    example = (await writeExampleImage(image)).files;
    sandbox ??= 'example';
    if (!json) io.out(`lcow import: no image given, so the embedded example ${EXAMPLE_TAG} (${image})`);
  }
  try {
    const bar = progressBar(`import ${basename(image)}`, io.progress);
    const r = await withDriver(io, async (d) => {
      if (example && (await d.exists(sandbox!))) await d.remove(sandbox!);
      const imported = await importImage(d, image!, {
        sandbox: none ? null : sandbox,
        verity,
        source,
        ...(parallel !== undefined ? { parallel } : {}),
        signal: io.signal,
        onProgress: (p) => bar.update({ ...p, label: `import ${basename(image!)} layer ${p.layer + 1}/${p.layers}` }),
      });
      bar.done();
      const check = example && imported.sandbox ? await readBack(d, imported.sandbox, example) : null;
      return { ...imported, check, backend: d.backend.name, root: d.root };
    });
    if (json)
      io.out(
        toJson({
          layers: r.layers,
          sandbox: r.sandbox,
          reused: r.reused,
          repoTags: r.repoTags,
          image: r.image,
          format: r.format,
          manifestDigest: r.manifestDigest,
          ...(r.check ? { readBack: r.check } : {}),
        }),
      );
    else {
      io.out(
        `${escapeName(r.repoTags.join(', ') || basename(r.image))} (${r.format}) → ${r.root}, ${r.backend} backend: ${r.layers.length} layers`,
      );
      for (const [i, id] of r.layers.entries())
        io.out(`  layer ${i}  ${id}${r.reused.includes(id) ? '  (already there, reused)' : ''}`);
      if (r.sandbox) io.out(`  sandbox  ${r.sandbox}`);
      if (r.check) {
        io.out(`\nread back through get(${r.sandbox}) — the union of the chain, ${r.check.path ?? 'in process'}:`);
        for (const line of r.check.lines) io.out(`  ${line}`);
      }
    }
    if (r.check && !r.check.ok)
      throw new DriverError('ERR_VERIFICATION', 'import: the example did not read back as built (see above)');
    return 0;
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
});

/** Reads the example back through `get`: the top layer's files, a deletion, and every file of the bottom layer. */
async function readBack(
  d: LcowDriver,
  id: string,
  files: Map<string, Buffer>,
): Promise<{ ok: boolean; path: string | null; lines: string[] }> {
  const fs = await d.get(id);
  try {
    const lines: string[] = [];
    let ok = true;
    const osRelease = (await fs.readFile('/etc/os-release')).toString();
    ok &&= osRelease === EXAMPLE_OS_RELEASE;
    lines.push(`/etc/os-release (replaced by layer 1): ${JSON.stringify(osRelease.split('\n')[2])}`);
    const hello = (await fs.readFile('/etc/motd')).toString().trim();
    lines.push(`/etc/motd → ../hello.txt (layer 0's symlink to layer 1's file): ${JSON.stringify(hello)}`);
    const gone = await fs.lstat(`/${EXAMPLE_SHARE}/bin.js`).then(
      () => false,
      () => true,
    );
    ok &&= gone;
    lines.push(`/${EXAMPLE_SHARE}/bin.js (deleted by layer 1): ${gone ? 'gone' : 'STILL THERE'}`);
    const tmpList = (await fs.readdir('/tmp')).map((e) => e.name);
    ok &&= tmpList.length === 0;
    lines.push(`/tmp (opaque in layer 1): ${tmpList.length === 0 ? 'empty' : `HAS ${tmpList.join(', ')}`}`);
    let same = 0;
    const differ: string[] = [];
    for (const [f, body] of files) {
      if (f === 'bin.js') continue;
      const got = await fs.readFile(`/${EXAMPLE_SHARE}/${f}`);
      if (got.equals(body)) same++;
      else differ.push(f);
    }
    ok &&= differ.length === 0;
    lines.push(
      `/${EXAMPLE_SHARE}: ${same} of this package's real files, byte for byte${differ.length ? `; DIFFERENT: ${differ.join(', ')}` : ''}`,
    );
    lines.push(ok ? 'example OK: the union reads back as built' : 'example FAILED');
    return { ok, path: fs.path, lines };
  } finally {
    await d.put(id);
  }
}

export const createCommand = command('create', async (p, io) => {
  const parent = p.value('parent') ?? null;
  const [id] = p.operands;
  await withDriver(io, (d) => d.create(id!, parent));
  return 0;
});

export const createRwCommand = command('create-rw', async (p, io) => {
  const parent = p.value('parent') ?? null;
  const size = p.value('size');
  const [id] = p.operands;
  // Checked before the data root is opened, with the driver's own rule and message.
  if (size !== undefined)
    try {
      parseSandboxSize(size, id!);
    } catch (e) {
      throw new DriverError('ERR_USAGE', `--size: ${(e as Error).message}`);
    }
  await withDriver(io, (d) => d.createReadWrite(id!, parent, size ? { storageOpt: { 'lcow.sandboxsize': size } } : {}));
  return 0;
});

export const applyCommand = command('apply', async (p, io) => {
  const input = p.value('input') ?? '-';
  const verity = p.flag('verity');
  const [id] = p.operands;
  const size = await withDriver(io, async (d) => {
    const parent = (await d.store.info(id!)).parentIds[0] ?? null;
    const tar = input === '-' ? ((io.stdin ?? process.stdin) as Readable) : input;
    return d.applyDiff(id!, parent, tar, { signal: io.signal, verity });
  });
  io.out(String(size));
  return 0;
});

export const diffCommand = command('diff', async (p, io) => {
  const parent = p.value('parent');
  const out = p.value('output') ?? '-';
  const force = p.flag('force');
  const [id] = p.operands;
  if (out !== '-') await checkOutput(out, force);
  await withDriver(io, async (d) => {
    const from = parent ?? (await d.store.info(id!)).parentIds[0] ?? null;
    await writeOut(d.diff(id!, from, { signal: io.signal }), out, io, force);
  });
  return 0;
});

export const changesCommand = command('changes', async (p, io) => {
  const json = p.flag('json');
  const parent = p.value('parent');
  const [id] = p.operands;
  const changes = await withDriver(io, async (d) =>
    d.changes(id!, parent ?? (await d.store.info(id!)).parentIds[0] ?? null, { signal: io.signal }),
  );
  if (json) io.out(toJson(changes));
  else for (const c of changes) io.out(`${{ modify: 'C', add: 'A', delete: 'D' }[c.kind]} ${escapeName(c.path)}`);
  return 0;
});

export const diffSizeCommand = command('diff-size', async (p, io) => {
  const parent = p.value('parent');
  const [id] = p.operands;
  const n = await withDriver(io, async (d) =>
    d.diffSize(id!, parent ?? (await d.store.info(id!)).parentIds[0] ?? null),
  );
  io.out(String(n));
  return 0;
});

export const mountCommand = command('mount', async (p, io) => {
  const [id] = p.operands;
  const path = await withDriver(
    io,
    async (d) => {
      const fs = await d.get(id!, { signal: io.signal });
      if (!fs.path) {
        await d.put(id!);
        throw new DriverError(
          'ERR_UNSUPPORTED',
          `mount ${id}: the ${d.backend.name} backend has no host path; use the host backend (Linux, root)`,
        );
      }
      return fs.path;
    },
    { keepMounts: true },
  );
  io.out(path);
  return 0;
});

export const unmountCommand = command('unmount', async (p, io) => {
  const [id] = p.operands;
  const was = await withDriver(io, (d) => d.unmount(id!));
  if (!was) throw new DriverError('ERR_NOT_MOUNTED', `unmount ${id}: not mounted`);
  return 0;
});

export const catCommand = command('cat', async (p, io) => {
  const [id, path] = p.operands;
  await withDriver(io, async (d) => {
    const fs = await d.get(id!, { signal: io.signal });
    try {
      await pipeline(await fs.createReadStream(path!), io.stdout, { end: false });
    } finally {
      await d.put(id!);
    }
  });
  return 0;
});

export const rmCommand = command('rm', async (p, io) => {
  await withDriver(io, async (d) => {
    for (const id of p.operands) await d.remove(id);
  });
  return 0;
});

export const lsCommand = command('ls', async (p, io) => {
  const json = p.flag('json');
  const rows = await withDriver(io, async (d) => {
    const out = [];
    for (const id of await d.store.list()) {
      let i: Awaited<ReturnType<typeof d.store.info>>;
      try {
        i = await d.store.info(id);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'ERR_LAYER_NOT_FOUND') continue; // removed meanwhile
        if (!code?.startsWith('ERR_')) throw e;
        // One damaged layer is reported, not a reason to hide the others; `lcow rm` removes it.
        out.push({
          id,
          kind: 'broken' as const,
          size: 0,
          parent: null,
          depth: 0,
          rootDigest: null,
          error: { code, message: (e as Error).message },
        });
        continue;
      }
      const digest = i.file
        ? await readFile(`${i.dir}/layer.vhd.rootdigest`, 'utf8').then(
            (t) => t.trim(),
            () => null,
          )
        : null;
      out.push({
        id,
        kind: i.kind,
        size: i.size,
        parent: i.parentIds[0] ?? null,
        depth: i.parentIds.length,
        rootDigest: digest,
      });
    }
    return out;
  });
  if (json) io.out(toJson(rows));
  else
    for (const r of rows)
      io.out(
        'error' in r && r.error
          ? `${r.id}  broken  ${r.error.code}: ${escapeName(r.error.message)}`
          : `${r.id}  ${r.kind.padEnd(7)} ${formatBytes(r.size).padStart(10)}  ${r.parent ? `on ${r.parent}` : '(base)'}${r.rootDigest ? `  verity ${r.rootDigest}` : ''}`,
      );
  return 0;
});

export const statusCommand = command('status', async (p, io) => {
  const json = p.flag('json');
  const s = await withDriver(io, (d) => d.status());
  if (json) io.out(toJson(s));
  else {
    const detached = s.mounted.filter((m) => m.detached).length;
    io.out(
      [
        `backend: ${s.backend}`,
        `mode:    ${s.mode} (VMs: ${s.vmMode})`,
        `root:    ${s.root} (${s.backingFilesystem})`,
        `layers:  ${s.layers}`,
        `mounted: ${s.mounted.length}${detached ? ` (${detached} left by another process, adopted at their next get)` : ''}`,
        `sandbox: ${s.sandboxSizeGb} GiB, ${s.sandboxType} VHDX`,
      ].join('\n'),
    );
    for (const vm of s.vms) io.out(`vm ${vm.vmId}: ${vm.state}, ${vm.disks.length} disks, ${vm.mounts.length} unions`);
  }
  return 0;
});

export const cleanupCommand = command('cleanup', async (p, io) => {
  const json = p.flag('json');
  const r = await withDriver(io, (d) => d.cleanup());
  if (json) io.out(toJson(r));
  else
    io.out(
      `unmounted ${r.unmounted.length}, finished ${r.removing.length} removals, ` +
        `dropped ${r.partial.length} partial layers and ${r.tempFiles.length} temporary files`,
    );
  return 0;
});

export const LAYER_COMMANDS: Command[] = [
  importCommand,
  createCommand,
  createRwCommand,
  applyCommand,
  diffCommand,
  changesCommand,
  diffSizeCommand,
  mountCommand,
  unmountCommand,
  catCommand,
  rmCommand,
  lsCommand,
  statusCommand,
  cleanupCommand,
];
