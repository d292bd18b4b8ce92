/**
 * `BENCH_ONLY=dashboard pnpm bench`: the requests the dashboard's Spend, Budgets and Keys pages make,
 * over 1,000,000 seeded calls, on SQLite and on Postgres, through the dashboard's own handler
 * (`guard.dashboard.handle`, signed in: the JSON endpoints the page fetches, so every storage query
 * they make, their labels and their JSON), each timed BENCH_DASHBOARD_RUNS times (default 20, after 3
 * warm-up runs): median and p95 against the 100 ms target.
 *
 * The data set (packages/seed, 1,000,000 calls over the 90 days before 2026-11-01) is written once into
 * .test-artifacts/bench-dashboard.db and into the Postgres database `spendguard_bench_dashboard`, and
 * reused by later runs while the seed's options and generator are unchanged (BENCH_DASHBOARD_CALLS
 * picks another size).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createSpendGuard, type SpendGuard, type SpendStorage } from '@spendguard/core';
import { utcDay } from '@spendguard/core/storage';
import { buildSeedPlan, type SeedOptions, type SeedResult, seedPg, seedSqlite } from '@spendguard/seed';
import { pgStorage } from '@spendguard/storage-pg';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import pg from 'pg';
import { sharedPostgres } from '../tests/multi-instance/test/postgres.js';

const DAY_MS = 86_400_000;
const END = new Date('2026-11-01T00:00:00.000Z');
const RUNS = Number(process.env.BENCH_DASHBOARD_RUNS ?? 20);
const WARMUP = 3;
const TARGET_MS = 100;
const PG_DATABASE = 'spendguard_bench_dashboard';

export interface DashboardTiming {
  query: string;
  sqlite: { median: number; p95: number; rows: number };
  postgres: { median: number; p95: number; rows: number };
}

export interface DashboardBenchResult {
  calls: number;
  seeds: { sqlite: SeedResult; postgres: SeedResult; postgresKind: string };
  timings: DashboardTiming[];
}

interface Target {
  storage: SpendStorage;
  guard: SpendGuard;
  /** The dashboard's session cookie on this guard. */
  cookie: string;
}
type Query = { name: string; run: (target: Target) => Promise<number> };

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

const MASTER_KEY = 'sk-bench-master';

/** Signs in to the guard's dashboard as its login form does; returns the session cookie. */
async function dashboardLogin(guard: SpendGuard): Promise<string> {
  const res = await guard.dashboard.handle({
    method: 'POST',
    path: '/ui/login',
    query: new URLSearchParams(),
    header: (name) => (name.toLowerCase() === 'content-type' ? 'application/x-www-form-urlencoded' : null),
    body: new URLSearchParams({ username: 'admin', password: MASTER_KEY }).toString(),
    tls: false,
  });
  const cookie = res?.headers['set-cookie']?.split(';')[0];
  if (res?.status !== 303 || !cookie) throw new Error(`dashboard login failed: ${res?.status}`);
  return cookie;
}

/**
 * One of the dashboard page's JSON endpoints (`ui/api/...`), called as the page calls it, through the
 * same handler the adapters mount (session check, storage queries, labels, JSON body); resolves to
 * the number of rows (or budget entries, or keys) it answered.
 */
async function dashboardApi({ guard, cookie }: Target, path: string, params: Record<string, string>) {
  const res = await guard.dashboard.handle({
    method: 'GET',
    path: `/ui/api/${path}`,
    query: new URLSearchParams(params),
    header: (name) => (name.toLowerCase() === 'cookie' ? cookie : null),
    body: '',
    tls: false,
  });
  if (res?.status !== 200) throw new Error(`GET ui/api/${path}: ${res?.status} ${String(res?.body)}`);
  const body = JSON.parse(String(res.body)) as { rows?: unknown[]; entries?: unknown[]; keys?: unknown[] };
  return (body.rows ?? body.entries ?? body.keys ?? []).length;
}

/** The requests the dashboard's Spend, Budgets and list pages make; each resolves to the rows it returned. */
function dashboardQueries(options: SeedOptions): Query[] {
  const plan = buildSeedPlan(options);
  const to = utcDay(END);
  const from = (days: number) => utcDay(new Date(END.getTime() - (days - 1) * DAY_MS));
  const bigTeam = plan.teams[0]!;
  const spend = (t: Target, days: number, params: Record<string, string>) =>
    dashboardApi(t, 'spend', { from: from(days), to, granularity: 'day', ...params });
  const queries: Query[] = [];
  for (const days of [30, 90]) {
    // The page's Group by choices (customer is not one: see docs/dashboard.md).
    for (const group of ['none', 'team', 'user', 'key', 'model', 'provider', 'tag'] as const) {
      queries.push({
        name: `Spend: by day${group === 'none' ? '' : ` x ${group}`}, ${days} days`,
        run: (t) => spend(t, days, { groupBy: group }),
      });
    }
    queries.push(
      {
        name: `Spend: by day x model, team ${bigTeam.alias} only, ${days} days`,
        run: (t) => spend(t, days, { groupBy: 'model', team: bigTeam.teamId }),
      },
      {
        name: `Spend: by day x team, tag feature:onboarding only, ${days} days`,
        run: (t) => spend(t, days, { groupBy: 'team', tags: 'feature:onboarding' }),
      },
    );
  }
  queries.push(
    { name: 'Budgets: scopes at 80 % or more', run: (t) => dashboardApi(t, 'budgets', { min: '0.8' }) },
    { name: 'Budgets: every capped scope (any %)', run: (t) => dashboardApi(t, 'budgets', { min: '0' }) },
    {
      name: 'Budgets: teams only (any %)',
      run: (t) => dashboardApi(t, 'budgets', { min: '0', kind: 'team' }),
    },
    // The entity lists (`ui/api/list/<kind>`), their first page as the page asks for it.
    { name: 'Keys: the key list', run: (t) => dashboardApi(t, 'list/keys', {}) },
    { name: 'Teams: the team list', run: (t) => dashboardApi(t, 'list/teams', {}) },
    { name: 'Users: the user list', run: (t) => dashboardApi(t, 'list/users', {}) },
  );
  return queries;
}

