import type * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import { keyHashFromKeyOrHash } from '../keys.js';
import { nanoToUsd } from '../money.js';
import type {
  SpendDimension,
  SpendReportFilters,
  SpendReportRow,
  SpendStorage,
} from '../storage/storage-contract.js';
import type {
  globalSpendReportQuerySchema,
  teamDailyActivityQuerySchema,
  userDailyActivityQuerySchema,
} from './schemas.js';

/**
 * LiteLLM's spend report routes, answered from the daily rollups (never a scan of the logs):
 * `GET /global/spend/report` and `GET /user/daily/activity`, `GET /team/daily/activity`. Money is USD
 * summed from exact nano-dollars, so every amount here equals the sum of the spend logs it covers.
 */

type GlobalQuery = z.infer<typeof globalSpendReportQuerySchema>;
type UserActivityQuery = z.infer<typeof userDailyActivityQuerySchema>;
type TeamActivityQuery = z.infer<typeof teamDailyActivityQuerySchema>;

function checkRange(start: string, end: string): void {
  if (start > end) {
    throw new SpendGuardError('BAD_REQUEST', `start_date (${start}) is after end_date (${end})`, {
      param: 'start_date',
    });
  }
}

const tokens = (r: SpendReportRow) => r.promptTokens + r.completionTokens;

/** Rows grouped by a value, in first-seen order. */
function groupRows<K>(rows: SpendReportRow[], by: (r: SpendReportRow) => K): Map<K, SpendReportRow[]> {
  const out = new Map<K, SpendReportRow[]>();
  for (const row of rows) {
    const k = by(row);
    const list = out.get(k);
    if (list) list.push(row);
    else out.set(k, [row]);
  }
  return out;
}

const sumNano = (rows: SpendReportRow[]) => rows.reduce((n, r) => n + r.spendNano, 0);

/**
 * `GET /global/spend/report`: LiteLLM's shapes.
 * - `group_by=team` (default): `[{ group_by_day, teams: [{ team_name, team_id, total_spend, metadata: [{ model, api_key, spend, total_tokens }] }] }]`
 * - `group_by=customer`: `[{ group_by_day, customers: [{ customer, total_spend, metadata: [...] }] }]`
 * - `group_by=api_key`, or any call with `api_key` / `internal_user_id`: `[{ api_key, total_cost,
 *   total_input_tokens, total_output_tokens, model_details: [{ model, total_cost, total_input_tokens, total_output_tokens }] }]`
 */
export async function globalSpendReport(
  storage: SpendStorage,
  q: GlobalQuery,
  teamIdOf: (ref: string) => Promise<string>,
): Promise<unknown> {
  checkRange(q.start_date, q.end_date);
  const filters: SpendReportFilters = {};
  if (q.api_key) filters.apiKeyHashes = [keyHashFromKeyOrHash(q.api_key)];
  if (q.internal_user_id) filters.userIds = [q.internal_user_id];
  if (q.team_id) filters.teamIds = [await teamIdOf(q.team_id)];
  if (q.customer_id) filters.endUsers = [q.customer_id];
  const report = (groupBy: SpendDimension[]) =>
    storage.spendReport({ fromDay: q.start_date, toDay: q.end_date, groupBy, filters });

  if (q.group_by === 'api_key' || q.api_key || q.internal_user_id) {
    const byKey = groupRows(await report(['key', 'model']), (r) => r.apiKeyHash!);
    return [...byKey]
      .map(([apiKey, rows]) => ({
        api_key: apiKey,
        nano: sumNano(rows),
        total_input_tokens: rows.reduce((n, r) => n + r.promptTokens, 0),
        total_output_tokens: rows.reduce((n, r) => n + r.completionTokens, 0),
        model_details: rows.map((r) => ({
          model: r.model,
          total_cost: nanoToUsd(r.spendNano),
          total_input_tokens: r.promptTokens,
          total_output_tokens: r.completionTokens,
        })),
      }))
      .sort((a, b) => b.nano - a.nano || (a.api_key < b.api_key ? -1 : 1))
      .map(({ nano, ...rest }) => ({
        api_key: rest.api_key,
        total_cost: nanoToUsd(nano),
        total_input_tokens: rest.total_input_tokens,
        total_output_tokens: rest.total_output_tokens,
        model_details: rest.model_details,
      }));
  }

  const customers = q.group_by === 'customer';
  const rows = await report(['day', customers ? 'customer' : 'team', 'model', 'key']);
  const teamNames = new Map<string, string | null>();
  if (!customers) {
    const ids = new Set(rows.map((r) => r.teamId).filter((t): t is string => !!t));
    await Promise.all(
      [...ids].map(async (id) => teamNames.set(id, (await storage.getTeam(id))?.teamAlias ?? null)),
    );
  }
  return [...groupRows(rows, (r) => r.day!)].map(([day, dayRows]) => {
    const groups = [...groupRows(dayRows, (r) => (customers ? r.endUser : r.teamId) ?? null)].map(
      ([id, groupRows]) => {
        const metadata = groupRows.map((r) => ({
          model: r.model,
          api_key: r.apiKeyHash,
          spend: nanoToUsd(r.spendNano),
          total_tokens: tokens(r),
        }));
        const total_spend = nanoToUsd(sumNano(groupRows));
        if (customers) return { customer: id, total_spend, metadata };
        const team_name = id === null ? 'Unassigned Team' : (teamNames.get(id) ?? id);
        return { team_name, team_id: id, total_spend, metadata };
      },
    );
    // Postgres's rendering of LiteLLM's date_trunc('day', "startTime").
    const group_by_day = `${day}T00:00:00+00:00`;
    return customers ? { group_by_day, customers: groups } : { group_by_day, teams: groups };
  });
}

