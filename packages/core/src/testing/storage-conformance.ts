import { describe, expect, it } from 'vitest';
import { StorageConflictError } from '../errors.js';
import {
  type BudgetInit,
  type BudgetTierRecord,
  type CustomerRecord,
  type KeyRecord,
  type MemberRecord,
  memberScopeId,
  modelScopeId,
  type PendingCall,
  type RateBucket,
  type RateLimits,
  type ScopeRef,
  type SpendDimension,
  type SpendLogRecord,
  type SpendReportFilters,
  type SpendReportQuery,
  type SpendReportRow,
  type SpendStorage,
  spendReportField,
  type TagRecord,
  type TeamRecord,
  type UserRecord,
  windowScopeId,
} from '../storage/storage-contract.js';
import { canonicalRows, referenceReport } from './reference-report.js';

/** Reads what a backend really stored, bypassing its public methods. */
export interface RawStorageReader {
  budgetCounter(scope: ScopeRef): Promise<{ spendNano: number; reservedNano: number } | null>;
  spendLogCount(): Promise<number>;
  openReservations(): Promise<number>;
  /** What a rate bucket's stored window counted (whether or not that window has ended); `null`: no row. */
  rateCounter(bucket: Pick<RateBucket, 'scope' | 'metric' | 'model'>): Promise<number | null>;
  /** Parallel-request leases stored (expired ones not yet pruned included). */
  rateLeases(): Promise<number>;
  /** Dashboard sessions stored (expired ones not yet deleted included). */
  dashboardSessions(): Promise<number>;
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
  /**
   * Makes every later write (insert or update) of this scope's budget counter fail inside whatever
   * transaction makes it, as a database failing midway would: a trigger on a SQL backend, a hook on
   * MemoryStorage's map. The cases that need a write to fail midway inject their failure with it, so
   * they run on every backend.
   */
  failCounterWrites: (storage: SpendStorage, scope: ScopeRef) => Promise<void>;
  /**
   * The store refuses amounts that are not whole nano-dollars (a SQL integer column does): then the
   * case checking that `isInputError` blames the input for such a refusal, and that nothing of it is
   * written, runs.
   */
  refusesFractionalNano?: boolean;
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
    budgetId: null,
  };
}
export function customerRecord(id: string): CustomerRecord {
  return {
    endUserId: id,
    alias: null,
    blocked: false,
    metadata: { plan: 'pro' },
    createdAt: T0,
    budgetId: null,
  };
}
export function tierRecord(budgetId: string, over: Partial<BudgetTierRecord>): BudgetTierRecord {
  return {
    budgetId,
    maxBudgetNano: null,
    softBudgetNano: null,
    budgetDuration: null,
    rpmLimit: null,
    tpmLimit: null,
    maxParallelRequests: null,
    createdAt: T0,
    updatedAt: T0,
    ...over,
  };
}
export function tagRecord(name: string): TagRecord {
  return { name, description: null, metadata: {}, createdAt: T0 };
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
/** A call's attribution as the core gives it to `reserve` and `setLease`: key k1 of user u1 in team t1. */
function pendingCall(requestId: string, over: Partial<PendingCall> = {}): PendingCall {
  return {
    requestId,
    callType: 'acompletion',
    apiKeyHash: 'k1',
    model: 'gpt-4o',
    userId: 'u1',
    teamId: 't1',
    endUser: null,
    tags: [],
    startTime: T0,
    ...over,
  };
}

/** A spend log of one gpt-4o call by key k1 of user u1 in team t1, for storage tests; `over` changes any field. */
export function spendLogFixture(requestId: string, over: Partial<SpendLogRecord> = {}): SpendLogRecord {
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
    responseId: null,
    ...over,
  };
}

const K: ScopeRef = { kind: 'key', id: 'k1' };
const U: ScopeRef = { kind: 'user', id: 'u1' };
const T: ScopeRef = { kind: 'team', id: 't1' };

