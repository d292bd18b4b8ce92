import { existsSync, rmSync } from 'node:fs';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import Database from 'better-sqlite3';
import { counterUpdates, SCOPE_COLUMN } from './budget-counters.js';
import { buildSeedPlan, type CallBatch, generateCalls, type SeedOptions } from './seed-data.js';

export interface SeedResult {
  /** The fingerprint of the options: equal fingerprints, equal data. */
  fingerprint: string;
  /** True when nothing was written: the store held this data set already (or other data, with `ifNotEmpty: 'skip'`). */
  reused: boolean;
  calls: number;
  /** Wall-clock time of the whole seeding, ms (0 when reused). */
  ms: number;
}

export interface SeedWriteOptions {
  /**
   * What to do when the store already holds data other than this very data set: `'throw'`,
   * `'replace'` it (everything in it is deleted), or `'skip'` seeding and keep it.
   * @default 'throw'
   */
  ifNotEmpty?: 'throw' | 'replace' | 'skip';
}

const ROWS_PER_INSERT = 100;
const LOG_COLUMNS =
  'request_id, call_type, api_key_hash, spend_nano, prompt_tokens, completion_tokens, total_tokens, start_time, end_time, model, provider, user_id, team_id, end_user, tags, status, estimated, http_status, metadata';

/** The fingerprint stored in SQLite's `user_version` (a signed 32-bit integer, never 0). */
function versionOf(fingerprint: string): number {
  return (Number.parseInt(fingerprint.slice(0, 7), 16) % 0x7fffffff) + 1;
}

/**
 * Fills a SQLite file with the seed's data set: the app's own schema (created by `sqliteStorage`),
 * teams, users and keys through the storage's `insert`, then the calls in bulk, then the daily rollups
 * built from the logs with `INSERT ... SELECT ... GROUP BY` and the budget counters set from sums of
 * the logs, so that logs, rollups and counters agree exactly. A file already seeded with the same
 * options is left as it is.
 * @example await seedSqlite('./spendguard.db', { calls: 100_000 });
 */
