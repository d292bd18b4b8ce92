/**
 * What the narrow-rollup triggers (migration 9) cost a request: µs per reserve + settle (key, user and
 * team, two tags) on a file with the triggers and on one without them, alternating rounds in the same
 * run. Not a test: read the medians and the ratio.
 *
 *   node --conditions=spendguard-source --import tsx packages/storage-sqlite/bench/narrow-rollup-cost.ts
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { sqliteStorage } from '../src/index.js';
import { batch, median, seed } from './workload.js';

const BATCH = 2000;
const ROUNDS = 7;

const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), 'spendguard-ab-'));
const withT = sqliteStorage({ path: join(dir, 'a.db') });
const without = sqliteStorage({ path: join(dir, 'b.db') });
await withT.init();
await without.init();
const raw = new Database(join(dir, 'b.db'));
for (const t of raw
  .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
  .pluck()
  .all() as string[])
  raw.exec(`DROP TRIGGER "${t}"`);
raw.close();
await seed(withT);
await seed(without);
await batch(withT, BATCH);
await batch(without, BATCH);
const times = { withT: [] as number[], without: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  times.withT.push(await batch(withT, BATCH));
  times.without.push(await batch(without, BATCH));
}
console.log(
  `with narrow-rollup triggers: ${median(times.withT).toFixed(1)} µs; without: ${median(times.without).toFixed(1)} µs; ratio ${(median(times.withT) / median(times.without)).toFixed(2)}`,
);
await withT.close();
await without.close();
rmSync(dir, { recursive: true, force: true });
