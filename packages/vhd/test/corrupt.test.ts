// Untrusted input: every corrupted or truncated file must give a result or a VhdError, quickly, never
// another exception, a hang or an allocation driven by a corrupted size.
import { randomUUID } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pseudoRandomBytes, tempDir, cpuMs } from '@lcow/testkit';
import { VhdError, createVhdx, inspectDisk, openVhdx } from '../src/index.ts';
import {
  Header,
  MetadataTableEntry,
  MetadataTableHeader,
  RegionTableEntry,
  RegionTableHeader,
} from '../src/vhdx/format/structs.ts';
import { checksumWithZeroField } from '../src/vhdx/layout.ts';

const MiB = 1 << 20;
const KiB = 1024;
let dir: { path: string; cleanup: () => Promise<void> };
let base: Uint8Array;
let n = 0;
const outcomes = { opened: 0, rejected: 0 };

beforeAll(async () => {
  dir = await tempDir('lcow-corrupt-');
  const p = join(dir.path, 'base.vhdx');
  await createVhdx(p, { size: 8 * MiB });
  const d = await openVhdx(p, { writable: true });
  await d.write(0, pseudoRandomBytes(MiB + 4096, 1));
  await d.write(6 * MiB, pseudoRandomBytes(4096, 2));
  await d.close();
  base = new Uint8Array(await readFile(p));
});
afterAll(async () => {
  console.log(`[corrupt] cases opened: ${outcomes.opened}, rejected with VhdError: ${outcomes.rejected}`);
  await dir.cleanup();
});

/** Opens, reads every byte and scans the BAT; returns 'ok' or the VhdError code. Any other error fails the test. */
async function exercise(bytes: Uint8Array): Promise<string> {
  const p = join(dir.path, `c${n++}.vhdx`);
  await writeFile(p, bytes);
  return exercisePath(p);
}

async function exercisePath(p: string): Promise<string> {
  const started = cpuMs();
  try {
    const d = await openVhdx(p);
    try {
      await d.allocation();
      // Everything of the 8 MiB disk; of a disk a flip made huge, its first 8 MiB and last 4 MiB.
      for (let at = 0; at < Math.min(d.size, 8 * MiB); at += 4 * MiB) await d.read(at, Math.min(4 * MiB, d.size - at));
      if (d.size > 8 * MiB) await d.read(d.size - 4 * MiB, 4 * MiB);
    } finally {
      await d.close();
    }
    await inspectDisk(p);
    outcomes.opened++;
    return 'ok';
  } catch (e) {
    if (!(e instanceof VhdError)) throw new Error(`${p}: ${String(e)}`, { cause: e });
    expect(e.message).toContain(p);
    outcomes.rejected++;
    return e.code;
  } finally {
    expect(cpuMs() - started, `${p}: CPU time of one case`).toBeLessThan(5000);
  }
}

function withChecksum(bytes: Uint8Array, at: number, size: number, field: number): void {
  const part = bytes.subarray(at, at + size);
  part.fill(0, field, field + 4);
  new DataView(part.buffer, part.byteOffset).setUint32(field, checksumWithZeroField(part, field), true);
}

const header = (b: Uint8Array, which: 1 | 2): { at: number; patch: (f: Partial<Header>) => void } => {
  const at = which === 1 ? 64 * KiB : 128 * KiB;
  return {
    at,
    patch: (f) => {
      const h = { ...Header.decode(b, at), ...f };
      Header.encodeInto(h, b, at);
      withChecksum(b, at, 4096, 4);
    },
  };
};

