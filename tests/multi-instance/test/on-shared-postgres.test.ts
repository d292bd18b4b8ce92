/**
 * Several processes of the example servers on one Postgres database (the machine's server, see
 * postgres.ts). One file, so that its tests run one after the other: four instances hold up to 44
 * connections, and the server's max_connections is shared with the other test files.
 *
 * - one budget: 4 instances spend one key's budget at once; strict never exceeds it (key, user and
 *   team) yet uses at least 95% of it, shrink exceeds it by at most one call per instance;
 * - an instance killed mid-load loses nothing: served calls are logged and counted, and what it left
 *   reserved is charged at its estimate by the survivors after the TTL;
 * - a key blocked through one instance is refused by every instance, told by LISTEN/NOTIFY (their key
 *   caches would trust it for 10 minutes).
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { checkApi, costNano, expectShared, spendOneBudget } from './budget-run.js';
import { adminCall, budgetedKey, callCosts, chat, endUserOf, eventually, runLoad } from './clients.js';
import { applicationNameOf, startInstances, stopAllInstances } from './instances.js';
import { createDatabase, type PostgresServer, sharedPostgres } from './postgres.js';
import { openReservationsOf, readPostgres } from './stored.js';

/**
 * The tests below are about budgets, not timeouts: a storage call slowed down by a busy CI machine
 * must not turn into a 503.
 */
const PATIENT = { SPENDGUARD_STORAGE_TIMEOUT_MS: '10000' };

let server: PostgresServer;
const drops: Array<() => Promise<void>> = [];
beforeAll(async () => {
  server = await sharedPostgres();
});
afterEach(async () => {
  await stopAllInstances();
  for (const drop of drops.splice(0)) await drop();
});
afterAll(async () => {
  await server?.close();
});

describe('one budget, several instances on one Postgres', () => {
  it.each([2, 4])(
    'strict, %i instances: never over the budget of the key, its user or its team, and at least 97% of it used',
    async (count) => {
      const db = await createDatabase(server);
      drops.push(db.drop);
      const instances = await startInstances(count, {
        ...PATIENT,
        DATABASE_URL: db.url,
        SPENDGUARD_ENFORCEMENT: 'strict',
        SIM_LATENCY_MS: '50',
      });
      const run = await spendOneBudget(instances);
      await eventually(
        async () => (await readPostgres(db.url, run.ids)).openReservations === 0,
        10_000,
        'every settlement',
      );
      const stored = await readPostgres(db.url, run.ids);
      for (const kind of ['key', 'user', 'team'] as const) {
        const c = stored.counters[kind];
        expect(c.maxBudgetNano, kind).toBe(run.budgetNano);
        expect(c.spendNano, `${kind} spend <= budget`).toBeLessThanOrEqual(run.budgetNano);
        expect(c.spendNano, `${kind} spend >= 97% of the budget`).toBeGreaterThanOrEqual(
          0.97 * run.budgetNano,
        );
        expect(c.reservedNano, kind).toBe(0);
        expect(c.spendNano, `${kind} spend = the served calls`).toBe(run.servedNano);
      }
      expect(stored.logs.map((l) => l.requestId).sort()).toEqual(run.served.map((o) => o.callId).sort());
      expect(stored.logs.reduce((s, l) => s + l.spendNano, 0)).toBe(stored.counters.key.spendNano);
      expectShared(instances, run);
      await checkApi(instances, run, stored.counters.key.spendNano);
    },
    120_000,
  );

  it('shrink, 4 instances: over the budget by at most one call per instance', async () => {
    const db = await createDatabase(server);
    drops.push(db.drop);
    const instances = await startInstances(4, {
      ...PATIENT,
      DATABASE_URL: db.url,
      SPENDGUARD_ENFORCEMENT: 'shrink',
      SIM_LATENCY_MS: '50',
    });
    const run = await spendOneBudget(instances);
    await eventually(
      async () => (await readPostgres(db.url, run.ids)).openReservations === 0,
      10_000,
      'every settlement',
    );
    const stored = await readPostgres(db.url, run.ids);
    for (const kind of ['key', 'user', 'team'] as const) {
      const c = stored.counters[kind];
      expect(c.spendNano, `${kind} overshoot`).toBeLessThanOrEqual(
        run.budgetNano + instances.length * run.costs.actualNano,
      );
      expect(c.spendNano, `${kind} spend >= 95% of the budget`).toBeGreaterThanOrEqual(0.97 * run.budgetNano);
      expect(c.reservedNano, kind).toBe(0);
      expect(c.spendNano, `${kind} spend = the served calls`).toBe(run.servedNano);
    }
    expect(stored.logs.map((l) => l.requestId).sort()).toEqual(run.served.map((o) => o.callId).sort());
    await checkApi(instances, run, stored.counters.key.spendNano);
  }, 120_000);
});

