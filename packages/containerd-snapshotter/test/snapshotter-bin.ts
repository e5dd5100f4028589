// The snapshotter command from the sources, for tests that run it as a child process (under tsx).
import { main } from '../src/index.ts';

process.exitCode = await main(process.argv.slice(2));
