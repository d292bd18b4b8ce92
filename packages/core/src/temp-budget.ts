import type { BudgetState, KeyRecord } from './storage/storage-contract.js';

/**
 * LiteLLM's temporary budget increase on a key (`temp_budget_increase` until `temp_budget_expiry`, set
 * with `/key/update`). As LiteLLM does, it lives in the key's metadata; the key's budget counter holds
 * the raised cap while it runs, so every backend enforces it unchanged, and the first call after the
 * expiry puts the cap back (`spendguard_base_max_budget`, an absolute value: instances doing it at the
 * same time write the same thing).
 */
export const TEMP_INCREASE = 'temp_budget_increase';
export const TEMP_EXPIRY = 'temp_budget_expiry';
export const TEMP_BASE = 'spendguard_base_max_budget';

export interface TempIncrease {
  /** USD. */
  increase: number;
  expiresAt: Date;
  /** The cap without the increase, USD; `null`: none. */
  baseMaxBudget: number | null;
}

/** The key's temporary increase, running or over; `null` when it has none. */
export function tempIncreaseOf(key: KeyRecord): TempIncrease | null {
  const m = key.metadata;
  const increase = m[TEMP_INCREASE];
  const expiry = m[TEMP_EXPIRY];
  if (typeof increase !== 'number' || typeof expiry !== 'string' || !(TEMP_BASE in m)) return null;
  const base = m[TEMP_BASE];
  return { increase, expiresAt: new Date(expiry), baseMaxBudget: typeof base === 'number' ? base : null };
}

/** The metadata without the increase's fields. */
export function withoutTempIncrease(metadata: Record<string, unknown>): Record<string, unknown> {
  const { [TEMP_INCREASE]: _i, [TEMP_EXPIRY]: _e, [TEMP_BASE]: _b, ...rest } = metadata;
  return rest;
}

/** The base cap in nano-dollars of a counter that may hold a running increase. */
export function baseMaxNano(state: BudgetState | null, running: TempIncrease | null): number | null {
  if (running) return running.baseMaxBudget === null ? null : Math.round(running.baseMaxBudget * 1e9);
  return state?.maxBudgetNano ?? null;
}