/** LiteLLM's `SpendMetrics`, summed in nano-dollars until the end. */
class Metrics {
  spendNano = 0;
  promptTokens = 0;
  completionTokens = 0;
  requests = 0;
  failed = 0;

  add(r: SpendReportRow): this {
    this.spendNano += r.spendNano;
    this.promptTokens += r.promptTokens;
    this.completionTokens += r.completionTokens;
    this.requests += r.requests;
    this.failed += r.failedRequests;
    return this;
  }

  json() {
    return {
      spend: nanoToUsd(this.spendNano),
      prompt_tokens: this.promptTokens,
      completion_tokens: this.completionTokens,
      // Not tracked by spendguard's rollups (yet): always 0.
      cache_read_input_tokens: 0,
      cache_creation_input_tokens: 0,
      total_tokens: this.promptTokens + this.completionTokens,
      successful_requests: this.requests - this.failed,
      failed_requests: this.failed,
      api_requests: this.requests,
    };
  }
}

type KeyMetadata = {
  key_alias: string | null;
  team_id: string | null;
};

/** A breakdown entry: its metrics, metadata, and the same per API key. */
class Breakdown {
  readonly metrics = new Metrics();
  readonly keys = new Map<string, Metrics>();
  constructor(readonly metadata: Record<string, unknown> = {}) {}

  add(r: SpendReportRow): void {
    this.metrics.add(r);
    const hash = r.apiKeyHash ?? '';
    const m = this.keys.get(hash) ?? new Metrics();
    this.keys.set(hash, m.add(r));
  }

  json(keyMeta: Map<string, KeyMetadata>, withKeys = true) {
    const out: Record<string, unknown> = { metrics: this.metrics.json(), metadata: this.metadata };
    if (withKeys) {
      out.api_key_breakdown = Object.fromEntries(
        [...this.keys].map(([hash, m]) => [hash, { metrics: m.json(), metadata: keyMetaOf(keyMeta, hash) }]),
      );
    }
    return out;
  }
}

function keyMetaOf(keyMeta: Map<string, KeyMetadata>, hash: string): KeyMetadata {
  return keyMeta.get(hash) ?? { key_alias: null, team_id: null };
}

function add(
  map: Map<string, Breakdown>,
  id: string,
  row: SpendReportRow,
  metadata?: Record<string, unknown>,
) {
  let b = map.get(id);
  if (!b) {
    b = new Breakdown(metadata);
    map.set(id, b);
  }
  b.add(row);
}

/**
 * LiteLLM's daily activity (`SpendAnalyticsPaginatedResponse`):
 * `{ results: [{ date, metrics, breakdown: { models, model_groups, mcp_servers, providers, api_keys, entities } }], metadata: { total_spend, ..., page, total_pages, has_more } }`,
 * newest day first, `page_size` days per page; the totals in `metadata` cover every page.
 */
