import { randomBytes } from 'node:crypto';
import { nextBudgetResetAt } from '@spendguard/core';
import { runStorageConformance } from '@spendguard/core/conformance';
import type { ReserveInput } from '@spendguard/core/storage';
import { getTableConfig } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { type PgStorage, pgRawReader } from '../src/index.js';
import { applyMigrations, loadMigrations } from '../src/migrations.js';
import { defineTables } from '../src/schema.js';
import { admin, emptySchema, freshSchema, open, schemaOfStore, url } from './test-schemas.js';

runStorageConformance({
  name: 'postgres',
  create: () => open(emptySchema()),
  raw: pgRawReader,
  sibling: (s) => open(schemaOfStore(s as PgStorage)),
  // A trigger in the store's schema: the write of that counter raises, inside the transaction.
  refusesFractionalNano: true,
  failCounterWrites: async (s, scope) => {
    const schema = `"${schemaOfStore(s as PgStorage)}"`;
    const literal = (v: string) => `'${v.replaceAll("'", "''")}'`;
    await admin.query(
      `CREATE OR REPLACE FUNCTION ${schema}.fail_counter_write() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.scope_kind = TG_ARGV[0] AND NEW.scope_id = TG_ARGV[1] THEN
           RAISE EXCEPTION 'injected: the write of counter %:% failed', TG_ARGV[0], TG_ARGV[1];
         END IF;
         RETURN NEW;
       END $$`,
    );
    await admin.query(
      `CREATE TRIGGER fail_${randomBytes(6).toString('hex')} BEFORE INSERT OR UPDATE ON ${schema}.budgets
       FOR EACH ROW EXECUTE FUNCTION ${schema}.fail_counter_write(${literal(scope.kind)}, ${literal(scope.id)})`,
    );
  },
});

const T0 = new Date('2026-03-10T12:00:00.000Z');
const teamWithCap = (s: PgStorage, capNano: number) =>
  s.insert([
    {
      type: 'team',
      record: { teamId: 't1', teamAlias: null, models: [], metadata: {}, blocked: false, createdAt: T0 },
      budget: { maxBudgetNano: capNano, budgetDuration: null, budgetResetAt: null },
    },
  ]);
const reserve = (id: string): ReserveInput => ({
  reservationId: id,
  scopes: [{ kind: 'team', id: 't1' }],
  amountNano: 1,
  now: T0,
  expiresAt: T0,
});

