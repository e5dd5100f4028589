import { basename } from 'node:path';
import { defineProject, type UserWorkspaceConfig } from 'vitest/config';

/**
 * The one vitest configuration every package uses: tests run against `src/` through the
 * `@lcow/source` export condition, so no build is needed before `pnpm test`.
 */
export function packageConfig(dir: string, overrides: { testTimeout?: number } = {}): UserWorkspaceConfig {
  return defineProject({
    resolve: { conditions: ['@lcow/source'] },
    ssr: { resolve: { conditions: ['@lcow/source'] } },
    test: {
      name: basename(dir),
      root: dir,
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      testTimeout: overrides.testTimeout ?? 120_000,
      hookTimeout: 300_000,
    },
  });
}
