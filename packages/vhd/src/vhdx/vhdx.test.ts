import fc from 'fast-check';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertSameBytes, pseudoRandomBytes, tempDir } from '@lcow/testkit';
import { VhdError } from '../errors.ts';
import { createVhdx, planLayout } from './create.ts';
import { Header, MetadataTableEntry, RegionTableEntry } from './format/structs.ts';
import { batEntryCount, batIndex, chunkRatio } from './layout.ts';
import { openVhdx } from './vhdx.ts';

const MiB = 1 << 20;
let dir: { path: string; cleanup: () => Promise<void> };
let n = 0;
const fresh = (): string => join(dir.path, `d${n++}.vhdx`);

beforeAll(async () => {
  dir = await tempDir();
});
afterAll(() => dir.cleanup());

describe('VHDX layout arithmetic (MS-VHDX 2.4–2.5)', () => {
  it('chunk ratio and BAT entry count', () => {
    const s = { virtualSize: 20 * 2 ** 30, blockSize: MiB, logicalSectorSize: 512 };
    expect(chunkRatio(s)).toBe(4096);
    // 20480 payload blocks + 5 interleaved bitmap entries (after blocks 4095, 8191, 12287, 16383, 20479 − last not needed).
    expect(batEntryCount(s)).toBe(20480 + 4);
    expect(batIndex(4095, 4096)).toBe(4095);
    expect(batIndex(4096, 4096)).toBe(4097);
    expect(chunkRatio({ ...s, blockSize: 32 * MiB })).toBe(128);
    expect(chunkRatio({ ...s, logicalSectorSize: 4096 })).toBe(32768);
    expect(batEntryCount({ virtualSize: 64 * 2 ** 40, blockSize: MiB, logicalSectorSize: 512 })).toBe(
      2 ** 26 + 2 ** 14 - 1,
    );
  });

  it('places log, metadata and BAT on 1 MiB boundaries', () => {
    const l = planLayout(20 * 2 ** 30, MiB, 512);
    expect(l).toMatchObject({
      logOffset: MiB,
      logLength: MiB,
      metadataOffset: 2 * MiB,
      batOffset: 3 * MiB,
      batLength: MiB,
      dataOffset: 4 * MiB,
    });
    expect(planLayout(64 * 2 ** 40, MiB, 512).batLength).toBe(513 * MiB);
  });
});

