import { randomUUID } from 'node:crypto';
import type * as z from 'zod';
import { nextBudgetResetAt } from '../budget-period.js';
import { SpendGuardError, StorageConflictError } from '../errors.js';
import type { GuardResponse, SpendGuard } from '../guard.js';
import { generateVirtualKey, hashVirtualKey, keyHashFromKeyOrHash, maskVirtualKey } from '../keys.js';
import { hasRateLimits } from '../storage/rate-limit-rules.js';
import type {
  BudgetInit,
  BudgetState,
  EntityInsert,
  KeyPatch,
  KeyRecord,
  RateLimits,
  ScopeRef,
  SpendLogRecord,
  SpendStorage,
  TeamRecord,
  UserRecord,
} from '../storage/storage-contract.js';
import { modelScopeId } from '../storage/storage-contract.js';
import {
  describeIssues,
  globalSpendReportQuerySchema,
  keyDeleteSchema,
  keyGenerateSchema,
  keyListQuerySchema,
  keyRefSchema,
  keyUpdateSchema,
  spendLogsQuerySchema,
  spendTagsQuerySchema,
  teamDailyActivityQuerySchema,
  teamNewSchema,
  userDailyActivityQuerySchema,
  userNewSchema,
} from './schemas.js';
import {
  applyModelBudgets,
  applyWindows,
  budgetPatch,
  ScopeRoutes,
  windowInserts,
  windowsJson,
} from './scope-routes.js';
import { globalSpendReport, teamDailyActivity, userDailyActivity } from './spend-report-routes.js';

/** A management API request, in framework-neutral terms. */
export interface ManagementRequest {
  method: string;
  /** The path below where the management API is mounted, e.g. `/key/generate`. */
  path: string;
  query: URLSearchParams;
  header: (name: string) => string | null | undefined;
  /** The raw body text (read as JSON whatever the Content-Type), or a body the app already parsed. */
  body: string | unknown;
}

type Caller = { role: 'admin' } | { role: 'key'; tokenHash: string };
type Handler = (req: ManagementRequest, caller: Caller, storage: SpendStorage) => Promise<GuardResponse>;

/** LiteLLM's management API over the guard's storage. */
export class ManagementApi {
  private readonly routes: Record<string, { handler: Handler; keyMayCall?: boolean }>;

  constructor(private readonly guard: SpendGuard) {
    this.routes = {
      'POST /team/new': { handler: (r, _c, s) => this.teamNew(r, s) },
      'POST /user/new': { handler: (r, _c, s) => this.userNew(r, s) },
      'POST /key/generate': { handler: (r, _c, s) => this.keyGenerate(r, s) },
      'GET /key/info': { handler: (r, c, s) => this.keyInfo(r, c, s), keyMayCall: true },
      'GET /team/info': { handler: (r, _c, s) => this.teamInfo(r, s) },
      'GET /user/info': { handler: (r, _c, s) => this.userInfo(r, s) },
      'GET /spend/logs': { handler: (r, c, s) => this.spendLogs(r, c, s), keyMayCall: true },
      'GET /spend/tags': { handler: (r, _c, s) => this.spendTags(r, s) },
      'POST /key/update': { handler: (r, _c, s) => this.keyUpdate(r, s) },
      'POST /key/block': { handler: (r, _c, s) => this.keyBlock(r, s, true) },
      'POST /key/unblock': { handler: (r, _c, s) => this.keyBlock(r, s, false) },
      'POST /key/delete': { handler: (r, _c, s) => this.keyDelete(r, s) },
      'GET /key/list': { handler: (r, _c, s) => this.keyList(r, s) },
      'GET /global/spend/report': {
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
        handler: async (r, _c, s) =>
          ok(await userDailyActivity(s, this.parseQuery(r, userDailyActivityQuerySchema))),
      },
      'GET /team/daily/activity': {
        handler: async (r, _c, s) =>
          ok(await teamDailyActivity(s, this.parseQuery(r, teamDailyActivityQuerySchema))),
      },
    };
    for (const [route, handler] of Object.entries(new ScopeRoutes(this).routes())) {
      this.routes[route] = { handler: (r, _c, s) => handler(r, s) };
    }
  }

