// The fast path and pinned root hashes against a content store we control (containerd's Content API served by
// the test, from our .proto): a blob converted straight into a committed layer (hcsshim's layout, its root
// hash dmverity-vhd's), a download under way waited for, and a store that lies — bytes that do not hash to
// the digest, a stream cut short, a layer whose diff id does not make the chain — each refused with nothing
// left. Pins: a layer hashing otherwise is refused at commit and, committed before the pin, at mount.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anchor, dockerSave, inCI, makeTar, rootWithLoop, tempDir } from '@lcow/testkit';
import { loadProto } from '../src/proto.ts';
import { LAYER_DIGEST_LABEL, ROOT_HASH_LABEL, SNAPSHOT_REF_LABEL, Snapshotter, loadPins } from '../src/index.ts';

const ready = process.platform === 'linux' && rootWithLoop();
if (!ready && inCI) throw new Error('CI=true: the fast-path tests need root with loop devices');

const sha = (b: Uint8Array | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const chainOf = (parent: string, diffId: string): string => (parent ? sha(`${parent} ${diffId}`) : diffId);

const M = 1_600_000_000;
const BASE = makeTar([
  { path: 'etc/', type: 'dir', mtime: M },
  { path: 'etc/motd', body: 'from the content store\n', mtime: M },
  { path: 'usr/', type: 'dir', mtime: M },
  { path: 'usr/data', body: Buffer.alloc(300_000, 7), mtime: M },
]);
const TOP = makeTar([
  { path: 'etc/', type: 'dir', mtime: M },
  { path: 'etc/.wh.motd', body: '', mtime: M },
  { path: 'etc/top', body: 'second layer\n', mtime: M },
]);
/**
 * dmverity-vhd's root hashes of BASE and TOP (`dmverity-vhd --tarball IMAGE roothash -i fast/path:1`, the
 * ../shared/anchors build), recorded on 2026-12-07; checked live below wherever the anchor is present.
 */
const DMVERITY = {
  base: '8972d464d316fd9a2ae565dddcf2224752ae4b1c53aca5dab7eeee91ec678cc8',
  top: 'db8464caa784f51ad3eba859f0c43dbe2d342ef3cd646597f374a77127524cf5',
};

interface Served {
  bytes: Buffer;
  /** What Info says (default: the bytes' digest and length). */
  digest?: string;
  size?: number;
  /** Appears only after this many ms, with an ingest reported meanwhile. */
  after?: number;
}

/** containerd's Content service (Info, Read, ListStatuses) on a unix socket, serving `blobs`. */
async function contentServer(socket: string, blobs: Map<string, Served>): Promise<grpc.Server> {
  const pkg = loadProto('content.proto') as unknown as {
    containerd: { services: { content: { v1: { Content: { service: grpc.ServiceDefinition } } } } };
  };
  const born = Date.now();
  const present = (d: string): Served | undefined => {
    const b = blobs.get(d);
    return b && Date.now() - born >= (b.after ?? 0) ? b : undefined;
  };
  const server = new grpc.Server();
  server.addService(pkg.containerd.services.content.v1.Content.service, {
    Info: (call: grpc.ServerUnaryCall<{ digest: string }, unknown>, done: grpc.sendUnaryData<unknown>) => {
      if (call.metadata.get('containerd-namespace')[0] !== 'default')
        return done({ code: grpc.status.FAILED_PRECONDITION, details: 'namespace required' });
      const b = present(call.request.digest);
      if (!b) return done({ code: grpc.status.NOT_FOUND, details: `content digest ${call.request.digest}: not found` });
      done(null, { info: { digest: call.request.digest, size: b.size ?? b.bytes.length, labels: {} } });
    },
    Read: (call: grpc.ServerWritableStream<{ digest: string }, unknown>) => {
      const b = present(call.request.digest)!;
      for (let at = 0; at < b.bytes.length; at += 1 << 16)
        call.write({ offset: at, data: b.bytes.subarray(at, at + (1 << 16)) });
      call.end();
    },
    ListStatuses: (_call: unknown, done: grpc.sendUnaryData<unknown>) => {
      const elapsed = Date.now() - born;
      done(null, {
        statuses: [...blobs]
          .filter(([, b]) => elapsed < (b.after ?? 0))
          .map(([d, b]) => ({
            ref: `layer-${d}`,
            offset: Math.floor((b.bytes.length * elapsed) / b.after!),
            total: b.bytes.length,
            expected: d,
          })),
      });
    },
  });
  await new Promise<void>((res, rej) =>
    server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
  );
  return server;
}

let dir: { path: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lcow-fast-path-');
});
afterAll(() => dir?.cleanup());

const gzBase = gzipSync(BASE);
const gzTop = gzipSync(TOP);
const baseChain = sha(BASE);
const topChain = chainOf(baseChain, sha(TOP));

