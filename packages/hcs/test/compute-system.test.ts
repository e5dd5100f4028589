// The real koffi declarations against a fake vmcompute built here with cc: the same C signatures, an
// in-memory state machine, "operation pending" answers completed by notifications from other threads.
import { describe, expect, it } from 'vitest';
import { oracle } from '@lcow/testkit';
import { ComputeSystem, HResult, HcsError, Notification, libraryPath } from '../src/index.ts';
import { useFakeVmcompute, type fakeControls } from '@lcow/testkit/fake-vmcompute';

const hasCc = oracle('cc');
let library: string;
let fake: ReturnType<typeof fakeControls>;
let n = 0;
const id = (): string => `lcow-test-${process.pid}-${n++}`;
const LCOW_CONFIG = {
  SystemType: 'Container',
  HvPartition: true,
  HvRuntime: { LinuxKernelFile: 'kernel', LinuxInitrdFile: 'initrd.img' },
};

// Every test must leave no out-string unfreed and no handle open.
useFakeVmcompute(hasCc, (l, f) => {
  library = l;
  fake = f;
});

describe('loading', () => {
  it('off Windows without a library path: ERR_UNSUPPORTED_PLATFORM with a clear message', () => {
    const saved = process.env.LCOW_VMCOMPUTE_LIB;
    delete process.env.LCOW_VMCOMPUTE_LIB;
    try {
      expect(() => libraryPath(undefined, 'linux')).toThrow(/exists only on Windows \(this is linux\)/);
      expect(libraryPath(undefined, 'win32')).toBe('vmcompute.dll');
    } finally {
      if (saved !== undefined) process.env.LCOW_VMCOMPUTE_LIB = saved;
    }
  });

  it('a library that does not exist: ERR_UNSUPPORTED_PLATFORM naming it', async () => {
    await expect(ComputeSystem.create('x', {}, { library: '/nonexistent/libvmcompute.so' })).rejects.toMatchObject({
      code: 'ERR_UNSUPPORTED_PLATFORM',
      message: expect.stringContaining('/nonexistent/libvmcompute.so'),
    });
  });
});