/**
 * Counted from a reservation's write: longer than the slowest call takes to settle on this loaded
 * machine (~2 s with 100 in flight on 2 cores, several times that when other work loads it), else live
 * calls would expire too.
 */
const TTL_MS = 10_000;
const SWEEP_MS = 250;
const LATENCY_MS = 300;

describe('an instance killed mid-load', () => {
  it('loses nothing: served calls are logged and counted, its open reservations are charged after the TTL', async () => {
    const db = await createDatabase(server);
    drops.push(db.drop);
    const instances = await startInstances(4, {
      ...PATIENT,
      DATABASE_URL: db.url,
      SPENDGUARD_ENFORCEMENT: 'strict',
      SPENDGUARD_RESERVATION_TTL_MS: String(TTL_MS),
      SPENDGUARD_RESERVATION_SWEEP_MS: String(SWEEP_MS),
      // This test is about the TTL sweep: heartbeats off, or the survivors could charge the victim's
      // reservations (after heartbeatGraceMs) before the test reads what it left open. Heartbeat
      // recovery has its own test (crash-recovery.test.ts).
      SPENDGUARD_HEARTBEAT_GRACE_MS: '0',
      SIM_LATENCY_MS: String(LATENCY_MS),
    });
    const urls = instances.map((i) => i.url);
    const costs = await callCosts(urls);
    const budgetNano = 100 * costs.actualNano;
    const ids = await budgetedKey(urls[0]!, budgetNano / 1e9);

    const victim = 3;
    let killedAt = 0;
    const load = runLoad({
      urls,
      key: ids.key,
      total: 400,
      concurrency: 100,
      targets: () => (killedAt ? [0, 1, 2] : [0, 1, 2, 3]),
    });
    // Kill the victim as soon as it holds reservations: calls admitted and waiting on the provider.
    const watcher = new pg.Client({ connectionString: db.url });
    await watcher.connect();
    let leftOpen: string[];
    try {
      // The victim's backends are found by name below; make sure the name reaches Postgres.
      const named = await watcher.query<{ n: number }>(
        'select count(*)::int as n from pg_stat_activity where application_name = $1',
        [applicationNameOf(victim)],
      );
      expect(named.rows[0]!.n).toBeGreaterThan(0);
      const deadline = Date.now() + 20_000;
      while (!killedAt) {
        if ((await openReservationsOf(watcher, endUserOf(victim))).length >= 3) {
          instances[victim]!.child.kill('SIGKILL');
          killedAt = Date.now();
        } else if (Date.now() > deadline) {
          throw new Error('the victim never had calls in flight');
        }
      }
      await instances[victim]!.exited;
      // A statement the victim sent before it died still runs to its commit: wait until Postgres has
      // ended every backend of the victim, so that nothing it started can still open a reservation.
      const backendsDeadline = Date.now() + 20_000;
      for (;;) {
        const { rows } = await watcher.query<{ n: number }>(
          'select count(*)::int as n from pg_stat_activity where application_name = $1',
          [applicationNameOf(victim)],
        );
        if (rows[0]!.n === 0) break;
        if (Date.now() > backendsDeadline) throw new Error(`the victim still has ${rows[0]!.n} backends`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // What the victim left open (its TTL has not passed yet: nobody has charged it).
      leftOpen = await openReservationsOf(watcher, endUserOf(victim));
    } finally {
      await watcher.end();
    }
    expect(leftOpen.length).toBeGreaterThanOrEqual(3);
    const outcomes = await load.done;

    // Survivors answered every call: served, or refused for the budget.
    const survivors = outcomes.filter((o) => o.instance !== victim);
    expect(survivors.filter((o) => !((o.status === 200 || o.status === 429) && o.completed))).toEqual([]);
    // Calls cut by the kill got no complete answer.
    const cut = outcomes.filter((o) => o.instance === victim && !o.completed);
    expect(cut.length, 'calls in flight on the victim when it died').toBeGreaterThanOrEqual(3);

    // The survivors' sweep charges what the victim left open once the TTL has passed.
    await eventually(
      async () => {
        const s = await readPostgres(db.url, ids);
        return s.openReservations === 0 && s.counters.key.reservedNano === 0;
      },
      TTL_MS + 15_000,
      'the dead instance’s reservations to be charged',
    );
    const stored = await readPostgres(db.url, ids);
    const logged = new Map(stored.logs.map((l) => [l.requestId, l]));

    // Every call answered 200 (headers received, whichever instance) is in the spend log.
    const answered = outcomes.filter((o) => o.status === 200);
    expect(answered.filter((o) => !logged.has(o.callId!)).map((o) => o.callId)).toEqual([]);
    // Completed calls are charged their actual cost; the expired ones their estimate, flagged.
    for (const o of answered.filter((o) => o.completed && o.instance !== victim)) {
      expect(logged.get(o.callId!)).toMatchObject({ spendNano: costNano(o), expired: false });
    }
    // Exactly what the victim left open was charged as expired, each at its reserved estimate.
    const expired = stored.logs.filter((l) => l.expired);
    expect(expired.map((l) => l.requestId).sort()).toEqual([...leftOpen].sort());
    for (const l of expired) {
      expect(l).toMatchObject({ estimated: true, status: 'failure', apiKeyHash: ids.token });
      // at its reservation: the cheap or precise bound, or a bound at a lowered output cap
      expect(l.spendNano).toBeGreaterThanOrEqual(costs.floorNano);
      expect(l.spendNano).toBeLessThanOrEqual(costs.worstCaseNano);
    }
    // Only the victim's calls expired: nothing a survivor answered was charged at its estimate.
    expect(expired.filter((l) => l.endUser !== endUserOf(victim))).toEqual([]);

    // The counters are exactly the logs, and the budget still held.
    const loggedTotal = stored.logs.reduce((s, l) => s + l.spendNano, 0);
    for (const kind of ['key', 'user', 'team'] as const) {
      expect(stored.counters[kind], kind).toMatchObject({ spendNano: loggedTotal, reservedNano: 0 });
      expect(stored.counters[kind].spendNano, `${kind} spend <= budget`).toBeLessThanOrEqual(budgetNano);
    }
  }, 120_000);
});

/** Resolves once every instance answers `status` to the key (each asked again until it does). */
async function untilEvery(urls: string[], key: string, status: number): Promise<void> {
  await Promise.all(
    urls.map(async (url) => {
      while ((await chat(url, key)).status !== status);
    }),
  );
}

describe('key revocation across instances', () => {
  it('a key blocked (and unblocked) through one instance is refused (and served) by every instance, told by the notification', async () => {
    const db = await createDatabase(server);
    drops.push(db.drop);
    // Each instance trusts a cached key for 10 minutes (keyCacheTtlMs) unless told otherwise, far
    // longer than this test may run: only the notification can make the others refuse it.
    const instances = await startInstances(4, {
      ...PATIENT,
      DATABASE_URL: db.url,
      SPENDGUARD_KEY_CACHE_TTL_MS: '600000',
    });
    const urls = instances.map((i) => i.url);
    const { key, token } = await adminCall(urls[0]!, 'POST', '/key/generate', { max_budget: 100 });
    // Every instance has now resolved (and cached) the key.
    for (const url of urls) expect((await chat(url, key)).status).toBe(200);

    const blocked = await adminCall(urls[1]!, 'POST', '/key/block', { key });
    expect(blocked).toMatchObject({ key: token, blocked: true });
    await untilEvery(urls, key, 401);

    const unblocked = await adminCall(urls[2]!, 'POST', '/key/unblock', { key });
    expect(unblocked).toMatchObject({ key: token, blocked: false });
    await untilEvery(urls, key, 200);
  }, 60_000);
});
