import { randomUUID } from 'node:crypto';
import type * as z from 'zod';
import { nextBudgetResetAt } from '../budget-period.js';
import { SpendGuardError, StorageConflictError } from '../errors.js';
import type { ManagementHost } from '../guard-api.js';
import { assertQuery, assertText, INPUT_LIMITS, parseDateOrTime } from '../input-hygiene.js';
import { generateVirtualKey, hashVirtualKey, keyHashFromKeyOrHash, maskVirtualKey } from '../keys.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import { canonicalPath, hasControlCharacter } from '../request-path.js';
import type {
  BudgetInit,
  BudgetState,
  EntityInsert,
  KeyPatch,
  KeyRecord,
  RateLimits,
  ScopeChanges,
  ScopeRef,
  SpendStorage,
  TeamRecord,
  UserRecord,
} from '../storage/storage-contract.js';
import { memberScopeId, modelScopeId } from '../storage/storage-contract.js';
import {
  baseMaxNano,
  TEMP_BASE,
  TEMP_EXPIRY,
  TEMP_INCREASE,
  tempIncreaseOf,
  withoutTempIncrease,
} from '../temp-budget.js';
import { BudgetTierRoutes } from './budget-routes.js';
import { cacheActivityRoutes } from './cache-activity-routes.js';
import { admits, assertManagesTeam, type Caller, forbidden, type RouteAccess } from './caller.js';
import {
  indexStates,
  keyJson,
  type MemberJson,
  ok,
  rateLimitsFrom,
  setsRateLimits,
  spendLogJson,
  stateOf,
  teamJson,
  userJson,
} from './entity-json.js';
import { keyBulkRoutes } from './key-bulk-routes.js';
import { coerceNumericStrings, refuseUnactedFields, UNSUPPORTED_QUERY } from './litellm-fields.js';
import { LiteLLMRoutes } from './litellm-routes.js';
import type { Handler, ManagementRequest } from './management-types.js';
import { MODEL_LIST_ROUTES, modelInfoRoutes } from './model-info-routes.js';
import {
  globalSpendReportQuerySchema,
  jsonInvalid,
  keyDeleteSchema,
  keyGenerateSchema,
  keyListQuerySchema,
  keyRefSchema,
  keyRegenerateSchema,
  keyUpdateSchema,
  notAnObject,
  schemaFailure,
  spendExportQuerySchema,
  spendLogsQuerySchema,
  spendTagsQuerySchema,
  teamDailyActivityQuerySchema,
  teamNewSchema,
  userDailyActivityQuerySchema,
  userNewSchema,
} from './schemas.js';
import {
  budgetPatch,
  modelBudgetChanges,
  modelBudgetInit,
  ScopeRoutes,
  windowChanges,
  windowInserts,
  windowsJson,
} from './scope-routes.js';
import { serviceAccountRoutes } from './service-account-routes.js';
import { spendLogLines, spendLogStream } from './spend-export.js';
import { spendLogPageRoutes } from './spend-log-pages.js';
import {
  globalSpendReport,
  spendLogSummary,
  teamDailyActivity,
  userDailyActivity,
} from './spend-report-routes.js';
import {
  assertBudgetsWithin,
  assertCapWithin,
  assertMayUnblock,
  assertModelsWithin,
  assertRateLimitsWithin,
  assertServerMetadataKept,
  BLOCKED_BY,
  blockerOf,
  isBound,
  type TeamBounds,
  teamBounds,
} from './team-bounds.js';
import { teamPageRoutes } from './team-pages.js';
import { TeamUserRoutes } from './team-user-routes.js';

export type { ManagementRequest } from './management-types.js';

/** LiteLLM's management API over the guard's storage. */
export class ManagementApi {
  private readonly routes: Record<string, { handler: Handler; access: RouteAccess }>;
  private readonly teamsAndUsers: TeamUserRoutes;

  constructor(private readonly guard: ManagementHost) {
    this.teamsAndUsers = new TeamUserRoutes(this);
    const t = this.teamsAndUsers;
    this.routes = {
      'POST /team/new': { handler: (r, _c, s) => this.teamNew(r, s), access: 'admin' },
      'POST /user/new': { handler: (r, _c, s) => this.userNew(r, s), access: 'admin' },
      'POST /key/generate': { handler: (r, c, s) => this.keyGenerate(r, c, s), access: 'team' },
      'GET /key/info': { handler: (r, c, s) => this.keyInfo(r, c, s), access: 'self' },
      'GET /team/info': { handler: (r, c, s) => this.teamInfo(r, c, s), access: 'team' },
      'GET /user/info': { handler: (r, _c, s) => this.userInfo(r, s), access: 'admin' },
      'GET /spend/logs': { handler: (r, c, s) => this.spendLogs(r, c, s), access: 'self' },
      'GET /spend/tags': { handler: (r, _c, s) => this.spendTags(r, s), access: 'admin' },
      'GET /spend/logs/export': { handler: (r, _c, s) => this.spendLogsExport(r, s), access: 'admin' },
      'POST /key/update': { handler: (r, c, s) => this.keyUpdate(r, c, s), access: 'team' },
      'POST /key/block': { handler: (r, c, s) => this.keyBlock(r, c, s, true), access: 'team' },
      'POST /key/unblock': { handler: (r, c, s) => this.keyBlock(r, c, s, false), access: 'team' },
      'POST /key/delete': { handler: (r, c, s) => this.keyDelete(r, c, s), access: 'team' },
      'POST /key/regenerate': { handler: (r, c, s, k) => this.keyRegenerate(r, c, s, k), access: 'team' },
      'GET /key/list': { handler: (r, c, s) => this.keyList(r, c, s), access: 'team' },
      'POST /team/update': { handler: (r, c, s) => t.teamUpdate(r, c, s), access: 'team' },
      'POST /team/delete': { handler: (r, _c, s) => t.teamDelete(r, s), access: 'admin' },
      'GET /team/list': { handler: (r, _c, s) => t.teamList(r, s), access: 'admin' },
      'POST /team/member_add': { handler: (r, c, s) => t.memberAdd(r, c, s), access: 'team' },
      'POST /team/member_update': { handler: (r, c, s) => t.memberUpdate(r, c, s), access: 'team' },
      'POST /team/member_delete': { handler: (r, c, s) => t.memberDelete(r, c, s), access: 'team' },
      'POST /user/update': { handler: (r, _c, s) => t.userUpdate(r, s), access: 'admin' },
      'POST /user/delete': { handler: (r, _c, s) => t.userDelete(r, s), access: 'admin' },
      'GET /user/list': { handler: (r, _c, s) => t.userList(r, s), access: 'admin' },
      'GET /global/spend/report': {
        access: 'admin',
        handler: async (r, _c, s) =>
          ok(
            await globalSpendReport(
              s,
              this.parseQuery(r, globalSpendReportQuerySchema),
              async (ref) => (await this.resolveTeam(s, ref)).teamId,
            ),
          ),
      },
      'GET /user/daily/activity': {
        access: 'admin',
        handler: async (r, _c, s) =>
          ok(await userDailyActivity(s, this.parseQuery(r, userDailyActivityQuerySchema))),
      },
      'GET /team/daily/activity': {
        access: 'admin',
        handler: async (r, _c, s) =>
          ok(await teamDailyActivity(s, this.parseQuery(r, teamDailyActivityQuerySchema))),
      },
    };
    for (const [route, handler] of Object.entries(new ScopeRoutes(this).routes())) {
      this.routes[route] = { handler: (r, _c, st) => handler(r, st), access: 'admin' };
    }
    // LiteLLM's budget objects (tiers end users link to): the master key's alone.
    for (const [route, handler] of Object.entries(new BudgetTierRoutes(this).routes())) {
      this.routes[route] = { handler: (r, _c, st) => handler(r, st), access: 'admin' };
    }
    const more = new LiteLLMRoutes(this, guard.prices, () => guard.options.globalBudget?.maxBudget ?? null, {
      memberAdd: (r, c, s) => t.memberAdd(r, c, s),
      userUpdate: (r, s) => t.userUpdate(r, s),
    });
    for (const [route, { access, handler }] of Object.entries(more.routes())) {
      this.routes[route] = { handler: (r, c, st) => handler(r, c, st), access };
    }
    // Issue 16, part 2: LiteLLM's paged spend logs.
    for (const [route, entry] of Object.entries(spendLogPageRoutes(this))) this.routes[route] = entry;
    for (const [route, entry] of Object.entries(keyBulkRoutes(this))) this.routes[route] = entry;
    for (const [route, entry] of Object.entries(modelInfoRoutes(this, guard))) this.routes[route] = entry;
    for (const [route, entry] of Object.entries(cacheActivityRoutes(this))) this.routes[route] = entry;
    const keyGenerate = this.routes['POST /key/generate']!.handler;
    for (const [route, entry] of Object.entries(serviceAccountRoutes(this, keyGenerate)))
      this.routes[route] = entry;
    for (const [route, entry] of Object.entries(teamPageRoutes(this, (s, id) => t.membersOf(s, id))))
      this.routes[route] = entry;
    // LiteLLM's `/end_user/*` routes are its `/customer/*` under their older name.
    for (const [route, entry] of Object.entries(this.routes)) {
      const [method, path] = route.split(' ') as [string, string];
      if (path.startsWith('/customer/') && !path.includes('/daily/'))
        this.routes[`${method} /end_user/${path.slice('/customer/'.length)}`] = entry;
    }
  }