describe('postgres backend', () => {
  it('applies migrations once when 4 instances initialise at the same moment', async () => {
    const schema = freshSchema();
    await Promise.all(Array.from({ length: 4 }, () => open(schema)));
    const { rows } = await admin.query(`SELECT version FROM "${schema}".spendguard_migrations ORDER BY 1`);
    expect(rows.map((r) => r.version)).toEqual(loadMigrations().map((m) => m.version));
  });

  it('creates the tables and indexes that the drizzle schema describes', async () => {
    const schema = freshSchema();
    await open(schema);
    for (const table of Object.values(defineTables(schema))) {
      const { name, columns, indexes } = getTableConfig(table);
      const stored = await admin.query({
        text: `SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
               WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
        values: [`"${schema}".${name}`],
        rowMode: 'array',
      });
      expect(stored.rows).toEqual(
        columns.map((c) => [c.name, c.getSQLType().replace('bigserial', 'bigint'), c.notNull]),
      );
      const idx = await admin.query(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexname NOT LIKE '%_pkey'",
        [schema, name],
      );
      expect(idx.rows.map((r) => r.indexname).sort()).toEqual(indexes.map((i) => i.config.name).sort());
    }
  });

  it('never exceeds a cap with two instances (two pools) reserving in parallel', async () => {
    const schema = freshSchema();
    const [a, b] = await Promise.all([open(schema), open(schema)]);
    await teamWithCap(a, 20);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).reserve(reserve(`r${i}`))),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(20);
    const raw = pgRawReader(b);
    expect(await raw.budgetCounter({ kind: 'team', id: 't1' })).toEqual({ spendNano: 0, reservedNano: 20 });
    expect(await raw.openReservations()).toBe(20);
  });

  it("computes period resets in SQL exactly as core's nextBudgetResetAt", async () => {
    const schema = freshSchema();
    await open(schema);
    const durations =
      '1s 30s 45s 1m 10m 7m 1h 5h 25h 1d 2d 7d 14d 30d 31d 1w 2w 1mo 3mo 13mo daily weekly monthly'.split(
        ' ',
      );
    const instants = [
      '2024-02-29T00:00:00.000Z', // leap day
      '2024-02-29T23:59:59.999Z',
      '2026-01-31T23:59:59.999Z', // month and year ends
      '2026-12-31T12:00:00.000Z',
      '2026-03-09T00:00:00.000Z', // a Monday at midnight
      '2026-03-15T23:59:59.999Z', // a Sunday
      '2026-02-28T10:00:00.001Z',
    ].map((iso) => new Date(iso));
    let seed = 42; // deterministic pseudo-random instants over 2024-2028
    for (let i = 0; i < 300; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      instants.push(new Date(Date.UTC(2024, 0, 1) + Math.floor((seed / 2 ** 31) * 5 * 365 * 864e5)));
    }
    const { rows } = await admin.query({
      text: `SELECT "${schema}".spendguard_next_reset(d, t) AS at
             FROM unnest($1::text[]) WITH ORDINALITY AS a (d, i), unnest($2::timestamptz[]) WITH ORDINALITY AS b (t, j)
             ORDER BY i, j`,
      values: [durations, instants.map((t) => t.toISOString())],
    });
    const expected = durations.flatMap((d) => instants.map((t) => nextBudgetResetAt(d, t).toISOString()));
    expect(rows.map((r) => (r.at as Date).toISOString())).toEqual(expected);
  });

  it('delivers a key change from one instance to another, also after a reconnect', async () => {
    const schema = freshSchema();
    const [a, b] = await Promise.all([open(schema), open(schema)]);
    // Each change heard resolves the next wait on it: the test waits on the notification, not on a time
    // (one that never comes fails by the test's own timeout).
    const heard: (string | null)[] = [];
    let wake: (() => void) | undefined;
    const next = async (): Promise<string | null> => {
      while (heard.length === 0) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
      return heard.shift() ?? null;
    };
    const stop = a.watchKeyChanges((hash) => {
      heard.push(hash);
      wake?.();
    });
    expect(await next()).toBeNull(); // listening: drop whatever was cached
    await b.notifyKeyChange('hash-1');
    expect(await next()).toBe('hash-1');
    // Kill the listening connection: the feed reconnects, says null, and hears changes again.
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
      `spendguard_key_changes:${schema}`,
    ]);
    expect(await next()).toBeNull();
    await b.notifyKeyChange('hash-2');
    expect(await next()).toBe('hash-2');
    stop();
  });

  it('migration 4 makes users already in teams members, each with an uncapped member counter', async () => {
    const schema = freshSchema();
    await applyMigrations(
      admin,
      schema,
      loadMigrations().filter((m) => m.version < 4),
    );
    const q = `"${schema}"`;
    const at = '2026-03-01T10:00:00.000Z';
    await admin.query(
      `INSERT INTO ${q}.teams VALUES ('t1', NULL, '{}', '{}', false, $1), ('t2', NULL, '{}', '{}', false, $1)`,
      [at],
    );
    await admin.query(
      `INSERT INTO ${q}.users VALUES ('u1', NULL, 'internal_user', '{t1,t2,gone}', '{}', '{}', $1),
        ('u2', NULL, 'internal_user', '{}', '{}', '{}', $1)`,
      [at],
    );
    const s = await open(schema);
    expect(await s.listMembers({ userId: 'u1' })).toEqual([
      { teamId: 't1', userId: 'u1', role: 'user', createdAt: new Date(at) },
      { teamId: 't2', userId: 'u1', role: 'user', createdAt: new Date(at) },
    ]);
    expect(await s.listMembers({ userId: 'u2' })).toEqual([]);
    const [counter] = await s.getBudgets([{ kind: 'member', id: 't1:u1' }], new Date(at));
    expect(counter).toMatchObject({ maxBudgetNano: null, spendNano: 0, reservedNano: 0 });
  });

  it('migration 2 keeps every rollup total, attributing old rows from the logs they still have', async () => {
    const schema = freshSchema();
    await applyMigrations(
      admin,
      schema,
      loadMigrations().filter((m) => m.version === 1),
    );
    // As version 1 wrote them: two requests with their logs, and one whose log is gone.
    const q = `"${schema}"`;
    const at = '2026-03-01T10:00:00.000Z';
    const insertLog = `INSERT INTO ${q}.spend_logs VALUES ($1, 'acompletion', 'k1', $2, $3, $4, $5, $6, $6, 'gpt-4o',
      'openai', 'u1', 't1', $7, $8, $9, false, 200, '{}')`;
    await admin.query(insertLog, ['r1', 100, 10, 5, 15, at, 'c1', ['a', 'b'], 'success']);
    await admin.query(insertLog, ['r2', 50, 4, 2, 6, at, null, ['a'], 'failure']);
    await admin.query(
      `INSERT INTO ${q}.daily_spend VALUES ('2026-03-01', 't1', 'u1', 'k1', 'gpt-4o', 3, 157, 15, 8)`,
    );
    await admin.query(
      `INSERT INTO ${q}.daily_tag_spend VALUES ('2026-03-01', 'a', 3, 157, 15, 8), ('2026-03-01', 'b', 1, 100, 10, 5)`,
    );

    const s = await open(schema);
    const report = (groupBy: Parameters<PgStorage['spendReport']>[0]['groupBy']) =>
      s.spendReport({ fromDay: '2026-03-01', toDay: '2026-03-01', groupBy });
    const sums = (requests: number, failedRequests: number, spendNano: number, p: number, c: number) => ({
      requests,
      failedRequests,
      spendNano,
      promptTokens: p,
      completionTokens: c,
    });
    expect(await report([])).toEqual([sums(3, 1, 157, 15, 8)]);
    expect(await report(['team', 'key', 'provider', 'customer'])).toEqual([
      { teamId: 't1', apiKeyHash: 'k1', provider: null, endUser: null, ...sums(1, 0, 7, 1, 1) },
      { teamId: 't1', apiKeyHash: 'k1', provider: 'openai', endUser: null, ...sums(1, 1, 50, 4, 2) },
      { teamId: 't1', apiKeyHash: 'k1', provider: 'openai', endUser: 'c1', ...sums(1, 0, 100, 10, 5) },
    ]);
    expect(await report(['tag', 'customer'])).toEqual([
      { tag: 'a', endUser: null, ...sums(2, 1, 57, 5, 3) },
      { tag: 'a', endUser: 'c1', ...sums(1, 0, 100, 10, 5) },
      { tag: 'b', endUser: 'c1', ...sums(1, 0, 100, 10, 5) },
    ]);
    expect(await s.spendByTag({})).toEqual([
      { tag: 'a', requests: 3, spendNano: 157 },
      { tag: 'b', requests: 1, spendNano: 100 },
    ]);
  });

  it('keeps an instance of the previous release working while migration 2 is applied', async () => {
    const schema = freshSchema();
    await applyMigrations(
      admin,
      schema,
      loadMigrations().filter((m) => m.version === 1),
    );
    const q = `"${schema}"`;
    await admin.query(`INSERT INTO ${q}.budgets VALUES ('key', 'k1', 1000000, NULL, NULL, 0, 0)`);
    // The previous release's prepared statements, as its PgStorage sends them.
    const old = new pg.Client({ connectionString: url });
    await old.connect();
    const reserve = (id: string) =>
      old.query({
        name: 'old_reserve',
        text: `SELECT * FROM ${q}.spendguard_reserve($1, $2, $3, $4, $5, $6, $7, $8)`,
        values: [id, ['key'], ['k1'], 10, T0.toISOString(), T0.toISOString(), 'strict', null],
        rowMode: 'array',
      });
    const settle = (id: string) =>
      old.query({
        name: 'old_settle',
        text: `SELECT * FROM ${q}.spendguard_settle(${Array.from({ length: 25 }, (_, i) => `$${i + 1}`).join(', ')})`,
        values: [
          ...[id, ['key'], ['k1'], 7, T0.toISOString(), false],
          ...[`req-${id}`, 'acompletion', 'k1', 7, 1, 1, 2, T0.toISOString(), T0.toISOString(), 'gpt-4o'],
          ...['openai', 'u1', 't1', null, ['a'], 'success', false, 200, '{}'],
        ],
        rowMode: 'array',
      });
    try {
      await reserve('r1');
      await settle('r1');
      await applyMigrations(admin, schema);
      const reserved = await reserve('r2');
      expect(reserved.rows[0]).toEqual(['ok', null, null, null, null, null, null, null]);
      const settled = await settle('r2');
      expect(settled.rows.map((r) => r.length)).toEqual([8, 8]);
      expect(settled.rows[0]?.[0]).toBe('applied');
    } finally {
      await old.end();
    }
    const s = await open(schema);
    expect(await s.spendReport({ fromDay: '2026-03-10', toDay: '2026-03-10', groupBy: ['tag'] })).toEqual([
      { tag: 'a', requests: 2, failedRequests: 0, spendNano: 14, promptTokens: 2, completionTokens: 2 },
    ]);
    expect(await pgRawReader(s).budgetCounter({ kind: 'key', id: 'k1' })).toEqual({
      spendNano: 14,
      reservedNano: 0,
    });
  });
});
