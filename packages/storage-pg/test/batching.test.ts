import {
  type ReserveInput,
  type ScopeRef,
  type SettleInput,
  type SettleResult,
  StorageConflictError,
} from '@spendguard/core/storage';
import { describe, expect, it } from 'vitest';
import { type PgStorage, pgRawReader } from '../src/index.js';
import { int8AsNumber } from '../src/int8-types.js';
import { applyMigrations } from '../src/migrations.js';
import { internalsOf } from '../src/pg-storage.js';
import { admin, freshSchema, open } from './test-schemas.js';

// Batched guarded writes (migration 8, PgStorage's micro-batcher), against the real Postgres.

const T0 = new Date('2026-03-10T12:00:00.000Z');
const K: ScopeRef = { kind: 'key', id: 'k1' };
const U: ScopeRef = { kind: 'user', id: 'u1' };
const T: ScopeRef = { kind: 'team', id: 't1' };

/** Team t1, user u1 and key k1 (and k2 for u1), with these caps in nano-dollars (null: none). */
async function seed(s: PgStorage, caps: { key?: number | null; team?: number | null } = {}) {
  const budget = (max: number | null | undefined) => ({
    maxBudgetNano: max ?? null,
    budgetDuration: null,
    budgetResetAt: null,
  });
  const key = (tokenHash: string) => ({
    type: 'key' as const,
    record: {
      tokenHash,
      keyName: 'sk-...',
      keyAlias: null,
      userId: 'u1',
      teamId: 't1',
      models: [],
      tags: [],
      metadata: {},
      blocked: false,
      expiresAt: null,
      createdAt: T0,
    },
    budget: budget(tokenHash === 'k1' ? caps.key : null),
  });
  await s.insert([
    {
      type: 'team',
      record: { teamId: 't1', teamAlias: null, models: [], metadata: {}, blocked: false, createdAt: T0 },
      budget: budget(caps.team),
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
        createdAt: T0,
      },
      budget: budget(null),
    },
    key('k1'),
    key('k2'),
  ]);
}

const reserve = (id: string, amountNano: number, scopes = [K, U, T]): ReserveInput => ({
  reservationId: id,
  scopes,
  amountNano,
  now: T0,
  expiresAt: new Date(T0.getTime() + 60_000),
});

const settle = (
  reservationId: string,
  requestId: string,
  costNano: number,
  o: { key?: string; model?: string; provider?: string | null; tags?: string[]; failed?: boolean } = {},
): SettleInput => {
  const key = o.key ?? 'k1';
  return {
    reservationId,
    scopes: [{ kind: 'key', id: key }, U, T],
    costNano,
    now: T0,
    log: {
      requestId,
      callType: 'acompletion',
      apiKeyHash: key,
      spendNano: costNano,
      promptTokens: 10,
      completionTokens: 5,
      totalTokens: 15,
      startTime: T0,
      endTime: T0,
      model: o.model ?? 'gpt-4o',
      provider: o.provider === undefined ? 'openai' : o.provider,
      userId: 'u1',
      teamId: 't1',
      endUser: null,
      tags: o.tags ?? [],
      status: o.failed ? 'failure' : 'success',
      estimated: false,
      httpStatus: o.failed ? 500 : 200,
      metadata: {},
    },
  };
};

const batches = (s: PgStorage) => {
  const { reserve, settle } = internalsOf(s).batches;
  return { reserve: { ...reserve }, settle: { ...settle } };
};

async function rows(s: PgStorage, sql: string): Promise<Record<string, unknown>[]> {
  const { pool, schema } = internalsOf(s);
  const res = await pool.query({ text: sql.replaceAll('$schema', `"${schema}"`), types: int8AsNumber });
  return res.rows;
}

