// The packages as users get them: every public package packed by pnpm (through its prepack guard), the
// tarballs installed with npm into a project outside the workspace, and used from there — an ESM import that
// converts a tar, require() of every package, a TypeScript consumer under `nodenext` and `bundler`, and the
// `lcow` bin. Then the guard itself: npm's pack and a package without dist are refused.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar } from '@lcow/testkit';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..', '..');
const GUARD = join(ROOT, 'scripts', 'prepack.mjs');

interface Manifest {
  name: string;
  private?: boolean;
  version: string;
  repository?: { url: string; directory?: string };
  homepage?: string;
  bugs?: { url: string };
  keywords?: string[];
  license?: string;
  devDependencies?: Record<string, string>;
  dependencies?: Record<string, string>;
  scripts?: Record<string, string>;
}

async function publicPackages(): Promise<{ dir: string; manifest: Manifest }[]> {
  const out = [];
  for (const name of await readdir(join(ROOT, 'packages'))) {
    const dir = join(ROOT, 'packages', name);
    const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Manifest;
    if (!manifest.private) out.push({ dir, manifest });
  }
  return out;
}

let work: string;
let project: string;
let packages: { dir: string; manifest: Manifest }[];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lcow-pack-'));
  project = join(work, 'consumer');
  packages = await publicPackages();
  const tarballs: string[] = [];
  for (const p of packages) {
    const { stdout } = await exec('pnpm', ['pack', '--pack-destination', work], { cwd: p.dir });
    const tgz = stdout.trim().split('\n').pop()!;
    expect(tgz, `${p.manifest.name}: pnpm pack printed no tarball`).toMatch(/\.tgz$/);
    tarballs.push(tgz);
  }
  await exec('mkdir', ['-p', project]);
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true }, null, 2));
  await exec(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      ...tarballs,
      'typescript@~5.9.3',
      '@types/node@^20.19.0',
    ],
    { cwd: project, maxBuffer: 1 << 24 },
  );
}, 600_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('packed and installed outside the workspace', () => {
  it('manifests: no workspace ranges, no test kit, no scripts; metadata, README and LICENSE in each', async () => {
    const root = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as Manifest;
    for (const p of packages) {
      const dir = join(project, 'node_modules', ...p.manifest.name.split('/'));
      const text = await readFile(join(dir, 'package.json'), 'utf8');
      const m = JSON.parse(text) as Manifest;
      expect(text, m.name).not.toContain('workspace:');
      expect(text, m.name).not.toContain('@lcow/testkit');
      expect(m.devDependencies, m.name).toBeUndefined();
      expect(m.scripts, m.name).toBeUndefined();
      expect(m.repository?.url, m.name).toBe(root.repository?.url);
      expect(m.repository?.directory, m.name).toBe(`packages/${p.dir.split('/').pop()}`);
      expect(m.homepage, m.name).toMatch(/^https:\/\//);
      expect(m.bugs?.url, m.name).toMatch(/^https:\/\/.*\/issues$/);
      expect(m.keywords?.length, m.name).toBeGreaterThan(2);
      expect(m.license, m.name).toBe('MIT');
      const files = await readdir(dir);
      expect(files, m.name).toEqual(expect.arrayContaining(['README.md', 'LICENSE', 'dist']));
      expect(await readFile(join(dir, 'README.md'), 'utf8'), m.name).toMatch(/## Install/);
    }
  });

  it('ESM: @lcow/ext4 converts a tar into a layer.vhd that @lcow/vhd reads back', async () => {
    await writeFile(join(project, 'layer.tar'), makeTar([{ path: 'etc/hostname', body: 'lcow\n' }]));
    await writeFile(
      join(project, 'esm.mjs'),
      [
        "import { convert } from '@lcow/ext4';",
        "import { inspectDisk } from '@lcow/vhd';",
        "const r = await convert('layer.tar', 'layer.vhd', { appendVhdFooter: true });",
        "const d = await inspectDisk('layer.vhd');",
        'console.log(JSON.stringify({ entries: r.entries, format: d.format, size: d.virtualSize, fs: r.bytes }));',
      ].join('\n'),
    );
    const { stdout } = await exec(process.execPath, ['esm.mjs'], { cwd: project });
    const r = JSON.parse(stdout) as { entries: number; format: string; size: number; fs: number };
    expect(r).toMatchObject({ entries: 1, format: 'vhd' });
    expect(r.size).toBe(r.fs);
  });

  it('require() of every package (Node >= 20.19 loads ES modules synchronously)', async () => {
    const names = packages.map((p) => p.manifest.name);
    await writeFile(
      join(project, 'cjs.cjs'),
      `for (const n of ${JSON.stringify(names)}) console.log(n, Object.keys(require(n)).length);`,
    );
    const { stdout } = await exec(process.execPath, ['cjs.cjs'], { cwd: project });
    for (const n of names) expect(stdout).toMatch(new RegExp(`^${n} [1-9]\\d*$`, 'm'));
  });

  it('TypeScript consumers type-check under nodenext and bundler resolution', async () => {
    await writeFile(
      join(project, 'consumer.ts'),
      [
        "import { convert, type ConvertOptions } from '@lcow/ext4';",
        "import { createVhdx, type DiskInfo } from '@lcow/vhd';",
        "import { LcowDriver } from '@lcow/driver';",
        "import { main } from '@lcow/driver/cli';",
        "import { openImage } from '@lcow/image';",
        "import { DurableFile } from '@lcow/durable';",
        "import { struct, u32 } from '@lcow/binary';",
        "import { LayerStore } from '@lcow/layerstore';",
        "import { SvmPool } from '@lcow/svm-pool';",
        'const o: ConvertOptions = { appendVhdFooter: true };',
        'export const all = [convert, createVhdx, LcowDriver, main, openImage, DurableFile, struct, u32, LayerStore, SvmPool, o];',
        'export type D = DiskInfo;',
        '// @ts-expect-error: an option that does not exist is caught by the published types',
        'export const bad: ConvertOptions = { appendVhdFooterr: true };',
      ].join('\n'),
    );
    for (const [module, resolution] of [
      ['nodenext', 'nodenext'],
      ['esnext', 'bundler'],
    ] as const) {
      const config = join(project, `tsconfig.${resolution}.json`);
      await writeFile(
        config,
        JSON.stringify({
          compilerOptions: {
            module,
            moduleResolution: resolution,
            target: 'es2022',
            strict: true,
            noEmit: true,
            types: ['node'],
            skipLibCheck: false,
          },
          files: ['consumer.ts'],
        }),
      );
      const tsc = join(project, 'node_modules', 'typescript', 'bin', 'tsc');
      const r = await exec(process.execPath, [tsc, '-p', config], { cwd: project }).catch((e: { stdout: string }) => ({
        stdout: e.stdout,
        failed: true,
      }));
      expect(r, `${resolution}: ${r.stdout}`).not.toHaveProperty('failed');
    }
  });

  it('the lcow bin: --version, tar2ext4, vhd info', async () => {
    const bin = join(project, 'node_modules', '.bin', 'lcow');
    const driver = packages.find((p) => p.manifest.name === '@lcow/driver')!.manifest;
    expect((await exec(bin, ['--version'], { cwd: project })).stdout).toBe(`lcow ${driver.version}\n`);
    await exec(bin, ['tar2ext4', '-i', 'layer.tar', '-o', 'bin.vhd', '--vhd', '--whiteouts'], { cwd: project });
    const info = JSON.parse((await exec(bin, ['vhd', 'info', 'bin.vhd', '--json'], { cwd: project })).stdout);
    expect(info).toMatchObject({ verdict: 'ok', disk: { format: 'vhd' }, contents: { type: 'ext4' } });
  });

  it('the dmverity-vhd bin: its help, and its usage error as hcsshim’s tool gives it', async () => {
    const bin = join(project, 'node_modules', '.bin', 'dmverity-vhd');
    expect((await exec(bin, ['-h'], { cwd: project })).stdout).toMatch(/^NAME:\n {3}dmverity-vhd /);
    const bad = await exec(bin, ['roothash'], { cwd: project }).catch((e: { code: number; stderr: string }) => e);
    expect(bad).toMatchObject({ code: 1, stderr: 'Required flag "image" not set\n' });
  });
});

describe('the prepack guard', () => {
  it('refuses npm (it would ship workspace: ranges) and a package that is not built', async () => {
    const ext4 = packages.find((p) => p.manifest.name === '@lcow/ext4')!;
    const viaNpm = await exec(process.execPath, [GUARD], {
      cwd: ext4.dir,
      env: { ...process.env, npm_config_user_agent: 'npm/11.0.0 node/v20.20.0 linux x64' },
    }).catch((e: { code: number; stderr: string }) => e);
    expect(viaNpm).toMatchObject({ code: 1, stderr: expect.stringMatching(/@lcow\/binary@workspace:\^.*pnpm pack/) });
    // A copy of the package without dist.
    const bare = join(work, 'bare');
    await cp(ext4.dir, bare, { recursive: true, filter: (src) => !/\/(dist|node_modules)(\/|$)/.test(src) });
    const unbuilt = await exec(process.execPath, [GUARD], {
      cwd: bare,
      env: { ...process.env, npm_config_user_agent: 'pnpm/10.34.9 npm/? node/v20.20.0 linux x64' },
    }).catch((e: { code: number; stderr: string }) => e);
    expect(unbuilt).toMatchObject({ code: 1, stderr: expect.stringMatching(/not built: \.\/dist\/index\.d\.ts/) });
  });
});