export async function seedSqlite(
  path: string,
  options: SeedOptions = {},
  write: SeedWriteOptions = {},
): Promise<SeedResult> {
  const started = performance.now();
  const plan = buildSeedPlan(options);
  const version = versionOf(plan.fingerprint);
  if (existsSync(path)) {
    const db = new Database(path);
    try {
      const seeded = db.pragma('user_version', { simple: true }) === version;
      const tables = db
        .prepare(
          "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('teams', 'spend_logs')",
        )
        .pluck()
        .get() as number;
      const hasData =
        tables === 2 &&
        db
          .prepare('SELECT EXISTS (SELECT 1 FROM teams) OR EXISTS (SELECT 1 FROM spend_logs)')
          .pluck()
          .get() === 1;
      const ifNotEmpty = write.ifNotEmpty ?? 'throw';
      if (hasData && (seeded || ifNotEmpty === 'skip')) {
        return { fingerprint: plan.fingerprint, reused: true, calls: plan.options.calls, ms: 0 };
      }
      if (hasData && ifNotEmpty === 'throw') {
        throw new Error(`seed: ${path} already holds data; seed an empty file, or replace it (--replace)`);
      }
    } finally {
      db.close();
    }
    for (const suffix of ['', '-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
  }

  // The app's schema and pragmas, exactly as the app creates them; entities through the contract.
  const storage = sqliteStorage({ path });
  await storage.init();
  await storage.insert(plan.entities);
  await storage.close();

  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    // A seed that fails half-way is thrown away (its user_version never gets set), so durability can wait.
    db.pragma('synchronous = OFF');
    db.pragma('cache_size = -262144');
    db.pragma('temp_store = MEMORY');

    // Secondary indexes are built once after the load instead of updated a million times.
    const indexes = db
      .prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spend_logs' AND sql IS NOT NULL",
      )
      .all() as Array<{ name: string; sql: string }>;
    for (const index of indexes) db.exec(`DROP INDEX "${index.name}"`);

    const placeholders = `(${Array(19).fill('?').join(', ')})`;
    const insertMany = db.prepare(
      `INSERT INTO spend_logs (${LOG_COLUMNS}) VALUES ${Array(ROWS_PER_INSERT).fill(placeholders).join(', ')}`,
    );
    const insertOne = db.prepare(`INSERT INTO spend_logs (${LOG_COLUMNS}) VALUES ${placeholders}`);
    const load = db.transaction((batch: CallBatch) => {
      let params: unknown[] = [];
      for (let i = 0; i < batch.length; i++) {
        params.push(
          batch.requestId[i],
          batch.callType[i],
          batch.apiKeyHash[i],
          batch.spendNano[i],
          batch.promptTokens[i],
          batch.completionTokens[i],
          batch.promptTokens[i]! + batch.completionTokens[i]!,
          batch.startTime[i],
          batch.endTime[i],
          batch.model[i],
          batch.provider[i],
          batch.userId[i],
          batch.teamId[i],
          batch.endUser[i],
          JSON.stringify(batch.tags[i]),
          batch.status[i],
          batch.estimated[i] ? 1 : 0,
          batch.httpStatus[i],
          '{}',
        );
        if (params.length === 19 * ROWS_PER_INSERT) {
          insertMany.run(params);
          params = [];
        }
      }
      for (let i = 0; i < params.length; i += 19) insertOne.run(params.slice(i, i + 19));
    });
    for (const batch of generateCalls(plan)) load(batch);
    for (const index of indexes) db.exec(index.sql);

    // The narrow rollups' triggers (storage migration 9) would add each full rollup row to them one by
    // one; they are filled with one GROUP BY each instead, then the triggers come back.
    const triggers = db
      .prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ('daily_spend', 'daily_tag_spend')",
      )
      .all() as Array<{ name: string; sql: string }>;
    db.transaction(() => {
      for (const trigger of triggers) db.exec(`DROP TRIGGER "${trigger.name}"`);
      // The same derivation as the storage's migration 4, over every log: one row per group.
      db.exec(`
DELETE FROM daily_spend;
INSERT INTO daily_spend (day, team_id, user_id, api_key_hash, model, provider, end_user, requests, failed_requests,
  spend_nano, prompt_tokens, completion_tokens)
SELECT strftime('%Y-%m-%d', l.start_time / 1000, 'unixepoch'), coalesce(l.team_id, ''), coalesce(l.user_id, ''),
  l.api_key_hash, l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
  count(*), sum(l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens), sum(l.completion_tokens)
FROM spend_logs l
GROUP BY 1, 2, 3, 4, 5, 6, 7;
DELETE FROM daily_tag_spend;
INSERT INTO daily_tag_spend (day, tag, team_id, user_id, api_key_hash, model, provider, end_user, requests,
  failed_requests, spend_nano, prompt_tokens, completion_tokens)
SELECT strftime('%Y-%m-%d', l.start_time / 1000, 'unixepoch'), t.value, coalesce(l.team_id, ''),
  coalesce(l.user_id, ''), l.api_key_hash, l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
  count(*), sum(l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens), sum(l.completion_tokens)
FROM spend_logs l, json_each(l.tags) t
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

-- The narrow rollups, as their migration backfills them (their triggers are off during the load).
DELETE FROM daily_team_spend;
INSERT INTO daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens,
  completion_tokens)
SELECT day, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens),
  sum(completion_tokens)
FROM daily_spend GROUP BY day, team_id, model, provider;
DELETE FROM daily_key_spend;
INSERT INTO daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano,
  prompt_tokens, completion_tokens)
SELECT day, team_id, user_id, api_key_hash, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens),
  sum(completion_tokens)
FROM daily_spend GROUP BY day, team_id, user_id, api_key_hash;
DELETE FROM daily_team_tag_spend;
INSERT INTO daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano,
  prompt_tokens, completion_tokens)
SELECT day, tag, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens),
  sum(completion_tokens)
FROM daily_tag_spend GROUP BY day, tag, team_id, model, provider;
`);
      for (const trigger of triggers) db.exec(trigger.sql);
    })();

    const updates = await counterUpdates(plan, async (kind, sinceMs) => {
      const column = SCOPE_COLUMN[kind];
      const rows = db
        .prepare(
          `SELECT ${column} AS id, sum(spend_nano) AS spend FROM spend_logs WHERE start_time >= ? AND ${column} IS NOT NULL GROUP BY 1`,
        )
        .all(sinceMs) as Array<{ id: string; spend: number }>;
      return new Map(rows.map((r) => [r.id, r.spend]));
    });
    const setCounter = db.prepare(
      'UPDATE budgets SET spend_nano = ?, max_budget_nano = ? WHERE scope_kind = ? AND scope_id = ?',
    );
    db.transaction(() => {
      for (const u of updates) setCounter.run(u.spendNano, u.maxBudgetNano, u.kind, u.id);
      db.pragma(`user_version = ${version}`);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
  return {
    fingerprint: plan.fingerprint,
    reused: false,
    calls: plan.options.calls,
    ms: performance.now() - started,
  };
}
