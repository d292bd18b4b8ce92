import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import { INPUT_LIMITS, storableTags, storableText, usdAmount } from '../input-hygiene.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import type { BudgetInit, KeyRecord, KeyUpdate, SpendStorage } from '../storage/storage-contract.js';
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
 * transaction (`updateKeys`), so a bad entry refuses the batch with a 400 naming it
 * (`keys.<i>.<field>`) and nothing is written. `failed_updates` is then always empty.
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
});

/** LiteLLM's fields of an entry that are refused here, with why. */
const BULK_REFUSED = {
  ...UNSUPPORTED_FIELDS,
  team_id: {
    why: 'spendguard does not move keys between teams (nor does /key/update); generate a key in the team',
  },
};

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
    found.push(key);
  }
  const changes: KeyUpdate[] = items.map((item, i) => {
    const budget: Partial<BudgetInit> = {};
    if (item.max_budget != null) budget.maxBudgetNano = Math.round(item.max_budget * 1e9);
    return {
      tokenHash: found[i]!.tokenHash,
      patch: item.tags == null ? {} : { tags: item.tags },
      budget,
    };
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
    kept = refuseUnactedFields(entry as Record<string, unknown>, bulkItemSchema, BULK_REFUSED);
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
