import { pgStorage } from '@spendguard/storage-pg';
import pg from 'pg';
import { counterUpdates, SCOPE_COLUMN } from './budget-counters.js';
import { buildSeedPlan, generateCalls, type SeedOptions } from './seed-data.js';
import type { SeedResult, SeedWriteOptions } from './seed-sqlite.js';

export interface PgSeedTarget {
  /** Postgres URL; or `pool`. */
  connectionString?: string;
  pool?: pg.Pool;
  /**
   * The schema spendguard's tables live in (the storage's `schema` option).
   * @default 'public'
   */
  schema?: string;
}

const TABLES = [
  'spend_logs',
  'daily_spend',
  'daily_tag_spend',
  'daily_team_spend',
  'daily_team_tag_spend',
  'daily_key_spend',
  'budgets',
  'keys',
  'users',
  'teams',
  'reservations',
  'alert_claims',
  'key_changes',
];
/** Separates tags in one text value (unnest cannot take an array of arrays); no tag contains it. */
const TAG_SEPARATOR = '\u001f';
const MARK = 'spendguard-seed:';

const NARROW_ROLLUPS = `
DELETE FROM @schema@.daily_team_spend;
INSERT INTO @schema@.daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens,
  completion_tokens)
SELECT day, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens),
  sum(completion_tokens)
FROM @schema@.daily_spend GROUP BY day, team_id, model, provider;
DELETE FROM @schema@.daily_key_spend;
INSERT INTO @schema@.daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano,
  prompt_tokens, completion_tokens)
SELECT day, team_id, user_id, api_key_hash, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens),
  sum(completion_tokens)
FROM @schema@.daily_spend GROUP BY day, team_id, user_id, api_key_hash;
DELETE FROM @schema@.daily_team_tag_spend;
INSERT INTO @schema@.daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano,
  prompt_tokens, completion_tokens)
SELECT day, tag, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens),
  sum(completion_tokens)
FROM @schema@.daily_tag_spend GROUP BY day, tag, team_id, model, provider;
`;

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;

/**
 * Fills a Postgres schema with the seed's data set, as `seedSqlite` does for a file: the app's schema
 * (migrations applied by `pgStorage`), entities through the storage's `insert`, then in one
 * transaction the calls in bulk (`INSERT ... SELECT FROM unnest(arrays)`, 20,000 rows a statement),
 * the rollups built from the logs, and the counters from sums of the logs. The options' fingerprint
 * is kept as the comment of `spend_logs`: a schema already seeded with the same options is reused.
 * @example await seedPg({ connectionString: process.env.DATABASE_URL }, { calls: 1_000_000 });
 */
