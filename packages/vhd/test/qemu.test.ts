// Oracle tests: qemu-img (and qemu-io) judge what we write, and write what we read.
import { open, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertSameBytes, oracle, pseudoRandomBytes, run, tempDir } from '@lcow/testkit';
import {
  appendFixedFooter,
  chsGeometry,
  convertRawImage,
  createVhdx,
  geometryAlignedSize,
  inspectDisk,
  openVhdx,
  readFooter,
} from '../src/index.ts';

const MiB = 1 << 20;
const hasQemu = oracle('qemu-img') && oracle('qemu-io');
let dir: { path: string; cleanup: () => Promise<void> };
let n = 0;
const file = (ext: string): string => join(dir.path, `f${n++}.${ext}`);

beforeAll(async () => {
  dir = await tempDir('lcow-qemu-');
});
afterAll(() => dir?.cleanup());

async function qemuInfo(path: string, format: string): Promise<{ format: string; 'virtual-size': number }> {
  return JSON.parse(await run('qemu-img', ['info', '-f', format, '--output=json', path]));
}

/** A sparse raw image of `size` bytes with recognisable data at a few places. */
async function rawImage(size: number, seed: number): Promise<string> {
  const p = file('raw');
  await writeFile(p, '');
  await truncate(p, size);
  const fh = await open(p, 'r+');
  for (const at of [0, Math.floor(size / 3), size - 5000]) {
    const where = Math.max(0, at);
    const piece = pseudoRandomBytes(Math.min(4000, size - where), seed + where);
    await fh.write(piece, 0, piece.length, where);
  }
  await fh.close();
  return p;
}

