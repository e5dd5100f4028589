// Run first by every package's build: `dist` is made anew, so files of deleted sources and the bundles of
// earlier builds (chunk names change with their content) never reach a published package.
import { rmSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
