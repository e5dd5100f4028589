#!/usr/bin/env -S node --max-semi-space-size=1 --v8-pool-size=1
// (A 1 MiB young generation: the converter's short-lived garbage is scavenged early instead of letting the heap
// commit 30–40 MB more; one V8 helper thread instead of four, 3 MB less; both measured no slower. `env -S`
// passes the flags; run as `node bin.js` they are not set.)
// The command runs from a bundle of its own (dist/bin, made by `pnpm build`): one file per command instead of a
// module graph of a hundred files, which is most of a cold start. @lcow/hcs stays outside (loaded only on
// Windows, with koffi from its own dependencies).
import { main } from './dist/bin/main.js';

process.exitCode = await main(process.argv.slice(2));
