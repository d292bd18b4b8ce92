import { nextBudgetResetAt } from '../budget-period.js';
import { SpendGuardError } from '../errors.js';
import type {
  BudgetInit,
  BudgetState,
  BudgetTierRecord,
  EnforcementMode,
  PendingCall,
  RateLimits,
  ScopeRef,
  SpendLogRecord,
} from './storage-contract.js';

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

/** The counter definition of an end user linked to `tier` at `now` (its first reset from `now`). */
export function tierBudgetInit(tier: BudgetTierRecord, now: Date): BudgetInit {
  return {
    maxBudgetNano: tier.maxBudgetNano,
    softBudgetNano: tier.softBudgetNano,
    budgetDuration: tier.budgetDuration,
    budgetResetAt: tier.budgetDuration ? nextBudgetResetAt(tier.budgetDuration, now) : null,
  };
}

/**
 * A linked end user's counter after its tier changed (or it was linked to another tier): the due
 * reset applied, then the tier's limits; spend and reservations stay, and the reset schedule stays
 * unless the duration changed (then it restarts from `now`).
 */
export function retieredState(state: BudgetState, tier: BudgetTierRecord, now: Date): BudgetState {
  const current = applyDueReset(state, now);
  const sameDuration = current.budgetDuration === tier.budgetDuration;
  return {
    ...current,
    maxBudgetNano: tier.maxBudgetNano,
    softBudgetNano: tier.softBudgetNano,
    budgetDuration: tier.budgetDuration,
    budgetResetAt: sameDuration ? current.budgetResetAt : tierBudgetInit(tier, now).budgetResetAt,
  };
}

/** The rate limits of an end user linked to `tier`; `null` when the tier sets none. */
export function tierRateLimits(tier: BudgetTierRecord): RateLimits | null {
  if (tier.rpmLimit === null && tier.tpmLimit === null && tier.maxParallelRequests === null) return null;
  return {
    rpmLimit: tier.rpmLimit,
    tpmLimit: tier.tpmLimit,
    maxParallelRequests: tier.maxParallelRequests,
    modelRpmLimit: {},
    modelTpmLimit: {},
  };
}

/** What a backend throws when a write links an end user to a budget tier that does not exist. */
export function missingBudgetTier(budgetId: string): SpendGuardError {
  return new SpendGuardError(
    'BAD_REQUEST',
    `Budget not found: budget_id '${budgetId}'; create it with /budget/new`,
    {
      param: 'budget_id',
    },
  );
}

/**
 * The scopes an abandoned reservation is charged to at its estimate: those it held, and the user its
 * call was for when that user's counter was not held. A team key's user is charged at settlement
 * without being checked at admission (LiteLLM applies only the team's budgets to a team key), so the
 * charge of an abandoned call must reach the user as its settlement would have.
 */
export function abandonedChargeScopes(
  scopes: readonly ScopeRef[],
  pending: { userId?: string | null } | null | undefined,
): ScopeRef[] {
  const userId = pending?.userId;
  if (!userId || scopes.some((s) => s.kind === 'user' && s.id === userId)) return [...scopes];
  return [...scopes, { kind: 'user', id: userId }];
}
