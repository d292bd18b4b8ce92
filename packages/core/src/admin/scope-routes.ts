import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import { INPUT_LIMITS, storableName, storableText, usdAmount } from '../input-hygiene.js';
import { keyHashFromKeyOrHash } from '../keys.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import {
  type BudgetInit,
  type BudgetState,
  type BudgetTierRecord,
  type CustomerRecord,
  type EntityInsert,
  GLOBAL_SCOPE_ID,
  memberScopeId,
  modelScopeId,
  type RateLimits,
  type ScopeChanges,
  type ScopeKind,
  type ScopeRef,
  type SpendStorage,
  type TagRecord,
  windowScopeId,
} from '../storage/storage-contract.js';
import { budgetTierJson } from './budget-routes.js';
import { budgetJson, ok, rateJson, rateLimitsFrom, setsRateLimits, stateOf } from './entity-json.js';
import type { ManagementApi, ManagementRequest } from './management-types.js';
import {
  type BudgetLimits,
  budgetFields,
  id,
  type ModelMaxBudget,
  metadata,
  rateLimitFields,
} from './schemas.js';

/**
 * The routes of the scopes beyond keys, users and teams: customers (end users), tags, a key's
 * per-model budgets, and a manual spend reset for any scope. LiteLLM's routes and field names.
 */

const customerNewSchema = z.object({
  user_id: id,
  alias: storableName.nullable().optional(),
  /** LiteLLM's: a blocked end user's calls are refused (as after /customer/block). */
  blocked: z.boolean({ error: 'must be true or false' }).optional(),
  ...budgetFields,
  ...rateLimitFields,
  metadata,
  /**
   * LiteLLM's: the budget tier (`/budget/new`) the end user spends under, instead of limits of its own
   * (not both); on an update, `null` unlinks it (it keeps the tier's limits as its own).
   */
  budget_id: id.nullable().optional(),
});
const customerUpdateSchema = customerNewSchema;
const customerInfoQuerySchema = z.object({ end_user_id: id });
/** `/customer/delete`, `/customer/block` and `/customer/unblock`: end users by id. */
const customerIdsSchema = z.object({
  user_ids: z.array(id, { error: 'must be an array of end user ids' }).min(1, 'must name at least one'),
});

const tagName = storableName.min(1, 'must not be empty');
const tagNewSchema = z.object({
  name: tagName,
  description: storableText(INPUT_LIMITS.descriptionLength).nullable().optional(),
  ...budgetFields,
  metadata,
});
const tagUpdateSchema = tagNewSchema;
const tagInfoSchema = z.object({
  names: z.array(tagName, { error: 'must be an array of tag names' }).min(1, 'must name at least one tag'),
});
const tagDeleteSchema = z.object({ name: tagName });

const SCOPE_KINDS = ['key', 'user', 'team', 'member', 'customer', 'tag', 'model', 'global'] as const;
const budgetResetSchema = z.object({
  scope: z.enum(SCOPE_KINDS, { error: `must be one of ${SCOPE_KINDS.join(', ')}` }),
  /** key: the key or its hash; member: `{team_id}:{user_id}` or use team_id + user_id; model: with key + model. */
  id: storableText(INPUT_LIMITS.keyRefLength).min(1, 'must not be empty').optional(),
  key: storableText(INPUT_LIMITS.keyRefLength).min(1, 'must not be empty').optional(),
  team_id: id.optional(),
  user_id: id.optional(),
  model: storableName.min(1, 'must not be empty').optional(),
  reset_to: usdAmount.optional(),
});

export class ScopeRoutes {
  constructor(private readonly api: ManagementApi) {}

