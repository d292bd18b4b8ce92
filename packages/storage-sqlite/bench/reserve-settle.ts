/**
 * µs per request (one reserve + one settle on key, user and team, two tags) against a real file,
 * with MemoryStorage alternated in the same run as the yardstick. Not a test: these machines are
 * noisy, so read the medians and the ratio.
 *
 *   node --conditions=spendguard-source --import tsx packages/storage-sqlite/bench/reserve-settle.ts
 *
 * BENCH_DIR=/dev/shm puts the file on tmpfs, to see the CPU cost without the disk's.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStorage, type ScopeRef, type SpendStorage } from '@spendguard/core';
import { sqliteStorage } from '../src/index.js';

const BATCH = 5000;
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
const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), 'spendguard-bench-'));
const sqlite = sqliteStorage({ path: join(dir, 'bench.db') });
const memory = new MemoryStorage();
await sqlite.init();
await seed(sqlite);
await seed(memory);
await batch(sqlite);
await batch(memory);
const times = { sqlite: [] as number[], memory: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  times.sqlite.push(await batch(sqlite));
  times.memory.push(await batch(memory));
}
const [sq, mem] = [median(times.sqlite), median(times.memory)];
console.log(
  `sqlite: ${sq.toFixed(1)} µs per reserve+settle (median of ${ROUNDS} x ${BATCH}; rounds ${times.sqlite.map((t) => t.toFixed(1)).join(' ')})`,
);
console.log(`memory: ${mem.toFixed(1)} µs; sqlite / memory = ${(sq / mem).toFixed(1)}x`);
await sqlite.close();
rmSync(dir, { recursive: true, force: true });
