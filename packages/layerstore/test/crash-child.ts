// Child of crash.test.ts: runs store operations in a loop until it is killed, printing each layer id
// once that layer is complete (or completely removed).
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LayerStore } from '../src/index.ts';

/** The bytes a layer's file must hold, derived from its id, so a survivor can be checked exactly. */
export function contentOf(id: string, kind: string): Buffer {
  const seed = createHash('sha256').update(`${id}/${kind}`).digest();
  return Buffer.concat(Array.from({ length: 2048 + seed[0]! * 8 }, () => seed));
}

if (process.argv[1]?.endsWith('crash-child.ts')) {
  const [root, run] = process.argv.slice(2) as [string, string];
  const s = await LayerStore.open(root);
  let parent: string | null = (await s.list()).at(-1) ?? null;
  process.stdout.write('ready\n');
  for (let i = 0; ; i++) {
    const id = `r${run.padStart(3, '0')}-${String(i).padStart(4, '0')}`;
    await s.create(id, parent, async (d) => {
      if (i % 3 === 0) await writeFile(join(d, 'sandbox.vhdx'), contentOf(id, 'sandbox'));
    });
    await s.commitFile(id, 'layer.vhd', (tmp) => writeFile(tmp, contentOf(id, 'layer')));
    await s.writeChain(id, await s.chain(id));
    if (i % 2 === 1) await s.remove(id);
    else parent = id;
    process.stdout.write(`${id}\n`);
  }
}
