// The pool, state by state (the reference's state table, lcow-behaviour.md §1.2–1.8), and each of the
// original's quirks as a test that the original's behaviour would fail.
import { describe, expect, it } from 'vitest';
import { GLOBAL_VM_ID, SvmPool, SvmPoolError, unionMountArgs, type PoolOptions } from '../src/index.ts';
import { FakeHost } from './fake-vm.ts';

function setup(mode: PoolOptions['mode'], extra: Partial<PoolOptions> = {}): { host: FakeHost; pool: SvmPool } {
  const host = new FakeHost();
  return { host, pool: new SvmPool({ mode, start: host.start, ...extra }) };
}
const disk = (hostPath: string, readOnly = true) => ({ hostPath, readOnly });
const tick = () => new Promise((r) => setTimeout(r, 5));

describe('start', () => {
  it('concurrent acquirers share one start and its VM', async () => {
    const { host, pool } = setup('safe');
    const [a, b] = await Promise.all([pool.acquire('L'), pool.acquire('L')]);
    expect(host.starts).toBe(1);
    expect(a.vm).toBe(b.vm);
    expect(pool.snapshot().vms).toMatchObject([{ vmId: 'L', state: 'running', refs: 2 }]);
  });

  it('a failed start fails every waiter with the same error, and the next acquire starts afresh (global mode too)', async () => {
    for (const mode of ['safe', 'global'] as const) {
      const { host, pool } = setup(mode);
      host.fail('start', '', true);
      const results = await Promise.allSettled([pool.acquire('a'), pool.acquire('b'), pool.acquire('a')]);
      const reasons = results.map((r) => (r as PromiseRejectedResult).reason);
      if (mode === 'global') expect(new Set(reasons).size).toBe(1);
      expect(String(reasons[0])).toMatch(/injected start failure/);
      // The original kept the failed entry (global mode: forever); ours is gone.
      expect(pool.snapshot().vms).toEqual([]);
      host.hook = () => {};
      const lease = await pool.acquire('a');
      expect(lease.active).toBe(true);
      expect(lease.vmId).toBe(mode === 'global' ? GLOBAL_VM_ID : 'a');
    }
  });

  it('a start past the deadline is ERR_TIMEOUT, and the VM it brings up later is terminated', async () => {
    const { host, pool } = setup('safe', { timeoutMs: 40 });
    const release = host.stall('start');
    await expect(pool.acquire('slow')).rejects.toMatchObject({
      code: 'ERR_TIMEOUT',
      message: expect.stringMatching(/slow: start/),
    });
    expect(pool.snapshot().vms).toEqual([]);
    release();
    await tick();
    expect(host.running.size).toBe(0);
    expect(host.log).toContain('slow#1 terminate');
  });

  it('an aborted waiter gives up alone; the start goes on for the others', async () => {
    const { host, pool } = setup('global');
    const release = host.stall('start');
    const ac = new AbortController();
    const first = pool.acquire('a', [], { signal: ac.signal });
    const second = pool.acquire('b');
    ac.abort();
    await expect(first).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    release();
    const lease = await second;
    expect(lease.active).toBe(true);
    expect(pool.snapshot().vms[0]!.refs).toBe(1);
  });
});

