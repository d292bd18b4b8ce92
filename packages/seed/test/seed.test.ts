import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSpendGuard } from '@spendguard/core';
import {
  type SpendLogRecord,
  type SpendReportQuery,
  type SpendStorage,
  utcDay,
} from '@spendguard/core/storage';
import { pgStorage } from '@spendguard/storage-pg';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedPostgres } from '../../../tests/multi-instance/test/postgres.js';
import { canonicalRows, referenceReport } from '../../core/src/testing/reference-report.js';
import {
  buildSeedPlan,
  generateCalls,
  periodStart,
  SEED_MODELS,
  type SeedOptions,
  seedPg,
  seedSqlite,
} from '../src/index.js';

const END = new Date('2026-11-01T00:00:00.000Z');
const OPTIONS: SeedOptions = { calls: 20_000, days: 90, seed: 7, end: END };
const dir = mkdtempSync(join(tmpdir(), 'spendguard-seed-'));
// DATABASE_URL or the local server, else a throwaway one (never in CI, where a missing server fails).
const server = await sharedPostgres();
const url = server.url;
const admin = new pg.Pool({ connectionString: url, max: 2 });
const schemas: string[] = [];
afterAll(async () => {
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
  await admin.end();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A log as the raw table holds it, read with plain SQL (not through the storage). */
type RawLog = Pick<
  SpendLogRecord,
  | 'apiKeyHash'
  | 'spendNano'
  | 'promptTokens'
  | 'completionTokens'
  | 'startTime'
  | 'model'
  | 'provider'
  | 'userId'
  | 'teamId'
  | 'endUser'
  | 'tags'
  | 'status'
  | 'estimated'
>;

function sqliteLogs(path: string): RawLog[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare('SELECT * FROM spend_logs').all() as Array<Record<string, any>>).map((r) => ({
      apiKeyHash: r.api_key_hash,
      spendNano: r.spend_nano,
      promptTokens: r.prompt_tokens,
      completionTokens: r.completion_tokens,
      startTime: new Date(r.start_time),
      model: r.model,
      provider: r.provider,
      userId: r.user_id,
      teamId: r.team_id,
      endUser: r.end_user,
      tags: JSON.parse(r.tags),
      status: r.status,
      estimated: r.estimated === 1,
    }));
  } finally {
    db.close();
  }
}

async function pgLogs(schema: string): Promise<RawLog[]> {
  const res = await admin.query(`SELECT *, spend_nano::text AS spend FROM "${schema}".spend_logs`);
  return res.rows.map((r) => ({
    apiKeyHash: r.api_key_hash,
    spendNano: Number(r.spend),
    promptTokens: r.prompt_tokens,
    completionTokens: r.completion_tokens,
    startTime: r.start_time,
    model: r.model,
    provider: r.provider,
    userId: r.user_id,
    teamId: r.team_id,
    endUser: r.end_user,
    tags: r.tags,
    status: r.status,
    estimated: r.estimated,
  }));
}

/** The rows the rollups should hold, derived by core's reference from every raw log. */
const plan = buildSeedPlan(OPTIONS);
const bigTeam = plan.teams[0]!.teamId;
const from90 = utcDay(new Date(END.getTime() - 89 * 86_400_000));
const from30 = utcDay(new Date(END.getTime() - 29 * 86_400_000));
const to = utcDay(END);
const QUERIES: SpendReportQuery[] = [
  { fromDay: from90, toDay: to, groupBy: [] },
  { fromDay: from30, toDay: to, groupBy: [] },
  ...(['team', 'user', 'key', 'model', 'provider', 'customer', 'tag'] as const).map(
    (d): SpendReportQuery => ({ fromDay: from30, toDay: to, groupBy: ['day', d] }),
  ),
  { fromDay: from90, toDay: to, groupBy: ['team', 'model'] },
  { fromDay: from30, toDay: to, groupBy: ['day'], filters: { teamIds: [bigTeam] } },
  { fromDay: from30, toDay: to, groupBy: ['day'], filters: { tags: ['feature:onboarding'] } },
  { fromDay: from90, toDay: to, groupBy: ['tag'], filters: { tags: ['env:prod', 'env:staging'] } },
];

