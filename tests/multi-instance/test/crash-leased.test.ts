/**
 * SIGKILL of an instance whose calls come from an escrow lease: a team key (owned by a user, LiteLLM's
 * usual setup) with a budget far above the load, so each instance admits its calls from a lease in
 * memory and writes their settlements in batches, without a commit before each last byte
 * (docs/crash-recovery.md). Calls the victim answered may then have no spend-log row of their own: their
 * cost is inside its lease's charge, at what the lease held. The lease holds the key and its team; the
 * key's user is not held (a team key is not held to its user's budget) but counts every call, and the
 * lease's charge must reach it too. Checked on the store after the survivor's sweep: the key's, the
 * team's and the user's counters are each exactly the sum of the key's spend logs (the victim's lease
 * charge included), and never less than what the clients received.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { budgetedKey, callCosts, endUserOf, eventually, runLoad } from './clients.js';
import { startInstances, stopAllInstances } from './instances.js';
import { sqliteCrashStore } from './stored.js';

const CALLS = 1200;
const IN_FLIGHT = 16;
const VICTIM = 1;
const ENV = {
  SPENDGUARD_STORAGE_TIMEOUT_MS: '10000',
  SPENDGUARD_ENFORCEMENT: 'strict',
  SIM_LATENCY_MS: '5',
};

afterEach(async () => {
  await stopAllInstances();
});

it('on one SQLite file: a dead instance’s lease is charged to the key, its team and its user alike, never under what was answered', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'spendguard-crash-leased-')), 'shared.db');
  const instances = await startInstances(2, { ...ENV, SPENDGUARD_DB: path });
  const store = sqliteCrashStore(path);
  try {
    const urls = instances.map((i) => i.url);
    const costs = await callCosts(urls);
    const ids = await budgetedKey(urls[0]!, 1000); // $1,000: far from any cap, so calls are leased
    let dead = false;
    const load = runLoad({
      urls,
      key: ids.key,
      total: CALLS,
      concurrency: IN_FLIGHT,
      targets: () => (dead ? [0] : [0, 1]),
    });
    // Mid-load, while the victim holds a lease: an open reservation named `lease:` for its calls.
    await eventually(
      async () => {
        if (load.outcomes.length >= CALLS) throw new Error('the load ended before the kill');
        return load.outcomes.length >= CALLS / 4 && (await store.openLeasesOf(endUserOf(VICTIM))) > 0;
      },
      60_000,
      'the victim to hold a lease',
    );
    instances[VICTIM]!.child.kill('SIGKILL');
    dead = true;
    await instances[VICTIM]!.exited;
    const outcomes = await load.done;
    expect(outcomes).toHaveLength(CALLS);
    // The survivor's sweep charges the victim's lease once its heartbeat has been silent (10 s).
    await eventually(async () => (await store.openReservations()) === 0, 40_000, 'every reservation settled');

    const logs = await store.logsOf(ids.token);
    const leaseCharges = [...logs.entries()].filter(([id, l]) => id.startsWith('lease:') && l.processDied);
    expect(leaseCharges.length, 'the victim died holding a lease').toBeGreaterThan(0);
    for (const [, l] of leaseCharges) expect(l.endUser).toBe(endUserOf(VICTIM));
    const total = [...logs.values()].reduce((n, l) => n + l.spendNano, 0);
    const counters = await store.counters(ids);
    for (const kind of ['key', 'team', 'user'] as const) {
      expect(counters[kind], kind).toMatchObject({ spendNano: total, reservedNano: 0 });
    }
    // Never under what the clients received; only the victim's answered calls may lack a row of their own.
    const answered = outcomes.filter((o) => o.status === 200 && o.completed);
    expect(total).toBeGreaterThanOrEqual(answered.length * costs.actualNano);
    const unlogged = answered.filter((o) => !logs.has(o.callId!));
    expect(unlogged.filter((o) => o.instance !== VICTIM)).toEqual([]);
    console.log(
      `[crash-leased] SQLite: ${answered.length} answered, ${unlogged.length} of the victim's without a row of their own, ${leaseCharges.length} lease charge(s)`,
    );
  } finally {
    await store.close();
  }
}, 180_000);
