import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import { dateInRange, parseDateOrTime } from '../input-hygiene.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import type { SpendLogQuery, SpendLogRecord, SpendStorage } from '../storage/storage-contract.js';
import type { Caller, RouteAccess } from './caller.js';
import { ok, spendLogJson } from './entity-json.js';
import type { ManagementApi, ManagementRequest } from './management-types.js';

/**
 * `GET /spend/logs/v2`: LiteLLM's paged spend logs (its `ui_view_spend_logs`, served as `/spend/logs/ui`
 * and `/spend/logs/v2`): `{ data, total, page, page_size, total_pages }`, newest first, `start_date` and
 * `end_date` required. The same readers as `/spend/logs` (a key its own logs, a team admin its teams').
 *
 * `total` is exact: the range's logs are read through in keyset pages (the daily rollups cannot filter
 * by spend or request id), at most {@link MAX_SCANNED} of them; a wider range is refused with a 400 that
 * says to narrow it, never answered with a wrong total.
 */

/** The most logs one `/spend/logs/v2` request reads to count its total. */
export const MAX_SCANNED = 100_000;

/** LiteLLM's `YYYY-MM-DD HH:MM:SS` (UTC), or a day, or an ISO 8601 time. */
const LITELLM_TIME = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})$/;
const DAY = /^\d{4}-\d{2}-\d{2}$/;

const moment = z.string().superRefine((value, ctx) => {
  const ms = instant(value);
  if (Number.isNaN(ms) || !dateInRange(ms)) {
    ctx.addIssue({
      code: 'custom',
      message: "must be a time 'YYYY-MM-DD HH:MM:SS' (UTC), a date 'YYYY-MM-DD' or an ISO 8601 time",
    });
  }
});

function instant(value: string): number {
  if (!LITELLM_TIME.test(value) && !DAY.test(value) && !/^\d{4}-\d{2}-\d{2}T/.test(value)) return Number.NaN;
  return parseDateOrTime(value);
}

const usd = z.coerce.number({ error: 'must be a number' }).min(0, 'must be at least 0');

export const spendLogsV2QuerySchema = z.object({
  api_key: z.string().min(1).optional(),
  user_id: z.string().min(1).optional(),
  team_id: z.string().min(1).optional(),
  request_id: z.string().min(1).optional(),
  model: z.string().min(1).optional(),
  status_filter: z.enum(['success', 'failure'], { error: "must be 'success' or 'failure'" }).optional(),
  min_spend: usd.optional(),
  max_spend: usd.optional(),
  start_date: moment,
  end_date: moment,
  page: z.coerce.number().int('must be a whole number').min(1, 'must be at least 1').default(1),
  page_size: z.coerce
    .number()
    .int('must be a whole number')
    .min(1, 'must be at least 1')
    .max(100, 'must be at most 100')
    .default(50),
});

export function spendLogPageRoutes(api: ManagementApi): Record<
  string,
  {
    access: RouteAccess;
    handler: (r: ManagementRequest, c: Caller, s: SpendStorage) => Promise<GuardResponse>;
  }
> {
  return {
    'GET /spend/logs/v2': { access: 'self', handler: (r, c, s) => spendLogsV2(api, r, c, s) },
  };
}

async function spendLogsV2(
  api: ManagementApi,
  req: ManagementRequest,
  caller: Caller,
  storage: SpendStorage,
): Promise<GuardResponse> {
  if (!req.query.has('start_date') || !req.query.has('end_date')) {
    throw new SpendGuardError('BAD_REQUEST', 'Start date and end date are required', {
      param: req.query.has('start_date') ? 'end_date' : 'start_date',
    });
  }
  const q = api.parseQuery(req, spendLogsV2QuerySchema);
  const { apiKeyHash, teamId } = await api.spendLogReader(q, caller, storage);
  const start = instant(q.start_date);
  // LiteLLM's end is inclusive (`lte`, to the second); a day covers that whole day; an ISO time is
  // taken as given, as /spend/logs takes it.
  const end = LITELLM_TIME.test(q.end_date)
    ? instant(q.end_date) + 1
    : DAY.test(q.end_date)
      ? instant(q.end_date) + 86_400_000
      : instant(q.end_date);
  const minNano = q.min_spend === undefined ? null : Math.round(q.min_spend * 1e9);
  const maxNano = q.max_spend === undefined ? null : Math.round(q.max_spend * 1e9);
  const query: SpendLogQuery = {
    apiKeyHash,
    teamId,
    userId: q.user_id,
    requestId: q.request_id,
    model: q.model,
    status: q.status_filter,
    startTime: new Date(start),
    endTime: new Date(end),
    limit: 1000,
  };
  const skip = (q.page - 1) * q.page_size;
  const data: SpendLogRecord[] = [];
  let total = 0;
  let scanned = 0;
  for (;;) {
    const batch = await storage.querySpendLogs(query);
    scanned += batch.length;
    if (scanned > MAX_SCANNED) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `Invalid query: more than ${MAX_SCANNED} spend logs between start_date and end_date; narrow the range or filter by api_key, user_id, team_id or model`,
        { param: 'start_date' },
      );
    }
    for (const log of batch) {
      if (minNano !== null && log.spendNano < minNano) continue;
      if (maxNano !== null && log.spendNano > maxNano) continue;
      if (total >= skip && data.length < q.page_size) data.push(log);
      total += 1;
    }
    const last = batch.at(-1);
    if (batch.length < 1000 || !last) break;
    query.before = { startTime: last.startTime, requestId: last.requestId };
  }
  return ok({
    data: data.map(spendLogJson),
    total,
    page: q.page,
    page_size: q.page_size,
    total_pages: Math.ceil(total / q.page_size),
  });
}
