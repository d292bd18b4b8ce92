/**
 * Postgres goes away under a running instance: shut down (connections refused) or frozen (connections
 * open, nothing answers). The server is a throwaway one this file starts, never the shared one.
 * `deny`: a guarded call answers 503 within the storage timeout, and the instance serves again as
 * soon as Postgres is back, without a restart. `allow`: calls are served meanwhile, and their spend
 * is written once Postgres is back.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { budgetedKey, type CallOutcome, callCosts, chat, eventually } from './clients.js';
import { type Instance, startInstances, stopAllInstances } from './instances.js';
import { createDatabase, startThrowawayPostgres, type ThrowawayPostgres } from './postgres.js';
import { readPostgres } from './stored.js';

const STORAGE_TIMEOUT_MS = 1000;

let pg: ThrowawayPostgres;
let down = false;
let frozen = false;
const drops: Array<() => Promise<void>> = [];
beforeAll(async () => {
  pg = await startThrowawayPostgres();
}, 120_000);
afterEach(async () => {
  if (frozen) pg.thaw();
  if (down) await pg.start();
  frozen = down = false;
  await stopAllInstances();
  for (const drop of drops.splice(0)) await drop();
});
afterAll(async () => {
  await pg?.close();
});

async function instanceOnThrowaway(
  onStorageError: 'deny' | 'allow',
): Promise<{ instance: Instance; dbUrl: string }> {
  const db = await createDatabase(pg);
  drops.push(db.drop);
  const [instance] = await startInstances(1, {
    DATABASE_URL: db.url,
    SPENDGUARD_ON_STORAGE_ERROR: onStorageError,
    SPENDGUARD_STORAGE_TIMEOUT_MS: String(STORAGE_TIMEOUT_MS),
  });
  return { instance: instance!, dbUrl: db.url };
}

async function timedChat(url: string, key: string): Promise<{ outcome: CallOutcome; ms: number }> {
  const t0 = performance.now();
  const outcome = await chat(url, key);
  return { outcome, ms: performance.now() - t0 };
}

/**
 * A 503 is the guard's answer: a frozen Postgres never answers, so without the storage timeout the
 * call would wait for the client's own 30 s timeout and get no HTTP answer at all.
 */
function expect503(call: { outcome: CallOutcome; ms: number }): void {
  expect(call.outcome.status, JSON.stringify(call.outcome)).toBe(503);
  expect(JSON.parse(call.outcome.error ?? '{}')).toMatchObject({
    error: { type: 'service_unavailable', code: '503' },
  });
}

it('deny: 503 within the storage timeout while Postgres is down or frozen, served again once it is back, without a restart', async () => {
  const { instance, dbUrl } = await instanceOnThrowaway('deny');
  const ids = await budgetedKey(instance.url, 10);
  expect((await chat(instance.url, ids.key)).status).toBe(200);

  // Shut down: every connection is refused at once.
  down = true;
  await pg.stop();
  expect503(await timedChat(instance.url, ids.key));
  await pg.start();
  down = false;
  await eventually(
    async () => (await chat(instance.url, ids.key)).status === 200,
    20_000,
    'service after restart',
  );

  // Frozen: connections stay open and nothing answers; only the timeout ends the wait.
  frozen = true;
  pg.freeze();
  const hung = await timedChat(instance.url, ids.key);
  pg.thaw();
  frozen = false;
  expect503(hung);
  expect(hung.ms).toBeGreaterThanOrEqual(STORAGE_TIMEOUT_MS - 50);
  await eventually(
    async () => (await chat(instance.url, ids.key)).status === 200,
    20_000,
    'service after thaw',
  );

  expect(instance.child.exitCode, 'the instance was never restarted').toBeNull();
  // Nothing half-written: a reservation that landed after its timeout was released.
  await eventually(
    async () => (await readPostgres(dbUrl, ids)).openReservations === 0,
    10_000,
    'no open reservation',
  );
  const stored = await readPostgres(dbUrl, ids);
  const total = stored.logs.reduce((s, l) => s + l.spendNano, 0);
  for (const kind of ['key', 'user', 'team'] as const) {
    expect(stored.counters[kind], kind).toMatchObject({ spendNano: total, reservedNano: 0 });
  }
}, 90_000);

it('allow: serves while Postgres is down, and writes that spend once it is back', async () => {
  const { instance, dbUrl } = await instanceOnThrowaway('allow');
  const costs = await callCosts([instance.url]);
  const ids = await budgetedKey(instance.url, 10);
  const before = await chat(instance.url, ids.key); // the instance now knows the key
  expect(before.status).toBe(200);

  down = true;
  await pg.stop();
  const during: CallOutcome[] = [];
  for (let i = 0; i < 5; i++) during.push(await chat(instance.url, ids.key));
  expect(during.map((o) => [o.status, o.completed])).toEqual(Array(5).fill([200, true]));
  await pg.start();
  down = false;

  const served = [before, ...during].map((o) => o.callId!);
  await eventually(
    async () => {
      const logged = new Set((await readPostgres(dbUrl, ids)).logs.map((l) => l.requestId));
      return served.every((id) => logged.has(id));
    },
    30_000,
    'the spend of the calls served during the outage',
  );
  const stored = await readPostgres(dbUrl, ids);
  expect(stored.logs.map((l) => l.requestId).sort()).toEqual([...served].sort());
  expect(stored.logs.every((l) => l.spendNano === costs.actualNano && !l.expired)).toBe(true);
  for (const kind of ['key', 'user', 'team'] as const) {
    expect(stored.counters[kind], kind).toMatchObject({ spendNano: 6 * costs.actualNano, reservedNano: 0 });
  }
}, 90_000);
