import type { ScopeKind } from '@spendguard/core/storage';
import { capFor, periodStart, type SeedPlan } from './seed-data.js';

/** One budget counter as the seed leaves it: spend in its current period, and a cap relative to it. */
export interface CounterUpdate {
  kind: ScopeKind;
  id: string;
  spendNano: number;
  maxBudgetNano: number | null;
}

/**
 * The counters that agree with the loaded logs: each scope's spend is the sum of its logs since its
 * period began (at `options.end`), read from the store by `sumsSince`, and its cap is set so that the
 * share of it used is the plan's (some near, some over).
 */
export async function counterUpdates(
  plan: SeedPlan,
  sumsSince: (kind: ScopeKind, sinceMs: number) => Promise<Map<string, number>>,
): Promise<CounterUpdate[]> {
  const cache = new Map<string, Map<string, number>>();
  const updates: CounterUpdate[] = [];
  for (const budget of plan.budgets) {
    const since = periodStart(budget.budgetDuration, plan.options.end);
    const cacheKey = `${budget.scope.kind}:${since}`;
    let sums = cache.get(cacheKey);
    if (!sums) {
      sums = await sumsSince(budget.scope.kind, since);
      cache.set(cacheKey, sums);
    }
    const spendNano = sums.get(budget.scope.id) ?? 0;
    updates.push({
      kind: budget.scope.kind,
      id: budget.scope.id,
      spendNano,
      maxBudgetNano: budget.usedShare === null ? null : capFor(spendNano, budget.usedShare),
    });
  }
  return updates;
}

/** The spend log column a scope kind is attributed by. */
export const SCOPE_COLUMN: Partial<Record<ScopeKind, string>> = {
  key: 'api_key_hash',
  user: 'user_id',
  team: 'team_id',
};