  now(): Date {
    return this.guard.now();
  }

  /** True when `method path` is one of this API's routes (adapters fall through otherwise). */
  handles(method: string, path: string): boolean {
    return `${method.toUpperCase()} ${normalizePath(path)}` in this.routes;
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
    const route = this.routes[`${req.method.toUpperCase()} ${normalizePath(req.path)}`];
    if (!route) return null;
    try {
      const caller: Caller = trusted
        ? { role: 'admin' }
        : await this.authorize(req, route.keyMayCall ?? false);
      return await this.guard.gate.call(`${req.method} ${req.path}`, (storage) =>
        route.handler(req, caller, storage),
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

  private async authorize(req: ManagementRequest, keyMayCall: boolean): Promise<Caller> {
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
    if (this.guard.isMasterKey(presented)) return { role: 'admin' };
    if (keyMayCall && presented.startsWith('sk-')) {
      const ctx = await this.guard.resolveKey(hashVirtualKey(presented));
      if (ctx && !ctx.key.blocked) return { role: 'key', tokenHash: ctx.key.tokenHash };
    }
    throw new SpendGuardError(
      'INVALID_MASTER_KEY',
      'Authentication Error, invalid master key or not allowed to call this route.',
    );
  }

  parseBody<T extends z.ZodType>(req: ManagementRequest, schema: T): z.infer<T> {
    let value: unknown = req.body;
    if (typeof value === 'string') {
      if (value.trim() === '') value = {};
      else {
        try {
          value = JSON.parse(value);
        } catch (e) {
          throw new SpendGuardError(
            'INVALID_JSON',
            `Request body is not valid JSON: ${(e as Error).message}`,
          );
        }
      }
    }
    if (value === undefined || value === null) value = {};
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new SpendGuardError('BAD_REQUEST', 'Request body must be a JSON object.');
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success)
      throw new SpendGuardError('BAD_REQUEST', `Invalid request: ${describeIssues(parsed.error)}`);
    return parsed.data;
  }

  parseQuery<T extends z.ZodType>(req: ManagementRequest, schema: T): z.infer<T> {
    const parsed = schema.safeParse(Object.fromEntries(req.query));
    if (!parsed.success)
      throw new SpendGuardError('BAD_REQUEST', `Invalid query: ${describeIssues(parsed.error)}`);
    return parsed.data;
  }

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

  /** A team by id or, when exactly one team has it, by alias. */
  private async resolveTeam(
    storage: SpendStorage,
    idOrAlias: string,
    param = 'team_id',
  ): Promise<TeamRecord> {
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

  /** The rate limits of these scopes, by `scopeKey`. */
  private async limitsOf(storage: SpendStorage, scopes: ScopeRef[]): Promise<Map<string, RateLimits>> {
    const found = await storage.getRateLimits(scopes);
    return new Map(found.map((r) => [`${r.scope.kind}:${r.scope.id}`, r.limits]));
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
    await storage.insert([
      { type: 'team', record: team, budget, rateLimits },
      ...windowInserts(this, { kind: 'team', id: team.teamId }, b.budget_limits),
    ]);
    return ok(teamJson(team, stateOf({ kind: 'team', id: team.teamId }, budget), [], rateLimits));
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

  private async keyGenerate(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
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
    // A key for a user who belongs to exactly one team spends against that team too, unless told otherwise.
    const teamRef = b.team_id ?? (user && user.teams.length === 1 ? user.teams[0]! : null);
    const team = teamRef ? await this.resolveTeam(storage, teamRef) : null;
    const now = this.guard.now();
    const secret = b.key ?? generateVirtualKey();
    const record = newKeyRecord(secret, {
      userId: user?.userId ?? null,
      teamId: team?.teamId ?? null,
      now,
      alias: b.key_alias ?? null,
      models: b.models,
      tags: b.tags,
      metadata: b.metadata,
      blocked: b.blocked,
      expiresAt: b.duration ? expiryFrom(b.duration, now) : null,
    });
    const budget = this.budgetInit(b.max_budget, b.budget_duration, b.soft_budget);
    const modelBudgets = Object.entries(b.model_max_budget ?? {}).flatMap(([model, value]) => {
      if (value === null) return [];
      const limit = typeof value === 'number' ? value : (value.budget_limit ?? null);
      const duration = typeof value === 'number' ? null : (value.time_period ?? null);
      const scope: ScopeRef = { kind: 'model', id: modelScopeId(record.tokenHash, model) };
      return [{ type: 'budget' as const, scope, budget: this.budgetInit(limit, duration) }];
    });
    const rateLimits = rateLimitsFrom(b);
    await storage.insert([
      { type: 'key', record, budget, rateLimits },
      ...modelBudgets,
      ...windowInserts(this, { kind: 'key', id: record.tokenHash }, b.budget_limits),
    ]);
    return ok({
      key: secret,
      ...keyJson(record, stateOf({ kind: 'key', id: record.tokenHash }, budget), rateLimits),
    });
  }

  /** Applies a change to one key, drops it from this guard's cache (other instances hear of it). */
  private async changeKey(
    storage: SpendStorage,
    ref: string,
    patch: KeyPatch,
    budget?: Partial<BudgetInit>,
  ): Promise<GuardResponse> {
    const hash = keyHashFromKeyOrHash(ref);
    const key = await storage.updateKey(hash, patch, budget);
    this.guard.invalidateKey(hash);
    if (!key) throw new SpendGuardError('NOT_FOUND', `Key not found: ${ref}`, { param: 'key' });
    const [state] = await storage.getBudgets([{ kind: 'key', id: hash }], this.guard.now());
    const [limits] = await storage.getRateLimits([{ kind: 'key', id: hash }]);
    return ok({ key: hash, ...keyJson(key, state ?? null, limits?.limits ?? null) });
  }

  private async keyUpdate(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.parseBody(req, keyUpdateSchema);
    const patch: KeyPatch = {};
    if (b.key_alias !== undefined) patch.keyAlias = b.key_alias;
    if (b.models !== undefined) patch.models = b.models;
    if (b.tags !== undefined) patch.tags = b.tags;
    if (b.metadata !== undefined) patch.metadata = b.metadata;
    if (b.blocked !== undefined) patch.blocked = b.blocked;
    if (b.duration !== undefined)
      patch.expiresAt = b.duration ? expiryFrom(b.duration, this.guard.now()) : null;
    const hash = keyHashFromKeyOrHash(b.key);
    if (RATE_LIMIT_FIELDS.some((f) => b[f] !== undefined)) {
      if (!(await storage.getKey(hash)))
        throw new SpendGuardError('NOT_FOUND', `Key not found: ${b.key}`, { param: 'key' });
      const scope: ScopeRef = { kind: 'key', id: hash };
      const [current] = await storage.getRateLimits([scope]);
      // Written before the key, whose change record makes every instance reload both.
      await storage.setRateLimits(scope, rateLimitsFrom(b, current?.limits ?? null));
    }
    const answer = await this.changeKey(storage, b.key, patch, budgetPatch(this, b));
    if (b.model_max_budget) await applyModelBudgets(this, storage, hash, b.model_max_budget, this.now());
    if (b.budget_limits !== undefined) {
      await applyWindows(this, storage, { kind: 'key', id: hash }, b.budget_limits, this.now());
      this.guard.invalidateKey(hash);
      return ok({ key: hash, ...(await this.keyInfoJson(storage, hash, b.key)) });
    }
    return answer;
  }

  private async keyBlock(
    req: ManagementRequest,
    storage: SpendStorage,
    blocked: boolean,
  ): Promise<GuardResponse> {
    const b = this.parseBody(req, keyRefSchema);
    return this.changeKey(storage, b.key, { blocked });
  }

  private async keyDelete(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const b = this.parseBody(req, keyDeleteSchema);
    const hashes = b.keys.map(keyHashFromKeyOrHash);
    const missing = [];
    for (const [i, hash] of hashes.entries()) if (!(await storage.getKey(hash))) missing.push(b.keys[i]);
    if (missing.length > 0) {
      throw new SpendGuardError('NOT_FOUND', `Keys not found: ${missing.join(', ')}; nothing was deleted`, {
        param: 'keys',
      });
    }
    await storage.deleteKeys(hashes);
    for (const hash of hashes) this.guard.invalidateKey(hash);
    return ok({ deleted_keys: b.keys });
  }

  private async keyList(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const q = this.parseQuery(req, keyListQuerySchema);
    const teamId = q.team_id ? (await this.resolveTeam(storage, q.team_id)).teamId : undefined;
    const keys = await storage.listKeys({ userId: q.user_id, teamId });
    if (q.return_full_object !== 'true') {
      return ok({
        keys: keys.map((k) => k.tokenHash),
        total_count: keys.length,
        current_page: 1,
        total_pages: 1,
      });
    }
    const states = indexStates(
      await storage.getBudgets(
        keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
        this.guard.now(),
      ),
    );
    const limits = await this.limitsOf(
      storage,
      keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash })),
    );
    return ok({
      keys: keys.map((k) =>
        keyJson(k, states.get(`key:${k.tokenHash}`) ?? null, limits.get(`key:${k.tokenHash}`)),
      ),
      total_count: keys.length,
      current_page: 1,
      total_pages: 1,
    });
  }

  private async keyInfo(
    req: ManagementRequest,
    caller: Caller,
    storage: SpendStorage,
  ): Promise<GuardResponse> {
    const asked = req.query.get('key');
    let hash: string;
    if (asked) hash = keyHashFromKeyOrHash(asked);
    else if (caller.role === 'key') hash = caller.tokenHash;
    else
      throw new SpendGuardError('BAD_REQUEST', 'Pass the key to look up: /key/info?key=sk-...', {
        param: 'key',
      });
    if (caller.role === 'key' && caller.tokenHash !== hash) {
      throw new SpendGuardError(
        'INVALID_MASTER_KEY',
        'Authentication Error, a key may only read its own info.',
      );
    }
    return ok({ key: hash, info: await this.keyInfoJson(storage, hash, asked ?? hash) });
  }

  /** A key's JSON with its budget windows; 404 when it does not exist. */
  private async keyInfoJson(storage: SpendStorage, hash: string, ref: string) {
    const key = await storage.getKey(hash);
    if (!key) throw new SpendGuardError('NOT_FOUND', `Key not found: ${ref}`, { param: 'key' });
    const now = this.guard.now();
    const scope: ScopeRef = { kind: 'key', id: hash };
    const [[state], windows, [limits]] = await Promise.all([
      storage.getBudgets([scope], now),
      storage.listWindows([scope], now),
      storage.getRateLimits([scope]),
    ]);
    return { ...keyJson(key, state ?? null, limits?.limits ?? null), budget_limits: windowsJson(windows) };
  }

  private async teamInfo(req: ManagementRequest, storage: SpendStorage): Promise<GuardResponse> {
    const ref = req.query.get('team_id');
    if (!ref)
      throw new SpendGuardError('BAD_REQUEST', 'Pass the team: /team/info?team_id=...', { param: 'team_id' });
    const team = await this.resolveTeam(storage, ref).catch((e: unknown) => {
      if (e instanceof SpendGuardError && e.code === 'UNKNOWN_TEAM')
        throw new SpendGuardError('NOT_FOUND', e.message);
      throw e;
    });
    const [keys, members] = await Promise.all([
      storage.listKeys({ teamId: team.teamId }),
      storage.listUsers({ teamId: team.teamId }),
    ]);
    const states = await storage.getBudgets(
      [{ kind: 'team', id: team.teamId }, ...keys.map((k): ScopeRef => ({ kind: 'key', id: k.tokenHash }))],
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
      team_memberships: members.map((u) => ({ user_id: u.userId, team_id: team.teamId })),
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
    let apiKeyHash = q.api_key ? keyHashFromKeyOrHash(q.api_key) : undefined;
    if (caller.role === 'key') {
      if (apiKeyHash && apiKeyHash !== caller.tokenHash) {
        throw new SpendGuardError(
          'INVALID_MASTER_KEY',
          'Authentication Error, a key may only read its own spend logs.',
        );
      }
      apiKeyHash = caller.tokenHash;
    }
    let teamId = q.team_id;
    if (teamId) teamId = (await this.resolveTeam(storage, teamId)).teamId;
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

function normalizePath(path: string): string {
  const q = path.indexOf('?');
  const p = q === -1 ? path : path.slice(0, q);
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

export function ok(body: unknown): GuardResponse {
  return { status: 200, headers: {}, body };
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

/** Key expiry from LiteLLM's `duration` (`30d`, `1h`, ...): plain elapsed time, not calendar-aligned. */
function expiryFrom(duration: string, now: Date): Date {
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

export function stateOf(scope: ScopeRef, budget: BudgetInit): BudgetState {
  return { scope, ...budget, softBudgetNano: budget.softBudgetNano ?? null, spendNano: 0, reservedNano: 0 };
}

function indexStates(states: BudgetState[]): Map<string, BudgetState> {
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

const RATE_LIMIT_FIELDS = [
  'rpm_limit',
  'tpm_limit',
  'max_parallel_requests',
  'model_rpm_limit',
  'model_tpm_limit',
] as const;

/** A request's LiteLLM rate-limit fields over `base` (absent: unchanged, `null`: removed); `null` when nothing is limited. */
function rateLimitsFrom(
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

/** LiteLLM's rate-limit fields of an entity (`null`: no limit). */
function rateJson(limits: RateLimits | null | undefined) {
  return {
    rpm_limit: limits?.rpmLimit ?? null,
    tpm_limit: limits?.tpmLimit ?? null,
    max_parallel_requests: limits?.maxParallelRequests ?? null,
  };
}

function teamJson(
  team: TeamRecord,
  state: BudgetState | null,
  members: UserRecord[] = [],
  limits: RateLimits | null = null,
) {
  return {
    team_id: team.teamId,
    team_alias: team.teamAlias,
    ...budgetJson(state),
    ...rateJson(limits),
    models: team.models,
    metadata: team.metadata,
    blocked: team.blocked,
    members_with_roles: members.map((u) => ({ user_id: u.userId, user_email: u.userEmail, role: 'user' })),
    created_at: team.createdAt.toISOString(),
  };
}

function userJson(user: UserRecord, state: BudgetState | null, limits: RateLimits | null = null) {
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

function keyJson(key: KeyRecord, state: BudgetState | null, limits: RateLimits | null = null) {
  return {
    token: key.tokenHash,
    key_name: key.keyName,
    key_alias: key.keyAlias,
    user_id: key.userId,
    team_id: key.teamId,
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
    request_id: log.requestId,
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
    metadata: { ...log.metadata, estimated: log.estimated, http_status: log.httpStatus },
  };
}

function startOf(value: string): Date {
  return new Date(value.length === 10 ? `${value}T00:00:00.000Z` : value);
}

/** A date-only end is inclusive of that whole day; a time is taken as given. */
function endOf(value: string): Date {
  return value.length === 10 ? new Date(Date.parse(`${value}T00:00:00.000Z`) + 86_400_000) : new Date(value);
}
