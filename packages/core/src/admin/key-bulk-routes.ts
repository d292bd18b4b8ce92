import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import { INPUT_LIMITS, storableId, storableTags, storableText, usdAmount } from '../input-hygiene.js';
import type {
  BudgetInit,
  KeyPatch,
  KeyRecord,
  KeyUpdate,
  SpendStorage,
} from '../storage/storage-contract.js';
import { tempIncreaseOf } from '../temp-budget.js';
import type { Caller, RouteAccess } from './caller.js';
import { ok } from './entity-json.js';
import { refuseUnactedFields, UNSUPPORTED_FIELDS } from './litellm-fields.js';
import type { Handler, ManagementApi, ManagementRequest } from './management-types.js';
import { schemaFailure } from './schemas.js';

/**
 * LiteLLM's `POST /key/bulk_update` and `POST /key/{key_id}/reset_spend` (its
 * `key_management_endpoints.py`), with its request and response shapes.
 *
 * `/key/bulk_update` differs in one way, on purpose: LiteLLM applies each entry on its own and reports
 * the failures in `failed_updates`; here the batch is checked whole first and written in one
 * transaction (`updateKeys`), so a bad entry refuses the batch with a 4xx naming it
 * (`keys.<i>.<field>`) and nothing is written. `failed_updates` is then always empty.
 *
 * An entry's `team_id` moves the key to that team under LiteLLM's checks (its
 * `validate_key_team_change`): the team allows every model the key may call, the key's user is a
 * member of it, and the key's rpm and tpm limits are within the team's. Its `budget_id` links the key
 * to a budget tier (`/budget/new`), whose limits then replace the key's, as on /key/update.
 */

/** LiteLLM's batch limit for `/key/bulk_update`. */
export const MAX_BULK_KEYS = 500;

const keyRef = storableText(INPUT_LIMITS.keyRefLength, 'must be the key (sk-...) or its hash').min(
  1,
  'must not be empty',
);

/**
 * One entry of `/key/bulk_update` (LiteLLM's `BulkUpdateKeyRequestItem`, less what is refused). Every
 * field of LiteLLM's item defaults to `null`, which its clients send for a field they leave alone: a
 * `null` here changes nothing (a key's cap is lifted with /key/update).
 */
const bulkItemSchema = z.object({
  key: keyRef,
  max_budget: usdAmount.nullable().optional(),
  tags: storableTags.nullable().optional(),
  /** Moves the key to this team (by id, or an alias only one team has). */
  team_id: storableId.nullable().optional(),
  /** Links the key to this budget tier. */
  budget_id: storableId.nullable().optional(),
});

const bulkBodySchema = z.object({
  keys: z.array(z.unknown(), { error: 'must be an array of key updates' }).optional(),
});

/** LiteLLM's `ResetSpendRequest`. */
const resetSpendSchema = z.object({
  reset_to: z.number({ error: 'must be a number of USD' }),
});

export function keyBulkRoutes(api: ManagementApi): Record<string, { access: RouteAccess; handler: Handler }> {
  return {
    // LiteLLM: "Only proxy admins can perform bulk key updates".
    'POST /key/bulk_update': { access: 'admin', handler: (r, _c, s) => bulkUpdate(api, r, s) },
    // LiteLLM: the master key, or an admin of the key's team (a key in no team: the master key only).
    'POST /key/{key_id}/reset_spend': {
      access: 'team',
      handler: (r, c, s, k) => resetSpend(api, r, c, s, k ?? ''),
    },
  };
}

