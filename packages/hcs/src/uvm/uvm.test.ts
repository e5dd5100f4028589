// The utility-VM options and documents, checked field by field (and byte by byte, as JSON) against what
// the original produced (../shared/reference/lcow-behaviour.md §3.2–3.7, documents as logged in issues).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, win32 } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_UVM_TIMEOUT_SECONDS,
  hotAddRequest,
  hotRemoveRequest,
  parseUvmOptions,
  processParameters,
  quoteArg,
  utilityVmDocument,
  uvmTimeoutSeconds,
  validateBootFiles,
} from '../index.ts';

describe('lcow.* options', () => {
  it('defaults, lower-cased keys, verbatim values, last duplicate wins, unknown and bare entries ignored', () => {
    expect(parseUvmOptions([], 'C:\\Program Files')).toEqual({
      kirdPath: 'C:\\Program Files\\Linux Containers',
      kernelFile: 'kernel',
      initrdFile: 'initrd.img',
      bootParameters: '',
      timeoutSeconds: 0,
    });
    const o = parseUvmOptions(
      [
        'LCOW.KERNEL=bzImage',
        'lcow.initrd=a',
        'lcow.initrd=b',
        'lcow.bootparameters=console=ttyS0 debug',
        'lcow.globalmode=true',
        'junk',
        'lcow.kirdpath=D:\\k',
      ],
      'C:\\Program Files',
    );
    expect(o).toEqual({
      kirdPath: 'D:\\k',
      kernelFile: 'bzImage',
      initrdFile: 'b',
      bootParameters: 'console=ttyS0 debug',
      timeoutSeconds: 0,
    });
  });

  it('lcow.timeout and OPENGCS_UVM_TIMEOUT_SECONDS: the original messages, the variable checked even when the option wins', () => {
    expect(() => parseUvmOptions(['lcow.timeout=abc'])).toThrow(
      'lcow.timeout option could not be interpreted as an integer',
    );
    expect(() => parseUvmOptions(['lcow.timeout=-5'])).toThrow('lcow.timeout option cannot be negative');
    expect(uvmTimeoutSeconds(parseUvmOptions(['lcow.timeout=60']), {})).toBe(60);
    expect(uvmTimeoutSeconds(parseUvmOptions([]), { OPENGCS_UVM_TIMEOUT_SECONDS: '90' })).toBe(90);
    expect(uvmTimeoutSeconds(parseUvmOptions([]), {})).toBe(DEFAULT_UVM_TIMEOUT_SECONDS);
    expect(() => uvmTimeoutSeconds(parseUvmOptions(['lcow.timeout=60']), { OPENGCS_UVM_TIMEOUT_SECONDS: 'x' })).toThrow(
      'OPENGCS_UVM_TIMEOUT_SECONDS could not be interpreted as an integer',
    );
    expect(() => uvmTimeoutSeconds(parseUvmOptions([]), { OPENGCS_UVM_TIMEOUT_SECONDS: '-1' })).toThrow(
      'OPENGCS_UVM_TIMEOUT_SECONDS cannot be negative',
    );
  });

  it('the kernel and initrd must exist', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lcow-kird-'));
    const o = parseUvmOptions([`lcow.kirdpath=${dir}`]);
    await expect(validateBootFiles(o)).rejects.toThrow(`kernel '${win32.join(dir, 'kernel')}' not found`);
    await writeFile(join(dir, 'kernel'), '');
    await expect(validateBootFiles(o)).rejects.toThrow(`initrd '${win32.join(dir, 'initrd.img')}' not found`);
    await writeFile(join(dir, 'initrd.img'), '');
    await expect(validateBootFiles(o)).resolves.toBeUndefined();
    await rm(dir, { recursive: true, force: true });
  });
});

