// One driver operation in a process of its own, run from the build (as users run it), so that
// `pnpm bench` can measure its time and peak RSS: `node op.mjs apply ROOT IN.tar` (create + applyDiff).
import { LcowDriver } from '../dist/index.js';

const [op, root, arg] = process.argv.slice(2);
const d = await LcowDriver.init(root, ['lcow.backend=inproc']);
if (op === 'apply') {
  const id = `a${process.pid}`;
  await d.create(id, null);
  await d.applyDiff(id, null, arg);
}
await d.close();