describe('disks', () => {
  it('refcounted per host path; guest paths /tmp/d<n> from a counter that is never reused; scratch at /tmp/scratch', async () => {
    const { host, pool } = setup('global');
    const a = await pool.acquire('x', [
      { hostPath: '/s/scratch.vhdx', readOnly: false, scratch: true },
      disk('/l/a.vhd'),
      disk('/l/b.vhd'),
    ]);
    expect(a.disks.map((d) => d.guestPath)).toEqual(['/tmp/scratch', '/tmp/d1', '/tmp/d2']);
    const b = await pool.acquire('y', [disk('/l/b.vhd'), disk('/l/c.vhd')]);
    expect(b.disks.map((d) => d.guestPath)).toEqual(['/tmp/d2', '/tmp/d3']);
    expect(host.log.filter((l) => l.includes('hotAdd /l/b.vhd'))).toHaveLength(1);
    await a.release();
    expect(host.log.filter((l) => l.includes('hotRemove'))).toEqual([
      '_lcow_global_svm_#1 hotRemove /s/scratch.vhdx /tmp/scratch',
      '_lcow_global_svm_#1 hotRemove /l/a.vhd /tmp/d1',
    ]);
    const c = await pool.acquire('z', [disk('/l/a.vhd')]);
    expect(c.guestPath('/l/a.vhd')).toBe('/tmp/d4');
  });

  it('Windows host paths compare case-insensitively, with either separator', async () => {
    const { host, pool } = setup('global', { platform: 'win32' });
    await pool.acquire('a', [disk('C:\\lcow\\A\\layer.vhd')]);
    const b = await pool.acquire('b', [disk('c:/LCOW/a/layer.vhd')]);
    expect(b.disks[0]!.guestPath).toBe('/tmp/d1');
    expect(host.log.filter((l) => l.includes('hotAdd'))).toHaveLength(1);
  });

  it("a failed hot-add rolls back this call's disks and its VM reference (the original leaked the reference)", async () => {
    const { host, pool } = setup('safe');
    host.fail('hotAdd', '/l/bad.vhd');
    await expect(pool.acquire('L', [disk('/l/good.vhd'), disk('/l/bad.vhd')])).rejects.toThrow(/injected hotAdd/);
    expect(host.log).toContain('L#1 hotRemove /l/good.vhd /tmp/d1');
    // Safe mode: the only reference is gone, so the VM is too.
    await tick();
    expect(pool.snapshot().vms).toEqual([]);
    expect(host.running.size).toBe(0);
  });

  it('the guest path of a disk still being attached is handed to nobody; a second caller waits for it', async () => {
    const { host, pool } = setup('global');
    const release = host.stall('hotAdd', '/l/x.vhd');
    const a = pool.acquire('a', [disk('/l/x.vhd')]);
    await tick();
    const b = pool.acquire('b', [disk('/l/x.vhd')]);
    await tick();
    expect(pool.snapshot().vms[0]!.disks).toEqual([]);
    release();
    const [la, lb] = await Promise.all([a, b]);
    expect(la.disks[0]).toEqual(lb.disks[0]);
    expect(pool.snapshot().vms[0]!.disks).toEqual([
      { hostPath: '/l/x.vhd', guestPath: '/tmp/d1', readOnly: true, refs: 2 },
    ]);
  });

  it('a failed hot-remove keeps the disk (attached, no references): reused without a hot-add, retried at the next release', async () => {
    const { host, pool } = setup('global');
    const a = await pool.acquire('a', [disk('/l/x.vhd')]);
    host.fail('hotRemove');
    await expect(a.release()).rejects.toThrow(/injected hotRemove/);
    expect(pool.snapshot().vms[0]!.disks).toEqual([
      { hostPath: '/l/x.vhd', guestPath: '/tmp/d1', readOnly: true, refs: 0 },
    ]);
    const b = await pool.acquire('b', [disk('/l/x.vhd')]);
    expect(b.disks[0]!.guestPath).toBe('/tmp/d1');
    expect(host.log.filter((l) => l.includes('hotAdd'))).toHaveLength(1);
    await b.release();
    expect(pool.snapshot().vms[0]!.disks).toEqual([]);
  });
});

