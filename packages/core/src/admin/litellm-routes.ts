import * as z from 'zod';
import { SpendGuardError } from '../errors.js';
import { parseDateOrTime } from '../input-hygiene.js';
import { keyHashFromKeyOrHash } from '../keys.js';
import { countChatPromptTokens } from '../metering/token-count.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import type { PriceBook } from '../pricing/price-book.js';
import {
  GLOBAL_SCOPE_ID,
  type ScopeRef,
  type SpendReportFilters,
  type SpendReportRow,
  type SpendStorage,
} from '../storage/storage-contract.js';
import type { Caller, RouteAccess } from './caller.js';
import { forbidden } from './caller.js';
import { indexStates, keyJson, ok, teamJson, userJson } from './entity-json.js';
import type { Handler, ManagementApi, ManagementRequest } from './management-types.js';
import { id, userUpdateSchema } from './schemas.js';
import { customerJson } from './scope-routes.js';
import { customerDailyActivity, tagDailyActivity } from './spend-report-routes.js';

/**
 * LiteLLM's read routes over spend (`/spend/keys|users`, `/global/spend*`), `/customer/list`, the
 * health probes, the key lookups (`/key/aliases`, `/v2/key/info`, `/key/health`), and the writes
 * `/team/block|unblock`, `/global/spend/reset`, `/spend/calculate`, with LiteLLM's shapes (its
 * `spend_management_endpoints.py`, `key_management_endpoints.py`, `team_endpoints.py`). Sums come from
 * the daily rollups, never a scan of the logs. LiteLLM's "last 30 days" views cover the 30 UTC days
 * ending today on the guard's clock.
 */

export type LiteLLMRoute = { access: RouteAccess; handler: Handler };

const DAY_MS = 86_400_000;
const day = (d: Date) => d.toISOString().slice(0, 10);
const usd = (nano: number) => nano / 1e9;

const limitQuery = z.coerce
  .number({ error: 'must be a whole number' })
  .int('must be a whole number')
  .min(1, 'must be at least 1')
  .max(1000, 'must be at most 1000');
const dayQuery = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, "must be a date 'YYYY-MM-DD'")
  .refine((s) => new Date(`${s}T00:00:00Z`).toISOString().startsWith(s), "must be a date 'YYYY-MM-DD'");

const spendUsersQuery = z.object({ user_id: id.optional() });
const globalLogsQuery = z.object({ api_key: z.string().min(1).optional() });
const topQuery = z.object({ limit: limitQuery.optional() });
const globalTagsQuery = z.object({
  start_date: dayQuery,
  end_date: dayQuery,
  /** Comma-separated; `all-tags` (LiteLLM's UI) means every tag. */
  tags: z.string().optional(),
});
const activityRangeQuery = z.object({ start_date: dayQuery, end_date: dayQuery });
const providerQuery = z.object({ start_date: dayQuery.optional(), end_date: dayQuery.optional() });
const endUsersBody = z.object({
  api_key: z.string().min(1).nullable().optional(),
  startTime: z.iso.datetime({ offset: true, local: true }).nullable().optional(),
  endTime: z.iso.datetime({ offset: true, local: true }).nullable().optional(),
});
const teamRefBody = z.object({ team_id: id });
const keysBody = z.object({
  keys: z.array(z.string().min(1), { error: 'must be an array of keys or key hashes' }).optional(),
  key_aliases: z.array(z.string().min(1), { error: 'must be an array of key aliases' }).optional(),
});
const keyAliasesQuery = z.object({
  page: z.coerce.number().int().min(1).optional(),
  size: z.coerce.number().int().min(1).max(100).optional(),
  search: z.string().optional(),
});
const usageSchema = z.looseObject({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
});
const activityQuery = z.object({
  start_date: dayQuery,
  end_date: dayQuery,
  model: z.string().min(1).optional(),
  api_key: z.string().min(1).optional(),
  page: z.coerce.number({ error: 'must be a page number' }).int().min(1).optional(),
  page_size: z.coerce.number({ error: 'must be a page size' }).int().min(1).max(1000).optional(),
});
const customerActivityQuery = activityQuery.extend({ end_user_ids: z.string().optional() });
const tagActivityQuery = activityQuery.extend({ tags: z.string().optional() });
const bulkMemberAddBody = z.object({
  team_id: id,
  members: z.array(z.unknown(), { error: 'must be an array of members' }).min(1).optional(),
  all_users: z.boolean({ error: 'must be true or false' }).optional(),
  max_budget_in_team: z.number().nonnegative().nullable().optional(),
});
const bulkUserUpdateBody = z.object({
  users: z
    .array(z.record(z.string(), z.unknown()), { error: 'must be an array of /user/update bodies' })
    .min(1)
    .optional(),
  all_users: z.boolean({ error: 'must be true or false' }).optional(),
  /** With `all_users`: the update applied to every user. */
  user_updates: z.record(z.string(), z.unknown()).optional(),
});
const spendCalculateBody = z.object({
  model: z.string().min(1).optional(),
  messages: z.array(z.unknown()).optional(),
  /** A provider response, OpenAI-shaped: its `model` and `usage` are priced. */
  completion_response: z.looseObject({ model: z.string().min(1), usage: usageSchema }).optional(),
});