  now(): Date {
    return this.guard.now();
  }

  /** Every route and who may call it (the role x route table of docs/access-control.md). @internal */
  routeAccess(): Array<[route: string, access: RouteAccess]> {
    return Object.entries(this.routes).map(([route, r]) => [route, r.access]);
  }

  /** Drops an end user's cached rate limits on this instance (others re-read within the key TTL). */
  forgetCustomer(endUserId: string): void {
    this.guard.invalidateCustomer(endUserId);
  }

  /** The `defaultEndUserBudgetId` option (LiteLLM's `max_end_user_budget_id`), or `null`. @internal */
  defaultEndUserBudgetId(): string | null {
    return this.guard.options.defaultEndUserBudgetId ?? null;
  }

  /** Drops every end user's cached rate limits on this instance (after a budget tier changed). */
  forgetAllCustomers(): void {
    this.guard.invalidateAllCustomers();
  }

  /** Drops every cached key on this instance (after a budget tier that keys may link to changed). */
  forgetAllKeys(): void {
    this.guard.invalidateAllKeys();
  }

  /** True when `method path` is one of this API's routes (adapters fall through otherwise). */
  handles(method: string, path: string): boolean {
    return this.route(method, path) !== null;
  }

  /** The last path segment of every route (`/key/{key}/regenerate`'s `regenerate` included). */
  private lastSegments: Set<string> | null = null;

  /**
   * False only when no base path the router may be mounted at can make `path` (a request path, with
   * its base) one of this API's routes, whatever the method: its last segment ends no route. A path
   * that canonicalisation could change (a `.`, `\`, `%` or `?`) is answered true. A constant-time
   * "not mine" for the adapters, before they work out the base path and ask `handles`.
   */
  mayHandleBelow(path: string): boolean {
    if (/[.\\%?]/.test(path)) return true;
    this.lastSegments ??= new Set(
      Object.keys(this.routes).map((route) => route.slice(route.lastIndexOf('/') + 1)),
    );
    // One trailing slash is dropped before routing (normalizePath).
    const end = path.length > 1 && path.endsWith('/') ? path.length - 1 : path.length;
    return this.lastSegments.has(path.slice(path.lastIndexOf('/', end - 1) + 1, end));
  }

  private route(method: string, path: string) {
    const p = normalizePath(canonicalPath(path));
    // LiteLLM's `/key/{key}/regenerate` form: the key (or its hash) in the path, decoded once the
    // caller is known (a malformed one is then a 400, never an exception out of `handles`).
    const m = /^\/key\/([^/]+)\/(regenerate|reset_spend)$/.exec(p);
    const rawPathKey = m ? m[1]! : undefined;
    const named = m ? (m[2] === 'regenerate' ? '/key/regenerate' : '/key/{key_id}/reset_spend') : p;
    const name = `${method.toUpperCase()} ${named}`;
    // The model list only when asked for: else the app's own /v1/models answers (see the option).
    if (MODEL_LIST_ROUTES.has(name) && !this.guard.options.serveModelList) return null;
    const route = this.routes[name];
    return route ? { ...route, rawPathKey } : null;
  }

  /** Answers a management request; `null` when the path is not a management route. */
  async handle(req: ManagementRequest): Promise<GuardResponse | null> {
    return this.answer(req, false);
  }

  /**
   * Answers a management request as the admin, without a credential: for the dashboard, which has
   * checked its own session and CSRF token. Never reachable from the management router itself.
   */
  handleAsAdmin(req: ManagementRequest): Promise<GuardResponse | null> {
    return this.answer(req, true);
  }

  private async answer(req: ManagementRequest, trusted: boolean): Promise<GuardResponse | null> {
    const route = this.route(req.method, req.path);
    if (!route) return null;
    try {
      // The credential first, from the headers: an unauthenticated body is refused unread.
      // A public route (the health probes) runs with no credential and no rights.
      const caller: Caller = trusted
        ? { role: 'proxy_admin' }
        : route.access === 'public'
          ? { role: 'key', tokenHash: '', userId: null }
          : await this.authorize(req, route.access);
      // Query values and the path's key reach storage as lookups: checked here, once, for every route.
      assertQuery(req.query);
      const pathKey = route.rawPathKey === undefined ? undefined : decodePathKey(route.rawPathKey);
      if (pathKey !== undefined) assertText(pathKey, 'key', INPUT_LIMITS.keyRefLength);
      if (req.readBody) req = { ...req, body: await req.readBody() };
      // guard.read: the settlements of calls already answered are written before this runs.
      return await this.guard.read(`${req.method} ${req.path}`, (storage) =>
        route.handler(req, caller, storage, pathKey),
      );
    } catch (error) {
      if (error instanceof StorageConflictError) {
        return this.guard.errorResponse(
          new SpendGuardError('CONFLICT', error.message, { param: error.entity }),
        );
      }
      return this.guard.errorResponse(error);
    }
  }

