// The driver on the hcs backend, over the fake vmcompute library the @lcow/hcs tests build: what can run
// without Windows — the utility VM's lifecycle per mode, the hot-add requests for a chain, the guest's
// union mount, refcounts and removal. (File operations inside a real guest only Windows can prove.)
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTar, oracle, tempDir } from '@lcow/testkit';
import { LcowDriver, parseDriverOptions } from '../src/index.ts';
import { hcsBackend } from '../src/backends/hcs.ts';
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
  const opts = ['lcow.backend=hcs', ...options];
  return LcowDriver.init(join(dir.path, root), opts, {
    backend: hcsBackend(join(dir.path, root), parseDriverOptions(opts), library),
  });
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
});
