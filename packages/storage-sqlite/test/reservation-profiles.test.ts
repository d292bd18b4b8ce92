// Reservation profiles (migration 10): what a key's calls share is written once and pointed to. These
// cases pin what the cache may and may not remember: content (never identity) finds a profile, and an
// id written by a transaction that rolled back is never handed out.

import { spendLogFixture } from '@spendguard/core/conformance';
import type { PendingCall, ReserveInput, ScopeRef } from '@spendguard/core/storage';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { SqliteStorage } from '../src/index.js';
import { tempStores } from './temp-stores.js';

const { freshPath, open } = tempStores('spendguard-profiles-');

const T0 = new Date('2026-03-10T12:00:00.000Z');

/** Uncapped counters for these scopes, written as another process would. */
function counters(path: string, ...scopes: ScopeRef[]) {
  const db = new Database(path);
  const insert = db.prepare(
    'INSERT OR IGNORE INTO budgets (scope_kind, scope_id, max_budget_nano, budget_duration, budget_reset_at, spend_nano, reserved_nano) VALUES (?, ?, NULL, NULL, NULL, 0, 0)',
  );
  for (const { kind, id } of scopes) insert.run(kind, id);
  db.close();
}

function call(over: Partial<PendingCall> = {}): PendingCall {
  return {
    requestId: 'unset',
    callType: 'acompletion',
    apiKeyHash: 'kh',
    model: 'gpt-4o-mini',
    userId: 'u1',
    teamId: 't1',
    endUser: null,
    tags: [],
    startTime: T0,
    ...over,
  };
}

const reservation = (id: string, scopes: ScopeRef[], pending?: PendingCall): ReserveInput => ({
  reservationId: id,
  scopes,
  amountNano: 10,
  now: T0,
  expiresAt: T0,
  ...(pending ? { pending: { ...pending, requestId: id } } : {}),
});

const profileRows = (path: string) => {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare('SELECT body FROM reservation_profiles ORDER BY id').pluck().all() as string[];
  } finally {
    db.close();
  }
};

/** Charges every reservation (all expire at T0) and answers their spend logs' attribution. */
async function expireAll(s: SqliteStorage) {
  await s.expireReservations(T0);
  const logs = await s.querySpendLogs({});
  return Object.fromEntries(logs.map((l) => [l.requestId, [l.userId, l.teamId, l.model, l.endUser, l.tags]]));
}