  private async authorize(req: ManagementRequest, access: RouteAccess): Promise<Caller> {
    const auth = req.header('authorization') ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    const presented = m?.[1]?.trim() ?? req.header('x-api-key') ?? null;
    if (!presented) {
      throw new SpendGuardError(
        'MISSING_KEY',
        'Authentication Error, No api key passed in. Send `Authorization: Bearer <master key>`.',
      );
    }
    if (!this.guard.options.masterKey) {
      throw new SpendGuardError(
        'INVALID_MASTER_KEY',
        'Authentication Error, no master key is configured: set SPENDGUARD_MASTER_KEY (or the masterKey option).',
      );
    }
    if (this.guard.isMasterKey(presented)) return { role: 'proxy_admin' };
    const ctx = presented.startsWith('sk-') ? await this.guard.resolveKey(hashVirtualKey(presented)) : null;
    if (!ctx) {
      throw new SpendGuardError(
        'INVALID_MASTER_KEY',
        'Authentication Error, invalid master key or virtual key.',
      );
    }
    this.guard.assertKeyUsable(ctx, this.guard.now());
    const { tokenHash, userId } = ctx.key;
    // Roles are read at each call (not cached), so a demoted team admin loses its rights at once.
    const teamIds = userId
      ? (await this.guard.gate.call('member lookup', (s) => s.listMembers({ userId })))
          .filter((m) => m.role === 'admin')
          .map((m) => m.teamId)
      : [];
    const caller: Caller =
      userId && teamIds.length > 0
        ? { role: 'team_admin', tokenHash, userId, teamIds }
        : { role: 'key', tokenHash, userId };
    if (!admits(access, caller)) {
      throw forbidden(
        `this route needs ${access === 'admin' ? 'the master key' : 'the master key or a team admin key'}; a ${caller.role === 'key' ? 'virtual key' : 'team admin key'} may not call ${req.method.toUpperCase()} ${normalizePath(req.path)}.`,
      );
    }
    return caller;
  }

  /** @internal */
  parseBody<T extends z.ZodType>(req: ManagementRequest, schema: T): z.infer<T> {
    let value: unknown = req.body;
    if (typeof value === 'string') {
      if (value.trim() === '') value = {};
      else {
        try {
          value = JSON.parse(value);
        } catch (e) {
          throw jsonInvalid(value as string, e as Error);
        }
      }
    }
    if (value === undefined || value === null) value = {};
    if (typeof value !== 'object' || Array.isArray(value)) throw notAnObject(value);
    const body = coerceNumericStrings(value) as Record<string, unknown>;
    const parsed = schema.safeParse(refuseUnactedFields(body, schema));
    if (!parsed.success) throw schemaFailure(parsed.error, 'body', value);
    return parsed.data;
  }

  /** @internal */
  parseQuery<T extends z.ZodType>(req: ManagementRequest, schema: T): z.infer<T> {
    const query = Object.fromEntries(req.query);
    const parsed = schema.safeParse(refuseUnactedFields(query, schema, UNSUPPORTED_QUERY, 'query'));
    if (!parsed.success) throw schemaFailure(parsed.error, 'query', query);
    return parsed.data;
  }

