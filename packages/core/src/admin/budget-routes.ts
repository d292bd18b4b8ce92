import { randomUUID } from 'node:crypto';
import * as z from 'zod';
import { nextBudgetResetAt } from '../budget-period.js';
import { SpendGuardError, StorageConflictError } from '../errors.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import type { BudgetTierPatch, BudgetTierRecord, SpendStorage } from '../storage/storage-contract.js';
import { ok } from './entity-json.js';
import type { ManagementApi, ManagementRequest } from './management-types.js';
import { budgetFields, id, rateLimitFields } from './schemas.js';

/**
 * LiteLLM's budget objects (`/budget/new|update|delete|info|list|settings`): tiers of limits that end
 * users link to by `budget_id` (`/customer/new`, `/customer/update`, and `defaultEndUserBudgetId` for
 * end users first seen on a call), and keys (`/key/generate`, `/key/update`), as in LiteLLM. A tier holds no spend: each linked end user spends against its own
 * counter under the tier's `max_budget`, `soft_budget`, `budget_duration`, `rpm_limit`, `tpm_limit` and
 * `max_parallel_requests`, and a change to the tier reaches every linked end user in the same
 * transaction. LiteLLM's `model_max_budget` and `budget_reset_at` are refused when set
 * (litellm-fields.ts says why).
 */

const budgetNewSchema = z.object({
  /** Absent: a new random id, as LiteLLM does. */
  budget_id: id.optional(),
  ...budgetFields,
  ...rateLimitFields,
});
const budgetInfoSchema = z.object({
  budgets: z.array(id, { error: 'must be an array of budget ids' }),
});
const budgetDeleteSchema = z.object({ id });
const budgetSettingsQuery = z.object({ budget_id: id });

/** `/budget/settings`: LiteLLM's list of a budget's configurable fields, in its field order. */
const SETTINGS: ReadonlyArray<{
  field: keyof ReturnType<typeof budgetTierJson>;
  type: string;
  about: string;
}> = [
  { field: 'max_parallel_requests', type: 'Integer', about: 'calls in flight at once, per end user' },
  { field: 'tpm_limit', type: 'Integer', about: 'tokens per minute, per end user' },
  { field: 'rpm_limit', type: 'Integer', about: 'requests per minute, per end user' },
  { field: 'budget_duration', type: 'String', about: 'how often each end user’s spend resets' },
  { field: 'max_budget', type: 'Float', about: 'USD each end user may spend per period' },
  { field: 'soft_budget', type: 'Float', about: 'USD at which an alert fires; never refuses a call' },
];

export class BudgetTierRoutes {
  constructor(private readonly api: ManagementApi) {}

  /** The routes, to merge into the management API's table (admin only). */
  routes(): Record<string, (req: ManagementRequest, storage: SpendStorage) => Promise<GuardResponse>> {
    return {
      'POST /budget/new': (r, s) => this.budgetNew(r, s),
      'POST /budget/update': (r, s) => this.budgetUpdate(r, s),
      'POST /budget/info': (r, s) => this.budgetInfo(r, s),
      'GET /budget/list': (_r, s) => this.budgetList(s),
      'GET /budget/settings': (r, s) => this.budgetSettings(r, s),
      'POST /budget/delete': (r, s) => this.budgetDelete(r, s),
    };
  }