describe('createVhdx / openVhdx', () => {
  it('creates a dynamic disk that reads as zeros and stores nothing', async () => {
    const p = fresh();
    await createVhdx(p, { size: 20 * 2 ** 30 });
    expect((await stat(p)).size).toBe(4 * MiB);
    const d = await openVhdx(p);
    expect(d.info).toMatchObject({
      virtualSize: 20 * 2 ** 30,
      blockSize: MiB,
      logicalSectorSize: 512,
      physicalSectorSize: 4096,
      leaveBlocksAllocated: false,
    });
    expect((await d.read(20 * 2 ** 30 - 4096, 4096)).every((b) => b === 0)).toBe(true);
    expect(await d.allocation()).toMatchObject({ presentBlocks: 0, contiguous: null });
    await d.close();
    await d.close(); // idempotent
  });

  it('creates a fixed disk whose payload is one contiguous, sparse range', async () => {
    const p = fresh();
    const size = 10 * MiB + 3 * 512;
    const layout = await createVhdx(p, { size, type: 'fixed' });
    const st = await stat(p);
    expect(st.size).toBe(layout.dataOffset + 11 * MiB);
    expect(st.blocks * 512).toBeLessThan(st.size / 2); // sparse
    const d = await openVhdx(p, { writable: true });
    expect(await d.allocation()).toEqual({
      totalBlocks: 11,
      presentBlocks: 11,
      absentBlocks: 0,
      contiguous: { offset: layout.dataOffset, length: size },
    });
    const data = pseudoRandomBytes(2 * MiB + 77, 1);
    await d.write(5 * MiB - 33, data);
    await d.close();
    // The bytes sit at dataOffset + virtual offset in the file: what a loop device with an offset shows.
    const raw = await readFile(p);
    assertSameBytes(
      raw.subarray(layout.dataOffset + 5 * MiB - 33, layout.dataOffset + 5 * MiB - 33 + data.length),
      data,
    );
  });

  it('supports 4 KiB logical sectors and big blocks', async () => {
    const p = fresh();
    await createVhdx(p, { size: 300 * MiB, blockSize: 32 * MiB, logicalSectorSize: 4096, physicalSectorSize: 512 });
    const d = await openVhdx(p, { writable: true });
    expect(d.info).toMatchObject({
      blockSize: 32 * MiB,
      logicalSectorSize: 4096,
      physicalSectorSize: 512,
      chunkRatio: 1024,
    });
    await d.write(299 * MiB, pseudoRandomBytes(MiB, 2));
    assertSameBytes(await d.read(299 * MiB, MiB), pseudoRandomBytes(MiB, 2));
    await d.close();
  });

  it('creates the 64 TiB maximum without writing its 513 MiB BAT', async () => {
    const p = fresh();
    await createVhdx(p, { size: 64 * 2 ** 40 });
    const d = await openVhdx(p, { writable: true });
    await d.write(64 * 2 ** 40 - 512, new Uint8Array(512).fill(9));
    expect((await d.read(64 * 2 ** 40 - 1024, 1024)).subarray(512).every((b) => b === 9)).toBe(true);
    await d.close();
    expect((await stat(p)).blocks * 512).toBeLessThan(8 * MiB);
  });

  it('refuses bad arguments with ERR_INVALID_ARGUMENT and leaves no file', async () => {
    const bad = [
      { size: 0 },
      { size: 1000 },
      { size: 64 * 2 ** 40 + 512 },
      { size: MiB, blockSize: 3 * MiB },
      { size: MiB, blockSize: 512 * 1024 },
      { size: MiB, logicalSectorSize: 1024 as 512 },
      { size: 4096 + 512, logicalSectorSize: 4096 as const },
    ];
    for (const o of bad) {
      const p = fresh();
      await expect(createVhdx(p, o)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
      await expect(stat(p)).rejects.toMatchObject({ code: 'ENOENT' });
    }
    const p = fresh();
    await createVhdx(p, { size: MiB });
    await expect(createVhdx(p, { size: MiB })).rejects.toMatchObject({
      code: 'ERR_EXISTS',
      message: expect.stringMatching(/already exists/),
    });
    await createVhdx(p, { size: 2 * MiB, overwrite: true });
  });

  it('stops on abort and leaves nothing behind', async () => {
    const p = fresh();
    const ac = new AbortController();
    ac.abort();
    await expect(createVhdx(p, { size: MiB, signal: ac.signal })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    await expect(stat(p)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('rejects out-of-range access, and writes to a read-only disk', async () => {
    const p = fresh();
    await createVhdx(p, { size: MiB });
    const ro = await openVhdx(p);
    await expect(ro.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'ERR_READ_ONLY' });
    await expect(ro.read(MiB - 1, 2)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(ro.read(-1, 1)).rejects.toBeInstanceOf(VhdError);
    await ro.close();
    await expect(ro.read(0, 1)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });

  it('updates both headers with a higher sequence number and new write GUIDs', async () => {
    const p = fresh();
    await createVhdx(p, { size: MiB });
    const before = await openVhdx(p);
    const h0 = { ...before.info.header };
    await before.close();
    const d = await openVhdx(p, { writable: true });
    await d.write(0, new Uint8Array([1]));
    await d.close();
    const fh = await open(p, 'r');
    const buf = new Uint8Array(4096);
    const seqs: bigint[] = [];
    for (const at of [64 * 1024, 128 * 1024]) {
      await fh.read(buf, 0, 4096, at);
      const h = Header.decode(buf);
      seqs.push(h.sequenceNumber);
      expect(h.fileWriteGuid).not.toBe(h0.fileWriteGuid);
      expect(h.dataWriteGuid).not.toBe(h0.dataWriteGuid);
    }
    await fh.close();
    expect(seqs.sort()).toEqual([h0.sequenceNumber + 3n, h0.sequenceNumber + 4n]);
  });

  it('random writes read back like a plain buffer, before and after reopening (property)', async () => {
    const size = 9 * MiB + 512;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<'dynamic' | 'fixed'>('dynamic', 'fixed'),
        fc.array(
          fc.record({
            at: fc.integer({ min: 0, max: size - 1 }),
            len: fc.integer({ min: 0, max: 3 * MiB }),
            seed: fc.integer({ min: 1 }),
            zero: fc.boolean(),
          }),
          {
            maxLength: 12,
          },
        ),
        async (type, writes) => {
          const p = fresh();
          await createVhdx(p, { size, type });
          const model = new Uint8Array(size);
          const d = await openVhdx(p, { writable: true });
          for (const w of writes) {
            const len = Math.min(w.len, size - w.at);
            const data = w.zero ? new Uint8Array(len) : pseudoRandomBytes(len, w.seed);
            await d.write(w.at, data);
            model.set(data, w.at);
          }
          assertSameBytes(await d.read(0, size), model);
          await d.close();
          const again = await openVhdx(p);
          assertSameBytes(await again.read(0, size), model, 'after reopen');
          await again.close();
        },
      ),
      { numRuns: 25 },
    );
  });

  it('zeros written to never-written blocks allocate nothing', async () => {
    const p = fresh();
    await createVhdx(p, { size: 4 * MiB });
    const d = await openVhdx(p, { writable: true });
    await d.write(0, new Uint8Array(3 * MiB));
    expect((await d.allocation()).presentBlocks).toBe(0);
    await d.write(MiB + 5, Uint8Array.of(0, 1, 0));
    expect((await d.allocation()).presentBlocks).toBe(1);
    await d.close();
    expect((await stat(p)).size).toBe(5 * MiB);
  });

  it('concurrent writes to the same new block allocate it once', async () => {
    const p = fresh();
    await createVhdx(p, { size: 4 * MiB });
    const d = await openVhdx(p, { writable: true });
    await Promise.all(Array.from({ length: 16 }, (_, i) => d.write(i * 4096, new Uint8Array(4096).fill(i + 1))));
    expect((await d.allocation()).presentBlocks).toBe(1);
    for (let i = 0; i < 16; i++) expect((await d.read(i * 4096, 4096)).every((b) => b === i + 1)).toBe(true);
    await d.close();
    expect((await stat(p)).size).toBe(5 * MiB);
  });

  it('keeps struct sizes of the spec', () => {
    expect(Header.size).toBe(4096);
    expect(RegionTableEntry.size).toBe(32);
    expect(MetadataTableEntry.size).toBe(32);
  });
});