  /**
   * LiteLLM's `spend` on `/key/update` and `/user/update`: the scope's spend set to that many USD
   * (its reservations stay). Written alone, in the counter's own guarded write, so a body that also
   * changes other fields is refused rather than half-applied. @internal
   */
  async setSpendAlone(
    storage: SpendStorage,
    scope: ScopeRef,
    b: { spend?: number } & Record<string, unknown>,
    idFields: string[],
  ): Promise<BudgetState | null> {
    const others = Object.keys(b).filter((f) => f !== 'spend' && !idFields.includes(f) && b[f] !== undefined);
    if (others.length > 0) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `Invalid request: spend is set alone; send ${others.join(', ')} in another call`,
        { param: 'spend' },
      );
    }
    const state = await storage.resetSpend(scope, Math.round((b.spend ?? 0) * 1e9), this.guard.now());
    if (!state) throw new SpendGuardError('NOT_FOUND', `No budget counter for ${scope.kind} '${scope.id}'`);
    return state;
  }

  /** @internal */
  budgetInit(
    maxBudget: number | null | undefined,
    duration: string | null | undefined,
    softBudget?: number | null,
  ): BudgetInit {
    const now = this.guard.now();
    return {
      maxBudgetNano: maxBudget === undefined || maxBudget === null ? null : Math.round(maxBudget * 1e9),
      budgetDuration: duration ?? null,
      budgetResetAt: duration ? nextBudgetResetAt(duration, now) : null,
      softBudgetNano: softBudget === undefined || softBudget === null ? null : Math.round(softBudget * 1e9),
    };
  }

  /** @internal */
  get guardInstance(): ManagementHost {
    return this.guard;
  }

  /** A team by id or, when exactly one team has it, by alias. @internal */
  async resolveTeam(storage: SpendStorage, idOrAlias: string, param = 'team_id'): Promise<TeamRecord> {
    const byId = await storage.getTeam(idOrAlias);
    if (byId) return byId;
    const byAlias = await storage.findTeamsByAlias(idOrAlias);
    if (byAlias.length === 1) return byAlias[0]!;
    if (byAlias.length > 1) {
      throw new SpendGuardError(
        'AMBIGUOUS_TEAM',
        `team_id '${idOrAlias}' matches ${byAlias.length} team aliases; pass the team's id`,
        {
          param,
        },
      );
    }
    throw new SpendGuardError(
      'UNKNOWN_TEAM',
      `Team not found: team_id '${idOrAlias}' is neither a team id nor a team alias`,
      {
        param,
      },
    );
  }

  private async teamNew(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.parseBody(req, teamNewSchema);
    const now = this.guard.now();
    const team: TeamRecord = {
      teamId: b.team_id ?? randomUUID(),
      teamAlias: b.team_alias ?? null,
      models: b.models ?? [],
      metadata: b.metadata ?? {},
      blocked: b.blocked ?? false,
      createdAt: now,
    };
    const budget = this.budgetInit(b.max_budget, b.budget_duration, b.soft_budget);
    const rateLimits = rateLimitsFrom(b);
    const members = await this.firstMembers(storage, team.teamId, b.members_with_roles ?? [], now);
    // The team, its windows and its first members (users created for them) in one insert: all or none.
    await storage.insert([
      { type: 'team', record: team, budget, rateLimits },
      ...windowInserts(this, { kind: 'team', id: team.teamId }, b.budget_limits),
      ...members.writes,
    ]);
    if (members.roles.length > 0) this.guard.invalidateAllKeys();
    return ok(teamJson(team, stateOf({ kind: 'team', id: team.teamId }, budget), members.roles, rateLimits));
  }

  /**
   * LiteLLM's `members_with_roles` on `/team/new`: each member by user id or email, created as a user
   * when not known yet (LiteLLM upserts it), with no budget in the team.
   */
  private async firstMembers(
    storage: SpendStorage,
    teamId: string,
    given: Array<{ user_id?: string | null; user_email?: string | null; role?: 'admin' | 'user' }>,
    now: Date,
  ): Promise<{ writes: EntityInsert[]; roles: MemberJson[] }> {
    const writes: EntityInsert[] = [];
    const roles: MemberJson[] = [];
    for (const m of given) {
      let user = await this.teamsAndUsers.userByRef(storage, m);
      if (!user) {
        user = {
          userId: m.user_id ?? randomUUID(),
          userEmail: m.user_email ?? null,
          userRole: 'internal_user',
          teams: [],
          models: [],
          metadata: {},
          createdAt: now,
        };
        writes.push({ type: 'user', record: user, budget: this.budgetInit(null, null) });
      }
      if (roles.some((r) => r.user_id === user.userId)) {
        throw new SpendGuardError(
          'BAD_REQUEST',
          `Invalid request: members_with_roles names user '${user.userId}' twice`,
          {
            param: 'members_with_roles',
          },
        );
      }
      const role = m.role ?? 'user';
      roles.push({ user_id: user.userId, user_email: user.userEmail, role });
      writes.push({
        type: 'member',
        record: { teamId, userId: user.userId, role, createdAt: now },
        budget: this.budgetInit(null, null),
      });
    }
    return { writes, roles };
  }

  private async userNew(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.parseBody(req, userNewSchema);
    const team = b.team_id ? await this.resolveTeam(storage, b.team_id) : null;
    const now = this.guard.now();
    const user: UserRecord = {
      userId: b.user_id ?? randomUUID(),
      userEmail: b.user_email ?? null,
      userRole: b.user_role ?? 'internal_user',
      teams: team ? [team.teamId] : [],
      models: b.models ?? [],
      metadata: b.metadata ?? {},
      createdAt: now,
    };
    const budget = this.budgetInit(b.max_budget, b.budget_duration, b.soft_budget);
    const rateLimits = rateLimitsFrom(b);
    const writes: EntityInsert[] = [
      { type: 'user', record: user, budget, rateLimits },
      ...windowInserts(this, { kind: 'user', id: user.userId }, b.budget_limits),
    ];
    if (team) {
      writes.push({
        type: 'member',
        record: { teamId: team.teamId, userId: user.userId, role: 'user', createdAt: now },
        budget: this.budgetInit(null, null),
      });
    }
    let secret: string | null = null;
    let keyRecord: KeyRecord | null = null;
    if (b.auto_create_key !== false) {
      secret = generateVirtualKey();
      keyRecord = newKeyRecord(secret, { userId: user.userId, teamId: team?.teamId ?? null, now });
      writes.push({ type: 'key', record: keyRecord, budget: this.budgetInit(null, null) });
    }
    await storage.insert(writes);
    return ok({
      ...userJson(user, stateOf({ kind: 'user', id: user.userId }, budget), rateLimits),
      key: secret,
      token: keyRecord?.tokenHash ?? null,
      key_name: keyRecord?.keyName ?? null,
      expires: null,
      team_id: team?.teamId ?? null,
    });
  }

  private async keyGenerate(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const b = this.parseBody(req, keyGenerateSchema);
    const user = b.user_id ? await storage.getUser(b.user_id) : null;
    if (b.user_id && !user) {
      throw new SpendGuardError(
        'UNKNOWN_USER',
        `User not found: user_id '${b.user_id}'. Create it with /user/new first.`,
        {
          param: 'user_id',
        },
      );
    }
    // No team_id: a personal key, whatever teams the user is in (LiteLLM's rule).
    const teamRef = b.team_id ?? null;
    const team = teamRef ? await this.resolveTeam(storage, teamRef) : null;
    assertManagesTeam(caller, team?.teamId ?? null, 'generate keys');
    if (caller.role === 'team_admin' && user && !user.teams.includes(team!.teamId)) {
      throw forbidden(`user '${user.userId}' is not a member of team '${team!.teamId}'.`, 'user_id');
    }
    const now = this.guard.now();
    assertServerMetadataKept(b.metadata, null);
    refuseKeyLimitsWithTier(b, b.budget_id ?? null, caller);
    if (isBound(caller)) await this.assertKeyWithinTeam(storage, team!, b);
    const secret = b.key ?? generateVirtualKey();
    const record = newKeyRecord(secret, {
      userId: user?.userId ?? null,
      teamId: team?.teamId ?? null,
      now,
      alias: b.key_alias ?? null,
      models: b.models,
      tags: b.tags,
      metadata: b.blocked ? { ...b.metadata, [BLOCKED_BY]: blockerOf(caller) } : b.metadata,
      blocked: b.blocked,
      expiresAt: b.duration ? expiryFrom(b.duration, now) : null,
    });
    record.budgetId = b.budget_id ?? null;
    const budget = this.budgetInit(b.max_budget, b.budget_duration, b.soft_budget);
    const modelBudgets = Object.entries(b.model_max_budget ?? {}).flatMap(([model, value]) => {
      if (value === null) return [];
      const scope: ScopeRef = { kind: 'model', id: modelScopeId(record.tokenHash, model) };
      return [{ type: 'budget' as const, scope, budget: modelBudgetInit(this, value) }];
    });
    const rateLimits = rateLimitsFrom(b);
    await storage.insert([
      { type: 'key', record, budget, rateLimits },
      ...modelBudgets,
      ...windowInserts(this, { kind: 'key', id: record.tokenHash }, b.budget_limits),
    ]);
    // A key on a budget tier answers with the tier's limits, as stored.
    if (record.budgetId) return ok({ key: secret, ...(await this.keyInfoJson(storage, record)) });
    return ok({
      key: secret,
      ...keyJson(record, stateOf({ kind: 'key', id: record.tokenHash }, budget), rateLimits),
    });
  }

  /**
   * A team admin's key body within its team's bounds (`team-bounds.ts`): budgets under the team's cap,
   * rate limits under the team's, models among the team's.
   */
  private async assertKeyWithinTeam(
    storage: SpendStorage,
    team: TeamRecord,
    b: Parameters<typeof assertBudgetsWithin>[1] &
      Parameters<typeof assertRateLimitsWithin>[1] & { models?: string[] },
  ): Promise<TeamBounds> {
    const bounds = await teamBounds(storage, team, this.now());
    assertBudgetsWithin(bounds, b);
    assertRateLimitsWithin(bounds, b);
    assertModelsWithin(bounds, b.models, (m, teamModels) => this.guard.teamAllowsModel(m, teamModels));
    return bounds;
  }

  /**
   * The key a management call names (by a secret, current or in grace, or by its id), checked against
   * what the caller may manage: the master key any, a team admin those of its teams. @internal
   */
  async keyFor(storage: SpendStorage, caller: Caller, ref: string, what: string): Promise<KeyRecord> {
    const key = await findKeyByRef(storage, ref, this.guard.now());
    if (!key) throw new SpendGuardError('NOT_FOUND', `Key not found: ${ref}`, { param: 'key' });
    assertManagesTeam(caller, key.teamId, what);
    return key;
  }

  /**
   * Applies a change to one key (found by `keyFor`), drops it from this guard's cache (other
   * instances hear of it). A change of `blocked` records who blocked it (`BLOCKED_BY`).
   */
  private async changeKey(
    storage: SpendStorage,
    caller: Caller,
    found: KeyRecord,
    ref: string,
    patch: KeyPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<GuardResponse> {
    const hash = found.tokenHash;
    markBlocker(caller, found, patch);
    const key = await storage.updateKey(hash, patch, budget, also);
    this.guard.invalidateKey(hash);
    if (!key) throw new SpendGuardError('NOT_FOUND', `Key not found: ${ref}`, { param: 'key' });
    return ok({ key: hash, ...(await this.keyInfoJson(storage, key)) });
  }

  /** A key named by a management call (a secret, or its id), or `null`. @internal */
  findKey(storage: SpendStorage, ref: string): Promise<KeyRecord | null> {
    return findKeyByRef(storage, ref, this.guard.now());
  }

  /** A key's JSON with its budget, rate limits and budget windows. @internal */
  async keyInfoJson(storage: SpendStorage, key: KeyRecord) {
    const now = this.guard.now();
    const scope: ScopeRef = { kind: 'key', id: key.tokenHash };
    const [[state], windows, [limits]] = await Promise.all([
      storage.getBudgets([scope], now),
      storage.listWindows([scope], now),
      storage.getRateLimits([scope]),
    ]);
    return { ...keyJson(key, state ?? null, limits?.limits ?? null), budget_limits: windowsJson(windows) };
  }

  /** The rate limits of these scopes, by `scopeKey`. */
  private async limitsOf(storage: SpendStorage, scopes: ScopeRef[]): Promise<Map<string, RateLimits>> {
    const found = await storage.getRateLimits(scopes);
    return new Map(found.map((r) => [`${r.scope.kind}:${r.scope.id}`, r.limits]));
  }

  /** The key fields and budget definition an update (or a regenerate) sets. */
  private keyChanges(b: z.infer<typeof keyUpdateSchema> | z.infer<typeof keyRegenerateSchema>) {
    const patch: KeyPatch = {};
    if (b.key_alias !== undefined) patch.keyAlias = b.key_alias;
    if (b.models !== undefined) patch.models = b.models;
    if (b.tags !== undefined) patch.tags = b.tags;
    if (b.metadata !== undefined) patch.metadata = b.metadata;
    if (b.blocked !== undefined) patch.blocked = b.blocked;
    if (b.duration !== undefined)
      patch.expiresAt = b.duration ? expiryFrom(b.duration, this.guard.now()) : null;
    const budget = budgetPatch(this, b);
    return { patch, budget };
  }

  private async keyUpdate(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const b = this.parseBody(req, keyUpdateSchema);
    const { patch, budget } = this.keyChanges(b);
    const found = await this.keyFor(storage, caller, b.key, 'change this key');
    const hash = found.tokenHash;
    if (b.spend !== undefined) {
      // Lowering a key's spend lifts it under its cap: as raising the cap, the master key's alone.
      if (caller.role !== 'proxy_admin')
        throw forbidden("only the master key can set a key's spend.", 'spend');
      await this.setSpendAlone(storage, { kind: 'key', id: hash }, b, ['key']);
      this.guard.invalidateKey(hash);
      return ok({ key: hash, ...(await this.keyInfoJson(storage, found)) });
    }
    assertServerMetadataKept(b.metadata, found.metadata);
    refuseKeyLimitsWithTier(b, b.budget_id !== undefined ? b.budget_id : (found.budgetId ?? null), caller);
    if (b.budget_id !== undefined) patch.budgetId = b.budget_id;
    const [state] = await storage.getBudgets([{ kind: 'key', id: hash }], this.now());
    this.applyTempIncrease(b, found, patch, budget, state ?? null);
    if (isBound(caller)) {
      const bounds = await this.boundsOfKey(storage, found, { ...b, max_budget: undefined });
      // The cap the key ends with (a new max_budget, a temporary increase on top): checked when it
      // changes, so that sending back a cap the master key set stays possible.
      const was = state?.maxBudgetNano ?? null;
      const next = budget.maxBudgetNano;
      if (next != null && next !== was && !(was !== null && next < was)) {
        assertCapWithin(bounds, b.temp_budget_increase != null ? 'temp_budget_increase' : 'max_budget', next);
      }
    }
    // Rate limits, per-model budgets and budget windows are written in the key's own transaction,
    // whose key change record makes every instance reload the key with all of them: all or nothing.
    const scope: ScopeRef = { kind: 'key', id: hash };
    const none = { deleteScopes: [], upsertBudgets: [] };
    const models = b.model_max_budget ? modelBudgetChanges(this, hash, b.model_max_budget) : none;
    const windows =
      b.budget_limits !== undefined
        ? await windowChanges(this, storage, scope, b.budget_limits, this.now())
        : none;
    const [current] = setsRateLimits(b) ? await storage.getRateLimits([scope]) : [];
    const also: ScopeChanges = {
      now: this.now(),
      rateLimits: setsRateLimits(b)
        ? { scope, limits: rateLimitsFrom(b, current?.limits ?? null) }
        : undefined,
      deleteScopes: [...models.deleteScopes, ...windows.deleteScopes],
      upsertBudgets: [...models.upsertBudgets, ...windows.upsertBudgets],
    };
    return this.changeKey(storage, caller, found, b.key, patch, budget, also);
  }

  /** A team admin's change to a key of its team: within the team's bounds (see `assertKeyWithinTeam`). */
  private async boundsOfKey(
    storage: SpendStorage,
    key: KeyRecord,
    b: Parameters<ManagementApi['assertKeyWithinTeam']>[2],
  ): Promise<TeamBounds> {
    const team = key.teamId ? await storage.getTeam(key.teamId) : null;
    if (!team) throw forbidden(`key '${key.tokenHash}' is in no team this key administers.`);
    return this.assertKeyWithinTeam(storage, team, b);
  }

  /**
   * `temp_budget_increase` + `temp_budget_expiry` (LiteLLM's): the cap rises by the increase until the
   * expiry, kept in the key's metadata (see temp-budget.ts). A `max_budget` given with a running
   * increase changes the base under it; `temp_budget_increase: null` ends it now.
   */
  private applyTempIncrease(
    b: {
      temp_budget_increase?: number | null;
      temp_budget_expiry?: string | null;
      max_budget?: number | null;
    },
    key: KeyRecord,
    patch: KeyPatch,
    budget: Partial<BudgetInit>,
    state: BudgetState | null,
  ): void {
    const now = this.now();
    const current = tempIncreaseOf(key);
    const running = current && current.expiresAt > now ? current : null;
    const base = budget.maxBudgetNano !== undefined ? budget.maxBudgetNano : baseMaxNano(state, current);
    const metadata = withoutTempIncrease(patch.metadata ?? key.metadata);
    if (b.temp_budget_increase === undefined && b.temp_budget_expiry === undefined) {
      if (!running) {
        // An increase over but not yet ended by a call: new metadata without it must put the cap back.
        if (current && patch.metadata !== undefined && !(TEMP_BASE in patch.metadata)) {
          patch.metadata = metadata;
          budget.maxBudgetNano = base;
        }
        return;
      }
      // A new max_budget (or metadata) while an increase runs: keep it on top of the new base.
      if (base !== null && base + Math.round(running.increase * 1e9) > INPUT_LIMITS.maxUsd * 1e9)
        throw new SpendGuardError(
          'BAD_REQUEST',
          `Invalid request: max_budget plus the running temp_budget_increase would pass ${INPUT_LIMITS.maxUsd} USD`,
          { param: 'max_budget' },
        );
      patch.metadata = {
        ...metadata,
        [TEMP_INCREASE]: running.increase,
        [TEMP_EXPIRY]: running.expiresAt.toISOString(),
        [TEMP_BASE]: base === null ? null : base / 1e9,
      };
      budget.maxBudgetNano = base === null ? null : base + Math.round(running.increase * 1e9);
      return;
    }
    if (b.temp_budget_increase === null || b.temp_budget_expiry === null) {
      patch.metadata = metadata;
      budget.maxBudgetNano = base;
      return;
    }
    if (b.temp_budget_increase === undefined || b.temp_budget_expiry === undefined) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        'Invalid request: temp_budget_increase and temp_budget_expiry go together',
        { param: b.temp_budget_increase === undefined ? 'temp_budget_increase' : 'temp_budget_expiry' },
      );
    }
    const expiresAt = new Date(parseDateOrTime(b.temp_budget_expiry));
    if (expiresAt <= now)
      throw new SpendGuardError('BAD_REQUEST', 'Invalid request: temp_budget_expiry must be in the future', {
        param: 'temp_budget_expiry',
      });
    if (base === null)
      throw new SpendGuardError('BAD_REQUEST', 'Invalid request: the key has no max_budget to increase', {
        param: 'temp_budget_increase',
      });
    if (base + Math.round(b.temp_budget_increase * 1e9) > INPUT_LIMITS.maxUsd * 1e9)
      throw new SpendGuardError(
        'BAD_REQUEST',
        `Invalid request: temp_budget_increase would raise the key's budget past ${INPUT_LIMITS.maxUsd} USD`,
        { param: 'temp_budget_increase' },
      );
    patch.metadata = {
      ...metadata,
      [TEMP_INCREASE]: b.temp_budget_increase,
      [TEMP_EXPIRY]: expiresAt.toISOString(),
      [TEMP_BASE]: base / 1e9,
    };
    budget.maxBudgetNano = base + Math.round(b.temp_budget_increase * 1e9);
  }

  private async keyBlock(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
    blocked: boolean,
  ): Promise<GuardResponse> {
    const b = this.parseBody(req, keyRefSchema);
    const found = await this.keyFor(storage, caller, b.key, 'change this key');
    return this.changeKey(storage, caller, found, b.key, { blocked });
  }

  /**
   * LiteLLM's `/key/regenerate`: a new secret for the same key record (its id, budget counter,
   * spend, team, user and settings stay), shown once. With `grace_period` the replaced secret keeps
   * working until it ends; calls made with it spend on the same counter and log under the key's id.
   */
  private async keyRegenerate(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
    pathKey: string | undefined,
  ): Promise<GuardResponse> {
    const b = this.parseBody(req, keyRegenerateSchema);
    const ref = pathKey ?? b.key;
    if (!ref) {
      throw new SpendGuardError('BAD_REQUEST', 'Pass the key to regenerate: {"key": "sk-..."}', {
        param: 'key',
      });
    }
    const key = await this.keyFor(storage, caller, ref, 'regenerate this key');
    const now = this.guard.now();
    const secret = b.new_key ?? generateVirtualKey();
    const { patch, budget } = this.keyChanges(b);
    assertServerMetadataKept(b.metadata, key.metadata);
    refuseKeyLimitsWithTier(b, key.budgetId ?? null, caller);
    if (isBound(caller)) await this.boundsOfKey(storage, key, b);
    markBlocker(caller, key, patch); // new metadata keeps who blocked the key
    const regenerated = await storage.regenerateKey({
      tokenHash: key.tokenHash,
      newSecretHash: hashVirtualKey(secret),
      newKeyName: maskVirtualKey(secret),
      previousValidUntil: b.grace_period ? expiryFrom(b.grace_period, now) : null,
      now,
    });
    this.guard.invalidateKey(key.tokenHash);
    if (!regenerated) throw new SpendGuardError('NOT_FOUND', `Key not found: ${ref}`, { param: 'key' });
    let record = regenerated;
    if (Object.keys(patch).length > 0 || Object.keys(budget).length > 0) {
      record = (await storage.updateKey(key.tokenHash, patch, budget)) ?? record;
      this.guard.invalidateKey(key.tokenHash);
    }
    const [state] = await storage.getBudgets([{ kind: 'key', id: key.tokenHash }], now);
    return ok({
      key: secret,
      ...keyJson(record, state ?? null),
      grace_period: b.grace_period ?? null,
      previous_key_valid_until: b.grace_period ? expiryFrom(b.grace_period, now).toISOString() : null,
    });
  }

  private async keyDelete(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const b = this.parseBody(req, keyDeleteSchema);
    const now = this.guard.now();
    const found = await Promise.all(b.keys.map((ref) => findKeyByRef(storage, ref, now)));
    const missing = b.keys.filter((_, i) => !found[i]);
    if (missing.length > 0) {
      throw new SpendGuardError('NOT_FOUND', `Keys not found: ${missing.join(', ')}; nothing was deleted`, {
        param: 'keys',
      });
    }
    for (const key of found) assertManagesTeam(caller, key!.teamId, 'delete this key');
    const hashes = found.map((k) => k!.tokenHash);
    await storage.deleteKeys(hashes);
    for (const hash of hashes) this.guard.invalidateKey(hash);
    return ok({ deleted_keys: b.keys });
  }

  /** LiteLLM's `/key/list`: filters, then pages (`page` from 1, `size` default 10, at most 100). */
  private async keyList(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const q = this.parseQuery(req, keyListQuerySchema);
    const teamId = q.team_id ? (await this.resolveTeam(storage, q.team_id)).teamId : undefined;
    let keys: KeyRecord[];
    if (caller.role === 'team_admin') {
      // A team admin lists the keys of its teams only.
      if (teamId !== undefined) assertManagesTeam(caller, teamId, 'list its keys');
      const teams = teamId !== undefined ? [teamId] : caller.teamIds;
      keys = (await Promise.all(teams.map((t) => storage.listKeys({ userId: q.user_id, teamId: t })))).flat();
    } else {
      keys = await storage.listKeys({ userId: q.user_id, teamId });
    }
    if (q.key_alias !== undefined) keys = keys.filter((k) => k.keyAlias === q.key_alias);
    const size = q.size ?? 10;
    const page = q.page ?? 1;
    const totalPages = Math.ceil(keys.length / size);
    const pageKeys = keys.slice((page - 1) * size, page * size);
    const paging = { total_count: keys.length, current_page: page, total_pages: totalPages };
    if (q.return_full_object !== 'true') return ok({ keys: pageKeys.map((k) => k.tokenHash), ...paging });
    const states = indexStates(
      await storage.getBudgets(
        pageKeys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
        this.guard.now(),
      ),
    );
    const limits = await this.limitsOf(
      storage,
      pageKeys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
    );
    return ok({
      keys: pageKeys.map((k) =>
        keyJson(k, states.get(`key:${k.tokenHash}`) ?? null, limits.get(`key:${k.tokenHash}`)),
      ),
      ...paging,
    });
  }

  private async keyInfo(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const asked = req.query.get('key');
    let key: KeyRecord | null;
    if (asked) key = await findKeyByRef(storage, asked, this.guard.now());
    else if (caller.role !== 'proxy_admin') key = await storage.getKey(caller.tokenHash);
    else
      throw new SpendGuardError('BAD_REQUEST', 'Pass the key to look up: /key/info?key=sk-...', {
        param: 'key',
      });
    if (caller.role !== 'proxy_admin' && key?.tokenHash !== caller.tokenHash) {
      const ownTeam = caller.role === 'team_admin' && key?.teamId && caller.teamIds.includes(key.teamId);
      if (!ownTeam) throw forbidden("a key may only read its own info (or a team admin its team's keys).");
    }
    if (!key) throw new SpendGuardError('NOT_FOUND', `Key not found: ${asked}`, { param: 'key' });
    return ok({ key: key.tokenHash, info: await this.keyInfoJson(storage, key) });
  }

  private async teamInfo(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const ref = req.query.get('team_id');
    if (!ref)
      throw new SpendGuardError('BAD_REQUEST', 'Pass the team: /team/info?team_id=...', { param: 'team_id' });
    const team = await this.resolveTeam(storage, ref).catch((e: unknown) => {
      if (e instanceof SpendGuardError && e.code === 'UNKNOWN_TEAM') {
        // A team admin learns nothing about teams that are not its own, not even whether they exist.
        if (caller.role !== 'proxy_admin') assertManagesTeam(caller, ref, 'read this team');
        throw new SpendGuardError('NOT_FOUND', e.message);
      }
      throw e;
    });
    assertManagesTeam(caller, team.teamId, 'read this team');
    const [keys, members] = await Promise.all([
      storage.listKeys({ teamId: team.teamId }),
      this.teamsAndUsers.membersOf(storage, team.teamId),
    ]);
    const states = await storage.getBudgets(
      [
        { kind: 'team', id: team.teamId },
        ...keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
        ...members.map((m): ScopeRef => ({ kind: 'member', id: memberScopeId(team.teamId, m.user_id) })),
      ],
      this.guard.now(),
    );
    const byScope = indexStates(states);
    const limits = await this.limitsOf(storage, [
      { kind: 'team', id: team.teamId },
      ...keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
    ]);
    return ok({
      team_id: team.teamId,
      team_info: teamJson(
        team,
        byScope.get(`team:${team.teamId}`) ?? null,
        members,
        limits.get(`team:${team.teamId}`),
      ),
      keys: keys.map((k) =>
        keyJson(k, byScope.get(`key:${k.tokenHash}`) ?? null, limits.get(`key:${k.tokenHash}`)),
      ),
      team_memberships: members.map((m) => {
        const state = byScope.get(`member:${memberScopeId(team.teamId, m.user_id)}`) ?? null;
        return {
          user_id: m.user_id,
          team_id: team.teamId,
          role: m.role,
          spend: state ? state.spendNano / 1e9 : 0,
          max_budget_in_team: state?.maxBudgetNano == null ? null : state.maxBudgetNano / 1e9,
        };
      }),
    });
  }

  private async userInfo(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const userId = req.query.get('user_id');
    if (!userId)
      throw new SpendGuardError('BAD_REQUEST', 'Pass the user: /user/info?user_id=...', { param: 'user_id' });
    const user = await storage.getUser(userId);
    if (!user)
      throw new SpendGuardError('NOT_FOUND', `User not found: user_id '${userId}'`, { param: 'user_id' });
    const keys = await storage.listKeys({ userId });
    const teams = (await Promise.all(user.teams.map((t) => storage.getTeam(t)))).filter((t) => t !== null);
    const states = await storage.getBudgets(
      [{ kind: 'user', id: userId }, ...keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash }))],
      this.guard.now(),
    );
    const byScope = indexStates(states);
    const limits = await this.limitsOf(storage, [
      { kind: 'user', id: userId },
      ...keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
    ]);
    return ok({
      user_id: userId,
      user_info: userJson(user, byScope.get(`user:${userId}`) ?? null, limits.get(`user:${userId}`)),
      keys: keys.map((k) =>
        keyJson(k, byScope.get(`key:${k.tokenHash}`) ?? null, limits.get(`key:${k.tokenHash}`)),
      ),
      teams: teams.map((t) => teamJson(t, null)),
    });
  }

  private async spendLogs(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const q = this.parseQuery(req, spendLogsQuerySchema);
    const { apiKeyHash, teamId } = await this.spendLogReader(q, caller, storage);
    // LiteLLM's default: with both dates (as days, the only dates it takes), the per-day sums;
    // `summarize=false` gives the logs. With times, or one date, the logs.
    const days = /^\d{4}-\d{2}-\d{2}$/;
    const summarize =
      q.summarize === 'true' ||
      (q.summarize === undefined && days.test(q.start_date ?? '') && days.test(q.end_date ?? ''));
    if (summarize) {
      return ok(
        await spendLogSummary(storage, {
          start_date: q.start_date,
          end_date: q.end_date,
          apiKeyHash,
          userId: q.user_id,
          teamId,
          requestId: q.request_id,
        }),
      );
    }
    const logs = await storage.querySpendLogs({
      apiKeyHash,
      userId: q.user_id,
      teamId,
      requestId: q.request_id,
      startTime: q.start_date ? startOf(q.start_date) : undefined,
      endTime: q.end_date ? endOf(q.end_date) : undefined,
      limit: q.limit ?? 1000,
    });
    return ok(logs.map(spendLogJson));
  }

  /**
   * Whose spend logs a caller may read, from the `api_key` and `team_id` it asked for: a key reads its
   * own; a team admin also those of its teams; the master key any. @internal
   */
  async spendLogReader(
    q: { api_key?: string; team_id?: string },
    caller: Caller,
    storage: SpendStorage,
  ): Promise<{ apiKeyHash: string | undefined; teamId: string | undefined }> {
    let apiKeyHash = q.api_key
      ? ((await findKeyByRef(storage, q.api_key, this.guard.now()))?.tokenHash ??
        keyHashFromKeyOrHash(q.api_key))
      : undefined;
    let teamId = q.team_id;
    if (teamId) teamId = (await this.resolveTeam(storage, teamId)).teamId;
    const teamAdminOfIt = caller.role === 'team_admin' && !!teamId && caller.teamIds.includes(teamId);
    if (caller.role !== 'proxy_admin' && !teamAdminOfIt) {
      if (teamId)
        throw forbidden(`only the master key or an admin of team '${teamId}' can read its spend logs.`);
      if (apiKeyHash && apiKeyHash !== caller.tokenHash) {
        throw forbidden('a key may only read its own spend logs.');
      }
      apiKeyHash = caller.tokenHash;
    }
    return { apiKeyHash, teamId };
  }

  /** `/spend/logs/export?start_date&end_date&format=jsonl|csv`: every log of the range, streamed. */
  private async spendLogsExport(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.parseQuery(req, spendExportQuerySchema);
    const format = q.format ?? 'jsonl';
    const lines = spendLogLines(
      storage,
      {
        startTime: startOf(q.start_date),
        endTime: endOf(q.end_date),
        apiKeyHash: q.api_key ? keyHashFromKeyOrHash(q.api_key) : undefined,
        teamId: q.team_id,
        userId: q.user_id,
      },
      format,
    );
    return {
      status: 200,
      headers: {
        'content-type': format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
        'content-disposition': `attachment; filename="spend-logs-${q.start_date}-${q.end_date}.${format}"`,
      },
      body: spendLogStream(lines),
    };
  }

  private async spendTags(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.parseQuery(req, spendTagsQuerySchema);
    const rows = await storage.spendByTag({
      fromDay: q.start_date ? startOf(q.start_date).toISOString().slice(0, 10) : undefined,
      toDay: q.end_date ? new Date(endOf(q.end_date).getTime() - 1).toISOString().slice(0, 10) : undefined,
    });
    return ok(
      rows.map((r) => ({
        individual_request_tag: r.tag,
        log_count: r.requests,
        total_spend: r.spendNano / 1e9,
      })),
    );
  }
}

