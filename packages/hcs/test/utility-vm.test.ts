// The LCOW utility VM over the fake vmcompute: boot from lcow.* options, hot-add/remove with the original's
// modify requests, union mounts as guest argument vectors, guest commands, terminate; nothing leaked.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { oracle } from '@lcow/testkit';
import { LcowUtilityVm } from '../src/index.ts';
import { useFakeVmcompute, type fakeControls } from '@lcow/testkit/fake-vmcompute';

const hasCc = oracle('cc');
let library: string;
let fake: ReturnType<typeof fakeControls>;
let kird: string;
let n = 0;
// As @lcow/svm-pool's unionMountArgs builds it (the driver passes that one in).
const mountArgs = (t: string, l: readonly string[], u?: string): string[] => [
  'mount',
  '-t',
  'overlay',
  'overlay',
  '-o',
  `lowerdir=${l.join(':')}${u ? `,upperdir=${u}/upper,workdir=${u}/work` : ''}`,
  t,
];

useFakeVmcompute(hasCc, (l, f) => {
  library = l;
  fake = f;
});
beforeAll(async () => {
  kird = await mkdtemp(join(tmpdir(), 'lcow-kird-'));
});
afterAll(() => rm(kird, { recursive: true, force: true }));

describe.skipIf(!hasCc)('LcowUtilityVm', () => {
  it('refuses to boot without a kernel and an initrd, naming them', async () => {
    await expect(
      LcowUtilityVm.start({ id: `u${n++}`, options: [`lcow.kirdpath=${kird}`], mountArgs, library }),
    ).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/kernel '.*kernel' not found/),
    });
  });

  it('boots, hot-adds and removes disks, mounts a union, runs commands, terminates', async () => {
    await writeFile(join(kird, 'kernel'), '');
    await writeFile(join(kird, 'initrd.img'), '');
    const vm = await LcowUtilityVm.start({
      id: `u${n++}`,
      options: [`lcow.kirdpath=${kird}`, 'lcow.timeout=30'],
      mountArgs,
      library,
    });
    fake.journal();
    await vm.hotAdd({ hostPath: 'C:\\lcow\\sb\\sandbox.vhdx', guestPath: '/tmp/d1', readOnly: false });
    await vm.hotAdd({ hostPath: 'C:\\lcow\\base\\layer.vhd', guestPath: '/tmp/d2', readOnly: true });
    await vm.mountUnion('/tmp/sb-mount', ['/tmp/d2'], '/tmp/d1');
    expect((await vm.run(['echo', 'hello there'])).stdout.toString()).toBe('hello there\n');
    await expect(vm.must(['fail', '2', 'no such device'])).rejects.toThrow(
      /fail 2 no such device exited with 2: no such device/,
    );
    await vm.unmount('/tmp/sb-mount');
    await vm.hotRemove({ hostPath: 'C:\\lcow\\base\\layer.vhd', guestPath: '/tmp/d2', readOnly: true });
    // The fake guest's exportSandbox answers a small archive naming the path it exported.
    const tar = Buffer.concat(await vm.exportTar('/tmp/d1').toArray());
    expect(tar.length).toBe(3 * 512 + 1024);
    expect(tar.subarray(0, 14).toString()).toBe('exported-from\0');
    expect(tar.subarray(512, 520).toString()).toBe('/tmp/d1\n');
    expect(fake.journal()).toEqual([
      'modify {"ResourceType":"MappedVirtualDisk","Settings":{"HostPath":"C:\\\\lcow\\\\sb\\\\sandbox.vhdx","ContainerPath":"/tmp/d1","CreateInUtilityVM":true,"AttachOnly":false},"RequestType":"Add"}',
      'modify {"ResourceType":"MappedVirtualDisk","Settings":{"HostPath":"C:\\\\lcow\\\\base\\\\layer.vhd","ContainerPath":"/tmp/d2","CreateInUtilityVM":true,"ReadOnly":true,"AttachOnly":false},"RequestType":"Add"}',
      'run mkdir -p /tmp/sb-mount',
      'run mkdir -p /tmp/d1/upper /tmp/d1/work',
      'run mount -t overlay overlay -o lowerdir=/tmp/d2,upperdir=/tmp/d1/upper,workdir=/tmp/d1/work /tmp/sb-mount',
      'run echo hello there',
      'run fail 2 no such device',
      'run umount /tmp/sb-mount',
      'modify {"ResourceType":"MappedVirtualDisk","Settings":{"HostPath":"C:\\\\lcow\\\\base\\\\layer.vhd","ContainerPath":"","CreateInUtilityVM":true,"AttachOnly":false},"RequestType":"Remove"}',
      'run exportSandbox -path /tmp/d1',
    ]);
    await vm.terminate();
  });

  it('formatExt4: attach only, find the SCSI address, mkfs.ext4 the device with the original options, detach', async () => {
    const vm = await LcowUtilityVm.start({ id: `u${n++}`, options: [`lcow.kirdpath=${kird}`], mountArgs, library });
    await vm.hotAdd({ hostPath: 'C:\\l\\first.vhd', guestPath: '/tmp/d1', readOnly: true });
    fake.journal();
    await vm.formatExt4('C:\\l\\new.vhdx');
    expect(fake.journal()).toEqual([
      'modify {"ResourceType":"MappedVirtualDisk","Settings":{"HostPath":"C:\\\\l\\\\new.vhdx","ContainerPath":"","CreateInUtilityVM":true,"AttachOnly":true},"RequestType":"Add"}',
      'run test -d /sys/bus/scsi/devices/0:0:0:1',
      'run ls /sys/bus/scsi/devices/0:0:0:1/block',
      'run mkfs.ext4 -q -E lazy_itable_init=1 -O ^has_journal,sparse_super2,uninit_bg,^resize_inode /dev/sdb',
      'modify {"ResourceType":"MappedVirtualDisk","Settings":{"HostPath":"C:\\\\l\\\\new.vhdx","ContainerPath":"","CreateInUtilityVM":true,"AttachOnly":false},"RequestType":"Remove"}',
    ]);
    await vm.terminate();
  });

  it('remotefs operations run as guest processes with argument vectors', async () => {
    const vm = await LcowUtilityVm.start({ id: `u${n++}`, options: [`lcow.kirdpath=${kird}`], mountArgs, library });
    fake.journal();
    // The fake's remotefs is silent: stat gets no FileInfo back and fails to parse; what matters is the argv.
    await expect(vm.fs('/tmp/c-mount').stat("/tmp/c-mount/a file's name")).rejects.toThrow();
    expect(fake.journal()).toEqual(["run remotefs stat /tmp/c-mount/a file's name"]);
    await vm.terminate();
  });
});
