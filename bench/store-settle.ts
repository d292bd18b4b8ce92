/**
 * The SQLite store alone: CPU per settled call, settlements handed over `BENCH_SETTLE_BATCH` at a time in
 * one event-loop turn (so they share one transaction, as the guard's batched settlements do), each
 * without a reservation of its own (as a call admitted from an escrow lease), on one key, user and team.
 * `node --conditions=spendguard-source --import tsx bench/store-settle.ts` (without the condition: the
 * packages as built). Knobs: `BENCH_SETTLE_BATCH` (16), `BENCH_SETTLE_CALLS` per round (20,000),
 * `BENCH_ROUNDS` (7), `BENCH_RESPONSE_IDS=unique` (a fresh provider response id per call, as real
 * answers have; the default repeats one), `BENCH_SETTLE_STORE=pg` (Postgres at `DATABASE_URL`, in a
 * schema of its own, dropped at the end: the CPU then is this process's only, not the server's).
 * Prints the median and lowest round, in CPU µs per call of the whole process (user + system, the
 * checkpoint thread included).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spendLogFixture } from '@spendguard/core/conformance';
import type { ScopeRef, SettleInput } from '@spendguard/core/storage';
import { pgStorage } from '@spendguard/storage-pg';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import pg from 'pg';
import { median } from './fixture.js';

const BATCH = Number(process.env.BENCH_SETTLE_BATCH ?? 16);
const CALLS = Number(process.env.BENCH_SETTLE_CALLS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const uniqueIds = process.env.BENCH_RESPONSE_IDS === 'unique';

const onPg = process.env.BENCH_SETTLE_STORE === 'pg';
const schema = `bench_settle_${randomBytes(4).toString('hex')}`;
const storage = onPg
  ? pgStorage({ connectionString: process.env.DATABASE_URL, schema })
  : sqliteStorage({ path: join(mkdtempSync(join(tmpdir(), 'spendguard-bench-settle-')), 'a.db') });
await storage.init();
const scopes: ScopeRef[] = [
  { kind: 'key', id: '7628f17680f4976784123a9a08f63885ec59697aeb3f74ec93db0d1c2e9dae34' },
  { kind: 'user', id: 'bench' },
  { kind: 'team', id: 'bench' },
];
await storage.insert(
  scopes.map((scope) => ({
    type: 'budget' as const,
    scope,
    budget: { maxBudgetNano: 1e15, budgetDuration: null, budgetResetAt: null },
  })),
);

let seq = 0;
const run = randomBytes(4).toString('hex');
function settlement(): SettleInput {
  const requestId = `01a24a66-a64f-7a26-${run}-${(seq++).toString(16).padStart(12, '0')}`;
  const now = new Date();
  return {
    reservationId: `none-${requestId}`,
    scopes,
    costNano: 11_250,
    now,
    log: spendLogFixture(requestId, {
      apiKeyHash: scopes[0]!.id,
      spendNano: 11_250,
      promptTokens: 11,
      completionTokens: 16,
      totalTokens: 27,
      startTime: now,
      endTime: now,
      model: 'gpt-4o-mini-2024-07-18',
      userId: 'bench',
      teamId: 'bench',
      responseId: uniqueIds ? `chatcmpl-${randomBytes(12).toString('hex')}` : 'chatcmpl-1',
    }),
  };
}

/** CPU µs per settled call over one round. */
async function round(): Promise<number> {
  const c0 = process.cpuUsage();
  for (let i = 0; i < CALLS / BATCH; i++) {
    const batch: Promise<unknown>[] = [];
    for (let j = 0; j < BATCH; j++) batch.push(storage.settle(settlement()));
    await Promise.all(batch);
  }
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / (Math.floor(CALLS / BATCH) * BATCH);
}

await round(); // warm-up
const rounds: number[] = [];
for (let r = 0; r < ROUNDS; r++) rounds.push(await round());
console.log(
  `${onPg ? 'Postgres' : 'SQLite'} settle, ${BATCH} per transaction, ${uniqueIds ? 'unique' : 'repeated'} response ids: ${median(rounds).toFixed(1)} CPU µs/call (median of ${ROUNDS} rounds; lowest ${Math.min(...rounds).toFixed(1)})`,
);
await storage.close();
if (onPg) {
  const admin = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await admin.connect();
  await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
  await admin.end();
}
