/**
 * Issue 15's NUL and poison cases on the real Postgres: one key sends values Postgres cannot store
 * while an unrelated key's calls run concurrently, their reservations and settlements batched into
 * the same statements. The sender gets 400; the unrelated key sees no error and every call it was
 * answered is recorded, under `onStorageError: 'deny'` and `'allow'`.
 *
 * Two layers are shown at once: NUL in `tags` and `user` is refused at the edge (input-hygiene.ts),
 * and a store wrapper below the edge poisons some calls' reservations and settlements as a value the
 * edge does not see would (a provider's model name, a future field): each fails alone.
 */
import { hashVirtualKey, type SpendStorage } from '@spendguard/core';
import { pgStorage } from '@spendguard/storage-pg';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { EmptySchemas } from '../../multi-instance/test/empty-schemas.js';
import { sharedPostgres } from '../../multi-instance/test/postgres.js';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

// DATABASE_URL or the local server, else a throwaway one; in CI a missing server fails, never skips.
const server = await sharedPostgres();
const url = server.url;
const pool = new pg.Pool({ connectionString: url, max: 2 });
// Each case needs an empty store, not a new schema: one migrated schema, emptied after each case.
const empty = new EmptySchemas(pool, 'sg_poison_');
const schemas: string[] = [];
afterAll(async () => {
  await empty.dropAll();
  await pool.end();
  await server.close();
});

/** End users that tell the wrapper below to poison the call's reservation, or its settlement. */
const POISON_RESERVE = 'poison-reserve';
const POISON_SETTLE = 'poison-settle';

/**
 * The Postgres store, with a NUL put into the reservation scopes of calls for `POISON_RESERVE` and
 * into the spend log of calls for `POISON_SETTLE`. It hands every call on in the same turn, so the
 * store's batching is unchanged.
 */
function poisoning(store: SpendStorage): SpendStorage {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'reserve') {
        return (input: Parameters<SpendStorage['reserve']>[0]) =>
          target.reserve({
            ...input,
            scopes: input.scopes.map((s) => (s.id === POISON_RESERVE ? { ...s, id: 'poison\u0000' } : s)),
          });
      }
      if (prop === 'settle') {
        return (input: Parameters<SpendStorage['settle']>[0]) =>
          target.settle(
            input.log.endUser === POISON_SETTLE
              ? { ...input, log: { ...input.log, model: `${input.log.model}\u0000` } }
              : input,
          );
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

const CHAT = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 };

async function call(app: TestApp, key: string, extra: Record<string, unknown> = {}) {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...CHAT, ...extra }),
  });
  const body = (await res.json()) as { error?: { param: string | null; message: string } };
  return { status: res.status, body };
}

describe.each(ADAPTERS)('NUL and poison on Postgres, on $name', (framework) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
    for (const name of schemas.splice(0)) await empty.giveBack(name);
  });

  it.each(['deny', 'allow'] as const)(
    'onStorageError %s: the sender gets 400, an unrelated key sees no error and every answered call is recorded',
    async (onStorageError) => {
      const schema = empty.take();
      schemas.push(schema);
      app = await startTestApp(framework, {
        storage: poisoning(pgStorage({ connectionString: url, schema })),
        // What is shown is which calls fail, not how fast: on a loaded machine 200 calls at once may wait
        // past the default 2 s storage timeout, which would be a 503 for reasons of its own.
        // Reservations are counted one per call below; escrow's leases (one reservation a process holds
        // for many calls) are tested in escrow-admission.test.ts and the storage conformance suite.
        guardOptions: { onStorageError, storageTimeoutMs: 30_000, escrow: false },
      });
      const unrelated = (await admin(app, 'POST', '/key/generate', { max_budget: 100 })).body.key as string;
      const sender = (await admin(app, 'POST', '/key/generate', { max_budget: 100 })).body.key as string;

      // 120 calls of the unrelated key, 80 of the sender (four kinds, 20 each), all in flight together.
      const poisons = [
        { tags: ['\u0000'] },
        { user: '\u0000' },
        { user: POISON_RESERVE },
        { user: POISON_SETTLE },
      ];
      const calls = Array.from({ length: 200 }, (_, i) =>
        i % 5 < 3 ? call(app, unrelated) : call(app, sender, poisons[(i >> 1) % 4]!),
      );
      const outcomes = await Promise.all(calls);
      await app.guard.flush();

      const ofUnrelated = outcomes.filter((_, i) => i % 5 < 3);
      const ofSender = outcomes.filter((_, i) => i % 5 >= 3);
      expect(ofUnrelated.map((o) => o.status)).toEqual(Array(120).fill(200));
      const kind = (i: number) => (i >> 1) % 4;
      const senderKinds = outcomes
        .map((_, i) => i)
        .filter((i) => i % 5 >= 3)
        .map(kind);
      const byKind = (k: number) => ofSender.filter((_, j) => senderKinds[j] === k);
      for (const o of byKind(0)) expect([o.status, o.body.error?.param]).toEqual([400, 'tags']);
      for (const o of byKind(1)) expect([o.status, o.body.error?.param]).toEqual([400, 'user']);
      for (const o of byKind(2)) {
        expect(o.status).toBe(400); // refused by Postgres below the edge: still the request's fault
        expect(o.body.error?.message).toMatch(/storage refused a value of this request/);
      }
      for (const o of byKind(3)) expect(o.status).toBe(200); // served; its settlement is refused alone
      const poisonedSettles = byKind(3).length;
      expect(poisonedSettles).toBeGreaterThan(0);

      // Every call the unrelated key was answered is in the spend log, and its counter adds up.
      const q = (sql: string, values: unknown[]) =>
        pool.query(sql.replaceAll('$schema', `"${schema}"`), values).then((r) => r.rows);
      const [logs] = await q(
        'SELECT count(*)::int AS n, coalesce(sum(spend_nano), 0)::bigint AS total FROM $schema.spend_logs WHERE api_key_hash = $1',
        [hashVirtualKey(unrelated)],
      );
      expect(logs.n).toBe(120);
      const [counter] = await q(
        `SELECT spend_nano, reserved_nano FROM $schema.budgets WHERE scope_kind = 'key' AND scope_id = $1`,
        [hashVirtualKey(unrelated)],
      );
      expect(counter).toEqual({ spend_nano: logs.total, reserved_nano: '0' });
      // The sender's served calls are logged too, except the poisoned settlements: their reservations
      // stay open, to be charged at their estimates after the TTL.
      const [senderLogs] = await q(
        'SELECT count(*)::int AS n FROM $schema.spend_logs WHERE api_key_hash = $1',
        [hashVirtualKey(sender)],
      );
      expect(senderLogs.n).toBe(0);
      const [open] = await q('SELECT count(*)::int AS n FROM $schema.reservations', []);
      expect(open.n).toBe(poisonedSettles);

      expect(app.guard.stats()).toEqual({
        storageErrors: 0,
        pendingSettlements: 0,
        settlementsRecovered: 0,
        settlementsDropped: 0,
        settlementsRefused: poisonedSettles,
        settleFailures: poisonedSettles,
      });
    },
    60_000,
  );
});
