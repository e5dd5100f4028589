// moby's graph-driver conformance suite (daemon/graphdriver/graphtest; ../shared/reference/graphtest-port.md),
// ported helper by helper. File access goes through the ContainerFs that `get` returns, as moby's goes
// through containerfs; `verifyFile` uses `lstat` on it (and the host path where the backend has one).
import { randomBytes } from 'node:crypto';
import { lstat as hostLstat } from 'node:fs/promises';
import { expect } from 'vitest';
import type { Change, ContainerFs, LcowDriver } from '../src/index.ts';

/** Deterministic content: seven bytes of a 64-bit LCG per step (moby's randomContent; any PRNG will do). */
export function randomContent(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let s = BigInt(seed) * 0x9e3779b97f4a7c15n + 1n;
  for (let i = 0; i < size; i += 7) {
    s = (s * 6364136223846793005n + 1442695040888963407n) & 0xffff_ffff_ffff_ffffn;
    let v = s >> 1n;
    for (let j = 0; j < 7 && i + j < size; j++) {
      out[i + j] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  return out;
}

/** stringid.GenerateRandomID: 64 lower-hex characters whose first 12 are not all digits. */
export function randomId(): string {
  for (;;) {
    const id = randomBytes(32).toString('hex');
    if (!/^\d{12}/.test(id)) return id;
  }
}

async function withFs<T>(d: LcowDriver, id: string, fn: (fs: ContainerFs) => Promise<T>): Promise<T> {
  const fs = await d.get(id);
  try {
    return await fn(fs);
  } finally {
    await d.put(id);
  }
}

export const addFiles = (d: LcowDriver, layer: string, seed: number): Promise<void> =>
  withFs(d, layer, async (fs) => {
    await fs.writeFile('/file-a', randomContent(64, seed), 0o755);
    await fs.mkdirAll('/dir-b', 0o755);
    await fs.writeFile('/dir-b/file-b', randomContent(128, seed + 1), 0o755);
    await fs.writeFile('/file-c', randomContent(16384, seed + 2), 0o755);
  });

export const checkFile = (d: LcowDriver, layer: string, name: string, content: Buffer): Promise<void> =>
  withFs(d, layer, async (fs) => {
    const got = await fs.readFile(`/${name}`);
    if (!got.equals(content))
      throw new Error(`mismatched file content ${got.toString('hex')}, expecting ${content.toString('hex')}`);
  });

export const addFile = (d: LcowDriver, layer: string, name: string, content: Buffer): Promise<void> =>
  withFs(d, layer, (fs) => fs.writeFile(`/${name}`, content, 0o755));

export const addDirectory = (d: LcowDriver, layer: string, dir: string): Promise<void> =>
  withFs(d, layer, (fs) => fs.mkdirAll(`/${dir}`, 0o755));

export const removeAll = (d: LcowDriver, layer: string, ...names: string[]): Promise<void> =>
  withFs(d, layer, async (fs) => {
    for (const n of names) await fs.removeAll(`/${n}`);
  });

export const checkFileRemoved = (d: LcowDriver, layer: string, name: string): Promise<void> =>
  withFs(d, layer, async (fs) => {
    const err = await fs.stat(`/${name}`).then(
      () => null,
      (e: unknown) => e as { code?: string },
    );
    if (!err) throw new Error(`file still exists: /${name}`);
    expect(err.code).toBe('ERR_NOT_FOUND');
  });

export const addManyFiles = (d: LcowDriver, layer: string, count: number, seed: number): Promise<void> =>
  withFs(d, layer, async (fs) => {
    for (let i = 0; i < count; i += 100) {
      const dir = `/directory-${i}`;
      await fs.mkdirAll(dir, 0o755);
      for (let j = 0; i + j < count && j < 100; j++)
        await fs.writeFile(`${dir}/file-${i + j}`, randomContent(64, seed + i + j), 0o755);
    }
  });

export const changeManyFiles = (d: LcowDriver, layer: string, count: number, seed: number): Promise<Change[]> =>
  withFs(d, layer, async (fs) => {
    const changes: Change[] = [];
    for (let i = 0; i < count; i += 100) {
      const root = `/directory-${i}`;
      await fs.mkdirAll(root, 0o755);
      for (let j = 0; i + j < count && j < 100; j++) {
        if (j === 0) changes.push({ path: root, kind: 'modify' });
        switch (j % 3) {
          case 0:
            await fs.writeFile(`${root}/file-${i + j}`, randomContent(64, seed + i + j), 0o755);
            changes.push({ path: `${root}/file-${i + j}`, kind: 'modify' });
            break;
          case 1:
            await fs.writeFile(`${root}/file-${seed}-${i + j}`, randomContent(64, seed + i + j), 0o755);
            changes.push({ path: `${root}/file-${seed}-${i + j}`, kind: 'add' });
            break;
          case 2:
            await fs.remove(`${root}/file-${i + j}`);
            changes.push({ path: `${root}/file-${i + j}`, kind: 'delete' });
            break;
        }
      }
    }
    return changes;
  });

export const checkManyFiles = (d: LcowDriver, layer: string, count: number, seed: number): Promise<void> =>
  withFs(d, layer, async (fs) => {
    for (let i = 0; i < count; i += 100)
      for (let j = 0; i + j < count && j < 100; j++) {
        const got = await fs.readFile(`/directory-${i}/file-${i + j}`);
        if (!got.equals(randomContent(64, seed + i + j)))
          throw new Error(`mismatched file content in /directory-${i}/file-${i + j}`);
      }
  });

const KIND = { modify: 0, add: 1, delete: 2 } as const;
export function checkChanges(expected: Change[], actual: Change[]): void {
  const sort = (c: Change[]): Change[] =>
    [...c].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : KIND[a.kind] - KIND[b.kind]));
  expect(actual.length, `unexpected number of changes, expected ${expected.length}, got ${actual.length}`).toBe(
    expected.length,
  );
  expect(sort(actual)).toEqual(sort(expected));
}