describe('postgres batched guarded writes', () => {
  it('admits exactly K of N reservations submitted together, in one batch, in submission order', async () => {
    const s = await open();
    await seed(s, { team: 7 * 10 });
    const before = batches(s);
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => s.reserve(reserve(`p${i}`, 10))));
    const after = batches(s);
    expect(after.reserve.batches - before.reserve.batches).toBe(1);
    expect(after.reserve.largest).toBe(30);
    // The first 7 submitted fit; each later one is refused on the team, seeing the 7 reserved.
    expect(results.map((r) => r.ok)).toEqual(Array.from({ length: 30 }, (_, i) => i < 7));
    const refused = results[7];
    if (refused && !refused.ok) expect(refused.refused).toMatchObject({ scope: T, reservedNano: 70 });
    const admitted = results[6];
    if (admitted?.ok) expect(admitted.states.map((st) => st.reservedNano)).toEqual([70, 70, 70]);
    const raw = pgRawReader(s);
    for (const scope of [K, U, T])
      expect(await raw.budgetCounter(scope)).toEqual({ spendNano: 0, reservedNano: 70 });
    expect(await raw.openReservations()).toBe(7);
  });

  it('sends a lone call at once, and calls arriving while a batch is in flight together in the next', async () => {
    const s = await open();
    await seed(s);
    const { schema } = internalsOf(s);
    // Hold the team counter's row lock, so that the first batch stays in flight.
    const blocker = await admin.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query(`SELECT 1 FROM "${schema}".budgets WHERE scope_kind = 'team' FOR UPDATE`);
      const before = batches(s).reserve;
      const first = s.reserve(reserve('first', 1));
      await new Promise((r) => setImmediate(r));
      expect(batches(s).reserve.batches - before.batches).toBe(1); // sent alone, without waiting
      // Ten more, each from its own macrotask, while the first is in flight.
      const later: Array<Promise<unknown>> = [];
      for (let i = 0; i < 10; i++) {
        later.push(s.reserve(reserve(`later-${i}`, 1)));
        await new Promise((r) => setImmediate(r));
      }
      expect(batches(s).reserve.batches - before.batches).toBe(1);
      await blocker.query('COMMIT');
      await Promise.all([first, ...later]);
      const after = batches(s).reserve;
      expect(after.batches - before.batches).toBe(2);
      expect(after.ops - before.ops).toBe(11);
      expect(after.largest).toBe(10);
    } finally {
      blocker.release();
    }
    expect(await pgRawReader(s).budgetCounter(T)).toEqual({ spendNano: 0, reservedNano: 11 });
  });

  it('fails only the op whose reservation id is taken, in the same batch or before', async () => {
    const s = await open();
    await seed(s, { key: 100 });
    await s.reserve(reserve('taken', 10));
    const before = batches(s).reserve;
    const results = await Promise.allSettled([
      s.reserve(reserve('a', 10)),
      s.reserve(reserve('a', 10)),
      s.reserve(reserve('taken', 10)),
      s.reserve(reserve('b', 10)),
    ]);
    expect(batches(s).reserve.batches - before.batches).toBe(1);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    for (const r of [results[1], results[2]]) {
      expect(r?.status === 'rejected' && r.reason).toBeInstanceOf(StorageConflictError);
    }
    // The conflicting ops reserved nothing: 'b' saw 10 + 10 reserved before it.
    const b = results[3];
    expect(b?.status === 'fulfilled' && b.value.ok && b.value.states[0]?.reservedNano).toBe(30);
    expect(await pgRawReader(s).budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: 30 });
    expect(await pgRawReader(s).openReservations()).toBe(3);
  });

  it('fails only the op whose reservation id a concurrent statement takes while its batch runs', async () => {
    const s = await open();
    await seed(s);
    const { schema } = internalsOf(s);
    const other = await admin.connect();
    try {
      // Another writer inserts 'dup' and has not committed: the batch cannot see it, decides 'dup' is
      // free, and then waits on that insert at its own.
      const { rows: me } = await other.query('SELECT pg_backend_pid() AS pid');
      await other.query('BEGIN');
      await other.query(
        `INSERT INTO "${schema}".reservations (id, scopes, amount_nano, expires_at, created_at) VALUES ('dup', '[]', 0, $1, $1)`,
        [T0.toISOString()],
      );
      const results = Promise.allSettled([s.reserve(reserve('dup', 10)), s.reserve(reserve('fine', 10))]);
      let waiting = 0;
      // Only this test's own waiter: a backend blocked by `other`'s transaction (other tests' batches on
      // the same server wait on theirs), running the batch on this test's schema.
      for (let i = 0; i < 2000 && waiting === 0; i++) {
        const { rows: found } = await admin.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE $1::int = ANY (pg_blocking_pids(pid)) AND query LIKE '%spendguard_reserve_batch%'
             AND query LIKE $2`,
          [me[0].pid, `%"${schema}"%`],
        );
        waiting = found[0].n;
      }
      expect(waiting).toBe(1);
      await other.query('COMMIT');
      const [dup, fine] = await results;
      expect(dup?.status === 'rejected' && dup.reason).toBeInstanceOf(StorageConflictError);
      expect(fine?.status === 'fulfilled' && fine.value.ok).toBe(true);
    } finally {
      other.release();
    }
    expect(await pgRawReader(s).budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: 10 });
    expect(await pgRawReader(s).openReservations()).toBe(2);
  });

  it('fails only the op naming a key without a counter or an unknown mode', async () => {
    const s = await open();
    await seed(s);
    const results = await Promise.allSettled([
      s.reserve(reserve('a', 10)),
      s.reserve(reserve('b', 10, [{ kind: 'key', id: 'nope' }, U])),
      s.reserve({ ...reserve('c', 10), mode: 'lenient' as never }),
      s.reserve(reserve('d', 10)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect(results[1]?.status === 'rejected' && String(results[1].reason)).toMatch(
      /no budget counter for key:nope/,
    );
    expect(results[2]?.status === 'rejected' && String(results[2].reason)).toMatch(
      /unknown enforcement mode/,
    );
    expect(await pgRawReader(s).budgetCounter(U)).toEqual({ spendNano: 0, reservedNano: 20 });
  });

  it('fails only the op whose value Postgres refuses, and writes the rest of its batch', async () => {
    const s = await open();
    await seed(s);
    await s.reserve(reserve('r1', 5));
    await s.reserve(reserve('r2', 7));
    const before = batches(s).settle;
    // A NUL in a scope kind (nothing screens kinds: core never makes such a one) fails the whole
    // statement with 22021; the batch is sent again in halves until each fails alone.
    const poisoned = (id: string) => ({
      ...settle('none', id, 1),
      scopes: [{ kind: 'ta\u0000g' as never, id: 'x' }],
    });
    const results = await Promise.allSettled([
      s.settle(settle('r1', 'q1', 5)),
      s.settle(poisoned('q2')),
      s.settle(poisoned('q3')),
      s.settle(settle('r2', 'q4', 7)),
    ]);
    const after = batches(s).settle;
    expect(after.batches - before.batches).toBe(1); // they were one batch
    expect(after.resent - before.resent).toBeGreaterThan(0);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    for (const r of [results[1], results[2]]) {
      expect(r?.status === 'rejected' && s.isInputError(r.reason)).toBe(true);
    }
    const raw = pgRawReader(s);
    expect(await raw.budgetCounter(K)).toEqual({ spendNano: 12, reservedNano: 0 });
    expect(await raw.spendLogCount()).toBe(2);
    expect(await raw.openReservations()).toBe(0);
  });

  it('fails an op whose value Postgres cannot store at once, without sending it in a batch', async () => {
    const s = await open();
    await seed(s);
    await s.reserve(reserve('r1', 5));
    const before = batches(s);
    const pending = {
      requestId: 'p',
      callType: 'acompletion',
      apiKeyHash: 'k1',
      model: 'gpt-4o',
      userId: 'u1',
      teamId: 't1',
      endUser: null,
      startTime: T0,
    };
    const refused = await Promise.allSettled([
      s.reserve(reserve('a', 1, [K, U, T, { kind: 'tag', id: 'bad\u0000' }])),
      s.reserve({ ...reserve('b', 1), pending: { ...pending, tags: ['\ud800'] } }),
      s.reserve(reserve('c', 0.5)),
      s.settle(settle('none', 'q1', 1, { model: 'gpt\u00004o' })),
      s.settle(settle('none', 'q2', 2 ** 64)),
      s.settle({ ...settle('none', 'q3', 1), log: { ...settle('none', 'q3', 1).log, promptTokens: 3e9 } }),
      s.settle({ ...settle('none', 'q4', 1), now: new Date(Number.NaN) }),
    ]);
    for (const r of refused) expect(r.status === 'rejected' && s.isInputError(r.reason)).toBe(true);
    expect(batches(s)).toEqual(before); // none of them reached a batch
    expect((await s.settle(settle('r1', 'q5', 5))).applied).toBe(true);
    expect(await pgRawReader(s).spendLogCount()).toBe(1);
  });

  it('fails every op of a batch whose statement fails for another reason, and writes none of them', async () => {
    const s = await open();
    await seed(s);
    await s.reserve(reserve('r1', 5));
    const { schema } = internalsOf(s);
    await admin.query(`ALTER TABLE "${schema}".spend_logs RENAME TO spend_logs_away`);
    const before = batches(s).settle;
    const results = await Promise.allSettled([
      s.settle(settle('r1', 'q1', 5)),
      s.settle(settle('none', 'q2', 1)),
    ]);
    await admin.query(`ALTER TABLE "${schema}".spend_logs_away RENAME TO spend_logs`);
    expect(batches(s).settle.batches - before.batches).toBe(1);
    expect(batches(s).settle.resent).toBe(before.resent); // not blamed on a value: not split
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(results[0]?.status === 'rejected' && s.isInputError(results[0].reason)).toBe(false);
    const raw = pgRawReader(s);
    expect(await raw.budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: 5 });
    expect(await raw.spendLogCount()).toBe(0);
    expect(await raw.openReservations()).toBe(1);
    // The same op then goes through.
    expect((await s.settle(settle('r1', 'q1', 5))).applied).toBe(true);
  });

  it('fails only the reservation whose scope Postgres refuses, in a batch of many', async () => {
    const s = await open();
    await seed(s, { key: 100 });
    const before = batches(s).reserve;
    const poisoned = { kind: 'ta\u0000g' as never, id: 'x' } as ScopeRef;
    const results = await Promise.allSettled(
      Array.from({ length: 9 }, (_, i) =>
        s.reserve(reserve(`p${i}`, 10, i === 4 ? [K, U, T, poisoned] : [K, U, T])),
      ),
    );
    expect(batches(s).reserve.batches - before.batches).toBe(1);
    expect(results.map((r) => r.status)).toEqual(
      Array.from({ length: 9 }, (_, i) => (i === 4 ? 'rejected' : 'fulfilled')),
    );
    expect(results[4]?.status === 'rejected' && s.isInputError(results[4].reason)).toBe(true);
    // Submission order kept: the 8 admitted saw 10 more reserved each, the last one 80 in all.
    const last = results[8];
    expect(last?.status === 'fulfilled' && last.value.ok && last.value.states[0]?.reservedNano).toBe(80);
    expect(await pgRawReader(s).budgetCounter(K)).toEqual({ spendNano: 0, reservedNano: 80 });
    expect(await pgRawReader(s).openReservations()).toBe(8);
  });

  it('applies a request id settled twice in one batch once', async () => {
    const s = await open();
    await seed(s);
    await s.reserve(reserve('r1', 50));
    const before = batches(s).settle;
    const [first, again, other] = await Promise.all([
      s.settle(settle('r1', 'q1', 30, { tags: ['a'] })),
      s.settle(settle('r1', 'q1', 30, { tags: ['a'] })),
      s.settle(settle('none', 'q2', 7)),
    ]);
    expect(batches(s).settle.batches - before.batches).toBe(1);
    expect([first?.applied, again?.applied, other?.applied]).toEqual([true, false, true]);
    // The repeat answers the states as the first left them.
    expect(again?.states.map((st) => [st.spendNano, st.reservedNano])).toEqual([
      [30, 0],
      [30, 0],
      [30, 0],
    ]);
    expect(await pgRawReader(s).budgetCounter(K)).toEqual({ spendNano: 37, reservedNano: 0 });
    expect(await pgRawReader(s).spendLogCount()).toBe(2);
    expect(await rows(s, 'SELECT tag, requests, spend_nano FROM $schema.daily_tag_spend')).toEqual([
      { tag: 'a', requests: 1, spend_nano: 30 },
    ]);
  });

  it('writes counters and rollups equal to the sum of a concurrent batch of settles', async () => {
    const s = await open();
    await seed(s);
    const ops = Array.from({ length: 60 }, (_, i) =>
      settle(`r${i}`, `q${i}`, 1000 + i, {
        key: i % 3 === 0 ? 'k2' : 'k1',
        model: ['gpt-4o', 'gpt-4o-mini', 'claude'][i % 3]!,
        provider: i % 5 === 0 ? null : 'openai',
        tags: i % 4 === 0 ? ['x', 'y', 'x'] : i % 4 === 1 ? ['y'] : [],
        failed: i % 7 === 0,
      }),
    );
    // Half of them with a reservation, reserved together first.
    await Promise.all(
      ops.filter((_, i) => i % 2 === 0).map((op) => s.reserve(reserve(op.reservationId, 5000, op.scopes))),
    );
    const before = batches(s).settle;
    const results = await Promise.all(ops.map((op) => s.settle(op)));
    expect(batches(s).settle.batches - before.batches).toBe(1);
    expect(results.every((r) => r.applied)).toBe(true);

    const sum = (xs: SettleInput[]) => xs.reduce((n, x) => n + x.costNano, 0);
    const raw = pgRawReader(s);
    expect(await raw.budgetCounter(T)).toEqual({ spendNano: sum(ops), reservedNano: 0 });
    expect(await raw.budgetCounter(U)).toEqual({ spendNano: sum(ops), reservedNano: 0 });
    expect(await raw.budgetCounter(K)).toEqual({
      spendNano: sum(ops.filter((o) => o.log.apiKeyHash === 'k1')),
      reservedNano: 0,
    });
    expect(await raw.spendLogCount()).toBe(60);
    expect(await raw.openReservations()).toBe(0);

    // Every rollup, full and narrow, holds exactly the per-group sums of the logs.
    const dims = {
      daily_spend: ['day', 'team_id', 'user_id', 'api_key_hash', 'model', 'provider', 'end_user'],
      daily_team_spend: ['day', 'team_id', 'model', 'provider'],
      daily_key_spend: ['day', 'team_id', 'user_id', 'api_key_hash'],
      daily_tag_spend: ['day', 'tag', 'team_id', 'user_id', 'api_key_hash', 'model', 'provider', 'end_user'],
      daily_team_tag_spend: ['day', 'tag', 'team_id', 'model', 'provider'],
    };
    for (const [table, cols] of Object.entries(dims)) {
      const tagged = cols.includes('tag');
      const g = cols.map((c) => `g.${c}`).join(', ');
      const fromLogs = `SELECT ${g}, count(*)::bigint AS requests,
          count(*) FILTER (WHERE g.status = 'failure')::bigint AS failed_requests, sum(g.spend_nano)::bigint AS spend_nano,
          sum(g.prompt_tokens)::bigint AS prompt_tokens, sum(g.completion_tokens)::bigint AS completion_tokens
        FROM (SELECT (l.start_time AT TIME ZONE 'UTC')::date AS day, coalesce(l.team_id, '') AS team_id,
            coalesce(l.user_id, '') AS user_id, l.api_key_hash, l.model, coalesce(l.provider, '') AS provider,
            coalesce(l.end_user, '') AS end_user, l.status, l.spend_nano, l.prompt_tokens, l.completion_tokens
            ${tagged ? ', t.tag' : ''}
          FROM $schema.spend_logs l ${tagged ? 'CROSS JOIN LATERAL unnest(l.tags) AS t (tag)' : ''}) g
        GROUP BY ${g} ORDER BY ${g}`;
      const stored = `SELECT ${cols.join(', ')}, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens
        FROM $schema.${table} ORDER BY ${cols.join(', ')}`;
      const expected = await rows(s, fromLogs);
      expect(expected.length).toBeGreaterThan(1);
      expect(await rows(s, stored)).toEqual(expected);
    }
    const [tags] = await rows(s, 'SELECT sum(requests)::int AS n FROM $schema.daily_tag_spend');
    expect(tags?.n).toBe(15 * 3 + 15); // a tag given twice counts twice
  });

  it('lets the TTL sweep and late settles of the same reservations share a batch', async () => {
    const s = await open();
    await seed(s);
    const later = new Date(T0.getTime() + 120_000);
    const pending = (requestId: string) => ({
      requestId,
      callType: 'acompletion',
      apiKeyHash: 'k1',
      model: 'gpt-4o',
      userId: 'u1',
      teamId: 't1',
      endUser: null,
      tags: [],
      startTime: T0,
    });
    await Promise.all(
      ['a', 'b', 'c'].map((id) => s.reserve({ ...reserve(`res-${id}`, 100), pending: pending(`req-${id}`) })),
    );
    const { schema } = internalsOf(s);
    const blocker = await admin.connect();
    let results: [SettleResult, number, SettleResult, SettleResult];
    try {
      // A settle held in flight on the team counter's lock, so that the next five queue together:
      // a late settle of 'a', the sweep's claims of 'a', 'b' and 'c', then a late settle of 'c'.
      await blocker.query('BEGIN');
      await blocker.query(`SELECT 1 FROM "${schema}".budgets WHERE scope_kind = 'team' FOR UPDATE`);
      const held = s.settle({ ...settle('none', 'req-first', 1), now: later });
      await new Promise((r) => setImmediate(r)); // sent
      const settledA = s.settle({ ...settle('res-a', 'req-a', 30), now: later });
      const swept = s.expireReservations(later);
      // The sweep first reads the expired reservations (a round trip of its own): wait for its claims
      // to queue, by a deadline rather than a count of turns, which a loaded machine outruns.
      for (const end = Date.now() + 10_000; internalsOf(s).batches.settle.queued < 4 && Date.now() < end; ) {
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(internalsOf(s).batches.settle.queued).toBe(4);
      const settledC = s.settle({ ...settle('res-c', 'req-c', 40), now: later });
      const before = batches(s).settle;
      await blocker.query('COMMIT');
      results = await Promise.all([held, swept, settledA, settledC]);
      expect(batches(s).settle.batches - before.batches).toBe(1);
      expect(batches(s).settle.largest).toBe(5);
    } finally {
      blocker.release();
    }
    const [, n, a, c] = results;
    // In order: 'a' settles (its claim then finds it closed: 'missing'), the sweep charges 'b' and 'c'
    // at their estimate, and 'c''s own settle finds its log (nothing more charged).
    expect(a.applied).toBe(true);
    expect(n).toBe(2);
    expect(c.applied).toBe(false);
    expect(await pgRawReader(s).budgetCounter(K)).toEqual({ spendNano: 231, reservedNano: 0 });
    expect(await pgRawReader(s).openReservations()).toBe(0);
    const logs = await rows(s, 'SELECT request_id, spend_nano, estimated FROM $schema.spend_logs ORDER BY 1');
    expect(logs).toEqual([
      { request_id: 'req-a', spend_nano: 30, estimated: false },
      { request_id: 'req-b', spend_nano: 100, estimated: true },
      { request_id: 'req-c', spend_nano: 100, estimated: true },
      { request_id: 'req-first', spend_nano: 1, estimated: false },
    ]);
  });

  it('never deadlocks with several instances batching on shared rollup rows', async () => {
    const schema = freshSchema();
    const instances = await Promise.all([open(schema), open(schema), open(schema)]);
    // Two keys of no team per instance: no counter is shared between instances, so nothing but the
    // rollups' lock order keeps their batches from deadlocking on the narrow rollups' team '' rows.
    const keysOf = (k: number) => [`k-${k}-a`, `k-${k}-b`];
    await instances[0]!.insert(
      [0, 1, 2].flatMap(keysOf).map((tokenHash) => ({
        type: 'key' as const,
        record: {
          tokenHash,
          keyName: 'sk-...',
          keyAlias: null,
          userId: null,
          teamId: null,
          models: [],
          tags: [],
          metadata: {},
          blocked: false,
          expiresAt: null,
          createdAt: T0,
        },
        budget: { maxBudgetNano: null, budgetDuration: null, budgetResetAt: null },
      })),
    );
    let n = 0;
    const call = async (s: PgStorage, k: number, worker: number, i: number) => {
      const id = `${k}-${worker}-${i}-${n++}`;
      const key = keysOf(k)[(worker + i) % 2]!;
      const scopes: ScopeRef[] = [{ kind: 'key', id: key }];
      const r = await s.reserve(reserve(`res-${id}`, 50, scopes));
      if (!r.ok) throw new Error('refused');
      const op = settle(`res-${id}`, `req-${id}`, 10, {
        key,
        model: ['m-a', 'm-b', 'm-c', 'm-d'][(worker * 3 + i * 5 + k) % 4]!,
        provider: ['openai', 'azure', null][(worker + i * 2 + k) % 3]!,
        tags: [['z', 'a'], ['a'], ['q', 'z', 'a'], [], ['b', 'q']][(worker + i + k) % 5]!,
      });
      const done = await s.settle({ ...op, scopes, log: { ...op.log, userId: null, teamId: null } });
      if (!done.applied) throw new Error('not applied');
    };
    // 3 instances x 16 workers x 15 calls, all at once.
    await Promise.all(
      instances.flatMap((s, k) =>
        Array.from({ length: 16 }, async (_, w) => {
          for (let i = 0; i < 15; i++) await call(s, k, w, i);
        }),
      ),
    );
    const total = 3 * 16 * 15;
    const raw = pgRawReader(instances[0]!);
    expect(await raw.spendLogCount()).toBe(total);
    expect(await raw.openReservations()).toBe(0);
    const [sums] = await rows(
      instances[0]!,
      `SELECT (SELECT sum(spend_nano)::int FROM $schema.daily_spend) AS full,
        (SELECT sum(spend_nano)::int FROM $schema.daily_team_spend) AS team,
        (SELECT sum(spend_nano)::int FROM $schema.daily_key_spend) AS key,
        (SELECT sum(spend_nano)::int FROM $schema.budgets WHERE scope_kind = 'key') AS counters,
        (SELECT sum(reserved_nano)::int FROM $schema.budgets) AS reserved`,
    );
    expect(sums).toEqual({
      full: total * 10,
      team: total * 10,
      key: total * 10,
      counters: total * 10,
      reserved: 0,
    });
    // Batching did happen.
    expect(Math.max(...instances.map((s) => internalsOf(s).batches.settle.largest))).toBeGreaterThan(1);
  });
});

/**
 * The batch functions against the single-op ones: the same random ops run one call each on one schema
 * and as one batch on a twin; every answer and every stored row must be the same.
 */
describe('batch functions answer exactly as the single-op functions called one by one', () => {
  // A deterministic PRNG.
  const prng = (seed: number) => () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };

  async function twinSchemas(): Promise<[string, string]> {
    const pair: [string, string] = [freshSchema(), freshSchema()];
    for (const schema of pair) {
      await applyMigrations(admin, schema);
      await admin.query(`INSERT INTO "${schema}".budgets VALUES
        ('key', 'k1', 5000, NULL, NULL, 0, 0, 4000), ('key', 'k2', NULL, NULL, NULL, 100, 0, NULL),
        ('user', 'u1', 20000, '1h', '2026-03-10T12:00:30Z', 900, 0, NULL),
        ('team', 't1', 9000, '1d', '2026-03-10T12:01:00Z', 8000, 0, NULL),
        ('tag', 'prod', 3000, NULL, NULL, 0, 0, NULL), ('global', 'global', NULL, NULL, NULL, 0, 0, NULL)`);
    }
    return pair;
  }

  const pools = {
    scopes: [
      ['key', 'k1'],
      ['key', 'k2'],
      ['user', 'u1'],
      ['team', 't1'],
      ['tag', 'prod'],
      ['tag', 'none'],
      ['global', 'global'],
    ] as const,
    nows: ['2026-03-10T12:00:00Z', '2026-03-10T12:00:45Z', '2026-03-10T12:01:30Z', '2026-03-10T13:05:00Z'],
  };

  function randomScopes(rand: () => number): Array<[string, string]> {
    const picked = pools.scopes.filter(() => rand() < 0.5).map(([k, i]) => [k, i] as [string, string]);
    if (rand() < 0.05) picked.push(['key', 'missing']);
    return picked;
  }

  /** One answer as [status, ...states], the states as arrays without the header columns. */
  type Answer = unknown[];

  async function reserveOneByOne(schema: string, ops: ReserveOp[]): Promise<Answer[]> {
    const answers: Answer[] = [];
    for (const op of ops) {
      try {
        const res = await admin.query({
          text: `SELECT * FROM "${schema}".spendguard_reserve_v2($1, $2, $3, $4, $5, $6, $7, $8)`,
          values: [
            op.id,
            op.scopes.map((x) => x[0]),
            op.scopes.map((x) => x[1]),
            op.amount,
            op.now,
            op.expires,
            op.mode,
            op.pending,
          ],
          rowMode: 'array',
          types: int8AsNumber,
        });
        answers.push([res.rows[0]?.[0], ...res.rows.slice(1).map((r) => r.slice(1))]);
      } catch (err) {
        const code = (err as { code?: string }).code;
        const status = { '23505': 'conflict', P0002: 'no_counter', '22023': 'bad_mode' }[code ?? ''];
        if (!status) throw err;
        answers.push([status]);
      }
    }
    return answers;
  }

  async function reserveBatch(schema: string, ops: ReserveOp[]): Promise<Answer[]> {
    const res = await admin.query({
      text: `SELECT * FROM "${schema}".spendguard_reserve_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      values: [
        ops.map((o) => o.id),
        ops.map((o) => o.amount),
        ops.map((o) => o.now),
        ops.map((o) => o.expires),
        ops.map((o) => o.mode),
        JSON.stringify(ops.map((o) => (o.pending ? JSON.parse(o.pending) : null))),
        ops.map((o) => o.scopes.length),
        ops.flatMap((o) => o.scopes.map((x) => x[0])),
        ops.flatMap((o) => o.scopes.map((x) => x[1])),
      ],
      rowMode: 'array',
      types: int8AsNumber,
    });
    return byOp(res.rows, ops.length);
  }

  function byOp(rs: unknown[][], n: number): Answer[] {
    const answers: Answer[] = Array.from({ length: n }, () => []);
    for (const r of rs) {
      const answer = answers[(r[0] as number) - 1]!;
      if (r[1] !== null) answer.push(r[1]);
      else answer.push(r.slice(2, 10));
    }
    return answers;
  }

  const SETTLE_ARGS = Array.from({ length: 25 }, (_, i) => `$${i + 1}`).join(', ');

  async function settleOneByOne(schema: string, ops: SettleOp[]): Promise<Answer[]> {
    const answers: Answer[] = [];
    for (const op of ops) {
      const res = await admin.query({
        text: `SELECT * FROM "${schema}".spendguard_settle_v2(${SETTLE_ARGS})`,
        values: [
          op.reservationId,
          op.scopes.map((x) => x[0]),
          op.scopes.map((x) => x[1]),
          op.cost,
          op.now,
          op.claim,
          op.requestId,
          'acompletion',
          op.key,
          op.cost,
          op.prompt,
          2,
          op.prompt + 2,
          op.start,
          op.now,
          op.model,
          op.provider,
          'u1',
          op.team,
          null,
          op.tags,
          op.status,
          op.claim,
          200,
          JSON.stringify({ op: op.n }),
        ],
        rowMode: 'array',
        types: int8AsNumber,
      });
      answers.push([res.rows[0]?.[0], ...res.rows.slice(1).map((r) => r.slice(1))]);
    }
    return answers;
  }

  async function settleBatch(schema: string, ops: SettleOp[]): Promise<Answer[]> {
    const res = await admin.query({
      text: `SELECT * FROM "${schema}".spendguard_settle_batch(${Array.from({ length: 28 }, (_, i) => `$${i + 1}`).join(', ')})`,
      values: [
        ops.map((o) => o.reservationId),
        ops.map((o) => o.cost),
        ops.map((o) => o.now),
        ops.map((o) => o.claim),
        ops.map((o) => o.scopes.length),
        ops.flatMap((o) => o.scopes.map((x) => x[0])),
        ops.flatMap((o) => o.scopes.map((x) => x[1])),
        ops.map((o) => o.requestId),
        ops.map(() => 'acompletion'),
        ops.map((o) => o.key),
        ops.map((o) => o.cost),
        ops.map((o) => o.prompt),
        ops.map(() => 2),
        ops.map((o) => o.prompt + 2),
        ops.map((o) => o.start),
        ops.map((o) => o.now),
        ops.map((o) => o.model),
        ops.map((o) => o.provider),
        ops.map(() => 'u1'),
        ops.map((o) => o.team),
        ops.map(() => null),
        ops.map((o) => o.tags.length),
        ops.flatMap((o) => o.tags),
        ops.map((o) => o.status),
        ops.map((o) => o.claim),
        ops.map(() => 200),
        JSON.stringify(ops.map((o) => ({ op: o.n }))),
        ops.map(() => null), // response ids (migration 12): none, as spendguard_settle_v2 writes none
      ],
      rowMode: 'array',
      types: int8AsNumber,
    });
    return byOp(res.rows, ops.length);
  }

  interface ReserveOp {
    id: string;
    scopes: Array<[string, string]>;
    amount: number;
    now: string;
    expires: string;
    mode: string;
    pending: string | null;
  }

  interface SettleOp {
    n: number;
    reservationId: string;
    requestId: string;
    scopes: Array<[string, string]>;
    cost: number;
    now: string;
    start: string;
    claim: boolean;
    key: string;
    model: string;
    provider: string | null;
    team: string | null;
    tags: string[];
    status: string;
    prompt: number;
  }

  async function dump(schema: string): Promise<Record<string, unknown[]>> {
    const tables = [
      'budgets',
      'reservations',
      'spend_logs',
      'daily_spend',
      'daily_tag_spend',
      'daily_team_spend',
      'daily_key_spend',
      'daily_team_tag_spend',
    ];
    const out: Record<string, unknown[]> = {};
    for (const table of tables) {
      const res = await admin.query(
        `SELECT row_to_json(t)::text AS row FROM "${schema}".${table} t ORDER BY 1`,
      );
      out[table] = res.rows.map((r) => r.row);
    }
    return out;
  }

  const seen = new Set<string>();
  for (const seedValue of [1, 2, 3, 4, 5, 6]) {
    it(`random ops, seed ${seedValue}`, async () => {
      const rand = prng(seedValue);
      const pick = <X>(xs: readonly X[]): X => xs[Math.floor(rand() * xs.length)]!;
      const [one, batch] = await twinSchemas();

      const reserves: ReserveOp[] = Array.from({ length: 60 }, (_, n) => ({
        id: `res-${Math.floor(rand() * 45)}`,
        scopes: randomScopes(rand),
        amount: Math.floor(rand() * 1500),
        now: pick(pools.nows),
        expires: '2026-03-10T12:10:00Z',
        mode: rand() < 0.04 ? 'bogus' : pick(['strict', 'strict', 'shrink', 'soft']),
        pending: rand() < 0.5 ? JSON.stringify({ requestId: `pending-${n}`, tags: ['a'] }) : null,
      }));
      const reserved = await reserveOneByOne(one, reserves);
      for (const a of reserved) seen.add(String(a[0]));
      expect(await reserveBatch(batch, reserves)).toEqual(reserved);
      expect(reserved.filter((a) => a[0] === 'ok').length).toBeGreaterThan(5);
      expect(reserved.filter((a) => a[0] === 'refused').length).toBeGreaterThan(5);
      expect(await dump(batch)).toEqual(await dump(one));

      const settles: SettleOp[] = Array.from({ length: 60 }, (_, n) => {
        const claim = rand() < 0.25;
        const reservation = rand() < 0.85 ? pick(reserves) : null;
        return {
          n,
          reservationId: reservation?.id ?? `gone-${n}`,
          requestId: `req-${Math.floor(rand() * 40)}`,
          scopes: reservation && rand() < 0.8 ? reservation.scopes : randomScopes(rand),
          cost: Math.floor(rand() * 2000),
          now: pick(pools.nows),
          start: pick(['2026-03-09T23:59:59Z', '2026-03-10T12:00:00Z']),
          claim,
          key: pick(['k1', 'k2']),
          model: pick(['m1', 'm2']),
          provider: pick(['openai', null]),
          team: pick(['t1', null]),
          tags: Array.from({ length: Math.floor(rand() * 4) }, () => pick(['x', 'y', 'z'])),
          status: rand() < 0.2 ? 'failure' : 'success',
          prompt: Math.floor(rand() * 100),
        };
      });
      const settled = await settleOneByOne(one, settles);
      for (const a of settled) seen.add(String(a[0]));
      expect(await settleBatch(batch, settles)).toEqual(settled);
      for (const status of ['applied', 'duplicate']) {
        expect(settled.filter((a) => a[0] === status).length).toBeGreaterThan(3);
      }
      expect(await dump(batch)).toEqual(await dump(one));
    });
  }

  it('met every status in the random ops above', () => {
    // Guards the comparisons above against passing vacuously.
    expect([...seen].sort()).toEqual(
      [
        'applied',
        'bad_mode',
        'conflict',
        'duplicate',
        'missing',
        'no_counter',
        'ok',
        'refused',
        'released',
      ].sort(),
    );
  });
});
