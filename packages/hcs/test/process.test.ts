// Processes over the fake vmcompute: stdio round trip through real pipes, exit codes, kill, and the
// pipes read concurrently (a child that writes stderr first cannot block one that writes stdout).
import { describe, expect, it } from 'vitest';
import { oracle } from '@lcow/testkit';
import { ComputeSystem, HResult, processParameters } from '../src/index.ts';
import { useFakeVmcompute } from '@lcow/testkit/fake-vmcompute';

const hasCc = oracle('cc');
let library: string;
let n = 0;

// Every test must leave no out-string unfreed and no handle open.
useFakeVmcompute(hasCc, (l) => {
  library = l;
});

async function withSystem<T>(fn: (cs: ComputeSystem) => Promise<T>): Promise<T> {
  const cs = await ComputeSystem.create(`proc-${process.pid}-${n++}`, { SystemType: 'Container' }, { library });
  try {
    await cs.start();
    return await fn(cs);
  } finally {
    await cs.terminate();
    await cs.waitExited();
    await cs.close();
  }
}

const text = async (s: NodeJS.ReadableStream | null): Promise<string> => {
  const parts: Buffer[] = [];
  for await (const c of s!) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
};

describe.skipIf(!hasCc)('processes', () => {
  it('stdin → stdout round trip of 4 MiB with back-pressure; exit code 0', async () => {
    await withSystem(async (cs) => {
      const p = await cs.createProcess(processParameters(['cat']));
      expect(p.pid).toBeGreaterThan(0);
      const data = Buffer.alloc(4 << 20, 'z');
      const out = text(p.stdout);
      p.stdin!.end(data);
      expect((await out).length).toBe(data.length);
      expect(await p.wait({ timeoutMs: 10_000 })).toBe(0);
      await p.close();
    });
  });

  it('arguments with spaces arrive as one (CommandArgs); stderr and a non-zero exit code', async () => {
    await withSystem(async (cs) => {
      const e = await cs.createProcess(processParameters(['echo', 'a b  c']));
      expect(await text(e.stdout)).toBe('a b  c\n');
      expect(await e.wait()).toBe(0);
      await e.close();
      const f = await cs.createProcess(processParameters(['fail', '3', 'went wrong']));
      const [out, err] = await Promise.all([text(f.stdout), text(f.stderr)]);
      expect({ out, err }).toEqual({ out: '', err: 'went wrong' });
      expect(await f.wait()).toBe(3);
      await f.close();
    });
  });

  it('kill ends a running process; killing it again is fine; a process in a stopped system is refused', async () => {
    await withSystem(async (cs) => {
      const p = await cs.createProcess(processParameters(['sleep']));
      await p.kill();
      expect(await p.wait({ timeoutMs: 5000 })).toBe(137);
      await p.kill();
      await p.close();
      await expect(p.wait()).rejects.toMatchObject({ code: 'ERR_HANDLE_CLOSED' });
    });
    const cs = await ComputeSystem.create(`proc-stopped-${n++}`, { SystemType: 'Container' }, { library });
    await expect(cs.createProcess(processParameters(['echo', 'x']))).rejects.toMatchObject({
      hresult: HResult.HCS_E_INVALID_STATE,
    });
    await cs.terminate();
    await cs.close();
  });
});
