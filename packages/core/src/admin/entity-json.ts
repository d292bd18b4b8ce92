import type { GuardResponse } from '../pipeline/call-types.js';
import { hasRateLimits } from '../storage/rate-limit-rules.js';
import type {
  BudgetInit,
  BudgetState,
  KeyRecord,
  RateLimits,
  ScopeRef,
  SpendLogRecord,
  TeamRecord,
  UserRecord,
} from '../storage/storage-contract.js';

/** The management API's answers: records in LiteLLM's JSON field names, money in USD. */

export function ok(body: unknown): GuardResponse {
  return { status: 200, headers: {}, body };
}

export function stateOf(scope: ScopeRef, budget: BudgetInit): BudgetState {
  return { scope, ...budget, softBudgetNano: budget.softBudgetNano ?? null, spendNano: 0, reservedNano: 0 };
}

export function indexStates(states: BudgetState[]): Map<string, BudgetState> {
  return new Map(states.map((s) => [`${s.scope.kind}:${s.scope.id}`, s]));
}

export function budgetJson(state: BudgetState | null) {
  return {
    spend: state ? state.spendNano / 1e9 : 0,
    max_budget: state?.maxBudgetNano == null ? null : state.maxBudgetNano / 1e9,
    soft_budget: state?.softBudgetNano == null ? null : state.softBudgetNano / 1e9,
    budget_duration: state?.budgetDuration ?? null,
    budget_reset_at: state?.budgetResetAt?.toISOString() ?? null,
  };
}

/** A member as LiteLLM's `members_with_roles` lists it. */
export interface MemberJson {
  user_id: string;
  user_email: string | null;
  role: 'admin' | 'user';
}

/** LiteLLM's rate-limit fields of an entity (`null`: no limit). */
export function rateJson(limits: RateLimits | null | undefined) {
  return {
    rpm_limit: limits?.rpmLimit ?? null,
    tpm_limit: limits?.tpmLimit ?? null,
    max_parallel_requests: limits?.maxParallelRequests ?? null,
  };
}

export function teamJson(
  team: TeamRecord,
  state: BudgetState | null,
  members: MemberJson[] = [],
  limits: RateLimits | null = null,
) {
  return {
    team_id: team.teamId,
    team_alias: team.teamAlias,
    ...budgetJson(state),
    ...rateJson(limits),
    model_rpm_limit: limits?.modelRpmLimit ?? {},
    model_tpm_limit: limits?.modelTpmLimit ?? {},
    models: team.models,
    metadata: team.metadata,
    blocked: team.blocked,
    members_with_roles: members,
    created_at: team.createdAt.toISOString(),
  };
}

export function userJson(user: UserRecord, state: BudgetState | null, limits: RateLimits | null = null) {
  return {
    user_id: user.userId,
    user_email: user.userEmail,
    user_role: user.userRole,
    teams: user.teams,
    ...budgetJson(state),
    ...rateJson(limits),
    models: user.models,
    metadata: user.metadata,
    created_at: user.createdAt.toISOString(),
  };
}

export function keyJson(key: KeyRecord, state: BudgetState | null, limits: RateLimits | null = null) {
  return {
    token: key.tokenHash,
    key_name: key.keyName,
    key_alias: key.keyAlias,
    user_id: key.userId,
    team_id: key.teamId,
    budget_id: key.budgetId ?? null,
    ...budgetJson(state),
    ...rateJson(limits),
    model_rpm_limit: limits?.modelRpmLimit ?? {},
    model_tpm_limit: limits?.modelTpmLimit ?? {},
    models: key.models,
    tags: key.tags,
    metadata: key.metadata,
    blocked: key.blocked,
    expires: key.expiresAt?.toISOString() ?? null,
    created_at: key.createdAt.toISOString(),
  };
}

/** A spend log with LiteLLM's SpendLogs field names. */
export function spendLogJson(log: SpendLogRecord) {
  return {
    // LiteLLM keys a log by the provider's response id (chatcmpl-..., msg_...) when there is one; the
    // call id (the `x-litellm-call-id` header) stays readable, and either finds the log.
    request_id: log.responseId ?? log.requestId,
    call_id: log.requestId,
    call_type: log.callType,
    api_key: log.apiKeyHash,
    spend: log.spendNano / 1e9,
    total_tokens: log.totalTokens,
    prompt_tokens: log.promptTokens,
    completion_tokens: log.completionTokens,
    startTime: log.startTime.toISOString(),
    endTime: log.endTime.toISOString(),
    model: log.model,
    custom_llm_provider: log.provider,
    user: log.userId,
    team_id: log.teamId,
    end_user: log.endUser,
    request_tags: log.tags,
    status: log.status,
    // LiteLLM's columns: the model asked for is its model group (nothing is routed here); no cache
    // runs, so no call is a cache hit; the provider's base URL and the caller's address are not seen.
    model_group: log.model,
    session_id: typeof log.metadata.session_id === 'string' ? log.metadata.session_id : null,
    cache_hit: 'False',
    api_base: null,
    requester_ip_address: null,
    metadata: { ...log.metadata, estimated: log.estimated, http_status: log.httpStatus },
  };
}

const RATE_LIMIT_FIELDS = [
  'rpm_limit',
  'tpm_limit',
  'max_parallel_requests',
  'model_rpm_limit',
  'model_tpm_limit',
] as const;

/** True when a request body sets (or clears) any rate-limit field. */
export function setsRateLimits(b: object): boolean {
  return RATE_LIMIT_FIELDS.some((f) => (b as Record<string, unknown>)[f] !== undefined);
}

/** A request's LiteLLM rate-limit fields over `base` (absent: unchanged, `null`: removed); `null` when nothing is limited. */
export function rateLimitsFrom(
  b: {
    rpm_limit?: number | null;
    tpm_limit?: number | null;
    max_parallel_requests?: number | null;
    model_rpm_limit?: Record<string, number> | null;
    model_tpm_limit?: Record<string, number> | null;
  },
  base: RateLimits | null = null,
): RateLimits | null {
  const pick = <T>(given: T | null | undefined, old: T | null, none: T | null): T | null =>
    given === undefined ? old : (given ?? none);
  const limits: RateLimits = {
    rpmLimit: pick(b.rpm_limit, base?.rpmLimit ?? null, null),
    tpmLimit: pick(b.tpm_limit, base?.tpmLimit ?? null, null),
    maxParallelRequests: pick(b.max_parallel_requests, base?.maxParallelRequests ?? null, null),
    modelRpmLimit: pick(b.model_rpm_limit, base?.modelRpmLimit ?? {}, {}) ?? {},
    modelTpmLimit: pick(b.model_tpm_limit, base?.modelTpmLimit ?? {}, {}) ?? {},
  };
  return hasRateLimits(limits) ? limits : null;
}