  /** The routes, to merge into the management API's table (admin only). */
  routes(): Record<string, (req: ManagementRequest, storage: SpendStorage) => Promise<GuardResponse>> {
    return {
      'POST /customer/new': (r, s) => this.customerNew(r, s),
      'GET /customer/info': (r, s) => this.customerInfo(r, s),
      'POST /customer/update': (r, s) => this.customerUpdate(r, s),
      'POST /customer/delete': (r, s) => this.customerDelete(r, s),
      'POST /customer/block': (r, s) => this.customerBlock(r, s, true),
      'POST /customer/unblock': (r, s) => this.customerBlock(r, s, false),
      'POST /tag/new': (r, s) => this.tagNew(r, s),
      'POST /tag/info': (r, s) => this.tagInfo(r, s),
      'GET /tag/list': (_r, s) => this.tagList(s),
      'POST /tag/update': (r, s) => this.tagUpdate(r, s),
      'POST /tag/delete': (r, s) => this.tagDelete(r, s),
      'POST /budget/reset': (r, s) => this.budgetReset(r, s),
    };
  }

  private now(): Date {
    return this.api.now();
  }

  private async customerNew(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, customerNewSchema);
    refuseOwnLimitsWithTier(b);
    const ownLimits = OWN_LIMIT_FIELDS.some((f) => b[f] !== undefined && b[f] !== null);
    const record: CustomerRecord = {
      endUserId: b.user_id,
      alias: b.alias ?? null,
      blocked: b.blocked ?? false,
      metadata: b.metadata ?? {},
      createdAt: this.now(),
      // LiteLLM's max_end_user_budget_id: an end user given no budget of its own joins the default tier.
      budgetId: b.budget_id ?? (ownLimits ? null : this.api.defaultEndUserBudgetId()),
    };
    const budget = this.api.budgetInit(b.max_budget, b.budget_duration, b.soft_budget);
    const rateLimits = rateLimitsFrom(b);
    // A tier that does not exist: the store refuses (400 naming budget_id), and nothing is written.
    await storage.insert([{ type: 'customer', record, budget, rateLimits }]);
    this.api.forgetCustomer(record.endUserId);
    return ok(await this.customerAnswer(storage, record));
  }

  /** The end user as stored, with its counter, rate limits and (when linked) its tier. */
  private async customerAnswer(
    storage: SpendStorage,
    record: CustomerRecord,
  ): Promise<GuardResponse['body']> {
    const scope: ScopeRef = { kind: 'customer', id: record.endUserId };
    const [[state], [limits], tier] = await Promise.all([
      storage.getBudgets([scope], this.now()),
      storage.getRateLimits([scope]),
      record.budgetId ? storage.getBudgetTier(record.budgetId) : null,
    ]);
    return customerJson(record, state ?? null, limits?.limits ?? null, tier, this.now());
  }

  private async customerInfo(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, customerInfoQuerySchema);
    const record = await storage.getCustomer(q.end_user_id);
    if (!record) throw notFound(`End user not found: end_user_id '${q.end_user_id}'`, 'end_user_id');
    return ok(await this.customerAnswer(storage, record));
  }

  private async customerUpdate(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, customerUpdateSchema);
    refuseOwnLimitsWithTier(b);
    const scope: ScopeRef = { kind: 'customer', id: b.user_id };
    // Limits of its own on an end user that stays linked would be overruled by its tier: refused.
    if (b.budget_id === undefined && OWN_LIMIT_FIELDS.some((f) => b[f] !== undefined)) {
      const linked = (await storage.getCustomer(b.user_id))?.budgetId;
      if (linked) {
        const field = OWN_LIMIT_FIELDS.find((f) => b[f] !== undefined)!;
        throw new SpendGuardError(
          'BAD_REQUEST',
          `Invalid request: end user '${b.user_id}' spends under budget '${linked}', whose ${field} applies; change the budget with /budget/update, or send budget_id: null to give this end user limits of its own`,
          { param: field },
        );
      }
    }
    // The record, its budget, its rate limits and its tier link in one transaction: all or nothing.
    const [current] = setsRateLimits(b) ? await storage.getRateLimits([scope]) : [];
    const now = this.now();
    const record = await storage.updateCustomer(
      b.user_id,
      { alias: b.alias, metadata: b.metadata, blocked: b.blocked, budgetId: b.budget_id },
      budgetPatch(this.api, b),
      setsRateLimits(b)
        ? { now, rateLimits: { scope, limits: rateLimitsFrom(b, current?.limits ?? null) } }
        : { now },
    );
    if (!record) throw notFound(`End user not found: user_id '${b.user_id}'`, 'user_id');
    this.api.forgetCustomer(b.user_id);
    return ok(await this.customerAnswer(storage, record));
  }

  private async customerDelete(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, customerIdsSchema);
    const scopes = b.user_ids.map((u) => ({ kind: 'customer' as const, id: u }));
    // Records, counters and rate limits together, all or nothing.
    const deleted = await storage.deleteScopes(scopes);
    for (const scope of scopes) this.api.forgetCustomer(scope.id);
    return ok({ deleted_customers: deleted });
  }

  /**
   * LiteLLM's `/customer/block` and `/customer/unblock`: a blocked end user's calls are refused (400)
   * before anything is reserved. Blocking an end user not known yet creates it, uncapped, as LiteLLM
   * does; unblocking one not known does nothing. Other instances see the change once their cached
   * copy expires (`keyCacheTtlMs`).
   */
  private async customerBlock(
    req: ManagementRequest,
    storage: SpendStorage,
    blocked: boolean,
  ): Promise<GuardResponse> {
    const b = this.api.parseBody(req, customerIdsSchema);
    const ids = [...new Set(b.user_ids)];
    // Every id in one transaction: all of them change, or none.
    await storage.blockCustomers(ids, blocked, {
      createdAt: this.now(),
      budget: this.api.budgetInit(null, null),
      budgetId: this.api.defaultEndUserBudgetId(),
    });
    for (const endUserId of ids) this.api.forgetCustomer(endUserId);
    return ok(blocked ? { blocked_users: b.user_ids } : { unblocked_users: b.user_ids });
  }

  private async tagNew(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, tagNewSchema);
    const record: TagRecord = {
      name: b.name,
      description: b.description ?? null,
      metadata: b.metadata ?? {},
      createdAt: this.now(),
    };
    const budget = this.api.budgetInit(b.max_budget, b.budget_duration, b.soft_budget);
    await storage.insert([{ type: 'tag', record, budget }]);
    return ok(tagJson(record, stateOf({ kind: 'tag', id: record.name }, budget)));
  }

  /** LiteLLM's `/tag/info`: `{ names: [...] }` in, `{ name: info }` out; unknown names are a 404. */
  private async tagInfo(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, tagInfoSchema);
    const records = await Promise.all(b.names.map((n) => storage.getTag(n)));
    const missing = b.names.filter((_, i) => !records[i]);
    if (missing.length > 0) throw notFound(`Tags not found: ${missing.join(', ')}`, 'names');
    const states = await storage.getBudgets(
      b.names.map((n) => ({ kind: 'tag' as const, id: n })),
      this.now(),
    );
    const byName = new Map(states.map((st) => [st.scope.id, st]));
    return ok(Object.fromEntries(records.map((t) => [t!.name, tagJson(t!, byName.get(t!.name) ?? null)])));
  }

  private async tagList(storage: SpendStorage): Promise<GuardResponse> {
    const tags = await storage.listTags();
    const states = await storage.getBudgets(
      tags.map((t) => ({ kind: 'tag' as const, id: t.name })),
      this.now(),
    );
    const byName = new Map(states.map((st) => [st.scope.id, st]));
    return ok(tags.map((t) => tagJson(t, byName.get(t.name) ?? null)));
  }

  private async tagUpdate(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, tagUpdateSchema);
    // The record and its budget in one transaction: all or nothing.
    const record = await storage.updateTag(
      b.name,
      { description: b.description, metadata: b.metadata },
      budgetPatch(this.api, b),
    );
    if (!record) throw notFound(`Tag not found: name '${b.name}'`, 'name');
    const [state] = await storage.getBudgets([{ kind: 'tag', id: b.name }], this.now());
    return ok(tagJson(record, state ?? null));
  }

  private async tagDelete(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, tagDeleteSchema);
    const deleted = await storage.deleteScopes([{ kind: 'tag', id: b.name }]);
    if (deleted === 0) throw notFound(`Tag not found: name '${b.name}'`, 'name');
    return ok({ deleted: b.name });
  }

  /** Sets a scope's spend in the current period (default 0): a manual budget reset. */
  private async budgetReset(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, budgetResetSchema);
    const scope = resetScope(b);
    const toNano = Math.round((b.reset_to ?? 0) * 1e9);
    const state = await storage.resetSpend(scope, toNano, this.now());
    if (!state) throw notFound(`No budget for ${scope.kind} '${scope.id}'`, 'id');
    return ok({ scope: scope.kind, id: scope.id, ...budgetJson(state) });
  }
}