async function bulkUpdate(api: ManagementApi, req: ManagementRequest, storage: SpendStorage) {
  const { keys: entries } = api.parseBody(req, bulkBodySchema);
  if (!entries || entries.length === 0) {
    throw new SpendGuardError('BAD_REQUEST', 'No keys provided for update', { param: 'keys' });
  }
  if (entries.length > MAX_BULK_KEYS) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      `Maximum ${MAX_BULK_KEYS} keys can be updated at once. Found ${entries.length} keys.`,
      { param: 'keys' },
    );
  }
  const items = entries.map((entry, i) => parseItem(entry, i));
  const found: KeyRecord[] = [];
  const teamOf: Array<string | undefined> = [];
  for (const [i, item] of items.entries()) {
    const key = await api.findKey(storage, item.key);
    if (!key)
      throw new SpendGuardError('NOT_FOUND', `Key not found: ${item.key}`, { param: `keys.${i}.key` });
    const twice = found.findIndex((k) => k.tokenHash === key.tokenHash);
    if (twice !== -1) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `Invalid request: keys.${i} names the same key as keys.${twice}; send one entry per key`,
        { param: `keys.${i}.key` },
      );
    }
    // A running (or not yet ended) temporary increase keeps its base in the key's metadata:
    // /key/update changes the cap under it; a bulk write of the cap would lose it.
    if (item.max_budget != null && tempIncreaseOf(key)) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `Invalid request: key '${key.tokenHash}' has a temp_budget_increase; change its max_budget with /key/update`,
        { param: `keys.${i}.max_budget` },
      );
    }
    await assertTier(storage, key, item, i);
    teamOf.push(item.team_id == null ? undefined : await teamChange(api, storage, key, item.team_id, i));
    found.push(key);
  }
  const changes: KeyUpdate[] = items.map((item, i) => {
    const budget: Partial<BudgetInit> = {};
    if (item.max_budget != null) budget.maxBudgetNano = Math.round(item.max_budget * 1e9);
    const patch: KeyPatch = {};
    if (item.tags != null) patch.tags = item.tags;
    if (item.budget_id != null) patch.budgetId = item.budget_id;
    if (teamOf[i] !== undefined) patch.teamId = teamOf[i];
    return { tokenHash: found[i]!.tokenHash, patch, budget };
  });
  const updated = await storage.updateKeys(changes);
  for (const c of changes) api.guardInstance.invalidateKey(c.tokenHash);
  // Deleted between the check and the write: the transaction wrote nothing.
  if (!updated)
    throw new SpendGuardError('NOT_FOUND', 'Key not found: a key of the batch was deleted meanwhile');
  const infos = await Promise.all(updated.map((k) => api.keyInfoJson(storage, k)));
  return ok({
    total_requested: items.length,
    successful_updates: items.map((item, i) => ({
      key: item.key,
      key_info: { key: updated[i]!.tokenHash, ...infos[i] },
    })),
    failed_updates: [],
  });
}

/** One entry, checked as a body of its own; errors name it as `keys.<i>.<field>`. */
function parseItem(entry: unknown, i: number): z.infer<typeof bulkItemSchema> {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new SpendGuardError('VALIDATION', `Invalid request: keys.${i} must be an object`, {
      param: `keys.${i}`,
      detail: [
        {
          type: 'dict_type',
          loc: ['body', 'keys', i],
          msg: 'Input should be a valid dictionary',
          input: entry,
        },
      ],
    });
  }
  let kept: Record<string, unknown>;
  try {
    kept = refuseUnactedFields(entry as Record<string, unknown>, bulkItemSchema, UNSUPPORTED_FIELDS);
  } catch (e) {
    if (!(e instanceof SpendGuardError)) throw e;
    throw new SpendGuardError(
      'BAD_REQUEST',
      e.message.replace('Invalid request: ', `Invalid request: keys.${i}.`),
      {
        param: `keys.${i}.${e.param}`,
      },
    );
  }
  const parsed = bulkItemSchema.safeParse(kept);
  if (!parsed.success) throw schemaFailure(parsed.error, 'body', entry, ['keys', i]);
  return parsed.data;
}

/**
 * A budget tier named by an entry exists, and a key on a tier (linked now or before) takes no
 * `max_budget` of its own: the tier's limits apply (as /key/update refuses it).
 */
