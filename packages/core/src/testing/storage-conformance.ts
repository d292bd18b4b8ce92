import { describe, expect, it } from 'vitest';
import { StorageConflictError } from '../errors.js';
import { aggregateRollup, readsTagRollup, rollupRowOf } from '../storage/spend-rollup.js';
import type {
  BudgetInit,
  KeyRecord,
  ScopeRef,
  SpendDimension,
  SpendLogRecord,
  SpendReportFilters,
  SpendReportQuery,
  SpendStorage,
  TeamRecord,
  UserRecord,
} from '../storage/storage-contract.js';

/** Reads what a backend really stored, bypassing its public methods. */
export interface RawStorageReader {
  budgetCounter(scope: ScopeRef): Promise<{ spendNano: number; reservedNano: number } | null>;
  spendLogCount(): Promise<number>;
  openReservations(): Promise<number>;
  /** Every stored value as text, to prove a plaintext key is never persisted. */
  dumpText(): Promise<string>;
}

export interface ConformanceOptions {
  name: string;
  /** A fresh, empty, initialised store per test. */
  create: () => Promise<SpendStorage>;
  raw: (storage: SpendStorage) => RawStorageReader;
  /**
   * Opens a second instance on the same data (another connection or process view), for the
   * cross-instance cases; omitted where the store cannot be shared.
   */
  sibling?: (storage: SpendStorage) => Promise<SpendStorage>;
  /** Parallel reservations in the concurrency case (default 60). */
  concurrency?: number;
}

const NO_BUDGET: BudgetInit = { maxBudgetNano: null, budgetDuration: null, budgetResetAt: null };
const T0 = new Date('2026-03-10T12:00:00.000Z');

export function team(id: string, alias: string | null = null): TeamRecord {
  return {
    teamId: id,
    teamAlias: alias,
    models: [],
    metadata: { owner: 'x' },
    blocked: false,
    createdAt: T0,
  };
}
export function user(id: string, teams: string[] = []): UserRecord {
  return {
    userId: id,
    userEmail: null,
    userRole: 'internal_user',
    teams,
    models: [],
    metadata: {},
    createdAt: T0,
  };
}
export function key(hash: string, userId: string | null, teamId: string | null): KeyRecord {
  return {
    tokenHash: hash,
    keyName: 'sk-...abcd',
    keyAlias: null,
    userId,
    teamId,
    models: [],
    tags: [],
    metadata: { purpose: 'test', nested: { n: 1 } },
    blocked: false,
    expiresAt: null,
    createdAt: T0,
  };
}
function budget(
  maxUsd: number | null,
  duration: string | null = null,
  resetAt: Date | null = null,
): BudgetInit {
  return {
    maxBudgetNano: maxUsd === null ? null : Math.round(maxUsd * 1e9),
    budgetDuration: duration,
    budgetResetAt: resetAt,
  };
}
function log(requestId: string, over: Partial<SpendLogRecord> = {}): SpendLogRecord {
  return {
    requestId,
    callType: 'acompletion',
    apiKeyHash: 'k1',
    spendNano: 0,
    promptTokens: 10,
    completionTokens: 5,
    totalTokens: 15,
    startTime: T0,
    endTime: new Date(T0.getTime() + 250),
    model: 'gpt-4o',
    provider: 'openai',
    userId: 'u1',
    teamId: 't1',
    endUser: null,
    tags: [],
    status: 'success',
    estimated: false,
    httpStatus: 200,
    metadata: {},
    ...over,
  };
}

const K: ScopeRef = { kind: 'key', id: 'k1' };
const U: ScopeRef = { kind: 'user', id: 'u1' };
const T: ScopeRef = { kind: 'team', id: 't1' };

/**
 * The conformance suite every storage backend runs unchanged (`@spendguard/core/testing`).
 * Each case checks the backend's answers and, through `raw`, what it really stored.
 */