/** The budget fields present in an update body, as a counter patch. */
export function budgetPatch(
  api: Pick<ManagementApi, 'budgetInit'>,
  b: { max_budget?: number | null; budget_duration?: string | null; soft_budget?: number | null },
): Partial<BudgetInit> {
  const patch: Partial<BudgetInit> = {};
  if (b.max_budget !== undefined) patch.maxBudgetNano = api.budgetInit(b.max_budget, null).maxBudgetNano;
  if (b.soft_budget !== undefined)
    patch.softBudgetNano = api.budgetInit(null, null, b.soft_budget).softBudgetNano;
  if (b.budget_duration !== undefined) {
    const { budgetDuration, budgetResetAt } = api.budgetInit(null, b.budget_duration);
    Object.assign(patch, { budgetDuration, budgetResetAt });
  }
  return patch;
}

/** One `model_max_budget` entry (`10`, or `{ budget_limit, time_period }`) as a counter definition. */
export function modelBudgetInit(
  api: Pick<ManagementApi, 'budgetInit'>,
  value: NonNullable<NonNullable<ModelMaxBudget>[string]>,
): BudgetInit {
  if (typeof value === 'number') return api.budgetInit(value, null);
  return api.budgetInit(value.budget_limit ?? null, value.time_period ?? null);
}

