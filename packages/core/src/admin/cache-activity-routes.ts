import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import type { SpendStorage } from '../storage/storage-contract.js';
import type { RouteAccess } from './caller.js';
import { ok } from './entity-json.js';
import type { Handler, ManagementApi, ManagementRequest } from './management-types.js';

/**
 * LiteLLM's `GET /global/activity/cache_hits` (its `spend_management_endpoints.py`): over the UTC days
 * `start_date..end_date`, one row per key alias and model with the calls made, how many LiteLLM's
 * response cache answered, and the completion tokens cached and generated.
 *
 * spendguard runs no response cache (every spend log says `cache_hit: 'False'`), so no call is a
 * cache hit: `cache_hit_true_rows` and `cached_completion_tokens` are 0 and every completion token is
 * generated. The sums come from the daily rollups (never a scan of the logs), which carry no call
 * type: `call_type` is `null`. `failed_rows` (the calls logged as failures) is LiteLLM main's column.
 */

/** LiteLLM's name for the keys of no alias (its SQL's `ELSE 'Unnamed Key'`). */
export const UNNAMED_KEY = 'Unnamed Key';

const day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, "must be a date 'YYYY-MM-DD'")
  .refine((s) => new Date(`${s}T00:00:00Z`).toISOString().startsWith(s), "must be a date 'YYYY-MM-DD'");
const cacheHitsQuery = z.object({ start_date: day.optional(), end_date: day.optional() });

export function cacheActivityRoutes(
  api: ManagementApi,
): Record<string, { access: RouteAccess; handler: Handler }> {
  return {
    // Master key only, as /global/activity here.
    'GET /global/activity/cache_hits': { access: 'admin', handler: (r, _c, s) => cacheHits(api, r, s) },
  };
}

interface CacheHitRow {
  api_key: string;
  call_type: null;
  model: string;
  total_rows: number;
  cache_hit_true_rows: number;
  failed_rows: number;
  cached_completion_tokens: number;
  generated_completion_tokens: number;
}

async function cacheHits(
  api: ManagementApi,
  req: ManagementRequest,
  storage: SpendStorage,
): Promise<GuardResponse> {
  const q = api.parseQuery(req, cacheHitsQuery);
  if (q.start_date === undefined || q.end_date === undefined) {
    throw new SpendGuardError('BAD_REQUEST', 'Please provide start_date and end_date', {
      param: q.start_date === undefined ? 'start_date' : 'end_date',
    });
  }
  if (q.start_date > q.end_date) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      `start_date (${q.start_date}) is after end_date (${q.end_date})`,
      {
        param: 'start_date',
      },
    );
  }
  const rows = await storage.spendReport({
    fromDay: q.start_date,
    toDay: q.end_date,
    groupBy: ['key', 'model'],
  });
  // LiteLLM groups by the key's alias (keys sharing one are summed; a deleted key has none).
  const hashes = [...new Set(rows.map((r) => r.apiKeyHash!))];
  const keys = await Promise.all(hashes.map((h) => storage.getKey(h)));
  const aliasOf = new Map(hashes.map((h, i) => [h, keys[i]?.keyAlias ?? UNNAMED_KEY]));
  const groups = new Map<string, CacheHitRow>();
  for (const r of rows) {
    const alias = aliasOf.get(r.apiKeyHash!) ?? UNNAMED_KEY;
    const id = JSON.stringify([alias, r.model]);
    const g = groups.get(id) ?? {
      api_key: alias,
      call_type: null,
      model: r.model!,
      total_rows: 0,
      cache_hit_true_rows: 0,
      failed_rows: 0,
      cached_completion_tokens: 0,
      generated_completion_tokens: 0,
    };
    g.total_rows += r.requests;
    g.failed_rows += r.failedRequests;
    g.generated_completion_tokens += r.completionTokens;
    groups.set(id, g);
  }
  return ok(
    [...groups.values()].sort((a, b) =>
      a.api_key === b.api_key ? (a.model < b.model ? -1 : 1) : a.api_key < b.api_key ? -1 : 1,
    ),
  );
}
