// The budget rules every backend applies (storage/budget-rules.ts), at their edges: exactly at a cap,
// one nano-dollar over it, a reset due at this very millisecond. Expected values are literals.
import { describe, expect, it } from 'vitest';
import {
  abandonedChargeScopes,
  applyDueReset,
  expiredReservationLog,
  fitsBudget,
  missingBudgetTier,
  retieredState,
  tierRateLimits,
  withCounters,
} from '../src/storage/budget-rules.js';
import type { BudgetState, BudgetTierRecord } from '../src/storage/storage-contract.js';

const state = (over: Partial<BudgetState> = {}): BudgetState => ({
  scope: { kind: 'key', id: 'k1' },
  maxBudgetNano: 1_000,
  budgetDuration: '1d',
  budgetResetAt: new Date('2026-03-11T00:00:00.000Z'),
  softBudgetNano: 800,
  spendNano: 600,
  reservedNano: 300,
  ...over,
});

describe('applyDueReset', () => {
  it('leaves a budget alone before its reset time, or without a period', () => {
    const before = state();
    expect(applyDueReset(before, new Date('2026-03-10T23:59:59.999Z'))).toBe(before);
    const noReset = state({ budgetResetAt: null });
    expect(applyDueReset(noReset, new Date('2027-01-01T00:00:00.000Z'))).toBe(noReset);
    const noDuration = state({ budgetDuration: null });
    expect(applyDueReset(noDuration, new Date('2027-01-01T00:00:00.000Z'))).toBe(noDuration);
  });

  it('resets the spend (not the reservations) at the reset time itself, and sets the next one', () => {
    const due = state();
    const reset = applyDueReset(due, new Date('2026-03-11T00:00:00.000Z'));
    expect(reset).toEqual({
      ...due,
      spendNano: 0,
      budgetResetAt: new Date('2026-03-12T00:00:00.000Z'),
    });
    expect(due.spendNano).toBe(600); // a new object: the stored state is not changed in place
  });

  it('counts the next reset from now when several periods went by', () => {
    const reset = applyDueReset(state(), new Date('2026-03-15T10:00:00.000Z'));
    expect(reset.budgetResetAt).toEqual(new Date('2026-03-16T00:00:00.000Z'));
    expect(reset.spendNano).toBe(0);
    expect(reset.reservedNano).toBe(300);
  });
});

describe('withCounters', () => {
  it('is the state with these counters, every other field kept', () => {
    expect(withCounters(state(), 5, 7)).toEqual({
      scope: { kind: 'key', id: 'k1' },
      maxBudgetNano: 1_000,
      budgetDuration: '1d',
      budgetResetAt: new Date('2026-03-11T00:00:00.000Z'),
      softBudgetNano: 800,
      spendNano: 5,
      reservedNano: 7,
    });
  });
});

describe('fitsBudget', () => {
  it('admits anything on a scope without a cap', () => {
    for (const mode of ['strict', 'shrink', 'soft'] as const) {
      expect(fitsBudget(state({ maxBudgetNano: null, spendNano: 1e12 }), 1e12, mode)).toBe(true);
    }
  });

  it('strict (the default): spend + reserved + the call up to the cap itself, not a nano-dollar more', () => {
    expect(fitsBudget(state(), 100)).toBe(true); // 600 + 300 + 100 = 1000
    expect(fitsBudget(state(), 101)).toBe(false);
    expect(fitsBudget(state(), 100, 'strict')).toBe(true);
    expect(fitsBudget(state(), 101, 'strict')).toBe(false);
  });

  it('shrink: any headroom left, whatever the call reserves', () => {
    expect(fitsBudget(state({ reservedNano: 399 }), 1e9, 'shrink')).toBe(true); // 999 < 1000
    expect(fitsBudget(state({ reservedNano: 400 }), 1, 'shrink')).toBe(false);
  });

  it('soft: recorded spend only, reservations not counted', () => {
    expect(fitsBudget(state({ spendNano: 999, reservedNano: 1e9 }), 1e9, 'soft')).toBe(true);
    expect(fitsBudget(state({ spendNano: 1_000, reservedNano: 0 }), 0, 'soft')).toBe(false);
  });
});