/** The counter changes of a key update, written in the key's own transaction (`ScopeChanges`). */
export type CounterChanges = Required<Pick<ScopeChanges, 'deleteScopes' | 'upsertBudgets'>>;

/**
 * What makes a key's `model_max_budget` true: a counter per model with a budget (created, or its
 * definition changed, its spend kept), and the models set to `null` deleted.
 */
export function modelBudgetChanges(
  api: Pick<ManagementApi, 'budgetInit'>,
  tokenHash: string,
  budgets: NonNullable<ModelMaxBudget>,
): CounterChanges {
  const changes: CounterChanges = { deleteScopes: [], upsertBudgets: [] };
  for (const [model, value] of Object.entries(budgets)) {
    const scope: ScopeRef = { kind: 'model', id: modelScopeId(tokenHash, model) };
    if (value === null) {
      changes.deleteScopes.push(scope);
      continue;
    }
    const init = modelBudgetInit(api, value);
    const set = {
      maxBudgetNano: init.maxBudgetNano,
      budgetDuration: init.budgetDuration,
      budgetResetAt: init.budgetResetAt,
    };
    changes.upsertBudgets.push({ scope, set, insert: init });
  }
  return changes;
}

/** The counter inserts of a new entity's `budget_limits`, to write in the entity's own batch. */
export function windowInserts(
  api: Pick<ManagementApi, 'budgetInit'>,
  owner: ScopeRef,
  limits: BudgetLimits,
): EntityInsert[] {
  return (limits ?? []).map((w) => ({
    type: 'budget' as const,
    scope: { kind: 'window' as const, id: windowScopeId(owner, w.budget_duration) },
    budget: api.budgetInit(w.max_budget, w.budget_duration),
  }));
}

/**
 * What makes an existing entity's windows exactly `limits` (`null` or `[]`: none): a window whose
 * duration stays keeps its spend and period, a new one starts at zero, one no longer listed goes.
 */
