// The driver on the hcs backend, over the fake vmcompute library the @lcow/hcs tests build: what can run
// without Windows — the utility VM's lifecycle per mode, the hot-add requests for a chain, the guest's
// union mount, refcounts and removal. (File operations inside a real guest only Windows can prove.)
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extract } from 'tar-stream';
import { inspectDisk } from '@lcow/vhd';
import { RemoteFs } from '@lcow/hcs';
import { makeTar, oracle, run, tempDir } from '@lcow/testkit';
import { LcowDriver, parseDriverOptions } from '../src/index.ts';
import { RemoteContainerFs, hcsBackend } from '../src/backends/hcs.ts';
import { fakeGuest } from '../../hcs/test/fake-guest.ts';
import { fakeControls, fakeLibrary } from '@lcow/testkit/fake-vmcompute';

const hasCc = oracle('cc');
let dir: { path: string; cleanup: () => Promise<void> };
let fake: ReturnType<typeof fakeControls>;
let library: string;

beforeAll(async () => {
  dir = await tempDir('lcow-hcs-backend-');
  if (!hasCc) return;
  library = fakeLibrary();
  fake = fakeControls(library);
});
afterAll(() => dir?.cleanup());

async function driver(root: string, options: string[]): Promise<LcowDriver> {
  return (await driverWith(root, options)).d;
}

async function driverWith(
  root: string,
  options: string[],
): Promise<{ d: LcowDriver; backend: ReturnType<typeof hcsBackend> }> {
  const opts = ['lcow.backend=hcs', ...options];
  const backend = hcsBackend(join(dir.path, root), parseDriverOptions(opts), library);
  return { d: await LcowDriver.init(join(dir.path, root), opts, { backend }), backend };
}

/** The entries of a tar stream: name → content. */
async function tarEntries(tar: Readable): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, s, next) => {
      void text(s).then((t) => {
        out.set(h.name, t);
        next();
      }, reject);
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
    tar.on('error', reject);
  });
  tar.pipe(ex);
  await done;
  return out;
}

