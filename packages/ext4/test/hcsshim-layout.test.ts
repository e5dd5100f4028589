// layout: 'hcsshim' — byte for byte what hcsshim's tar2ext4 writes, so root digests match a Windows
// host's. Proven three ways: against golden image hashes and digests recorded with hcsshim's converter
// (test/hcsshim/golden.json, made by test/hcsshim/make-golden.ts), live against that converter where
// ../shared/anchors has it (including a large real tree), and with independent tools: e2fsck finds only
// hcsshim's known deviation, veritysetup accepts the hash tree, and our reader reads the same tree as
// from our own layout.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anchor as referenceTool, oracle, run, tempDir } from '@lcow/testkit';
import { Ext4Fs, convert, rootDigest } from '../src/index.ts';
import { CASES, FLAG_SETS, caseTar } from './hcsshim/cases.ts';
import { readerTree } from './helpers.ts';

const anchor = referenceTool('hcsshim-tar2ext4') ?? '';
const hasAnchor = anchor !== '';
const golden = JSON.parse(await readFile(join(import.meta.dirname, 'hcsshim/golden.json'), 'utf8')) as Record<
  string,
  { images: Record<string, string>; digest: string }
>;

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-hcsshim-');
});
afterAll(() => dir?.cleanup());

const sha = async (p: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

/** Our error code for each reason hcsshim gives in golden.json ("error: ENTRY: REASON"). */
const REASONS: Record<string, string> = {
  'cannot overwrite file with non-inline data': 'ERR_TAR_FORMAT',
  'path not found': 'ERR_TAR_FORMAT',
  'could not fit xattr user.k25': 'ERR_TAR_FORMAT',
};

/**
 * Our refusal in golden.json's terms: the golden string when ours has the code for hcsshim's reason and
 * names the same entry first, else what ours said (so the comparison shows both).
 */
function refusal(e: unknown, want: string): string {
  const { code, message } = e as { code?: string; message?: string };
  const m = /^error: (.*): ([^:]*)$/.exec(want);
  if (m && code === REASONS[m[2]!] && message?.startsWith(`${m[1]}: `)) return want;
  return `ours: ${code} ${message}`;
}

async function ours(tarPath: string, out: string, opts: object, want: string): Promise<string> {
  try {
    await convert(tarPath, out, { layout: 'hcsshim', fsync: false, ...opts });
    return await sha(out);
  } catch (e) {
    return refusal(e, want);
  }
}

/** hcsshim's ConvertAndComputeRootDigest: what a Windows host computes for a layer. */
const HOST_DIGEST = { layout: 'hcsshim', convertWhiteouts: true, maximumDiskSize: 128 * 2 ** 30 } as const;

describe('the hcsshim layout', () => {
  it('matches the golden image hashes and root digests of every case and flag set', { timeout: 600_000 }, async () => {
    expect(Object.keys(golden).sort()).toEqual(Object.keys(CASES).sort());
    for (const name of Object.keys(CASES)) {
      const tarPath = join(dir.path, `${name}.tar`);
      await writeFile(tarPath, caseTar(name));
      for (const { flags, opts } of FLAG_SETS) {
        const want = golden[name]!.images[flags.join(' ')]!;
        expect(await ours(tarPath, join(dir.path, `${name}.img`), opts, want), `${name} ${flags.join(' ')}`).toBe(want);
      }
      const want = golden[name]!.digest;
      let digest: string;
      try {
        const r = await convert(tarPath, join(dir.path, `${name}.d.img`), {
          layout: 'hcsshim',
          convertWhiteouts: true,
          maximumDiskSize: 128 * 2 ** 30,
          verity: true,
          fsync: false,
        });
        digest = r.rootDigest!;
      } catch (e) {
        digest = refusal(e, want);
      }
      expect(digest, `${name} digest`).toBe(want);
      // The digest-only path (no image written) gives the same answer, or the same kind of refusal.
      const only = await rootDigest(tarPath, HOST_DIGEST).then(
        (r) => r.rootDigest,
        (e: unknown) => refusal(e, want),
      );
      expect(only, `${name} digest without an image`).toBe(want);
    }
  });

  it.skipIf(!hasAnchor)(
    'equals hcsshim-tar2ext4 live on a large real tree (GNU tar of /usr/share), image and -digest',
    { timeout: 600_000 },
    async () => {
      const tarPath = join(dir.path, 'share.tar');
      execFileSync('tar', ['--format=posix', '-C', '/', '-cf', tarPath, 'usr/share'], { stdio: 'ignore' });
      const theirs = join(dir.path, 'share.h.img');
      execFileSync(anchor, ['-i', tarPath, '-o', theirs, '-overlay']);
      expect(await ours(tarPath, join(dir.path, 'share.o.img'), { convertWhiteouts: true }, '')).toBe(
        await sha(theirs),
      );
      const want = execFileSync(anchor, ['-i', tarPath, '-digest']).toString().trim();
      const r = await convert(tarPath, join(dir.path, 'share.d.img'), {
        layout: 'hcsshim',
        convertWhiteouts: true,
        maximumDiskSize: 128 * 2 ** 30,
        verity: true,
        fsync: false,
      });
      expect(r.rootDigest).toBe(want);
      expect((await rootDigest(tarPath, HOST_DIGEST)).rootDigest).toBe(want);
    },
  );

  it.skipIf(!oracle('e2fsck'))("e2fsck finds only hcsshim's known deviation: the inode bitmap padding", async () => {
    const tarPath = join(dir.path, 'xattrs.tar');
    await writeFile(tarPath, caseTar('xattrs'));
    const img = join(dir.path, 'xattrs.e2fsck.img');
    await convert(tarPath, img, { layout: 'hcsshim', convertWhiteouts: true, fsync: false });
    let out = '';
    try {
      out = await run('e2fsck', ['-fn', img]);
    } catch (e) {
      out = (e as Error).message;
    }
    const complaints = out.split('\n').filter((l) => l.includes('Fix?'));
    expect(complaints.length).toBeGreaterThan(0);
    for (const c of complaints) expect(c).toMatch(/Padding at end of inode bitmap is not set/);
  });

  it.skipIf(!oracle('veritysetup'))(
    'veritysetup verifies the hash tree appended after an hcsshim-layout image',
    async () => {
      const tarPath = join(dir.path, 'xattrs.tar');
      await writeFile(tarPath, caseTar('xattrs'));
      const img = join(dir.path, 'xattrs.verity.img');
      const r = await convert(tarPath, img, { layout: 'hcsshim', convertWhiteouts: true, verity: true, fsync: false });
      await run('veritysetup', [
        'verify',
        img,
        img,
        r.rootDigest!,
        `--hash-offset=${r.bytes}`,
        `--data-blocks=${r.bytes / 4096}`,
      ]);
    },
  );

  it('reads back with our reader as the same tree our own layout gives', async () => {
    for (const name of ['types', 'xattrs', 'overwrite', 'deep']) {
      const tarPath = join(dir.path, `${name}.tar`);
      await writeFile(tarPath, caseTar(name));
      const trees = [];
      for (const layout of ['hcsshim', 'lcow'] as const) {
        const img = join(dir.path, `${name}.${layout}.read.img`);
        await convert(tarPath, img, { layout, convertWhiteouts: true, fsync: false });
        const fs = await Ext4Fs.open(img);
        try {
          const t = await readerTree(fs, '/', { skip: (rel) => rel === 'lost+found' });
          for (const [rel, e] of t) {
            e.nlink = 0;
            // Deviations of hcsshim's, listed in the README and checked here: symlinks are always
            // 0777, and a time before 1970 is stored as uint64(seconds), which reads back as after 2038.
            if (e.type === 'symlink') {
              if (layout === 'hcsshim') expect(e.mode, rel).toBe(0o777);
              e.mode = 0;
            }
            // A directory listed twice keeps, from its first entry, only the attributes that fitted in its
            // inode (hcsshim merges those and rewrites its attribute block from the second entry alone).
            if (rel === 'xd') {
              expect(Object.keys(e.xattrs).sort()).toEqual(
                layout === 'hcsshim' ? ['user.second'] : ['user.dir', 'user.second'],
              );
              e.xattrs = {};
            }
            if (rel === 'old') {
              if (layout === 'hcsshim') expect(e.mtimeNs).toBe(12_884_901_882_000_000_000n);
              else expect(e.mtimeNs).toBe(-5_250_000_000n);
              e.mtimeNs = 0n;
            }
          }
          trees.push(t);
        } finally {
          await fs.close();
        }
      }
      expect(trees[0], name).toEqual(trees[1]);
    }
  });
});
