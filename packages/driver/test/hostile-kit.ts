// The hostile suites' common ground: the `lcow` command in a child process with a time and a memory limit
// (the whole process tree is killed past either), a fresh data root per case with a canary folder beside
// it, and the checks every case makes — one line `lcow: ERR_…: message` with exit status 1 on failure,
// nothing left behind, the canary intact.
import { createHash } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, expect } from 'vitest';
import { makeTar, oracle, rootWithLoop, runLimited, tempDir, type LimitedRun, type TarSpec } from '@lcow/testkit';

export const BIN = join(import.meta.dirname, 'lcow-bin.ts');
export const host = process.platform === 'linux' && rootWithLoop();
export const backend = host ? 'host' : 'inproc';
export const hasE2fsck = oracle('e2fsck');

export let dir: { path: string; cleanup: () => Promise<void> };
/** This case's data root (a fresh one per case), and the canary folder beside it. */
export let root: string;
export let canary: string;
const CANARY = 'canary: must survive every case\n';
/** This case's number, for file names. */
export let n = 0;

/** Registers the hooks that give every case of the calling file its own data root and canary. */
export function useHostileRoots(prefix: string): void {
  beforeAll(async () => {
    dir = await tempDir(prefix);
  });
  afterAll(() => dir?.cleanup());
  beforeEach(async () => {
    // A data root per case, with a canary folder beside it that no case may touch.
    const base = join(dir.path, `case-${++n}`);
    root = join(base, 'root');
    canary = join(base, 'canary');
    await mkdir(canary, { recursive: true });
    await writeFile(join(canary, 'file'), CANARY);
  });
}

export async function canaryIntact(): Promise<void> {
  expect(await readdir(canary)).toEqual(['file']);
  expect(await readFile(join(canary, 'file'), 'utf8')).toBe(CANARY);
}

export interface Run extends LimitedRun {
  out: string;
}

/** `lcow --root ROOT --backend B args…` in a child: 60 s and 1 GiB for the whole tree unless said. */
/** Node's arguments that run `lcow --root ROOT --backend B args…` from source. */
export function lcowArgs(args: string[]): string[] {
  return ['--conditions=@lcow/source', '--import', 'tsx', BIN, '--root', root, '--backend', backend, ...args];
}

export async function lcow(
  args: string[],
  opts: {
    input?: Uint8Array | AsyncIterable<Uint8Array>;
    timeoutMs?: number;
    maxRssMiB?: number;
    env?: NodeJS.ProcessEnv;
  } = {},
): Promise<Run> {
  const r = await runLimited(process.execPath, lcowArgs(args), {
    timeoutMs: opts.timeoutMs ?? 60_000,
    maxRssMiB: opts.maxRssMiB ?? 1024,
    input: opts.input,
    ...(opts.env ? { env: opts.env } : {}),
  });
  expect(r.timedOut, `lcow ${args.join(' ')}: no answer in time; stderr: ${r.stderr}`).toBe(false);
  expect(r.overMemory, `lcow ${args.join(' ')}: over the memory limit (${r.peakRssMiB} MiB)`).toBe(false);
  return { ...r, out: r.stdout.toString() };
}

/** Exit 1 with exactly one line `lcow: CODE: message` (no stack, no raw errno code), mentioning `names`. */
export function failed(r: Run, code: string, ...names: string[]): void {
  expect(r.stderr, `stdout: ${r.out}`).toMatch(/^lcow: ERR_[A-Z0-9_]+: [^\n]+\n$/);
  expect(r.stderr).toMatch(new RegExp(`^lcow: ${code}: `));
  expect(r.status).toBe(1);
  for (const s of names) expect(r.stderr).toContain(s);
}

export function ok(r: Run): void {
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
}

/** Temporary files, partial creations and `-removing` folders left in the data root. */
export async function leftovers(): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true })) {
    if (e.name.endsWith('-removing')) out.push(e.name);
    if (!e.isDirectory()) continue;
    for (const f of await readdir(join(root, e.name)))
      if (f.endsWith('.tmp') || e.name === 'tmp') out.push(`${e.name}/${f}`);
  }
  return out;
}

export async function layers(): Promise<{ id: string; kind: string; error?: { code: string } }[]> {
  const r = await lcow(['ls', '--json']);
  ok(r);
  return JSON.parse(r.out) as { id: string; kind: string }[];
}

export async function file(name: string, bytes: Uint8Array): Promise<string> {
  const p = join(dir.path, `${n}-${name}`);
  await writeFile(p, bytes);
  return p;
}

/** A `docker save` tarball of `layerTars` (bottom first), with diff ids as given or computed. */
export function dockerArchive(layerTars: Uint8Array[], diffIds?: string[]): Uint8Array {
  const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const config = Buffer.from(
    JSON.stringify({
      os: 'linux',
      architecture: 'amd64',
      rootfs: { type: 'layers', diff_ids: diffIds ?? layerTars.map((t) => sha(t)) },
    }),
  );
  const manifest = JSON.stringify([
    { Config: 'config.json', RepoTags: ['hostile:1'], Layers: layerTars.map((_, i) => `l${i}/layer.tar`) },
  ]);
  return makeTar([
    { path: 'manifest.json', body: manifest },
    { path: 'config.json', body: config },
    ...layerTars.flatMap((t, i): TarSpec[] => [
      { path: `l${i}/`, type: 'dir' },
      { path: `l${i}/layer.tar`, body: t },
    ]),
  ]);
}

/** Streams a tar of `depth` nested directories (each a pax long name) to a file, in batches. */
export function deepTar(path: string, depth: number): void {
  writeFileSync(path, new Uint8Array(0));
  let p = '';
  let batch: TarSpec[] = [];
  for (let i = 0; i < depth; i++) {
    p += 'd/';
    batch.push({ path: p, type: 'dir' });
    if (batch.length === 500 || i === depth - 1) {
      appendFileSync(path, makeTar(batch, { end: false }));
      batch = [];
    }
  }
  appendFileSync(path, makeTar([{ path: `${p}leaf`, body: 'deep\n' }]));
}
