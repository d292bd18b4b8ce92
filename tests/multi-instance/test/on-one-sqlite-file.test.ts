/**
 * Two processes of the example servers on one SQLite file: one key's budget spent from both at once
 * is never exceeded (key, user and team), yet at least 95% of it is used.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkApi, expectShared, spendOneBudget } from './budget-run.js';
import { eventually } from './clients.js';
import { startInstances, stopAllInstances } from './instances.js';
import { readSqliteCounters } from './stored.js';

afterEach(async () => {
  await stopAllInstances();
});

describe('one budget, 2 instances on one SQLite file', () => {
  it('strict: never over the budget, and at least 97% of it used', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'spendguard-multi-')), 'shared.db');
    const instances = await startInstances(2, {
      SPENDGUARD_STORAGE_TIMEOUT_MS: '10000', // about budgets, not timeouts: no 503 on a busy machine
      SPENDGUARD_DB: path,
      SPENDGUARD_ENFORCEMENT: 'strict',
      SIM_LATENCY_MS: '50',
    });
    const run = await spendOneBudget(instances);
    await eventually(
      async () => (await readSqliteCounters(path, run.ids)).openReservations === 0,
      10_000,
      'every settlement',
    );
    const stored = await readSqliteCounters(path, run.ids);
    for (const kind of ['key', 'user', 'team'] as const) {
      const c = stored.counters[kind];
      expect(c.spendNano, `${kind} spend <= budget`).toBeLessThanOrEqual(run.budgetNano);
      expect(c.spendNano, `${kind} spend >= 97% of the budget`).toBeGreaterThanOrEqual(0.97 * run.budgetNano);
      expect(c.reservedNano, kind).toBe(0);
      expect(c.spendNano, `${kind} spend = the served calls`).toBe(run.servedNano);
    }
    expectShared(instances, run);
    await checkApi(instances, run, stored.counters.key.spendNano);
  }, 120_000);
});