describe.skipIf(!hasCc)('compute systems over the fake vmcompute', () => {
  it('create → start (pending, completed by a callback from another thread) → properties → modify → terminate → exited → close', async () => {
    const name = id();
    const cs = await ComputeSystem.create(name, LCOW_CONFIG, { library });
    expect(await cs.properties()).toMatchObject({ Id: name, State: 'Created', RuntimeOsType: 'Linux' });
    await cs.start();
    expect(await cs.properties()).toMatchObject({ State: 'Running' });
    await cs.modify({
      ResourceType: 'MappedVirtualDisk',
      RequestType: 'Add',
      Settings: { HostPath: 'C:\\l\\layer.vhd', ContainerPath: '/tmp/d1', CreateInUtilityVM: true },
    });
    expect(await cs.properties()).toMatchObject({ Modifications: 1 });
    await cs.terminate();
    await cs.waitExited({ timeoutMs: 5000 });
    expect(await cs.properties()).toMatchObject({ State: 'Stopped' });
    await cs.terminate(); // already stopped counts as done
    await cs.close();
    await cs.close();
    await expect(cs.start()).rejects.toMatchObject({ code: 'ERR_HANDLE_CLOSED' });
  });

  it('failing calls: the HRESULT by name and the decoded result document', async () => {
    await expect(ComputeSystem.create(id(), 'not json', { library })).rejects.toMatchObject({
      code: 'ERR_HCS',
      hresult: HResult.HCS_E_INVALID_JSON,
      result: { ErrorMessage: 'The JSON document is invalid: value expected (offset 0)' },
      message: expect.stringMatching(
        /HcsCreateComputeSystem: .*The JSON document is invalid: value expected \(offset 0\): HCS_E_INVALID_JSON \(0xC037010D\)/,
      ),
    });
    const name = id();
    const cs = await ComputeSystem.create(name, LCOW_CONFIG, { library });
    await expect(ComputeSystem.create(name, LCOW_CONFIG, { library })).rejects.toMatchObject({
      hresult: HResult.HCS_E_SYSTEM_ALREADY_EXISTS,
    });
    await cs.start();
    await expect(cs.start()).rejects.toMatchObject({ code: 'ERR_HCS', hresult: HResult.HCS_E_INVALID_STATE });
    fake.arm('op=Modify;hr=0x80070005;result={"Error":-2147024891,"ErrorMessage":"Access is denied."}');
    const e = await cs.modify({}).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(HcsError);
    expect(e).toMatchObject({ hresult: HResult.E_ACCESSDENIED, result: { ErrorMessage: 'Access is denied.' } });
    await cs.terminate();
    await cs.waitExited();
    await cs.close();
  });

  it('a notification that never comes: ERR_TIMEOUT, and the half-made system is terminated and closed', async () => {
    fake.arm('op=Create;silent=1');
    const t = Date.now();
    await expect(ComputeSystem.create(id(), LCOW_CONFIG, { library, timeoutMs: 150 })).rejects.toMatchObject({
      code: 'ERR_TIMEOUT',
      message: expect.stringMatching(/HcsCreateComputeSystem: .*no notification after 0\.15 s/),
    });
    expect(Date.now() - t).toBeLessThan(2000);
  });

  it('an AbortSignal ends the wait for a start', async () => {
    const cs = await ComputeSystem.create(id(), LCOW_CONFIG, { library });
    fake.arm('op=Start;silent=1');
    const ac = new AbortController();
    const started = cs.start({ signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await expect(started).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    await cs.terminate();
    await cs.close();
  });

  it('the system exiting while a start is awaited: HCS_E_UNEXPECTED_EXIT', async () => {
    const cs = await ComputeSystem.create(id(), LCOW_CONFIG, { library });
    fake.arm('op=Start;exit=1');
    await expect(cs.start()).rejects.toMatchObject({ code: 'ERR_HCS', hresult: HResult.HCS_E_UNEXPECTED_EXIT });
    await cs.waitExited();
    await cs.close();
  });

  it('a lost service connection ends waits with an error; a failed completion status carries its HRESULT', async () => {
    const name = id();
    const cs = await ComputeSystem.create(name, LCOW_CONFIG, { library });
    fake.arm('op=Start;silent=1');
    const started = cs.start();
    await new Promise((r) => setTimeout(r, 20));
    fake.notify(name, Notification.ServiceDisconnect);
    await expect(started).rejects.toMatchObject({ message: expect.stringMatching(/lost communication/) });
    await cs.terminate();
    await cs.close();
  });

  it('50 systems at once: one trampoline, distinct contexts, every notification to its own system', async () => {
    const names = Array.from({ length: 50 }, id);
    const all = await Promise.all(names.map((x) => ComputeSystem.create(x, LCOW_CONFIG, { library })));
    await Promise.all(all.map((cs) => cs.start()));
    const props = await Promise.all(all.map((cs) => cs.properties()));
    expect(props.map((p) => (p as { Id: string }).Id)).toEqual(names);
    await Promise.all(
      all.map(async (cs) => {
        await cs.terminate();
        await cs.waitExited();
        await cs.close();
      }),
    );
  });

  it('open an existing system by id; a missing one is HCS_E_SYSTEM_NOT_FOUND', async () => {
    const name = id();
    const cs = await ComputeSystem.create(name, LCOW_CONFIG, { library });
    await cs.start();
    const again = await ComputeSystem.open(name, { library });
    expect(await again.properties()).toMatchObject({ Id: name, State: 'Running' });
    await again.close();
    await expect(ComputeSystem.open('no-such-system', { library })).rejects.toMatchObject({
      hresult: HResult.HCS_E_SYSTEM_NOT_FOUND,
    });
    await cs.terminate();
    await cs.waitExited();
    await cs.close();
  });
});

describe.skipIf(!hasCc)('the fake is a strict witness of what the service parses', () => {
  const invalid = { code: 'ERR_HCS', hresult: HResult.HCS_E_INVALID_JSON };

  it.each([
    ['junk after the document', '{"SystemType":"Container"} x', /text after the document/],
    ['no SystemType', { Name: 'x' }, /"SystemType" is required/],
    ['an unknown field', { ...LCOW_CONFIG, HvRuntim: {} }, /unknown field "HvRuntim"/],
    ['a wrong type', { ...LCOW_CONFIG, HvPartition: 'true' }, /HvPartition: wrong type/],
    ['a VM without its runtime', { SystemType: 'Container', HvPartition: true }, /needs its HvRuntime/],
    [
      'a disk outside the VM',
      { ...LCOW_CONFIG, MappedVirtualDisks: [{ HostPath: 'C:\\d.vhdx' }] },
      /CreateInUtilityVM/,
    ],
  ])('create refuses %s', async (_, doc, why) => {
    fake.journal();
    await expect(ComputeSystem.create(id(), doc, { library })).rejects.toMatchObject({
      ...invalid,
      result: { ErrorMessage: expect.stringMatching(why) },
    });
    expect(fake.journal().filter((l) => l.startsWith('create '))).toHaveLength(1);
  });

  it('modify: wrong documents, a remove of a disk never added, a second add of the same file', async () => {
    const cs = await ComputeSystem.create(id(), LCOW_CONFIG, { library });
    await cs.start();
    const disk = { HostPath: 'C:\\l\\a.vhdx', ContainerPath: '/tmp/d1', CreateInUtilityVM: true, AttachOnly: false };
    for (const [doc, why] of [
      [{ ResourceType: 'MappedVirtualDisk', RequestType: 'Add' }, /"Settings" is required/],
      [{ ResourceType: 'Network', RequestType: 'Add', Settings: disk }, /not one a utility VM modifies/],
      [{ ResourceType: 'MappedVirtualDisk', RequestType: 'Attach', Settings: disk }, /RequestType "Attach"/],
      [
        { ResourceType: 'MappedVirtualDisk', RequestType: 'Add', Settings: { ...disk, ContainerPath: '' } },
        /ContainerPath/,
      ],
    ] as const)
      await expect(cs.modify(doc)).rejects.toMatchObject({
        ...invalid,
        result: { ErrorMessage: expect.stringMatching(why) },
      });
    await expect(
      cs.modify({ ResourceType: 'MappedVirtualDisk', RequestType: 'Remove', Settings: disk }),
    ).rejects.toMatchObject({
      hresult: 0x80070490,
    });
    await cs.modify({ ResourceType: 'MappedVirtualDisk', RequestType: 'Add', Settings: disk });
    await expect(
      cs.modify({ ResourceType: 'MappedVirtualDisk', RequestType: 'Add', Settings: disk }),
    ).rejects.toMatchObject({
      hresult: 0x80070020,
    });
    await cs.modify({ ResourceType: 'MappedVirtualDisk', RequestType: 'Remove', Settings: disk });
    await expect(cs.properties({ PropertyTypes: ['Everything'] })).rejects.toMatchObject(invalid);
    await cs.terminate();
    await cs.waitExited();
    await cs.close();
  });
});