/**
 * Records who blocks a key in its metadata (`BLOCKED_BY`), drops it when the key is unblocked, and
 * keeps it through a metadata change; refuses a team admin unblocking what the master key blocked.
 */
function markBlocker(caller: Caller, key: KeyRecord, patch: KeyPatch): void {
  if (patch.blocked === false) assertMayUnblock(caller, key);
  const was = key.blocked ? key.metadata[BLOCKED_BY] : undefined;
  let by = was;
  if (patch.blocked === false) by = undefined;
  else if (patch.blocked === true && was !== 'proxy_admin') by = blockerOf(caller);
  if (patch.metadata === undefined && by === key.metadata[BLOCKED_BY]) return;
  const { [BLOCKED_BY]: _, ...rest } = patch.metadata ?? key.metadata;
  patch.metadata = by === undefined ? rest : { ...rest, [BLOCKED_BY]: by };
}

/** The `{key}` of `/key/{key}/regenerate`, percent-decoded; a malformed escape is the caller's 400. */
function decodePathKey(raw: string): string {
  let key: string;
  try {
    key = decodeURIComponent(raw);
  } catch {
    throw new SpendGuardError(
      'BAD_REQUEST',
      'The key in the path (/key/{key}/...) is not valid percent-encoding (e.g. %ZZ); encode it with encodeURIComponent.',
      { param: 'key' },
    );
  }
  if (hasControlCharacter(key)) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      'The key in the path (/key/{key}/...) must not hold control characters.',
      {
        param: 'key',
      },
    );
  }
  return key;
}