/** The team and user routes the bulk routes are made of. */
export interface TeamUserHandlers {
  memberAdd: Handler;
  userUpdate: (req: ManagementRequest, storage: SpendStorage) => Promise<GuardResponse>;
}

export class LiteLLMRoutes {
  constructor(
    private readonly api: ManagementApi,
    private readonly prices: PriceBook,
    private readonly globalMaxBudget: () => number | null,
    private readonly teamsAndUsers: TeamUserHandlers,
  ) {}

  routes(): Record<string, LiteLLMRoute> {
    const admin = (handler: Handler): LiteLLMRoute => ({ access: 'admin', handler });
    return {
      'GET /customer/list': admin((_r, _c, s) => this.customerList(s)),
      'GET /spend/keys': admin((_r, _c, s) => this.spendKeys(s)),
      'GET /spend/users': admin((r, _c, s) => this.spendUsers(r, s)),
      'GET /global/spend': admin((_r, _c, s) => this.globalSpend(s)),
      'GET /global/spend/logs': admin((r, _c, s) => this.globalSpendLogs(r, s)),
      'GET /global/spend/keys': admin((r, _c, s) => this.globalSpendKeys(r, s)),
      'GET /global/spend/teams': admin((_r, _c, s) => this.globalSpendTeams(s)),
      'GET /global/spend/models': admin((r, _c, s) => this.globalSpendModels(r, s)),
      'GET /global/spend/tags': admin((r, _c, s) => this.globalSpendTags(r, s)),
      'POST /global/spend/end_users': admin((r, _c, s) => this.globalSpendEndUsers(r, s)),
      'GET /global/spend/provider': admin((r, _c, s) => this.globalSpendProvider(r, s)),
      'GET /global/spend/all_tag_names': admin(async (_r, _c, s) =>
        ok({ tag_names: (await s.spendByTag({})).map((t) => t.tag) }),
      ),
      'GET /global/activity': admin((r, _c, s) => this.globalActivity(r, s)),
      'GET /global/activity/model': admin((r, _c, s) => this.globalActivityByModel(r, s)),
      'GET /customer/daily/activity': admin(async (r, _c, s) =>
        ok(await customerDailyActivity(s, this.api.parseQuery(r, customerActivityQuery))),
      ),
      'GET /tag/daily/activity': admin(async (r, _c, s) =>
        ok(await tagDailyActivity(s, this.api.parseQuery(r, tagActivityQuery))),
      ),
      'POST /global/spend/reset': admin((_r, _c, s) => this.globalSpendReset(s)),
      'POST /team/bulk_member_add': { access: 'team', handler: (r, c, s) => this.bulkMemberAdd(r, c, s) },
      'POST /user/bulk_update': admin((r, _c, s) => this.bulkUserUpdate(r, s)),
      'POST /team/block': admin((r, _c, s) => this.teamBlock(r, s, true)),
      'POST /team/unblock': admin((r, _c, s) => this.teamBlock(r, s, false)),
      'GET /key/aliases': admin((r, _c, s) => this.keyAliases(r, s)),
      'POST /v2/key/info': { access: 'self', handler: (r, c, s) => this.keyInfoV2(r, c, s) },
      'POST /key/health': {
        access: 'self',
        handler: async () => ok({ key: 'healthy', logging_callbacks: null }),
      },
      'POST /spend/calculate': { access: 'self', handler: async (r) => this.spendCalculate(r) },
      'GET /health/liveliness': { access: 'public', handler: async () => ok("I'm alive!") },
      'GET /health/liveness': { access: 'public', handler: async () => ok("I'm alive!") },
      'GET /health/readiness': { access: 'public', handler: (_r, _c, s) => this.readiness(s) },
    };
  }