  private async budgetNew(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, budgetNewSchema);
    const now = this.api.now();
    const tier: BudgetTierRecord = {
      budgetId: b.budget_id ?? randomUUID(),
      maxBudgetNano: nanoOrNull(b.max_budget),
      softBudgetNano: nanoOrNull(b.soft_budget),
      budgetDuration: b.budget_duration ?? null,
      rpmLimit: b.rpm_limit ?? null,
      tpmLimit: b.tpm_limit ?? null,
      maxParallelRequests: b.max_parallel_requests ?? null,
      createdAt: now,
      updatedAt: now,
    };
    try {
      await storage.insertBudgetTier(tier);
    } catch (error) {
      if (error instanceof StorageConflictError) {
        throw new SpendGuardError('BAD_REQUEST', `Budget with id '${tier.budgetId}' already exists.`, {
          param: 'budget_id',
        });
      }
      throw error;
    }
    return ok(budgetTierJson(tier, now));
  }

  /** LiteLLM's update: the fields sent change (`null` clears one), the others stay. */
  private async budgetUpdate(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, budgetNewSchema);
    if (b.budget_id === undefined) {
      throw new SpendGuardError('BAD_REQUEST', 'budget_id is required', { param: 'budget_id' });
    }
    const patch: BudgetTierPatch = {};
    if (b.max_budget !== undefined) patch.maxBudgetNano = nanoOrNull(b.max_budget);
    if (b.soft_budget !== undefined) patch.softBudgetNano = nanoOrNull(b.soft_budget);
    if (b.budget_duration !== undefined) patch.budgetDuration = b.budget_duration;
    if (b.rpm_limit !== undefined) patch.rpmLimit = b.rpm_limit;
    if (b.tpm_limit !== undefined) patch.tpmLimit = b.tpm_limit;
    if (b.max_parallel_requests !== undefined) patch.maxParallelRequests = b.max_parallel_requests;
    const now = this.api.now();
    const tier = await storage.updateBudgetTier(b.budget_id, patch, now);
    if (!tier) throw budgetNotFound(b.budget_id, 'budget_id');
    // The linked end users' and keys' rate limits are cached per instance: drop them here (other
    // instances: end users within the TTL, keys at once through the store's key change records).
    this.api.forgetAllCustomers();
    this.api.forgetAllKeys();
    return ok(budgetTierJson(tier, now));
  }

  /** LiteLLM's `/budget/info`: the tiers named that exist (none named: 400). */
  private async budgetInfo(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, budgetInfoSchema);
    if (b.budgets.length === 0) {
      throw new SpendGuardError('BAD_REQUEST', "Specify list of budget id's to query. Passed in=[]", {
        param: 'budgets',
      });
    }
    const now = this.api.now();
    const found = await Promise.all(
      [...new Set(b.budgets)].map((budgetId) => storage.getBudgetTier(budgetId)),
    );
    return ok(found.filter((t) => t !== null).map((t) => budgetTierJson(t, now)));
  }

  private async budgetList(storage: SpendStorage): Promise<GuardResponse> {
    const now = this.api.now();
    return ok((await storage.listBudgetTiers()).map((t) => budgetTierJson(t, now)));
  }

  /** LiteLLM's `/budget/settings?budget_id=`: each configurable field with its current value. */
  private async budgetSettings(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, budgetSettingsQuery);
    const tier = await storage.getBudgetTier(q.budget_id);
    const json = tier ? budgetTierJson(tier, this.api.now()) : null;
    return ok(
      SETTINGS.map((s) => ({
        field_name: s.field,
        field_type: s.type,
        field_description: s.about,
        field_value: json?.[s.field] ?? null,
        stored_in_db: true,
        field_default_value: null,
      })),
    );
  }

  /**
   * Deletes a tier nothing links to. LiteLLM's database lets the delete through and leaves its end
   * users on no budget at all; a budget that silently stops applying is the one failure a budget must
   * not have, so a tier still linked is refused (400) until its end users are moved or unlinked.
   */
  private async budgetDelete(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, budgetDeleteSchema);
    const tier = await storage.getBudgetTier(b.id);
    const result = await storage.deleteBudgetTier(b.id);
    if (!result.found || !tier) throw budgetNotFound(b.id, 'id');
    if (result.linked > 0) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `Budget '${b.id}' is still the budget of ${result.linked} end user(s) or key(s); move them to another budget (/customer/update or /key/update budget_id) or unlink them (budget_id: null) first`,
        { param: 'id' },
      );
    }
    return ok(budgetTierJson(tier, this.api.now()));
  }
}

/** LiteLLM's `LiteLLM_BudgetTable` row. `budget_reset_at`: when the linked end users' spend next resets. */
export function budgetTierJson(t: BudgetTierRecord, now: Date) {
  return {
    budget_id: t.budgetId,
    max_budget: t.maxBudgetNano === null ? null : t.maxBudgetNano / 1e9,
    soft_budget: t.softBudgetNano === null ? null : t.softBudgetNano / 1e9,
    max_parallel_requests: t.maxParallelRequests,
    tpm_limit: t.tpmLimit,
    rpm_limit: t.rpmLimit,
    model_max_budget: null,
    budget_duration: t.budgetDuration,
    budget_reset_at: t.budgetDuration ? nextBudgetResetAt(t.budgetDuration, now).toISOString() : null,
    created_at: t.createdAt.toISOString(),
    updated_at: t.updatedAt.toISOString(),
  };
}

export function budgetNotFound(budgetId: string, param: string): SpendGuardError {
  return new SpendGuardError('NOT_FOUND', `Budget not found: budget_id '${budgetId}'`, { param });
}

function nanoOrNull(usd: number | null | undefined): number | null {
  return usd === undefined || usd === null ? null : Math.round(usd * 1e9);
}