async function dailyActivity(
  storage: SpendStorage,
  entity: 'user' | 'team' | 'customer' | 'tag',
  q: {
    start_date: string;
    end_date: string;
    model?: string;
    api_key?: string;
    page?: number;
    page_size?: number;
  },
  filters: SpendReportFilters,
  exclude: Set<string>,
  defaultPageSize: number,
): Promise<unknown> {
  checkRange(q.start_date, q.end_date);
  if (q.model) filters.models = [q.model];
  if (q.api_key) filters.apiKeyHashes = [keyHashFromKeyOrHash(q.api_key)];
  const stored = await storage.spendReport({
    fromDay: q.start_date,
    toDay: q.end_date,
    groupBy: ['day', entity, 'model', 'provider', 'key'],
    filters,
  });
  const entityOf = (r: SpendReportRow) =>
    ({ team: r.teamId, user: r.userId, customer: r.endUser, tag: r.tag })[entity] ?? null;
  // Only calls attributed to a user (a team, an end user, a tag) are its activity.
  const rows = stored.filter((r) => {
    const id = entityOf(r);
    return id !== null && !exclude.has(id);
  });

  const total = new Metrics();
  for (const r of rows) total.add(r);
  const days = [...groupRows(rows, (r) => r.day!)].sort(([a], [b]) => (a < b ? 1 : -1));
  const page = q.page ?? 1;
  const pageSize = q.page_size ?? defaultPageSize;
  const shown = days.slice((page - 1) * pageSize, page * pageSize);

  const hashes = new Set(shown.flatMap(([, dayRows]) => dayRows.map((r) => r.apiKeyHash ?? '')));
  const keyMeta = new Map<string, KeyMetadata>();
  const teamAliases = new Map<string, string | null>();
  await Promise.all([
    ...[...hashes].map(async (hash) => {
      const key = await storage.getKey(hash);
      keyMeta.set(hash, { key_alias: key?.keyAlias ?? null, team_id: key?.teamId ?? null });
    }),
    ...(entity === 'team'
      ? [...new Set(shown.flatMap(([, dayRows]) => dayRows.map((r) => r.teamId!)))].map(async (id) =>
          teamAliases.set(id, (await storage.getTeam(id))?.teamAlias ?? null),
        )
      : []),
  ]);

  const results = shown.map(([date, dayRows]) => {
    const metrics = new Metrics();
    const models = new Map<string, Breakdown>();
    const providers = new Map<string, Breakdown>();
    const apiKeys = new Map<string, Breakdown>();
    const entities = new Map<string, Breakdown>();
    for (const r of dayRows) {
      metrics.add(r);
      add(models, r.model ?? '', r);
      add(providers, r.provider ?? 'unknown', r);
      add(apiKeys, r.apiKeyHash ?? '', r, keyMetaOf(keyMeta, r.apiKeyHash ?? ''));
      const id = entityOf(r)!;
      add(entities, id, r, entity === 'team' ? { team_alias: teamAliases.get(id) ?? null } : {});
    }
    const json = (map: Map<string, Breakdown>, withKeys = true) =>
      Object.fromEntries([...map].map(([id, b]) => [id, b.json(keyMeta, withKeys)]));
    const modelsJson = json(models);
    return {
      date,
      metrics: metrics.json(),
      breakdown: {
        models: modelsJson,
        // spendguard has no model groups: each model is its own group, as LiteLLM falls back to.
        model_groups: modelsJson,
        mcp_servers: {},
        providers: json(providers),
        api_keys: json(apiKeys, false),
        entities: json(entities),
      },
    };
  });
  const t = total.json();
  return {
    results,
    metadata: {
      total_spend: t.spend,
      total_prompt_tokens: t.prompt_tokens,
      total_completion_tokens: t.completion_tokens,
      total_tokens: t.total_tokens,
      total_api_requests: t.api_requests,
      total_successful_requests: t.successful_requests,
      total_failed_requests: t.failed_requests,
      total_cache_read_input_tokens: 0,
      total_cache_creation_input_tokens: 0,
      page,
      total_pages: Math.max(1, Math.ceil(days.length / pageSize)),
      has_more: page * pageSize < days.length,
    },
  };
}

/** `GET /user/daily/activity` (`user_id`, `model`, `api_key` filters; 50 days a page by default). */
export function userDailyActivity(storage: SpendStorage, q: UserActivityQuery): Promise<unknown> {
  const filters: SpendReportFilters = q.user_id ? { userIds: [q.user_id] } : {};
  return dailyActivity(storage, 'user', q, filters, new Set(), 50);
}