describe('expiredReservationLog', () => {
  const now = new Date('2026-03-10T12:10:00.000Z');

  it("charges the call's reserved worst case, flagged, with the attribution it was reserved with", () => {
    const log = expiredReservationLog(
      'r1',
      4_200,
      {
        requestId: 'req-1',
        callType: 'acompletion_stream',
        apiKeyHash: 'k1',
        model: 'gpt-4o',
        userId: 'u1',
        teamId: 't1',
        endUser: 'acme',
        tags: ['a'],
        startTime: new Date('2026-03-10T12:00:00.000Z'),
      },
      now,
    );
    expect(log).toEqual({
      requestId: 'req-1',
      callType: 'acompletion_stream',
      apiKeyHash: 'k1',
      spendNano: 4_200,
      promptTokens: 0,
      completionTokens: 0,
      totalTokens: 0,
      startTime: new Date('2026-03-10T12:00:00.000Z'),
      endTime: now,
      model: 'gpt-4o',
      provider: null,
      userId: 'u1',
      teamId: 't1',
      endUser: 'acme',
      tags: ['a'],
      status: 'failure',
      estimated: true,
      httpStatus: 0,
      metadata: { expired_reservation: true, reservation_id: 'r1' },
    });
  });

  it('names the reservation itself when nothing was recorded of its call', () => {
    // Strict: no `process_died` key at all (not one set to undefined) when no process died.
    expect(expiredReservationLog('r2', 10, null, now)).toStrictEqual({
      requestId: 'r2',
      callType: 'unknown',
      apiKeyHash: '',
      spendNano: 10,
      promptTokens: 0,
      completionTokens: 0,
      totalTokens: 0,
      startTime: now,
      endTime: now,
      model: '',
      provider: null,
      userId: null,
      teamId: null,
      endUser: null,
      tags: [],
      status: 'failure',
      estimated: true,
      httpStatus: 0,
      metadata: { expired_reservation: true, reservation_id: 'r2' },
    });
  });
});

describe('budget tiers and abandoned charges', () => {
  const tier = (over: Partial<BudgetTierRecord> = {}): BudgetTierRecord => ({
    budgetId: 'b1',
    maxBudgetNano: 5_000,
    softBudgetNano: null,
    budgetDuration: '1d',
    rpmLimit: null,
    tpmLimit: null,
    maxParallelRequests: null,
    createdAt: new Date('2026-03-01T00:00:00.000Z'),
    updatedAt: new Date('2026-03-01T00:00:00.000Z'),
    ...over,
  });

  it('a new tier of the same duration keeps the reset schedule, spend and reservations', () => {
    // The reset is due at 06:00, not at a midnight nor a day after `now`: only kept, never recomputed.
    const at = new Date('2026-03-11T06:00:00.000Z');
    const next = retieredState(state({ budgetResetAt: at }), tier(), new Date('2026-03-10T12:00:00.000Z'));
    expect(next).toMatchObject({
      maxBudgetNano: 5_000,
      softBudgetNano: null,
      budgetDuration: '1d',
      budgetResetAt: at,
      spendNano: 600,
      reservedNano: 300,
    });
  });

  it('a tier without rate limits has none; one limit gives all three, the others null', () => {
    expect(tierRateLimits(tier())).toBeNull();
    expect(tierRateLimits(tier({ tpmLimit: 100 }))).toEqual({
      rpmLimit: null,
      tpmLimit: 100,
      maxParallelRequests: null,
      modelRpmLimit: {},
      modelTpmLimit: {},
    });
  });

  it('a missing tier is a 400 naming budget_id', () => {
    const error = missingBudgetTier('b9');
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.param).toBe('budget_id');
    expect(error.message).toBe("Budget not found: budget_id 'b9'; create it with /budget/new");
  });

  it("an abandoned call is charged to its user when the user's counter was not held", () => {
    const key = { kind: 'key', id: 'k1' } as const;
    // Held: unchanged.
    expect(abandonedChargeScopes([key, { kind: 'user', id: 'u1' }], { userId: 'u1' })).toEqual([
      key,
      { kind: 'user', id: 'u1' },
    ]);
    // Another user's counter, or another kind of scope with the same id, is not the user's.
    expect(abandonedChargeScopes([key, { kind: 'user', id: 'u2' }], { userId: 'u1' })).toEqual([
      key,
      { kind: 'user', id: 'u2' },
      { kind: 'user', id: 'u1' },
    ]);
    expect(abandonedChargeScopes([key, { kind: 'team', id: 'u1' }], { userId: 'u1' })).toEqual([
      key,
      { kind: 'team', id: 'u1' },
      { kind: 'user', id: 'u1' },
    ]);
    expect(abandonedChargeScopes([key], null)).toEqual([key]);
  });
});
