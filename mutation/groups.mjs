// The module groups `pnpm test:mutation` mutates, each with the small set of test files that exercise
// it: Stryker's dry run runs a group's whole test set once (to learn which test covers which mutant), so
// the set is what bounds a run on these shared 2-core machines. Paths are relative to the repository root.
// `isolate: false` lets a group's test files share their imports (each mutant then costs its tests'
// time, not a fresh import of the price table per file).
export const GROUPS = {
  pricing: {
    mutate: ['packages/core/src/pricing/model-price.ts', 'packages/core/src/pricing/normalize-usage.ts'],
    tests: [
      'packages/core/test/pricing-cases.test.ts',
      'packages/core/test/pricing-usage.test.ts',
      'packages/core/test/pricing-table.test.ts',
      'packages/core/test/pricing-names.test.ts',
      'packages/core/test/price-book.test.ts',
      'packages/core/test/pricing-edges.test.ts',
      'packages/core/test/worst-case-rates.test.ts',
      'packages/core/test/worst-case-web-search.test.ts',
    ],
  },
  rules: {
    mutate: ['packages/core/src/storage/budget-rules.ts', 'packages/core/src/storage/rate-limit-rules.ts'],
    tests: [
      'packages/core/test/memory-storage.test.ts',
      'packages/core/test/budget-rules.test.ts',
      'packages/core/test/rate-limit-rules.test.ts',
    ],
  },
  gate: {
    mutate: ['packages/core/src/storage/storage-gate.ts'],
    // Most of the gate's mutants that are not killed at once leave a test waiting forever (a storage
    // call never answered, a timer never armed). Stryker gives up on such a run only after its tests'
    // own time x 2.5 + 3 s and then starts a fresh test process: ~30 s each here, 59 of them in the
    // first run (26 minutes). A test timeout of 4 s fails them instead (the run bails at the first
    // failure), with the encoder the guard's strict admission counts with built in the setup, not in
    // the first test that needs it (seconds, which that timeout would not allow).
    testTimeout: 4_000,
    encoders: ['o200k_base'],
    // guarantees.test.ts covers the gate too, but through the whole guard (tiktoken, admission): it made
    // each mutant cost ~13 s here, past the 30-minute budget of the whole run.
    tests: ['packages/core/test/storage-gate.test.ts', 'packages/core/test/settle-batching.test.ts'],
  },
  // The unit tests only: through the guard (guarantees, guard-admission) every mutant of the bound
  // costs a whole admission with tiktoken, ~30 mutants a minute here, an hour for the group.
  admission: {
    mutate: ['packages/core/src/admission/worst-case.ts', 'packages/core/src/metering/web-search.ts'],
    tests: [
      'packages/core/test/worst-case.test.ts',
      'packages/core/test/worst-case-edges.test.ts',
      'packages/core/test/worst-case-rates.test.ts',
      'packages/core/test/worst-case-web-search.test.ts',
      'packages/core/test/media-size.test.ts',
    ],
  },
  // What the admission reads from media bytes, and the calls waiting for capacity.
  media: {
    mutate: ['packages/core/src/admission/media-size.ts', 'packages/core/src/admission/capacity-waiters.ts'],
    tests: ['packages/core/test/media-size.test.ts', 'packages/core/test/capacity-waiters.test.ts'],
  },
  // The unit tests of the SSE tap, the JSON skimmer and the wire formats only. metering.test.ts and
  // metering-estimated.test.ts meter through the guard and the simulator, each in a process of its own
  // (they check when tiktoken loads): with them a mutant cost several seconds and the group more than
  // an hour here (the run was stopped at 309 of 1062 mutants after 18 minutes).
  metering: {
    mutate: [
      'packages/core/src/metering/sse-stream.ts',
      'packages/core/src/metering/json-skim.ts',
      'packages/core/src/metering/wire-formats.ts',
    ],
    tests: [
      'packages/core/test/sse-stream.test.ts',
      'packages/core/test/json-skim.test.ts',
      'packages/core/test/wire-formats.test.ts',
    ],
  },
};
