#!/usr/bin/env node
// The command runs from a bundle of its own (dist/bin, made by `pnpm build`): one file per command instead of a
// module graph of a hundred files, which is most of a cold start. @lcow/hcs stays outside (loaded only on
// Windows, with koffi from its own dependencies).
import { main } from './dist/bin/main.js';

process.exitCode = await main(process.argv.slice(2));
