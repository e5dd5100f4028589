// `lcow image` and `lcow import REF` against tools and servers no one here wrote: root hashes equal to
// hcsshim's dmverity-vhd (golden values recorded by test/make-dmverity-golden.ts, and live where
// ../shared/anchors has the binary), VHDs that veritysetup verifies and that equal dmverity-vhd's byte for
// byte but for random ids and the footer's descriptive fields, a real registry filled by skopeo (with a
// damaged blob and wrong credentials leaving nothing in the data root), and a private dockerd.
import { execFileSync } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  dockerSave,
  inCI,
  layerTars,
  oracle,
  anchor as referenceTool,
  run,
  sha,
  skopeoCopy,
  startDockerd,
  startRegistry,
  tempDir,
  type Registry,
} from '@lcow/testkit';
import { chainIds } from '@lcow/image';
import { lcow } from './lcow.ts';

const dmverity = referenceTool('dmverity-vhd') ?? '';
const hasAnchor = dmverity !== '';
const golden = JSON.parse(await readFile(join(import.meta.dirname, 'fixtures/dmverity-golden.json'), 'utf8')) as Record<
  string,
  { lines: string[] }
>;

let dir: { path: string; cleanup: () => Promise<void> };
const archives: Record<string, string> = {};
beforeAll(async () => {
  dir = await tempDir('lcow-image-cli-');
  for (const seed of [1, 2]) {
    archives[`seed${seed}`] = join(dir.path, `seed${seed}.tar`);
    // As make-dmverity-golden.ts builds them.
    await dockerSave(archives[`seed${seed}`]!, layerTars(seed), `lcow/golden:${seed}`, [true, false, seed === 2]);
  }
});
afterAll(() => dir?.cleanup());

const rootHashes = (lines: string[]): string[] => lines.map((l) => l.replace(/^Layer \d+ root hash: /, ''));