/** `GET /team/daily/activity` (`team_ids`, `exclude_team_ids` comma-separated; 10 days a page by default). */
export function teamDailyActivity(storage: SpendStorage, q: TeamActivityQuery): Promise<unknown> {
  const split = (v: string | undefined) =>
    (v ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const teamIds = split(q.team_ids);
  const filters: SpendReportFilters = teamIds.length > 0 ? { teamIds } : {};
  return dailyActivity(storage, 'team', q, filters, new Set(split(q.exclude_team_ids)), 10);
}

/**
 * `GET /spend/logs?start_date=...&end_date=...` (`summarize` defaults to true, as in LiteLLM): the
 * per-day sums, one row per UTC day that has spend, `{ startTime: day, spend, <api key hash>: spend,
 * users: { user: spend }, models: { model: spend } }`, then a zero row for each day after the last one
 * through `end_date` (LiteLLM's padding). From the daily rollups (with `request_id`, from that
 * request's logs); sums are exact nano-dollars turned into USD.
 */
export async function spendLogSummary(
  storage: SpendStorage,
  q: {
    start_date?: string;
    end_date?: string;
    apiKeyHash?: string;
    userId?: string;
    teamId?: string;
    requestId?: string;
  },
): Promise<unknown> {
  const day = /^\d{4}-\d{2}-\d{2}$/;
  if (!q.start_date || !q.end_date || !day.test(q.start_date) || !day.test(q.end_date)) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      "Invalid query: summarize=true needs start_date and end_date as days 'YYYY-MM-DD'",
      { param: 'summarize' },
    );
  }
  checkRange(q.start_date, q.end_date);
  const filters: SpendReportFilters = {};
  if (q.apiKeyHash) filters.apiKeyHashes = [q.apiKeyHash];
  if (q.userId) filters.userIds = [q.userId];
  if (q.teamId) filters.teamIds = [q.teamId];
  const rows = q.requestId
    ? await requestRows(storage, { ...q, start_date: q.start_date, end_date: q.end_date })
    : await storage.spendReport({
        fromDay: q.start_date,
        toDay: q.end_date,
        groupBy: ['day', 'key', 'user', 'model'],
        filters,
      });
  const out: Array<Record<string, unknown>> = [];
  for (const [d, dayRows] of groupRows(rows, (r) => r.day!)) {
    const byKey = groupRows(dayRows, (r) => r.apiKeyHash!);
    const byUser = groupRows(dayRows, (r) => r.userId ?? 'null');
    const byModel = groupRows(dayRows, (r) => r.model!);
    out.push({
      startTime: d,
      spend: nanoToUsd(sumNano(dayRows)),
      ...Object.fromEntries([...byKey].map(([k, r]) => [k, nanoToUsd(sumNano(r))])),
      users: Object.fromEntries([...byUser].map(([u, r]) => [u, nanoToUsd(sumNano(r))])),
      models: Object.fromEntries([...byModel].map(([m, r]) => [m, nanoToUsd(sumNano(r))])),
    });
  }
  const last = out.length > 0 ? String(out[out.length - 1]!.startTime) : null;
  if (last !== null) {
    for (let t = Date.parse(`${last}T00:00:00Z`) + 86_400_000; ; t += 86_400_000) {
      const d = new Date(t).toISOString().slice(0, 10);
      if (d > q.end_date) break;
      out.push({ startTime: d, spend: 0, users: {}, models: {} });
    }
  }
  return out;
}

/**
 * The per-day rows of one request id (its log, or the logs whose call id or response id it is): the
 * rollups do not keep request ids, and one id names a log or two, so they are read from the logs.
 */
async function requestRows(
  storage: SpendStorage,
  q: {
    start_date: string;
    end_date: string;
    apiKeyHash?: string;
    userId?: string;
    teamId?: string;
    requestId?: string;
  },
): Promise<SpendReportRow[]> {
  const logs = await storage.querySpendLogs({
    requestId: q.requestId,
    apiKeyHash: q.apiKeyHash,
    userId: q.userId,
    teamId: q.teamId,
    startTime: new Date(`${q.start_date}T00:00:00.000Z`),
    endTime: new Date(Date.parse(`${q.end_date}T00:00:00.000Z`) + 86_400_000),
    limit: 1000,
  });
  return logs
    .map((l) => ({
      day: l.startTime.toISOString().slice(0, 10),
      apiKeyHash: l.apiKeyHash,
      userId: l.userId,
      model: l.model,
      requests: 1,
      failedRequests: l.status === 'failure' ? 1 : 0,
      spendNano: l.spendNano,
      promptTokens: l.promptTokens,
      completionTokens: l.completionTokens,
    }))
    .sort((a, b) => (a.day < b.day ? -1 : a.day > b.day ? 1 : 0));
}

const splitList = (v: string | undefined) =>
  (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/** `GET /customer/daily/activity` (`end_user_ids` comma-separated; 10 days a page by default). */
export function customerDailyActivity(
  storage: SpendStorage,
  q: UserActivityQuery & { end_user_ids?: string },
): Promise<unknown> {
  const ids = splitList(q.end_user_ids);
  return dailyActivity(storage, 'customer', q, ids.length > 0 ? { endUsers: ids } : {}, new Set(), 10);
}

/**
 * `GET /tag/daily/activity` (`tags` comma-separated; 10 days a page by default). A call counts once
 * under each of its tags, so the days' totals count a call with two tags twice (as LiteLLM's do).
 */
export function tagDailyActivity(
  storage: SpendStorage,
  q: UserActivityQuery & { tags?: string },
): Promise<unknown> {
  const tags = splitList(q.tags);
  return dailyActivity(storage, 'tag', q, tags.length > 0 ? { tags } : {}, new Set(), 10);
}
