/**
 * The workload both SQLite micro-benchmarks time: one key, its user and its team, and requests of one
 * reserve + one settle (two tags) on all three.
 */
import type { ScopeRef, SpendStorage } from '@spendguard/core/storage';

const scopes: ScopeRef[] = [
  { kind: 'key', id: 'k1' },
  { kind: 'user', id: 'u1' },
  { kind: 'team', id: 't1' },
];

export async function seed(s: SpendStorage): Promise<void> {
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
export async function batch(s: SpendStorage, size: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < size; i++) {
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
  return Number(process.hrtime.bigint() - t0) / 1e3 / size;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