/** Everything a seeded store must satisfy, on any backend. */
async function checkSeededStore(storage: SpendStorage, logs: RawLog[]) {
  // The data set's shape.
  expect(logs).toHaveLength(20_000);
  expect(new Set(logs.map((l) => l.teamId)).size).toBe(20);
  expect(new Set(logs.map((l) => l.model)).size).toBe(SEED_MODELS.length);
  expect(new Set(logs.map((l) => l.provider)).size).toBeGreaterThanOrEqual(8);
  expect(logs.filter((l) => l.status === 'failure').length).toBeGreaterThan(200);
  expect(logs.filter((l) => l.estimated).length).toBeGreaterThan(200);
  expect(logs.filter((l) => l.endUser !== null).length).toBeGreaterThan(1000);
  expect(
    logs.every((l) => l.startTime <= END && l.startTime.getTime() > END.getTime() - 90 * 86_400_000),
  ).toBe(true);
  expect(new Set(logs.flatMap((l) => l.tags).filter((t) => t.startsWith('feature:'))).size).toBeGreaterThan(
    5,
  );
  expect((await storage.listUsers({})).length).toBe(200);

  // Every report from the rollups equals the same sums over the raw logs.
  // The expected rows come from the reference report (written apart from the rollups the backends
  // and core's aggregateRollup build on), summed straight from the raw logs.
  const calls = logs.map((l) => ({ log: l as SpendLogRecord, costNano: l.spendNano }));
  for (const query of QUERIES) {
    const expected = canonicalRows(referenceReport(calls, query));
    expect(expected.length).toBeGreaterThan(0);
    expect(canonicalRows(await storage.spendReport(query)), JSON.stringify(query)).toEqual(expected);
  }
  const total = logs.reduce((sum, l) => sum + l.spendNano, 0);
  const guard = createSpendGuard({ storage, masterKey: 'sk-seed-test-master', now: () => END });
  const report = await guard.spend.report({ from: from90, to });
  expect(report.totals.spendNano).toBe(total);
  expect(report.totals.requests).toBe(logs.length);

  // Every budget counter equals its scope's spend in its current period, summed over the raw logs.
  const states = await storage.getBudgets(
    plan.budgets.map((b) => b.scope),
    END,
  );
  expect(states).toHaveLength(plan.budgets.length);
  for (const [i, budget] of plan.budgets.entries()) {
    const since = periodStart(budget.budgetDuration, END);
    const column = { key: 'apiKeyHash', user: 'userId', team: 'teamId' } as const;
    const kind = budget.scope.kind as keyof typeof column;
    const spend = logs
      .filter((l) => l[column[kind]] === budget.scope.id && l.startTime.getTime() >= since)
      .reduce((sum, l) => sum + l.spendNano, 0);
    expect(states[i]!.spendNano, `${budget.scope.kind} ${budget.scope.id}`).toBe(spend);
    expect(states[i]!.reservedNano).toBe(0);
    expect(states[i]!.maxBudgetNano === null).toBe(budget.usedShare === null);
  }
  const capped = states.filter((s) => s.maxBudgetNano !== null && s.spendNano > 0);
  expect(capped.filter((s) => s.spendNano > s.maxBudgetNano!).length).toBeGreaterThan(0);
  expect(
    capped.filter((s) => s.spendNano >= 0.85 * s.maxBudgetNano! && s.spendNano <= s.maxBudgetNano!).length,
  ).toBeGreaterThan(0);

  // The app keeps working on seeded data: a settle on a seeded key adds to its counter and rollups.
  const key = plan.keys.find((k) => k.userId !== null)!;
  const scopes = [{ kind: 'key' as const, id: key.tokenHash }];
  const [before] = await storage.getBudgets(scopes, END);
  const reserved = await storage.reserve({
    reservationId: 'after-seed',
    scopes,
    amountNano: 1,
    now: END,
    expiresAt: new Date(END.getTime() + 60_000),
    mode: 'soft',
  });
  expect(reserved.ok).toBe(true);
  const log: SpendLogRecord = {
    requestId: 'after-seed',
    callType: 'acompletion',
    apiKeyHash: key.tokenHash,
    spendNano: 1234,
    promptTokens: 10,
    completionTokens: 5,
    totalTokens: 15,
    startTime: END,
    endTime: END,
    model: 'gpt-4o-mini',
    provider: 'openai',
    userId: key.userId,
    teamId: key.teamId,
    endUser: null,
    tags: ['feature:chat'],
    status: 'success',
    estimated: false,
    httpStatus: 200,
    metadata: {},
    responseId: 'chatcmpl-after-seed',
  };
  await storage.settle({ reservationId: 'after-seed', scopes, costNano: 1234, now: END, log });
  const [after] = await storage.getBudgets(scopes, END);
  expect(after!.spendNano - before!.spendNano).toBe(1234);
  const again = await guard.spend.report({ from: from90, to });
  expect(again.totals.spendNano).toBe(total + 1234);
  expect(await storage.querySpendLogs({ requestId: 'after-seed' })).toEqual([log]);
  const [newest] = await storage.querySpendLogs({ apiKeyHash: key.tokenHash, limit: 2, endTime: END });
  expect(newest).toMatchObject({ apiKeyHash: key.tokenHash, metadata: {} });
}