export const addLayerFiles = (d: LcowDriver, layer: string, parent: string, i: number): Promise<void> =>
  withFs(d, layer, async (fs) => {
    await fs.writeFile('/top-id', layer, 0o755);
    await fs.mkdirAll(`/layer-${i}`, 0o755);
    await fs.writeFile(`/layer-${i}/layer-id`, layer, 0o755);
    await fs.writeFile(`/layer-${i}/parent-id`, parent, 0o755);
  });

export async function addManyLayers(d: LcowDriver, base: string, count: number): Promise<string> {
  let last = base;
  for (let i = 1; i <= count; i++) {
    const next = randomId();
    await d.create(next, last);
    await addLayerFiles(d, next, last, i);
    last = next;
  }
  return last;
}

export const checkManyLayers = (d: LcowDriver, layer: string, count: number): Promise<void> =>
  withFs(d, layer, async (fs) => {
    let ids = (await fs.readFile('/top-id')).toString();
    expect(ids).toBe(layer);
    for (let i = count; i > 0; i--) {
      expect((await fs.readFile(`/layer-${i}/layer-id`)).toString()).toBe(ids);
      ids = (await fs.readFile(`/layer-${i}/parent-id`)).toString();
    }
  });

/** readDir minus `lost+found` ("ext4 always has this dir"). */
export async function readDir(fs: ContainerFs, dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).map((e) => e.name).filter((n) => n !== 'lost+found');
}

const S_ISVTX = 0o1000;
const S_ISUID = 0o4000;

/** verifyFile: type, permissions and the special bits, and the owner; through the host path when there is one. */
export async function verifyFile(
  fs: ContainerFs,
  path: string,
  type: 'dir' | 'file',
  mode: number,
  uid: number,
  gid: number,
): Promise<void> {
  const st = await fs.lstat(path);
  expect(st.type).toBe(type);
  expect(st.mode.toString(8)).toBe(mode.toString(8));
  expect([st.uid, st.gid]).toEqual([uid, gid]);
  if (fs.path) {
    const h = await hostLstat(`${fs.path}${path}`);
    expect((h.mode & 0o7777).toString(8)).toBe(mode.toString(8));
    expect([h.uid, h.gid]).toEqual([uid, gid]);
  }
}

export async function createBase(d: LcowDriver, name: string): Promise<void> {
  await d.createReadWrite(name, null);
  await withFs(d, name, async (fs) => {
    await fs.mkdir('/a subdir', 0o705 | S_ISVTX);
    await fs.lchown('/a subdir', 1, 2);
    await fs.writeFile('/a file', 'Some data', 0o222 | S_ISUID);
  });
}

export const verifyBase = (d: LcowDriver, name: string): Promise<void> =>
  withFs(d, name, async (fs) => {
    await verifyFile(fs, '/a subdir', 'dir', 0o705 | S_ISVTX, 1, 2);
    await verifyFile(fs, '/a file', 'file', 0o222 | S_ISUID, 0, 0);
    expect(await readDir(fs, '/')).toHaveLength(2);
  });
