/**
 * One key, one budget, several instances spending it at once; shared by the Postgres and the SQLite
 * tests.
 */
import { expect } from 'vitest';
import {
  adminCall,
  apiSpend,
  budgetedKey,
  type CallCosts,
  type CallOutcome,
  callCosts,
  runLoad,
} from './clients.js';
import type { Instance } from './instances.js';

export const CALLS = 400;
export const IN_FLIGHT = 100;
/** The budget fits this many calls at their actual cost. */
export const CALLS_IN_BUDGET = 100;

export interface Run {
  costs: CallCosts;
  budgetNano: number;
  ids: Awaited<ReturnType<typeof budgetedKey>>;
  outcomes: CallOutcome[];
  served: CallOutcome[];
}

/** Spends one budget from every instance at once: `CALLS` calls, `IN_FLIGHT` at a time, round-robin. */
export async function spendOneBudget(instances: Instance[]): Promise<Run> {
  const urls = instances.map((i) => i.url);
  const costs = await callCosts(urls);
  const budgetNano = CALLS_IN_BUDGET * costs.actualNano;
  const ids = await budgetedKey(urls[0]!, budgetNano / 1e9);
  const outcomes = await runLoad({ urls, key: ids.key, total: CALLS, concurrency: IN_FLIGHT }).done;
  const unexpected = outcomes.filter((o) => !((o.status === 200 || o.status === 429) && o.completed));
  expect(unexpected, 'every call is served (200) or refused for its budget (429)').toEqual([]);
  const served = outcomes.filter((o) => o.status === 200);
  expect(new Set(served.map((o) => o.callId)).size).toBe(served.length);
  return { costs, budgetNano, ids, outcomes, served };
}

/** The management API (through every instance) agrees with storage, and with the spend logs. */
export async function checkApi(instances: Instance[], run: Run, spendNano: number): Promise<void> {
  for (const instance of instances) {
    const spend = await apiSpend(instance.url, run.ids);
    expect(spend, instance.name).toEqual({
      key: spendNano / 1e9,
      user: spendNano / 1e9,
      team: spendNano / 1e9,
    });
  }
  const logs: Array<{ request_id: string; spend: number }> = await adminCall(
    instances[0]!.url,
    'GET',
    `/spend/logs?api_key=${run.ids.token}`,
  );
  expect(logs.map((l) => l.request_id).sort()).toEqual(run.served.map((o) => o.callId).sort());
  expect(logs.every((l) => l.spend === run.costs.actualNano / 1e9)).toBe(true);
}
