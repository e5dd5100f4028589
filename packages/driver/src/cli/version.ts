import { readFileSync } from 'node:fs';

/** `lcow VERSION`, from the package's own manifest. */
export function version(): string {
  // The same two levels up from src/cli, dist/cli and the bundle's dist/bin.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return `lcow ${pkg.version}`;
}
