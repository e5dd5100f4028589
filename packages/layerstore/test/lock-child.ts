// Holds a HostLock until killed: `lock-child.ts KEY` prints "held" once it has it.
import { HostLock } from '../src/index.ts';

await new HostLock(process.argv[2]!).acquire();
process.stdout.write('held\n');
setInterval(() => {}, 1000);
