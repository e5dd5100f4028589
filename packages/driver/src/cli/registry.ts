// The command table: every command's forms, operands and options, and how to load it. `lcow --help`, each
// command's `--help` and every argument check before work need only this file; a command's code (and the
// packages it uses) is loaded when it runs, so the process starts in the time Node itself takes plus this table.
import type { FormSpec, OptionSpec } from './args.ts';
import type { Command } from './types.ts';

/** A command: one line of meaning and its forms (`''` when it has no subcommands). */
export interface CommandSpec {
  summary: string;
  forms: Readonly<Record<string, FormSpec>>;
}

const json = { kind: 'flag', help: 'print the result as JSON on standard output' } as const satisfies OptionSpec;
const force = {
  kind: 'flag',
  help: 'replace an output that already exists (refused otherwise)',
} as const satisfies OptionSpec;
const parent = {
  kind: 'value',
  arg: 'P',
  help: "the layer to compare with (default: the layer's own parent)",
} as const satisfies OptionSpec;
const parallel = {
  kind: 'value',
  arg: 'N',
  help: 'layers converted at once, each in a child process of its own (1 to 64)',
  default: 'the number of cores',
} as const satisfies OptionSpec;
const timestamp = {
  kind: 'value',
  arg: 'TIME',
  help: 'the time written into the output (VHD footer, superblock): seconds since 1970 or an ISO date; makes the same input give the same bytes',
  default: '$SOURCE_DATE_EPOCH if set, else now',
} as const satisfies OptionSpec;
const layout = {
  kind: 'value',
  arg: 'lcow|hcsshim',
  help: "the image layout: ours (lcow), or hcsshim's tar2ext4 byte for byte, so root digests match a Windows host's",
  default: 'lcow',
} as const satisfies OptionSpec;

/** skopeo's and dmverity-vhd's ways of saying how to reach an image. */
const SOURCE = {
  platform: { kind: 'value', arg: 'OS/ARCH', help: 'the platform to take from an image index', group: 'source' },
  creds: { kind: 'value', arg: 'USER:PASS', help: 'registry credentials', group: 'source' },
  username: { kind: 'value', short: 'u', arg: 'USER', help: 'registry user (with --password)', group: 'source' },
  password: { kind: 'value', short: 'p', arg: 'PASS', help: 'registry password (with --username)', group: 'source' },
  authfile: {
    kind: 'value',
    arg: 'FILE',
    help: 'credentials file (containers-auth.json or ~/.docker/config.json form)',
    default: '$REGISTRY_AUTH_FILE, then the usual places',
    group: 'source',
  },
  'cert-dir': {
    kind: 'value',
    arg: 'DIR',
    help: 'CA certificates (*.crt) and client certificates (*.cert/*.key) for the registry',
    group: 'source',
  },
  'tls-verify': {
    kind: 'bool',
    help: "check the registry's certificate",
    default: 'true',
    group: 'source',
  },
  'command-timeout': {
    kind: 'value',
    arg: 'DURATION',
    help: 'give up reaching and reading the image after this long (30s, 5m, 1h30m)',
    default: 'none',
    group: 'source',
  },
  'request-timeout': {
    kind: 'value',
    arg: 'DURATION',
    help: 'give up on one request with no answer, or one connection silent, this long (then retry)',
    default: '30s',
    group: 'source',
  },
  'retry-times': {
    kind: 'value',
    arg: 'N',
    help: 'retries of a request that failed in a way a retry can fix',
    default: '4',
    group: 'source',
  },
  'min-speed': {
    kind: 'value',
    arg: 'SIZE',
    help: 'give up on a download slower than SIZE a second over a minute (0: no floor)',
    default: '1K',
    group: 'source',
  },
} as const satisfies Record<string, OptionSpec>;

/** dmverity-vhd's way of naming the image: `-i REF` with `--tarball FILE` or `--docker`. */
const IMAGE_NAMING = {
  image: { kind: 'value', short: 'i', arg: 'REF', help: 'the image (instead of the REF operand)', group: 'naming' },
  tarball: {
    kind: 'value',
    short: 't',
    arg: 'FILE',
    help: 'the image is in this docker-save archive',
    group: 'naming',
  },
  docker: { kind: 'flag', short: 'd', help: 'the image is in the Docker daemon', group: 'naming' },
  verbose: {
    kind: 'flag',
    short: 'v',
    help: 'log each step to standard error (level=debug lines, as dmverity-vhd -v)',
    group: 'naming',
  },
  'buffered-reader': {
    kind: 'flag',
    short: 'b',
    help: "accepted for dmverity-vhd's scripts (az confcom --faster-hashing); lcow always reads buffered",
    group: 'naming',
  },
} as const satisfies Record<string, OptionSpec>;

