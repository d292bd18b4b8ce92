/**
 * SIGKILL mid-load, three times (issue 17), on one SQLite file and on one Postgres database: four
 * instances share the store, 2,000 calls go to them 32 at a time, and instances 1, 2 and 3 are killed
 * one after another while they hold calls in flight. After each kill, within 30 s (the deadline of a
 * condition polled on the store, never an elapsed time asserted): every call the dead instance
 * answered is in the spend log, and none of its reservations is left open. The survivors charge them
 * at their estimate once its heartbeat has been silent for the default grace (10 s), long before the
 * 10-minute reservation TTL. On SQLite every call answered whole carries its real cost: its settlement
 * was committed before its last byte left. On Postgres such a call may be charged its estimate,
 * flagged (the window docs/crash-recovery.md describes); the figures are printed either way.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { budgetedKey, type CallCosts, callCosts, endUserOf, eventually, runLoad } from './clients.js';
import { type Instance, startInstances, stopAllInstances } from './instances.js';
import { createDatabase, type PostgresServer, sharedPostgres } from './postgres.js';
import { type CrashStore, postgresCrashStore, sqliteCrashStore } from './stored.js';

const CALLS = 2000;
const IN_FLIGHT = 32;
const VICTIMS = [1, 2, 3];
/** Each kill's conditions must hold this long after it. */
const DEADLINE_MS = 30_000;
const ENV = {
  SPENDGUARD_STORAGE_TIMEOUT_MS: '10000', // about crashes, not timeouts: no 503 on a busy machine
  SPENDGUARD_ENFORCEMENT: 'strict',
  SIM_LATENCY_MS: '20', // calls stay in flight long enough to be cut
};

interface KillFigures {
  victim: number;
  /** Calls the victim answered 200 before it died. */
  answered: number;
  /** Calls in flight on it that the kill cut (no complete answer). */
  cut: number;
  /** Its reservations charged at their estimate after its heartbeat stopped. */
  chargedAtEstimate: number;
  /** Of those, calls its clients had received whole (0 on SQLite). */
  answeredAtEstimate: number;
  /** From the kill until both conditions held. */
  seconds: number;
}

afterEach(async () => {
  await stopAllInstances();
});

