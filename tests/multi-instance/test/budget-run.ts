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
export const IN_FLIGHT = 400;
/** $1: about 99.6 whole calls (gpt-4o, 8 prompt and 1,000 completion tokens: $0.01002). */
export const BUDGET_NANO = 1_000_000_000;

export interface Run {
  costs: CallCosts;
  budgetNano: number;
  ids: Awaited<ReturnType<typeof budgetedKey>>;
  outcomes: CallOutcome[];
  served: CallOutcome[];
  /** What the served calls cost, by their `x-litellm-response-cost` headers. */
  servedNano: number;
}

/** A call's cost from its header, in nano-dollars. */
export const costNano = (o: CallOutcome) => Math.round(Number(o.costHeader) * 1e9);

/** Spends one budget from every instance at once: `CALLS` calls, `IN_FLIGHT` at a time, round-robin. */
export async function spendOneBudget(instances: Instance[]): Promise<Run> {
  const urls = instances.map((i) => i.url);
  const costs = await callCosts(urls);
  const budgetNano = BUDGET_NANO;
  const ids = await budgetedKey(urls[0]!, budgetNano / 1e9);
  const outcomes = await runLoad({ urls, key: ids.key, total: CALLS, concurrency: IN_FLIGHT }).done;
  const unexpected = outcomes.filter((o) => !((o.status === 200 || o.status === 429) && o.completed));
  expect(unexpected, 'every call is served (200) or refused for its budget (429)').toEqual([]);
  const served = outcomes.filter((o) => o.status === 200);
  expect(new Set(served.map((o) => o.callId)).size).toBe(served.length);
  // Whole calls cost what the calibration call did; a lowered one (near the cap) less.
  for (const o of served) expect(costNano(o)).toBeLessThanOrEqual(costs.actualNano);
  expect(served.filter((o) => costNano(o) !== costs.actualNano).length).toBeLessThanOrEqual(
    instances.length * 2,
  );
  const servedNano = served.reduce((s, o) => s + costNano(o), 0);
  return { costs, budgetNano, ids, outcomes, served, servedNano };
}

/**
 * The budget was shared: every instance answered its share of the calls (each 200 or 429 is a check
 * against the shared counters) and at least two instances served some. Not every instance must serve:
 * the calls arrive at once and the budget goes to the reservations that reach the store first, so an
 * instance the machine runs late (CI's 2 vCPUs hold the other instances and the database too) may find
 * it spent and refuse all of its own.
 */
export function expectShared(instances: Instance[], run: Run): void {
  const answered = instances.map((_, i) => run.outcomes.filter((o) => o.instance === i).length);
  const served = instances.map((_, i) => run.served.filter((o) => o.instance === i).length);
  for (const n of answered) expect(n, `calls answered per instance: ${answered}`).toBeGreaterThan(0);
  expect(served.filter((n) => n > 0).length, `calls served per instance: ${served}`).toBeGreaterThanOrEqual(
    2,
  );
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
  const logs: Array<{ call_id: string; spend: number }> = await adminCall(
    instances[0]!.url,
    'GET',
    `/spend/logs?api_key=${run.ids.token}`,
  );
  expect(logs.map((l) => l.call_id).sort()).toEqual(run.served.map((o) => o.callId).sort());
  const byId = new Map(run.served.map((o) => [o.callId, costNano(o)]));
  for (const l of logs) expect(Math.round(l.spend * 1e9)).toBe(byId.get(l.call_id));
}
