import { describe, expect, it } from 'vitest';
import { resolveOptions } from '../src/config.js';
import { MemoryStorage } from '../src/storage/memory-storage.js';

const base = { storage: new MemoryStorage(), masterKey: 'sk-7fQ2pLx9Vb3mZr8TnK4wYc6D' };

describe('end-user budget options', () => {
  it('takes defaultEndUserBudgetId (LiteLLM max_end_user_budget_id) as given', () => {
    expect(resolveOptions({ ...base, defaultEndUserBudgetId: 'free-tier' }).defaultEndUserBudgetId).toBe(
      'free-tier',
    );
    expect(resolveOptions(base).defaultEndUserBudgetId).toBeUndefined();
  });

  it('refuses defaultEndUserBudgetId with defaultEndUserBudget, and an empty one, saying how to fix it', () => {
    expect(() =>
      resolveOptions({
        ...base,
        defaultEndUserBudget: { maxBudget: 1 },
        defaultEndUserBudgetId: 'free-tier',
      }),
    ).toThrow(/defaultEndUserBudgetId.*not both/s);
    expect(() => resolveOptions({ ...base, defaultEndUserBudgetId: '' })).toThrow(/must name a budget/);
  });
});
