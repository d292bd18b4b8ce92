export {
  buildSeedPlan,
  type CallBatch,
  generateCalls,
  periodStart,
  type ResolvedSeedOptions,
  resolveSeedOptions,
  SEED_FEATURES,
  SEED_MODELS,
  type SeedOptions,
  type SeedPlan,
  seedFingerprint,
} from './seed-data.js';
export { type PgSeedTarget, seedPg } from './seed-pg.js';
export { type SeedResult, type SeedWriteOptions, seedSqlite } from './seed-sqlite.js';