  /** The 30 UTC days that end today: LiteLLM's `Last30d...` and `MonthlyGlobalSpend` views. */
  private last30Days(): { fromDay: string; toDay: string } {
    const now = this.api.now();
    return { fromDay: day(new Date(now.getTime() - 29 * DAY_MS)), toDay: day(now) };
  }

  private async customerList(storage: SpendStorage): Promise<GuardResponse> {
    const customers = await storage.listCustomers();
    const scopes = customers.map((c): ScopeRef => ({ kind: 'customer', id: c.endUserId }));
    const [states, limits] = await Promise.all([
      storage.getBudgets(scopes, this.api.now()),
      storage.getRateLimits(scopes),
    ]);
    const byScope = indexStates(states);
    const limitsOf = new Map(limits.map((l) => [l.scope.id, l.limits]));
    return ok(
      customers.map((c) =>
        customerJson(c, byScope.get(`customer:${c.endUserId}`) ?? null, limitsOf.get(c.endUserId) ?? null),
      ),
    );
  }

  /** `GET /spend/keys`: every key with its spend (LiteLLM returns its key table). */
  private async spendKeys(storage: SpendStorage): Promise<GuardResponse> {
    const keys = await storage.listKeys({});
    const states = indexStates(
      await storage.getBudgets(
        keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
        this.api.now(),
      ),
    );
    return ok(keys.map((k) => keyJson(k, states.get(`key:${k.tokenHash}`) ?? null)));
  }

