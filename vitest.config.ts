import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Files that start child processes (the demo, several instances, Chromium) or load the machine on
 * purpose: they run one at a time, after the rest, so that nothing else competes with them for the CPU.
 */
const ALONE = [
  'tests/multi-instance/test/**/*.test.ts',
  'tests/dashboard/test/**/*.test.ts',
  'examples/*/test/**/*.test.ts',
];

/**
 * The behaviour tests share one module graph per worker (`isolate: false`): each of them imports the
 * same harness (three web frameworks, the OpenAI client, the core's sources), which cost about 1 s of
 * CPU per file to import afresh. They keep no state in shared modules; each file starts its own apps.
 */
const BEHAVIOUR = 'tests/behaviour/test/**/*.test.ts';

const common = {
  testTimeout: 30_000,
  hookTimeout: 60_000,
  pool: 'forks',
} as const;

// Tests run on the TypeScript sources through the "spendguard-source" export condition: no build needed.
export default defineConfig({
  resolve: { conditions: ['spendguard-source', 'module', 'node', 'development|production'] },
  ssr: {
    // @opentelemetry/* answer the 'module' condition with ESM files whose imports have no extension,
    // which Node cannot load: let Vite transform them.
    resolve: { conditions: ['spendguard-source', 'node', 'development|production'] },
  },
  test: {
    // A machine with no Chrome or Chromium gets the npm registry's one unpacked for the browser tests.
    globalSetup: ['tests/dashboard/test/browser-setup.ts'],
    projects: [
      {
        extends: true,
        test: {
          ...common,
          name: 'unit',
          include: ['packages/*/test/**/*.test.ts', 'tests/*/test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...ALONE, BEHAVIOUR],
          // Vitest's default is one worker less than the cores (1 on the project's 2-core machines):
          // these files wait on sockets, SQLite and Postgres much of their time, so two run at once.
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          ...common,
          name: 'behaviour',
          include: [BEHAVIOUR],
          isolate: false,
          // The same group and worker count as `unit`: the two projects share the two workers.
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          ...common,
          name: 'alone',
          include: ALONE,
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
