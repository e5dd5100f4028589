#!/usr/bin/env -S node --max-semi-space-size=1
// (A 1 MiB young generation: the converter's short-lived garbage is scavenged early instead of letting the heap
// commit 30–40 MB more; measured no slower. `env -S` passes the flag; run as `node bin.js` it is not set.)
// The command runs from a bundle of its own (dist/bin, made by `pnpm build`): one file per command instead of a
// module graph of a hundred files, which is most of a cold start. @lcow/hcs stays outside (loaded only on
// Windows, with koffi from its own dependencies).
import { main } from './dist/bin/main.js';

process.exitCode = await main(process.argv.slice(2));