describe('documents', () => {
  it('the create document, byte for byte as logged in moby issue #37828', () => {
    const o = parseUvmOptions([], 'C:\\Program Files');
    const doc = utilityVmDocument('abc_svm', o, [
      { hostPath: 'C:\\ProgramData\\docker\\lcow\\scratch\\abc.vhdx', containerPath: '/tmp/scratch' },
      { hostPath: 'C:\\ProgramData\\docker\\lcow\\l1\\layer.vhd', containerPath: '/tmp/d2', readOnly: true },
    ]);
    expect(JSON.stringify(doc)).toBe(
      '{"SystemType":"container","Name":"abc_svm","Layers":null,"HvPartition":true,' +
        '"HvRuntime":{"ImagePath":"C:\\\\Program Files\\\\Linux Containers","LinuxInitrdFile":"initrd.img","LinuxKernelFile":"kernel"},' +
        '"ContainerType":"linux","TerminateOnLastHandleClosed":true,' +
        '"MappedVirtualDisks":[{"HostPath":"C:\\\\ProgramData\\\\docker\\\\lcow\\\\scratch\\\\abc.vhdx","ContainerPath":"/tmp/scratch",' +
        '"CreateInUtilityVM":true,"AttachOnly":false},' +
        '{"HostPath":"C:\\\\ProgramData\\\\docker\\\\lcow\\\\l1\\\\layer.vhd","ContainerPath":"/tmp/d2","CreateInUtilityVM":true,' +
        '"ReadOnly":true,"AttachOnly":false}]}',
    );
    const withBoot = utilityVmDocument('_lcow_global_svm_', parseUvmOptions(['lcow.bootparameters=quiet'], 'C:\\PF'));
    expect(withBoot.HvRuntime).toEqual({
      ImagePath: 'C:\\PF\\Linux Containers',
      LinuxInitrdFile: 'initrd.img',
      LinuxKernelFile: 'kernel',
      LinuxBootParameters: 'quiet',
    });
    expect('MappedVirtualDisks' in withBoot).toBe(false);
  });

  it('hot-add and hot-remove requests (the remove exactly as logged in moby issue #36115)', () => {
    expect(JSON.stringify(hotRemoveRequest('C:\\lcow\\x\\sandbox.vhdx'))).toBe(
      '{"ResourceType":"MappedVirtualDisk","Settings":{"HostPath":"C:\\\\lcow\\\\x\\\\sandbox.vhdx","ContainerPath":"","CreateInUtilityVM":true,"AttachOnly":false},"RequestType":"Remove"}',
    );
    expect(hotAddRequest({ hostPath: 'C:\\l\\layer.vhd', containerPath: '/tmp/d3', readOnly: true })).toEqual({
      ResourceType: 'MappedVirtualDisk',
      Settings: {
        HostPath: 'C:\\l\\layer.vhd',
        ContainerPath: '/tmp/d3',
        CreateInUtilityVM: true,
        ReadOnly: true,
        AttachOnly: false,
      },
      RequestType: 'Add',
    });
    expect(hotAddRequest({ hostPath: 'C:\\new.vhdx', containerPath: '', attachOnly: true }).Settings).toEqual({
      HostPath: 'C:\\new.vhdx',
      ContainerPath: '',
      CreateInUtilityVM: true,
      AttachOnly: true,
    });
  });

  it('process parameters: the original fields, plus CommandArgs and a command line quoted for shellwords', () => {
    const p = processParameters(['remotefs', 'lstat', "/tmp/c-mount/it's a file; rm -rf /"]);
    expect(p).toEqual({
      CommandLine: `remotefs lstat '/tmp/c-mount/it'"'"'s a file; rm -rf /'`,
      CommandArgs: ['remotefs', 'lstat', "/tmp/c-mount/it's a file; rm -rf /"],
      WorkingDirectory: '/bin',
      Environment: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:' },
      CreateStdInPipe: true,
      CreateStdOutPipe: true,
      CreateStdErrPipe: true,
      ConsoleSize: [0, 0],
      CreateInUtilityVm: true,
    });
    expect(Object.keys(p)).toEqual([
      'CommandLine',
      'CommandArgs',
      'WorkingDirectory',
      'Environment',
      'CreateStdInPipe',
      'CreateStdOutPipe',
      'CreateStdErrPipe',
      'ConsoleSize',
      'CreateInUtilityVm',
    ]);
    expect(quoteArg('/tmp/d1')).toBe('/tmp/d1');
    expect(quoteArg('')).toBe("''");
    expect(quoteArg('a b')).toBe("'a b'");
    expect(quoteArg('a\\b|c')).toBe("'a\\b|c'");
  });
});