describe('corrupted VHDX files', () => {
  it('base file opens', async () => {
    expect(await exercise(base)).toBe('ok');
  });

  it('one damaged copy of the header or region table is survived; both damaged is ERR_VHD_FORMAT', async () => {
    for (const [a, b] of [
      [64 * KiB, 128 * KiB],
      [192 * KiB, 256 * KiB],
    ] as const) {
      const one = base.slice();
      one[a + 10] = one[a + 10]! ^ 0xff;
      expect(await exercise(one)).toBe('ok');
      const two = base.slice();
      two[b + 10] = two[b + 10]! ^ 0xff;
      expect(await exercise(two)).toBe('ok');
      const both = one.slice();
      both[b + 10] = both[b + 10]! ^ 0xff;
      expect(await exercise(both)).toBe('ERR_VHD_FORMAT');
    }
    const sig = base.slice();
    sig[0] = 0;
    expect(await exercise(sig)).toBe('ERR_VHD_FORMAT');
  });

  it('targeted field damage with valid checksums', async () => {
    const cases: [string, (b: Uint8Array) => void, string][] = [
      [
        'header version 2',
        (b) => (header(b, 1).patch({ version: 2 }), header(b, 2).patch({ version: 2 })),
        'ERR_VHD_FORMAT',
      ],
      [
        'log past EOF',
        (b) => (header(b, 1).patch({ logOffset: 2 ** 40 }), header(b, 2).patch({ logOffset: 2 ** 40 })),
        'ERR_VHD_FORMAT',
      ],
      [
        'log misaligned',
        (b) => (header(b, 1).patch({ logOffset: MiB + 4096 }), header(b, 2).patch({ logOffset: MiB + 4096 })),
        'ERR_VHD_FORMAT',
      ],
      [
        'log overlaps metadata',
        (b) => (header(b, 1).patch({ logLength: 2 * MiB }), header(b, 2).patch({ logLength: 2 * MiB })),
        'ERR_VHD_FORMAT',
      ],
      [
        'empty log with a LogGuid',
        (b) => (header(b, 1).patch({ logGuid: randomUUID() }), header(b, 2).patch({ logGuid: randomUUID() })),
        'ok',
      ],
      [
        'log with a valid entry needs replay',
        (b) => {
          const guid = randomUUID();
          header(b, 1).patch({ logGuid: guid });
          header(b, 2).patch({ logGuid: guid });
          const e = b.subarray(MiB, MiB + 4096);
          e.set(new TextEncoder().encode('loge'));
          const v = new DataView(e.buffer, e.byteOffset);
          v.setUint32(8, 4096, true);
          v.setBigUint64(16, 1n, true);
          b.set(b.subarray(64 * KiB + 48, 64 * KiB + 64), MiB + 32); // the header's LogGuid bytes
          withChecksum(b, MiB, 4096, 4);
        },
        'ERR_VHD_UNSUPPORTED',
      ],
      [
        // Every 4 KiB a would-be entry reaching to the end of the log, each checksum wrong: checking them
        // all would read the log quadratically; the reader stops once the work passes twice its length.
        'log of overlapping entries with bad checksums',
        (b) => {
          const guid = randomUUID();
          header(b, 1).patch({ logGuid: guid });
          header(b, 2).patch({ logGuid: guid });
          for (let at = 0; at < MiB; at += 4096) {
            const e = b.subarray(MiB + at, MiB + at + 4096);
            e.set(new TextEncoder().encode('loge'));
            const v = new DataView(e.buffer, e.byteOffset);
            v.setUint32(4, 0xdeadbeef, true);
            v.setUint32(8, MiB - at, true);
            b.set(b.subarray(64 * KiB + 48, 64 * KiB + 64), MiB + at + 32);
          }
        },
        'ERR_VHD_UNSUPPORTED',
      ],
    ];
    const region =
      (patch: (e: { guid: string; fileOffset: number; length: number; required: number }, i: number) => void) =>
      (b: Uint8Array) => {
        for (const at of [192 * KiB, 256 * KiB]) {
          const h = RegionTableHeader.decode(b, at);
          for (let i = 0; i < h.entryCount; i++) {
            const e = RegionTableEntry.decode(b, at + 16 + i * 32);
            patch(e, i);
            RegionTableEntry.encodeInto(e, b, at + 16 + i * 32);
          }
          withChecksum(b, at, 64 * KiB, 4);
        }
      };
    cases.push(
      ['BAT region huge', region((e) => (e.length = 0xfff00000)), 'ERR_VHD_FORMAT'],
      ['BAT region misaligned', region((e, i) => i === 0 && (e.fileOffset += 4096)), 'ERR_VHD_FORMAT'],
      ['regions overlap', region((e) => (e.fileOffset = 2 * MiB)), 'ERR_VHD_FORMAT'],
      ['unknown required region', region((e, i) => i === 0 && (e.guid = randomUUID())), 'ERR_VHD_UNSUPPORTED'],
      [
        'unknown optional region replacing BAT',
        region((e, i) => i === 0 && ((e.guid = randomUUID()), (e.required = 0))),
        'ERR_VHD_FORMAT',
      ],
      [
        'region entry count absurd',
        (b) => {
          for (const at of [192 * KiB, 256 * KiB]) {
            RegionTableHeader.set(b, 'entryCount', 0xffffffff, at);
            withChecksum(b, at, 64 * KiB, 4);
          }
        },
        'ERR_VHD_FORMAT',
      ],
    );
    const meta = 2 * MiB;
    const metaEntry =
      (i: number, f: Partial<{ offset: number; length: number; flags: number; itemId: string }>) => (b: Uint8Array) => {
        const at = meta + MetadataTableHeader.size + i * MetadataTableEntry.size;
        MetadataTableEntry.encodeInto({ ...MetadataTableEntry.decode(b, at), ...f }, b, at);
      };
    const item = (i: number, bytes: number[]) => (b: Uint8Array) => {
      const e = MetadataTableEntry.decode(b, meta + MetadataTableHeader.size + i * MetadataTableEntry.size);
      b.set(bytes, meta + e.offset);
    };
    cases.push(
      ['metadata signature', (b) => (b[meta] = 0), 'ERR_VHD_FORMAT'],
      ['metadata entry count 65535', (b) => MetadataTableHeader.set(b, 'entryCount', 65535, meta), 'ERR_VHD_FORMAT'],
      ['metadata item past region', metaEntry(0, { offset: MiB - 2 }), 'ERR_VHD_FORMAT'],
      ['metadata item 4 GiB long', metaEntry(1, { length: 0xffffffff }), 'ERR_VHD_FORMAT'],
      ['metadata item inside the table', metaEntry(1, { offset: 100 }), 'ERR_VHD_FORMAT'],
      ['metadata items overlap', metaEntry(1, { offset: 64 * KiB }), 'ERR_VHD_FORMAT'],
      ['required item missing', metaEntry(2, { itemId: randomUUID(), flags: 0 }), 'ERR_VHD_FORMAT'],
      ['unknown required item', metaEntry(2, { itemId: randomUUID() }), 'ERR_VHD_UNSUPPORTED'],
      ['block size 3 MiB', item(0, [0, 0, 0x30, 0]), 'ERR_VHD_FORMAT'],
      ['block size 0', item(0, [0, 0, 0, 0]), 'ERR_VHD_FORMAT'],
      ['has parent', item(0, [0, 0, 0x10, 0, 2, 0, 0, 0]), 'ERR_VHD_UNSUPPORTED'],
      ['virtual size 2^60', item(1, [0, 0, 0, 0, 0, 0, 0, 0x10]), 'ERR_VHD_FORMAT'],
      ['virtual size 2^64-1', item(1, [255, 255, 255, 255, 255, 255, 255, 255]), 'ERR_VHD_FORMAT'],
      ['virtual size odd', item(1, [1, 2, 3, 0, 0, 0, 0, 0]), 'ERR_VHD_FORMAT'],
      ['virtual size beyond the BAT region', item(1, [0, 0, 0, 0, 0, 1, 0, 0]), 'ERR_VHD_FORMAT'],
      ['logical sector 1000', item(3, [0xe8, 3, 0, 0]), 'ERR_VHD_FORMAT'],
      ['physical sector 0', item(4, [0, 0, 0, 0]), 'ERR_VHD_FORMAT'],
    );
    const bat = 3 * MiB;
    const batEntry = (i: number, lo: number, hi: number) => (b: Uint8Array) => {
      const v = new DataView(b.buffer, b.byteOffset);
      v.setUint32(bat + i * 8, lo, true);
      v.setUint32(bat + i * 8 + 4, hi, true);
    };
    cases.push(
      ['BAT entry past EOF', batEntry(0, 6 | (500 << 20), 0), 'ERR_VHD_FORMAT'],
      ['BAT entry at 16 EiB', batEntry(0, 6 | (0xfff << 20), 0xffffffff), 'ERR_VHD_FORMAT'],
      ['BAT entry inside the header section', batEntry(1, 6, 0), 'ERR_VHD_FORMAT'],
      ['BAT entry on the BAT itself', batEntry(1, 6 | (3 << 20), 0), 'ERR_VHD_FORMAT'],
      ['BAT entry reserved state 4', batEntry(2, 4, 0), 'ERR_VHD_FORMAT'],
      ['BAT entry partially present', batEntry(2, 7 | (4 << 20), 0), 'ERR_VHD_FORMAT'],
      ['BAT entry zero state reads zeros', batEntry(0, 2, 0), 'ok'],
    );
    for (const [name, mutate, want] of cases) {
      const b = base.slice();
      mutate(b);
      expect([name, await exercise(b)]).toEqual([name, want]);
    }
  });

  it('truncated anywhere: a VhdError, or all data that is still there', async () => {
    const cuts = [
      0,
      7,
      4096,
      64 * KiB + 100,
      128 * KiB,
      192 * KiB + 8,
      300 * KiB,
      MiB - 1,
      MiB,
      2 * MiB + 100,
      3 * MiB + 8,
      4 * MiB - 1,
      4 * MiB + 4096,
      base.length - 1,
    ];
    for (const cut of cuts) {
      const r = await exercise(base.subarray(0, cut));
      if (cut < base.length) expect([cut, r]).toEqual([cut, 'ERR_VHD_FORMAT']);
    }
  });

  it('random byte flips in the structures a reader trusts (3000 cases)', async () => {
    // Where the flips land: the first bytes of each header and region table copy, the metadata table and
    // items, and the BAT, plus anywhere in the file.
    const spans: [number, number][] = [
      [0, 16],
      [64 * KiB, 80],
      [128 * KiB, 80],
      [192 * KiB, 16 + 64],
      [256 * KiB, 16 + 64],
      [2 * MiB, 32 + 5 * 32],
      [2 * MiB + 64 * KiB, 40],
      [3 * MiB, 64],
      [0, base.length],
    ];
    const p = join(dir.path, 'flips.vhdx');
    await writeFile(p, base);
    const fh = await open(p, 'r+');
    const codes = new Map<string, number>();
    try {
      for (let i = 0; i < 3000; i++) {
        const rnd = pseudoRandomBytes(16, i + 1);
        const v = new DataView(rnd.buffer);
        const flips = 1 + (rnd[0]! % 3);
        const places: number[] = [];
        for (let k = 0; k < flips; k++) {
          const [start, len] = spans[v.getUint16(2 + k * 4, true) % spans.length]!;
          const at = start + (v.getUint16(4 + k * 4, true) % len);
          places.push(at);
          await fh.write(Uint8Array.of(base[at]! ^ (1 << (rnd[14 - k]! % 8))), 0, 1, at);
        }
        const r = await exercisePath(p);
        codes.set(r, (codes.get(r) ?? 0) + 1);
        for (const at of places) await fh.write(base.subarray(at, at + 1), 0, 1, at);
      }
    } finally {
      await fh.close();
    }
    console.log('[corrupt] random flips:', Object.fromEntries(codes));
    expect([...codes.keys()].every((c) => ['ok', 'ERR_VHD_FORMAT', 'ERR_VHD_UNSUPPORTED'].includes(c))).toBe(true);
    expect(codes.get('ERR_VHD_FORMAT')).toBeGreaterThan(100);
  }, 1_200_000); // about a minute alone; many times that beside a second full run
});