export async function windowChanges(
  api: Pick<ManagementApi, 'budgetInit'>,
  storage: SpendStorage,
  owner: ScopeRef,
  limits: BudgetLimits,
  now: Date,
): Promise<CounterChanges> {
  const wanted = new Map((limits ?? []).map((w) => [windowScopeId(owner, w.budget_duration), w]));
  const current = await storage.listWindows([owner], now);
  return {
    deleteScopes: current.filter((st) => !wanted.has(st.scope.id)).map((st) => st.scope),
    upsertBudgets: [...wanted].map(([id, w]) => ({
      scope: { kind: 'window' as const, id },
      set: { maxBudgetNano: api.budgetInit(w.max_budget, null).maxBudgetNano },
      insert: api.budgetInit(w.max_budget, w.budget_duration),
    })),
  };
}

/** LiteLLM-style JSON of an entity's windows. */
export function windowsJson(states: BudgetState[]) {
  return states.map((st) => budgetJson(st));
}

function resetScope(b: z.infer<typeof budgetResetSchema>): ScopeRef {
  const need = (value: string | undefined, param: string): string => {
    if (value) return value;
    throw new SpendGuardError('BAD_REQUEST', `Invalid request: ${param}: required for scope '${b.scope}'`, {
      param,
    });
  };
  const kind: ScopeKind = b.scope;
  switch (kind) {
    case 'key':
      return { kind, id: keyHashFromKeyOrHash(b.key ?? need(b.id, 'key')) };
    case 'member':
      return {
        kind,
        id: b.id ?? memberScopeId(need(b.team_id, 'team_id'), need(b.user_id, 'user_id')),
      };
    case 'model':
      return {
        kind,
        id: b.id ?? modelScopeId(keyHashFromKeyOrHash(need(b.key, 'key')), need(b.model, 'model')),
      };
    case 'global':
      return { kind, id: GLOBAL_SCOPE_ID };
    case 'user':
      return { kind, id: b.user_id ?? need(b.id, 'id') };
    case 'team':
      return { kind, id: b.team_id ?? need(b.id, 'id') };
    default:
      return { kind, id: need(b.id, 'id') };
  }
}

function notFound(message: string, param: string): SpendGuardError {
  return new SpendGuardError('NOT_FOUND', message, { param });
}

export function customerJson(
  c: CustomerRecord,
  state: BudgetState | null,
  limits: RateLimits | null = null,
  tier: BudgetTierRecord | null = null,
  now: Date = new Date(),
) {
  const budget = budgetJson(state);
  return {
    user_id: c.endUserId,
    alias: c.alias,
    blocked: c.blocked,
    metadata: c.metadata,
    // LiteLLM's fields for region routing and a default model; nothing is routed here.
    allowed_model_region: null,
    default_model: null,
    budget_id: c.budgetId ?? null,
    // LiteLLM's: the linked budget's row; for an end user with limits of its own, those limits.
    litellm_budget_table: tier
      ? budgetTierJson(tier, now)
      : {
          max_budget: budget.max_budget,
          soft_budget: budget.soft_budget,
          budget_duration: budget.budget_duration,
          budget_reset_at: budget.budget_reset_at,
        },
    ...budget,
    ...rateJson(limits),
    created_at: c.createdAt.toISOString(),
  };
}

/** The fields that give an end user limits of its own (LiteLLM: either these or budget_id, not both). */
const OWN_LIMIT_FIELDS = [
  'max_budget',
  'soft_budget',
  'budget_duration',
  'rpm_limit',
  'tpm_limit',
  'max_parallel_requests',
] as const;

function refuseOwnLimitsWithTier(b: z.infer<typeof customerNewSchema>): void {
  if (typeof b.budget_id !== 'string') return;
  const own = OWN_LIMIT_FIELDS.find((f) => b[f] !== undefined && b[f] !== null);
  if (own) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      `Invalid request: set either budget_id or ${own}, not both (a budget's limits are changed with /budget/update)`,
      { param: own },
    );
  }
}

function tagJson(t: TagRecord, state: BudgetState | null) {
  return {
    name: t.name,
    description: t.description,
    metadata: t.metadata,
    ...budgetJson(state),
    created_at: t.createdAt.toISOString(),
  };
}