const REF_NOTE =
  'REF: docker://HOST/REPO:TAG, docker-daemon:NAME:TAG, docker-archive:PATH, oci-archive:PATH, oci:PATH, or a docker-save/OCI tarball';

export const SPECS = {
  import: {
    summary:
      'apply an image as a layer chain with a sandbox on top (no REF: the embedded example, read back through get)',
    forms: {
      '': {
        operands: ['[REF]'],
        driver: true,
        options: {
          sandbox: {
            kind: 'value',
            arg: 'ID',
            help: 'the sandbox made on top',
            default: 'the image name, "example" for the example',
          },
          'no-sandbox': { kind: 'flag', help: 'make no sandbox' },
          verity: { kind: 'flag', help: 'append a dm-verity tree to each layer and keep its root digest' },
          parallel,
          ...SOURCE,
          json,
        },
        notes: [REF_NOTE],
      },
    },
  },
  create: {
    summary: 'create a read-only layer (apply fills it)',
    forms: { '': { operands: ['ID'], driver: true, options: { parent: { ...parent, help: 'its parent layer' } } } },
  },
  'create-rw': {
    summary: 'create a sandbox (ext4 in a VHDX)',
    forms: {
      '': {
        operands: ['ID'],
        driver: true,
        options: {
          parent: { ...parent, help: 'its parent layer' },
          size: { kind: 'value', arg: 'GB', help: 'its size in GB', default: '20, or lcow.sandboxsize' },
        },
      },
    },
  },
  apply: {
    summary: 'apply a layer tar (plain, gzip or zstd) to a created layer; prints the bytes applied',
    forms: {
      '': {
        operands: ['ID'],
        driver: true,
        options: {
          input: { kind: 'value', short: 'i', arg: 'IN.tar|-', help: 'the layer tar', default: 'standard input' },
          verity: { kind: 'flag', help: 'append a dm-verity tree and keep its root digest' },
        },
      },
    },
  },
  diff: {
    summary: "write a layer's changes as an OCI layer tar",
    forms: {
      '': {
        operands: ['ID'],
        driver: true,
        options: {
          parent,
          output: { kind: 'value', short: 'o', arg: 'OUT.tar|-', help: 'where', default: 'standard output' },
          force,
        },
      },
    },
  },
  changes: {
    summary: 'list what a layer adds (A), changes (C) and deletes (D)',
    forms: { '': { operands: ['ID'], driver: true, options: { parent, json } } },
  },
  'diff-size': {
    summary: 'bytes of regular files a layer adds or changes',
    forms: { '': { operands: ['ID'], driver: true, options: { parent } } },
  },
  mount: {
    summary: "mount a layer's union on the host and print its path (host backend)",
    forms: { '': { operands: ['ID'], driver: true, options: {} } },
  },
  unmount: {
    summary: 'unmount what `lcow mount` mounted',
    forms: { '': { operands: ['ID'], driver: true, options: {} } },
  },
  cat: {
    summary: "print a file as the layer's union shows it",
    forms: { '': { operands: ['ID', 'PATH'], driver: true, options: {} } },
  },
  rm: {
    summary: 'remove layers',
    forms: { '': { operands: ['ID...'], driver: true, options: {} } },
  },
  ls: {
    summary: 'list the layers of the data root',
    forms: { '': { operands: [], driver: true, options: { json } } },
  },
  status: {
    summary: 'backend, mode, data root, VMs and layers',
    forms: { '': { operands: [], driver: true, options: { json } } },
  },
  cleanup: {
    summary: 'unmount what killed or detached processes left; finish interrupted removals',
    forms: { '': { operands: [], driver: true, options: { json } } },
  },
  image: {
    summary:
      'an image from a registry, the daemon or an archive: describe it, or its layers’ dm-verity root hashes and VHDs as hcsshim’s dmverity-vhd',
    forms: {
      inspect: {
        summary: 'the image: name, manifest, platform, layers',
        operands: ['[REF]'],
        options: { ...IMAGE_NAMING, ...SOURCE, json },
        notes: [REF_NOTE],
      },
      roothash: {
        summary: 'each layer\'s dm-verity root hash as a Windows host computes it ("Layer N root hash: HEX")',
        operands: ['[REF]'],
        options: { ...IMAGE_NAMING, parallel, ...SOURCE, json },
        notes: [REF_NOTE, 'dmverity-vhd spellings are accepted: -i REF, --tarball FILE, --docker, -u, -p.'],
      },
      create: {
        summary: 'one <diff id>.vhd per layer (ext4, dm-verity tree, VHD footer), as dmverity-vhd create',
        operands: ['[REF]'],
        options: {
          'out-dir': {
            kind: 'value',
            short: 'o',
            arg: 'DIR',
            help: 'the folder the VHDs go to (made if missing)',
            required: true,
          },
          'hash-dev-vhd': {
            kind: 'flag',
            help: 'the dm-verity tree in a <diff id>.hash-dev.vhd of its own',
            aliases: ['--hdv'],
          },
          force,
          ...IMAGE_NAMING,
          parallel,
          ...SOURCE,
          json,
        },
        notes: [REF_NOTE],
      },
    },
  },
  tar2ext4: {
    summary: 'convert a layer tar (plain or gzip, file or stdin) into an ext4 image, optionally a layer.vhd',
    forms: {
      '': {
        operands: [],
        options: {
          input: {
            kind: 'value',
            short: 'i',
            arg: 'IN.tar|-',
            help: 'the layer tar',
            default: 'standard input',
          },
          output: {
            kind: 'value',
            short: 'o',
            arg: 'OUT',
            help: 'the image (a file: an ext4 image is written by position, so not a pipe)',
          },
          vhd: { kind: 'flag', help: 'append a fixed VHD footer (a layer.vhd)', aliases: ['-vhd'] },
          whiteouts: {
            kind: 'flag',
            help: 'turn .wh. whiteouts into overlayfs ones (character devices 0:0, trusted.overlay.opaque)',
            aliases: ['-overlay', '--overlay'],
          },
          'inline-data': { kind: 'flag', help: 'small files inside their inode', aliases: ['-inline', '--inline'] },
          verity: {
            kind: 'flag',
            help: 'append a dm-verity hash tree with its superblock; prints the root digest on stderr',
            aliases: ['-verity'],
          },
          'max-size': {
            kind: 'value',
            arg: 'SIZE',
            help: 'refuse an image larger than this (bytes, or 128G…)',
            default: '128G (16G for --layout hcsshim)',
            aliases: ['-max-size'],
          },
          uuid: { kind: 'value', arg: 'UUID', help: "the filesystem's UUID", default: 'derived from the contents' },
          layout,
          'convert-slash': {
            kind: 'flag',
            help: 'turn backslashes in names into slashes',
            aliases: ['-convert-slash'],
          },
          timestamp,
          'no-fsync': { kind: 'flag', help: 'do not wait for the output to reach the disk' },
          'only-vhd': {
            kind: 'flag',
            help: 'the input is already an image: copy it (at most --max-size) and append a VHD footer',
            aliases: ['-only-vhd'],
          },
          digest: {
            kind: 'flag',
            help: "print the dm-verity root digest of the image the tar converts to (whiteouts converted, 128 GiB maximum) and write nothing, as hcsshim's -digest",
            aliases: ['-digest'],
          },
          force,
          json,
        },
        notes: [
          "hcsshim's tar2ext4 spellings work as they are (-i -o -overlay -vhd -only-vhd -inline -verity -convert-slash -max-size -digest); any of its one-dash long forms selects --layout hcsshim unless --layout is given, so a script gets hcsshim's bytes.",
        ],
      },
    },
  },
  ext4: {
    summary: 'read an ext4 filesystem (raw image, .vhd or .vhdx) without mounting it',
    forms: {
      ls: { summary: 'list a folder (or one entry)', operands: ['IMAGE', '[PATH]'], options: { json } },
      cat: { summary: 'print a file', operands: ['IMAGE', 'PATH'], options: {} },
      export: {
        summary: 'the filesystem (or a folder of it) as a tar',
        operands: ['IMAGE'],
        options: {
          output: { kind: 'value', short: 'o', arg: 'OUT.tar|-', help: 'where', default: 'standard output' },
          root: { kind: 'value', arg: 'PATH', help: 'the folder to export', default: '/' },
          'no-whiteouts': { kind: 'flag', help: 'leave overlayfs whiteouts out instead of writing .wh. entries' },
          force,
          json,
        },
      },
    },
  },
  mkfs: {
    summary: 'create an empty ext4 filesystem (a sandbox or scratch disk) as a sparse image or inside a VHDX',
    forms: {
      '': {
        operands: ['OUT.img|OUT.vhdx'],
        options: {
          size: { kind: 'value', arg: 'SIZE', help: 'the filesystem size (20G, 512M, bytes)', required: true },
          fixed: { kind: 'flag', help: 'a fixed VHDX (its payload contiguous); .vhdx only' },
          'block-size': { kind: 'value', arg: 'SIZE', help: 'the VHDX block size; .vhdx only', default: '1M' },
          'uninit-bg': {
            kind: 'flag',
            help: "the original driver's uninit_bg in place of metadata_csum (group descriptor checksums only)",
          },
          'inode-ratio': { kind: 'value', arg: 'BYTES', help: 'bytes per inode', default: '16384' },
          reserved: { kind: 'value', arg: 'PERCENT', help: 'blocks reserved for root', default: '5' },
          label: { kind: 'value', arg: 'L', help: 'the volume label' },
          uuid: { kind: 'value', arg: 'UUID', help: "the filesystem's UUID", default: 'random' },
          timestamp,
          force,
          json,
        },
      },
    },
  },
  verity: {
    summary: 'dm-verity root digests of layers: show, compute, check',
    forms: {
      info: { summary: 'the verity superblock after the filesystem', operands: ['IMAGE'], options: { json } },
      digest: {
        summary:
          "the root digest of an image, or of the image a tar converts to (- : a tar on standard input), writing nothing; with --layout hcsshim a Windows host's",
        operands: ['IN.tar|IMAGE|-'],
        options: { layout, json },
      },
      check: {
        summary: 'hash the image and compare with DIGEST',
        operands: ['IMAGE', 'DIGEST'],
        options: { json },
      },
    },
  },
  vhd: {
    summary: 'inspect, create and convert VHD/VHDX disks',
    forms: {
      info: { summary: 'the disk, what is on it, and a verdict', operands: ['FILE'], options: { json } },
      create: {
        summary: 'an empty disk',
        operands: ['OUT.vhdx|OUT.vhd'],
        options: {
          size: { kind: 'value', arg: 'SIZE', help: 'the virtual size (20G, 512M, bytes)', required: true },
          fixed: { kind: 'flag', help: 'a fixed VHDX (a .vhd is always fixed)' },
          'block-size': { kind: 'value', arg: 'SIZE', help: 'the VHDX block size', default: '1M' },
          'logical-sector': { kind: 'value', arg: '512|4096', help: 'the VHDX logical sector size', default: '512' },
          timestamp: { ...timestamp, help: 'the time in a .vhd footer: seconds since 1970 or an ISO date' },
          force,
          json,
        },
      },
      convert: {
        summary: 'a raw image as a fixed VHD (footer appended) or a VHDX (zero blocks left out)',
        operands: ['IN.raw', 'OUT.vhd|OUT.vhdx'],
        options: {
          fixed: { kind: 'flag', help: 'a fixed VHDX' },
          'block-size': { kind: 'value', arg: 'SIZE', help: 'the VHDX block size', default: '1M' },
          'align-geometry': {
            kind: 'flag',
            help: 'pad a .vhd to a whole CHS geometry (as Hyper-V wants for some uses)',
          },
          timestamp: { ...timestamp, help: 'the time in a .vhd footer: seconds since 1970 or an ISO date' },
          force,
          json,
        },
      },
    },
  },
  demo: {
    summary:
      'convert the embedded demo layer with our ext4 writer and show it as layer.vhd, a VHDX and a 20 GiB sandbox',
    forms: {
      '': {
        operands: [],
        options: {
          dir: { kind: 'value', arg: 'DIR', help: 'where the files go', default: 'a new temporary folder' },
          force: { kind: 'flag', help: 'use a --dir that is not empty, replacing the files the demo writes' },
          json,
        },
      },
    },
  },
  man: {
    summary: 'print a manual page (roff): lcow(1), or lcow-COMMAND(1); made from the same table as --help',
    forms: {
      '': {
        operands: ['[COMMAND]'],
        options: {
          'out-dir': {
            kind: 'value',
            short: 'o',
            arg: 'DIR',
            help: 'write every page (lcow.1, lcow-COMMAND.1) into DIR and print their paths',
          },
        },
      },
    },
  },
  completion: {
    summary: 'print a shell completion script: lcow completion bash > /etc/bash_completion.d/lcow',
    forms: { '': { operands: ['bash|zsh'], options: {} } },
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
  man: async () => (await import('./commands/docs.ts')).docsCommands.man,
  completion: async () => (await import('./commands/docs.ts')).docsCommands.completion,
  demo: async () => (await import('./commands/demo.ts')).demoCommand,
};
