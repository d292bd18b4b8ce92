import { createSpendGuard, MemoryStorage, type SpendLogRecord } from '@spendguard/core';
import { describe, expect, it } from 'vitest';

function log(requestId: string, day: string, spendNano: number, teamId: string | null): SpendLogRecord {
  const at = new Date(`${day}T12:00:00.000Z`);
  return {
    requestId,
    callType: 'acompletion',
    apiKeyHash: 'k1',
    spendNano,
    promptTokens: 3,
    completionTokens: 4,
    totalTokens: 7,
    startTime: at,
    endTime: at,
    model: 'gpt-4o',
    provider: 'openai',
    userId: null,
    teamId,
    endUser: null,
    tags: [],
    status: 'success',
    estimated: false,
    httpStatus: 200,
    metadata: {},
  };
}

async function seeded() {
  const storage = new MemoryStorage();
  const guard = createSpendGuard({
    storage,
    logger: { warn: () => {}, error: () => {} },
    reservationSweepMs: 0,
  });
  // Sat 28 Feb, Sun 1 Mar (both in the ISO week of Mon 23 Feb), Mon 2 Mar, Tue 31 Mar.
  const calls: Array<[string, number, string | null]> = [
    ['2026-02-28', 1, 't1'],
    ['2026-03-01', 20, 't2'],
    ['2026-03-02', 300, 't1'],
    ['2026-03-31', 4000, null],
  ];
  for (const [i, [day, nano, team]] of calls.entries()) {
    const entry = log(`r${i}`, day, nano, team);
    await storage.settle({
      reservationId: `r${i}`,
      scopes: [],
      costNano: nano,
      now: entry.startTime,
      log: entry,
    });
  }
  return guard;
}

describe('guard.spend.report', () => {
  it('buckets days into ISO weeks (Monday first) and calendar months, sorted by period then group', async () => {
    const guard = await seeded();
    const week = await guard.spend.report({
      from: '2026-02-01',
      to: '2026-03-31',
      granularity: 'week',
      groupBy: ['team'],
    });
    expect(week.rows.map((r) => [r.period, r.team, r.spendNano])).toEqual([
      ['2026-02-23', 't1', 1],
      ['2026-02-23', 't2', 20],
      ['2026-03-02', 't1', 300],
      ['2026-03-30', null, 4000],
    ]);
    const month = await guard.spend.report({ from: '2026-02-01', to: '2026-03-31', granularity: 'month' });
    expect(month.rows.map((r) => [r.period, r.spendNano, r.spend])).toEqual([
      ['2026-02-01', 1, 1e-9],
      ['2026-03-01', 4320, 4.32e-6],
    ]);
    const total = await guard.spend.report({ from: new Date('2026-03-01T23:59:59Z'), to: '2026-03-02' });
    expect(total.rows).toEqual([
      {
        period: '2026-03-01',
        requests: 2,
        failedRequests: 0,
        spend: 3.2e-7,
        spendNano: 320,
        promptTokens: 6,
        completionTokens: 8,
        totalTokens: 14,
      },
    ]);
    const { period: _, ...sums } = total.rows[0]!;
    expect(total.totals).toEqual(sums);
  });

  it('keeps the top n groups by spend and sums the rest into "other" rows per bucket, totals exact', async () => {
    const guard = await seeded();
    const range = { from: '2026-02-01', to: '2026-03-31', groupBy: ['team'] as const };
    // Over the range: null 4000, t1 301, t2 20. Top 1 is the calls without a team.
    const week = await guard.spend.report({ ...range, granularity: 'week', top: { by: 'spend', n: 1 } });
    expect(week.rows.map((r) => [r.period, r.team, r.other ?? false, r.spendNano])).toEqual([
      ['2026-02-23', null, true, 21],
      ['2026-03-02', null, true, 300],
      ['2026-03-30', null, false, 4000],
    ]);
    const all = await guard.spend.report({ ...range, granularity: 'week' });
    expect(week.totals).toEqual(all.totals);
    const two = await guard.spend.report({ ...range, granularity: 'total', top: { n: 2 } });
    expect(two.rows.map((r) => [r.team, r.other ?? false, r.spendNano])).toEqual([
      [null, false, 4000],
      ['t1', false, 301],
      [null, true, 20],
    ]);
  });

  it('refuses bad bounds and unknown groupings with a 400-mapped error', async () => {
    const guard = await seeded();
    for (const bad of [
      { from: '2026-02-30', to: '2026-03-01' },
      { from: '03/01/2026', to: '2026-03-01' },
      { from: '2026-03-02', to: '2026-03-01' },
      { from: '2026-03-01', to: '2026-03-02', groupBy: ['region'] as never },
      { from: '2026-03-01', to: '2026-03-02', granularity: 'hour' as never },
      { from: '2026-03-01', to: '2026-03-02', groupBy: ['team' as const], top: { n: 0 } },
      { from: '2026-03-01', to: '2026-03-02', groupBy: ['team' as const], top: { n: 2.5 } },
      {
        from: '2026-03-01',
        to: '2026-03-02',
        groupBy: ['team' as const],
        top: { by: 'requests' as never, n: 2 },
      },
      { from: '2026-03-01', to: '2026-03-02', top: { n: 2 } },
      { from: '2026-03-01', to: '2026-03-02', groupBy: ['team' as const, 'model' as const], top: { n: 2 } },
    ]) {
      await expect(guard.spend.report(bad)).rejects.toMatchObject({ code: 'BAD_REQUEST', status: 400 });
    }
  });
});

describe('the alerts option', () => {
  it('is validated when the guard is created, saying how to fix it', () => {
    expect(() =>
      createSpendGuard({
        storage: new MemoryStorage(),
        alerts: { webhookUrl: 'ftp://hooks', secret: 'short', thresholds: [0] },
      }),
    ).toThrow(
      /alerts\.webhookUrl: must be an http\(s\) URL[\s\S]*alerts\.secret: must be at least 16 characters[\s\S]*alerts\.thresholds\.0: must be a percentage above 0/,
    );
  });
});
