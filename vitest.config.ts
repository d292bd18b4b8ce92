import { defineConfig } from 'vitest/config';

// Tests run on the TypeScript sources through the "spendguard-source" export condition: no build needed.
export default defineConfig({
  resolve: { conditions: ['spendguard-source', 'module', 'node', 'development|production'] },
  ssr: {
    // @opentelemetry/* answer the 'module' condition with ESM files whose imports have no extension,
    // which Node cannot load: let Vite transform them.
    resolve: { conditions: ['spendguard-source', 'node', 'development|production'] },
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'examples/*/test/**/*.test.ts', 'tests/*/test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // A machine with no Chrome or Chromium gets the npm registry's one unpacked for the browser tests.
    globalSetup: ['tests/dashboard/test/browser-setup.ts'],
  },
});
