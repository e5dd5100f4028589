// An LCOW utility VM over HCS: the compute system booted from the lcow.* options, disks hot-added and
// removed with the original's modify requests, guest commands as argument vectors, union mounts, tar
// exports and the container filesystem through `remotefs`. Shaped as `@lcow/svm-pool`'s UtilityVm
// (structurally: this package imports no sibling), so the driver's hcs backend hands it to the pool.
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { ComputeSystem } from '../compute-system.ts';
import { HcsError } from '../errors.ts';
import type { HcsProcess } from '../process.ts';
import { RemoteFs, collect, type GuestProcess } from '../remotefs.ts';
import { hotAddRequest, hotRemoveRequest, processParameters, utilityVmDocument, type UvmDisk } from './documents.ts';
import { parseUvmOptions, uvmTimeoutSeconds, validateBootFiles } from './options.ts';

/** A disk as the pool hands it over. */
export interface GuestDisk {
  hostPath: string;
  guestPath: string;
  readOnly: boolean;
}

/** The id of the one utility VM of `lcow.globalmode`; also its HCS name, as the original. */
export const GLOBAL_UVM_ID = '_lcow_global_svm_';

/** The HCS name of utility VM `id`, as the original: `_lcow_global_svm_`, or `<id>_svm` for a layer's own VM. */
export function utilityVmName(id: string): string {
  return id === GLOBAL_UVM_ID ? id : `${id}_svm`;
}

export interface StartUtilityVmOptions {
  /** The VM id (`_lcow_global_svm_` or a layer id); see {@link utilityVmName} for its HCS name. */
  id: string;
  /** `lcow.*` driver options. */
  options?: readonly string[];
  /** Disks attached at boot (the scratch at `/tmp/scratch`, …). */
  disks?: readonly UvmDisk[];
  /** The union mount command for the guest (`@lcow/svm-pool`'s `unionMountArgs`). */
  mountArgs: (target: string, lowers: readonly string[], upper?: string) => string[];
  library?: string;
  /** Check that the kernel and initrd exist before booting (default true). */
  validate?: boolean;
  signal?: AbortSignal;
}

/** What a finished guest command printed. */
export interface CommandResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

export class LcowUtilityVm {
  readonly id: string;
  readonly system: ComputeSystem;
  readonly #timeoutMs: number;
  readonly #mountArgs: StartUtilityVmOptions['mountArgs'];

  private constructor(
    id: string,
    system: ComputeSystem,
    timeoutMs: number,
    mountArgs: StartUtilityVmOptions['mountArgs'],
  ) {
    this.id = id;
    this.system = system;
    this.#timeoutMs = timeoutMs;
    this.#mountArgs = mountArgs;
  }

  /** Parses the options, checks the boot files, creates and starts the VM (terminated again if the start fails). */
  static async start(o: StartUtilityVmOptions): Promise<LcowUtilityVm> {
    const options = parseUvmOptions(o.options ?? []);
    const timeoutMs = uvmTimeoutSeconds(options) * 1000;
    if (o.validate !== false) await validateBootFiles(options);
    const name = utilityVmName(o.id);
    const cs = await ComputeSystem.create(name, utilityVmDocument(name, options, o.disks ?? []), {
      library: o.library,
      timeoutMs,
      signal: o.signal,
    });
    try {
      await cs.start({ timeoutMs, signal: o.signal });
    } catch (e) {
      await cs.terminate().catch(() => {});
      await cs.close().catch(() => {});
      throw e;
    }
    return new LcowUtilityVm(o.id, cs, timeoutMs, o.mountArgs);
  }

  /** Attaches a disk and mounts it at its guest path. */
  async hotAdd(d: GuestDisk): Promise<void> {
    await this.system.modify(hotAddRequest({ hostPath: d.hostPath, containerPath: d.guestPath, readOnly: d.readOnly }));
  }

  async hotRemove(d: GuestDisk): Promise<void> {
    await this.system.modify(hotRemoveRequest(d.hostPath));
  }

  /** Starts `argv` in the VM (no shell: CommandArgs, and a quoted CommandLine). */
  spawn(argv: readonly string[]): Promise<HcsProcess> {
    return this.system.createProcess(processParameters(argv));
  }