describe('reservation profiles', () => {
  it('writes one profile per distinct content, however many calls share it', async () => {
    const path = freshPath();
    const s = await open(path);
    const K: ScopeRef = { kind: 'key', id: 'kh' };
    const T: ScopeRef = { kind: 'team', id: 't1' };
    counters(path, K, T);
    for (let i = 0; i < 5; i++) expect((await s.reserve(reservation(`r${i}`, [K, T], call()))).ok).toBe(true);
    await s.reserve(reservation('other-model', [K, T], call({ model: 'gpt-4o' })));
    await s.reserve(reservation('no-call', [K, T]));
    await s.reserve(reservation('other-scopes', [K], call()));
    // End user and tags are each call's own: they live in the reservation row, not in its profile.
    await s.reserve(reservation('own-fields', [K, T], call({ endUser: 'eu', tags: ['x'] })));
    expect(profileRows(path)).toHaveLength(4);
    const logs = await expireAll(s);
    expect(logs.r3).toEqual(['u1', 't1', 'gpt-4o-mini', null, []]);
    expect(logs['other-model']).toEqual(['u1', 't1', 'gpt-4o', null, []]);
    expect(logs['own-fields']).toEqual(['u1', 't1', 'gpt-4o-mini', 'eu', ['x']]);
    expect((await s.getBudgets([K, T], T0)).map((b) => [b.spendNano, b.reservedNano])).toEqual([
      [90, 0],
      [80, 0], // 'other-scopes' held the key alone
    ]);
    await s.close();
  });

  it('tells apart ids that would run together (any character may be in an id)', async () => {
    const path = freshPath();
    const s = await open(path);
    const a: ScopeRef[] = [
      { kind: 'user', id: 'a;user 1' },
      { kind: 'team', id: 'b' },
    ];
    const b: ScopeRef[] = [
      { kind: 'user', id: 'a' },
      { kind: 'user', id: '1' }, // "a;user 1" read as two scopes if the key were only joined
      { kind: 'team', id: 'b' },
    ];
    counters(path, ...a, ...b);
    await s.reserve(reservation('ra', a, call()));
    await s.reserve(reservation('rb', b, call()));
    // The same scopes, and a call whose fields would run together: model 'ab' + user 'c' / 'a' + 'bc'.
    await s.reserve(reservation('rc', a, call({ model: 'ab', userId: 'c' })));
    await s.reserve(reservation('rd', a, call({ model: 'a', userId: 'bc' })));
    expect(profileRows(path)).toHaveLength(4);
    const logs = await expireAll(s);
    expect(logs.rc!.slice(0, 3)).toEqual(['c', 't1', 'ab']);
    expect(logs.rd!.slice(0, 3)).toEqual(['bc', 't1', 'a']);
    // Each released what it held, and was charged where it reserved.
    const held = await s.getBudgets([...a, ...b.slice(0, 2)], T0);
    expect(held.map((c) => [c.scope.id, c.spendNano, c.reservedNano])).toEqual([
      ['a;user 1', 30, 0],
      ['b', 40, 0],
      ['a', 10, 0],
      ['1', 10, 0],
    ]);
    await s.close();
  });

  it('never points a reservation at a profile whose transaction rolled back', async () => {
    const path = freshPath();
    const s = await open(path);
    const K: ScopeRef = { kind: 'key', id: 'kh' };
    counters(path, K);
    await s.reserve(reservation('taken', [K]));
    // One turn, one transaction: the first write makes a new profile, the second fails (its id is
    // taken), so the transaction rolls back and each write runs again alone. The first must write its
    // profile again, not reuse the id its rolled-back attempt was given.
    const [first, second] = await Promise.allSettled([
      s.reserve(reservation('fresh', [K], call({ model: 'new-model' }))),
      s.reserve(reservation('taken', [K])),
    ]);
    expect(first.status).toBe('fulfilled');
    expect(second.status).toBe('rejected');
    // A lone write that fails with a new profile leaves nothing behind either.
    await expect(
      s.reserve({ ...reservation('fractional', [K], call({ model: 'third-model' })), amountNano: 0.5 }),
    ).rejects.toThrow();
    expect((await s.reserve(reservation('after', [K], call({ model: 'third-model' })))).ok).toBe(true);
    const logs = await expireAll(s);
    expect(logs.fresh![2]).toBe('new-model');
    expect(logs.after![2]).toBe('third-model');
    expect(profileRows(path).filter((b) => b.includes('model'))).toHaveLength(2);
    await s.close();
  });

  it('finds a profile another connection wrote, and settles reservations across connections', async () => {
    const path = freshPath();
    const [a, b] = [await open(path), await open(path)];
    const K: ScopeRef = { kind: 'key', id: 'kh' };
    counters(path, K);
    await a.reserve(reservation('from-a', [K], call()));
    await b.reserve(reservation('from-b', [K], call()));
    expect(profileRows(path)).toHaveLength(1);
    // Each connection releases the other's reservation, reading the profile it did not write.
    for (const [s, id] of [
      [b, 'from-a'],
      [a, 'from-b'],
    ] as const) {
      const settled = await s.settle({
        reservationId: id,
        scopes: [K],
        costNano: 3,
        now: T0,
        log: spendLogFixture(id, { apiKeyHash: 'kh', spendNano: 3 }),
      });
      expect(settled.applied).toBe(true);
    }
    const [k] = await a.getBudgets([K], T0);
    expect([k!.spendNano, k!.reservedNano]).toEqual([6, 0]);
    await Promise.all([a.close(), b.close()]);
  });
});
