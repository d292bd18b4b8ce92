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
import type { ScopeRef, SpendStorage } from '@spendguard/core';
import Database from 'better-sqlite3';
import { sqliteStorage } from '../src/index.js';

const BATCH = 2000;
const ROUNDS = 7;
const scopes: ScopeRef[] = [
  { kind: 'key', id: 'k1' },
  { kind: 'user', id: 'u1' },
  { kind: 'team', id: 't1' },
];

async function seed(s: SpendStorage): Promise<void> {
  const createdAt = new Date();
  const budget = (max: number | null) => ({
    maxBudgetNano: max,
    budgetDuration: '30d',
    budgetResetAt: new Date(Date.now() + 864e5),
  });
  await s.insert([
    {
      type: 'team',
      record: { teamId: 't1', teamAlias: 'x', models: [], metadata: {}, blocked: false, createdAt },
      budget: budget(1e18),
    },
    {
      type: 'user',
      record: {
        userId: 'u1',
        userEmail: null,
        userRole: 'internal_user',
        teams: ['t1'],
        models: [],
        metadata: {},
        createdAt,
      },
      budget: budget(null),
    },
    {
      type: 'key',
      record: {
        tokenHash: 'k1',
        keyName: 'sk-...abcd',
        keyAlias: null,
        userId: 'u1',
        teamId: 't1',
        models: [],
        tags: [],
        metadata: {},
        blocked: false,
        expiresAt: null,
        createdAt,
      },
      budget: budget(1e18),
    },
  ]);
}

let seq = 0;
async function batch(s: SpendStorage): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < BATCH; i++) {
    const id = `req-${seq++}`;
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
        apiKeyHash: 'k1',
        spendNano: 1_234_567,
        promptTokens: 120,
        completionTokens: 80,
        totalTokens: 200,
        startTime: now,
        endTime: now,
        model: 'gpt-4o-mini',
        provider: 'openai',
        userId: 'u1',
        teamId: 't1',
        endUser: null,
        tags: ['prod', 'chat'],
        status: 'success',
        estimated: false,
        httpStatus: 200,
        metadata: {},
      },
    });
  }
  return Number(process.hrtime.bigint() - t0) / 1e3 / BATCH;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

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
await batch(withT);
await batch(without);
const times = { withT: [] as number[], without: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  times.withT.push(await batch(withT));
  times.without.push(await batch(without));
}
console.log(
  `with narrow-rollup triggers: ${median(times.withT).toFixed(1)} µs; without: ${median(times.without).toFixed(1)} µs; ratio ${(median(times.withT) / median(times.without)).toFixed(2)}`,
);
await withT.close();
await without.close();
rmSync(dir, { recursive: true, force: true });