  /** Runs `argv` to completion, reading stdout and stderr together. Non-zero exits are not errors here. */
  async run(argv: readonly string[], input?: Uint8Array): Promise<CommandResult> {
    const p = await this.spawn(argv);
    try {
      p.stdin?.end(input);
      // Both pipes at once, each with an idle (not total) deadline: a long command that keeps talking is fine.
      const [stdout, stderr] = await Promise.all([this.#drain(p.stdout, argv[0]!), this.#drain(p.stderr, argv[0]!)]);
      const code = await p.wait({ timeoutMs: this.#timeoutMs });
      return { code, stdout, stderr: stderr.toString('utf8') };
    } finally {
      await p.close();
    }
  }

  #drain(s: Readable | null, what: string): Promise<Buffer> {
    return s ? collect(s, this.#timeoutMs, what) : Promise.resolve(Buffer.alloc(0));
  }

  /** Runs `argv` and fails on a non-zero exit with the command and its stderr. */
  async must(argv: readonly string[]): Promise<Buffer> {
    const r = await this.run(argv);
    if (r.code !== 0)
      throw new HcsError(
        'ERR_HCS',
        'guest command',
        `${argv.join(' ')} exited with ${r.code}${r.stderr ? `: ${r.stderr.trim()}` : ''}`,
      );
    return r.stdout;
  }

  async mountUnion(target: string, lowers: readonly string[], upper?: string): Promise<void> {
    await this.must(['mkdir', '-p', target]);
    if (upper) await this.must(['mkdir', '-p', `${upper}/upper`, `${upper}/work`]);
    await this.must(this.#mountArgs(target, lowers, upper));
  }

  async unmount(target: string): Promise<void> {
    await this.must(['umount', target]);
  }

  /**
   * A tar of the filesystem mounted at `guestPath` with `.wh.` whiteouts: the guest's `exportSandbox` (its
   * `upper/` for a sandbox). A guest failure fails the stream.
   */
  exportTar(guestPath: string): Readable {
    const out = new PassThrough();
    void (async () => {
      const p = await this.spawn(['exportSandbox', '-path', guestPath]);
      try {
        p.stdin?.end();
        const err = this.#drain(p.stderr, 'exportSandbox');
        // Copied with back-pressure: the guest is paused while the consumer is behind.
        if (p.stdout) for await (const c of p.stdout) if (!out.write(c)) await once(out, 'drain');
        const code = await p.wait({ timeoutMs: this.#timeoutMs });
        const stderr = (await err).toString('utf8').trim();
        if (code !== 0)
          throw new HcsError(
            'ERR_HCS',
            'exportSandbox',
            `${guestPath}: exit code ${code}${stderr ? `: ${stderr}` : ''}`,
          );
        out.end();
      } finally {
        await p.close();
      }
    })().catch((e: unknown) => out.destroy(e as Error));
    return out;
  }

  /** The container filesystem at `root` through `remotefs`. */
  fs(root: string): RemoteFs {
    return new RemoteFs(async (argv) => this.#guestProcess(await this.spawn(argv)), root, {
      idleTimeoutMs: this.#timeoutMs,
    });
  }

  #guestProcess(p: HcsProcess): GuestProcess {
    if (!p.stdin || !p.stdout || !p.stderr)
      throw new HcsError('ERR_HCS', 'HcsCreateProcess', 'a remotefs process needs its three pipes');
    const exited = p.wait({ timeoutMs: this.#timeoutMs });
    exited.catch(() => {}); // an open file's process may be closed before anyone asks how it exited
    return { stdin: p.stdin, stdout: p.stdout, stderr: p.stderr, exited, kill: () => p.kill(), close: () => p.close() };
  }

  /**
   * Formats an existing, empty disk file (a VHDX the caller created) as ext4 inside the VM, as the original's
   * CreateExt4Vhdx did: attach without mounting, find its SCSI address in the VM's properties, `mkfs.ext4` the
   * device with the original's options, detach. The disk is detached on failure too. (The driver normally
   * formats on the host with `@lcow/ext4`'s mkfs; this is for hosts that must not.)
   */
  async formatExt4(hostPath: string): Promise<void> {
    await this.system.modify(hotAddRequest({ hostPath, containerPath: '', attachOnly: true }));
    try {
      const props = (await this.system.properties({ PropertyTypes: ['MappedVirtualDisk'] })) as {
        MappedVirtualDiskControllers?: Record<string, { MappedVirtualDisks?: Record<string, { HostPath?: string }> }>;
      };
      let address: string | null = null;
      for (const [controller, c] of Object.entries(props.MappedVirtualDiskControllers ?? {}))
        for (const [lun, d] of Object.entries(c.MappedVirtualDisks ?? {}))
          if (d.HostPath === hostPath) address = `${controller}:0:0:${lun}`;
      if (!address)
        throw new HcsError(
          'ERR_HCS',
          'formatExt4',
          `${hostPath}: not among the VM's mapped virtual disks after hot-add`,
        );
      await this.must(['test', '-d', `/sys/bus/scsi/devices/${address}`]);
      const dev = (await this.must(['ls', `/sys/bus/scsi/devices/${address}/block`])).toString('utf8').trim();
      if (!/^[a-z0-9]+$/.test(dev))
        throw new HcsError('ERR_HCS', 'formatExt4', `${hostPath}: unexpected block device name ${JSON.stringify(dev)}`);
      await this.must([
        'mkfs.ext4',
        '-q',
        '-E',
        'lazy_itable_init=1',
        '-O',
        '^has_journal,sparse_super2,uninit_bg,^resize_inode',
        `/dev/${dev}`,
      ]);
    } finally {
      await this.system.modify(hotRemoveRequest(hostPath));
    }
  }

  /** Stops the VM hard and waits for it to be gone. */
  async terminate(): Promise<void> {
    try {
      await this.system.terminate();
      await this.system.waitExited({ timeoutMs: this.#timeoutMs });
    } finally {
      await this.system.close();
    }
  }
}
