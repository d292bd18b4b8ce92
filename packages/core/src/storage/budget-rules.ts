import { nextBudgetResetAt } from '../budget-period.js';
import type { BudgetState, EnforcementMode, PendingCall, SpendLogRecord } from './storage-contract.js';

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

/**
 * `state` with new counters: what a reserve or settle decides. A plain literal of BudgetState's fields
 * (storage backends build one per scope per call, where an object spread costs more).
 */
export function withCounters(state: BudgetState, spendNano: number, reservedNano: number): BudgetState {
  return {
    scope: state.scope,
    maxBudgetNano: state.maxBudgetNano,
    budgetDuration: state.budgetDuration,
    budgetResetAt: state.budgetResetAt,
    softBudgetNano: state.softBudgetNano,
    spendNano,
    reservedNano,
  };
}

/** Whether a scope admits a call reserving `amountNano`, by enforcement mode (see `EnforcementMode`). */
export function fitsBudget(
  state: BudgetState,
  amountNano: number,
  mode: EnforcementMode = 'strict',
): boolean {
  if (state.maxBudgetNano === null) return true;
  if (mode === 'strict') return state.spendNano + state.reservedNano + amountNano <= state.maxBudgetNano;
  if (mode === 'shrink') return state.spendNano + state.reservedNano < state.maxBudgetNano;
  return state.spendNano < state.maxBudgetNano;
}

/**
 * The spend log of a reservation that expired unsettled (its process died mid-call): charged at the
 * reserved worst case and flagged, so spend is never under-counted. `deadProcess`: charged because
 * that process's heartbeat stopped (`settleDeadProcesses`), not for its TTL.
 */
export function expiredReservationLog(
  reservationId: string,
  amountNano: number,
  pending: PendingCall | null,
  now: Date,
  deadProcess?: string,
): SpendLogRecord {
  return {
    requestId: pending?.requestId ?? reservationId,
    callType: pending?.callType ?? 'unknown',
    apiKeyHash: pending?.apiKeyHash ?? '',
    spendNano: amountNano,
    promptTokens: 0,
    completionTokens: 0,
    totalTokens: 0,
    startTime: pending?.startTime ?? now,
    endTime: now,
    model: pending?.model ?? '',
    provider: null,
    userId: pending?.userId ?? null,
    teamId: pending?.teamId ?? null,
    endUser: pending?.endUser ?? null,
    tags: pending?.tags ?? [],
    status: 'failure',
    estimated: true,
    httpStatus: 0,
    metadata:
      deadProcess === undefined
        ? { expired_reservation: true, reservation_id: reservationId }
        : { expired_reservation: true, reservation_id: reservationId, process_died: deadProcess },
  };
}
