// StrykerJS over one module group (`STRYKER_GROUP`, see groups.mjs); run through `pnpm test:mutation`.
import { GROUPS } from './groups.mjs';

const name = process.env.STRYKER_GROUP ?? 'pricing';
const suffix = process.env.STRYKER_MUTATE ? '/recheck' : '';
const group = GROUPS[name];
if (!group) throw new Error(`STRYKER_GROUP must be one of ${Object.keys(GROUPS).join(', ')}`);

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  plugins: ['@stryker-mutator/vitest-runner'],
  vitest: { configFile: 'mutation/vitest.mutation.config.ts', related: false },
  // STRYKER_MUTATE (set by `test:mutation --recheck`): only these `file:line-line` ranges.
  mutate: process.env.STRYKER_MUTATE ? process.env.STRYKER_MUTATE.split(',') : group.mutate,
  // The sandbox copy holds what the tests read: the sources, their tests and fixtures, the price table.
  ignorePatterns: [
    '/*',
    '!/package.json',
    '!/tsconfig*.json',
    '!/mutation',
    '!/packages',
    '/packages/*/dist',
    '/packages/*/node_modules',
  ],
  coverageAnalysis: 'perTest',
  // Two test processes: the machines have two cores, and the whole run (six groups) needs about 40
  // CPU minutes, over 30 on one core. `STRYKER_CONCURRENCY=1` leaves a core to the machine's other work.
  concurrency: Number(process.env.STRYKER_CONCURRENCY ?? 2),
  // A mutant that loops forever is given up on after its tests' own time x 2.5 + 3 s.
  timeoutMS: 3_000,
  timeoutFactor: 2.5,
  tempDirName: '.test-artifacts/stryker-tmp',
  reporters: ['clear-text', 'progress-append-only', 'html', 'json'],
  htmlReporter: { fileName: `.test-artifacts/mutation/${name}${suffix}/index.html` },
  jsonReporter: { fileName: `.test-artifacts/mutation/${name}${suffix}/mutation.json` },
  thresholds: { high: 90, low: 85, break: null },
  cleanTempDir: 'always',
};