/** A snapshotter on its own root, reading from a content server of `blobs`; both closed after `fn`. */
async function withStore(
  name: string,
  blobs: Map<string, Served>,
  opts: Parameters<typeof Snapshotter.open>[1],
  fn: (s: Snapshotter, logs: string[]) => Promise<void>,
): Promise<void> {
  const socket = join(dir.path, `${name}.sock`);
  const server = await contentServer(socket, blobs);
  const logs: string[] = [];
  const s = await Snapshotter.open(join(dir.path, name), {
    containerdAddress: socket,
    log: (l) => logs.push(l),
    ...opts,
  });
  try {
    await fn(s, logs);
  } finally {
    await s.close();
    server.forceShutdown();
  }
}

/** What the unpacker sends with `Prepare`: the chain it will commit, and (from the CRI) the blob. */
const unpack = (chain: string, blob: Buffer): Record<string, string> => ({
  [SNAPSHOT_REF_LABEL]: chain,
  [LAYER_DIGEST_LABEL]: sha(blob),
});
const ns = { namespace: 'default' };

/** Resolves with the code of a rejection (or 'resolved'). */
const codeOf = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'resolved',
    (e: { code?: string }) => e.code ?? String(e),
  );

describe.runIf(ready)('the fast path: layers converted from containerd’s content store', () => {
  it("converts each blob into a committed layer named for its chain (ALREADY_EXISTS), root hashes dmverity-vhd's", async () => {
    const blobs = new Map<string, Served>([
      [sha(gzBase), { bytes: gzBase }],
      [sha(gzTop), { bytes: gzTop }],
    ]);
    await withStore('hcsshim', blobs, { layout: 'hcsshim' }, async (s, logs) => {
      expect(await codeOf(s.prepare('default/1/extract-1 base', '', unpack(baseChain, gzBase), ns))).toBe(
        'ERR_ALREADY_EXISTS',
      );
      const base = s.list().find((x) => x.kind === 'committed')!;
      expect(base).toMatchObject({ key: baseChain, parent: '' });
      expect(await codeOf(s.prepare('default/2/extract-2 top', baseChain, unpack(topChain, gzTop), ns))).toBe(
        'ERR_ALREADY_EXISTS',
      );
      // Asked again (another namespace, the same parent): there already, nothing converted.
      expect(await codeOf(s.prepare('other/3/extract-3 top', baseChain, unpack(topChain, gzTop), ns))).toBe(
        'ERR_ALREADY_EXISTS',
      );
      const committed = s.list().filter((x) => x.kind === 'committed');
      expect(committed).toHaveLength(2);
      expect(s.list()).toHaveLength(2); // no active snapshot was ever made
      expect(logs.filter((l) => l.includes('converted from containerd')).length).toBe(2);
      const top = committed.find((x) => x.parent === baseChain)!;
      expect(top.key).toMatch(new RegExp(`^${topChain}@[0-9a-f]{16}$`));
      expect(top.labels[SNAPSHOT_REF_LABEL]).toBe(topChain);
      // The root hashes dmverity-vhd computes for the same image.
      const want = await dmverityHashes();
      expect([base.labels[ROOT_HASH_LABEL], top.labels[ROOT_HASH_LABEL]]).toEqual(want);
      // What containerd would mount: the two layers' union, the whiteout applied.
      const view = await s.view('a view', top.key);
      const at = view[0]!.source;
      expect(await readFile(join(at, 'etc/top'), 'utf8')).toBe('second layer\n');
      await expect(readFile(join(at, 'etc/motd'))).rejects.toThrow(/ENOENT/);
      expect((await readFile(join(at, 'usr/data'))).length).toBe(300_000);
      await s.remove('a view');
    });
  });

  it('waits while the blob is being downloaded; with no download under way, prepares for the applier', async () => {
    const blobs = new Map<string, Served>([[sha(gzBase), { bytes: gzBase, after: 1500 }]]);
    await withStore('waits', blobs, {}, async (s) => {
      const t0 = Date.now();
      expect(await codeOf(s.prepare('k1', '', unpack(baseChain, gzBase), ns))).toBe('ERR_ALREADY_EXISTS');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
      // A blob nobody downloads: an active snapshot, as without the fast path.
      const mounts = await s.prepare('k2', '', unpack(sha(TOP), gzTop), ns);
      expect(mounts[0]).toMatchObject({ type: 'bind', options: ['rbind', 'rw'] });
      expect(s.stat('k2').kind).toBe('active');
      await s.remove('k2');
    });
  });

  it('a store that lies: bytes that are not the digest, a stream cut short, a layer of another chain — refused, nothing left', async () => {
    const other = makeTar([{ path: 'x', body: 'not the layer', mtime: M }]);
    const blobs = new Map<string, Served>([
      // Info says the digest of gzBase, the bytes are another blob's.
      [sha(gzBase), { bytes: gzipSync(other), size: gzipSync(other).length }],
      // Fewer bytes than Info says.
      [sha(gzTop), { bytes: gzTop.subarray(0, gzTop.length - 20), size: gzTop.length }],
    ]);
    await withStore('lies', blobs, {}, async (s) => {
      const a = s.prepare('k1', '', unpack(baseChain, gzBase), ns);
      await expect(a).rejects.toMatchObject({ code: 'ERR_FAILED_PRECONDITION' });
      await expect(a).rejects.toThrow(/hash|chain/);
      await expect(s.prepare('k2', '', unpack(sha(TOP), gzTop), ns)).rejects.toThrow(/bytes read|hash/);
      // The blob is what the store says, but its layer is not the chain the unpacker names.
      blobs.set(sha(gzBase), { bytes: gzBase });
      await expect(s.prepare('k3', '', unpack(sha('some other chain'), gzBase), ns)).rejects.toThrow(
        /holds the layer sha256:[0-9a-f]{64}, whose chain id on no parent is/,
      );
      expect(s.list()).toEqual([]);
      expect(await s.driver.store.list()).toEqual([]);
    });
  });

  it('pins: a layer hashing otherwise is refused at commit; one committed before the pin, at mount', async () => {
    const want = await dmverityHashes();
    const pinFile = join(dir.path, 'pins.json');
    const blobs = new Map<string, Served>([
      [sha(gzBase), { bytes: gzBase }],
      [sha(gzTop), { bytes: gzTop }],
    ]);
    // The right pin for the base, a wrong one for the top.
    await writeFile(pinFile, JSON.stringify({ [sha(BASE)]: want[0], [sha(TOP)]: 'ab'.repeat(32) }));
    const pins = await loadPins(pinFile);
    await withStore('pinned', blobs, { layout: 'hcsshim', pins }, async (s) => {
      expect(await codeOf(s.prepare('k1', '', unpack(baseChain, gzBase), ns))).toBe('ERR_ALREADY_EXISTS');
      const top = s.prepare('k2', baseChain, unpack(topChain, gzTop), ns);
      await expect(top).rejects.toMatchObject({ code: 'ERR_FAILED_PRECONDITION' });
      await expect(top).rejects.toThrow(`its pin says ${'ab'.repeat(32)}`);
      expect(s.list().map((x) => x.key)).toEqual([baseChain]);
      expect(await s.driver.store.list()).toHaveLength(1);
    });
    // Committed with no pins; then the snapshotter is started with a pin the layer does not match.
    await withStore('pinned-later', blobs, { layout: 'hcsshim' }, async (s) => {
      expect(await codeOf(s.prepare('k1', '', unpack(baseChain, gzBase), ns))).toBe('ERR_ALREADY_EXISTS');
    });
    await writeFile(pinFile, JSON.stringify({ [sha(BASE)]: 'cd'.repeat(32) }));
    await withStore('pinned-later', blobs, { layout: 'hcsshim', pins: await loadPins(pinFile) }, async (s) => {
      await expect(s.view('v', baseChain)).rejects.toThrow(`its pin says ${'cd'.repeat(32)}`);
      expect(s.list().map((x) => x.key)).toEqual([baseChain]);
    });
  });

  it('pin files that are not pin files are refused, naming the file and the entry', async () => {
    const f = join(dir.path, 'bad-pins.json');
    for (const [text, why] of [
      ['[1,2]', /not an object/],
      ['{"sha256:zz": "00"}', /is not a diff id/],
      [`{"${sha('x')}": "short"}`, /not 64 hex digits/],
      ['{', /not JSON/],
    ] as const) {
      await writeFile(f, text);
      await expect(loadPins(f)).rejects.toThrow(why);
    }
    await expect(loadPins('/dev/zero')).rejects.toThrow(/not a regular file/);
  });
});

/** dmverity-vhd's root hashes of [BASE, TOP]: live from the anchor where it is, else as recorded. */
async function dmverityHashes(): Promise<string[]> {
  const tool = anchor('dmverity-vhd');
  if (!tool) {
    if (!DMVERITY.base) throw new Error('no recorded dmverity-vhd root hashes and no anchor to compute them');
    return [DMVERITY.base, DMVERITY.top];
  }
  const image = join(dir.path, 'fast-path.tar');
  await dockerSave(image, [BASE, TOP], 'fast/path:1');
  const out = execFileSync(tool, ['--tarball', image, 'roothash', '-i', 'fast/path:1'], { encoding: 'utf8' });
  const live = [...out.matchAll(/root hash: ([0-9a-f]{64})/g)].map((m) => m[1]!);
  if (DMVERITY.base) expect(live).toEqual([DMVERITY.base, DMVERITY.top]);
  return live;
}
