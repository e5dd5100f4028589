// The HCS v1 documents of an LCOW utility VM, byte for byte as the original produced them (field order =
// hcsshim schema1 struct order; omitempty where schema1 has it): the create document, the hot-add and
// hot-remove modify requests, and process parameters (lcow-behaviour.md §3.4, §3.5, §3.7).
import { win32 } from 'node:path';
import type { UvmOptions } from './options.ts';

/** A disk in the create document or a hot-add request (hcsshim schema1 MappedVirtualDisk). */
export interface UvmDisk {
  hostPath: string;
  /** `/tmp/d<n>`, `/tmp/scratch`, or "" for attach-only. */
  containerPath: string;
  readOnly?: boolean;
  /** Attach without mounting (mkfs of a new sandbox inside the VM). */
  attachOnly?: boolean;
}

/** MappedVirtualDisk JSON: HostPath, ContainerPath (always), CreateInUtilityVM, ReadOnly (when true), AttachOnly (always: its tag's typo). */
function mappedDisk(d: UvmDisk): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (d.hostPath) out.HostPath = d.hostPath;
  out.ContainerPath = d.containerPath;
  out.CreateInUtilityVM = true;
  if (d.readOnly) out.ReadOnly = true;
  out.AttachOnly = d.attachOnly ?? false;
  return out;
}

/** The create document of a utility VM named `name` (`<id>_svm` or `_lcow_global_svm_`). */
export function utilityVmDocument(
  name: string,
  o: UvmOptions,
  disks: readonly UvmDisk[] = [],
): Record<string, unknown> {
  const runtime: Record<string, unknown> = {};
  if (o.kirdPath) runtime.ImagePath = o.kirdPath;
  if (o.initrdFile) runtime.LinuxInitrdFile = o.initrdFile;
  if (o.kernelFile) runtime.LinuxKernelFile = o.kernelFile;
  if (o.bootParameters) runtime.LinuxBootParameters = o.bootParameters;
  const doc: Record<string, unknown> = {
    SystemType: 'container',
    Name: name,
    Layers: null,
    HvPartition: true,
    HvRuntime: runtime,
    ContainerType: 'linux',
    TerminateOnLastHandleClosed: true,
  };
  if (disks.length > 0) doc.MappedVirtualDisks = disks.map(mappedDisk);
  return doc;
}

/** The modify request that hot-adds a disk (mounted at `containerPath` unless attach-only). */
export function hotAddRequest(d: UvmDisk): Record<string, unknown> {
  return { ResourceType: 'MappedVirtualDisk', Settings: mappedDisk(d), RequestType: 'Add' };
}

/** The modify request that hot-removes a disk (the HCS finds it by host path). */
export function hotRemoveRequest(hostPath: string): Record<string, unknown> {
  return {
    ResourceType: 'MappedVirtualDisk',
    Settings: mappedDisk({ hostPath, containerPath: '' }),
    RequestType: 'Remove',
  };
}

/** The PATH the original gave utility-VM processes. */
export const UVM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:';

/**
 * Quotes one argument for the GCS's shellwords parser, so every byte reaches the program as written: spaces,
 * quotes, `;`, `&`, `|`, `<`, `>` (which end an unquoted command line there) and backslashes.
 */
export function quoteArg(arg: string): string {
  if (arg !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'"'"'`)}'`;
}

/**
 * Process parameters for a command in the utility VM. The argument vector goes both ways: as
 * `CommandArgs` (which the GCS uses as is when present) and as a quoted `CommandLine` for a GCS that only
 * knows the command line — the original broke on names with spaces or quotes because it did neither.
 */
export function processParameters(
  argv: readonly string[],
  opts: { stdin?: boolean; stdout?: boolean; stderr?: boolean } = {},
): Record<string, unknown> {
  return {
    CommandLine: argv.map(quoteArg).join(' '),
    CommandArgs: [...argv],
    WorkingDirectory: '/bin',
    Environment: { PATH: UVM_PATH },
    CreateStdInPipe: opts.stdin ?? true,
    CreateStdOutPipe: opts.stdout ?? true,
    CreateStdErrPipe: opts.stderr ?? true,
    ConsoleSize: [0, 0],
    CreateInUtilityVm: true,
  };
}

/** `<root>\scratch\<vmid>.vhdx`, as the original placed per-VM scratch disks. */
export function scratchPath(dataRoot: string, vmId: string): string {
  return win32.join(dataRoot, 'scratch', `${vmId}.vhdx`);
}