export function runStorageConformance(options: ConformanceOptions): void {
  const { create, raw } = options;

  async function seeded(limits: { key?: BudgetInit; user?: BudgetInit; team?: BudgetInit } = {}) {
    const s = await create();
    await s.insert([
      { type: 'team', record: team('t1', 'frontend'), budget: limits.team ?? NO_BUDGET },
      { type: 'user', record: user('u1', ['t1']), budget: limits.user ?? NO_BUDGET },
      { type: 'key', record: key('k1', 'u1', 't1'), budget: limits.key ?? NO_BUDGET },
    ]);
    return s;
  }

  describe(`storage conformance: ${options.name}`, () => {
    it('stores and reads back teams, users and keys as given', async () => {
      const s = await seeded();
      expect(await s.getTeam('t1')).toEqual(team('t1', 'frontend'));
      expect(await s.getUser('u1')).toEqual(user('u1', ['t1']));
      expect(await s.getKey('k1')).toEqual(key('k1', 'u1', 't1'));
      expect(await s.getTeam('nope')).toBeNull();
      expect(await s.getUser('nope')).toBeNull();
      expect(await s.getKey('nope')).toBeNull();
      expect((await s.findTeamsByAlias('frontend')).map((t) => t.teamId)).toEqual(['t1']);
      expect(await s.findTeamsByAlias('backend')).toEqual([]);
      expect((await s.listKeys({ userId: 'u1' })).map((k) => k.tokenHash)).toEqual(['k1']);
      expect(await s.listKeys({ teamId: 'other' })).toEqual([]);
      expect((await s.listUsers({ teamId: 't1' })).map((u) => u.userId)).toEqual(['u1']);
      expect(await s.listUsers({ teamId: 't2' })).toEqual([]);
      await s.close();
    });

    it('inserts a batch all or nothing: a taken id writes none of it', async () => {
      const s = await seeded();
      await expect(
        s.insert([
          { type: 'team', record: team('t2'), budget: NO_BUDGET },
          { type: 'key', record: key('k1', null, null), budget: NO_BUDGET },
        ]),
      ).rejects.toBeInstanceOf(StorageConflictError);
      expect(await s.getTeam('t2')).toBeNull();
      expect(await raw(s).budgetCounter({ kind: 'team', id: 't2' })).toBeNull();
      await s.close();
    });

    it('creates a zeroed budget counter with every entity', async () => {
      const s = await seeded({ key: budget(5) });
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: 0 });
      const [state] = await s.getBudgets([K], T0);
      expect(state).toMatchObject({ scope: K, maxBudgetNano: 5e9, spendNano: 0, reservedNano: 0 });
      await s.close();
    });

    it('reserves on every scope at once and admits exactly up to the cap', async () => {
      const s = await seeded({ key: budget(1), team: budget(10) });
      const ok = await s.reserve({
        reservationId: 'r1',
        scopes: [K, U, T],
        amountNano: 600_000_000,
        now: T0,
        expiresAt: T0,
      });
      expect(ok.ok).toBe(true);
      for (const scope of [K, U, T]) {
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 0, reservedNano: 600_000_000 });
      }
      // 0.6 + 0.4 = 1.0 fits exactly; one nano-dollar more does not.
      const over = await s.reserve({
        reservationId: 'r2',
        scopes: [K, U, T],
        amountNano: 400_000_001,
        now: T0,
        expiresAt: T0,
      });
      expect(over.ok).toBe(false);
      if (!over.ok) expect(over.refused.scope).toEqual(K);
      const exact = await s.reserve({
        reservationId: 'r3',
        scopes: [K, U, T],
        amountNano: 400_000_000,
        now: T0,
        expiresAt: T0,
      });
      expect(exact.ok).toBe(true);
      expect(await raw(s).openReservations()).toBe(2);
      await s.close();
    });

    it('changes nothing when any scope refuses', async () => {
      const s = await seeded({ team: budget(1) });
      const res = await s.reserve({
        reservationId: 'r1',
        scopes: [K, U, T],
        amountNano: 2e9,
        now: T0,
        expiresAt: T0,
      });
      expect(res.ok).toBe(false);
      if (!res.ok) {
        expect(res.refused.scope).toEqual(T);
        expect(res.refused.maxBudgetNano).toBe(1e9);
      }
      for (const scope of [K, U, T]) {
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 0, reservedNano: 0 });
      }
      expect(await raw(s).openReservations()).toBe(0);
      await s.close();
    });

    it('settles: releases the reservation, adds the cost everywhere, logs once', async () => {
      const s = await seeded({ key: budget(1) });
      await s.reserve({
        reservationId: 'r1',
        scopes: [K, U, T],
        amountNano: 500_000_000,
        now: T0,
        expiresAt: T0,
      });
      const first = await s.settle({
        reservationId: 'r1',
        scopes: [K, U, T],
        costNano: 123_456_789,
        now: T0,
        log: log('req-1', { spendNano: 123_456_789, tags: ['a', 'b'] }),
      });
      expect(first.applied).toBe(true);
      expect(first.states.map((st) => st.spendNano)).toEqual([123_456_789, 123_456_789, 123_456_789]);
      for (const scope of [K, U, T]) {
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 123_456_789, reservedNano: 0 });
      }
      const again = await s.settle({
        reservationId: 'r1',
        scopes: [K, U, T],
        costNano: 123_456_789,
        now: T0,
        log: log('req-1'),
      });
      expect(again.applied).toBe(false);
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 123_456_789, reservedNano: 0 });
      expect(await raw(s).spendLogCount()).toBe(1);
      expect(await raw(s).openReservations()).toBe(0);
      const [stored] = await s.querySpendLogs({ requestId: 'req-1' });
      expect(stored).toEqual(log('req-1', { spendNano: 123_456_789, tags: ['a', 'b'] }));
      await s.close();
    });

    it('keeps large nano-dollar amounts exact', async () => {
      const s = await seeded({ team: { ...NO_BUDGET, maxBudgetNano: 9_000_000_000_000_000 } });
      await s.settle({
        reservationId: 'none',
        scopes: [T],
        costNano: 8_999_999_999_999_999,
        now: T0,
        log: log('big'),
      });
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 8_999_999_999_999_999, reservedNano: 0 });
      await s.close();
    });

    it('resets a period budget lazily at its first use after the reset time', async () => {
      const resetAt = new Date('2026-03-11T00:00:00.000Z');
      const s = await seeded({ key: budget(1, '1d', resetAt) });
      await s.settle({ reservationId: 'x', scopes: [K], costNano: 900_000_000, now: T0, log: log('r-a') });
      const before = await s.reserve({
        reservationId: 'r1',
        scopes: [K],
        amountNano: 200_000_000,
        now: T0,
        expiresAt: T0,
      });
      expect(before.ok).toBe(false);
      const later = new Date('2026-03-11T00:00:01.000Z');
      const after = await s.reserve({
        reservationId: 'r2',
        scopes: [K],
        amountNano: 200_000_000,
        now: later,
        expiresAt: later,
      });
      expect(after.ok).toBe(true);
      if (after.ok) {
        expect(after.states[0]?.spendNano).toBe(0);
        expect(after.states[0]?.budgetResetAt?.toISOString()).toBe('2026-03-12T00:00:00.000Z');
      }
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: 200_000_000 });
      await s.close();
    });

    it(`admits exactly K of N parallel reservations against a budget that fits K`, async () => {
      const n = options.concurrency ?? 60;
      const fits = Math.floor(n / 3);
      const s = await seeded({ team: budget(fits * 0.01) });
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          s.reserve({
            reservationId: `p${i}`,
            scopes: [K, U, T],
            amountNano: 10_000_000,
            now: T0,
            expiresAt: T0,
          }),
        ),
      );
      expect(results.filter((r) => r.ok)).toHaveLength(fits);
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 0, reservedNano: fits * 10_000_000 });
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: fits * 10_000_000 });
      expect(await raw(s).openReservations()).toBe(fits);
      await s.close();
    });

    it('admits by enforcement mode: strict on the worst case, shrink on any headroom, soft on recorded spend', async () => {
      const s = await seeded({ key: budget(1) });
      const r = (id: string, amountNano: number, mode: 'strict' | 'shrink' | 'soft') =>
        s.reserve({ reservationId: id, scopes: [K], amountNano, now: T0, expiresAt: T0, mode });
      expect((await r('a', 600_000_000, 'strict')).ok).toBe(true);
      expect((await r('b', 600_000_000, 'strict')).ok).toBe(false); // 0.6 + 0.6 > 1
      expect((await r('c', 600_000_000, 'shrink')).ok).toBe(true); // 0.6 reserved < 1: headroom left
      expect((await r('d', 1, 'shrink')).ok).toBe(false); // 1.2 reserved: none left
      expect((await r('e', 5e9, 'soft')).ok).toBe(true); // nothing recorded yet
      await s.settle({
        reservationId: 'a',
        scopes: [K],
        costNano: 1e9,
        now: T0,
        log: log('soft-1', { spendNano: 1e9 }),
      });
      expect((await r('f', 1, 'soft')).ok).toBe(false); // recorded spend reached the cap
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 1e9, reservedNano: 600_000_000 + 5e9 });
      await s.close();
    });

    it('releases an abandoned reservation without charging it', async () => {
      const s = await seeded({ key: budget(1) });
      await s.reserve({
        reservationId: 'r1',
        scopes: [K, U],
        amountNano: 700_000_000,
        now: T0,
        expiresAt: T0,
      });
      expect(await s.release('r1')).toBe(true);
      expect(await s.release('r1')).toBe(false);
      for (const scope of [K, U])
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 0, reservedNano: 0 });
      expect(await raw(s).openReservations()).toBe(0);
      expect(await raw(s).spendLogCount()).toBe(0);
      await s.close();
    });

    it('charges reservations past their TTL at their estimate, flagged, once', async () => {
      const s = await seeded({ key: budget(10) });
      const later = new Date(T0.getTime() + 60_000);
      const pending = {
        requestId: 'dead-1',
        callType: 'acompletion',
        apiKeyHash: 'k1',
        model: 'gpt-4o',
        userId: 'u1',
        teamId: 't1',
        endUser: null,
        tags: ['prod'],
        startTime: T0,
      };
      await s.reserve({
        reservationId: 'old',
        scopes: [K, U, T],
        amountNano: 300,
        now: T0,
        expiresAt: later,
        pending,
      });
      await s.reserve({
        reservationId: 'young',
        scopes: [K],
        amountNano: 50,
        now: T0,
        expiresAt: new Date(later.getTime() + 1),
      });
      expect(await s.expireReservations(new Date(later.getTime() - 1))).toBe(0);
      expect(await s.expireReservations(later)).toBe(1);
      for (const scope of [U, T])
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 300, reservedNano: 0 });
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 300, reservedNano: 50 });
      expect(await raw(s).openReservations()).toBe(1);
      const [logged] = await s.querySpendLogs({ requestId: 'dead-1' });
      expect(logged).toMatchObject({
        apiKeyHash: 'k1',
        spendNano: 300,
        estimated: true,
        status: 'failure',
        model: 'gpt-4o',
        userId: 'u1',
        tags: ['prod'],
        metadata: { expired_reservation: true },
      });
      expect(logged?.startTime.toISOString()).toBe(T0.toISOString());
      expect(await s.spendByTag({})).toEqual([{ tag: 'prod', requests: 1, spendNano: 300 }]);
      // Charged at its estimate into the rollups too, as a failed request of no known provider.
      const day = { fromDay: '2026-03-10', toDay: '2026-03-10' };
      expect(await s.spendReport({ ...day, groupBy: ['key', 'provider'] })).toEqual([
        {
          apiKeyHash: 'k1',
          provider: null,
          requests: 1,
          failedRequests: 1,
          spendNano: 300,
          promptTokens: 0,
          completionTokens: 0,
        },
      ]);
      // The process was only slow: its late settle finds the log and charges nothing more.
      const late = await s.settle({
        reservationId: 'old',
        scopes: [K, U, T],
        costNano: 120,
        now: later,
        log: log('dead-1'),
      });
      expect(late.applied).toBe(false);
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 300, reservedNano: 0 });
      expect(await s.expireReservations(later)).toBe(0);
      await s.close();
    });

    it('updates a key and its budget definition, keeping its spend', async () => {
      const s = await seeded({ key: budget(1) });
      await s.settle({ reservationId: 'x', scopes: [K], costNano: 250, now: T0, log: log('u-1') });
      const updated = await s.updateKey(
        'k1',
        { blocked: true, keyAlias: 'ci', models: ['gpt-4o'] },
        { maxBudgetNano: 2e9 },
      );
      expect(updated).toMatchObject({
        tokenHash: 'k1',
        blocked: true,
        keyAlias: 'ci',
        models: ['gpt-4o'],
        userId: 'u1',
      });
      expect(await s.getKey('k1')).toEqual(updated);
      const [state] = await s.getBudgets([K], T0);
      expect(state).toMatchObject({ maxBudgetNano: 2e9, spendNano: 250 });
      expect(await s.updateKey('nope', { blocked: true })).toBeNull();
      await s.close();
    });

    it('deletes keys with their counters and keeps their spend logs', async () => {
      const s = await seeded();
      await s.settle({ reservationId: 'x', scopes: [K], costNano: 250, now: T0, log: log('d-1') });
      expect(await s.deleteKeys(['k1', 'nope'])).toBe(1);
      expect(await s.getKey('k1')).toBeNull();
      expect(await raw(s).budgetCounter(K)).toBeNull();
      expect(await s.querySpendLogs({ apiKeyHash: 'k1' })).toHaveLength(1);
      expect(await s.deleteKeys(['k1'])).toBe(0);
      await s.close();
    });

    it('reports key changes to watchers, across instances where the store is shared, within a second', async () => {
      const s = await seeded();
      if (!s.watchKeyChanges) return void (await s.close());
      const other = options.sibling ? await options.sibling(s) : s;
      const seen: Array<string | null> = [];
      const stop = other.watchKeyChanges!((hash) => seen.push(hash));
      const t0 = Date.now();
      await s.updateKey('k1', { blocked: true });
      while (!seen.includes('k1') && Date.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 10));
      expect(seen).toContain('k1');
      stop();
      if (other !== s) await other.close();
      await s.close();
    });

    it('filters and orders spend logs, newest first', async () => {
      const s = await seeded();
      const at = (m: number) => new Date(T0.getTime() + m * 60_000);
      await s.settle({
        reservationId: 'a',
        scopes: [K],
        costNano: 1,
        now: T0,
        log: log('l1', { startTime: at(1) }),
      });
      await s.settle({
        reservationId: 'b',
        scopes: [K],
        costNano: 2,
        now: T0,
        log: log('l2', { startTime: at(2), userId: 'u2' }),
      });
      await s.settle({
        reservationId: 'c',
        scopes: [K],
        costNano: 3,
        now: T0,
        log: log('l3', { startTime: at(3), apiKeyHash: 'k2', teamId: 't2' }),
      });
      const ids = async (q: Parameters<SpendStorage['querySpendLogs']>[0]) =>
        (await s.querySpendLogs(q)).map((l) => l.requestId);
      expect(await ids({})).toEqual(['l3', 'l2', 'l1']);
      expect(await ids({ apiKeyHash: 'k1' })).toEqual(['l2', 'l1']);
      expect(await ids({ userId: 'u2' })).toEqual(['l2']);
      expect(await ids({ teamId: 't2' })).toEqual(['l3']);
      expect(await ids({ startTime: at(2) })).toEqual(['l3', 'l2']);
      expect(await ids({ endTime: at(2) })).toEqual(['l1']);
      expect(await ids({ limit: 1 })).toEqual(['l3']);
      await s.close();
    });

    it('rolls spend up by tag and day', async () => {
      const s = await seeded();
      const d1 = new Date('2026-03-01T10:00:00.000Z');
      const d2 = new Date('2026-03-02T10:00:00.000Z');
      await s.settle({
        reservationId: 'a',
        scopes: [K],
        costNano: 100,
        now: d1,
        log: log('t1', { startTime: d1, tags: ['prod', 'chat'] }),
      });
      await s.settle({
        reservationId: 'b',
        scopes: [K],
        costNano: 50,
        now: d2,
        log: log('t2', { startTime: d2, tags: ['prod'] }),
      });
      await s.settle({
        reservationId: 'c',
        scopes: [K],
        costNano: 7,
        now: d2,
        log: log('t3', { startTime: d2 }),
      });
      expect(await s.spendByTag({})).toEqual([
        { tag: 'prod', requests: 2, spendNano: 150 },
        { tag: 'chat', requests: 1, spendNano: 100 },
      ]);
      expect(await s.spendByTag({ fromDay: '2026-03-02' })).toEqual([
        { tag: 'prod', requests: 1, spendNano: 50 },
      ]);
      expect(await s.spendByTag({ toDay: '2026-03-01' })).toEqual([
        { tag: 'chat', requests: 1, spendNano: 100 },
        { tag: 'prod', requests: 1, spendNano: 100 },
      ]);
      await s.close();
    });

    it('reports spend from the daily rollups by any grouping, filtered, in a fixed order', async () => {
      const s = await seeded();
      const day = (d: string) => new Date(`${d}T10:00:00.000Z`);
      const big = 1_000_000_000_001;
      const calls: Array<[string, number, Partial<SpendLogRecord>]> = [
        ['a', 100, { startTime: day('2026-03-01'), endUser: 'cust-1', tags: ['prod', 'chat'] }],
        [
          'b',
          40,
          {
            startTime: day('2026-03-01'),
            userId: 'u2',
            apiKeyHash: 'k2',
            model: 'claude-x',
            provider: 'anthropic',
            tags: ['prod'],
            status: 'failure',
            promptTokens: 3,
            completionTokens: 0,
          },
        ],
        [
          'c',
          7,
          { startTime: day('2026-03-02'), teamId: null, userId: null, apiKeyHash: 'k3', provider: null },
        ],
        ['d', big, { startTime: day('2026-03-02'), teamId: 't2', endUser: 'cust-1', tags: ['chat'] }],
        ['e', 3, { startTime: day('2026-03-03') }],
      ];
      for (const [id, cost, over] of calls) {
        await s.settle({
          reservationId: id,
          scopes: [],
          costNano: cost,
          now: T0,
          log: log(id, { spendNano: cost, ...over }),
        });
      }
      const report = (q: Partial<SpendReportQuery>) =>
        s.spendReport({ fromDay: '2026-03-01', toDay: '2026-03-31', groupBy: [], ...q });
      const sums = (requests: number, spendNano: number, promptTokens: number, completionTokens: number) => ({
        requests,
        failedRequests: 0,
        spendNano,
        promptTokens,
        completionTokens,
      });

      expect(await report({})).toEqual([{ ...sums(5, 150 + big, 43, 20), failedRequests: 1 }]);
      expect(await report({ fromDay: '2026-04-01', toDay: '2026-04-30' })).toEqual([]);
      expect(await report({ groupBy: ['team'] })).toEqual([
        { teamId: null, ...sums(1, 7, 10, 5) },
        { teamId: 't1', ...sums(3, 143, 23, 10), failedRequests: 1 },
        { teamId: 't2', ...sums(1, big, 10, 5) },
      ]);
      expect(await report({ groupBy: ['day', 'model'], toDay: '2026-03-02' })).toEqual([
        { day: '2026-03-01', model: 'claude-x', ...sums(1, 40, 3, 0), failedRequests: 1 },
        { day: '2026-03-01', model: 'gpt-4o', ...sums(1, 100, 10, 5) },
        { day: '2026-03-02', model: 'gpt-4o', ...sums(2, 7 + big, 20, 10) },
      ]);
      expect(await report({ groupBy: ['provider', 'customer'] })).toEqual([
        { provider: null, endUser: null, ...sums(1, 7, 10, 5) },
        { provider: 'anthropic', endUser: null, ...sums(1, 40, 3, 0), failedRequests: 1 },
        { provider: 'openai', endUser: null, ...sums(1, 3, 10, 5) },
        { provider: 'openai', endUser: 'cust-1', ...sums(2, 100 + big, 20, 10) },
      ]);
      expect(
        await report({ groupBy: ['user', 'key'], filters: { teamIds: ['t1'], models: ['gpt-4o'] } }),
      ).toEqual([{ userId: 'u1', apiKeyHash: 'k1', ...sums(2, 103, 20, 10) }]);
      expect(await report({ groupBy: ['team'], filters: { teamIds: [] } })).toEqual([]);
      // Tag rows: a request counts once under each of its tags; untagged ones are not there.
      expect(await report({ groupBy: ['tag'] })).toEqual([
        { tag: 'chat', ...sums(2, 100 + big, 20, 10) },
        { tag: 'prod', ...sums(2, 140, 13, 5), failedRequests: 1 },
      ]);
      expect(await report({ groupBy: ['tag', 'team'], filters: { tags: ['chat'] } })).toEqual([
        { tag: 'chat', teamId: 't1', ...sums(1, 100, 10, 5) },
        { tag: 'chat', teamId: 't2', ...sums(1, big, 10, 5) },
      ]);
      expect(await report({ groupBy: ['key'], filters: { tags: ['prod', 'chat'] } })).toEqual([
        { apiKeyHash: 'k1', ...sums(3, 200 + big, 30, 15) },
        { apiKeyHash: 'k2', ...sums(1, 40, 3, 0), failedRequests: 1 },
      ]);
      expect(
        await report({ groupBy: ['day'], filters: { endUsers: ['cust-1'], providers: ['openai'] } }),
      ).toEqual([
        { day: '2026-03-01', ...sums(1, 100, 10, 5) },
        { day: '2026-03-02', ...sums(1, big, 10, 5) },
      ]);

      // Whichever rollup a backend reads for a report (narrow or full, see rollupTableFor), the answer
      // is core's reference over the logs; also after a settle that adds to existing rollup rows.
      const dimensions: SpendDimension[][] = [
        [],
        ['day'],
        ['day', 'team'],
        ['day', 'model', 'provider'],
        ['team', 'model'],
        ['day', 'user'],
        ['day', 'key'],
        ['team', 'user', 'key'],
        ['model', 'customer'],
        ['day', 'tag'],
        ['tag', 'team', 'model', 'provider'],
        ['tag', 'user'],
        ['tag', 'key', 'customer'],
      ];
      const filters: SpendReportFilters[] = [
        {},
        { teamIds: ['t1'] },
        { models: ['gpt-4o'], providers: ['openai'] },
        { userIds: ['u1', 'u2'] },
        { apiKeyHashes: ['k2'] },
        { tags: ['prod'] },
        { tags: ['chat'], teamIds: ['t2'] },
        { tags: ['prod'], apiKeyHashes: ['k1'] },
      ];
      const matchesReference = async () => {
        const logs = calls.map(([id, cost, over]) => [log(id, { spendNano: cost, ...over }), cost] as const);
        const rows = logs.map(([l, cost]) => rollupRowOf(l, cost));
        const tagged = logs.flatMap(([l, cost]) => l.tags.map((tag) => ({ ...rollupRowOf(l, cost), tag })));
        for (const groupBy of dimensions) {
          for (const f of filters) {
            const query = { fromDay: '2026-03-01', toDay: '2026-03-02', groupBy, filters: f };
            const reference = readsTagRollup(query) ? tagged : rows;
            expect(await s.spendReport(query), JSON.stringify(query)).toEqual(
              aggregateRollup(reference, query),
            );
          }
        }
      };
      await matchesReference();
      const repeat: Partial<SpendLogRecord> = { ...calls[0]![2], status: 'failure' };
      calls.push(['f', 11, repeat]);
      await s.settle({
        reservationId: 'f',
        scopes: [],
        costNano: 11,
        now: T0,
        log: log('f', { spendNano: 11, ...repeat }),
      });
      await matchesReference();
      await s.close();
    });

    it('keeps a soft budget with the counter and returns it with every state', async () => {
      const s = await seeded({ key: { ...budget(1), softBudgetNano: 500_000_000 } });
      const [state] = await s.getBudgets([K, U], T0);
      expect(state).toMatchObject({ scope: K, maxBudgetNano: 1e9, softBudgetNano: 500_000_000 });
      const reserved = await s.reserve({
        reservationId: 'r1',
        scopes: [K, U],
        amountNano: 10,
        now: T0,
        expiresAt: T0,
      });
      expect(reserved.ok && reserved.states.map((st) => st.softBudgetNano)).toEqual([500_000_000, null]);
      const settled = await s.settle({
        reservationId: 'r1',
        scopes: [K, U],
        costNano: 5,
        now: T0,
        log: log('s-1'),
      });
      expect(settled.states.map((st) => st.softBudgetNano)).toEqual([500_000_000, null]);
      await s.updateKey('k1', {}, { softBudgetNano: 700_000_000 });
      expect((await s.getBudgets([K], T0))[0]).toMatchObject({ softBudgetNano: 700_000_000, spendNano: 5 });
      await s.close();
    });

    it('claims each alert once per scope, period and threshold, also across instances', async () => {
      const s = await seeded();
      const period = '2026-03-11T00:00:00.000Z';
      const claim = (over: { scope?: ScopeRef; period?: string; threshold?: string } = {}) =>
        s.claimAlert({
          scope: K,
          period,
          threshold: '50%',
          now: T0,
          expiresAt: new Date(period),
          ...over,
        });
      expect(await claim()).toBe(true);
      expect(await claim()).toBe(false);
      expect(await claim({ threshold: '80%' })).toBe(true);
      expect(await claim({ period: '2026-03-12T00:00:00.000Z' })).toBe(true);
      expect(await claim({ scope: T })).toBe(true);
      expect(
        await s.claimAlert({ scope: U, period: '', threshold: 'soft_budget', now: T0, expiresAt: null }),
      ).toBe(true);
      const other = options.sibling ? await options.sibling(s) : s;
      expect(await other.claimAlert({ scope: K, period, threshold: '50%', now: T0, expiresAt: null })).toBe(
        false,
      );
      const racing = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          (i % 2 ? s : other).claimAlert({ scope: K, period, threshold: '95%', now: T0, expiresAt: null }),
        ),
      );
      expect(racing.filter(Boolean)).toHaveLength(1);
      if (other !== s) await other.close();
      await s.close();
    });
  });
}