/** Runs the load, kills the victims one by one, and checks the store after each kill and at the end. */
async function killThreeTimes(
  instances: Instance[],
  store: CrashStore,
  sqlite: boolean,
): Promise<KillFigures[]> {
  const urls = instances.map((i) => i.url);
  const costs: CallCosts = await callCosts(urls);
  const ids = await budgetedKey(urls[0]!, (CALLS * 2 * costs.worstCaseNano) / 1e9); // no call refused
  const dead = new Set<number>();
  const load = runLoad({
    urls,
    key: ids.key,
    total: CALLS,
    concurrency: IN_FLIGHT,
    targets: () => urls.map((_, i) => i).filter((i) => !dead.has(i)),
  });
  /** After a kill, within the deadline: the victim's reservations settled, what it answered logged. */
  const recovered = async (victim: number, killedAt: number): Promise<KillFigures> => {
    await instances[victim]!.exited;
    // The calls the kill cut fail at once (connection reset); then what the victim answered is known.
    await eventually(async () => load.waiting.get(victim)!.size === 0, DEADLINE_MS, 'the cut calls to end');
    const mine = load.outcomes.filter((o) => o.instance === victim);
    const answered = mine.filter((o) => o.status === 200).map((o) => o.callId!);
    const whole = new Set(mine.filter((o) => o.status === 200 && o.completed).map((o) => o.callId!));
    await eventually(
      async () => {
        if ((await store.openReservationsOf(endUserOf(victim))) > 0) return false;
        const logs = await store.logsOf(ids.token);
        return answered.every((id) => logs.has(id));
      },
      Math.max(0, killedAt + DEADLINE_MS - Date.now()),
      `kill ${victim}: every reservation of the dead instance settled and every call it answered logged`,
    );
    const seconds = (Date.now() - killedAt) / 1000;
    const logs = await store.logsOf(ids.token);
    const diedHere = [...logs.values()].filter((l) => l.endUser === endUserOf(victim) && l.processDied);
    for (const id of answered) {
      const log = logs.get(id)!;
      if (sqlite && whole.has(id)) {
        // Committed before its last byte: its real cost, never an estimate.
        expect(log, `answered call ${id}`).toMatchObject({ spendNano: costs.actualNano, expired: false });
      } else if (log.expired) {
        expect(log.processDied, `answered call ${id} charged at its estimate`).toBeTruthy();
        expect([costs.worstCaseNano, costs.preciseNano]).toContain(log.spendNano);
      } else {
        expect(log.spendNano).toBe(costs.actualNano);
      }
    }
    // What was charged for it names one process: the victim's.
    expect(new Set(diedHere.map((l) => l.processDied)).size).toBe(diedHere.length > 0 ? 1 : 0);
    for (const l of diedHere) expect([costs.worstCaseNano, costs.preciseNano]).toContain(l.spendNano);
    return {
      victim,
      answered: answered.length,
      cut: mine.filter((o) => !o.completed).length,
      chargedAtEstimate: diedHere.length,
      answeredAtEstimate: answered.filter((id) => logs.get(id)!.expired).length,
      seconds,
    };
  };

  // The kills go on while the store recovers from the previous ones.
  const recoveries: Array<Promise<KillFigures>> = [];
  for (const victim of VICTIMS) {
    // Mid-load: past a fifth of the calls per kill, and while the victim holds calls in flight.
    await eventually(
      async () => {
        if (load.outcomes.length >= CALLS) throw new Error(`the load ended before kill ${victim}`);
        return (
          load.outcomes.length >= (victim * CALLS) / 5 &&
          (await store.openReservationsOf(endUserOf(victim))) >= 3
        );
      },
      60_000,
      `instance ${victim} to hold calls in flight`,
    );
    instances[victim]!.child.kill('SIGKILL');
    dead.add(victim);
    const settled = recovered(victim, Date.now());
    settled.catch(() => {}); // awaited below; a failure there fails the test
    recoveries.push(settled);
  }
  const figures = await Promise.all(recoveries);

  const outcomes = await load.done;
  expect(outcomes).toHaveLength(CALLS);
  // The survivor answered every call it got.
  expect(outcomes.filter((o) => o.instance === 0 && !(o.status === 200 && o.completed))).toEqual([]);
  await eventually(async () => (await store.openReservations()) === 0, DEADLINE_MS, 'every settlement');
  const logs = await store.logsOf(ids.token);
  const answered = outcomes.filter((o) => o.status === 200);
  expect(answered.filter((o) => !logs.has(o.callId!)).map((o) => o.callId)).toEqual([]);
  // Estimates were charged only for the victims' calls, each victim under its own process id.
  const died = [...logs.values()].filter((l) => l.processDied);
  expect(died.filter((l) => !VICTIMS.some((v) => l.endUser === endUserOf(v)))).toEqual([]);
  expect(new Set(died.map((l) => l.processDied)).size).toBe(new Set(died.map((l) => l.endUser)).size);
  expect(died.length).toBe(figures.reduce((n, f) => n + f.chargedAtEstimate, 0));
  expect([...logs.values()].filter((l) => l.expired && !l.processDied)).toEqual([]); // none by the TTL
  // The counters are exactly the logs.
  const total = [...logs.values()].reduce((n, l) => n + l.spendNano, 0);
  const counters = await store.counters(ids);
  for (const kind of ['key', 'user', 'team'] as const) {
    expect(counters[kind], kind).toMatchObject({ spendNano: total, reservedNano: 0 });
  }
  return figures;
}

describe('SIGKILL mid-load, three times: the store is whole within seconds', () => {
  it('on one SQLite file: answered calls at their real cost, the dead instances’ reservations settled', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'spendguard-crash-')), 'shared.db');
    const instances = await startInstances(4, { ...ENV, SPENDGUARD_DB: path });
    const store = sqliteCrashStore(path);
    try {
      const figures = await killThreeTimes(instances, store, true);
      console.log('[crash-recovery] SQLite, per kill:', JSON.stringify(figures));
      for (const f of figures) expect(f.answeredAtEstimate).toBe(0);
    } finally {
      await store.close();
    }
  }, 240_000);

  describe('on one Postgres database', () => {
    let server: PostgresServer;
    beforeAll(async () => {
      server = await sharedPostgres();
    });
    afterAll(async () => {
      await server?.close();
    });

    it('answered calls logged (at their estimate, flagged, in the window that remains), the dead instances’ reservations settled', async () => {
      const db = await createDatabase(server);
      const instances = await startInstances(4, { ...ENV, DATABASE_URL: db.url });
      const store = await postgresCrashStore(db.url);
      try {
        const figures = await killThreeTimes(instances, store, false);
        console.log('[crash-recovery] Postgres, per kill:', JSON.stringify(figures));
      } finally {
        await store.close();
        await stopAllInstances();
        await db.drop();
      }
    }, 240_000);
  });
});
