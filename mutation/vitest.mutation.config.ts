import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { GROUPS } from './groups.mjs';

// The vitest config Stryker runs a group's tests with (see stryker.config.mjs). Stryker mutates a copy of
// the repository (its sandbox) whose node_modules links lead back to the original packages: the aliases
// make `@spendguard/core` (and its `/testing`) resolve to the sandbox's own, mutated, sources.
const root = fileURLToPath(new URL('..', import.meta.url));
const group = GROUPS[(process.env.STRYKER_GROUP ?? 'pricing') as keyof typeof GROUPS];
const conditions = ['spendguard-source', 'module', 'node', 'development|production'];

export default defineConfig({
  resolve: {
    conditions,
    alias: [
      { find: /^@spendguard\/core\/testing$/, replacement: `${root}packages/core/src/testing/index.ts` },
      { find: /^@spendguard\/core$/, replacement: `${root}packages/core/src/index.ts` },
    ],
  },
  ssr: { resolve: { conditions } },
  test: {
    root,
    include: group.tests,
    isolate: 'isolate' in group ? group.isolate : false,
    // Not in an isolated group (metering): its tests check when tiktoken gets loaded.
    setupFiles: 'isolate' in group && group.isolate ? [] : [`${root}mutation/keep-encoders.ts`],
    // A group may fail a test that hangs sooner than Stryker's own timeout would (see groups.mjs).
    testTimeout: 'testTimeout' in group ? group.testTimeout : 30_000,
    hookTimeout: 60_000,
  },
});