describe('lcow image roothash and create: what dmverity-vhd computes and writes', { timeout: 600_000 }, () => {
  it('roothash prints dmverity-vhd’s lines, by our syntax and by its own; --json', async () => {
    for (const [name, archive] of Object.entries(archives)) {
      const want = golden[name]!.lines;
      const a = await lcow('image', 'roothash', archive);
      expect(a.err).toBe('');
      expect(a.out.trim().split('\n')).toEqual(want);
      const seed = name.slice(4);
      const b = await lcow('image', '--tarball', archive, 'roothash', '-i', `lcow/golden:${seed}`);
      expect(b.out.trim().split('\n')).toEqual(want);
      if (hasAnchor) {
        const live = execFileSync(dmverity, ['--tarball', archive, 'roothash', '-i', `lcow/golden:${seed}`]);
        expect(live.toString().trim().split('\n')).toEqual(want);
      }
    }
    const j = JSON.parse((await lcow('image', 'roothash', archives.seed1!, '--json', '--parallel', '1')).out);
    expect(j.layers.map((l: { rootHash: string }) => l.rootHash)).toEqual(rootHashes(golden.seed1!.lines));
    expect(j.layers.map((l: { diffId: string }) => l.diffId)).toEqual(layerTars(1).map(sha));
  });

  it('inspect: what the image is, as text and --json; a bad reference is a usage error', async () => {
    const j = JSON.parse((await lcow('image', 'inspect', archives.seed1!, '--json')).out);
    expect(j).toMatchObject({
      format: 'docker-save',
      repoTags: ['lcow/golden:1'],
      platform: 'linux/amd64',
      configDigest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    });
    expect(j.layers.map((l: { diffId: string }) => l.diffId)).toEqual(layerTars(1).map(sha));
    expect(j.layers.map((l: { chainId: string }) => l.chainId.slice(7))).toEqual(chainIds(layerTars(1).map(sha)));
    const text = await lcow('image', 'inspect', archives.seed1!);
    expect(text.out).toMatch(/lcow\/golden:1/);
    expect(text.out.split('\n').filter((l) => /^ {2}layer \d/.test(l))).toHaveLength(3);
    const bad = await lcow('image', 'inspect', 'docker://UPPER/x');
    expect(bad.err).toMatch(/ERR_INVALID_REFERENCE/);
    expect(bad.status).toBe(2);
    const none = await lcow('image', 'roothash');
    expect(none.status).toBe(2);
  });

  it.skipIf(!oracle('veritysetup'))(
    'create: one VHD per layer, named by diff id, that veritysetup verifies; with --hash-dev-vhd too',
    async () => {
      const roots = rootHashes(golden.seed2!.lines);
      const diffIds = layerTars(2).map(sha);
      for (const hdv of [false, true]) {
        const out = join(dir.path, hdv ? 'create-hdv' : 'create');
        await run('mkdir', ['-p', out]);
        const r = await lcow('image', 'create', archives.seed2!, '-o', out, ...(hdv ? ['--hash-dev-vhd'] : []));
        expect(r.err).toBe('');
        expect(r.status).toBe(0);
        const names = diffIds.flatMap((d) => [`${d.slice(7)}.vhd`, ...(hdv ? [`${d.slice(7)}.hash-dev.vhd`] : [])]);
        expect((await readdir(out)).sort()).toEqual(names.sort());
        for (const [i, d] of diffIds.entries()) {
          const vhd = join(out, `${d.slice(7)}.vhd`);
          const blocks = Number(/Block count:\s+(\d+)/.exec(await run('dumpe2fs', ['-h', vhd]))![1]);
          const hash = hdv ? join(out, `${d.slice(7)}.hash-dev.vhd`) : vhd;
          await run('veritysetup', [
            'verify',
            vhd,
            hash,
            roots[i]!,
            `--data-blocks=${blocks}`,
            ...(hdv ? [] : [`--hash-offset=${blocks * 4096}`]),
          ]);
          // The footer is a fixed VHD's that qemu-img reads (dmverity-vhd's leaves the geometry at 0).
          const info = JSON.parse(await run('qemu-img', ['info', '--output=json', '-f', 'vpc', vhd])) as {
            'virtual-size': number;
          };
          expect(info['virtual-size']).toBeGreaterThanOrEqual(blocks * 4096);
        }
        // An existing output is refused without --force.
        const again = await lcow('image', 'create', archives.seed2!, '-o', out, ...(hdv ? ['--hdv'] : []));
        expect(again.status).toBe(1);
        expect(again.err).toMatch(/ERR_EXISTS: .*--force/);
        expect(
          (await lcow('image', 'create', archives.seed2!, '-o', out, '--force', ...(hdv ? ['--hdv'] : []))).status,
        ).toBe(0);
      }
    },
  );

  it.skipIf(!hasAnchor)('create: byte for byte dmverity-vhd’s VHDs but the random ids and the footer', async () => {
    for (const hdv of [false, true]) {
      const ours = join(dir.path, hdv ? 'ours-hdv' : 'ours');
      const theirs = join(dir.path, hdv ? 'theirs-hdv' : 'theirs');
      await run('mkdir', ['-p', ours, theirs]);
      expect((await lcow('image', 'create', archives.seed1!, '-o', ours, ...(hdv ? ['--hdv'] : []))).status).toBe(0);
      execFileSync(dmverity, [
        '--tarball',
        archives.seed1!,
        'create',
        '-i',
        'lcow/golden:1',
        '-o',
        theirs,
        ...(hdv ? ['--hdv'] : []),
      ]);
      const files = (await readdir(theirs)).sort();
      expect((await readdir(ours)).sort()).toEqual(files);
      for (const f of files) {
        const a = await readFile(join(ours, f));
        const b = await readFile(join(theirs, f));
        expect(a.length, f).toBe(b.length);
        // Masked: the footer (512 bytes: checksum, unique id, creator fields, geometry) and the dm-verity
        // superblock's random UUID (16 bytes at 16 into it).
        const mask = (x: Buffer): Buffer => {
          const y = Buffer.from(x.subarray(0, x.length - 512));
          const sb = y.indexOf('verity\0\0');
          if (sb >= 0 && sb % 4096 === 0) y.fill(0, sb + 16, sb + 32);
          return y;
        };
        expect(sha(mask(a)), f).toBe(sha(mask(b)));
      }
    }
  });
});

const registryReady = oracle('docker-registry') && oracle('skopeo') && oracle('htpasswd');
if (!registryReady && !inCI) console.warn('[image] skipping the registry tests of lcow import');

