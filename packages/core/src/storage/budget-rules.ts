import { nextBudgetResetAt } from '../budget-period.js';
import type { BudgetState } from './storage-contract.js';

/**
 * The budget rules every backend applies inside its guarded write, written once here so that
 * backends evaluated in JavaScript cannot drift apart.
 */

/** The state after a due period reset (spend back to 0, next reset computed), or the same object. */
export function applyDueReset(state: BudgetState, now: Date): BudgetState {
  if (!state.budgetResetAt || !state.budgetDuration || state.budgetResetAt.getTime() > now.getTime()) {
    return state;
  }
  return { ...state, spendNano: 0, budgetResetAt: nextBudgetResetAt(state.budgetDuration, now) };
}

/** Strict admission: the worst case must fit under the cap. */
export function fitsBudget(state: BudgetState, amountNano: number): boolean {
  return (
    state.maxBudgetNano === null || state.spendNano + state.reservedNano + amountNano <= state.maxBudgetNano
  );
}