describe('seed data', () => {
  const digest = (options: SeedOptions) => {
    const hash = createHash('sha256');
    for (const b of generateCalls(buildSeedPlan(options), 1000)) hash.update(JSON.stringify(b));
    return hash.digest('hex');
  };

  it('is deterministic: the same options give the same calls, another seed other calls', () => {
    const small = { ...OPTIONS, calls: 3000 };
    expect(digest(small)).toBe(digest(small));
    expect(digest({ ...small, seed: 8 })).not.toBe(digest(small));
    expect(buildSeedPlan(small).fingerprint).toBe(buildSeedPlan(small).fingerprint);
    expect(buildSeedPlan({ ...small, calls: 3001 }).fingerprint).not.toBe(buildSeedPlan(small).fingerprint);
  });

  it('has 20 teams, 200 users, their keys, and calls in time order that grow over the range', () => {
    expect(plan.entities.filter((e) => e.type === 'team')).toHaveLength(20);
    expect(plan.entities.filter((e) => e.type === 'user')).toHaveLength(200);
    expect(plan.keys.length).toBeGreaterThan(240);
    const perDay = new Map<string, number>();
    let last = 0;
    for (const b of generateCalls(plan)) {
      for (const t of b.startTime) {
        expect(t).toBeGreaterThanOrEqual(last);
        last = t;
        const day = utcDay(new Date(t));
        perDay.set(day, (perDay.get(day) ?? 0) + 1);
      }
    }
    const counts = [...perDay.values()];
    expect(counts.reduce((a, b) => a + b, 0)).toBe(20_000);
    const firstWeeks = counts.slice(0, 14).reduce((a, b) => a + b, 0);
    const lastWeeks = counts.slice(-15, -1).reduce((a, b) => a + b, 0);
    expect(lastWeeks).toBeGreaterThan(1.5 * firstWeeks);
  });
});

describe('seeding SQLite', () => {
  const path = join(dir, 'seed.db');

  it('writes logs, rollups and counters that agree exactly', async () => {
    const result = await seedSqlite(path, OPTIONS);
    expect(result).toMatchObject({ reused: false, calls: 20_000 });
    const storage = sqliteStorage({ path });
    await storage.init();
    try {
      await checkSeededStore(storage, sqliteLogs(path));
    } finally {
      await storage.close();
    }
  });

  it('reuses a file seeded with the same options and refuses to overwrite other data', async () => {
    expect((await seedSqlite(path, OPTIONS)).reused).toBe(true);
    await expect(seedSqlite(path, { ...OPTIONS, calls: 1000 })).rejects.toThrow(/already holds data/);
    expect((await seedSqlite(path, { ...OPTIONS, calls: 1000 }, { ifNotEmpty: 'skip' })).reused).toBe(true);
    expect(sqliteLogs(path)).toHaveLength(20_001);
    const replaced = await seedSqlite(path, { ...OPTIONS, calls: 1000 }, { ifNotEmpty: 'replace' });
    expect(replaced.reused).toBe(false);
    expect(sqliteLogs(path)).toHaveLength(1000);
  });
});

describe('seeding Postgres', () => {
  const schema = `sg_seed_${randomBytes(5).toString('hex')}`;
  schemas.push(schema);

  it('writes logs, rollups and counters that agree exactly', async () => {
    const result = await seedPg({ connectionString: url, schema }, OPTIONS);
    expect(result).toMatchObject({ reused: false, calls: 20_000 });
    const storage = pgStorage({ connectionString: url, schema });
    await storage.init();
    try {
      await checkSeededStore(storage, await pgLogs(schema));
    } finally {
      await storage.close();
    }
  });

  it('reuses a schema seeded with the same options and refuses to overwrite other data', async () => {
    expect((await seedPg({ connectionString: url, schema }, OPTIONS)).reused).toBe(true);
    await expect(seedPg({ connectionString: url, schema }, { ...OPTIONS, calls: 1000 })).rejects.toThrow(
      /already holds data/,
    );
    await seedPg({ connectionString: url, schema }, { ...OPTIONS, calls: 1000 }, { ifNotEmpty: 'replace' });
    expect(await pgLogs(schema)).toHaveLength(1000);
  });
});
