/**
 * µs per request (one reserve + one settle on key, user and team, two tags) against the real Postgres,
 * sequentially and with 64 requests in flight, alternated round by round in the same run, with two bare
 * `SELECT 1` round trips per request as the yardstick (the floor any two-statement request pays). Not
 * a test: these machines are noisy, so read the medians and the ratios. µs per request is wall time
 * over requests: with 64 in flight, the inverse of throughput, not one request's latency.
 *
 *   node --conditions=spendguard-source --import tsx packages/storage-pg/bench/reserve-settle.ts
 *
 * DATABASE_URL picks the server (default: the local test database); the bench uses its own schema
 * and drops it at the end. 64 in flight runs on pg's default pool of 10 connections and on a pool of
 * 64: `hot` = every request on the same key, user and team (one team spending as fast as it can: its
 * counter rows serialise it), `spread` = 64 teams, one per worker.
 * BENCH_PG_OPTIONS='-c synchronous_commit=off' shows the cost without the commit's WAL flush.
 */
import type { ScopeRef, SpendStorage } from '@spendguard/core/storage';
import pg from 'pg';
import { pgStorage } from '../src/index.js';

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `sg_bench_${process.pid}`;
const BATCH = 1000;
const ROUNDS = 5;
const IN_FLIGHT = 64;

const scopesOf = (n: number): ScopeRef[] => [
  { kind: 'key', id: `k${n}` },
  { kind: 'user', id: `u${n}` },
  { kind: 'team', id: `t${n}` },
];

async function seed(s: SpendStorage, n: number): Promise<void> {
  const createdAt = new Date();
  const budget = (max: number | null) => ({
    maxBudgetNano: max,
    budgetDuration: '30d',
    budgetResetAt: new Date(Date.now() + 864e5),
  });
  await s.insert([
    {
      type: 'team',
      record: { teamId: `t${n}`, teamAlias: null, models: [], metadata: {}, blocked: false, createdAt },
      budget: budget(9e15),
    },
    {
      type: 'user',
      record: {
        userId: `u${n}`,
        userEmail: null,
        userRole: 'internal_user',
        teams: [`t${n}`],
        models: [],
        metadata: {},
        createdAt,
      },
      budget: budget(null),
    },
    {
      type: 'key',
      record: {
        tokenHash: `k${n}`,
        keyName: 'sk-...abcd',
        keyAlias: null,
        userId: `u${n}`,
        teamId: `t${n}`,
        models: [],
        tags: [],
        metadata: {},
        blocked: false,
        expiresAt: null,
        createdAt,
      },
      budget: budget(9e15),
    },
  ]);
}

let seq = 0;
async function request(s: SpendStorage, n: number): Promise<void> {
  const id = `req-${seq++}`;
  const scopes = scopesOf(n);
  const now = new Date();
  const r = await s.reserve({
    reservationId: id,
    scopes,
    amountNano: 5_000_000,
    now,
    expiresAt: new Date(now.getTime() + 600_000),
  });
  if (!r.ok) throw new Error('refused');
  await s.settle({
    reservationId: id,
    scopes,
    costNano: 1_234_567,
    now,
    log: {
      requestId: id,
      callType: 'acompletion',
      apiKeyHash: `k${n}`,
      spendNano: 1_234_567,
      promptTokens: 120,
      completionTokens: 80,
      totalTokens: 200,
      startTime: now,
      endTime: now,
      model: 'gpt-4o-mini',
      provider: 'openai',
      userId: `u${n}`,
      teamId: `t${n}`,
      endUser: null,
      tags: ['prod', 'chat'],
      status: 'success',
      estimated: false,
      httpStatus: 200,
      metadata: {},
    },
  });
}

/** µs per request: `BATCH` requests, `workers` at a time, worker w on scopes `scopeFor(w)`. */
async function run(one: (w: number) => Promise<void>, workers: number): Promise<number> {
  let left = BATCH;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (left-- > 0) await one(w);
    }),
  );
  return Number(process.hrtime.bigint() - t0) / 1e3 / BATCH;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
// Two instances on one schema: pg's default pool of 10 connections, and one with a connection per
// request in flight (64 backends contending for the same rows).
const newPool = (max: number) =>
  new pg.Pool({
    connectionString: url,
    max,
    ...(process.env.BENCH_PG_OPTIONS ? { options: process.env.BENCH_PG_OPTIONS } : {}),
  });
const [pool10, pool64] = [newPool(10), newPool(IN_FLIGHT)];
const [s10, s64] = [pgStorage({ pool: pool10, schema }), pgStorage({ pool: pool64, schema })];
try {
  await s10.init();
  await s64.init();
  for (let n = 0; n < IN_FLIGHT; n++) await seed(s10, n);

  const selectTwice = async () => {
    await pool10.query('SELECT 1');
    await pool10.query('SELECT 1');
  };
  const cases: Record<string, () => Promise<number>> = {
    'SELECT 1 x2, sequential': () => run(selectTwice, 1),
    'reserve+settle, sequential': () => run(() => request(s10, 0), 1),
    'SELECT 1 x2, 64 in flight, pool 10': () => run(selectTwice, IN_FLIGHT),
    'reserve+settle, 64 in flight, hot, pool 10': () => run(() => request(s10, 0), IN_FLIGHT),
    'reserve+settle, 64 in flight, hot, pool 64': () => run(() => request(s64, 0), IN_FLIGHT),
    'reserve+settle, 64 in flight, spread, pool 10': () => run((w) => request(s10, w), IN_FLIGHT),
    'reserve+settle, 64 in flight, spread, pool 64': () => run((w) => request(s64, w), IN_FLIGHT),
  };
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  for (const c of Object.values(cases)) await c(); // warm-up: connections, prepared statements
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, c] of Object.entries(cases)) times[name]?.push(await c());
  }
  const seq = median(times['reserve+settle, sequential'] ?? []);
  for (const [name, v] of Object.entries(times)) {
    console.log(
      `${name.padEnd(46)} ${median(v).toFixed(0).padStart(6)} µs/request  ${(median(v) / seq).toFixed(2)}x sequential  (rounds ${v.map((t) => t.toFixed(0)).join(' ')})`,
    );
  }
} finally {
  await s10.close();
  await s64.close();
  await pool10.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await Promise.all([pool10.end(), pool64.end()]);
}