describe.skipIf(!hasQemu)('fixed VHD footers, judged by qemu-img', () => {
  // Sizes that are and are not multiples of their CHS geometry, and one above the CHS maximum (≈127.5 GiB).
  const sizes = [MiB, 10 * MiB + 512, 127 * MiB + 1536, 1 << 30, 200 * 2 ** 30 + 512];

  it.each(sizes)('default footer: qemu-img sees vpc with the exact size %d', async (size) => {
    const raw = await rawImage(size, 7);
    const vhd = file('vhd');
    await run('cp', ['--sparse=always', raw, vhd]);
    const { payloadSize, padding } = await appendFixedFooter(vhd);
    expect(payloadSize).toBe(size);
    expect(padding).toBe(0);
    const info = await qemuInfo(vhd, 'vpc');
    expect(info.format).toBe('vpc');
    expect(info['virtual-size']).toBe(size);
    await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', vhd, raw]);
    expect((await readFooter(vhd)).currentSize).toBe(size);
    expect((await inspectDisk(vhd)).warnings).toEqual([]);
  });

  it.each(sizes.slice(0, 4))(
    'own creator with align=geometry: exact size %d for geometry-only readers too',
    async (size) => {
      const vhd = await rawImage(size, 8);
      const { payloadSize } = await appendFixedFooter(vhd, { creatorApplication: 'lcow', align: 'geometry' });
      const info = await qemuInfo(vhd, 'vpc');
      expect(info['virtual-size']).toBe(payloadSize);
      expect(payloadSize).toBeGreaterThanOrEqual(size);
      expect((await inspectDisk(vhd)).warnings).toEqual([]);
    },
  );

  it('own creator without alignment: qemu 7 sizes by geometry, and inspectDisk warns about it', async () => {
    const size = 10 * MiB + 512;
    const vhd = await rawImage(size, 9);
    await appendFixedFooter(vhd, { creatorApplication: 'lcow' });
    const info = await qemuInfo(vhd, 'vpc');
    const g = chsGeometry(size);
    const qemuMajor = Number(/version (\d+)/.exec(await run('qemu-img', ['--version']))?.[1]);
    expect(info['virtual-size']).toBe(qemuMajor >= 8 ? size : g.cylinders * g.heads * g.sectorsPerTrack * 512);
    expect((await inspectDisk(vhd)).warnings.join()).toMatch(/qemu before 8\.0/);
  });

  it('pads a payload that is not a multiple of 512 and refuses a second footer', async () => {
    const p = file('raw');
    await writeFile(p, pseudoRandomBytes(1000, 3));
    expect(await appendFixedFooter(p)).toMatchObject({ payloadSize: 1024, padding: 24 });
    expect((await stat(p)).size).toBe(1536);
    await expect(appendFixedFooter(p)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    const raw = await readFile(p);
    assertSameBytes(raw.subarray(0, 1000), pseudoRandomBytes(1000, 3));
  });

  it('reads footers qemu-img writes, with the same CHS geometry', async () => {
    for (const size of [MiB, 10 * MiB + 512, 3 * 2 ** 30]) {
      const forced = file('vhd');
      await run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', forced, String(size)]);
      const f = await readFooter(forced);
      expect(f).toMatchObject({ type: 'fixed', currentSize: size, creatorApplication: 'qem2' });
      // Without force_size qemu rounds the size up to the first one its geometry covers exactly.
      const geo = file('vhd');
      await run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', geo, String(size)]);
      const g = await readFooter(geo);
      expect(g.currentSize).toBe(geometryAlignedSize(size));
      expect({ cylinders: g.cylinders, heads: g.heads, sectorsPerTrack: g.sectorsPerTrack }).toEqual(
        chsGeometry(g.currentSize),
      );
    }
    const dyn = file('vhd');
    await run('qemu-img', ['create', '-q', '-f', 'vpc', dyn, String(64 * MiB)]);
    const info = await inspectDisk(dyn);
    expect(info.format).toBe('vhd');
    if (info.format === 'vhd') {
      expect(info.footer.type).toBe('dynamic');
      expect(info.dynamicHeader).toMatchObject({ blockSize: 2 * MiB, checksumValid: true });
    }
  });
});

describe.skipIf(!hasQemu)('VHDX, judged by qemu-img both ways', () => {
  const shapes = [
    { size: 64 * MiB, type: 'dynamic' as const },
    { size: 64 * MiB + 512, type: 'fixed' as const },
    { size: 100 * MiB, type: 'dynamic' as const, blockSize: 32 * MiB },
    { size: 2 * 2 ** 30, type: 'dynamic' as const },
  ];

  it('qemu-img accepts the 20 GiB sandbox default and the 64 TiB maximum', async () => {
    for (const size of [20 * 2 ** 30, 64 * 2 ** 40]) {
      const vhdx = file('vhdx');
      await createVhdx(vhdx, { size });
      await run('qemu-img', ['check', '-f', 'vhdx', vhdx]);
      expect((await qemuInfo(vhdx, 'vhdx'))['virtual-size']).toBe(size);
    }
  });

  it('qemu refuses 4 KiB logical sectors (its limit, not ours): ours still round-trip them', async () => {
    const vhdx = file('vhdx');
    await createVhdx(vhdx, { size: 40 * MiB, type: 'fixed', logicalSectorSize: 4096, blockSize: 2 * MiB });
    await expect(run('qemu-img', ['info', '-f', 'vhdx', vhdx])).rejects.toThrow(/not supported/);
    const d = await openVhdx(vhdx, { writable: true });
    await d.write(39 * MiB, pseudoRandomBytes(MiB, 4));
    assertSameBytes(await d.read(39 * MiB, MiB), pseudoRandomBytes(MiB, 4));
    await d.close();
  });

  it.each(shapes)('qemu-img check/info/compare accept what we create and write: %o', async (shape) => {
    const vhdx = file('vhdx');
    await createVhdx(vhdx, shape);
    await run('qemu-img', ['check', '-f', 'vhdx', vhdx]);
    expect((await qemuInfo(vhdx, 'vhdx'))['virtual-size']).toBe(shape.size);
    const model = file('raw');
    await writeFile(model, '');
    await truncate(model, shape.size);
    const fh = await open(model, 'r+');
    const d = await openVhdx(vhdx, { writable: true });
    for (let i = 0; i < 12; i++) {
      const data = pseudoRandomBytes(1 + ((i * 7919 * 4096) % (3 * MiB)), i + 11);
      const at = Math.floor((((i * 2654435761) % 1000) / 1000) * (shape.size - data.length));
      await d.write(at, data);
      await fh.write(data, 0, data.length, at);
    }
    await d.close();
    await fh.close();
    await run('qemu-img', ['check', '-f', 'vhdx', vhdx]);
    await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', vhdx, model]);
    if (shape.size <= 128 * MiB) {
      const out = file('raw');
      await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', vhdx, out]);
      assertSameBytes(await readFile(out), await readFile(model), 'qemu-img convert output');
    }
  });

  it.each([
    ['dynamic, 1 MiB blocks', ['-o', 'block_size=1M']],
    ['dynamic, default blocks', []],
    ['fixed', ['-o', 'subformat=fixed']],
    ['dynamic, 8 MiB blocks, 2 MiB log', ['-o', 'block_size=8M,log_size=2M']],
  ])('reads and writes what qemu creates (%s)', async (_name, opts) => {
    const size = 48 * MiB;
    const vhdx = file('vhdx');
    await run('qemu-img', ['create', '-q', '-f', 'vhdx', ...opts, vhdx, String(size)]);
    await run('qemu-io', [
      '-f',
      'vhdx',
      '-c',
      `write -P 0xab ${3 * MiB + 512} 70000`,
      '-c',
      `write -P 0x5c ${40 * MiB} 1M`,
      vhdx,
    ]);
    const want = file('raw');
    await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', vhdx, want]);
    const d = await openVhdx(vhdx, { writable: true });
    assertSameBytes(await d.read(0, size), await readFile(want), 'our read of a qemu VHDX');
    // Now we write, and qemu reads.
    const data = pseudoRandomBytes(2 * MiB + 3 * 512, 5);
    await d.write(20 * MiB - 512, data);
    await d.close();
    await run('qemu-img', ['check', '-f', 'vhdx', vhdx]);
    const fh = await open(want, 'r+');
    await fh.write(data, 0, data.length, 20 * MiB - 512);
    await fh.close();
    await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', vhdx, want]);
  });

  it('reads what qemu-img convert -O vhdx writes from a raw image', async () => {
    const raw = await rawImage(33 * MiB + 4096, 21);
    const vhdx = file('vhdx');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', raw, vhdx]);
    const d = await openVhdx(vhdx);
    assertSameBytes(await d.read(0, d.size), await readFile(raw));
    await d.close();
  });

  it('convertRawImage output is accepted by qemu-img and equals the input', async () => {
    const raw = await rawImage(21 * MiB + 1536, 31);
    for (const [format, qfmt, type] of [
      ['vhdx', 'vhdx', 'dynamic'],
      ['vhdx', 'vhdx', 'fixed'],
      ['vhd', 'vpc', undefined],
    ] as const) {
      const out = file(format);
      const progress: number[] = [];
      const r = await convertRawImage(raw, out, {
        format,
        ...(type ? { vhdx: { type } } : {}),
        onProgress: (p) => progress.push(p.done),
      });
      expect(r.virtualSize).toBe(21 * MiB + 1536);
      expect(r.skippedZeroBytes).toBeGreaterThan(10 * MiB);
      expect(progress.at(-1)).toBe(21 * MiB + 1536);
      if (format === 'vhdx') await run('qemu-img', ['check', '-f', qfmt, out]);
      await run('qemu-img', ['compare', '-f', qfmt, '-F', 'raw', out, raw]);
    }
  });
});
