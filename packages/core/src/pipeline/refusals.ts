// Stage 2's budget refusal: the 429 that names the scope, in LiteLLM's words, then what was in
// flight and what the call could cost.
import { SpendGuardError } from '../errors.js';
import type { BudgetState, ScopeRef } from '../storage/storage-contract.js';
import { scopeKey } from '../storage/storage-contract.js';
import type { KeyContext } from './call-types.js';

/** Why a budget refused a call in strict mode, for the 429's message. */
export interface RefusalDetail {
  /** The call's precise worst case at the output cap it asked for. */
  worstNano: number;
  /** Its worst case at `minOutputTokens`, when its output cap could be lowered. */
  floorNano: number | null;
  /** How long it waited for calls in flight. */
  waitedMs: number;
}

/**
 * The 429 for a budget that cannot take a call: LiteLLM's message first (its clients match on it),
 * then the truth of it: what is in flight, what this call could cost, and what to do.
 */
export function budgetExceeded(
  ctx: KeyContext,
  refused: BudgetState,
  detail: RefusalDetail | null,
  now: Date,
): SpendGuardError {
  const label = ctx.labels.get(scopeKey(refused.scope)) ?? scopeLabel(ctx, refused.scope);
  const spend = pyFloat(refused.spendNano / 1e9);
  const max = pyFloat((refused.maxBudgetNano ?? 0) / 1e9);
  const headers: Record<string, string> = {};
  if (refused.budgetResetAt) {
    headers['retry-after'] = String(
      Math.max(1, Math.ceil((refused.budgetResetAt.getTime() - now.getTime()) / 1000)),
    );
  }
  let message = `Budget has been exceeded! ${label} Current cost: ${spend}, Max budget: ${max}`;
  if (detail) {
    const left = Math.max(0, (refused.maxBudgetNano ?? 0) - refused.spendNano);
    message +=
      `. In flight: ${pyFloat(refused.reservedNano / 1e9)}; this call's worst case: ${pyFloat(detail.worstNano / 1e9)}` +
      (detail.floorNano !== null
        ? ` (${pyFloat(detail.floorNano / 1e9)} with its output cut to the minimum)`
        : '') +
      `; left once the calls in flight settle: ${pyFloat(left / 1e9)}` +
      (detail.waitedMs > 0 ? `; waited ${detail.waitedMs} ms for calls in flight` : '') +
      '. Lower max_tokens or shorten the prompt, wait for the budget to reset, or raise max_budget.';
    headers['x-spendguard-call-worst-case'] = String(detail.worstNano / 1e9);
    headers['x-spendguard-budget-in-flight'] = String(refused.reservedNano / 1e9);
  }
  return new SpendGuardError('BUDGET_EXCEEDED', message, { headers, scope: refused.scope });
}

/** How a 429 names the optional scope that refused (LiteLLM's `Team=…` style). */
function scopeLabel(ctx: KeyContext, scope: ScopeRef): string {
  switch (scope.kind) {
    case 'customer':
      return `EndUser=${scope.id}`;
    case 'tag':
      return `Tag=${scope.id}`;
    case 'model':
      return `Key=${ctx.key.keyAlias ?? ctx.key.keyName} Model=${scope.id.slice(ctx.key.tokenHash.length + 1)}`;
    case 'global':
      return 'Global=proxy';
    default:
      return `${scope.kind}=${scope.id}`;
  }
}

/** Python's float repr for the amounts in LiteLLM's messages (`50.0`, not `50`). */
function pyFloat(n: number): string {
  const s = String(Number(n.toFixed(9)));
  return s.includes('.') || s.includes('e') ? s : `${s}.0`;
}