async function measure(target: Target, query: Query): Promise<{ median: number; p95: number; rows: number }> {
  let rows = 0;
  for (let i = 0; i < WARMUP; i++) rows = await query.run(target);
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await query.run(target);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { median: percentile(times, 0.5), p95: percentile(times, 0.95), rows };
}

export async function dashboardBench(): Promise<DashboardBenchResult> {
  const calls = Number(process.env.BENCH_DASHBOARD_CALLS ?? 1_000_000);
  const options: SeedOptions = { calls, days: 90, seed: 1, end: END };
  const dir = join(import.meta.dirname, '..', '.test-artifacts');
  mkdirSync(dir, { recursive: true });
  const sqlitePath = join(dir, calls === 1_000_000 ? 'bench-dashboard.db' : `bench-dashboard-${calls}.db`);

  console.log(`Dashboard queries: seeding ${calls} calls (reused when already seeded)...`);
  const sqliteSeed = await seedSqlite(sqlitePath, options, { ifNotEmpty: 'replace' });
  console.log(
    `  SQLite ${sqlitePath}: ${sqliteSeed.reused ? 'reused' : `seeded in ${(sqliteSeed.ms / 1000).toFixed(1)} s`}`,
  );
  const server = await sharedPostgres();
  const admin = new pg.Pool({ connectionString: server.url, max: 1 });
  const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [PG_DATABASE]);
  if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${PG_DATABASE}`);
  await admin.end();
  const pgUrl = new URL(server.url);
  pgUrl.pathname = `/${PG_DATABASE}`;
  const schema = calls === 1_000_000 ? 'public' : `calls_${calls}`;
  const pgSeed = await seedPg({ connectionString: pgUrl.toString(), schema }, options, {
    ifNotEmpty: 'replace',
  });
  console.log(
    `  Postgres ${PG_DATABASE} (${server.kind}): ${pgSeed.reused ? 'reused' : `seeded in ${(pgSeed.ms / 1000).toFixed(1)} s`}`,
  );

  const sqlite = sqliteStorage({ path: sqlitePath });
  const postgres = pgStorage({ connectionString: pgUrl.toString(), schema });
  // The dashboard's reads go through a guard on each store, as the app's would.
  const guardOn = async (storage: SpendStorage): Promise<Target> => {
    const guard = createSpendGuard({ storage, masterKey: MASTER_KEY, now: () => END, reservationSweepMs: 0 });
    await guard.storage();
    return { storage, guard, cookie: await dashboardLogin(guard) };
  };
  const onSqliteStore = await guardOn(sqlite);
  const onPgStore = await guardOn(postgres);
  const timings: DashboardTiming[] = [];
  try {
    for (const query of dashboardQueries(options)) {
      // Alternating backends query by query, so that load on the machine hits both alike.
      const onSqlite = await measure(onSqliteStore, query);
      const onPg = await measure(onPgStore, query);
      if (onSqlite.rows !== onPg.rows) {
        throw new Error(`${query.name}: SQLite returned ${onSqlite.rows} rows, Postgres ${onPg.rows}`);
      }
      timings.push({ query: query.name, sqlite: onSqlite, postgres: onPg });
      console.log(
        `  ${query.name}: SQLite ${onSqlite.median.toFixed(1)} ms, Postgres ${onPg.median.toFixed(1)} ms (medians)`,
      );
    }
  } finally {
    await onSqliteStore.guard.close();
    await onPgStore.guard.close();
    await server.close();
  }
  return { calls, seeds: { sqlite: sqliteSeed, postgres: pgSeed, postgresKind: server.kind }, timings };
}

/** The result as a Markdown table. */
export function dashboardTable(result: DashboardBenchResult): string {
  const ms = (x: number) => x.toFixed(1);
  const lines = [
    `| query (${result.calls.toLocaleString('en-US')} calls) | rows | SQLite median ms | SQLite p95 ms | Postgres median ms | Postgres p95 ms | <= ${TARGET_MS} ms median |`,
    '|---|---|---|---|---|---|---|',
  ];
  for (const t of result.timings) {
    const ok = t.sqlite.median <= TARGET_MS && t.postgres.median <= TARGET_MS;
    lines.push(
      `| ${t.query} | ${t.sqlite.rows} | ${ms(t.sqlite.median)} | ${ms(t.sqlite.p95)} | ${ms(t.postgres.median)} | ${ms(t.postgres.p95)} | ${ok ? 'yes' : 'NO'} |`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] === import.meta.filename) {
  console.log(dashboardTable(await dashboardBench()));
}
