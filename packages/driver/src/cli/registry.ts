// The command table: every command's name, one-line summary and usage lines, and how to load it. `lcow --help`
// and argument errors need only this file; a command's code (and the packages it uses) is loaded when it runs,
// so the process starts in the time Node itself takes plus this table.
import type { Command } from './types.ts';

/** What `--help` prints for a command. */
export interface CommandSpec {
  summary: string;
  usage: readonly string[];
}

export const SPECS = {
  import: {
    summary:
      'apply an image — docker://HOST/REPO:TAG, docker-daemon:NAME:TAG, docker-archive:/oci-archive:/oci:PATH, or a docker-save/OCI tarball — as a layer chain with a sandbox on top (no REF: the embedded example, read back through get)',
    usage: [
      'lcow import [REF] [--sandbox ID] [--no-sandbox] [--verity] [--parallel N] [--platform OS/ARCH] [--creds U:P] [--authfile F] [--cert-dir D] [--tls-verify=false] [--json]',
    ],
  },
  create: {
    summary: 'create a read-only layer (apply fills it)',
    usage: ['lcow create ID [--parent P]'],
  },
  'create-rw': {
    summary: 'create a sandbox (ext4 in a VHDX, 20 GB unless --size)',
    usage: ['lcow create-rw ID [--parent P] [--size GB]'],
  },
  apply: {
    summary: 'apply a layer tar (plain or gzip) to a created layer; prints the bytes applied',
    usage: ['lcow apply ID [-i IN.tar|-] [--verity]'],
  },
  diff: {
    summary: "write a layer's changes as an OCI layer tar",
    usage: ['lcow diff ID [--parent P] [-o OUT.tar|-]'],
  },
  changes: {
    summary: 'list what a layer adds (A), changes (C) and deletes (D)',
    usage: ['lcow changes ID [--parent P] [--json]'],
  },
  'diff-size': {
    summary: 'bytes of regular files a layer adds or changes',
    usage: ['lcow diff-size ID [--parent P]'],
  },
  mount: {
    summary: "mount a layer's union on the host and print its path (host backend)",
    usage: ['lcow mount ID'],
  },
  unmount: {
    summary: 'unmount what `lcow mount` mounted',
    usage: ['lcow unmount ID'],
  },
  cat: {
    summary: "print a file as the layer's union shows it",
    usage: ['lcow cat ID PATH'],
  },
  rm: {
    summary: 'remove layers',
    usage: ['lcow rm ID...'],
  },
  ls: {
    summary: 'list the layers of the data root',
    usage: ['lcow ls [--json]'],
  },
  status: {
    summary: 'backend, mode, data root, VMs and layers',
    usage: ['lcow status [--json]'],
  },
  cleanup: {
    summary: 'unmount what killed or detached processes left; finish interrupted removals',
    usage: ['lcow cleanup [--json]'],
  },
  image: {
    summary:
      'an image from a registry (docker://), the daemon (docker-daemon:), or an archive: describe it, or its layers’ dm-verity root hashes and VHDs as hcsshim’s dmverity-vhd',
    usage: [
      'lcow image inspect REF [--platform OS/ARCH] [--creds U:P] [--authfile F] [--cert-dir D] [--tls-verify=false] [--json]',
      'lcow image roothash REF|-i REF [--tarball FILE|--docker] [--parallel N] [source options] [--json]',
      'lcow image create REF|-i REF -o DIR [--hash-dev-vhd] [--force] [--tarball FILE|--docker] [source options] [--json]',
    ],
  },
  tar2ext4: {
    summary: 'convert a layer tar (plain or gzip, file or stdin) into an ext4 image, optionally a layer.vhd',
    usage: [
      'lcow tar2ext4 [-i IN.tar|-] -o OUT [--vhd] [--whiteouts] [--inline-data] [--verity] [--max-size 128G] [--uuid UUID] [--layout lcow|hcsshim] [--convert-slash] [--no-fsync] [--force] [--json]',
    ],
  },
  ext4: {
    summary: 'read an ext4 filesystem (raw image, .vhd or .vhdx) without mounting it',
    usage: [
      'lcow ext4 ls IMAGE [PATH] [--json]',
      'lcow ext4 cat IMAGE PATH',
      'lcow ext4 export IMAGE [-o OUT.tar|-] [--root PATH] [--no-whiteouts] [--json]',
    ],
  },
  mkfs: {
    summary: 'create an empty ext4 filesystem (a sandbox or scratch disk) as a sparse image or inside a VHDX',
    usage: [
      'lcow mkfs OUT.img|OUT.vhdx --size 20G [--fixed] [--block-size 1M] [--uninit-bg] [--inode-ratio 16384] [--reserved 5] [--label L] [--uuid UUID] [--force] [--json]',
    ],
  },
  verity: {
    summary: 'dm-verity root digests of layers: show, compute, check',
    usage: [
      'lcow verity info IMAGE [--json]',
      'lcow verity digest IN.tar|IMAGE [--layout lcow|hcsshim] [--json]',
      'lcow verity check IMAGE DIGEST [--json]',
    ],
  },
  vhd: {
    summary: 'inspect, create and convert VHD/VHDX disks',
    usage: [
      'lcow vhd info FILE [--json]',
      'lcow vhd create OUT.vhdx|OUT.vhd --size 20G [--fixed] [--block-size 1M] [--logical-sector 512|4096] [--force] [--json]',
      'lcow vhd convert IN.raw OUT.vhd|OUT.vhdx [--fixed] [--block-size 1M] [--align-geometry] [--force] [--json]',
    ],
  },
  demo: {
    summary:
      'convert the embedded demo layer with our ext4 writer and show it as layer.vhd, a VHDX and a 20 GiB sandbox',
    usage: ['lcow demo [--dir DIR] [--json]'],
  },
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof SPECS;

/** Loads a command's module on first use. */
export const LOADERS: Record<CommandName, () => Promise<Command>> = {
  import: async () => (await import('./commands/layers.ts')).importCommand,
  create: async () => (await import('./commands/layers.ts')).createCommand,
  'create-rw': async () => (await import('./commands/layers.ts')).createRwCommand,
  apply: async () => (await import('./commands/layers.ts')).applyCommand,
  diff: async () => (await import('./commands/layers.ts')).diffCommand,
  changes: async () => (await import('./commands/layers.ts')).changesCommand,
  'diff-size': async () => (await import('./commands/layers.ts')).diffSizeCommand,
  mount: async () => (await import('./commands/layers.ts')).mountCommand,
  unmount: async () => (await import('./commands/layers.ts')).unmountCommand,
  cat: async () => (await import('./commands/layers.ts')).catCommand,
  rm: async () => (await import('./commands/layers.ts')).rmCommand,
  ls: async () => (await import('./commands/layers.ts')).lsCommand,
  status: async () => (await import('./commands/layers.ts')).statusCommand,
  cleanup: async () => (await import('./commands/layers.ts')).cleanupCommand,
  image: async () => (await import('./commands/image.ts')).imageCommand,
  tar2ext4: async () => (await import('./commands/tar2ext4.ts')).tar2ext4Command,
  ext4: async () => (await import('./commands/ext4.ts')).ext4Command,
  mkfs: async () => (await import('./commands/mkfs.ts')).mkfsCommand,
  verity: async () => (await import('./commands/verity.ts')).verityCommand,
  vhd: async () => (await import('./commands/vhd.ts')).vhdCommand,
  demo: async () => (await import('./commands/demo.ts')).demoCommand,
};
