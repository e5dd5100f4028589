// One driver operation in a process of its own, so that `pnpm bench` can measure its peak RSS:
// `node op.ts apply ROOT IN.tar` (create + applyDiff) and `node op.ts diff ROOT ID` (diff to nowhere).
import { createReadStream } from 'node:fs';
import { LcowDriver } from '../src/index.ts';

const [op, root, arg] = process.argv.slice(2) as [string, string, string];
const d = await LcowDriver.init(root, ['lcow.backend=inproc']);
if (op === 'apply') {
  const id = `a${process.pid}`;
  await d.create(id, null);
  await d.applyDiff(id, null, createReadStream(arg));
} else if (op === 'diff') {
  let n = 0;
  for await (const c of d.diff(arg, null)) n += (c as Buffer).length;
  process.stdout.write(`${n}\n`);
}
await d.close();