/** The journal's lines without the VM-internal noise, paths made relative to the test folder. */
function journal(): string[] {
  return fake
    .journal()
    .map((l) => l.split(dir.path.replace(/\//g, '\\/')).join('<root>').split(dir.path).join('<root>'));
}

describe.skipIf(!hasCc)('the hcs backend over the fake vmcompute', () => {
  it('safe mode: get attaches the chain and mounts the union in a VM of its own; put stops it', async () => {
    const d = await driver('safe', []);
    await d.create('base', null);
    await d.applyDiff('base', null, Readable.from([Buffer.from(makeTar([{ path: 'a', body: 'a' }]))]));
    await d.createReadWrite('box', 'base');
    journal();
    const fs = await d.get('box');
    expect(fs.path).toBeNull();
    expect(fs.readOnly).toBe(false);
    expect(await d.get('box')).toBe(fs);
    expect(d.refs('box')).toBe(2);
    const st = await d.status();
    expect(st).toMatchObject({ backend: 'hcs', mode: 'safe', vmMode: 'safe' });
    expect(st.vms).toHaveLength(1);
    expect(st.vms[0]).toMatchObject({ vmId: 'box', state: 'running', refs: 1 });
    expect(st.vms[0]!.disks.map((x) => [x.guestPath, x.readOnly])).toEqual([
      ['/tmp/d1', false],
      ['/tmp/d2', true],
    ]);
    const j = journal();
    expect(j.filter((l) => l.startsWith('modify'))).toEqual([
      expect.stringContaining('"HostPath":"<root>/safe/box/sandbox.vhdx","ContainerPath":"/tmp/d1"'),
      expect.stringMatching(/"HostPath":"<root>\/safe\/base\/layer.vhd","ContainerPath":"\/tmp\/d2".*"ReadOnly":true/),
    ]);
    expect(j).toContain(
      'run mount -t overlay overlay -o lowerdir=/tmp/d2,upperdir=/tmp/d1/upper,workdir=/tmp/d1/work /tmp/box-mount',
    );
    await d.put('box');
    expect(journal()).toEqual([]);
    await d.put('box');
    expect((await d.status()).vms).toEqual([]);
    const after = journal();
    expect(after).toContain('run umount /tmp/box-mount');
    expect(after.filter((l) => l.includes('"RequestType":"Remove"'))).toHaveLength(2);
    await d.remove('box');
    await d.cleanup();
    expect(fake.liveHandles()).toBe(0);
    expect(fake.liveAllocations()).toBe(0);
  });

  it('global mode: one VM serves every layer until cleanup; a failed boot leaves nothing behind', async () => {
    const d = await driver('global', ['lcow.globalmode=true']);
    await d.createReadWrite('a', null);
    await d.createReadWrite('b', null);
    await d.get('a');
    await d.get('b');
    let st = await d.status();
    expect(st.vms.map((v) => [v.vmId, v.refs, v.disks.length])).toEqual([['_lcow_global_svm_', 2, 2]]);
    await d.put('a');
    await d.put('b');
    st = await d.status();
    expect(st.vms.map((v) => [v.vmId, v.refs, v.disks.length])).toEqual([['_lcow_global_svm_', 0, 0]]);
    await d.cleanup();
    expect((await d.status()).vms).toEqual([]);

    fake.arm('op=Create;hr=0x80370103');
    await expect(d.get('a')).rejects.toMatchObject({ code: 'ERR_HCS' });
    expect(d.refs('a')).toBe(0);
    expect((await d.status()).vms).toEqual([]);
    expect(fake.liveHandles()).toBe(0);
  });

  it("the VM's scratch disk: a copy of cache/scratch.vhdx attached at boot at /tmp/scratch, gone when the VM stops", async () => {
    const { d, backend } = await driverWith('scratch', []);
    await d.createReadWrite('s1', null);
    await d.createReadWrite('s2', null);
    journal();
    await d.get('s1');
    const scratch = join(dir.path, 'scratch', 'scratch', 's1.vhdx');
    expect((await stat(scratch)).isFile()).toBe(true);
    const create = journal().find((l) => l.startsWith('create '))!;
    expect(create).toContain('"Name":"s1_svm"');
    expect(create).toContain(
      '"MappedVirtualDisks":[{"HostPath":"<root>/scratch/scratch/s1.vhdx","ContainerPath":"/tmp/scratch","CreateInUtilityVM":true,"AttachOnly":false}]',
    );
    expect(backend.scratchBlank.counts).toEqual({ made: 1, copies: 1 });
    // The second VM copies the cache instead of making one.
    await d.get('s2');
    expect(backend.scratchBlank.counts).toEqual({ made: 1, copies: 2 });
    const info = await inspectDisk(join(dir.path, 'scratch', 'cache', 'scratch.vhdx'));
    expect(info).toMatchObject({ format: 'vhdx', virtualSize: 20 * 2 ** 30, leaveBlocksAllocated: false });
    if (oracle('qemu-img') && oracle('e2fsck')) {
      const raw = join(dir.path, 'scratch-cache.raw');
      await run('qemu-img', ['convert', '-O', 'raw', join(dir.path, 'scratch', 'cache', 'scratch.vhdx'), raw]);
      await run('e2fsck', ['-fn', raw]);
    }
    await d.put('s1');
    await d.put('s2');
    expect(await readdir(join(dir.path, 'scratch', 'scratch'))).toEqual([]);
    await d.close();
    // A scratch disk a killed process left is deleted when the data root is opened again.
    await writeFile(join(dir.path, 'scratch', 'scratch', 'dead.vhdx'), 'left by a killed process');
    const again = await driver('scratch', []);
    expect(await readdir(join(dir.path, 'scratch', 'scratch'))).toEqual([]);
    await again.close();
  });

  it('sandboxes: dynamic VHDX copied from cache/sandbox.vhdx at the default size; other sizes and lcow.sandboxtype=fixed by mkfs', async () => {
    const d = await driver('sandboxes', []);
    expect(d.sandboxType).toBe('dynamic');
    await d.createReadWrite('a', null);
    await d.createReadWrite('b', null);
    expect(d.sandboxBlank.counts).toEqual({ made: 1, copies: 2 });
    const a = await inspectDisk(join(dir.path, 'sandboxes', 'a', 'sandbox.vhdx'));
    expect(a).toMatchObject({ format: 'vhdx', virtualSize: 20 * 2 ** 30, leaveBlocksAllocated: false });
    // Dynamic: the file holds metadata only, not 20 GiB.
    expect((await stat(join(dir.path, 'sandboxes', 'a', 'sandbox.vhdx'))).size).toBeLessThan(64 * 2 ** 20);
    await d.createReadWrite('big', null, { storageOpt: { 'lcow.sandboxsize': '25' } });
    expect(d.sandboxBlank.counts).toEqual({ made: 1, copies: 2 });
    expect((await inspectDisk(join(dir.path, 'sandboxes', 'big', 'sandbox.vhdx'))).virtualSize).toBe(25 * 2 ** 30);
    const fixed = await driver('sandboxes-fixed', ['lcow.sandboxtype=fixed']);
    await fixed.createReadWrite('f', null);
    expect(await inspectDisk(join(dir.path, 'sandboxes-fixed', 'f', 'sandbox.vhdx'))).toMatchObject({
      leaveBlocksAllocated: true,
    });
    await expect(driver('bad-type', ['lcow.sandboxtype=sparse'])).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      message: 'lcowdriver: init: lcow.sandboxtype "sparse": dynamic or fixed',
    });
    await d.close();
    await fixed.close();
  });

  it('lcow.timeout reaches every phase: start, hot-add, mount; bad values fail at init with the original messages', async () => {
    await expect(driver('timeout-bad', ['lcow.timeout=soon'])).rejects.toMatchObject({
      message: expect.stringContaining('lcow.timeout option could not be interpreted as an integer'),
    });
    await expect(driver('timeout-bad', ['lcow.timeout=-3'])).rejects.toMatchObject({
      message: expect.stringContaining('lcow.timeout option cannot be negative'),
    });
    const saved = process.env.OPENGCS_UVM_TIMEOUT_SECONDS;
    process.env.OPENGCS_UVM_TIMEOUT_SECONDS = 'x';
    try {
      // Checked even when the option is given, as the original.
      await expect(driver('timeout-bad', ['lcow.timeout=5'])).rejects.toMatchObject({
        message: expect.stringContaining('OPENGCS_UVM_TIMEOUT_SECONDS could not be interpreted as an integer'),
      });
      process.env.OPENGCS_UVM_TIMEOUT_SECONDS = '2';
      expect((await driverWith('timeout-env', [])).backend.timeoutMs).toBe(2000);
    } finally {
      if (saved === undefined) delete process.env.OPENGCS_UVM_TIMEOUT_SECONDS;
      else process.env.OPENGCS_UVM_TIMEOUT_SECONDS = saved;
    }
    const d = await driver('timeout', ['lcow.timeout=1']);
    await d.create('base', null);
    await d.applyDiff('base', null, Readable.from([Buffer.from(makeTar([{ path: 'a', body: 'a' }]))]));
    await d.createReadWrite('box', 'base');
    for (const [spec, phase] of [
      ['op=Start;delay=2500', /start/],
      ['op=Modify;delay=2500', /attach|hot-add|modify|\/sandbox\.vhdx/i],
      ['op=Run;cmd=mount ;delay=2500', /mount/],
    ] as const) {
      fake.arm(spec);
      const t0 = Date.now();
      const e = await d.get('box').then(
        () => null,
        (x: unknown) => x as { code?: string; message?: string },
      );
      const took = Date.now() - t0;
      expect(e, spec).toMatchObject({ code: 'ERR_TIMEOUT', message: expect.stringMatching(phase) });
      expect(took, spec).toBeLessThan(2400);
      expect(d.refs('box')).toBe(0);
      // Let the delayed call finish before the next case.
      await new Promise((r) => setTimeout(r, 2600 - took));
      await d.cleanup();
    }
    await d.close();
  });

  it('diff, changes, diffSize and diffGetter of a mounted sandbox go through the guest; the host file otherwise', async () => {
    const d = await driver('guest-diff', []);
    await d.create('base', null);
    await d.applyDiff('base', null, Readable.from([Buffer.from(makeTar([{ path: 'gone', body: 'old' }]))]));
    await d.createReadWrite('box', 'base');
    await d.get('box');
    journal();
    const tar = await tarEntries(d.diff('box', 'base'));
    // The fake guest's exportSandbox names the path it exported: the sandbox's own disk.
    expect(tar.get('exported-from')).toBe('/tmp/d1\n');
    expect(journal()).toContain('run exportSandbox -path /tmp/d1');
    expect(await d.changes('box', 'base')).toEqual([
      { path: '/exported-from', kind: 'add' },
      { path: '/gone', kind: 'delete' },
    ]);
    expect(await d.diffSize('box', 'base')).toBe('/tmp/d1\n'.length);
    // diffGetter reads through the guest's remotefs under the sandbox's upper/ (this fake guest has no
    // remotefs program, so the read fails there — the point is where it was sent).
    const getter = await d.diffGetter('box');
    journal();
    await expect(getter.get('exported-from')).rejects.toThrow();
    expect(journal().filter((l) => l.startsWith('run remotefs'))[0]).toMatch(/\/tmp\/d1\/upper/);
    await getter.close();
    // Against another layer than its parent, the guest cannot help: busy, put it first.
    await expect(d.changes('box', null)).rejects.toMatchObject({ code: 'ERR_LAYER_BUSY' });
    await d.put('box');
    journal();
    // Not attached: the host reads the (empty) sandbox file; no guest command runs.
    expect(await tarEntries(d.diff('box', 'base'))).toEqual(new Map());
    expect(await d.changes('box', 'base')).toEqual([]);
    expect(journal().filter((l) => l.includes('exportSandbox'))).toEqual([]);
    await d.close();
  });

  it("writes through the container filesystem use only what the 2019 guest's remotefs supports (no lchmod)", async () => {
    const host = join(dir.path, 'guest-root');
    await mkdir(join(host, 'ctr'), { recursive: true });
    const guest = fakeGuest(host);
    const fs = new RemoteContainerFs(new RemoteFs(guest.run, '/ctr', { idleTimeoutMs: 5000 }));
    await fs.writeFile('/etc-hosts', '127.0.0.1 localhost\n', 0o600);
    expect((await stat(join(host, 'ctr', 'etc-hosts'))).mode & 0o777).toBe(0o600);
    expect((await fs.readFile('/etc-hosts')).toString()).toBe('127.0.0.1 localhost\n');
    expect(guest.log.map((a) => a[1])).not.toContain('lchmod');
    await expect(fs.lchmod('/etc-hosts', 0o644)).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED' });
  });

  it("global mode: the VM's HCS name is the original's _lcow_global_svm_", async () => {
    const d = await driver('global-name', ['lcow.globalmode=true']);
    await d.createReadWrite('g', null);
    journal();
    await d.get('g');
    const create = journal().find((l) => l.startsWith('create '))!;
    expect(create).toContain('"Name":"_lcow_global_svm_"');
    expect(create).toContain('<root>/global-name/scratch/_lcow_global_svm_.vhdx');
    await d.put('g');
    await d.close();
  });
});