describe.runIf(registryReady)('lcow import and roothash from a registry', { timeout: 600_000 }, () => {
  let reg: Registry;
  beforeAll(async () => {
    reg = await startRegistry(join(dir.path, 'registry'), 'token');
    await skopeoCopy(reg, `docker-archive:${archives.seed1}`, 'lcow/golden:1');
  }, 120_000);
  afterAll(() => reg?.stop());
  const src = (): string[] => ['--creds', `${reg.user}:${reg.password}`, '--cert-dir', reg.certDir];

  it('roothash and import stream the layers: dmverity-vhd’s hashes, the chain ids', async () => {
    const ref = `docker://${reg.host}/lcow/golden:1`;
    const h = await lcow('image', 'roothash', ref, ...src());
    expect(h.err).toBe('');
    expect(h.out.trim().split('\n')).toEqual(golden.seed1!.lines);
    const root = join(dir.path, 'root-ok');
    const r = await lcow('--root', root, '--backend', 'inproc', 'import', ref, ...src(), '--json', '--no-sandbox');
    expect(r.err).toBe('');
    const j = JSON.parse(r.out);
    expect(j.layers).toEqual(chainIds(layerTars(1).map(sha)));
    expect(j.format).toBe('registry');
    const again = JSON.parse(
      (await lcow('--root', root, '--backend', 'inproc', 'import', ref, ...src(), '--json', '--no-sandbox')).out,
    );
    expect(again.reused).toEqual(j.layers);
  });

  it('wrong credentials and a damaged blob: typed errors, nothing left in the data root', async () => {
    const ref = `docker://${reg.host}/lcow/golden:1`;
    const root = join(dir.path, 'root-bad');
    const denied = await lcow(
      '--root',
      root,
      '--backend',
      'inproc',
      'import',
      ref,
      '--creds',
      'lcow:wrong',
      '--cert-dir',
      reg.certDir,
    );
    expect(denied.status).toBe(1);
    expect(denied.err).toMatch(/ERR_UNAUTHORIZED/);
    // Damage the top layer's blob in the registry's storage: the first two layers commit, the third not.
    const manifest = JSON.parse(
      await run('skopeo', [
        'inspect',
        '--raw',
        '--creds',
        `${reg.user}:${reg.password}`,
        '--cert-dir',
        reg.certDir,
        ref,
      ]),
    ) as { layers: { digest: string }[] };
    const hex = manifest.layers[2]!.digest.slice(7);
    const data = join(reg.data, 'sha256', hex.slice(0, 2), hex, 'data');
    const bytes = await readFile(data);
    bytes[bytes.length >> 1]! ^= 0x5a;
    await writeFile(data, bytes);
    const bad = await lcow('--root', root, '--backend', 'inproc', 'import', ref, ...src(), '--no-sandbox');
    expect(bad.status).toBe(1);
    expect(bad.err).toMatch(/ERR_DIGEST_MISMATCH: .*layer 2/);
    const chain = chainIds(layerTars(1).map(sha));
    const ls = await lcow('--root', root, '--backend', 'inproc', 'ls', '--json');
    const ids = (JSON.parse(ls.out) as { id: string }[]).map((l) => l.id).sort();
    expect(ids).toEqual(chain.slice(0, 2).sort());
    // No temporary file or half-made folder beside them.
    const leftovers = (await readdir(root)).filter((n) => !chain.includes(n) && !/^(lock|tmp|cache|scratch)$/.test(n));
    expect(leftovers).toEqual([]);
    await writeFile(data, Buffer.from(bytes.map((b, i) => (i === bytes.length >> 1 ? b ^ 0x5a : b))));
  });
});

const dockerReady = process.platform === 'linux' && process.getuid?.() === 0 && oracle('dockerd');

describe.runIf(dockerReady)('docker-daemon: references (a private dockerd)', () => {
  it('roothash --docker and import docker-daemon: give what the archive gives', { timeout: 300_000 }, async () => {
    const d = await startDockerd(join(dir.path, 'dockerd'), ['--storage-driver', 'vfs']);
    const env = process.env.DOCKER_HOST;
    try {
      await d.docker('load', '-i', archives.seed1!);
      process.env.DOCKER_HOST = d.host;
      const h = await lcow('image', '--docker', 'roothash', '-i', 'lcow/golden:1');
      expect(h.err).toBe('');
      expect(h.out.trim().split('\n')).toEqual(golden.seed1!.lines);
      const r = await lcow(
        '--root',
        join(dir.path, 'root-daemon'),
        '--backend',
        'inproc',
        'import',
        'docker-daemon:lcow/golden:1',
        '--json',
      );
      expect(JSON.parse(r.out).layers).toEqual(chainIds(layerTars(1).map(sha)));
      const missing = await lcow('image', 'inspect', 'docker-daemon:lcow/nope:1');
      expect(missing.err).toMatch(/ERR_IMAGE_NOT_FOUND/);
    } finally {
      if (env === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = env;
      await d.stop();
    }
  });
});