function normalizePath(path: string): string {
  const q = path.indexOf('?');
  const p = q === -1 ? path : path.slice(0, q);
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

function newKeyRecord(
  secret: string,
  o: {
    userId: string | null;
    teamId: string | null;
    now: Date;
    alias?: string | null;
    models?: string[];
    tags?: string[];
    metadata?: Record<string, unknown>;
    blocked?: boolean;
    expiresAt?: Date | null;
  },
): KeyRecord {
  return {
    tokenHash: hashVirtualKey(secret),
    keyName: maskVirtualKey(secret),
    keyAlias: o.alias ?? null,
    userId: o.userId,
    teamId: o.teamId,
    models: o.models ?? [],
    tags: o.tags ?? [],
    metadata: o.metadata ?? {},
    blocked: o.blocked ?? false,
    expiresAt: o.expiresAt ?? null,
    createdAt: o.now,
  };
}

/**
 * A key named by a management call: by a secret (current, or replaced and still in its grace
 * period) or by its id (the `token` the API returns).
 */
async function findKeyByRef(storage: SpendStorage, ref: string, now: Date): Promise<KeyRecord | null> {
  const hash = keyHashFromKeyOrHash(ref);
  // A secret opens only what it opens when presented: a replaced one past its grace names nothing.
  if (ref !== hash) return (await storage.findKeyBySecret(hash, now))?.key ?? null;
  return storage.getKey(hash);
}

/** Key expiry from LiteLLM's `duration` (`30d`, `1h`, ...): plain elapsed time, not calendar-aligned. */
export function expiryFrom(duration: string, now: Date): Date {
  const m = /^(\d+)(mo|s|m|h|d|w)$/.exec(
    { daily: '1d', weekly: '7d', monthly: '1mo' }[duration] ?? duration,
  )!;
  const n = Number(m[1]);
  const unitMs: Record<string, number> = { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8 };
  if (m[2] === 'mo') {
    const d = new Date(now);
    d.setUTCMonth(d.getUTCMonth() + n);
    return d;
  }
  return new Date(now.getTime() + n * unitMs[m[2]!]!);
}

function startOf(value: string): Date {
  return new Date(parseDateOrTime(value));
}

/** A date-only end is inclusive of that whole day; a time is taken as given. */
function endOf(value: string): Date {
  return new Date(parseDateOrTime(value) + (value.length === 10 ? 86_400_000 : 0));
}

/** The fields that give a key limits of its own, which a budget tier's replace. */
const KEY_OWN_LIMITS = [
  'max_budget',
  'soft_budget',
  'budget_duration',
  'rpm_limit',
  'tpm_limit',
  'max_parallel_requests',
  'temp_budget_increase',
] as const;

/**
 * A key on a budget tier (`budget_id`, master key only) spends under the tier's limits: limits of its
 * own in the same body are refused (400 naming the field) rather than overwritten by the tier's.
 */
function refuseKeyLimitsWithTier(
  b: Partial<Record<(typeof KEY_OWN_LIMITS)[number], unknown>> & { budget_id?: string | null },
  tier: string | null,
  caller: Caller,
): void {
  if (b.budget_id != null && caller.role !== 'proxy_admin') {
    throw forbidden('only the master key can put a key on a budget (budget_id).', 'budget_id');
  }
  if (tier === null) return;
  const own = KEY_OWN_LIMITS.find((f) => b[f] !== undefined && b[f] !== null);
  if (own) {
    throw new SpendGuardError(
      'BAD_REQUEST',
      `Invalid request: the key spends under budget '${tier}', whose limits apply; set either budget_id or ${own}, not both (change the budget with /budget/update, or send budget_id: null to give the key limits of its own)`,
      { param: own },
    );
  }
}