describe('lingering disks', () => {
  it('a read-only disk let go stays attached, unreferenced, and the next acquire takes it without a hot-add', async () => {
    const { host, pool } = setup('global', { lingerDisks: 2 });
    const a = await pool.acquire('a', [disk('/l/base.vhd'), disk('/s/box.vhdx', false)]);
    await a.release();
    // The writable sandbox goes at once; the layer lingers.
    expect(host.log.filter((l) => l.includes('hotRemove'))).toEqual([
      '_lcow_global_svm_#1 hotRemove /s/box.vhdx /tmp/d2',
    ]);
    expect(pool.snapshot().vms[0]!.disks).toEqual([
      { hostPath: '/l/base.vhd', guestPath: '/tmp/d1', readOnly: true, refs: 0 },
    ]);
    const b = await pool.acquire('b', [disk('/l/base.vhd')]);
    expect(b.disks[0]!.guestPath).toBe('/tmp/d1');
    expect(host.log.filter((l) => l.includes('hotAdd /l/base.vhd'))).toHaveLength(1);
    await b.release();
  });

  it('past the cap the oldest go; releaseIdle(path) lets one go (a layer about to be removed), releaseIdle() all', async () => {
    const { host, pool } = setup('global', { lingerDisks: 2 });
    for (const n of ['a', 'b', 'c']) await (await pool.acquire(n, [disk(`/l/${n}.vhd`)])).release();
    const removed = (): string[] => host.log.filter((l) => l.includes('hotRemove')).map((l) => l.split(' ')[2]!);
    expect(removed()).toEqual(['/l/a.vhd']);
    await pool.releaseIdle('/l/c.vhd');
    expect(removed()).toEqual(['/l/a.vhd', '/l/c.vhd']);
    // A disk in use is never let go by releaseIdle.
    const held = await pool.acquire('d', [disk('/l/d.vhd')]);
    await pool.releaseIdle();
    expect(removed()).toEqual(['/l/a.vhd', '/l/c.vhd', '/l/b.vhd']);
    expect(pool.snapshot().vms[0]!.disks.map((d) => d.hostPath)).toEqual(['/l/d.vhd']);
    await held.release();
  });

  it('a lingering disk goes after lingerMs', async () => {
    const { host, pool } = setup('global', { lingerDisks: 4, lingerMs: 200 });
    await (await pool.acquire('a', [disk('/l/a.vhd')])).release();
    expect(host.log.some((l) => l.includes('hotRemove'))).toBe(false);
    for (let i = 0; i < 40 && !host.log.some((l) => l.includes('hotRemove')); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(host.log.filter((l) => l.includes('hotRemove'))).toEqual(['_lcow_global_svm_#1 hotRemove /l/a.vhd /tmp/d1']);
    expect(pool.snapshot().vms[0]!.disks).toEqual([]);
  });
});

describe('union mounts', () => {
  it('a second mount of the same target issues no command; unmounted at the last reference', async () => {
    const { host, pool } = setup('global');
    const layers = [disk('/l/sb.vhdx', false), disk('/l/p1.vhd'), disk('/l/p2.vhd')];
    const a = await pool.acquire('c', layers);
    const b = await pool.acquire('c', layers);
    await a.mountUnion('/tmp/c-mount', ['/l/p1.vhd', '/l/p2.vhd'], '/l/sb.vhdx');
    await b.mountUnion('/tmp/c-mount', ['/l/p1.vhd', '/l/p2.vhd'], '/l/sb.vhdx');
    expect(host.log.filter((l) => l.includes('mountUnion'))).toEqual([
      '_lcow_global_svm_#1 mountUnion /tmp/c-mount /tmp/d2:/tmp/d3 +/tmp/d1',
    ]);
    await a.release();
    expect(host.log.some((l) => l.includes('unmount'))).toBe(false);
    await b.release();
    expect(host.log.filter((l) => l.includes('unmount'))).toHaveLength(1);
    // Unmount comes before the disks go.
    const i = host.log.findIndex((l) => l.includes('unmount'));
    expect(host.log.slice(i + 1).every((l) => l.includes('hotRemove'))).toBe(true);
  });

  it('unionMountArgs: ":" between lower layers (the original used ","), a bind for one layer, upper/ and work/ in the sandbox', () => {
    expect(unionMountArgs('/tmp/m', ['/tmp/d2', '/tmp/d3'])).toEqual([
      'mount',
      '-t',
      'overlay',
      'overlay',
      '-o',
      'lowerdir=/tmp/d2:/tmp/d3',
      '/tmp/m',
    ]);
    expect(unionMountArgs('/tmp/m', ['/tmp/d2', '/tmp/d3'], '/tmp/d1')).toEqual([
      'mount',
      '-t',
      'overlay',
      'overlay',
      '-o',
      'lowerdir=/tmp/d2:/tmp/d3,upperdir=/tmp/d1/upper,workdir=/tmp/d1/work',
      '/tmp/m',
    ]);
    expect(unionMountArgs('/tmp/m', ['/tmp/d2'])).toEqual(['mount', '-o', 'bind,ro', '/tmp/d2', '/tmp/m']);
    expect(unionMountArgs('/tmp/m', [], '/tmp/d1')).toEqual(['mount', '--bind', '/tmp/d1/upper', '/tmp/m']);
    expect(unionMountArgs('/m', ['/a:b', '/c'])[5]).toBe('lowerdir=/a\\:b:/c');
    expect(() => unionMountArgs('/m', ['/a,b', '/c'])).toThrow(SvmPoolError);
  });
});

describe('release and lifetime', () => {
  it("each lease releases once: a second release changes nothing (the original's Get/Put imbalance)", async () => {
    const { host, pool } = setup('safe');
    const a = await pool.acquire('L', [disk('/l/a.vhd')]);
    const b = await pool.acquire('L', [disk('/l/a.vhd')]);
    await a.release();
    await a.release();
    expect(b.active).toBe(true);
    expect(host.running.size).toBe(1);
    expect(pool.snapshot().vms[0]).toMatchObject({ refs: 1, disks: [{ refs: 1 }] });
    await b.release();
    await tick();
    expect(host.running.size).toBe(0);
  });

  it('global mode: one VM for all ids, alive with no references until cleanup', async () => {
    const { host, pool } = setup('global');
    const a = await pool.acquire('a');
    const b = await pool.acquire('b');
    expect(a.vm).toBe(b.vm);
    await a.release();
    await b.release();
    expect(host.running.size).toBe(1);
    await pool.cleanup();
    expect(host.running.size).toBe(0);
    expect(a.active).toBe(false);
  });

  it('a VM that is stopping makes new acquirers wait for the stop, then start a fresh VM', async () => {
    const { host, pool } = setup('safe');
    const a = await pool.acquire('L');
    const release = host.stall('terminate');
    const done = a.release();
    await tick();
    expect(pool.snapshot().vms[0]!.state).toBe('stopping');
    const next = pool.acquire('L');
    await tick();
    expect(host.starts).toBe(1);
    release();
    await done;
    const b = await next;
    expect(host.starts).toBe(2);
    expect(b.vm).not.toBe(a.vm);
  });

  it('cleanup force-stops VMs that still have leases; those leases become inert', async () => {
    const { host, pool } = setup('safe');
    const a = await pool.acquire('a', [disk('/l/a.vhd')]);
    await pool.acquire('b');
    await pool.cleanup();
    expect(host.running.size).toBe(0);
    expect(pool.snapshot().vms).toEqual([]);
    await a.release(); // nothing to do, and no error
    expect(host.log.filter((l) => l.includes('hotRemove'))).toEqual([]);
  });

  it('long guest work through lease.vm holds no pool lock (the original held its lock across mkfs)', async () => {
    const { host, pool } = setup('global');
    const a = await pool.acquire('a');
    const release = host.stall('formatExt4');
    const mkfs = a.vm.formatExt4!('/l/sb.vhdx', 20);
    const b = await pool.acquire('b', [disk('/l/other.vhd')]);
    await b.mountUnion('/tmp/b-mount', ['/l/other.vhd']);
    expect(host.log.at(-1)).toMatch(/mountUnion \/tmp\/b-mount/);
    release();
    await mkfs;
  });

  it('a stalled hot-remove at release hits the deadline as ERR_TIMEOUT', async () => {
    const { host, pool } = setup('global', { timeoutMs: 40 });
    const a = await pool.acquire('a', [disk('/l/a.vhd')]);
    host.stall('hotRemove');
    await expect(a.release()).rejects.toMatchObject({
      code: 'ERR_TIMEOUT',
      message: expect.stringMatching(/hot-remove \/l\/a\.vhd/),
    });
  });
});
