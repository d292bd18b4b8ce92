import { createSpendGuard, MemoryStorage, type SpendLogRecord } from '@spendguard/core';
import { describe, expect, it } from 'vitest';

const NOW = new Date('2026-03-10T12:00:00.000Z'); // half of 10 March has passed

function log(requestId: string, at: Date, spendNano: number, teamId: string): SpendLogRecord {
  return {
    requestId,
    callType: 'acompletion',
    apiKeyHash: 'k1',
    spendNano,
    promptTokens: 1,
    completionTokens: 1,
    totalTokens: 2,
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

describe('budgets overview', () => {
  it('names every listed key, looked up one by one or, for many keys, from one read of the key list', async () => {
    for (const count of [3, 30]) {
      const guard = createSpendGuard({
        storage: new MemoryStorage(),
        masterKey: 'sk-master-test',
        now: () => NOW,
        reservationSweepMs: 0,
        logger: { warn() {}, error() {} },
      });
      for (let i = 0; i < count; i++) {
        const answer = await guard.management.handleAsAdmin({
          method: 'POST',
          path: '/key/generate',
          query: new URLSearchParams(),
          header: (n) => (n.toLowerCase() === 'content-type' ? 'application/json' : null),
          body: JSON.stringify({ key_alias: `alias-${i}`, max_budget: 1 }),
        });
        expect(answer?.status).toBe(200);
      }
      const { entries } = await guard.budgets.overview({ minUsedFraction: 0, kinds: ['key'] });
      expect(entries.map((e) => e.name).sort()).toEqual(
        Array.from({ length: count }, (_, i) => `alias-${i}`).sort(),
      );
      await guard.close();
    }
  });

  it('lists scopes near their cap with the burn rate from the rollups and the projected run-out', async () => {
    const storage = new MemoryStorage();
    const guard = createSpendGuard({
      storage,
      now: () => NOW,
      reservationSweepMs: 0,
      logger: { warn() {}, error() {} },
    });
    const none = { budgetDuration: null, budgetResetAt: null };
    await storage.insert([
      {
        type: 'team',
        record: { teamId: 'a', teamAlias: 'Alpha', models: [], metadata: {}, blocked: false, createdAt: NOW },
        budget: { maxBudgetNano: 100e9, ...none },
      },
      {
        type: 'team',
        record: { teamId: 'b', teamAlias: null, models: [], metadata: {}, blocked: false, createdAt: NOW },
        budget: {
          maxBudgetNano: 10e9,
          budgetDuration: '1mo',
          budgetResetAt: new Date('2026-04-01T00:00:00Z'),
        },
      },
      {
        type: 'team',
        record: { teamId: 'c', teamAlias: null, models: [], metadata: {}, blocked: false, createdAt: NOW },
        budget: { maxBudgetNano: 1e9, ...none },
      },
    ]);
    const charge = (id: string, team: string, at: string, usd: number) =>
      storage.settle({
        reservationId: id,
        scopes: [{ kind: 'team', id: team }],
        costNano: usd * 1e9,
        now: NOW,
        log: log(id, new Date(at), usd * 1e9, team),
      });
    // Alpha: $39 inside the 7-day window (4 to 10 March), $45 before it: 84 % used.
    await charge('a0', 'a', '2026-03-01T10:00:00Z', 45);
    await charge('a1', 'a', '2026-03-04T10:00:00Z', 26);
    await charge('a2', 'a', '2026-03-10T06:00:00Z', 13);
    // b: 90 % used, burning $9 over 6.5 days: it would run out after 1/1.385 days... its period resets on 1 April.
    await charge('b1', 'b', '2026-03-09T10:00:00Z', 9);
    // c: over its cap.
    await charge('c1', 'c', '2026-03-10T01:00:00Z', 2);

    const { from, to, entries } = await guard.budgets.overview();
    expect([from, to]).toEqual(['2026-03-04', '2026-03-10']);
    expect(entries.map((e) => `${e.scope.id}:${e.status}`)).toEqual(['c:over', 'b:near', 'a:near']);
    const [c, b, a] = entries;
    expect(c).toMatchObject({ remaining: 0, projectedRunOut: NOW, resetsFirst: false });
    expect(a!.name).toBe('Alpha');
    expect(a!.burnRatePerDay).toBeCloseTo(39 / 6.5, 9);
    // $16 left at $6/day: 2.666… days from now.
    expect(a!.projectedRunOut!.getTime()).toBeCloseTo(NOW.getTime() + (16 / 6) * 86_400_000, -1);
    expect(b!.burnRatePerDay).toBeCloseTo(9 / 6.5, 9);
    expect(b!.projectedRunOut!.getTime()).toBeCloseTo(NOW.getTime() + (1 / (9 / 6.5)) * 86_400_000, -1);
    expect(b!.resetsFirst).toBe(false);

    const later = await createSpendGuard({
      storage,
      now: () => new Date('2026-03-31T23:00:00Z'),
      reservationSweepMs: 0,
    }).budgets.overview({ minUsedFraction: 0.5, kinds: ['team'], burnDays: 30 });
    // By 31 March nothing new was spent; b still has $1 left, burning $0.3/day would take 3 more days: it resets first.
    const bLater = later.entries.find((e) => e.scope.id === 'b')!;
    expect(bLater.resetsFirst).toBe(true);
    expect(bLater.projectedRunOut).toBeNull();
    await expect(guard.budgets.overview({ burnDays: 0 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });
});
