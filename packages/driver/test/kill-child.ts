// Child of kill.test.ts: drives the driver in a loop until it is SIGKILLed — applyDiff (in its own
// converter child), createReadWrite, get/write/put on the host backend, remove — printing each step once
// it has returned ("applied ID", "rw ID", "removing ID" before a removal starts, "removed ID"). Only
// leaves are removed, as the daemon does.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pseudoRandomBytes, makeTar } from '@lcow/testkit';
import { LcowDriver } from '../src/index.ts';

/** A layer's tar, derived from its id: a few hundred files and one larger one. */
export function layerTar(id: string): Buffer {
  const seed = createHash('sha256').update(id).digest().readUInt32LE(0);
  const specs = [{ path: 'data', body: pseudoRandomBytes(3 << 20, seed) }];
  for (let i = 0; i < 300; i++)
    specs.push({ path: `many/f${i}`, body: pseudoRandomBytes(100 + (i % 7) * 300, seed + i) });
  return Buffer.from(makeTar(specs));
}

if (process.argv[1]?.endsWith('kill-child.ts')) {
  const [root, backend, run] = process.argv.slice(2) as [string, string, string];
  const d = await LcowDriver.init(root, [`lcow.backend=${backend}`]);
  const say = (s: string): boolean => process.stdout.write(`${s}\n`);
  const layers = (await d.store.list()).filter((id) => id.startsWith('L'));
  say('ready');
  for (let i = 0; ; i++) {
    const id = `L${run.padStart(3, '0')}-${i}`;
    const parent = layers.at(-1) ?? null;
    await d.create(id, parent);
    await d.applyDiff(id, parent, Readable.from([layerTar(id)]));
    say(`applied ${id}`);
    layers.push(id);
    const rw = `S${run.padStart(3, '0')}-${i}`;
    await d.createReadWrite(rw, id);
    say(`rw ${rw}`);
    if (backend === 'host') {
      const fs = await d.get(rw);
      await fs.writeFile('/written', rw);
      await d.put(rw);
    }
    if (i % 2 === 1) {
      // Only leaves are removed (the daemon never removes a layer that others are built on).
      say(`removing ${rw}`);
      await d.remove(rw);
      say(`removed ${rw}`);
    }
    if (i % 3 === 2) {
      const leaf = `T${run.padStart(3, '0')}-${i}`;
      await d.create(leaf, id);
      await d.applyDiff(leaf, id, Readable.from([layerTar(leaf)]));
      say(`applied ${leaf}`);
      say(`removing ${leaf}`);
      await d.remove(leaf);
      say(`removed ${leaf}`);
    }
  }
}
