// Holds the data root's lock on one layer until killed: `layer-lock-child.ts ROOT ID` prints "held" once
// it has it (the lock every operation on that layer takes, as another lcow process would hold it).
import { LayerStore } from '../src/index.ts';

const store = await LayerStore.open(process.argv[2]!);
await store.withLock(process.argv[3]!, async () => {
  process.stdout.write('held\n');
  setInterval(() => {}, 1000); // the lock's socket is unref'd: this keeps the process
  await new Promise(() => {});
});