/**
 * The conformance suite every storage backend runs unchanged (`@spendguard/core/conformance`).
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

    it('skips optional scopes without a counter, and reserves and charges those with one', async () => {
      const s = await seeded();
      const tagA: ScopeRef = { kind: 'tag', id: 'feature:a' };
      const tagB: ScopeRef = { kind: 'tag', id: 'feature:b' };
      const customer: ScopeRef = { kind: 'customer', id: 'acme' };
      const global: ScopeRef = { kind: 'global', id: 'global' };
      await s.insert([
        { type: 'tag', record: tagRecord('feature:a'), budget: budget(1) },
        { type: 'customer', record: customerRecord('acme'), budget: budget(2) },
      ]);
      const scopes = [K, U, T, tagA, tagB, customer, global];
      const reserved = await s.reserve({
        reservationId: 'r1',
        scopes,
        amountNano: 300_000_000,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      expect(reserved.ok).toBe(true);
      if (!reserved.ok) return;
      // Only the scopes with a counter are in the answer, and only they hold the reservation.
      expect(reserved.states.map((st) => st.scope)).toEqual([K, U, T, tagA, customer]);
      expect(await raw(s).budgetCounter(tagA)).toEqual({ spendNano: 0, reservedNano: 300_000_000 });
      expect(await raw(s).budgetCounter(tagB)).toBeNull();
      const settled = await s.settle({
        reservationId: 'r1',
        scopes,
        costNano: 200_000_000,
        now: T0,
        log: spendLogFixture('q1', {
          spendNano: 200_000_000,
          tags: ['feature:a', 'feature:b'],
          endUser: 'acme',
        }),
      });
      expect(settled.states.map((st) => [st.scope.id, st.spendNano, st.reservedNano])).toEqual([
        ['k1', 200_000_000, 0],
        ['u1', 200_000_000, 0],
        ['t1', 200_000_000, 0],
        ['feature:a', 200_000_000, 0],
        ['acme', 200_000_000, 0],
      ]);
      // The tag's cap refuses, naming the tag.
      const refused = await s.reserve({
        reservationId: 'r2',
        scopes,
        amountNano: 900_000_000,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      expect(refused.ok).toBe(false);
      if (!refused.ok) expect(refused.refused.scope).toEqual(tagA);
      // A key, user or team without a counter is still an error.
      await expect(
        s.reserve({
          reservationId: 'r3',
          scopes: [{ kind: 'key', id: 'nope' }],
          amountNano: 1,
          now: T0,
          expiresAt: new Date(T0.getTime() + 60_000),
        }),
      ).rejects.toThrow(/no budget counter/);
      expect(await raw(s).openReservations()).toBe(0);
      await s.close();
    });

    it('charges an expired reservation only on the optional scopes that had a counter', async () => {
      const s = await seeded();
      const tagA: ScopeRef = { kind: 'tag', id: 'feature:a' };
      await s.insert([{ type: 'tag', record: tagRecord('feature:a'), budget: budget(1) }]);
      await s.reserve({
        reservationId: 'r1',
        scopes: [K, tagA, { kind: 'customer', id: 'nobody' }],
        amountNano: 100,
        now: T0,
        expiresAt: new Date(T0.getTime() + 1_000),
      });
      expect(await s.expireReservations(new Date(T0.getTime() + 2_000))).toBe(1);
      expect(await raw(s).budgetCounter(tagA)).toEqual({ spendNano: 100, reservedNano: 0 });
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 100, reservedNano: 0 });
      await s.close();
    });

    it('lists customers by id in code-unit order', async () => {
      const s = await create();
      expect(await s.listCustomers()).toEqual([]);
      await s.insert([
        { type: 'customer', record: customerRecord('globex'), budget: budget(null) },
        { type: 'customer', record: customerRecord('Acme'), budget: budget(1) },
        { type: 'customer', record: customerRecord('acme'), budget: budget(null) },
      ]);
      // Code-unit order: upper case before lower case, whatever the database's collation.
      expect(await s.listCustomers()).toEqual([
        customerRecord('Acme'),
        customerRecord('acme'),
        customerRecord('globex'),
      ]);
      await s.deleteScopes([{ kind: 'customer', id: 'acme' }]);
      expect((await s.listCustomers()).map((c) => c.endUserId)).toEqual(['Acme', 'globex']);
      await s.close();
    });

    it('stores customers and tags, changes and deletes them with their counters', async () => {
      const s = await create();
      await s.insert([
        {
          type: 'customer',
          record: customerRecord('acme'),
          budget: budget(2, '1d', new Date('2026-03-11T00:00:00Z')),
        },
        { type: 'tag', record: tagRecord('env:prod'), budget: budget(null) },
        { type: 'tag', record: tagRecord('env:dev'), budget: budget(3) },
        { type: 'budget', scope: { kind: 'model', id: 'k1:gpt-4o' }, budget: budget(1) },
      ]);
      expect(await s.getCustomer('acme')).toEqual(customerRecord('acme'));
      expect(await s.getCustomer('nope')).toBeNull();
      expect(await s.getTag('env:prod')).toEqual(tagRecord('env:prod'));
      expect((await s.listTags()).map((t) => t.name)).toEqual(['env:dev', 'env:prod']);
      await expect(
        s.insert([{ type: 'tag', record: tagRecord('env:prod'), budget: budget(null) }]),
      ).rejects.toBeInstanceOf(StorageConflictError);
      await expect(
        s.insert([{ type: 'budget', scope: { kind: 'model', id: 'k1:gpt-4o' }, budget: budget(1) }]),
      ).rejects.toBeInstanceOf(StorageConflictError);

      expect(await s.updateCustomer('acme', { alias: 'Acme Inc', metadata: { tier: 'gold' } })).toEqual({
        ...customerRecord('acme'),
        alias: 'Acme Inc',
        metadata: { tier: 'gold' },
      });
      expect(await s.updateCustomer('nope', { alias: 'x' })).toBeNull();
      // `/customer/block`: the flag alone changes, and reads back.
      expect(await s.updateCustomer('acme', { blocked: true })).toMatchObject({
        blocked: true,
        alias: 'Acme Inc',
      });
      expect((await s.getCustomer('acme'))?.blocked).toBe(true);
      expect((await s.updateCustomer('acme', { blocked: false }))?.blocked).toBe(false);
      expect(await s.updateTag('env:dev', { description: 'dev traffic' })).toMatchObject({
        name: 'env:dev',
        description: 'dev traffic',
      });
      expect(await s.updateTag('nope', { description: 'x' })).toBeNull();

      const changed = await s.updateBudget({ kind: 'tag', id: 'env:dev' }, { maxBudgetNano: 7e9 }, T0);
      expect(changed).toMatchObject({ maxBudgetNano: 7e9, spendNano: 0 });
      expect(await s.updateBudget({ kind: 'tag', id: 'nope' }, { maxBudgetNano: 1 }, T0)).toBeNull();

      expect(
        await s.deleteScopes([
          { kind: 'customer', id: 'acme' },
          { kind: 'customer', id: 'nope' },
        ]),
      ).toBe(1);
      expect(await s.getCustomer('acme')).toBeNull();
      expect(await raw(s).budgetCounter({ kind: 'customer', id: 'acme' })).toBeNull();
      expect(await s.deleteScopes([{ kind: 'model', id: 'k1:gpt-4o' }])).toBe(1);
      await expect(s.deleteScopes([K])).rejects.toThrow(/cannot delete/);
      await s.close();
    });

    it('updates customers, tags and members with their budgets and rate limits in one transaction; deletes rate limits with their scopes', async () => {
      const s = await seeded();
      const acme: ScopeRef = { kind: 'customer', id: 'acme' };
      const dev: ScopeRef = { kind: 'tag', id: 'env:dev' };
      const member: ScopeRef = { kind: 'member', id: memberScopeId('t1', 'u1') };
      await s.insert([
        { type: 'customer', record: customerRecord('acme'), budget: budget(1) },
        { type: 'tag', record: tagRecord('env:dev'), budget: budget(3) },
      ]);
      const limits: RateLimits = {
        rpmLimit: 3,
        tpmLimit: null,
        maxParallelRequests: null,
        modelRpmLimit: {},
        modelTpmLimit: {},
      };
      const updated = await s.updateCustomer(
        'acme',
        { alias: 'Acme' },
        { maxBudgetNano: 4e9 },
        { now: T0, rateLimits: { scope: acme, limits } },
      );
      expect(updated?.alias).toBe('Acme');
      expect((await s.getBudgets([acme], T0))[0]?.maxBudgetNano).toBe(4e9);
      expect(await s.getRateLimits([acme])).toEqual([{ scope: acme, limits }]);
      // No such customer: its budget and rate limits are not written either.
      const ghost: ScopeRef = { kind: 'customer', id: 'ghost' };
      expect(
        await s.updateCustomer(
          'ghost',
          {},
          { maxBudgetNano: 1 },
          { now: T0, rateLimits: { scope: ghost, limits } },
        ),
      ).toBeNull();
      expect(await s.getRateLimits([ghost])).toEqual([]);

      expect(
        (await s.updateTag('env:dev', { description: 'dev' }, { maxBudgetNano: 9e9 }))?.description,
      ).toBe('dev');
      expect((await s.getBudgets([dev], T0))[0]?.maxBudgetNano).toBe(9e9);

      await s.insert([
        {
          type: 'member',
          record: { teamId: 't1', userId: 'u1', role: 'user', createdAt: T0 },
          budget: budget(null),
        },
      ]);
      const m = await s.updateMember(
        't1',
        'u1',
        { role: 'admin' },
        { maxBudgetNano: 2e9 },
        {
          now: T0,
          rateLimits: { scope: member, limits },
        },
      );
      expect(m?.role).toBe('admin');
      expect(await s.getRateLimits([member])).toEqual([{ scope: member, limits }]);
      expect((await s.getBudgets([member], T0))[0]?.maxBudgetNano).toBe(2e9);

      // Deleting a scope takes its rate limits with it.
      expect(await s.deleteScopes([acme])).toBe(1);
      expect(await s.getRateLimits([acme])).toEqual([]);
      await s.close();
    });

    it('links customers to a budget tier: each spends its own counter under the tier limits, changed with the tier at once', async () => {
      const s = await create();
      await s.insertBudgetTier(tierRecord('free', { maxBudgetNano: 4e9, budgetDuration: '1d', rpmLimit: 2 }));
      const a: ScopeRef = { kind: 'customer', id: 'a' };
      const b: ScopeRef = { kind: 'customer', id: 'b' };
      // The customers' own budget (100 USD) gives way to the tier's: a linked counter is the tier's.
      await s.insert([
        { type: 'customer', record: { ...customerRecord('a'), budgetId: 'free' }, budget: budget(100) },
        { type: 'customer', record: { ...customerRecord('b'), budgetId: 'free' }, budget: budget(100) },
      ]);
      expect(await s.getCustomer('a')).toEqual({ ...customerRecord('a'), budgetId: 'free' });
      const midnight = new Date('2026-03-11T00:00:00.000Z'); // T0 is 2026-03-10 12:00 UTC
      for (const state of await s.getBudgets([a, b], T0)) {
        expect(state).toMatchObject({ maxBudgetNano: 4e9, budgetDuration: '1d', budgetResetAt: midnight });
      }
      const rpm2: RateLimits = {
        rpmLimit: 2,
        tpmLimit: null,
        maxParallelRequests: null,
        modelRpmLimit: {},
        modelTpmLimit: {},
      };
      expect(await s.getRateLimits([a, b])).toEqual([
        { scope: a, limits: rpm2 },
        { scope: b, limits: rpm2 },
      ]);
      // Each end user spends against its own counter.
      await s.resetSpend(a, 3e9, T0);
      expect(await raw(s).budgetCounter(a)).toEqual({ spendNano: 3e9, reservedNano: 0 });
      expect(await raw(s).budgetCounter(b)).toEqual({ spendNano: 0, reservedNano: 0 });

      // The tier lowered to 2 USD: both counters at once, spend kept, the daily schedule kept.
      const t1 = new Date(T0.getTime() + 3_600_000);
      const changed = await s.updateBudgetTier(
        'free',
        { maxBudgetNano: 2e9, rpmLimit: null, tpmLimit: 100 },
        t1,
      );
      expect(changed).toEqual(
        tierRecord('free', { maxBudgetNano: 2e9, budgetDuration: '1d', tpmLimit: 100, updatedAt: t1 }),
      );
      expect(await s.getBudgetTier('free')).toEqual(changed);
      const [sa, sb] = await s.getBudgets([a, b], t1);
      expect(sa).toMatchObject({ maxBudgetNano: 2e9, spendNano: 3e9, budgetResetAt: midnight });
      expect(sb).toMatchObject({ maxBudgetNano: 2e9, spendNano: 0, budgetResetAt: midnight });
      const tpm100 = { ...rpm2, rpmLimit: null, tpmLimit: 100 };
      expect(await s.getRateLimits([a, b])).toEqual([
        { scope: a, limits: tpm100 },
        { scope: b, limits: tpm100 },
      ]);
      const hold = (id: string, scope: ScopeRef, amountNano: number) =>
        s.reserve({
          reservationId: id,
          scopes: [scope],
          amountNano,
          now: t1,
          expiresAt: new Date(t1.getTime() + 60_000),
        });
      expect((await hold('r-a', a, 1)).ok).toBe(false); // 3 USD spent, 2 USD cap
      expect((await hold('r-b', b, 2e9)).ok).toBe(true); // exactly the cap
      expect((await hold('r-b2', b, 1)).ok).toBe(false);

      // A new duration restarts the schedule from the change: 7d resets on Monday 2026-03-16.
      await s.updateBudgetTier('free', { budgetDuration: '7d' }, t1);
      expect((await s.getBudgets([a], t1))[0]).toMatchObject({
        budgetDuration: '7d',
        budgetResetAt: new Date('2026-03-16T00:00:00.000Z'),
      });
      expect(await s.updateBudgetTier('nope', { maxBudgetNano: 1 }, t1)).toBeNull();
      await s.close();
    });

    it('links keys to a budget tier as end users: the tier limits on the key counter, changed with the tier, a linked tier kept', async () => {
      const s = await create();
      await s.insertBudgetTier(
        tierRecord('team-tier', { maxBudgetNano: 4e9, budgetDuration: '1d', rpmLimit: 2 }),
      );
      const k1: ScopeRef = { kind: 'key', id: 'k1' };
      const k2: ScopeRef = { kind: 'key', id: 'k2' };
      // A key inserted on a missing tier: nothing written.
      await expect(
        s.insert([
          { type: 'key', record: { ...key('k0', null, null), budgetId: 'nope' }, budget: budget(1) },
        ]),
      ).rejects.toThrow(/budget_id 'nope'/);
      expect(await s.getKey('k0')).toBeNull();
      // The key's own budget (100 USD) gives way to the tier's.
      await s.insert([
        { type: 'key', record: { ...key('k1', null, null), budgetId: 'team-tier' }, budget: budget(100) },
        { type: 'key', record: key('k2', null, null), budget: budget(100) },
      ]);
      expect(await s.getKey('k1')).toEqual({ ...key('k1', null, null), budgetId: 'team-tier' });
      const midnight = new Date('2026-03-11T00:00:00.000Z'); // T0 is 2026-03-10 12:00 UTC
      expect((await s.getBudgets([k1], T0))[0]).toMatchObject({
        maxBudgetNano: 4e9,
        budgetDuration: '1d',
        budgetResetAt: midnight,
      });
      const rpm2: RateLimits = {
        rpmLimit: 2,
        tpmLimit: null,
        maxParallelRequests: null,
        modelRpmLimit: {},
        modelTpmLimit: {},
      };
      expect(await s.getRateLimits([k1, k2])).toEqual([{ scope: k1, limits: rpm2 }]);

      // k2 linked by an update; a link to a missing tier changes nothing, the alias sent with it included.
      await expect(
        s.updateKey('k2', { keyAlias: 'two', budgetId: 'nope' }, undefined, { now: T0 }),
      ).rejects.toThrow(/budget_id 'nope'/);
      expect(await s.getKey('k2')).toEqual(key('k2', null, null));
      expect((await s.getBudgets([k2], T0))[0]?.maxBudgetNano).toBe(100e9);
      await s.updateKey('k2', { budgetId: 'team-tier' }, undefined, { now: T0 });
      expect((await s.getBudgets([k2], T0))[0]).toMatchObject({
        maxBudgetNano: 4e9,
        budgetResetAt: midnight,
      });

      // The tier lowered to 2 USD, its rpm limit dropped for a tpm limit: both keys at once, spend kept.
      await s.resetSpend(k1, 3e9, T0);
      const t1 = new Date(T0.getTime() + 3_600_000);
      await s.updateBudgetTier('team-tier', { maxBudgetNano: 2e9, rpmLimit: null, tpmLimit: 100 }, t1);
      const [s1, s2] = await s.getBudgets([k1, k2], t1);
      expect(s1).toMatchObject({ maxBudgetNano: 2e9, spendNano: 3e9, budgetResetAt: midnight });
      expect(s2).toMatchObject({ maxBudgetNano: 2e9, spendNano: 0, budgetResetAt: midnight });
      const tpm100 = { ...rpm2, rpmLimit: null, tpmLimit: 100 };
      expect(await s.getRateLimits([k1, k2])).toEqual([
        { scope: k1, limits: tpm100 },
        { scope: k2, limits: tpm100 },
      ]);
      // An update of a linked key's own budget gives way to the tier's.
      await s.updateKey('k1', { keyAlias: 'one' }, { maxBudgetNano: 50e9 }, { now: t1 });
      expect((await s.getBudgets([k1], t1))[0]?.maxBudgetNano).toBe(2e9);

      // Linked keys keep the tier from being deleted; unlinked, a key keeps the tier's limits as its own.
      expect(await s.deleteBudgetTier('team-tier')).toEqual({ found: true, linked: 2 });
      await s.updateKey('k1', { budgetId: null }, undefined, { now: t1 });
      await s.updateKey('k2', { budgetId: null }, undefined, { now: t1 });
      await s.updateBudgetTier('team-tier', { maxBudgetNano: 9e9 }, t1);
      expect((await s.getBudgets([k1], t1))[0]?.maxBudgetNano).toBe(2e9);
      expect((await s.getKey('k1'))?.budgetId).toBeNull();
      expect(await s.deleteBudgetTier('team-tier')).toEqual({ found: true, linked: 0 });
      await s.close();
    });

    it('refuses a link to a missing tier, writing nothing; relinks, unlinks; deletes a tier only when nothing links to it', async () => {
      const s = await create();
      const c: ScopeRef = { kind: 'customer', id: 'c' };
      await expect(
        s.insert([
          { type: 'customer', record: { ...customerRecord('c'), budgetId: 'nope' }, budget: budget(1) },
        ]),
      ).rejects.toThrow(/budget_id 'nope'/);
      expect(await s.getCustomer('c')).toBeNull();
      expect(await raw(s).budgetCounter(c)).toBeNull();

      await s.insertBudgetTier(tierRecord('gold', { maxBudgetNano: 50e9 }));
      await s.insertBudgetTier(tierRecord('Bronze', { maxBudgetNano: 1e9, maxParallelRequests: 1 }));
      await expect(s.insertBudgetTier(tierRecord('gold', {}))).rejects.toBeInstanceOf(StorageConflictError);
      expect((await s.listBudgetTiers()).map((t) => t.budgetId)).toEqual(['Bronze', 'gold']);

      await s.insert([
        { type: 'customer', record: { ...customerRecord('c'), budgetId: 'gold' }, budget: budget(null) },
      ]);
      expect(await s.deleteBudgetTier('gold')).toEqual({ found: true, linked: 1 });
      expect(await s.getBudgetTier('gold')).not.toBeNull();

      // A link to a missing tier changes nothing, the alias sent with it included.
      await expect(
        s.updateCustomer('c', { alias: 'C', budgetId: 'nope' }, undefined, { now: T0 }),
      ).rejects.toThrow(/budget_id 'nope'/);
      expect(await s.getCustomer('c')).toEqual({ ...customerRecord('c'), budgetId: 'gold' });

      // Relinked: the other tier's limits.
      await s.updateCustomer('c', { budgetId: 'Bronze' }, undefined, { now: T0 });
      expect((await s.getBudgets([c], T0))[0]?.maxBudgetNano).toBe(1e9);
      expect((await s.getRateLimits([c]))[0]?.limits.maxParallelRequests).toBe(1);
      // Unlinked: it keeps those limits as its own, and the tier's changes no longer reach it.
      await s.updateCustomer('c', { budgetId: null }, undefined, { now: T0 });
      await s.updateBudgetTier('Bronze', { maxBudgetNano: 7e9 }, T0);
      expect((await s.getBudgets([c], T0))[0]?.maxBudgetNano).toBe(1e9);
      expect((await s.getCustomer('c'))?.budgetId).toBeNull();

      expect(await s.deleteBudgetTier('gold')).toEqual({ found: true, linked: 0 });
      expect(await s.getBudgetTier('gold')).toBeNull();
      expect(await s.deleteBudgetTier('gold')).toEqual({ found: false, linked: 0 });

      // A linked end user's own budget and rate limits sent in an update give way to its tier's.
      const e: ScopeRef = { kind: 'customer', id: 'e' };
      await s.insert([
        { type: 'customer', record: { ...customerRecord('e'), budgetId: 'Bronze' }, budget: budget(null) },
      ]);
      const rpm9: RateLimits = {
        rpmLimit: 9,
        tpmLimit: null,
        maxParallelRequests: null,
        modelRpmLimit: {},
        modelTpmLimit: {},
      };
      await s.updateCustomer(
        'e',
        { alias: 'E' },
        { maxBudgetNano: 99e9 },
        { now: T0, rateLimits: { scope: e, limits: rpm9 } },
      );
      expect((await s.getBudgets([e], T0))[0]?.maxBudgetNano).toBe(7e9);
      expect((await s.getRateLimits([e]))[0]?.limits).toMatchObject({
        rpmLimit: null,
        maxParallelRequests: 1,
      });
      expect((await s.getCustomer('e'))?.alias).toBe('E');

      // An end user created by /customer/block joins the tier named (a missing one: nothing written).
      const created = { createdAt: T0, budget: budget(null), budgetId: 'Bronze' };
      await s.blockCustomers(['d'], true, created);
      expect(await s.getCustomer('d')).toMatchObject({ blocked: true, budgetId: 'Bronze' });
      expect((await s.getBudgets([{ kind: 'customer', id: 'd' }], T0))[0]?.maxBudgetNano).toBe(7e9);
      expect((await s.getRateLimits([{ kind: 'customer', id: 'd' }]))[0]?.limits.maxParallelRequests).toBe(1);
      await expect(s.blockCustomers(['f'], true, { ...created, budgetId: 'nope' })).rejects.toThrow(
        /budget_id 'nope'/,
      );
      expect(await s.getCustomer('f')).toBeNull();
      await s.close();
    });

    it('blocks and unblocks customers together, creating the ones blocking names first', async () => {
      const s = await seeded();
      await s.insert([{ type: 'customer', record: customerRecord('acme'), budget: budget(1) }]);
      const created = { createdAt: T0, budget: budget(null) };
      await s.blockCustomers(['acme', 'newco'], true, created);
      expect((await s.getCustomer('acme'))?.blocked).toBe(true);
      expect(await s.getCustomer('newco')).toEqual({
        endUserId: 'newco',
        alias: null,
        blocked: true,
        metadata: {},
        createdAt: T0,
        budgetId: null,
      });
      expect(await raw(s).budgetCounter({ kind: 'customer', id: 'newco' })).toEqual({
        spendNano: 0,
        reservedNano: 0,
      });
      // Unblocking one not stored creates nothing.
      await s.blockCustomers(['acme', 'newco', 'unknown'], false, created);
      expect((await s.getCustomer('acme'))?.blocked).toBe(false);
      expect((await s.getCustomer('newco'))?.blocked).toBe(false);
      expect(await s.getCustomer('unknown')).toBeNull();
      // A creation that fails midway (its counter's write fails) leaves the ids before it unchanged.
      await options.failCounterWrites(s, { kind: 'customer', id: 'broken' });
      await expect(s.blockCustomers(['acme', 'broken'], true, created)).rejects.toThrow();
      expect((await s.getCustomer('acme'))?.blocked).toBe(false);
      expect(await s.getCustomer('broken')).toBeNull();
      await s.close();
    });

    it("lists an owner's budget windows, and only its own", async () => {
      const s = await seeded();
      const window = (owner: ScopeRef, d: string): ScopeRef => ({
        kind: 'window',
        id: `${owner.kind}:${owner.id}@${d}`,
      });
      const lookalike: ScopeRef = { kind: 'user', id: 'u1@x' };
      await s.insert([
        { type: 'budget', scope: window(K, '1d'), budget: budget(1, '1d', new Date('2026-03-11T00:00:00Z')) },
        { type: 'budget', scope: window(K, '30d'), budget: budget(5) },
        { type: 'budget', scope: window(U, '7d'), budget: budget(2) },
        { type: 'budget', scope: window(lookalike, '1d'), budget: budget(2) },
      ]);
      expect((await s.listWindows([K], T0)).map((w) => w.scope.id)).toEqual(['key:k1@1d', 'key:k1@30d']);
      expect((await s.listWindows([U], T0)).map((w) => w.scope.id)).toEqual(['user:u1@7d']);
      expect((await s.listWindows([K, U, T], T0)).map((w) => w.scope.id)).toEqual([
        'key:k1@1d',
        'key:k1@30d',
        'user:u1@7d',
      ]);
      expect(await s.listWindows([T], T0)).toEqual([]);
      expect(await s.listWindows([], T0)).toEqual([]);
      // Windows are reserved with their owner like any optional scope, and reset on their own period.
      const r = await s.reserve({
        reservationId: 'r1',
        scopes: [K, window(K, '1d'), window(K, '30d')],
        amountNano: 600_000_000,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      expect(r.ok).toBe(true);
      const next = await s.reserve({
        reservationId: 'r2',
        scopes: [K, window(K, '1d'), window(K, '30d')],
        amountNano: 600_000_000,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      expect(next.ok).toBe(false);
      if (!next.ok) expect(next.refused.scope).toEqual(window(K, '1d'));
      await s.close();
    });

    it('resets a spend by hand, keeping its reservations', async () => {
      const s = await seeded({ key: budget(1) });
      await s.reserve({
        reservationId: 'r1',
        scopes: [K],
        amountNano: 400_000_000,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      await s.settle({
        reservationId: 'r1',
        scopes: [K],
        costNano: 400_000_000,
        now: T0,
        log: spendLogFixture('q1', { spendNano: 400_000_000 }),
      });
      await s.reserve({
        reservationId: 'r2',
        scopes: [K],
        amountNano: 100,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      expect(await s.resetSpend(K, 0, T0)).toMatchObject({ spendNano: 0, reservedNano: 100 });
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: 100 });
      expect(await s.resetSpend({ kind: 'tag', id: 'nope' }, 0, T0)).toBeNull();
      // The spend log stays: a reset changes the budget period's count, not the history.
      expect(await raw(s).spendLogCount()).toBe(1);
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
        log: spendLogFixture('req-1', { spendNano: 123_456_789, tags: ['a', 'b'] }),
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
        log: spendLogFixture('req-1'),
      });
      expect(again.applied).toBe(false);
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 123_456_789, reservedNano: 0 });
      expect(await raw(s).spendLogCount()).toBe(1);
      expect(await raw(s).openReservations()).toBe(0);
      const [stored] = await s.querySpendLogs({ requestId: 'req-1' });
      expect(stored).toEqual(spendLogFixture('req-1', { spendNano: 123_456_789, tags: ['a', 'b'] }));
      await s.close();
    });

    it('settles on scopes beyond those reserved: charges them without touching what they hold (a team key on its user)', async () => {
      // The user's budget (1 nano-dollar) could take no reservation: it is charged, never checked.
      const s = await seeded({ key: budget(1), user: { ...NO_BUDGET, maxBudgetNano: 1 } });
      const held = await s.reserve({
        reservationId: 'r-k',
        scopes: [K, T],
        amountNano: 500,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      expect(held.ok).toBe(true);
      const other = await s.reserve({
        reservationId: 'r-u',
        scopes: [U],
        amountNano: 7,
        now: T0,
        expiresAt: new Date(T0.getTime() + 60_000),
      });
      expect(other.ok).toBe(false); // 7 > 1: U was never holding anything
      await s.settle({
        reservationId: 'r-k',
        scopes: [K, T, U],
        costNano: 300,
        now: T0,
        log: spendLogFixture('req-k', { spendNano: 300 }),
      });
      for (const scope of [K, T, U]) {
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 300, reservedNano: 0 });
      }
      expect(await raw(s).openReservations()).toBe(0);
      await s.close();
    });

    it('keeps large nano-dollar amounts exact', async () => {
      const s = await seeded({ team: { ...NO_BUDGET, maxBudgetNano: 9_000_000_000_000_000 } });
      await s.settle({
        reservationId: 'none',
        scopes: [T],
        costNano: 8_999_999_999_999_999,
        now: T0,
        log: spendLogFixture('big'),
      });
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 8_999_999_999_999_999, reservedNano: 0 });
      await s.close();
    });

    it('resets a period budget lazily at its first use after the reset time', async () => {
      const resetAt = new Date('2026-03-11T00:00:00.000Z');
      const s = await seeded({ key: budget(1, '1d', resetAt) });
      await s.settle({
        reservationId: 'x',
        scopes: [K],
        costNano: 900_000_000,
        now: T0,
        log: spendLogFixture('r-a'),
      });
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

    it('releases the reserved scopes that a settle does not charge', async () => {
      const s = await seeded();
      await s.reserve({ reservationId: 'r1', scopes: [K, U, T], amountNano: 500, now: T0, expiresAt: T0 });
      await s.reserve({ reservationId: 'r2', scopes: [K, U, T], amountNano: 70, now: T0, expiresAt: T0 });
      await Promise.all([
        s.settle({ reservationId: 'r1', scopes: [K], costNano: 300, now: T0, log: spendLogFixture('q1') }),
        s.settle({ reservationId: 'r2', scopes: [U], costNano: 20, now: T0, log: spendLogFixture('q2') }),
      ]);
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 300, reservedNano: 0 });
      expect(await raw(s).budgetCounter(U)).toEqual({ spendNano: 20, reservedNano: 0 });
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 0, reservedNano: 0 });
      await s.close();
    });

    it('applies concurrent reserves and settles as if one after another; a failing one fails alone', async () => {
      // Backends may write concurrent calls together (one transaction, summed counter and rollup
      // writes): the outcome must be what the same calls would leave one at a time.
      const n = options.concurrency ?? 60;
      const s = await seeded({ key: budget(1) });
      await s.reserve({ reservationId: 'taken', scopes: [K], amountNano: 1, now: T0, expiresAt: T0 });
      const reserves = await Promise.allSettled(
        Array.from({ length: n }, (_, i) =>
          s.reserve({
            reservationId: i === 7 ? 'taken' : `m${i}`,
            scopes: [K, U, T],
            amountNano: 30_000_000, // 33 of them fit the key's $1 (after the 1 nano taken)
            now: T0,
            expiresAt: T0,
          }),
        ),
      );
      expect(reserves[7]?.status).toBe('rejected');
      const admitted = reserves.flatMap((r, i) => (r.status === 'fulfilled' && r.value.ok ? [i] : []));
      expect(admitted).toHaveLength(Math.min(33, n - 1));
      expect(await raw(s).budgetCounter(K)).toEqual({
        spendNano: 0,
        reservedNano: 1 + admitted.length * 30_000_000,
      });

      const day = (i: number) => new Date(Date.UTC(2026, 2, 1 + (i % 3), 10));
      const cost = (i: number) => 1_000 + i;
      const settles = await Promise.all(
        [...admitted, admitted[0]!].map((i, at) =>
          s.settle({
            reservationId: `m${i}`,
            scopes: [K, U, T],
            costNano: cost(i),
            now: T0,
            log: spendLogFixture(at === admitted.length ? `m${i}` : `m${i}`, {
              spendNano: cost(i),
              startTime: day(i),
              model: i % 2 ? 'gpt-4o' : 'gpt-4o-mini',
              tags: i % 4 === 0 ? ['even', 'four'] : i % 2 === 0 ? ['even'] : [],
            }),
          }),
        ),
      );
      expect(settles.filter((r) => r.applied)).toHaveLength(admitted.length); // the repeat applies once
      const total = admitted.reduce((sum, i) => sum + cost(i), 0);
      for (const scope of [K, U, T]) {
        expect(await raw(s).budgetCounter(scope)).toEqual({
          spendNano: total,
          reservedNano: scope === K ? 1 : 0,
        });
      }
      expect(await raw(s).openReservations()).toBe(1);
      expect(await raw(s).spendLogCount()).toBe(admitted.length);
      const expected = new Map<string, { requests: number; spendNano: number }>();
      for (const i of admitted) {
        const k = `${day(i).toISOString().slice(0, 10)} ${i % 2 ? 'gpt-4o' : 'gpt-4o-mini'}`;
        const e = expected.get(k) ?? { requests: 0, spendNano: 0 };
        expected.set(k, { requests: e.requests + 1, spendNano: e.spendNano + cost(i) });
      }
      const report = await s.spendReport({
        fromDay: '2026-03-01',
        toDay: '2026-03-31',
        groupBy: ['day', 'model'],
      });
      expect(
        new Map(report.map((r) => [`${r.day} ${r.model}`, { requests: r.requests, spendNano: r.spendNano }])),
      ).toEqual(expected);
      const tagged = (tag: string, pick: (i: number) => boolean) => {
        const rows = admitted.filter(pick);
        return { tag, requests: rows.length, spendNano: rows.reduce((sum, i) => sum + cost(i), 0) };
      };
      expect(await s.spendByTag({})).toEqual(
        [tagged('even', (i) => i % 2 === 0), tagged('four', (i) => i % 4 === 0)].sort(
          (a, b) => b.spendNano - a.spendNano,
        ),
      );
      await s.close();
    });

    it('prunes spend logs before a time, oldest first, and keeps the rollups exact', async () => {
      const s = await seeded();
      // Five calls on 1, 2, 3, 4 and 5 March, costing 1, 2, 3, 4 and 5 nano-dollars.
      for (let d = 1; d <= 5; d++) {
        const at = new Date(`2026-03-0${d}T10:00:00.000Z`);
        await s.settle({
          reservationId: `none-p${d}`,
          scopes: [K],
          costNano: d,
          now: at,
          log: spendLogFixture(`p${d}`, { spendNano: d, startTime: at, endTime: at, tags: ['kept'] }),
        });
      }
      const everything = { fromDay: '2026-03-01', toDay: '2026-03-31' };
      const before = await s.spendReport({ ...everything, groupBy: ['day', 'model'] });
      // Before 4 March, at most 2 per call: 1 and 2 March first, then 3 March.
      expect(await s.pruneSpendLogs(new Date('2026-03-04T00:00:00.000Z'), 2)).toBe(2);
      expect((await s.querySpendLogs({ limit: 10 })).map((l) => l.requestId)).toEqual(['p5', 'p4', 'p3']);
      expect(await s.pruneSpendLogs(new Date('2026-03-04T00:00:00.000Z'))).toBe(1);
      expect(await s.pruneSpendLogs(new Date('2026-03-04T00:00:00.000Z'))).toBe(0);
      expect((await s.querySpendLogs({ limit: 10 })).map((l) => l.requestId)).toEqual(['p5', 'p4']);
      expect(await raw(s).spendLogCount()).toBe(2);
      // The rollups (reports, the dashboard's totals) and the key's spend are as they were.
      expect(await s.spendReport({ ...everything, groupBy: ['day', 'model'] })).toEqual(before);
      expect(await s.spendReport({ ...everything, groupBy: [] })).toMatchObject([
        { requests: 5, spendNano: 15 },
      ]);
      expect(await s.spendByTag({})).toEqual([{ tag: 'kept', requests: 5, spendNano: 15 }]);
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 15, reservedNano: 0 });
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
        log: spendLogFixture('soft-1', { spendNano: 1e9 }),
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

    it("logs an expired reservation with its call's attribution, whatever it shares with the reservation", async () => {
      const s = await seeded({ key: budget(10) });
      const later = new Date(T0.getTime() + 60_000);
      const started = new Date(T0.getTime() - 1_500);
      // The request id is the reservation's (as the guard makes them), the key hash is not the key
      // scope's, and the call started before the reservation was made.
      const pending = {
        requestId: 'same-id',
        callType: 'acompletion_stream',
        apiKeyHash: 'another-key',
        model: 'gpt-4o-mini',
        userId: null,
        teamId: 't1',
        endUser: 'end-7',
        tags: [],
        startTime: started,
      };
      await s.reserve({
        reservationId: 'same-id',
        scopes: [K, U, T],
        amountNano: 40,
        now: T0,
        expiresAt: later,
        pending,
      });
      expect(await s.expireReservations(later)).toBe(1);
      const [logged] = await s.querySpendLogs({ requestId: 'same-id' });
      const { startTime, ...attribution } = pending;
      expect(logged).toMatchObject({ ...attribution, spendNano: 40 });
      expect(logged?.startTime.toISOString()).toBe(startTime.toISOString());
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 40, reservedNano: 0 });
      await s.close();
    });

    it("charges an expired reservation to its call's user as well when it did not hold the user (a team key)", async () => {
      const s = await seeded({ key: budget(10) });
      const later = new Date(T0.getTime() + 60_000);
      await s.reserve({
        reservationId: 'team-call',
        scopes: [K, T],
        amountNano: 40,
        now: T0,
        expiresAt: later,
        pending: pendingCall('team-call'),
      });
      expect(await s.expireReservations(later)).toBe(1);
      for (const scope of [K, T, U]) {
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 40, reservedNano: 0 });
      }
      await s.close();
    });

    it('charges reservations past their TTL at their estimate, flagged, once', async () => {
      const s = await seeded({ key: budget(10) });
      const later = new Date(T0.getTime() + 60_000);
      const pending = pendingCall('dead-1', { tags: ['prod'] });
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
        log: spendLogFixture('dead-1'),
      });
      expect(late.applied).toBe(false);
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 300, reservedNano: 0 });
      expect(await s.expireReservations(later)).toBe(0);
      await s.close();
    });

    it("charges the reservations of a process whose heartbeat stopped, flagged, once, and no one else's", async () => {
      const s = await seeded({ key: budget(10) });
      const ttl = new Date(T0.getTime() + 600_000);
      const at = (ms: number) => new Date(T0.getTime() + ms);
      const pending = pendingCall('call-a', { endUser: 'end-a', tags: ['prod'] });
      const reserve = (reservationId: string, scopes: ScopeRef[], amountNano: number, processId?: string) =>
        s.reserve({
          reservationId,
          scopes,
          amountNano,
          now: T0,
          expiresAt: ttl,
          processId,
          pending: undefined,
        });
      await s.heartbeat('proc-a', T0);
      await s.heartbeat('proc-b', T0);
      await s.reserve({
        reservationId: 'call-a',
        scopes: [K, U, T],
        amountNano: 300,
        now: T0,
        expiresAt: ttl,
        pending,
        processId: 'proc-a',
      });
      await reserve('ra-2', [K], 7, 'proc-a');
      await reserve('rb', [K], 50, 'proc-b');
      await reserve('rn', [K], 20); // no process: the TTL's
      await reserve('rx', [K], 10, 'proc-never-beat'); // the TTL's too
      // A parallel slot each (leases named after their process), and one of a process that never beat.
      const slot = (scope: ScopeRef) => ({ scope, metric: 'parallel' as const, model: '', limit: 1 });
      for (const [leaseId, scope] of [
        ['proc-a:1', K],
        ['proc-b:1', U],
        ['proc-never-beat:1', T],
      ] as const) {
        const lease = { leaseId, buckets: [slot(scope)], now: T0, windowMs: 60_000, leaseExpiresAt: ttl };
        expect((await s.acquireRate(lease)).ok).toBe(true);
      }
      await s.heartbeat('proc-b', at(5_000));

      // Nothing has beaten at or before a second before T0; proc-a alone at or before T0 + 1 s.
      expect(await s.settleDeadProcesses(at(-1), at(5_000))).toBe(0);
      expect(await s.settleDeadProcesses(at(1_000), at(5_000))).toBe(2);
      for (const scope of [U, T])
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 300, reservedNano: 0 });
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 307, reservedNano: 80 });
      expect(await raw(s).openReservations()).toBe(3);
      // proc-a's parallel slot is free again; the others' are still held.
      expect(await raw(s).rateLeases()).toBe(2);
      const again = (leaseId: string, scope: ScopeRef) =>
        s.acquireRate({
          leaseId,
          buckets: [slot(scope)],
          now: at(5_000),
          windowMs: 60_000,
          leaseExpiresAt: ttl,
        });
      expect((await again('proc-c:1', K)).ok).toBe(true);
      expect((await again('proc-c:2', U)).ok).toBe(false);
      expect((await again('proc-c:3', T)).ok).toBe(false);
      const [logged] = await s.querySpendLogs({ requestId: 'call-a' });
      const { startTime, ...attribution } = pending;
      expect(logged).toMatchObject({
        ...attribution,
        spendNano: 300,
        estimated: true,
        status: 'failure',
        metadata: { expired_reservation: true, process_died: 'proc-a' },
      });
      expect(logged?.startTime.toISOString()).toBe(startTime.toISOString());
      expect(logged?.endTime.toISOString()).toBe(at(5_000).toISOString());
      const [unattributed] = await s.querySpendLogs({ requestId: 'ra-2' });
      expect(unattributed).toMatchObject({ spendNano: 7, metadata: { process_died: 'proc-a' } });
      expect(await s.spendByTag({})).toEqual([{ tag: 'prod', requests: 1, spendNano: 300 }]);

      // Once: a second sweep charges nothing, and the process's late settle applies nothing.
      expect(await s.settleDeadProcesses(at(1_000), at(6_000))).toBe(0);
      const late = await s.settle({
        reservationId: 'call-a',
        scopes: [K, U, T],
        costNano: 120,
        now: at(6_000),
        log: spendLogFixture('call-a'),
      });
      expect(late.applied).toBe(false);
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 300, reservedNano: 0 });
      // A process that beats again after it was given up on holds its new reservations again.
      await s.heartbeat('proc-a', at(7_000));
      await reserve('ra-3', [K], 5, 'proc-a');
      expect(await s.settleDeadProcesses(at(4_000), at(8_000))).toBe(0);
      // Both stop beating: their reservations go; the unowned ones stay for the TTL.
      expect(await s.settleDeadProcesses(at(7_500), at(9_000))).toBe(2);
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 362, reservedNano: 30 });
      expect(await raw(s).openReservations()).toBe(2);
      expect(await s.expireReservations(ttl)).toBe(2);
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 392, reservedNano: 0 });
      await s.close();
    });

    it('leaves every linked counter at the final tier limits when tier changes and links race from two instances', async () => {
      const s = await create();
      const other = options.sibling ? await options.sibling(s) : s;
      await s.insertBudgetTier(tierRecord('race', { maxBudgetNano: 1 }));
      const n = 48;
      // Links from one instance, tier changes (1, 2, ... 24 USD, the last one 24) from the other, at once.
      await Promise.all([
        ...Array.from({ length: n }, (_, i) =>
          other.insert([
            {
              type: 'customer',
              record: { ...customerRecord(`c${i}`), budgetId: 'race' },
              budget: budget(null),
            },
          ]),
        ),
        (async () => {
          for (let usd = 1; usd <= 24; usd++)
            await s.updateBudgetTier('race', { maxBudgetNano: usd * 1e9 }, T0);
        })(),
      ]);
      const scopes = Array.from({ length: n }, (_, i): ScopeRef => ({ kind: 'customer', id: `c${i}` }));
      const states = await s.getBudgets(scopes, T0);
      expect(states.map((st) => st.maxBudgetNano)).toEqual(Array.from({ length: n }, () => 24e9));
      if (other !== s) await other.close();
      await s.close();
    });

    it("charges a dead process's reservations once when several instances sweep at the same time", async () => {
      const s = await seeded();
      const other = options.sibling ? await options.sibling(s) : s;
      const n = 12;
      await s.heartbeat('gone', T0);
      for (let i = 0; i < n; i++) {
        await s.reserve({
          reservationId: `g-${i}`,
          scopes: [K, T],
          amountNano: 100 + i,
          now: T0,
          expiresAt: new Date(T0.getTime() + 600_000),
          processId: 'gone',
        });
      }
      const later = new Date(T0.getTime() + 20_000);
      const swept = await Promise.all(
        [s, other, s, other].map((store, i) => store.settleDeadProcesses(T0, later, i < 2 ? 5 : 1000)),
      );
      expect(swept.reduce((a, b) => a + b, 0)).toBe(n);
      const total = Array.from({ length: n }, (_, i) => 100 + i).reduce((a, b) => a + b, 0);
      for (const scope of [K, T])
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: total, reservedNano: 0 });
      expect(await raw(s).openReservations()).toBe(0);
      expect(await raw(s).spendLogCount()).toBe(n);
      if (other !== s) await other.close();
      await s.close();
    });

    it('opens, grows, shrinks and closes a lease as one reservation, growth checked as a reserve is', async () => {
      const s = await seeded({ key: budget(10) });
      if (!s.setLease) return void (await s.close()); // optional: a backend without leases has no case here
      const lease = (amountNano: number, now = T0) =>
        s.setLease!({ leaseId: 'lease-1', scopes: [K, U, T], amountNano, now, expiresAt: T0 });
      const counters = async () => Promise.all([K, U, T].map((scope) => raw(s).budgetCounter(scope)));
      const each = (spendNano: number, reservedNano: number) =>
        [0, 1, 2].map(() => ({ spendNano, reservedNano }));

      expect(await lease(4e9)).toMatchObject({ ok: true, previousNano: 0 });
      expect(await counters()).toEqual(each(0, 4e9));
      expect(await raw(s).openReservations()).toBe(1);
      expect(await lease(9e9)).toMatchObject({ ok: true, previousNano: 4e9 });
      expect(await counters()).toEqual(each(0, 9e9));
      // 9 + 1.000000001 > 10 on the key: refused, and the lease keeps its 9.
      const over = await lease(10_000_000_001);
      expect(over).toMatchObject({ ok: false, heldNano: 9e9, refused: { scope: K } });
      expect(await counters()).toEqual(each(0, 9e9));
      // A call it admitted settles under its own id: cost added, the lease untouched.
      await s.settle({
        reservationId: 'call-1',
        scopes: [K, U, T],
        costNano: 2e9,
        now: T0,
        log: spendLogFixture('call-1', { spendNano: 2e9 }),
      });
      expect(await counters()).toEqual(each(2e9, 9e9));
      // 2 spent + 9 held = 11 > 10, yet a shrink is never refused.
      expect(await lease(7e9)).toMatchObject({ ok: true, previousNano: 9e9 });
      expect(await counters()).toEqual(each(2e9, 7e9));
      // The budget lowered to 5: shrinking to 4 (2 + 4 = 6 > 5) still writes; growing by one does not.
      await s.updateBudget(K, { maxBudgetNano: 5e9 }, T0);
      expect(await lease(4e9)).toMatchObject({ ok: true, previousNano: 7e9 });
      expect(await lease(4e9 + 1)).toMatchObject({ ok: false, heldNano: 4e9, refused: { scope: K } });
      expect(await counters()).toEqual(each(2e9, 4e9));
      // 0 closes it; closing a lease not open writes nothing.
      expect(await lease(0)).toMatchObject({ ok: true, previousNano: 4e9 });
      expect(await counters()).toEqual(each(2e9, 0));
      expect(await raw(s).openReservations()).toBe(0);
      expect(await lease(0)).toMatchObject({ ok: true, previousNano: 0 });
      expect(await raw(s).openReservations()).toBe(0);
      expect(await raw(s).spendLogCount()).toBe(1);
      await s.close();
    });

    it("charges a lease left unreturned at what it holds: by its TTL, and when its holder's heartbeat stops", async () => {
      const s = await seeded({ key: budget(10) });
      if (!s.setLease) return void (await s.close());
      const at = (ms: number) => new Date(T0.getTime() + ms);
      await s.heartbeat('proc-a', T0);
      const opened = { scopes: [K, U, T], now: T0, expiresAt: at(600_000), processId: 'proc-a' };
      expect((await s.setLease({ leaseId: 'lease-a', amountNano: 500, ...opened })).ok).toBe(true);
      expect((await s.setLease({ leaseId: 'lease-a', amountNano: 800, ...opened })).ok).toBe(true);
      // No holder: left to the TTL, which a renewal moved to T0 + 60 s.
      const ttl = { scopes: [K], now: T0, expiresAt: at(30_000) };
      expect((await s.setLease({ leaseId: 'lease-n', amountNano: 40, ...ttl })).ok).toBe(true);
      expect(
        (await s.setLease({ leaseId: 'lease-n', amountNano: 50, ...ttl, expiresAt: at(60_000) })).ok,
      ).toBe(true);
      expect(await s.expireReservations(at(30_000))).toBe(0);

      expect(await s.settleDeadProcesses(at(1_000), at(5_000))).toBe(1);
      for (const scope of [U, T])
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 800, reservedNano: 0 });
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 800, reservedNano: 50 });
      const [dead] = await s.querySpendLogs({ requestId: 'lease-a' });
      expect(dead).toMatchObject({ spendNano: 800, estimated: true, metadata: { process_died: 'proc-a' } });

      expect(await s.expireReservations(at(60_000))).toBe(1);
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 850, reservedNano: 0 });
      expect(await raw(s).openReservations()).toBe(0);
      await s.close();
    });

    it("charges a team key's lease, when its holder dies, to the user its attribution names as well", async () => {
      // A team key's calls charge its user's counter without holding it (the user's budget does not
      // apply to them): the lease holds the key and the team only, and the core lets its calls skip
      // the commit before their last byte because this charge covers the user too.
      const s = await seeded({ key: budget(10) });
      if (!s.setLease) return void (await s.close());
      await s.heartbeat('proc-t', T0);
      const pending = pendingCall('lease-t', { callType: 'lease' });
      const opened = { leaseId: 'lease-t', scopes: [K, T], now: T0, processId: 'proc-t', pending };
      expect(
        (await s.setLease({ ...opened, amountNano: 700, expiresAt: new Date(T0.getTime() + 600_000) })).ok,
      ).toBe(true);
      expect(await raw(s).budgetCounter(U)).toEqual({ spendNano: 0, reservedNano: 0 });
      const later = new Date(T0.getTime() + 5_000);
      expect(await s.settleDeadProcesses(new Date(T0.getTime() + 1_000), later)).toBe(1);
      for (const scope of [K, T, U])
        expect(await raw(s).budgetCounter(scope)).toEqual({ spendNano: 700, reservedNano: 0 });
      const [dead] = await s.querySpendLogs({ requestId: 'lease-t' });
      expect(dead).toMatchObject({
        spendNano: 700,
        userId: 'u1',
        teamId: 't1',
        metadata: { process_died: 'proc-t' },
      });
      await s.close();
    });

    it('grows leases from two instances at once no further than the cap', async () => {
      const s = await seeded({ team: budget(1) });
      if (!s.setLease) return void (await s.close());
      const other = options.sibling ? await options.sibling(s) : s;
      const lease = (store: SpendStorage, i: number, amountNano: number) =>
        store.setLease!({ leaseId: `lease-${i}`, scopes: [K, U, T], amountNano, now: T0, expiresAt: T0 });
      // Ten leases of 0.05 hold 0.5 of the cap of 1; then each grows to 0.11 at once (0.06 more each):
      // the 0.5 left takes 8 growths (0.48), not a 9th (0.54).
      for (let i = 0; i < 10; i++) expect((await lease(s, i, 50_000_000)).ok).toBe(true);
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => lease(i % 2 === 0 ? s : other, i, 110_000_000)),
      );
      expect(results.filter((r) => r.ok)).toHaveLength(8);
      expect(results.filter((r) => !r.ok && r.heldNano === 50_000_000)).toHaveLength(2);
      expect(await raw(s).budgetCounter(T)).toEqual({ spendNano: 0, reservedNano: 980_000_000 });
      expect(await raw(s).openReservations()).toBe(10);
      if (other !== s) await other.close();
      await s.close();
    });

    it('updates a key and its budget definition, keeping its spend', async () => {
      const s = await seeded({ key: budget(1) });
      await s.settle({
        reservationId: 'x',
        scopes: [K],
        costNano: 250,
        now: T0,
        log: spendLogFixture('u-1'),
      });
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

    it('updates a key with its rate limits and its model and window counters in one transaction, or writes none of it', async () => {
      const s = await seeded({ key: budget(1) });
      const model = (m: string): ScopeRef => ({ kind: 'model', id: modelScopeId('k1', m) });
      const day: ScopeRef = { kind: 'window', id: windowScopeId(K, '1d') };
      await s.insert([
        { type: 'budget', scope: model('gpt-4o'), budget: budget(1) },
        { type: 'budget', scope: day, budget: budget(1, '1d', new Date('2026-03-11T00:00:00.000Z')) },
      ]);
      await s.settle({
        reservationId: 'x',
        scopes: [K, model('gpt-4o')],
        costNano: 250,
        now: T0,
        log: spendLogFixture('m-1'),
      });
      const limits: RateLimits = {
        rpmLimit: 10,
        tpmLimit: null,
        maxParallelRequests: null,
        modelRpmLimit: {},
        modelTpmLimit: {},
      };
      const updated = await s.updateKey(
        'k1',
        { keyAlias: 'changed' },
        { maxBudgetNano: 3e9 },
        {
          now: T0,
          rateLimits: { scope: K, limits },
          deleteScopes: [day],
          upsertBudgets: [
            { scope: model('gpt-4o'), set: { maxBudgetNano: 5e9 }, insert: budget(5) },
            { scope: model('o1'), set: { maxBudgetNano: 2e9 }, insert: budget(2, '1d', T0) },
          ],
        },
      );
      expect(updated?.keyAlias).toBe('changed');
      expect(await s.getRateLimits([K])).toEqual([{ scope: K, limits }]);
      const [k, old, added] = await s.getBudgets([K, model('gpt-4o'), model('o1')], T0);
      expect(k).toMatchObject({ maxBudgetNano: 3e9, spendNano: 250 });
      expect(old).toMatchObject({ maxBudgetNano: 5e9, spendNano: 250 }); // its spend stays
      expect(added).toMatchObject({ maxBudgetNano: 2e9, budgetDuration: '1d', spendNano: 0 });
      expect(await s.getBudgets([day], T0)).toEqual([]);

      // No such key: none of its changes is written.
      const ghost: ScopeRef = { kind: 'key', id: 'nope' };
      const none = await s.updateKey('nope', { blocked: true }, undefined, {
        now: T0,
        rateLimits: { scope: ghost, limits },
        upsertBudgets: [{ scope: model('ghost'), set: {}, insert: budget(1) }],
      });
      expect(none).toBeNull();
      expect(await s.getRateLimits([ghost])).toEqual([]);
      expect(await s.getBudgets([model('ghost')], T0)).toEqual([]);

      // A change an entity update may not make (another entity's counter): refused, nothing written.
      await expect(
        s.updateKey('k1', { keyAlias: 'refused' }, undefined, {
          now: T0,
          rateLimits: { scope: K, limits: null },
          deleteScopes: [U],
        }),
      ).rejects.toThrow(/cannot delete or define a user counter/);
      expect((await s.getKey('k1'))?.keyAlias).toBe('changed');
      expect(await s.getRateLimits([K])).toEqual([{ scope: K, limits }]);
      expect(await s.getBudgets([U], T0)).toHaveLength(1);
      await s.close();
    });

    it('updates several keys in one transaction: every one, or none when a key is missing or a write fails', async () => {
      const s = await seeded({ key: budget(1) });
      const K2: ScopeRef = { kind: 'key', id: 'k2' };
      await s.insert([{ type: 'key', record: key('k2', null, null), budget: budget(2) }]);
      await s.settle({
        reservationId: 'x',
        scopes: [K2],
        costNano: 250,
        now: T0,
        log: spendLogFixture('b-1'),
      });
      const both = await s.updateKeys([
        { tokenHash: 'k1', patch: { tags: ['prod'] }, budget: { maxBudgetNano: 5e9 } },
        { tokenHash: 'k2', patch: {}, budget: { maxBudgetNano: 7e9 } },
      ]);
      expect(both?.map((k) => [k.tokenHash, k.tags])).toEqual([
        ['k1', ['prod']],
        ['k2', []],
      ]);
      const [k1, k2] = await s.getBudgets([K, K2], T0);
      expect(k1).toMatchObject({ maxBudgetNano: 5e9, spendNano: 0 });
      expect(k2).toMatchObject({ maxBudgetNano: 7e9, spendNano: 250 }); // its spend stays

      // A missing key: the keys before it are not changed either.
      expect(
        await s.updateKeys([
          { tokenHash: 'k1', patch: { tags: ['half-written?'] }, budget: { maxBudgetNano: 9e9 } },
          { tokenHash: 'nope', patch: { blocked: true } },
        ]),
      ).toBeNull();
      expect((await s.getKey('k1'))?.tags).toEqual(['prod']);
      expect((await s.getBudgets([K], T0))[0]).toMatchObject({ maxBudgetNano: 5e9 });

      // The second key's counter write fails: the first key's change is undone.
      await options.failCounterWrites(s, K2);
      await expect(
        s.updateKeys([
          { tokenHash: 'k1', patch: { tags: ['half-written?'] }, budget: { maxBudgetNano: 9e9 } },
          { tokenHash: 'k2', patch: { tags: ['half-written?'] }, budget: { maxBudgetNano: 9e9 } },
        ]),
      ).rejects.toThrow();
      expect((await s.getKey('k1'))?.tags).toEqual(['prod']);
      expect((await s.getKey('k2'))?.tags).toEqual([]);
      expect((await s.getBudgets([K], T0))[0]).toMatchObject({ maxBudgetNano: 5e9 });
      await s.close();
    });

    it('moves keys between teams and links them to budget tiers in updateKeys: every one, or none', async () => {
      const s = await seeded({ key: budget(1) });
      const K2: ScopeRef = { kind: 'key', id: 'k2' };
      await s.insert([
        { type: 'team', record: team('t2'), budget: NO_BUDGET },
        { type: 'key', record: key('k2', null, null), budget: budget(2) },
      ]);
      await s.insertBudgetTier(tierRecord('gold', { maxBudgetNano: 50e9, rpmLimit: 3 }));
      const done = await s.updateKeys([
        { tokenHash: 'k1', patch: { teamId: 't2' } },
        { tokenHash: 'k2', patch: { budgetId: 'gold' } },
      ]);
      expect(done?.map((k) => [k.tokenHash, k.teamId, k.budgetId ?? null])).toEqual([
        ['k1', 't2', null],
        ['k2', null, 'gold'],
      ]);
      expect((await s.getKey('k1'))?.teamId).toBe('t2');
      expect((await s.listKeys({ teamId: 't2' })).map((k) => k.tokenHash)).toEqual(['k1']);
      // The linked key spends under the tier's limits, in storage.
      expect((await s.getBudgets([K2], T0))[0]).toMatchObject({ maxBudgetNano: 50e9 });
      expect((await s.getRateLimits([K2]))[0]?.limits.rpmLimit).toBe(3);

      // A missing tier: nothing is written, the team move before it included.
      await expect(
        s.updateKeys([
          { tokenHash: 'k1', patch: { teamId: 't1' } },
          { tokenHash: 'k2', patch: { budgetId: 'nope' } },
        ]),
      ).rejects.toThrow(/budget_id 'nope'/);
      expect((await s.getKey('k1'))?.teamId).toBe('t2');
      expect((await s.getKey('k2'))?.budgetId).toBe('gold');

      // A linked key keeps its tier's cap, whatever budget a batch sends for it.
      await s.updateKeys([{ tokenHash: 'k2', patch: {}, budget: { maxBudgetNano: 1e9 } }]);
      expect((await s.getBudgets([K2], T0))[0]).toMatchObject({ maxBudgetNano: 50e9 });
      await s.close();
    });

    if (options.refusesFractionalNano) {
      it("says that a value it refuses is the input's fault (isInputError), and writes nothing of it", async () => {
        const s = await seeded({ key: budget(10) });
        const refusal = (p: Promise<unknown>) =>
          p.then(
            () => 'written',
            (e: unknown) => e,
          );
        const errors = [
          await refusal(
            s.insert([{ type: 'team', record: team('t2'), budget: { ...budget(1), maxBudgetNano: 0.5 } }]),
          ),
          await refusal(
            s.reserve({
              reservationId: 'r1',
              scopes: [K],
              amountNano: 0.5,
              now: T0,
              expiresAt: new Date(T0.getTime() + 60_000),
            }),
          ),
          await refusal(
            s.settle({
              reservationId: 'none-q1',
              scopes: [K],
              costNano: 0.5,
              now: T0,
              log: spendLogFixture('q1', { spendNano: 0.5 }),
            }),
          ),
        ];
        for (const error of errors) {
          expect(error).toBeInstanceOf(Error);
          expect(s.isInputError?.(error)).toBe(true);
        }
        expect(s.isInputError?.(new Error('connect ECONNREFUSED 127.0.0.1:5432'))).toBe(false);
        expect(await s.getTeam('t2')).toBeNull();
        expect(await s.getBudgets([K], T0)).toMatchObject([{ spendNano: 0, reservedNano: 0 }]);
        expect(await s.querySpendLogs({ limit: 10 })).toEqual([]);
        await s.close();
      });
    }

    it('rolls an entity update back whole when one of its changes fails midway', async () => {
      const s = await seeded({ team: budget(10) });
      const limits: RateLimits = {
        rpmLimit: 5,
        tpmLimit: null,
        maxParallelRequests: null,
        modelRpmLimit: {},
        modelTpmLimit: {},
      };
      const window = (d: string): ScopeRef => ({ kind: 'window', id: windowScopeId(T, d) });
      // The rate limits and the first window are written before the second window's counter fails:
      // the whole update must be undone, the team's own change included.
      await options.failCounterWrites(s, window('7d'));
      await expect(
        s.updateTeam(
          't1',
          { teamAlias: 'half-written?' },
          { maxBudgetNano: 20e9 },
          {
            now: T0,
            rateLimits: { scope: T, limits },
            upsertBudgets: [
              { scope: window('1d'), set: {}, insert: budget(5, '1d', T0) },
              { scope: window('7d'), set: {}, insert: budget(5, '7d', T0) },
            ],
          },
        ),
      ).rejects.toThrow();
      expect((await s.getTeam('t1'))?.teamAlias).toBe('frontend');
      expect(await s.getRateLimits([T])).toEqual([]);
      expect(await s.getBudgets([window('1d'), window('7d')], T0)).toEqual([]);
      expect((await s.getBudgets([T], T0))[0]?.maxBudgetNano).toBe(10e9);

      // The same for a key: its alias, rate limits and first model budget before the second one fails.
      const model = (m: string): ScopeRef => ({ kind: 'model', id: modelScopeId('k1', m) });
      await options.failCounterWrites(s, model('o1'));
      await expect(
        s.updateKey(
          'k1',
          { keyAlias: 'half-written?' },
          { maxBudgetNano: 3e9 },
          {
            now: T0,
            rateLimits: { scope: K, limits },
            upsertBudgets: [
              { scope: model('gpt-4o'), set: {}, insert: budget(5) },
              { scope: model('o1'), set: {}, insert: budget(2) },
            ],
          },
        ),
      ).rejects.toThrow();
      expect((await s.getKey('k1'))?.keyAlias).toBeNull();
      expect(await s.getRateLimits([K])).toEqual([]);
      expect(await s.getBudgets([model('gpt-4o'), model('o1')], T0)).toEqual([]);
      expect((await s.getBudgets([K], T0))[0]?.maxBudgetNano).toBeNull();
      await s.close();
    });

    it('updates a team and a user with their rate limits in the same transaction', async () => {
      const s = await seeded();
      const limits: RateLimits = {
        rpmLimit: null,
        tpmLimit: 1000,
        maxParallelRequests: 2,
        modelRpmLimit: {},
        modelTpmLimit: {},
      };
      await s.updateTeam('t1', { teamAlias: 'renamed' }, undefined, {
        now: T0,
        rateLimits: { scope: T, limits },
      });
      await s.updateUser('u1', {}, undefined, { now: T0, rateLimits: { scope: U, limits } });
      expect(await s.getRateLimits([T, U])).toEqual([
        { scope: T, limits },
        { scope: U, limits },
      ]);
      await s.updateTeam('t1', {}, undefined, { now: T0, rateLimits: { scope: T, limits: null } });
      expect(await s.getRateLimits([T])).toEqual([]);
      const ghost: ScopeRef = { kind: 'team', id: 'nope' };
      expect(
        await s.updateTeam('nope', {}, undefined, { now: T0, rateLimits: { scope: ghost, limits } }),
      ).toBeNull();
      expect(await s.getRateLimits([ghost])).toEqual([]);
      await s.close();
    });

    it('deletes keys with their counters and keeps their spend logs', async () => {
      const s = await seeded();
      await s.settle({
        reservationId: 'x',
        scopes: [K],
        costNano: 250,
        now: T0,
        log: spendLogFixture('d-1'),
      });
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
        log: spendLogFixture('l1', { startTime: at(1) }),
      });
      await s.settle({
        reservationId: 'b',
        scopes: [K],
        costNano: 2,
        now: T0,
        log: spendLogFixture('l2', { startTime: at(2), userId: 'u2' }),
      });
      await s.settle({
        reservationId: 'c',
        scopes: [K],
        costNano: 3,
        now: T0,
        log: spendLogFixture('l3', { startTime: at(3), apiKeyHash: 'k2', teamId: 't2' }),
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

    it("keeps a log's provider response id and finds the log by it or by its own id", async () => {
      const s = await seeded();
      const at = (m: number) => new Date(T0.getTime() + m * 60_000);
      await s.settle({
        reservationId: 'a',
        scopes: [K],
        costNano: 1,
        now: T0,
        log: spendLogFixture('call-1', { startTime: at(1), responseId: 'chatcmpl-Abc123' }),
      });
      await s.settle({
        reservationId: 'b',
        scopes: [K],
        costNano: 1,
        now: T0,
        log: spendLogFixture('call-2', { startTime: at(2) }),
      });
      // A log's own id that happens to equal another's response id: both match, newest first.
      await s.settle({
        reservationId: 'c',
        scopes: [K],
        costNano: 1,
        now: T0,
        log: spendLogFixture('msg_01X', { startTime: at(3), responseId: 'msg_01Y' }),
      });
      await s.settle({
        reservationId: 'd',
        scopes: [K],
        costNano: 1,
        now: T0,
        log: spendLogFixture('call-4', { startTime: at(4), responseId: 'msg_01X' }),
      });
      const ids = async (requestId: string) =>
        (await s.querySpendLogs({ requestId })).map((l) => [l.requestId, l.responseId]);
      expect(await ids('chatcmpl-Abc123')).toEqual([['call-1', 'chatcmpl-Abc123']]);
      expect(await ids('call-1')).toEqual([['call-1', 'chatcmpl-Abc123']]);
      expect(await ids('call-2')).toEqual([['call-2', null]]);
      expect(await ids('msg_01X')).toEqual([
        ['call-4', 'msg_01X'],
        ['msg_01X', 'msg_01Y'],
      ]);
      expect(await ids('chatcmpl-abc123')).toEqual([]); // ids compare exactly
      await s.close();
    });

    it('filters spend logs by model, status and every listed tag, and pages them by keyset', async () => {
      const s = await seeded();
      const at = (m: number) => new Date(T0.getTime() + m * 60_000);
      const rows: [string, Partial<SpendLogRecord>][] = [
        ['m1', { startTime: at(1), model: 'gpt-4o', tags: ['feature:onboarding', 'env:prod'] }],
        ['m2', { startTime: at(2), model: 'claude-3', tags: ['feature:onboarding'], status: 'failure' }],
        ['m3a', { startTime: at(3), model: 'gpt-4o', tags: ['env:prod'] }],
        ['m3b', { startTime: at(3), model: 'gpt-4o', tags: ['env:prod', 'feature:onboarding', 'x'] }],
      ];
      for (const [id, over] of rows) {
        await s.settle({
          reservationId: id,
          scopes: [K],
          costNano: 1,
          now: T0,
          log: spendLogFixture(id, over),
        });
      }
      const ids = async (q: Parameters<SpendStorage['querySpendLogs']>[0]) =>
        (await s.querySpendLogs(q)).map((l) => l.requestId);
      expect(await ids({ model: 'gpt-4o' })).toEqual(['m3b', 'm3a', 'm1']);
      expect(await ids({ status: 'failure' })).toEqual(['m2']);
      expect(await ids({ tags: ['feature:onboarding'] })).toEqual(['m3b', 'm2', 'm1']);
      expect(await ids({ tags: ['feature:onboarding', 'env:prod'] })).toEqual(['m3b', 'm1']);
      expect(await ids({ tags: ['nope'] })).toEqual([]);
      // Keyset paging walks the newest-first order without gaps or repeats, ties included.
      const page1 = await s.querySpendLogs({ limit: 1 });
      expect(page1.map((l) => l.requestId)).toEqual(['m3b']);
      const before = { startTime: page1[0]!.startTime, requestId: page1[0]!.requestId };
      expect(await ids({ before, limit: 2 })).toEqual(['m3a', 'm2']);
      expect(await ids({ before: { startTime: at(2), requestId: 'm2' } })).toEqual(['m1']);
      await s.close();
    });

    it('lists capped budgets by used fraction, with due resets applied, filtered by kind', async () => {
      const s = await create();
      const resetAt = new Date(T0.getTime() + 3_600_000);
      await s.insert([
        { type: 'team', record: team('ta'), budget: budget(10) },
        { type: 'team', record: team('tb'), budget: budget(10) },
        { type: 'team', record: team('tc'), budget: NO_BUDGET },
        { type: 'user', record: user('ua'), budget: budget(1, '1d', resetAt) },
        { type: 'key', record: key('ka', null, null), budget: budget(0) },
      ]);
      const charge = async (scope: ScopeRef, usd: number, id: string) =>
        s.settle({
          reservationId: id,
          scopes: [scope],
          costNano: Math.round(usd * 1e9),
          now: T0,
          log: spendLogFixture(id),
        });
      await charge({ kind: 'team', id: 'ta' }, 9, 'c1'); // 90 %
      await charge({ kind: 'team', id: 'tb' }, 5, 'c2'); // 50 %
      await charge({ kind: 'team', id: 'tc' }, 100, 'c3'); // no cap: never listed
      await charge({ kind: 'user', id: 'ua' }, 0.95, 'c4'); // 95 % until its reset
      const ids = (states: { scope: ScopeRef }[]) => states.map((b) => `${b.scope.kind}:${b.scope.id}`);
      expect(ids(await s.listBudgets({}, T0))).toEqual(['key:ka', 'user:ua', 'team:ta', 'team:tb']);
      const near = await s.listBudgets({ minUsedFraction: 0.8 }, T0);
      expect(ids(near)).toEqual(['key:ka', 'user:ua', 'team:ta']);
      expect(near[2]).toMatchObject({ spendNano: 9e9, maxBudgetNano: 10e9, reservedNano: 0 });
      expect(ids(await s.listBudgets({ minUsedFraction: 0.8, kinds: ['team'] }, T0))).toEqual(['team:ta']);
      expect(ids(await s.listBudgets({ limit: 2 }, T0))).toEqual(['key:ka', 'user:ua']);
      // After the user's reset time its spend counts as 0, in the answer.
      const later = new Date(resetAt.getTime() + 1000);
      const afterReset = await s.listBudgets({}, later);
      expect(ids(afterReset)).toEqual(['key:ka', 'team:ta', 'team:tb', 'user:ua']);
      expect(afterReset[3]).toMatchObject({ spendNano: 0 });
      expect(afterReset[3]!.budgetResetAt!.getTime()).toBeGreaterThan(later.getTime());
      expect(ids(await s.listBudgets({ minUsedFraction: 0.8 }, later))).toEqual(['key:ka', 'team:ta']);
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
        log: spendLogFixture('t1', { startTime: d1, tags: ['prod', 'chat'] }),
      });
      await s.settle({
        reservationId: 'b',
        scopes: [K],
        costNano: 50,
        now: d2,
        log: spendLogFixture('t2', { startTime: d2, tags: ['prod'] }),
      });
      await s.settle({
        reservationId: 'c',
        scopes: [K],
        costNano: 7,
        now: d2,
        log: spendLogFixture('t3', { startTime: d2 }),
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
          log: spendLogFixture(id, { spendNano: cost, ...over }),
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
      // is the reference computed straight from the logs (reference-report.ts, written apart from the
      // rollups); also after a settle that adds to existing rollup rows.
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
        const logs = calls.map(([id, cost, over]) => ({
          log: spendLogFixture(id, { spendNano: cost, ...over }),
          costNano: cost,
        }));
        for (const groupBy of dimensions) {
          for (const f of filters) {
            const query = { fromDay: '2026-03-01', toDay: '2026-03-02', groupBy, filters: f };
            expect(canonicalRows(await s.spendReport(query)), JSON.stringify(query)).toEqual(
              canonicalRows(referenceReport(logs, query)),
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
        log: spendLogFixture('f', { spendNano: 11, ...repeat }),
      });
      await matchesReference();
      await s.close();
    });

    it('ranks the top n groups of a report and sums the rest into exact "other" rows', async () => {
      const s = await seeded();
      const day = (d: string) => new Date(`${d}T10:00:00.000Z`);
      // Users by spend over 03-01..03-03: u3 90, (none) 60, u1 50, u2 50 (a tie: u1 first), u4 5.
      const calls: Array<[string, number, Partial<SpendLogRecord>]> = [
        ['a', 40, { startTime: day('2026-03-01'), userId: 'u3', apiKeyHash: 'k3', tags: ['prod'] }],
        ['b', 50, { startTime: day('2026-03-02'), userId: 'u3', apiKeyHash: 'k3', endUser: 'c1' }],
        ['c', 60, { startTime: day('2026-03-01'), userId: null, apiKeyHash: 'k9', tags: ['prod', 'chat'] }],
        ['d', 20, { startTime: day('2026-03-01'), userId: 'u1', tags: ['chat'], status: 'failure' }],
        ['e', 30, { startTime: day('2026-03-03'), userId: 'u1', endUser: 'c2', tags: ['beta'] }],
        ['f', 50, { startTime: day('2026-03-02'), userId: 'u2', apiKeyHash: 'k2', teamId: 't2' }],
        ['g', 5, { startTime: day('2026-03-03'), userId: 'u4', apiKeyHash: 'k4', tags: ['beta'] }],
        ['h', 1, { startTime: day('2026-04-01'), userId: 'u4', apiKeyHash: 'k4' }],
      ];
      const settleAll = async (list: typeof calls) => {
        for (const [id, cost, over] of list) {
          await s.settle({
            reservationId: id,
            scopes: [],
            costNano: cost,
            now: T0,
            log: spendLogFixture(id, { spendNano: cost, promptTokens: 1, completionTokens: 2, ...over }),
          });
        }
      };
      await settleAll(calls);
      const range = { fromDay: '2026-03-01', toDay: '2026-03-03' };
      const sums = (requests: number, spendNano: number, failedRequests = 0) => ({
        requests,
        failedRequests,
        spendNano,
        promptTokens: requests,
        completionTokens: 2 * requests,
      });
      expect(await s.spendReport({ ...range, groupBy: ['user'], top: { n: 2 } })).toEqual([
        { userId: null, ...sums(1, 60) },
        { userId: 'u3', ...sums(2, 90) },
        { userId: null, other: true, ...sums(4, 105, 1) },
      ]);
      expect(await s.spendReport({ ...range, groupBy: ['day', 'user'], top: { n: 3 } })).toEqual([
        { day: '2026-03-01', userId: null, ...sums(1, 60) },
        { day: '2026-03-01', userId: 'u1', ...sums(1, 20, 1) },
        { day: '2026-03-01', userId: 'u3', ...sums(1, 40) },
        { day: '2026-03-02', userId: 'u3', ...sums(1, 50) },
        { day: '2026-03-02', userId: null, other: true, ...sums(1, 50) },
        { day: '2026-03-03', userId: 'u1', ...sums(1, 30) },
        { day: '2026-03-03', userId: null, other: true, ...sums(1, 5) },
      ]);
      // Every group fits: no "other" row.
      expect(await s.spendReport({ ...range, groupBy: ['key'], top: { n: 10 } })).toEqual(
        await s.spendReport({ ...range, groupBy: ['key'] }),
      );

      // Against the reference over the logs, and against the backend's own full report: the ranked
      // rows are the full report's rows of the n groups with the most spend, and every day's rows
      // (ranked and "other") sum to that day's total.
      const groupings: SpendDimension[][] = [
        ['user'],
        ['day', 'user'],
        ['day', 'key'],
        ['day', 'team'],
        ['day', 'model'],
        ['day', 'customer'],
        ['tag'],
        ['day', 'tag'],
      ];
      const filters: SpendReportFilters[] = [
        {},
        { teamIds: ['t1'] },
        { tags: ['prod', 'beta'] },
        { userIds: [] },
      ];
      const check = async () => {
        const logs = calls.map(([id, cost, over]) => ({
          log: spendLogFixture(id, { spendNano: cost, promptTokens: 1, completionTokens: 2, ...over }),
          costNano: cost,
        }));
        for (const groupBy of groupings) {
          const ranked = spendReportField(groupBy.find((d) => d !== 'day')!);
          for (const f of filters) {
            for (const n of [1, 2, 3, 50]) {
              const query: SpendReportQuery = { ...range, groupBy, filters: f, top: { n } };
              const label = JSON.stringify(query);
              const got = await s.spendReport(query);
              expect(canonicalRows(got), label).toEqual(canonicalRows(referenceReport(logs, query)));
              const full = await s.spendReport({ ...query, top: undefined });
              const totalOf = new Map<SpendReportRow[keyof SpendReportRow], number>();
              for (const r of full) totalOf.set(r[ranked], (totalOf.get(r[ranked]) ?? 0) + r.spendNano);
              const kept = new Set(got.filter((r) => !r.other).map((r) => r[ranked]));
              expect(kept.size, label).toBe(Math.min(n, totalOf.size));
              const lowestKept = Math.min(...[...kept].map((v) => totalOf.get(v)!));
              for (const [value, spend] of totalOf)
                if (!kept.has(value)) expect(spend, label).toBeLessThanOrEqual(lowestKept);
              expect(
                got.filter((r) => !r.other),
                label,
              ).toEqual(full.filter((r) => kept.has(r[ranked])));
              const perDay = (list: typeof got) => {
                const out = new Map<string | undefined, number[]>();
                for (const r of list) {
                  const t = out.get(r.day) ?? [0, 0, 0, 0, 0];
                  const add = [r.requests, r.failedRequests, r.spendNano, r.promptTokens, r.completionTokens];
                  out.set(
                    r.day,
                    t.map((x, i) => x + add[i]!),
                  );
                }
                return out;
              };
              expect(perDay(got), label).toEqual(perDay(full));
            }
          }
        }
      };
      await check();
      // After a settle that reorders the ranking (u4 overtakes everyone) and adds to existing rows.
      const more: typeof calls = [
        ['i', 500, { startTime: day('2026-03-01'), userId: 'u4', apiKeyHash: 'k4', tags: ['prod'] }],
      ];
      calls.push(...more);
      await settleAll(more);
      await check();
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
        log: spendLogFixture('s-1'),
      });
      expect(settled.states.map((st) => st.softBudgetNano)).toEqual([500_000_000, null]);
      await s.updateKey('k1', {}, { softBudgetNano: 700_000_000 });
      expect((await s.getBudgets([K], T0))[0]).toMatchObject({ softBudgetNano: 700_000_000, spendNano: 5 });
      await s.close();
    });

    it('stores rate limits per scope with the entity, and sets, replaces and removes them', async () => {
      const s = await create();
      const limits: RateLimits = {
        rpmLimit: 10,
        tpmLimit: null,
        maxParallelRequests: 2,
        modelRpmLimit: { 'gpt-4o': 3 },
        modelTpmLimit: {},
      };
      await s.insert([
        { type: 'team', record: team('t1'), budget: NO_BUDGET, rateLimits: { ...limits, rpmLimit: 100 } },
        { type: 'user', record: user('u1', ['t1']), budget: NO_BUDGET },
        { type: 'key', record: key('k1', 'u1', 't1'), budget: NO_BUDGET, rateLimits: limits },
      ]);
      expect(await s.getRateLimits([T, U, K])).toEqual([
        { scope: T, limits: { ...limits, rpmLimit: 100 } },
        { scope: K, limits },
      ]);
      // A failed batch writes no limits either.
      await expect(
        s.insert([
          { type: 'team', record: team('t2'), budget: NO_BUDGET, rateLimits: limits },
          { type: 'key', record: key('k1', null, null), budget: NO_BUDGET },
        ]),
      ).rejects.toBeInstanceOf(StorageConflictError);
      expect(await s.getRateLimits([{ kind: 'team', id: 't2' }])).toEqual([]);
      // Any scope kind can have limits.
      const member = { kind: 'member', id: 't1:u1' } as unknown as ScopeRef;
      await s.setRateLimits(member, { ...limits, tpmLimit: 500 });
      await s.setRateLimits(U, { ...limits, maxParallelRequests: null });
      await s.setRateLimits(T, null);
      expect(await s.getRateLimits([K, U, T, member])).toEqual([
        { scope: K, limits },
        { scope: U, limits: { ...limits, maxParallelRequests: null } },
        { scope: member, limits: { ...limits, tpmLimit: 500 } },
      ]);
      await s.deleteKeys(['k1']);
      expect(await s.getRateLimits([K])).toEqual([]);
      await s.close();
    });

    it('counts requests per window on every bucket or none, and a new window re-opens them', async () => {
      const s = await seeded();
      const window = 60_000;
      const keyRpm = { scope: K, metric: 'rpm' as const, model: '', limit: 3 };
      const modelRpm = { scope: K, metric: 'rpm' as const, model: 'gpt-4o', limit: 2 };
      const acquire = (buckets: RateBucket[], at: Date, lease = `l-${Math.random()}`) =>
        s.acquireRate({ leaseId: lease, buckets, now: at, windowMs: window, leaseExpiresAt: at });
      const first = await acquire([keyRpm, modelRpm], T0);
      expect(first).toEqual({
        ok: true,
        states: [
          { ...keyRpm, used: 1, resetAt: new Date(T0.getTime() + window) },
          { ...modelRpm, used: 1, resetAt: new Date(T0.getTime() + window) },
        ],
      });
      const later = new Date(T0.getTime() + 10_000);
      expect((await acquire([keyRpm, modelRpm], later)).ok).toBe(true);
      // The model's bucket is full: the key's is not counted either.
      const refused = await acquire([keyRpm, modelRpm], later);
      expect(refused).toEqual({
        ok: false,
        refused: { ...modelRpm, used: 2, resetAt: new Date(T0.getTime() + window) },
      });
      expect(await raw(s).rateCounter(keyRpm)).toBe(2);
      expect(await raw(s).rateCounter(modelRpm)).toBe(2);
      // Another model is not limited by gpt-4o's bucket.
      expect((await acquire([keyRpm], later)).ok).toBe(true);
      expect((await acquire([keyRpm], later)).ok).toBe(false);
      expect(await raw(s).rateCounter(keyRpm)).toBe(3);
      // The window that started at T0 ends at T0 + 60 s: the next one starts with the next request.
      const next = new Date(T0.getTime() + window);
      const reopened = await acquire([keyRpm, modelRpm], next);
      expect(reopened.ok && reopened.states.map((st) => [st.used, st.resetAt?.getTime()])).toEqual([
        [1, next.getTime() + window],
        [1, next.getTime() + window],
      ]);
      await s.close();
    });

    it('checks tokens against what settled calls used in the window', async () => {
      const s = await seeded();
      const window = 60_000;
      const tpm = { scope: U, metric: 'tpm' as const, model: '', limit: 100 };
      const acquire = (at: Date) =>
        s.acquireRate({ leaseId: 'l', buckets: [tpm], now: at, windowMs: window, leaseExpiresAt: at });
      const admitted = await acquire(T0);
      expect(admitted.ok && admitted.states[0]).toMatchObject({ used: 0 });
      expect((await raw(s).rateCounter(tpm)) ?? 0).toBe(0);
      await s.settleRate({ leaseId: 'l', buckets: [tpm], tokens: 60, now: T0, windowMs: window });
      await s.settleRate({ leaseId: 'l', buckets: [tpm], tokens: 39, now: T0, windowMs: window });
      expect(await raw(s).rateCounter(tpm)).toBe(99);
      expect((await acquire(T0)).ok).toBe(true);
      await s.settleRate({ leaseId: 'l', buckets: [tpm], tokens: 5, now: T0, windowMs: window });
      const refused = await acquire(new Date(T0.getTime() + 59_999));
      expect(refused).toEqual({
        ok: false,
        refused: { ...tpm, used: 104, resetAt: new Date(T0.getTime() + window) },
      });
      const next = new Date(T0.getTime() + window);
      expect((await acquire(next)).ok).toBe(true);
      await s.settleRate({ leaseId: 'l', buckets: [tpm], tokens: 7, now: next, windowMs: window });
      expect(await raw(s).rateCounter(tpm)).toBe(7);
      await s.close();
    });

    it('holds parallel leases until released or expired', async () => {
      const s = await seeded();
      const parallel = { scope: T, metric: 'parallel' as const, model: '', limit: 2 };
      const expires = new Date(T0.getTime() + 600_000);
      const acquire = (lease: string, at = T0) =>
        s.acquireRate({
          leaseId: lease,
          buckets: [parallel],
          now: at,
          windowMs: 60_000,
          leaseExpiresAt: expires,
        });
      expect(await acquire('a')).toEqual({ ok: true, states: [{ ...parallel, used: 1, resetAt: null }] });
      expect((await acquire('b')).ok).toBe(true);
      expect(await acquire('c')).toEqual({ ok: false, refused: { ...parallel, used: 2, resetAt: null } });
      expect(await raw(s).rateLeases()).toBe(2);
      await s.settleRate({ leaseId: 'a', buckets: [], tokens: 0, now: T0, windowMs: 60_000 });
      expect(await raw(s).rateLeases()).toBe(1);
      expect((await acquire('c')).ok).toBe(true);
      expect((await acquire('d')).ok).toBe(false);
      // Leases whose holder never released them (a dead process) come back when they expire.
      const after = await acquire('e', expires);
      expect(after.ok && after.states[0]?.used).toBe(1);
      expect(await raw(s).rateLeases()).toBe(1);
      await s.close();
    });

    it('admits exactly the limit among concurrent acquires, also across instances', async () => {
      const s = await seeded();
      const other = options.sibling ? await options.sibling(s) : s;
      const rpm = { scope: K, metric: 'rpm' as const, model: '', limit: 7 };
      const parallel = { scope: T, metric: 'parallel' as const, model: '', limit: 5 };
      const n = Math.min(options.concurrency ?? 60, 40);
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          (i % 2 ? s : other).acquireRate({
            leaseId: `p-${i}`,
            buckets: i < n / 2 ? [rpm] : [parallel],
            now: T0,
            windowMs: 60_000,
            leaseExpiresAt: new Date(T0.getTime() + 60_000),
          }),
        ),
      );
      expect(results.slice(0, n / 2).filter((r) => r.ok)).toHaveLength(7);
      expect(results.slice(n / 2).filter((r) => r.ok)).toHaveLength(5);
      expect(await raw(s).rateCounter(rpm)).toBe(7);
      expect(await raw(s).rateLeases()).toBe(5);
      if (other !== s) await other.close();
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
    it('keeps dashboard sessions: found until they expire, gone once deleted, on every instance', async () => {
      const s = await create();
      const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000);
      const session = (idHash: string, expiresAt: Date) => ({
        idHash,
        username: 'admin',
        credentialMac: `mac-of-${idHash}`,
        createdAt: T0,
        expiresAt,
      });
      await s.createDashboardSession(session('sess-a', at(60)), T0);
      await s.createDashboardSession(session('sess-b', at(10)), T0);
      await expect(s.createDashboardSession(session('sess-a', at(90)), T0)).rejects.toBeInstanceOf(
        StorageConflictError,
      );
      expect(await s.getDashboardSession('sess-a', at(1))).toEqual(session('sess-a', at(60)));
      expect(await s.getDashboardSession('nope', at(1))).toBeNull();
      // Expired at its expiry instant, and deleted by the next sign-in after it.
      expect(await s.getDashboardSession('sess-b', at(10))).toBeNull();
      expect(await raw(s).dashboardSessions()).toBe(2);
      await s.createDashboardSession(session('sess-c', at(120)), at(11));
      expect(await raw(s).dashboardSessions()).toBe(2);
      // Logout on another instance (or after a restart) ends the session here too.
      const other = options.sibling ? await options.sibling(s) : s;
      expect(await other.getDashboardSession('sess-a', at(1))).toEqual(session('sess-a', at(60)));
      expect(await other.deleteDashboardSession('sess-a')).toBe(true);
      expect(await other.deleteDashboardSession('sess-a')).toBe(false);
      expect(await s.getDashboardSession('sess-a', at(1))).toBeNull();
      expect(await s.getDashboardSession('sess-c', at(1))).toEqual(session('sess-c', at(120)));
      expect(await raw(s).dashboardSessions()).toBe(1);
      if (other !== s) await other.close();
      await s.close();
    });

    it('regenerates a key: same record and counter, the old secret works only during its grace period', async () => {
      const s = await seeded({ key: budget(5) });
      await s.settle({
        reservationId: 'x',
        scopes: [K],
        costNano: 300,
        now: T0,
        log: spendLogFixture('r-1'),
      });
      expect(await s.findKeyBySecret('k1', T0)).toEqual({
        key: key('k1', 'u1', 't1'),
        secretValidUntil: null,
      });
      const graceEnd = new Date(T0.getTime() + 3_600_000);
      const regenerated = await s.regenerateKey({
        tokenHash: 'k1',
        newSecretHash: 'k1-v2',
        newKeyName: 'sk-...v2v2',
        previousValidUntil: graceEnd,
        now: T0,
      });
      expect(regenerated).toEqual({ ...key('k1', 'u1', 't1'), keyName: 'sk-...v2v2' });
      expect(await s.getKey('k1')).toEqual(regenerated);
      expect(await s.findKeyBySecret('k1-v2', T0)).toEqual({ key: regenerated, secretValidUntil: null });
      expect(await s.findKeyBySecret('k1', T0)).toEqual({ key: regenerated, secretValidUntil: graceEnd });
      const after = new Date(graceEnd.getTime() + 1);
      expect(await s.findKeyBySecret('k1', graceEnd)).toBeNull();
      expect(await s.findKeyBySecret('k1', after)).toBeNull();
      expect(await s.findKeyBySecret('k1-v2', after)).toMatchObject({ key: { tokenHash: 'k1' } });
      // Spend and budget stay on the one counter, whatever secret the calls came with.
      expect(await raw(s).budgetCounter(K)).toEqual({ spendNano: 300, reservedNano: 0 });
      // Regenerating again without grace: the v2 secret stops at once, the v1 grace is unaffected.
      await s.regenerateKey({
        tokenHash: 'k1',
        newSecretHash: 'k1-v3',
        newKeyName: 'sk-...v3v3',
        previousValidUntil: null,
        now: T0,
      });
      expect(await s.findKeyBySecret('k1-v2', T0)).toBeNull();
      expect(await s.findKeyBySecret('k1', T0)).toMatchObject({ secretValidUntil: graceEnd });
      expect(await s.findKeyBySecret('k1-v3', T0)).toMatchObject({ key: { keyName: 'sk-...v3v3' } });
      expect(await s.findKeyBySecret('nope', T0)).toBeNull();
      expect(
        await s.regenerateKey({
          tokenHash: 'nope',
          newSecretHash: 'n2',
          newKeyName: 'x',
          previousValidUntil: null,
          now: T0,
        }),
      ).toBeNull();
      await s.deleteKeys(['k1']);
      expect(await s.findKeyBySecret('k1-v3', T0)).toBeNull();
      expect(await s.findKeyBySecret('k1', T0)).toBeNull();
      await s.close();
    });

    it('updates, lists and deletes teams and users with their keys, counters and memberships; logs stay', async () => {
      const s = await seeded({ team: budget(10) });
      await s.insert([
        { type: 'team', record: { ...team('t2'), createdAt: new Date(T0.getTime() + 1) }, budget: NO_BUDGET },
        { type: 'member', record: member('t1', 'u1', 'admin'), budget: budget(3) },
        { type: 'key', record: key('k2', 'u1', 't2'), budget: NO_BUDGET },
      ]);
      await s.settle({
        reservationId: 'x',
        scopes: [K, T],
        costNano: 400,
        now: T0,
        log: spendLogFixture('t-1'),
      });
      const updated = await s.updateTeam(
        't1',
        { teamAlias: 'web', blocked: true, models: ['gpt-4o'] },
        { maxBudgetNano: 20e9 },
      );
      expect(updated).toEqual({ ...team('t1', 'web'), blocked: true, models: ['gpt-4o'] });
      expect(await s.getTeam('t1')).toEqual(updated);
      expect(await s.getBudgets([T], T0)).toMatchObject([{ maxBudgetNano: 20e9, spendNano: 400 }]);
      expect(await s.updateTeam('nope', { blocked: true })).toBeNull();
      expect((await s.listTeams({})).map((t) => t.teamId)).toEqual(['t1', 't2']);
      expect((await s.listTeams({ userId: 'u1' })).map((t) => t.teamId)).toEqual(['t1']);

      const u = await s.updateUser(
        'u1',
        { userEmail: 'a@x.io', userRole: 'proxy_admin' },
        { maxBudgetNano: 1e9 },
      );
      expect(u).toEqual({ ...user('u1', ['t1']), userEmail: 'a@x.io', userRole: 'proxy_admin' });
      expect(await s.getBudgets([U], T0)).toMatchObject([{ maxBudgetNano: 1e9 }]);
      expect(await s.updateUser('nope', {})).toBeNull();

      // One missing among them: none is deleted.
      expect(await s.deleteTeams(['t1', 'nope'])).toBeNull();
      expect(await s.getTeam('t1')).not.toBeNull();
      expect(await s.getKey('k1')).not.toBeNull();
      expect(await s.deleteTeams(['t1'])).toEqual({ deletedKeys: ['k1'] });
      expect(await s.getTeam('t1')).toBeNull();
      expect(await s.getKey('k1')).toBeNull();
      expect(await s.getKey('k2')).not.toBeNull();
      expect(await raw(s).budgetCounter(T)).toBeNull();
      expect(await raw(s).budgetCounter(K)).toBeNull();
      expect(await raw(s).budgetCounter({ kind: 'member', id: memberScopeId('t1', 'u1') })).toBeNull();
      expect(await s.listMembers({ teamId: 't1' })).toEqual([]);
      expect((await s.getUser('u1'))?.teams).toEqual([]);
      expect(await s.querySpendLogs({ teamId: 't1' })).toHaveLength(1);
      expect(await s.deleteTeams(['t1'])).toBeNull();

      expect(await s.deleteUsers(['u1', 'nope'])).toBeNull();
      expect(await s.getUser('u1')).not.toBeNull();
      expect(await s.getKey('k2')).not.toBeNull();
      expect(await s.deleteUsers(['u1'])).toEqual({ deletedKeys: ['k2'] });
      expect(await s.getUser('u1')).toBeNull();
      expect(await s.getKey('k2')).toBeNull();
      expect(await raw(s).budgetCounter(U)).toBeNull();
      expect(await s.deleteUsers(['u1'])).toBeNull();
      expect(await s.querySpendLogs({ userId: 'u1' })).toHaveLength(1);
      await s.close();
    });

    it('adds, updates and removes team members with their member budget counters', async () => {
      const s = await seeded();
      await s.insert([
        { type: 'team', record: team('t2'), budget: NO_BUDGET },
        { type: 'user', record: user('u2'), budget: NO_BUDGET },
        { type: 'member', record: member('t1', 'u1', 'user'), budget: NO_BUDGET },
        { type: 'member', record: member('t2', 'u2', 'admin'), budget: budget(2) },
        { type: 'key', record: key('k2', 'u2', 't2'), budget: NO_BUDGET },
        { type: 'key', record: key('k3', 'u2', null), budget: NO_BUDGET },
      ]);
      const M2: ScopeRef = { kind: 'member', id: memberScopeId('t2', 'u2') };
      expect((await s.getUser('u2'))?.teams).toEqual(['t2']);
      expect((await s.getUser('u1'))?.teams).toEqual(['t1']);
      expect(await s.listMembers({ teamId: 't2' })).toEqual([member('t2', 'u2', 'admin')]);
      expect((await s.listMembers({ userId: 'u1' })).map((m) => m.teamId)).toEqual(['t1']);
      expect((await s.listUsers({ teamId: 't2' })).map((u) => u.userId)).toEqual(['u2']);
      expect(await s.getBudgets([M2], T0)).toMatchObject([{ scope: M2, maxBudgetNano: 2e9, spendNano: 0 }]);
      // A member budget is a counter like any other: it reserves and settles.
      const r = await s.reserve({
        reservationId: 'm',
        scopes: [M2],
        amountNano: 1e9,
        now: T0,
        expiresAt: new Date(T0.getTime() + 6e4),
      });
      expect(r.ok).toBe(true);
      await s.settle({
        reservationId: 'm',
        scopes: [M2],
        costNano: 5e8,
        now: T0,
        log: spendLogFixture('m-1'),
      });
      await expect(
        s.insert([{ type: 'member', record: member('t2', 'u2', 'user'), budget: NO_BUDGET }]),
      ).rejects.toBeInstanceOf(StorageConflictError);
      await expect(
        s.insert([{ type: 'member', record: member('t2', 'ghost', 'user'), budget: NO_BUDGET }]),
      ).rejects.toThrow();
      expect(await s.listMembers({ userId: 'ghost' })).toEqual([]);

      expect(await s.updateMember('t2', 'u2', { role: 'user' }, { maxBudgetNano: 4e9 })).toEqual(
        member('t2', 'u2', 'user'),
      );
      expect(await s.getBudgets([M2], T0)).toMatchObject([{ maxBudgetNano: 4e9, spendNano: 5e8 }]);
      expect(await s.updateMember('t1', 'u2', { role: 'admin' })).toBeNull();

      expect(await s.deleteMember('t2', 'u2')).toEqual({ deletedKeys: ['k2'] });
      expect(await s.getKey('k2')).toBeNull();
      expect(await s.getKey('k3')).not.toBeNull();
      expect(await raw(s).budgetCounter(M2)).toBeNull();
      expect((await s.getUser('u2'))?.teams).toEqual([]);
      expect(await s.deleteMember('t2', 'u2')).toBeNull();
      await s.close();
    });
  });
}

function member(teamId: string, userId: string, role: MemberRecord['role']): MemberRecord {
  return { teamId, userId, role, createdAt: T0 };
}