export async function seedPg(
  target: PgSeedTarget,
  options: SeedOptions = {},
  write: SeedWriteOptions = {},
): Promise<SeedResult> {
  const started = performance.now();
  const plan = buildSeedPlan(options);
  const schema = target.schema ?? 'public';
  const q = quote(schema);
  const pool = target.pool ?? new pg.Pool({ connectionString: target.connectionString, max: 2 });
  const storage = pgStorage({ pool, schema });
  try {
    await storage.init();
    const mark = await pool.query<{ comment: string | null; has_data: boolean }>(
      `SELECT obj_description($1::regclass, 'pg_class') AS comment,
         EXISTS (SELECT 1 FROM ${q}.teams) OR EXISTS (SELECT 1 FROM ${q}.spend_logs) AS has_data`,
      [`${q}.spend_logs`],
    );
    const { comment, has_data: hasData } = mark.rows[0]!;
    const ifNotEmpty = write.ifNotEmpty ?? 'throw';
    if (hasData && (comment === MARK + plan.fingerprint || ifNotEmpty === 'skip')) {
      return { fingerprint: plan.fingerprint, reused: true, calls: plan.options.calls, ms: 0 };
    }
    if (hasData && ifNotEmpty === 'throw') {
      throw new Error(
        `seed: schema ${schema} already holds data; seed an empty one, or replace it (--replace)`,
      );
    }
    if (hasData) await pool.query(`TRUNCATE ${TABLES.map((t) => `${q}.${t}`).join(', ')}`);
    await storage.insert(plan.entities);

    const client = await pool.connect();
    let failed: Error | undefined;
    try {
      await client.query('BEGIN');
      await client.query('SET LOCAL synchronous_commit = off');
      await client.query("SET LOCAL maintenance_work_mem = '256MB'");
      // Secondary indexes are built once after the load instead of updated a million times.
      const indexes = await client.query<{ name: string; def: string }>(
        `SELECT i.indexname AS name, i.indexdef AS def FROM pg_indexes i
         WHERE i.schemaname = $1 AND i.tablename = 'spend_logs'
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.connamespace = $1::regnamespace)`,
        [schema],
      );
      for (const index of indexes.rows) await client.query(`DROP INDEX ${q}.${quote(index.name)}`);
      for (const b of generateCalls(plan, 20_000)) {
        await client.query(
          `INSERT INTO ${q}.spend_logs (request_id, call_type, api_key_hash, spend_nano, prompt_tokens,
             completion_tokens, total_tokens, start_time, end_time, model, provider, user_id, team_id, end_user, tags,
             status, estimated, http_status, metadata)
           SELECT r, c, k, s, p, o, p + o, timestamptz 'epoch' + st * interval '1 millisecond',
             timestamptz 'epoch' + et * interval '1 millisecond', m, pr, u, t, e,
             CASE WHEN tg = '' THEN '{}'::text[] ELSE string_to_array(tg, $16) END, stt, est, hs, '{}'::jsonb
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::integer[], $6::integer[], $7::bigint[],
             $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
             $17::boolean[], $18::integer[])
             AS x (r, c, k, s, p, o, st, et, m, pr, u, t, e, tg, stt, est, hs)`,
          [
            b.requestId,
            b.callType,
            b.apiKeyHash,
            b.spendNano,
            b.promptTokens,
            b.completionTokens,
            b.startTime,
            b.endTime,
            b.model,
            b.provider,
            b.userId,
            b.teamId,
            b.endUser,
            b.tags.map((tags) => tags.join(TAG_SEPARATOR)),
            b.status,
            TAG_SEPARATOR,
            b.estimated,
            b.httpStatus,
          ],
        );
      }
      for (const index of indexes.rows) await client.query(index.def);

      // The narrow rollups' triggers (storage migration 7) would add each full rollup row to them one by
      // one; they are filled with one GROUP BY each instead, then the triggers come back.
      await client.query(`ALTER TABLE ${q}.daily_spend DISABLE TRIGGER USER`);
      await client.query(`ALTER TABLE ${q}.daily_tag_spend DISABLE TRIGGER USER`);
      // The same derivation as the storage's migration 2, over every log: one row per group.
      await client.query(`DELETE FROM ${q}.daily_spend`);
      await client.query(
        `INSERT INTO ${q}.daily_spend (day, team_id, user_id, api_key_hash, model, provider, end_user, requests,
           failed_requests, spend_nano, prompt_tokens, completion_tokens)
         SELECT (l.start_time AT TIME ZONE 'UTC')::date, coalesce(l.team_id, ''), coalesce(l.user_id, ''),
           l.api_key_hash, l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
           count(*), count(*) FILTER (WHERE l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens),
           sum(l.completion_tokens)
         FROM ${q}.spend_logs l
         GROUP BY 1, 2, 3, 4, 5, 6, 7`,
      );
      await client.query(`DELETE FROM ${q}.daily_tag_spend`);
      await client.query(
        `INSERT INTO ${q}.daily_tag_spend (day, tag, team_id, user_id, api_key_hash, model, provider, end_user,
           requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
         SELECT (l.start_time AT TIME ZONE 'UTC')::date, t.tag, coalesce(l.team_id, ''), coalesce(l.user_id, ''),
           l.api_key_hash, l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
           count(*), count(*) FILTER (WHERE l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens),
           sum(l.completion_tokens)
         FROM ${q}.spend_logs l, unnest(l.tags) AS t (tag)
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8`,
      );

      for (const statement of NARROW_ROLLUPS.split(';').filter((x) => x.trim() !== '')) {
        await client.query(statement.replaceAll('@schema@.', `${q}.`));
      }
      await client.query(`ALTER TABLE ${q}.daily_spend ENABLE TRIGGER USER`);
      await client.query(`ALTER TABLE ${q}.daily_tag_spend ENABLE TRIGGER USER`);

      const updates = await counterUpdates(plan, async (kind, sinceMs) => {
        const column = SCOPE_COLUMN[kind];
        const res = await client.query<{ id: string; spend: string }>(
          `SELECT ${column} AS id, sum(spend_nano)::text AS spend FROM ${q}.spend_logs
           WHERE start_time >= timestamptz 'epoch' + $1::bigint * interval '1 millisecond' AND ${column} IS NOT NULL
           GROUP BY 1`,
          [sinceMs],
        );
        return new Map(res.rows.map((r) => [r.id, Number(r.spend)]));
      });
      await client.query(
        `UPDATE ${q}.budgets b SET spend_nano = u.spend, max_budget_nano = u.cap
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u (kind, id, spend, cap)
         WHERE b.scope_kind = u.kind AND b.scope_id = u.id`,
        [
          updates.map((u) => u.kind),
          updates.map((u) => u.id),
          updates.map((u) => u.spendNano),
          updates.map((u) => u.maxBudgetNano),
        ],
      );
      await client.query(`COMMENT ON TABLE ${q}.spend_logs IS ${pg.escapeLiteral(MARK + plan.fingerprint)}`);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => {
        failed = e;
      });
      throw err;
    } finally {
      client.release(failed);
    }
    // Fresh statistics, as autovacuum would gather soon after such a load (where it runs at all),
    // for every table the dashboard reads: the narrow rollups too, which the triggers filled. Without
    // them the planner guesses a 90-day range of daily_key_spend holds 145 rows, not 26,000.
    await pool.query(
      `ANALYZE ${q}.spend_logs, ${q}.daily_spend, ${q}.daily_tag_spend, ${q}.daily_team_spend, ${q}.daily_team_tag_spend, ${q}.daily_key_spend, ${q}.budgets, ${q}.keys, ${q}.teams, ${q}.users, ${q}.team_members`,
    );
  } finally {
    await storage.close();
    if (!target.pool) await pool.end();
  }
  return {
    fingerprint: plan.fingerprint,
    reused: false,
    calls: plan.options.calls,
    ms: performance.now() - started,
  };
}