  /** `GET /spend/users`: every user with its spend, or `[user]` for `?user_id=`. */
  private async spendUsers(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, spendUsersQuery);
    const users = q.user_id
      ? [await storage.getUser(q.user_id)].filter((u) => u !== null)
      : await storage.listUsers({});
    const states = indexStates(
      await storage.getBudgets(
        users.map((u): ScopeRef => ({ kind: 'user', id: u.userId })),
        this.api.now(),
      ),
    );
    return ok(users.map((u) => userJson(u, states.get(`user:${u.userId}`) ?? null)));
  }

  /** `GET /global/spend`: the last 30 days' spend and the global budget's cap. */
  private async globalSpend(storage: SpendStorage): Promise<GuardResponse> {
    const [total] = await storage.spendReport({ ...this.last30Days(), groupBy: [] });
    const [global] = await storage.getBudgets([{ kind: 'global', id: GLOBAL_SCOPE_ID }], this.api.now());
    const max = global?.maxBudgetNano ?? null;
    return ok({
      spend: usd(total?.spendNano ?? 0),
      max_budget: max === null ? this.globalMaxBudget() : usd(max),
    });
  }

  /** `GET /global/spend/logs`: spend per day over the last 30 days (`[{ date, spend }]`), or one key's. */
  private async globalSpendLogs(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, globalLogsQuery);
    const filters: SpendReportFilters = {};
    const apiKey = q.api_key ? keyHashFromKeyOrHash(q.api_key) : undefined;
    if (apiKey) filters.apiKeyHashes = [apiKey];
    const rows = await storage.spendReport({ ...this.last30Days(), groupBy: ['day'], filters });
    return ok(
      rows.map((r) => ({ date: r.day, spend: usd(r.spendNano), ...(apiKey ? { api_key: apiKey } : {}) })),
    );
  }

  /** `GET /global/spend/keys`: the keys that spent most over the last 30 days. */
  private async globalSpendKeys(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, topQuery);
    const rows = (await storage.spendReport({ ...this.last30Days(), groupBy: ['key'] })).sort(
      (a, b) => b.spendNano - a.spendNano,
    );
    const top = q.limit ? rows.slice(0, q.limit) : rows;
    const keys = await Promise.all(top.map((r) => storage.getKey(r.apiKeyHash!)));
    return ok(
      top.map((r, i) => ({
        api_key: r.apiKeyHash,
        total_spend: usd(r.spendNano),
        key_alias: keys[i]?.keyAlias ?? null,
        key_name: keys[i]?.keyName ?? null,
      })),
    );
  }

  /**
   * `GET /global/spend/teams`: spend per day per team alias over the last 30 days, LiteLLM's UI shape
   * `{ daily_spend: [{ date, <alias>: spend }], teams: [aliases], total_spend_per_team: [{ team_id, total_spend }] }`
   * (`team_id` holds the alias there, as in LiteLLM; keys in no team are `Unassigned`).
   */
  private async globalSpendTeams(storage: SpendStorage): Promise<GuardResponse> {
    const rows = await storage.spendReport({ ...this.last30Days(), groupBy: ['day', 'team'] });
    const teams = new Map((await storage.listTeams({})).map((t) => [t.teamId, t.teamAlias ?? t.teamId]));
    const nameOf = (teamId: string | null | undefined) =>
      teamId ? (teams.get(teamId) ?? teamId) : 'Unassigned';
    // Summed in nano-dollars (two teams may share an alias), turned into USD once.
    const byDay = new Map<string, Map<string, number>>();
    const totals = new Map<string, number>();
    for (const r of rows) {
      const name = nameOf(r.teamId);
      const entry = byDay.get(r.day!) ?? new Map<string, number>();
      entry.set(name, (entry.get(name) ?? 0) + r.spendNano);
      byDay.set(r.day!, entry);
      totals.set(name, (totals.get(name) ?? 0) + r.spendNano);
    }
    return ok({
      daily_spend: [...byDay].map(([date, spend]) => ({
        date,
        ...Object.fromEntries([...spend].map(([name, nano]) => [name, usd(nano)])),
      })),
      teams: [...totals.keys()],
      total_spend_per_team: [...totals]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 10)
        .map(([name, nano]) => ({ team_id: name, total_spend: usd(nano) })),
    });
  }

  /** `GET /global/spend/models`: the models that cost most over the last 30 days (default 10). */
  private async globalSpendModels(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, topQuery);
    const rows = (await storage.spendReport({ ...this.last30Days(), groupBy: ['model'] }))
      .sort((a, b) => b.spendNano - a.spendNano)
      .slice(0, q.limit ?? 10);
    return ok(rows.map((r) => ({ model: r.model, total_spend: usd(r.spendNano) })));
  }

  /** `GET /global/spend/tags`: `{ spend_per_tag: [{ name, spend, log_count }] }`, most spent first. */
  private async globalSpendTags(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, globalTagsQuery);
    if (q.start_date > q.end_date) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `start_date (${q.start_date}) is after end_date (${q.end_date})`,
        {
          param: 'start_date',
        },
      );
    }
    const tags = q.tags ? q.tags.split(',').filter((t) => t !== '') : [];
    const filters: SpendReportFilters = tags.length > 0 && !tags.includes('all-tags') ? { tags } : {};
    const rows = await storage.spendReport({
      fromDay: q.start_date,
      toDay: q.end_date,
      groupBy: ['tag'],
      filters,
    });
    return ok({
      spend_per_tag: rows
        .sort((a, b) => b.spendNano - a.spendNano)
        .map((r) => ({ name: r.tag, spend: usd(r.spendNano), log_count: r.requests })),
    });
  }

  /**
   * `POST /global/spend/end_users`: the 100 end users that spent most (`[{ end_user, total_count,
   * total_spend }]`), over `startTime`..`endTime` (default the last 30 days), optionally for one key.
   * The rollups are daily: the times count by their UTC day.
   */
  private async globalSpendEndUsers(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, endUsersBody);
    const range = this.last30Days();
    const filters: SpendReportFilters = {};
    if (b.api_key) filters.apiKeyHashes = [keyHashFromKeyOrHash(b.api_key)];
    const rows = await storage.spendReport({
      fromDay: b.startTime ? day(new Date(parseDateOrTime(b.startTime))) : range.fromDay,
      toDay: b.endTime ? day(new Date(parseDateOrTime(b.endTime))) : range.toDay,
      groupBy: ['customer'],
      filters,
    });
    return ok(
      rows
        .sort((a, b) => b.spendNano - a.spendNano)
        .slice(0, 100)
        .map((r) => ({
          end_user: r.endUser ?? null,
          total_count: r.requests,
          total_spend: usd(r.spendNano),
        })),
    );
  }

  /**
   * `GET /global/activity`: requests and tokens per day,
   * `{ daily_data: [{ date: 'May 04', api_requests, total_tokens }], sum_api_requests, sum_total_tokens }`
   * (LiteLLM's UI shape, its date as `%b %d`).
   */
  private async globalActivity(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.activityRange(req);
    const rows = await storage.spendReport({ fromDay: q.start_date, toDay: q.end_date, groupBy: ['day'] });
    return ok(activityJson(rows));
  }

  /** `GET /global/activity/model`: the same per model, the 10 models with the most requests. */
  private async globalActivityByModel(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.activityRange(req);
    const rows = await storage.spendReport({
      fromDay: q.start_date,
      toDay: q.end_date,
      groupBy: ['model', 'day'],
    });
    const byModel = new Map<string, SpendReportRow[]>();
    for (const r of rows) byModel.set(r.model!, [...(byModel.get(r.model!) ?? []), r]);
    return ok(
      [...byModel]
        .map(([model, modelRows]) => ({ model, ...activityJson(modelRows) }))
        .sort((a, b) => b.sum_api_requests - a.sum_api_requests)
        .slice(0, 10),
    );
  }

  private activityRange(req: ManagementRequest): { start_date: string; end_date: string } {
    const q = this.api.parseQuery(req, activityRangeQuery);
    if (q.start_date > q.end_date) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `start_date (${q.start_date}) is after end_date (${q.end_date})`,
        {
          param: 'start_date',
        },
      );
    }
    return q;
  }

  /** `GET /global/spend/provider`: `[{ provider, spend }]` over the range (default the last 30 days). */
  private async globalSpendProvider(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, providerQuery);
    const range = this.last30Days();
    const rows = await storage.spendReport({
      fromDay: q.start_date ?? range.fromDay,
      toDay: q.end_date ?? range.toDay,
      groupBy: ['provider'],
    });
    return ok(
      rows
        .sort((a, b) => b.spendNano - a.spendNano)
        .map((r) => ({ provider: r.provider ?? 'unknown', spend: usd(r.spendNano) })),
    );
  }

  /**
   * `POST /global/spend/reset` (master key only): every key's and team's spend to 0, the logs kept,
   * as LiteLLM does. Each counter is reset in its own guarded write (LiteLLM's two table updates are
   * not one transaction either); a failure midway is reported, and calling again finishes the job.
   */
  private async globalSpendReset(storage: SpendStorage): Promise<GuardResponse> {
    const [keys, teams] = await Promise.all([storage.listKeys({}), storage.listTeams({})]);
    const now = this.api.now();
    for (const k of keys) await storage.resetSpend({ kind: 'key', id: k.tokenHash }, 0, now);
    for (const t of teams) await storage.resetSpend({ kind: 'team', id: t.teamId }, 0, now);
    return ok({ message: 'Spend for all API Keys and Teams reset successfully', status: 'success' });
  }

  /**
   * `POST /team/bulk_member_add`: `/team/member_add` for many members (or `all_users`), in one write:
   * all of them join or none does (LiteLLM adds them one by one and reports each), answered in
   * LiteLLM's shape `{ team_id, results: [...], total_requested, successful_additions, failed_additions, updated_team }`.
   */
  private async bulkMemberAdd(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const b = this.api.parseBody(req, bulkMemberAddBody);
    if (!b.members === !b.all_users) {
      throw new SpendGuardError('BAD_REQUEST', 'Invalid request: pass either members or all_users: true', {
        param: 'members',
      });
    }
    let members = b.members ?? [];
    if (b.all_users) {
      const team = await this.api.resolveTeam(storage, b.team_id);
      members = (await storage.listUsers({}))
        .filter((u) => !u.teams.includes(team.teamId))
        .map((u) => ({ user_id: u.userId, role: 'user' }));
      if (members.length === 0) {
        return ok({
          team_id: team.teamId,
          results: [],
          total_requested: 0,
          successful_additions: 0,
          failed_additions: 0,
          updated_team: null,
        });
      }
    }
    const body: Record<string, unknown> = { team_id: b.team_id, member: members };
    if (b.max_budget_in_team !== undefined) body.max_budget_in_team = b.max_budget_in_team;
    const added = await this.teamsAndUsers.memberAdd({ ...req, body }, caller, storage);
    if (added.status !== 200) return added;
    const team = added.body as {
      team_id: string;
      updated_users: Array<{ user_id: string; user_email: string | null }>;
      updated_team_memberships: unknown[];
    };
    const { updated_users, updated_team_memberships, ...updatedTeam } = team;
    return ok({
      team_id: team.team_id,
      results: updated_users.map((u, i) => ({
        user_id: u.user_id,
        user_email: u.user_email,
        success: true,
        error: null,
        updated_user: u,
        updated_team_membership: updated_team_memberships[i] ?? null,
      })),
      total_requested: members.length,
      successful_additions: members.length,
      failed_additions: 0,
      updated_team: updatedTeam,
    });
  }

  /**
   * `POST /user/bulk_update`: `/user/update` for each of `users`, or `user_updates` for every user
   * (`all_users`). Every body is checked before any is applied (a bad one refuses the whole request);
   * each update is then its own write, and the answer reports each, as LiteLLM's does.
   */
  private async bulkUserUpdate(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.api.parseBody(req, bulkUserUpdateBody);
    if (!b.users === !b.all_users) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        'Invalid request: pass either users or all_users: true with user_updates',
        {
          param: 'users',
        },
      );
    }
    let bodies: Array<Record<string, unknown>>;
    if (b.all_users) {
      if (!b.user_updates) {
        throw new SpendGuardError('BAD_REQUEST', 'Invalid request: all_users needs user_updates', {
          param: 'user_updates',
        });
      }
      bodies = (await storage.listUsers({})).map((u) => ({ ...b.user_updates, user_id: u.userId }));
    } else {
      bodies = b.users!;
    }
    bodies.forEach((body, i) => {
      try {
        this.api.parseBody({ ...req, body }, userUpdateSchema);
      } catch (e) {
        if (e instanceof SpendGuardError) {
          // A 422's detail points into this request's body: `["body","users",1,"max_budget"]`.
          const at = b.all_users ? ['user_updates'] : ['users', i];
          throw new SpendGuardError(e.code, `users.${i}: ${e.message}`, {
            param: e.param ? `users.${i}.${e.param}` : `users.${i}`,
            ...(e.detail && {
              detail: e.detail.map((d) => ({ ...d, loc: ['body', ...at, ...d.loc.slice(1)] })),
            }),
          });
        }
        throw e;
      }
    });
    const results = [];
    for (const body of bodies) {
      // A user refused (not found, say) is reported and the rest go on; a storage error stops it all.
      const r = await this.teamsAndUsers.userUpdate({ ...req, body }, storage).catch((e: unknown) => {
        if (e instanceof SpendGuardError && e.status < 500) return e;
        throw e;
      });
      const failed = r instanceof SpendGuardError ? r : null;
      const updated = failed ? null : (r as GuardResponse).body;
      results.push({
        user_id: (updated as { user_id?: string } | null)?.user_id ?? body.user_id ?? null,
        user_email: body.user_email ?? null,
        success: !failed,
        error: failed ? failed.message : null,
        updated_user: updated,
      });
    }
    const succeeded = results.filter((r) => r.success).length;
    return ok({
      results,
      total_requested: bodies.length,
      successful_updates: succeeded,
      failed_updates: bodies.length - succeeded,
    });
  }

  /** `POST /team/block` and `/team/unblock`: the team's keys are refused (401) while it is blocked. */
  private async teamBlock(
    req: ManagementRequest,
    storage: SpendStorage,
    blocked: boolean,
  ): Promise<GuardResponse> {
    const b = this.api.parseBody(req, teamRefBody);
    const team = await this.api.resolveTeam(storage, b.team_id);
    const updated = await storage.updateTeam(team.teamId, { blocked });
    this.api.guardInstance.invalidateAllKeys();
    if (!updated)
      throw new SpendGuardError('NOT_FOUND', `Team not found: ${b.team_id}`, { param: 'team_id' });
    const [state] = await storage.getBudgets([{ kind: 'team', id: team.teamId }], this.api.now());
    return ok(teamJson(updated, state ?? null));
  }

  /** `GET /key/aliases`: the aliases keys carry, paged (`page` from 1, `size` default 50). */
  private async keyAliases(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.api.parseQuery(req, keyAliasesQuery);
    const all = [...new Set((await storage.listKeys({})).map((k) => k.keyAlias).filter((a) => a !== null))]
      .filter((a) => !q.search || a.includes(q.search))
      .sort();
    const size = q.size ?? 50;
    const page = q.page ?? 1;
    return ok({
      aliases: all.slice((page - 1) * size, page * size),
      total_count: all.length,
      current_page: page,
      total_pages: Math.ceil(all.length / size),
      size,
    });
  }

  /** `POST /v2/key/info`: several keys at once, `{ key: [...], info: [...] }`; a key reads only itself. */
  private async keyInfoV2(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const b = this.api.parseBody(req, keysBody);
    if (!b.keys?.length && !b.key_aliases?.length) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        "Invalid request: at least one of 'keys' or 'key_aliases' must be given",
        {
          param: 'keys',
        },
      );
    }
    const byHash = (
      await Promise.all((b.keys ?? []).map((k) => storage.getKey(keyHashFromKeyOrHash(k))))
    ).filter((k) => k !== null);
    const byAlias = b.key_aliases?.length
      ? (await storage.listKeys({})).filter((k) => k.keyAlias !== null && b.key_aliases!.includes(k.keyAlias))
      : [];
    const keys = [...new Map([...byHash, ...byAlias].map((k) => [k.tokenHash, k])).values()];
    if (caller.role !== 'proxy_admin') {
      const others = keys.filter(
        (k) =>
          k.tokenHash !== caller.tokenHash &&
          !(caller.role === 'team_admin' && k.teamId && caller.teamIds.includes(k.teamId)),
      );
      if (others.length > 0)
        throw forbidden("a key may only read its own info (or a team admin its team's keys).");
    }
    const states = indexStates(
      await storage.getBudgets(
        keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
        this.api.now(),
      ),
    );
    return ok({
      key: b.keys ?? b.key_aliases,
      info: keys.map((k) => keyJson(k, states.get(`key:${k.tokenHash}`) ?? null)),
    });
  }

  /**
   * `POST /spend/calculate`: `{ cost }` in USD, from a provider's `completion_response` (its model and
   * usage), or before a call from `model` + `messages` (the prompt counted, no output).
   */
  private spendCalculate(req: ManagementRequest): GuardResponse {
    const b = this.api.parseBody(req, spendCalculateBody);
    if (b.completion_response) {
      const r = b.completion_response;
      return ok({ cost: this.priced(r.model, r.usage, 'completion_response.model') });
    }
    if (b.model) {
      if (!b.messages) {
        throw new SpendGuardError(
          'BAD_REQUEST',
          "Bad Request - messages must be provided if 'model' is provided",
          {
            param: 'messages',
          },
        );
      }
      const promptTokens = countChatPromptTokens(b.model, b.messages);
      return ok({
        cost: this.priced(b.model, { prompt_tokens: promptTokens, completion_tokens: 0 }, 'model'),
      });
    }
    throw new SpendGuardError(
      'BAD_REQUEST',
      "Bad Request - Either 'model' or 'completion_response' must be provided",
      {
        param: 'model',
      },
    );
  }

  private priced(model: string, usage: unknown, param: string): number {
    if (!this.prices.resolve(model)) {
      throw new SpendGuardError('UNPRICED_MODEL', `Model '${model}' has no price in the price table`, {
        param,
      });
    }
    return this.prices.calculateCost(model, usage).total;
  }

  /** `GET /health/readiness`: 200 when storage answers, 503 when it does not. */
  private async readiness(storage: SpendStorage): Promise<GuardResponse> {
    await storage.getTeam('');
    return ok({ status: 'healthy', db: 'connected', cache: null });
  }
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Rows of one day each (any order) as LiteLLM's activity chart data, by day. */
function activityJson(rows: SpendReportRow[]) {
  const daily = [...rows]
    .sort((a, b) => (a.day! < b.day! ? -1 : 1))
    .map((r) => ({
      date: `${MONTHS[Number(r.day!.slice(5, 7)) - 1]} ${r.day!.slice(8, 10)}`,
      api_requests: r.requests,
      total_tokens: r.promptTokens + r.completionTokens,
    }));
  return {
    daily_data: daily,
    sum_api_requests: daily.reduce((n, d) => n + d.api_requests, 0),
    sum_total_tokens: daily.reduce((n, d) => n + d.total_tokens, 0),
  };
}
