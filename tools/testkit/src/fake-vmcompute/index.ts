// Builds the fake vmcompute (fake_vmcompute.c, beside this file) with the system C compiler, once per
// process, and gives tests its fault-injection exports: @lcow/hcs's tests and the driver's hcs backend use it.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, expect } from 'vitest';

let built: string | null = null;

/**
 * Path of the built fake library: one build per version of the source, shared by every test process
 * (written under a temporary name and renamed, so processes building at once never see half a file).
 */
export function fakeLibrary(): string {
  if (built) return built;
  const source = join(import.meta.dirname, 'fake_vmcompute.c');
  const tag = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 16);
  const out = join(tmpdir(), `lcow-fake-vmcompute-${tag}.so`);
  if (!existsSync(out)) {
    const tmp = `${out}.${process.pid}.tmp`;
    execFileSync('cc', ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror', '-o', tmp, source, '-lpthread']);
    renameSync(tmp, out);
  }
  built = out;
  return out;
}

interface Fn {
  (...args: unknown[]): number;
}

/** The fake's own controls. */
export function fakeControls(path = fakeLibrary()): {
  arm(spec: string): void;
  liveAllocations(): number;
  liveHandles(): number;
  notify(id: string, type: number, status?: number): number;
  /** What the fake was asked since the last call: "modify <json>" and "run <argv>" lines. */
  journal(): string[];
} {
  const koffi = createRequire(import.meta.url)('koffi') as {
    load(p: string): { func(proto: string): Fn };
    decode(p: unknown, t: string, n: number): string;
  };
  const lib = koffi.load(path);
  const control = lib.func('int32_t FakeHcsControl(const char16_t *spec)');
  const allocs = lib.func('int FakeHcsLiveAllocations(void)');
  const handles = lib.func('int FakeHcsLiveHandles(void)');
  const notify = lib.func('int32_t FakeHcsNotify(const char16_t *id, uint32_t type, int32_t status)');
  const take = lib.func('void *FakeHcsTakeJournal(void)') as unknown as () => unknown;
  const free = lib.func('void LocalFree(void *p)') as unknown as (p: unknown) => void;
  return {
    journal: () => {
      const p = take();
      const text = koffi.decode(p, 'char16_t', -1);
      free(p);
      return text.split('\n').filter(Boolean);
    },
    arm: (spec) => void control(spec),
    liveAllocations: () => allocs(),
    liveHandles: () => handles(),
    notify: (id, type, status = 0) => notify(id, type, status),
  };
}

/**
 * For a test file over the fake: builds and loads it before the tests (handing both to `ready`), and after
 * each test asserts that every out-string was freed and every handle closed. Does nothing without `cc`.
 */
export function useFakeVmcompute(
  hasCc: boolean,
  ready: (library: string, fake: ReturnType<typeof fakeControls>) => void,
): void {
  let controls: ReturnType<typeof fakeControls> | null = null;
  beforeAll(() => {
    if (!hasCc) return;
    const library = fakeLibrary();
    controls = fakeControls(library);
    ready(library, controls);
  });
  afterEach(() => {
    if (!controls) return;
    expect(controls.liveAllocations()).toBe(0);
    expect(controls.liveHandles()).toBe(0);
  });
}