async function assertTier(
  storage: SpendStorage,
  key: KeyRecord,
  item: z.infer<typeof bulkItemSchema>,
  i: number,
): Promise<void> {
  if (item.budget_id != null && !(await storage.getBudgetTier(item.budget_id))) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      `Budget not found: budget_id '${item.budget_id}'; create it with /budget/new`,
      { param: `keys.${i}.budget_id` },
    );
  }
  const tier = item.budget_id ?? key.budgetId ?? null;
  if (tier !== null && item.max_budget != null) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      `Invalid request: keys.${i}: the key spends under budget '${tier}', whose limits apply; set either budget_id or max_budget, not both`,
      { param: `keys.${i}.max_budget` },
    );
  }
}

/**
 * The team an entry moves its key to, checked as LiteLLM's `validate_key_team_change` does (403 when
 * the move is refused); `undefined` when the key is in that team already.
 */
async function teamChange(
  api: ManagementApi,
  storage: SpendStorage,
  key: KeyRecord,
  ref: string,
  i: number,
): Promise<string | undefined> {
  const param = `keys.${i}.team_id`;
  const team = await api.resolveTeam(storage, ref, param);
  if (team.teamId === key.teamId) return undefined;
  const refuse = (message: string) => new SpendGuardError('FORBIDDEN', message, { param });
  for (const model of key.models) {
    if (!api.guardInstance.teamAllowsModel(model, team.models)) {
      throw refuse(
        `Key=${key.tokenHash} may call model '${model}', which team=${team.teamId} does not allow; change the key's models first.`,
      );
    }
  }
  if (key.userId !== null) {
    const user = await storage.getUser(key.userId);
    if (!user?.teams.includes(team.teamId)) {
      throw refuse(
        `User=${key.userId} is not a member of the team=${team.teamId}. Check team members via \`/team/info\`.`,
      );
    }
  }
  const [own, teams] = await Promise.all([
    storage.getRateLimits([{ kind: 'key', id: key.tokenHash }]),
    storage.getRateLimits([{ kind: 'team', id: team.teamId }]),
  ]);
  const k = own[0]?.limits;
  const t = teams[0]?.limits;
  for (const field of ['tpm', 'rpm'] as const) {
    const mine = k?.[`${field}Limit`] ?? null;
    const cap = t?.[`${field}Limit`] ?? null;
    if (mine !== null && cap !== null && mine > cap) {
      throw refuse(
        `Key=${key.tokenHash} has a ${field}_limit=${mine} which is greater than the team's ${field}_limit=${cap}.`,
      );
    }
  }
  return team.teamId;
}

/**
 * LiteLLM's reset: the key's spend set to `reset_to` USD, which must be at least 0, at most the
 * key's spend now and at most its `max_budget`. Its reservations (calls in flight) stay.
 */
async function resetSpend(
  api: ManagementApi,
  req: ManagementRequest,
  caller: Caller,
  storage: SpendStorage,
  ref: string,
) {
  const { reset_to } = api.parseBody(req, resetSpendSchema);
  const key = await api.keyFor(storage, caller, ref, "reset this key's spend");
  if (reset_to < 0) throw refused('reset_to must be >= 0');
  const scope = { kind: 'key' as const, id: key.tokenHash };
  const [state] = await storage.getBudgets([scope], api.now());
  const spend = (state?.spendNano ?? 0) / 1e9;
  const toNano = Math.round(reset_to * 1e9);
  if (toNano > (state?.spendNano ?? 0))
    throw refused(`reset_to (${reset_to}) must be <= current spend (${spend})`);
  const cap = state?.maxBudgetNano ?? null;
  if (cap !== null && toNano > cap) throw refused(`reset_to (${reset_to}) must be <= budget (${cap / 1e9})`);
  const after = await storage.resetSpend(scope, toNano, api.now());
  if (!after) throw new SpendGuardError('NOT_FOUND', `Key not found: ${ref}`, { param: 'key' });
  api.guardInstance.invalidateKey(key.tokenHash);
  return ok({
    key: key.tokenHash,
    spend: after.spendNano / 1e9,
    previous_spend: spend,
    max_budget: after.maxBudgetNano === null ? null : after.maxBudgetNano / 1e9,
    budget_reset_at: after.budgetResetAt?.toISOString() ?? null,
  });
}

function refused(message: string): SpendGuardError {
  return new SpendGuardError('BAD_REQUEST', message, { param: 'reset_to' });
}
