import { randomUUID, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { ManagementApi } from './admin/management-api.js';
import { CapacityWaiters } from './admission/capacity-waiters.js';
import { type Draw, ESCROW_DEFAULTS, Escrow } from './admission/escrow.js';
import {
  boundCall,
  boundNano,
  type CallBound,
  outputTokensFitting,
  setOutputCap,
} from './admission/worst-case.js';
import { BudgetAlerts } from './alerts/budget-alerts.js';
import { BodyReader } from './body-reader.js';
import { nextBudgetResetAt } from './budget-period.js';
import { type GuardLogger, type ResolvedOptions, resolveOptions, type SpendGuardOptions } from './config.js';
import { Dashboard } from './dashboard/dashboard.js';
import { KeyQueries, TeamQueries, UserQueries } from './entity-queries.js';
import { SpendGuardError, StorageConflictError } from './errors.js';
import { timeOrderedId } from './ids.js';
import { assertTagCount, assertText, INPUT_LIMITS } from './input-hygiene.js';
import { hashVirtualKey } from './keys.js';
import { ResponseTap } from './metering/response-meter.js';
import { CallMeter, type TrackOptions, useCallContext } from './metering/track.js';
import { createCallFetch, createGuardFetch } from './metering/upstream-fetch.js';
import { formatFromPath, modelFromPath, type WireFormat } from './metering/wire-formats.js';
import { usdToNano } from './money.js';
import { type CallObservers, createObservers, metricsOf, refusalEvent } from './observability/observers.js';
import type { MetricsEndpoint } from './observability/prometheus-metrics.js';
import { PriceBook, type TokenUsage, type WorstCaseRates } from './pricing/price-book.js';
import { BudgetQueries, SpendQueries } from './queries.js';
import { type RateAdmission, rateLimitedError, rateLimitHeaders } from './rate-limits.js';
import { hasRateLimits, rateBucketsFor } from './storage/rate-limit-rules.js';
import { SpendLogRetention } from './storage/spend-log-retention.js';
import type {
  BudgetInit,
  BudgetState,
  KeyRecord,
  PendingCall,
  RateLimits,
  ScopeRef,
  SpendLogRecord,
  SpendStorage,
  TeamRecord,
  UserRecord,
} from './storage/storage-contract.js';
import {
  GLOBAL_SCOPE_ID,
  isWindowOf,
  memberScopeId,
  modelScopeId,
  scopeKey,
} from './storage/storage-contract.js';
import { StorageGate, type StorageGateStats } from './storage/storage-gate.js';
import { type TempIncrease, tempIncreaseOf, withoutTempIncrease } from './temp-budget.js';

/** A guarded call as the adapters describe it, in framework-neutral terms. */
export interface CallInput {
  method: string;
  path: string;
  /** Reads a request header (case-insensitive). */
  header: (name: string) => string | null | undefined;
  /** The parsed JSON body, or `undefined` when the request had none (unused when `readBody` is given). */
  body?: unknown;
  /** Size of the raw body in bytes, when the adapter read it (saves re-serialising). */
  bodyBytes?: number;
  /**
   * Reads and parses the body; called only once the key in the headers is known to be usable, so
   * that an unauthenticated body is never read (see `guard.bodies`).
   */
  readBody?: () => Promise<{ body: unknown; bytes?: number }>;
}

/** Who a guarded call's headers say is calling, found before its body is read. */
type Identity =
  | { kind: 'master'; tokenHash: string }
  | { kind: 'key'; tokenHash: string; ctx: KeyContext }
  /** Storage is down under `onStorageError: 'allow'`, and this key was seen good: served unreserved. */
  | { kind: 'unresolved'; tokenHash: string; ctx: KeyContext };

/** A response the guard answers itself (a refusal), in framework-neutral terms. */
export interface GuardResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** What is known about the caller once its key is resolved. */
export interface KeyContext {
  key: KeyRecord;
  user: UserRecord | null;
  team: TeamRecord | null;
  /** The scopes this key spends against, key first. */
  scopes: ScopeRef[];
  /** `Key=sk-...abcd`, `User=alice`, `Team=frontend-team`: how a 429 names each scope. */
  labels: Map<string, string>;
  /** The rate limits of the scopes that have any (of any scope kind), checked at every admission. */
  rateLimits: Array<{ scope: ScopeRef; limits: RateLimits }>;
  /** Set when the secret presented was replaced by `/key/regenerate`: it works until then. */
  secretValidUntil: Date | null;
}

/** The finished record of one guarded call (also what the spend log stores). */
export interface CallRecord {
  requestId: string;
  model: string;
  costUsd: number;
  costNano: number;
  usage: TokenUsage;
  estimated: boolean;
  status: 'success' | 'failure';
  httpStatus: number;
  tags: string[];
}

export type AdmitOutcome = { ok: true; call: GuardedCall } | { ok: false; response: GuardResponse };

/** LiteLLM's rate-limit window: rpm and tpm count per minute. */
const RATE_WINDOW_MS = 60_000;

/**
 * The framework-neutral guard: resolves keys, admits calls against budgets, meters what the route
 * answered, prices it, and settles it. Adapters only translate their framework to this.
 */
export class SpendGuard {
  readonly options: ResolvedOptions;
  readonly prices: PriceBook;
  readonly logger: GuardLogger;
  private storageReady: Promise<SpendStorage> | null = null;
  private storageValue: SpendStorage | null = null;
  private readonly keyCache: LRUCache<string, KeyContext>;
  /**
   * End users' rate limits (`false`: none), cached like keys: a call with an end user reads them once
   * per `keyCacheTtlMs`, and `/customer/update` on this instance drops the entry at once.
   */
  /** End users' blocked flag and rate limits, for admission (an end user without a record: neither). */
  private readonly customers: LRUCache<string, EndUserGate>;
  private readonly pending = new Set<Promise<unknown>>();
  /** Key loads in flight, by secret hash; `keyGeneration` counts invalidations. */
  private readonly keyLoads = new Map<string, Promise<KeyContext | null>>();
  private keyGeneration = 0;
  /** The master key's SHA-256 hex, as bytes: compared in constant time with each call's key hash. */
  private readonly masterKeyHash: Buffer | null;
  /** Settlements that could not be written at once (each logged, kept and retried): never silent. */
  settleFailures = 0;
  /** LiteLLM's management API (`/team/new`, `/key/generate`, `/spend/logs`, ...). */
  readonly management: ManagementApi;
  /** Timeouts, failure policy and the settlement retry queue around every storage call. */
  readonly gate: StorageGate;
  /**
   * Every request body the adapters read goes through it: `bodyLimitBytes` per body (413) and
   * `maxBodyBytesInFlight` over all of them at once (503 with `Retry-After`).
   */
  readonly bodies: BodyReader;
  /**
   * A `fetch` to give the provider SDKs a guarded route uses: each upstream call is admitted against
   * the budgets before it is sent and metered as its own row of the request. See `createGuardFetch`.
   * Reading it turns the call context on (see the `callContext` option): read it at start-up, as here.
   * @example const openai = new OpenAI({ fetch: guard.fetch })
   */
  get fetch(): typeof globalThis.fetch {
    useCallContext();
    return this.guardFetch;
  }
  private readonly guardFetch: typeof globalThis.fetch = createGuardFetch(this);
  /** The dashboard at `ui/` of the management router (login, pages, its JSON endpoints). */
  readonly dashboard: Dashboard;
  /** Spend reports from the daily rollups: `guard.spend.report({ groupBy, from, to, granularity, filters })`. */
  readonly spend: SpendQueries = new SpendQueries(this);
  /** Budgets as they stand: `guard.budgets.remaining({ key | user | team })`. */
  readonly budgets: BudgetQueries = new BudgetQueries(this);
  /** Keys with their budgets: `await guard.keys.list({ teamId })`, `guard.keys.get(key)`. */
  readonly keys: KeyQueries = new KeyQueries(this);
  /** Teams with their budgets: `guard.teams.list()`, `guard.teams.get(idOrAlias)`. */
  readonly teams: TeamQueries = new TeamQueries(this);
  /** Users with their budgets: `guard.users.list({ teamId })`, `guard.users.get(userId)`. */
  readonly users: UserQueries = new UserQueries(this);
  /** Budget alert webhooks (the `alerts` option); `null` when not configured. */
  readonly alerts: BudgetAlerts | null;
  /** `spendLogRetentionDays`: `await guard.retention.prune()` deletes the logs past it now. */
  readonly retention: SpendLogRetention;
  /** Where calls are told to `onCall`, `onRefused`, metrics and tracing (see docs/observability.md). */
  readonly observers: CallObservers;
  /**
   * Prometheus metrics (the `metrics` option): `await guard.metrics.scrape()` for `/metrics`, or
   * `await guard.metrics.registry()`. Scraping without the option answers why.
   */
  readonly metrics: MetricsEndpoint;
  private sweepTimer: NodeJS.Timeout | null = null;
  private stopWatching: (() => void) | undefined;
  /**
   * This process's id in the store's heartbeats: its reservations carry it, and once it stops beating
   * another process charges them (see `heartbeatGraceMs`). New at every start.
   */
  readonly processId: string = randomUUID();
  private heartbeatTimer: NodeJS.Timeout | null = null;
  /** Whether calls commit their settlement before their last byte (see `settleBeforeLastByte`). */
  private settlesFirst = false;
  /**
   * Escrow admission (`escrow` option): busy scope sets admitted in memory against leases of their
   * budget (see admission/escrow.ts); `null` when off, in `soft` mode, or on a store without leases.
   */
  escrow: Escrow | null = null;
  private escrowTimer: NodeJS.Timeout | null = null;

  constructor(options: SpendGuardOptions) {
    this.options = resolveOptions(options);
    this.masterKeyHash = this.options.masterKey
      ? Buffer.from(hashVirtualKey(this.options.masterKey), 'latin1')
      : null;
    this.logger = this.options.logger;
    this.bodies = new BodyReader(this.options.bodyLimitBytes, this.options.maxBodyBytesInFlight);
    if (this.options.callContext) useCallContext();
    this.prices = new PriceBook({
      overrides: this.options.modelPrices,
      aliases: this.options.modelAliases,
      table: this.options.priceTable,
      refreshIntervalMs: this.options.priceTableRefreshMs,
      onError: (error) =>
        this.logger.error('could not load the price table; keeping the last good one', error),
      onUnpriced: (model) =>
        this.logger.warn(
          this.options.unpricedModels === 'refuse'
            ? `no price for model '${model}': its calls are refused (price it with modelPrices)`
            : `no price for model '${model}': its calls are recorded at $0, flagged unpriced (price it with modelPrices)`,
        ),
    });
    // Stale entries stay (not served) so that `onStorageError: 'allow'` can still recognise a key.
    // Both caches age on the guard's clock, so that `keyCacheTtlMs` follows an injected one too; read
    // at every check (ttlResolution 0), as a clock a test moves must not be seen a millisecond late.
    const perf = { now: () => this.now().getTime() };
    this.keyCache = new LRUCache({
      max: this.options.keyCacheSize,
      ttl: this.options.keyCacheTtlMs || 1,
      ttlResolution: 0,
      noDeleteOnStaleGet: true,
      perf,
    });
    this.customers = new LRUCache({
      max: this.options.keyCacheSize,
      ttl: this.options.keyCacheTtlMs || 1,
      ttlResolution: 0,
      perf,
    });
    this.management = new ManagementApi(this);
    this.dashboard = new Dashboard(this);
    this.gate = new StorageGate(
      () => this.storage(),
      {
        timeoutMs: this.options.storageTimeoutMs,
        maxPendingSettlements: this.options.maxPendingSettlements,
        settleBatchMs: this.options.settleBatchMs,
        logger: this.logger,
        onSettled: (input, result) => this.alerts?.settled(input, result),
      },
      () => this.storageValue,
    );
    this.alerts = this.options.alerts ? new BudgetAlerts(this, this.options.alerts) : null;
    this.retention = new SpendLogRetention(this, this.options.spendLogRetentionDays ?? null);
    this.observers = createObservers(this, this.options);
    this.metrics = metricsOf(this.observers);
  }

  /** The opened storage (migrations applied). Rejects, every time it is asked, while it cannot open. */
  storage(): Promise<SpendStorage> {
    if (this.storageValue) return Promise.resolve(this.storageValue);
    this.storageReady ??= Promise.resolve(this.options.storage)
      .then(async (s) => {
        await s.init();
        if (this.options.globalBudget) await this.applyGlobalBudget(s, this.options.globalBudget);
        // The first beat before the first reservation: none names a process the store has not seen.
        if (this.beatsHeartbeat(s)) await s.heartbeat(this.processId, new Date());
        this.settlesFirst = this.options.settleBeforeLastByte ?? s.capabilities.commitsInProcess === true;
        this.storageValue = s;
        this.startEscrow(s);
        this.startSweep();
        this.retention.start();
        this.startHeartbeat(s);
        // Keys changed by other instances sharing this store leave this cache at once.
        this.stopWatching = s.watchKeyChanges?.((hash) =>
          hash ? this.invalidateKey(hash) : this.invalidateAllKeys(),
        );
        return s;
      })
      .catch((error: unknown) => {
        this.storageReady = null; // try again on the next request
        throw error;
      });
    return this.storageReady;
  }

  /**
   * The first call after a key's temporary budget increase expired puts its cap back (absolute
   * values, so instances doing it at once agree), then resolves the key again.
   */
  private async endTempIncrease(
    ctx: KeyContext,
    increase: TempIncrease,
    secretHash: string,
  ): Promise<KeyContext> {
    const hash = ctx.key.tokenHash;
    const base = increase.baseMaxBudget === null ? null : Math.round(increase.baseMaxBudget * 1e9);
    await this.gate.call('temporary budget end', (s) =>
      s.updateKey(hash, { metadata: withoutTempIncrease(ctx.key.metadata) }, { maxBudgetNano: base }),
    );
    this.invalidateKey(hash);
    return (await this.resolveKey(secretHash)) ?? ctx;
  }

  /** Creates or redefines the `global` budget counter (its spend stays). */
  private async applyGlobalBudget(
    storage: SpendStorage,
    budget: NonNullable<SpendGuardOptions['globalBudget']>,
  ): Promise<void> {
    const now = this.now();
    const duration = budget.budgetDuration ?? null;
    const init: BudgetInit = {
      maxBudgetNano: budget.maxBudget === null ? null : usdToNano(budget.maxBudget),
      budgetDuration: duration,
      budgetResetAt: duration ? nextBudgetResetAt(duration, now) : null,
      softBudgetNano: budget.softBudget == null ? null : usdToNano(budget.softBudget),
    };
    const scope: ScopeRef = { kind: 'global', id: GLOBAL_SCOPE_ID };
    const [current] = await storage.getBudgets([scope], now);
    if (current) {
      // Keep the running period when the duration did not change.
      const samePeriod = current.budgetDuration === duration;
      await storage.updateBudget(
        scope,
        { ...init, budgetResetAt: samePeriod ? current.budgetResetAt : init.budgetResetAt },
        now,
      );
      return;
    }
    try {
      await storage.insert([{ type: 'budget', scope, budget: init }]);
    } catch (error) {
      if (!(error instanceof StorageConflictError)) throw error;
      await storage.updateBudget(scope, init, now); // another instance created it first
    }
  }

  now(): Date {
    return this.options.now();
  }

  /** Compares a presented credential with the master key in constant time. */
  isMasterKey(presented: string | null): boolean {
    return !!presented && this.isMasterKeyHash(hashVirtualKey(presented));
  }

  /** `isMasterKey` for a key already hashed (SHA-256 hex, as `hashVirtualKey`): one hash per call. */
  private isMasterKeyHash(tokenHash: string): boolean {
    if (!this.masterKeyHash) return false;
    return timingSafeEqual(Buffer.from(tokenHash, 'latin1'), this.masterKeyHash);
  }

  /**
   * Drops a key from the in-process cache (after it was changed): the entry for that hash and every
   * entry cached under another secret of the same key (a regenerated key's current or grace secret).
   */
  invalidateKey(tokenHash: string): void {
    this.keyGeneration += 1; // a load already in flight may have read the old key: it is not cached
    this.keyLoads.clear();
    this.keyCache.delete(tokenHash);
    for (const secret of [...this.keyCache.keys()]) {
      if (this.keyCache.peek(secret, { allowStale: true })?.key.tokenHash === tokenHash) {
        this.keyCache.delete(secret);
      }
    }
  }

  /** Drops every cached key (after a team or user change). */
  invalidateAllKeys(): void {
    this.keyGeneration += 1;
    this.keyLoads.clear();
    this.keyCache.clear();
  }

  /**
   * Resolves the key a presented secret (by its hash) opens, and the scopes it spends against. `null`
   * when no key opens with it (a regenerated key's old secret after its grace period included).
   */
  resolveKey(secretHash: string): Promise<KeyContext | null> {
    const cached = this.keyCache.get(secretHash);
    if (cached) return Promise.resolve(cached);
    // Concurrent misses on one key (its cache entry just expired, under load) share one load.
    let load = this.keyLoads.get(secretHash);
    if (!load) {
      const generation = this.keyGeneration;
      load = this.loadKey(secretHash, generation).finally(() => {
        if (this.keyLoads.get(secretHash) === load) this.keyLoads.delete(secretHash);
      });
      this.keyLoads.set(secretHash, load);
    }
    return load;
  }

  private async loadKey(secretHash: string, generation: number): Promise<KeyContext | null> {
    const loaded = await this.gate.call('key lookup', async (storage) => {
      const found = await storage.findKeyBySecret(secretHash, this.now());
      if (!found) return null;
      const { key } = found;
      const owners: ScopeRef[] = [{ kind: 'key', id: key.tokenHash }];
      if (key.userId) owners.push({ kind: 'user', id: key.userId });
      if (key.teamId) owners.push({ kind: 'team', id: key.teamId });
      if (key.userId && key.teamId)
        owners.push({ kind: 'member', id: memberScopeId(key.teamId, key.userId) });
      // Windows and rate limits are read with the key, in parallel, and cached with it.
      const [user, team, windows, limits] = await Promise.all([
        key.userId ? storage.getUser(key.userId) : null,
        key.teamId ? storage.getTeam(key.teamId) : null,
        storage.listWindows(owners, this.now()),
        storage.getRateLimits(owners),
      ]);
      return { key, user, team, windows, limits, secretValidUntil: found.secretValidUntil };
    });
    if (!loaded) return null;
    const { key, user, team, windows, limits, secretValidUntil } = loaded;
    const scopes: ScopeRef[] = [{ kind: 'key', id: key.tokenHash }];
    const labels = new Map<string, string>([[`key:${key.tokenHash}`, `Key=${key.keyAlias ?? key.keyName}`]]);
    if (user) {
      scopes.push({ kind: 'user', id: user.userId });
      labels.set(`user:${user.userId}`, `User=${user.userId}`);
    }
    if (team) {
      scopes.push({ kind: 'team', id: team.teamId });
      labels.set(`team:${team.teamId}`, `Team=${team.teamAlias ?? team.teamId}`);
    }
    if (user && team) {
      // The user's budget within this team (`max_budget_in_team`), when one was set.
      const member = memberScopeId(team.teamId, user.userId);
      scopes.push({ kind: 'member', id: member });
      labels.set(`member:${member}`, `User=${user.userId} in Team=${team.teamAlias ?? team.teamId}`);
    }
    // Each owner's extra budget windows (`budget_limits`), right after the owners.
    for (const w of windows) {
      const owner = scopes.find((o) => isWindowOf(w.scope.id, o));
      if (!owner) continue;
      scopes.push(w.scope);
      const ownerLabel = labels.get(scopeKey(owner)) ?? `${owner.kind}=${owner.id}`;
      labels.set(scopeKey(w.scope), `${ownerLabel} (${w.budgetDuration} window)`);
    }
    const rateLimits = limits.filter(
      (r) => hasRateLimits(r.limits) && scopes.some((s) => s.kind === r.scope.kind && s.id === r.scope.id),
    );
    const ctx: KeyContext = { key, user, team, scopes, labels, rateLimits, secretValidUntil };
    if (generation === this.keyGeneration) this.keyCache.set(secretHash, ctx);
    return ctx;
  }

  /**
   * A key and its user and team by the key's id (the `apiKeyHash` of its spend logs), for
   * attribution only: also a regenerated key, whose id no longer opens it. `null` when deleted.
   */
  async describeKey(tokenHash: string): Promise<Pick<KeyContext, 'key' | 'user' | 'team'> | null> {
    const cached = await this.resolveKey(tokenHash);
    if (cached?.key.tokenHash === tokenHash) return cached;
    return this.gate.call('key lookup', async (storage) => {
      const key = await storage.getKey(tokenHash);
      if (!key) return null;
      const [user, team] = await Promise.all([
        key.userId ? storage.getUser(key.userId) : null,
        key.teamId ? storage.getTeam(key.teamId) : null,
      ]);
      return { key, user, team };
    });
  }

  /** Whether a team's model allow-list (aliases and wildcards as at admission) grants `model`. */
  teamAllowsModel(model: string, teamModels: string[]): boolean {
    return modelAllowed(model, [], teamModels, this.options.modelAliases);
  }

  /**
   * Refuses (401) a key that may not be used at `now`: blocked (or its team), expired, or a replaced
   * secret past its grace period. The guarded routes and the management API both check keys with it.
   */
  assertKeyUsable(ctx: KeyContext, now: Date): void {
    const { key } = ctx;
    if (key.blocked || ctx.team?.blocked) {
      throw new SpendGuardError(
        'BLOCKED_KEY',
        'Authentication Error, this key is blocked. Unblock it with /key/unblock.',
      );
    }
    if (key.expiresAt && key.expiresAt.getTime() <= now.getTime()) {
      throw new SpendGuardError(
        'EXPIRED_KEY',
        `Authentication Error - Expired Key. Key Expiry time ${key.expiresAt.toISOString()} and current time ${now.toISOString()}`,
      );
    }
    if (ctx.secretValidUntil && ctx.secretValidUntil.getTime() <= now.getTime()) {
      // A replaced secret past its grace no longer names a key, as in LiteLLM: 401, not an expiry.
      throw new SpendGuardError(
        'INVALID_KEY',
        `Authentication Error - this key was regenerated and its grace period ended at ${ctx.secretValidUntil.toISOString()}. Use the new key.`,
      );
    }
  }

  /**
   * Steps 1 and 2 of the pipeline: identify the key, then reserve the call's worst-case cost on
   * every scope at once. A refusal comes back as the response to send; the route must not run.
   */
  async admit(input: CallInput): Promise<AdmitOutcome> {
    const started = this.observers.active ? performance.now() : 0;
    let identity: Identity | null = null;
    try {
      // The key first, from the headers: an unauthenticated body is refused unread.
      identity = await this.identify(input.header, this.now());
      if (input.readBody) {
        const read = await input.readBody();
        input = { ...input, body: read.body, bodyBytes: read.bytes };
      }
      const call = await this.admitOrThrow(input, identity);
      call.meter.prepare(input);
      if (this.observers.active) {
        call.admissionMs = performance.now() - started;
        this.observers.admitted();
      }
      return { ok: true, call };
    } catch (error) {
      const response = this.errorResponse(error);
      if (this.observers.active) {
        const ctx = identity && identity.kind !== 'master' ? identity.ctx : null;
        this.observers.refused(refusalEvent(this, error, response, input, identity?.tokenHash ?? null, ctx));
      }
      return { ok: false, response };
    }
  }

  /** Any error as the JSON response the adapters send: our own errors as they are, others as 503/500. */
  errorResponse(error: unknown): GuardResponse {
    if (error instanceof SpendGuardError) {
      if (error.code === 'STORAGE_UNAVAILABLE') this.logStorageError(error);
      return { status: error.status, headers: error.headers, body: error.toJSON() };
    }
    this.logger.error('internal error while guarding a call; refusing it', error);
    const e = new SpendGuardError('INTERNAL', 'spendguard failed to process this request');
    return { status: e.status, headers: {}, body: e.toJSON() };
  }

  private lastStorageLog = 0;
  /** Logs storage failures, at most one line every 5 s during an outage. */
  private logStorageError(error: SpendGuardError): void {
    const now = Date.now();
    if (now - this.lastStorageLog < 5_000) return;
    this.lastStorageLog = now;
    this.logger.error(
      `storage unavailable (onStorageError: '${this.options.onStorageError}'; ${this.gate.stats.storageErrors} storage errors so far)`,
      error.cause ?? error,
    );
  }

  /** True when the failure is storage's and the policy says to serve anyway. */
  private servesThrough(error: unknown): boolean {
    const allow =
      this.options.onStorageError === 'allow' &&
      error instanceof SpendGuardError &&
      error.code === 'STORAGE_UNAVAILABLE';
    if (allow) this.logStorageError(error);
    return allow;
  }

  /**
   * Step 1 from the headers alone: the key presented, resolved and checked usable (401 otherwise),
   * before anything reads the body.
   */
  private async identify(header: CallInput['header'], now: Date): Promise<Identity> {
    const tokenHash = hashVirtualKey(readPresentedKey(header));
    if (this.isMasterKeyHash(tokenHash)) return { kind: 'master', tokenHash };
    let ctx: KeyContext | null;
    try {
      ctx = await this.resolveKey(tokenHash);
    } catch (error) {
      if (!this.servesThrough(error)) throw error;
      // Storage is down and the policy is 'allow': only a key this process resolved before, usable
      // and within its budgets when last seen, is served (unreserved); any other gets the 503.
      const seen = this.keyCache.get(tokenHash, { allowStale: true }) ?? null;
      if (!seen || !this.servableWhileDown(seen, now)) throw error;
      return { kind: 'unresolved', tokenHash, ctx: seen };
    }
    if (!ctx)
      throw new SpendGuardError('INVALID_KEY', 'Authentication Error, Invalid proxy server token passed.');
    this.assertKeyUsable(ctx, now);
    return { kind: 'key', tokenHash, ctx };
  }

  private async admitOrThrow(input: CallInput, identity: Identity): Promise<GuardedCall> {
    const startTime = this.now();
    const body = isPlainObject(input.body) ? input.body : {};
    const model = typeof body.model === 'string' ? body.model : (modelFromPath(input.path) ?? '');
    const tags = readTags(body, input.header);
    const endUserRef = readEndUser(body, input.header);
    const endUser = endUserRef?.id ?? null;
    // Both reach storage (a scope id, a spend-log field): refused here if no store can keep them as given.
    if (model) assertText(model, 'model', INPUT_LIMITS.nameLength);
    if (endUserRef) assertText(endUserRef.id, endUserRef.field);

    const { tokenHash } = identity;
    let ctx: KeyContext;
    if (identity.kind === 'master') {
      // The master key has no budget of its own, but its calls are attributed to and enforced against
      // every scope that applies to them: the end user, the tags, the global budget.
      ctx = this.masterContext(tokenHash);
    } else if (identity.kind === 'unresolved') {
      ctx = identity.ctx;
      return this.unreservedCall(ctx, { startTime, model, endUser, body, tags: withKeyTags(tags, ctx) });
    } else {
      ctx = identity.ctx;
      const increase = tempIncreaseOf(ctx.key);
      if (increase && increase.expiresAt <= startTime)
        ctx = await this.endTempIncrease(ctx, increase, tokenHash);
      const { key } = ctx;
      if (model && !modelAllowed(model, key.models, ctx.team?.models ?? [], this.options.modelAliases)) {
        throw new SpendGuardError(
          'MODEL_NOT_ALLOWED',
          `Authentication Error, key not allowed to access model. This key can only access models=${JSON.stringify(key.models.length ? key.models : ctx.team?.models)}. Tried to access ${model}`,
          { param: 'model' },
        );
      }
    }
    const allTags = withKeyTags(tags, ctx);
    const price = model ? this.prices.resolve(model) : undefined;
    if (model && !price && this.options.unpricedModels === 'refuse') {
      throw new SpendGuardError(
        'UNPRICED_MODEL',
        `Model '${model}' has no price in the price table, so no budget could bound this call. Price it with the modelPrices option (e.g. modelPrices: { '${model}': { input_cost_per_token: 3e-6, output_cost_per_token: 1.5e-5 } }; 0 is allowed), map it with modelAliases, or set unpricedModels: 'allow' to serve it unpriced.`,
        { param: 'model' },
      );
    }

    // A blocked end user (`/customer/block`) is refused as LiteLLM does, before anything is counted.
    const endUserGate = endUser
      ? await this.endUserGate(endUser).catch((error: unknown) => {
          if (!this.servesThrough(error)) throw error;
          return null; // storage is down under 'allow': served, as an end user not known
        })
      : null;
    if (endUserGate?.blocked) {
      throw new SpendGuardError('BAD_REQUEST', `User blocked from making LLM API Calls. User=${endUser}`);
    }
    // Rate limits before the budget: a call refused here reserves nothing and costs nothing.
    const endUserLimits = endUserGate?.limits ?? null;
    const rate =
      ctx.rateLimits.length > 0 || endUserLimits
        ? await this.acquireRateLimits(ctx, model, startTime, endUser, endUserLimits)
        : null; // nothing can limit this call: no storage call, no promise
    try {
      return await this.reserveBudget(input, ctx, { startTime, model, endUser, body, tags: allTags, rate });
    } catch (error) {
      if (rate) this.releaseRateLimits(rate);
      throw error;
    }
  }

  /** The master key's context: no key, user or team budget; end user, tags, model and global apply. */
  private masterContext(tokenHash: string): KeyContext {
    if (this.masterCtx?.key.tokenHash === tokenHash) return this.masterCtx;
    const key: KeyRecord = {
      tokenHash,
      keyName: 'master key',
      keyAlias: 'master key',
      userId: null,
      teamId: null,
      models: [],
      tags: [],
      metadata: {},
      blocked: false,
      expiresAt: null,
      createdAt: new Date(0),
    };
    this.masterCtx = {
      key,
      user: null,
      team: null,
      scopes: [],
      labels: new Map([[`key:${tokenHash}`, 'Key=master key']]),
      rateLimits: [],
      secretValidUntil: null,
    };
    return this.masterCtx;
  }
  private masterCtx: KeyContext | null = null;

  /**
   * Under `onStorageError: 'allow'`, whether a key seen before may be served while storage is down:
   * usable now (not blocked, not expired), and every budget it spends against had room when its last
   * call was admitted.
   */
  private servableWhileDown(ctx: KeyContext, now: Date): boolean {
    try {
      this.assertKeyUsable(ctx, now);
    } catch {
      return false;
    }
    const seen = this.lastSeen.get(ctx.key.tokenHash);
    if (!seen?.admitted) return false;
    return seen.states.every((s) => s.maxBudgetNano === null || s.spendNano < s.maxBudgetNano);
  }

  /** A call served without a reservation (storage down under 'allow'), attributed as well as known. */
  private unreservedCall(
    ctx: KeyContext,
    o: {
      startTime: Date;
      model: string;
      endUser: string | null;
      body: Record<string, unknown>;
      tags: string[];
    },
  ): GuardedCall {
    const requestId = timeOrderedId();
    return new GuardedCall(this, {
      requestId,
      startTime: o.startTime,
      model: o.model,
      tags: o.tags,
      endUser: o.endUser,
      body: o.body,
      keyHash: ctx.key.tokenHash,
      ctx,
      reservationId: null,
      reservedNano: 0,
      scopes: this.callScopes(ctx, o.model, o.endUser, o.tags),
      states: [],
      rate: null,
      outputLowered: null,
      unpriced: o.model !== '' && !this.prices.resolve(o.model),
    });
  }

  /**
   * How each key's last admission went and what its budgets stood at then (kept under 'allow' only):
   * during an outage only a key last admitted with room is served.
   */
  private readonly lastSeen = new LRUCache<string, { admitted: boolean; states: BudgetState[] }>({
    max: 10_000,
  });

  /** Drops an end user's cached blocked flag and rate limits (after `/customer/update`, `/customer/block`). */
  invalidateCustomer(endUserId: string): void {
    this.customers.delete(endUserId);
  }

  /** Drops every end user's cached gate (after a budget tier's limits changed). */
  invalidateAllCustomers(): void {
    this.customers.clear();
  }

  /** An end user's blocked flag and rate limits (cached for `keyCacheTtlMs`). */
  private async endUserGate(endUser: string): Promise<EndUserGate> {
    const cached = this.customers.get(endUser);
    if (cached) return cached;
    const [[found], record] = await this.gate.call('end-user lookup', (s) =>
      Promise.all([s.getRateLimits([{ kind: 'customer', id: endUser }]), s.getCustomer(endUser)]),
    );
    // LiteLLM upserts an end user on its first call, so /customer/info and /customer/list find it; its
    // counter then tracks its spend from that first call on (no cap until one is set).
    if (!record) {
      const now = this.now();
      const first = this.options.defaultEndUserBudget;
      const budget: BudgetInit = {
        maxBudgetNano: first ? usdToNano(first.maxBudget) : null,
        budgetDuration: first?.budgetDuration ?? null,
        budgetResetAt: first?.budgetDuration ? nextBudgetResetAt(first.budgetDuration, now) : null,
        softBudgetNano: null,
      };
      const tier = this.options.defaultEndUserBudgetId ?? null;
      await this.gate.call('end-user upsert', (s) => upsertCustomer(s, endUser, now, budget, tier));
      // Linked to the default tier: its rate limits are the end user's from this first call on.
      if (tier) return this.endUserGate(endUser);
    }
    const gate: EndUserGate = {
      blocked: record?.blocked === true,
      limits: found && hasRateLimits(found.limits) ? found.limits : null,
    };
    this.customers.set(endUser, gate);
    return gate;
  }

  /**
   * Checks and counts the call on the rate limits of every scope that has any (one guarded write,
   * none when no scope has limits). `null`: nothing to count (or storage is down under 'allow').
   */
  private async acquireRateLimits(
    ctx: KeyContext,
    model: string,
    now: Date,
    endUser: string | null,
    endUserLimits: RateLimits | null,
  ): Promise<RateAdmission | null> {
    let scoped = ctx.rateLimits;
    let labels = ctx.labels;
    if (endUser && endUserLimits) {
      scoped = [...scoped, { scope: { kind: 'customer', id: endUser }, limits: endUserLimits }];
      labels = new Map(labels).set(`customer:${endUser}`, `EndUser=${endUser}`);
    }
    if (scoped.length === 0) return null;
    const buckets = rateBucketsFor(scoped, model);
    if (buckets.length === 0) return null;
    // Named after this process, so that its leases are freed within seconds should it die.
    const leaseId = `${this.processId}:${randomUUID()}`;
    let result: Awaited<ReturnType<SpendStorage['acquireRate']>>;
    try {
      result = await this.gate.call('rate limit', (s) =>
        s.acquireRate({
          leaseId,
          buckets,
          now,
          windowMs: RATE_WINDOW_MS,
          leaseExpiresAt: new Date(now.getTime() + this.options.reservationTtlMs),
        }),
      );
    } catch (error) {
      if (!this.servesThrough(error)) throw error;
      return null;
    }
    if (!result.ok) throw rateLimitedError(labels, result.refused, now);
    return { leaseId, buckets, states: result.states };
  }

  /** Gives back the call's parallel slots (its admission failed after the rate limits let it in). */
  private releaseRateLimits(rate: RateAdmission): void {
    if (!rate.buckets.some((b) => b.metric === 'parallel')) return;
    void this.track(
      this.gate
        .call('rate release', (s) =>
          s.settleRate({
            leaseId: rate.leaseId,
            buckets: [],
            tokens: 0,
            now: this.now(),
            windowMs: RATE_WINDOW_MS,
          }),
        )
        // Never silent; the leases come back after the TTL anyway.
        .catch((error: unknown) =>
          this.logger.error("could not release a refused call's parallel slots", error),
        ),
    );
  }

  /** Adds a settled call's tokens to its tpm buckets and releases its parallel slots. */
  async settleRateLimits(rate: RateAdmission, tokens: number): Promise<void> {
    const tpm = rate.buckets.filter((b) => b.metric === 'tpm');
    if (tpm.length === 0 && !rate.buckets.some((b) => b.metric === 'parallel')) return;
    try {
      await this.gate.call('rate settle', (s) =>
        s.settleRate({
          leaseId: rate.leaseId,
          buckets: tpm,
          tokens,
          now: this.now(),
          windowMs: RATE_WINDOW_MS,
        }),
      );
    } catch (error) {
      // Not money: tokens not counted for one window, leases back after the TTL. Never silent.
      this.logger.error('could not record a call on its rate limits', error);
    }
  }

  private async reserveBudget(
    input: CallInput,
    ctx: KeyContext,
    o: {
      startTime: Date;
      model: string;
      endUser: string | null;
      body: Record<string, unknown>;
      tags: string[];
      rate: RateAdmission | null;
    },
  ): Promise<GuardedCall> {
    const { startTime, model, endUser, body, rate } = o;
    const { key } = ctx;
    // Spend is logged under the key's id, whichever of its secrets (new or in grace) was presented.
    const tokenHash = key.tokenHash;
    const allTags = o.tags;
    const callScopes = this.callScopes(ctx, model, endUser, allTags);
    // The reservation is the request's own (one per call): its id is the request id.
    const requestId = timeOrderedId();
    const reservationId = requestId;
    const unpriced = model !== '' && !this.prices.resolve(model);
    // Built field by field, in CallState's order (an object spread here cost more than the rest of
    // the call's construction).
    const call = (
      reserved: string | null,
      reservedNano: number,
      states: BudgetState[],
      outputLowered: number | null,
    ) =>
      new GuardedCall(this, {
        requestId,
        startTime,
        model,
        tags: allTags,
        endUser,
        body,
        keyHash: tokenHash,
        ctx,
        reservationId: reserved,
        reservedNano,
        scopes: callScopes,
        states,
        rate,
        outputLowered,
        unpriced,
      });
    const mode = this.options.enforcement;
    const reserve = (amountNano: number) =>
      this.gate.reserve({
        reservationId,
        scopes: callScopes,
        amountNano,
        now: startTime,
        expiresAt: new Date(startTime.getTime() + this.options.reservationTtlMs),
        mode,
        processId: this.processId,
        pending: pendingOf(requestId, body, tokenHash, ctx, model, endUser, allTags, startTime),
      });
    const format = formatFromPath(input.path);
    let estimate = this.worstCase(model, format, body, input.bodyBytes, false);
    let amountNano = estimate ? boundNano(estimate.bound, estimate.rates) : 1;
    // Escrow: a busy scope set far from its caps is admitted in memory, against this process's lease.
    const escrow = estimate ? this.escrow : null;
    const leaseKey = escrow ? Escrow.keyOf(callScopes) : '';
    if (escrow) {
      const draw =
        escrow.take(leaseKey, amountNano) ??
        (await escrow.acquire(
          leaseKey,
          callScopes,
          amountNano,
          pendingOf(requestId, body, tokenHash, ctx, model, endUser, allTags, startTime),
        ));
      if (draw) {
        const states = escrow.statesFor(draw.lease);
        if (this.options.onStorageError === 'allow') this.lastSeen.set(tokenHash, { admitted: true, states });
        const admitted = call(null, amountNano, states, null);
        admitted.escrowDraw = draw;
        return admitted;
      }
    }
    let lowered: number | null = null;
    let refusal: RefusalDetail | null = null;
    let result: Awaited<ReturnType<typeof reserve>>;
    try {
      result = await reserve(amountNano);
      if (!result.ok && estimate && mode === 'strict') {
        // Near a cap: count exactly, then wait for calls in flight or lower the output cap, and
        // refuse only what cannot fit at all.
        const precise = this.worstCase(model, format, body, input.bodyBytes, true)!;
        estimate = precise;
        const fitted = await this.fitToBudget(precise, reserve);
        result = fitted.result;
        amountNano = fitted.amountNano;
        refusal = fitted.refusal;
        if (fitted.outputTokens !== null && result.ok) {
          lowered = fitted.outputTokens;
          setOutputCap(body, precise.bound.outputField!, lowered);
        }
      }
    } catch (error) {
      if (!this.servesThrough(error)) throw error;
      if (!this.servableWhileDown(ctx, startTime)) throw error;
      return call(null, 0, [], null);
    }
    const allow = this.options.onStorageError === 'allow';
    if (!result.ok) {
      if (allow) this.lastSeen.set(tokenHash, { admitted: false, states: [result.refused] });
      throw this.budgetExceeded(ctx, result.refused, refusal);
    }
    if (allow) this.lastSeen.set(tokenHash, { admitted: true, states: result.states });
    if (escrow) escrow.observed(leaseKey, result.states);
    return call(reservationId, amountNano, result.states, lowered);
  }

  /**
   * A call's worst case, or `null` for a call without a priced model (then 1 nano-dollar is reserved,
   * so that a spent budget still refuses it).
   */
  private worstCase(
    model: string,
    format: WireFormat | null,
    body: Record<string, unknown>,
    bodyBytes: number | undefined,
    precise: boolean,
  ): { bound: CallBound; rates: WorstCaseRates } | null {
    const price = model ? this.prices.resolve(model) : undefined;
    if (!price) return null;
    const bound = boundCall(model, format, body, price, {
      defaultMaxOutputTokens: this.options.defaultMaxOutputTokens,
      precise,
      bodyBytes,
    });
    const rates = this.prices.worstCaseRates(model, {
      promptTokens: bound.inputTokens + bound.audioTokens,
      serviceTier: bound.serviceTier,
      cacheWrites: bound.cacheWrites,
      audioOutput: bound.audioOutput,
    })!;
    return { bound, rates };
  }

  /**
   * Strict mode, after a refusal: reserves the precise worst case if it fits; else, while it would fit
   * once the calls in flight settle, waits for them (up to `budgetWaitMs`); else lowers the output cap
   * to what fits (not below `minOutputTokens`). What comes back refused cannot fit.
   */
  private async fitToBudget(
    estimate: { bound: CallBound; rates: WorstCaseRates },
    reserve: (amountNano: number) => ReturnType<StorageGate['reserve']>,
  ): Promise<{
    result: Awaited<ReturnType<StorageGate['reserve']>>;
    amountNano: number;
    outputTokens: number | null;
    refusal: RefusalDetail | null;
  }> {
    const { bound, rates } = estimate;
    const full = boundNano(bound, rates);
    const floor = this.options.minOutputTokens;
    const canLower = bound.outputField !== null && bound.outputTokens > floor;
    const started = performance.now();
    const deadline = started + this.options.budgetWaitMs;
    let result = await reserve(full);
    let amountNano = full;
    // The output cap only ever comes down (another scope may refuse what the first one took).
    let tokens = bound.outputTokens;
    let waits = 0;
    let misses = 0;
    while (!result.ok && misses < 16) {
      const state = result.refused;
      if (state.maxBudgetNano === null) break;
      const roomIfSettled = state.maxBudgetNano - state.spendNano;
      const roomNow = roomIfSettled - state.reservedNano;
      if (boundNano(bound, rates, tokens) > roomIfSettled) {
        // It can never fit this budget at this cap: lower the cap to what the budget has left.
        if (!canLower) break;
        const fitsSettled = Math.min(tokens, outputTokensFitting(bound, rates, roomIfSettled));
        if (fitsSettled < floor) break;
        const fitsNow = Math.min(tokens, outputTokensFitting(bound, rates, roomNow));
        tokens = fitsNow >= floor ? fitsNow : fitsSettled;
      }
      const want = boundNano(bound, rates, tokens);
      if (want > roomNow) {
        // It fits once calls in flight settle: wait for them (a settlement here wakes it at once;
        // other instances' are polled), then try again.
        if (performance.now() >= deadline) break;
        await this.capacity.wait(scopeKey(state.scope), want - roomNow, waits++, deadline);
      } else {
        misses += 1; // it should have fitted: raced by another call, or another scope refused
      }
      amountNano = want;
      result = await reserve(want);
    }
    const outputTokens = result.ok && tokens < bound.outputTokens ? tokens : null;
    if (result.ok) return { result, amountNano, outputTokens, refusal: null };
    return {
      result,
      amountNano,
      outputTokens: null,
      refusal: {
        worstNano: full,
        floorNano: canLower ? boundNano(bound, rates, floor) : null,
        waitedMs: waits > 0 ? Math.round(performance.now() - started) : 0,
      },
    };
  }

  /** Calls waiting for capacity on a budget (see `budgetWaitMs`). */
  readonly capacity = new CapacityWaiters();

  /** Charges unsettled reservations past their TTL at their estimate (also run on a timer). */
  async sweepExpiredReservations(): Promise<number> {
    const expired = await this.gate.call('reservation sweep', (s) => s.expireReservations(this.now()));
    if (expired > 0) {
      this.logger.warn(`charged ${expired} reservations left unsettled past their TTL at their estimates`);
    }
    return expired;
  }

  /** Heartbeats matter where other processes share the store (an in-memory one dies with us). */
  private beatsHeartbeat(storage: SpendStorage): boolean {
    return this.options.heartbeatGraceMs > 0 && storage.capabilities.sharedAcrossProcesses;
  }

  /**
   * Beats every quarter of `heartbeatGraceMs`, then charges what processes silent for longer left
   * open. Each beat is written before the sweep reads the others', so this process is never stale to
   * itself; a tick starts only once the previous one is done. A process sweeps only once it has itself
   * beaten without a failure for a whole grace period: after an outage of the store every live process
   * has had that long to beat again before anyone takes its silence for a death.
   */
  private startHeartbeat(storage: SpendStorage): void {
    if (!this.beatsHeartbeat(storage) || this.heartbeatTimer) return;
    const grace = this.options.heartbeatGraceMs;
    let beatingSince: number | null = Date.now(); // the first beat was written as the store opened
    const tick = async () => {
      try {
        const at = new Date();
        try {
          await this.gate.call('heartbeat', (s) => s.heartbeat(this.processId, at));
        } catch (error) {
          beatingSince = null;
          throw error;
        }
        beatingSince ??= at.getTime();
        if (at.getTime() - beatingSince >= grace) {
          await this.settleDeadProcesses(new Date(at.getTime() - grace));
        }
      } catch (error) {
        if (error instanceof SpendGuardError && error.code === 'STORAGE_UNAVAILABLE')
          this.logStorageError(error);
        else this.logger.error('heartbeat or dead-process sweep failed', error);
      }
      if (this.heartbeatTimer) this.heartbeatTimer = schedule();
    };
    const schedule = () => {
      const timer = setTimeout(() => void tick(), Math.max(250, Math.floor(grace / 4)));
      timer.unref();
      return timer;
    };
    this.heartbeatTimer = schedule();
  }

  /**
   * Charges, at their estimate, the open reservations of every process that last beat at or before
   * `staleBefore` (the heartbeat timer runs this; a test or an operator may too).
   */
  async settleDeadProcesses(staleBefore: Date): Promise<number> {
    const settled = await this.gate.call('dead-process sweep', (s) =>
      s.settleDeadProcesses(staleBefore, this.now()),
    );
    if (settled > 0) {
      this.logger.warn(
        `charged ${settled} reservations of processes whose heartbeat stopped at their estimates`,
      );
    }
    return settled;
  }

  /** True when calls commit their settlement before their response's last byte (`settleBeforeLastByte`). */
  get settlesBeforeLastByte(): boolean {
    return this.settlesFirst;
  }

  private startEscrow(storage: SpendStorage): void {
    if (!this.options.escrow || this.options.enforcement === 'soft' || !storage.setLease || this.escrow)
      return;
    const leaseMs = ESCROW_DEFAULTS.leaseMs;
    this.escrow = new Escrow({
      ...ESCROW_DEFAULTS,
      processId: this.processId,
      now: () => this.now().getTime(),
      write: (input) => this.gate.call('budget lease', (s) => s.setLease!(input)),
      storeTtlMs: this.options.reservationTtlMs,
      onError: (error) => {
        if (error instanceof SpendGuardError && error.code === 'STORAGE_UNAVAILABLE')
          this.logStorageError(error);
        else this.logger.error('could not write a budget lease; its calls reserve their own', error);
      },
    });
    // Leases no call drew from for a lease time go back to the budget.
    this.escrowTimer = setInterval(() => void this.escrow?.returnIdle(leaseMs), leaseMs);
    this.escrowTimer.unref();
  }

  private startSweep(): void {
    const every = this.options.reservationSweepMs;
    if (every === 0 || this.sweepTimer) return;
    this.sweepTimer = setInterval(() => {
      this.sweepExpiredReservations().catch(() => {}); // a failure is counted and logged by the gate
    }, every);
    this.sweepTimer.unref();
  }

  /** Counters for metrics: storage errors, settlements pending / recovered / dropped. */
  stats(): StorageGateStats & { settleFailures: number } {
    return { ...this.gate.stats, settleFailures: this.settleFailures };
  }

  /**
   * Every scope a call spends against: the key's own (key, user, team, member), then the optional
   * ones of this call (the key's budget for this model, the end user, each tag, the global budget).
   * Optional scopes without a budget are skipped by storage.
   */
  private callScopes(ctx: KeyContext, model: string, endUser: string | null, tags: string[]): ScopeRef[] {
    const scopes = [...ctx.scopes];
    if (model) scopes.push({ kind: 'model', id: modelScopeId(ctx.key.tokenHash, model) });
    if (endUser) scopes.push({ kind: 'customer', id: endUser });
    for (const tag of tags) scopes.push({ kind: 'tag', id: tag });
    scopes.push({ kind: 'global', id: GLOBAL_SCOPE_ID });
    return scopes;
  }

  /**
   * The 429 for a budget that cannot take a call: LiteLLM's message first (its clients match on it),
   * then the truth of it: what is in flight, what this call could cost, and what to do.
   */
  private budgetExceeded(
    ctx: KeyContext,
    refused: BudgetState,
    detail: RefusalDetail | null,
  ): SpendGuardError {
    const label = ctx.labels.get(scopeKey(refused.scope)) ?? scopeLabel(ctx, refused.scope);
    const spend = pyFloat(refused.spendNano / 1e9);
    const max = pyFloat((refused.maxBudgetNano ?? 0) / 1e9);
    const headers: Record<string, string> = {};
    if (refused.budgetResetAt) {
      headers['retry-after'] = String(
        Math.max(1, Math.ceil((refused.budgetResetAt.getTime() - this.now().getTime()) / 1000)),
      );
    }
    let message = `Budget has been exceeded! ${label} Current cost: ${spend}, Max budget: ${max}`;
    if (detail) {
      const left = Math.max(0, (refused.maxBudgetNano ?? 0) - refused.spendNano);
      message +=
        `. In flight: ${pyFloat(refused.reservedNano / 1e9)}; this call's worst case: ${pyFloat(detail.worstNano / 1e9)}` +
        (detail.floorNano !== null
          ? ` (${pyFloat(detail.floorNano / 1e9)} with its output cut to the minimum)`
          : '') +
        `; left once the calls in flight settle: ${pyFloat(left / 1e9)}` +
        (detail.waitedMs > 0 ? `; waited ${detail.waitedMs} ms for calls in flight` : '') +
        '. Lower max_tokens or shorten the prompt, wait for the budget to reset, or raise max_budget.';
      headers['x-spendguard-call-worst-case'] = String(detail.worstNano / 1e9);
      headers['x-spendguard-budget-in-flight'] = String(refused.reservedNano / 1e9);
    }
    return new SpendGuardError('BUDGET_EXCEEDED', message, { headers, scope: refused.scope });
  }

  /**
   * Upper bound of a call's cost in nano-dollars, as admission computes it (never below 1): `precise`
   * counts text with the tokenizer and reads media sizes; otherwise text is bounded by bytes. `path`
   * selects the wire format's rules (e.g. `/v1/messages`).
   */
  estimateNano(
    model: string,
    body: Record<string, unknown>,
    bodyBytes: number | undefined,
    precise: boolean,
    path?: string,
  ): number {
    const estimate = this.worstCase(model, formatFromPath(path), body, bodyBytes, precise);
    return estimate ? boundNano(estimate.bound, estimate.rates) : 1;
  }

  /** Keeps a settlement promise alive until `close()` so shutdown never drops spend. */
  track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p)).catch(() => {});
    return p;
  }

  /**
   * A storage call of the management API, the dashboard or a typed query: run after the settlements
   * of the calls already finished are written, so that it sees them (read your writes).
   */
  async read<T>(what: string, fn: (storage: SpendStorage) => Promise<T>): Promise<T> {
    await this.flush();
    return this.gate.call(what, fn);
  }

  /** Waits until every settlement in flight is written (or has failed and been logged). */
  async flush(): Promise<void> {
    while (this.pending.size > 0) {
      this.gate.writeBatch();
      await Promise.allSettled([...this.pending]);
    }
  }

  /** Waits for in-flight settlements, retries pending ones (up to `shutdownTimeoutMs`), then closes storage. */
  async close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    // No more beats: what this process still holds after the flush is charged by the others.
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.stopWatching?.();
    this.retention.stop();
    this.prices.close();
    await this.flush();
    if (this.escrowTimer) clearInterval(this.escrowTimer);
    this.escrowTimer = null;
    await this.escrow?.close(); // what the leases hold beyond the calls settled goes back
    await this.gate.flush(this.options.shutdownTimeoutMs);
    await this.alerts?.close(this.options.shutdownTimeoutMs);
    if (this.storageValue) await this.storageValue.close();
  }
}

/** Why a budget refused a call in strict mode, for the 429's message. */
interface RefusalDetail {
  /** The call's precise worst case at the output cap it asked for. */
  worstNano: number;
  /** Its worst case at `minOutputTokens`, when its output cap could be lowered. */
  floorNano: number | null;
  /** How long it waited for calls in flight. */
  waitedMs: number;
}

/** What admission needs of an end user: `/customer/block`'s flag and the end user's rate limits. */
interface EndUserGate {
  blocked: boolean;
  limits: RateLimits | null;
}

interface CallState {
  requestId: string;
  startTime: Date;
  model: string;
  tags: string[];
  endUser: string | null;
  body: Record<string, unknown>;
  keyHash: string;
  ctx: KeyContext | null;
  reservationId: string | null;
  /** What the reservation holds (0 without one). */
  reservedNano: number;
  scopes: ScopeRef[];
  states: BudgetState[];
  /** The rate-limit buckets the call was counted on, `null` when none applies. */
  rate: RateAdmission | null;
  /** The output cap admission lowered the request to, so that its worst case fits; `null`: not lowered. */
  outputLowered: number | null;
  /** The model has no price (served under `unpricedModels: 'allow'`): recorded at $0, flagged. */
  unpriced: boolean;
}

/**
 * One admitted call, from admission to settlement. The adapter sets `responseHeaders` before the
 * route runs, feeds what the route writes to `tap`, adds `costHeaders()` when the body is complete
 * before headers go out, and calls `finish()` exactly once when the response is done or cut.
 */
export class GuardedCall {
  readonly tap: ResponseTap;
  /** Context, child calls (`guard.fetch`, `track()`), wire format and estimates: see `metering/track.ts`. */
  readonly meter: CallMeter;
  /** Headers for the response, known at admission. */
  readonly responseHeaders: Record<string, string>;
  private finished: Promise<CallRecord> | null = null;
  private priced: { record: Omit<CallRecord, 'status' | 'httpStatus'> } | null = null;
  /** Admitted in memory from this process's lease (escrow) rather than by a reservation of its own. */
  escrowDraw: Draw | null = null;

  constructor(
    private readonly guard: SpendGuard,
    readonly state: CallState,
  ) {
    this.tap = new ResponseTap(guard.options.maxMeteredBodyBytes);
    this.meter = new CallMeter(this, guard, spawnChildCall);
    this.responseHeaders = { 'x-litellm-call-id': state.requestId };
    const keyState = state.states.find((s) => s.scope.kind === 'key');
    if (keyState) {
      this.responseHeaders['x-litellm-key-spend'] = String(keyState.spendNano / 1e9);
      if (keyState.maxBudgetNano !== null) {
        this.responseHeaders['x-litellm-key-max-budget'] = String(keyState.maxBudgetNano / 1e9);
      }
    }
    let tightest: number | null = null;
    for (const s of state.states) {
      if (s.maxBudgetNano === null) continue;
      const left = s.maxBudgetNano - s.spendNano - s.reservedNano;
      if (tightest === null || left < tightest) tightest = left;
    }
    if (tightest !== null)
      this.responseHeaders['x-spendguard-budget-remaining'] = String(Math.max(0, tightest) / 1e9);
    if (state.rate) Object.assign(this.responseHeaders, rateLimitHeaders(state.rate.states, state.startTime));
    if (state.outputLowered !== null) {
      this.responseHeaders['x-spendguard-output-tokens-lowered'] = String(state.outputLowered);
    }
    if (state.unpriced) this.responseHeaders['x-spendguard-unpriced-model'] = state.model;
  }

  get requestId(): string {
    return this.state.requestId;
  }
  get key(): KeyContext | null {
    return this.state.ctx;
  }

  /**
   * The request body as the guard rewrote it (JSON text; e.g. a streamed chat completion asked for
   * its usage), or `null` when unchanged. The adapter makes the route see this one.
   */
  get rewrittenBody(): string | null {
    return this.meter.rewrittenBody;
  }

  /** Runs the route in this call's context, so that `guard.fetch` and `track()` attribute to it. */
  run<T>(fn: () => T): T {
    return this.meter.run(fn);
  }

  private ownFetch: typeof globalThis.fetch | null = null;
  /**
   * This call's own `fetch`, for the provider SDK the route calls: each upstream call is admitted
   * against the budgets first and metered as its own row of this call, as `guard.fetch` does, but
   * with no AsyncLocalStorage context to find the call (which costs every promise of the process).
   * @example new OpenAI({ apiKey, fetch: res.locals.spendguard.fetch })
   */
  get fetch(): typeof globalThis.fetch {
    this.ownFetch ??= createCallFetch(this.guard, this);
    return this.ownFetch;
  }

  /**
   * Records usage the route got from a provider itself: its own spend-log row linked to this call
   * (usage in any provider's shape, or a `TokenUsage`); this call's response is then not charged.
   * @example await res.locals.spendguard.track(completion.usage, { model: completion.model })
   */
  track(usage: unknown, options: TrackOptions): Promise<CallRecord> {
    return this.meter.track(usage, options);
  }

  /** Prices what the tap observed (once); call when the body is complete. */
  private price(): { record: Omit<CallRecord, 'status' | 'httpStatus'> } {
    if (this.priced) return this.priced;
    const { model, usage: u, estimated } = this.meter.resolve();
    const cost = model ? this.guard.prices.cost(model, u) : { totalNano: 0 };
    this.meter.priced(cost.totalNano); // a child call adds its cost to its request's cost header
    this.priced = {
      record: {
        requestId: this.state.requestId,
        model,
        costNano: cost.totalNano,
        costUsd: cost.totalNano / 1e9,
        usage: u,
        estimated,
        tags: this.state.tags,
      },
    };
    return this.priced;
  }

  /**
   * `x-litellm-response-cost` for a complete, non-streamed body whose headers are not sent yet: the
   * call's own cost, plus that of its child calls (`guard.fetch`, `track()`) priced so far.
   */
  costHeaders(): Record<string, string> {
    if (this.state.unpriced) return {}; // no price: no cost to claim
    return {
      'x-litellm-response-cost': String(this.meter.responseCostNano(this.price().record.costNano) / 1e9),
    };
  }

  /**
   * Steps 4 to 6: meter, price, settle (add the actual cost to every scope, release the
   * reservation, write the spend log). Idempotent; the adapter calls it when the response finished
   * or the connection closed.
   */
  finish(options: { aborted?: boolean; urgent?: boolean } = {}): Promise<CallRecord> {
    this.finished ??= this.guard.track(this.settle(options.aborted ?? false, options.urgent ?? false));
    return this.finished;
  }

  /** The spend log's metadata: how the call was metered, and what admission did to it. */
  private logMetadata(aborted: boolean): Record<string, unknown> {
    const meta = this.meter.metadata();
    if (aborted) meta.stream_cut = true;
    if (this.state.outputLowered !== null) meta.output_tokens_lowered = this.state.outputLowered;
    if (this.state.unpriced) meta.unpriced = true;
    // LiteLLM's spend_logs_metadata (the key's, then the call's over it) and session id, kept on the log.
    const body = this.state.body;
    const fromKey = this.state.ctx?.key.metadata.spend_logs_metadata;
    const fromCall = isPlainObject(body.metadata) ? body.metadata.spend_logs_metadata : undefined;
    if (isPlainObject(fromKey) || isPlainObject(fromCall)) {
      meta.spend_logs_metadata = {
        ...(isPlainObject(fromKey) ? fromKey : {}),
        ...(isPlainObject(fromCall) ? fromCall : {}),
      };
    }
    const session =
      body.litellm_session_id ??
      (isPlainObject(body.metadata) ? body.metadata.litellm_session_id : undefined);
    if (typeof session === 'string' && session !== '') meta.session_id = session;
    return meta;
  }

  /**
   * For the adapter, once the body is complete and before its last bytes are sent: where calls commit
   * their settlement first (`settleBeforeLastByte`), finishes the call at once (no batching delay) and
   * resolves when its spend, and that of what it `track()`ed, is written (or kept for retry); else
   * `null`, and the adapter sends the last bytes and calls `finish()` as usual.
   */
  beforeLastByte(): Promise<void> | null {
    if (!this.guard.settlesBeforeLastByte) return null;
    void this.finish({ urgent: true }).catch(() => {});
    return Promise.all([this.spendWritten, this.meter.trackedSettled()]).then(
      () => {},
      () => {},
    );
  }

  /** How long admission took, in ms, when observers listen (`null`: a child call, or none listen). */
  admissionMs: number | null = null;

  private observe(
    log: SpendLogRecord,
    record: Omit<CallRecord, 'status' | 'httpStatus'>,
    written: boolean,
    reservedNano: number,
    settleMs: number,
  ): void {
    this.guard.observers.settled({
      log,
      costUsd: record.costUsd,
      usage: record.usage,
      requestedModel: this.state.model,
      keyAlias: this.state.ctx?.key.keyAlias ?? null,
      teamAlias: this.state.ctx?.team?.teamAlias ?? null,
      settled: written,
      reservedNano,
      admissionMs: this.admissionMs,
      settleMs,
    });
  }

  /** The spend write of `settle()`, set as soon as it is handed to storage. */
  private spendWritten: Promise<boolean> | null = null;

  private async settle(aborted: boolean, urgent: boolean): Promise<CallRecord> {
    const { record } = this.price();
    const httpStatus = this.tap.status;
    const status: CallRecord['status'] = httpStatus >= 400 ? 'failure' : 'success';
    const endTime = this.guard.now();
    const ctx = this.state.ctx;
    const log: SpendLogRecord = {
      requestId: this.state.requestId,
      callType: this.meter.callType(),
      apiKeyHash: this.state.keyHash,
      spendNano: record.costNano,
      promptTokens: record.usage.promptTokens,
      completionTokens: record.usage.completionTokens,
      totalTokens: record.usage.promptTokens + record.usage.completionTokens,
      startTime: this.state.startTime,
      endTime,
      model: record.model,
      provider: record.model ? (this.guard.prices.resolve(record.model)?.provider ?? null) : null,
      userId: ctx?.user?.userId ?? ctx?.key.userId ?? null,
      teamId: ctx?.team?.teamId ?? ctx?.key.teamId ?? null,
      endUser: this.state.endUser,
      tags: record.tags,
      status,
      estimated: record.estimated,
      httpStatus,
      metadata: this.logMetadata(aborted),
      responseId: this.tap.observe().responseId,
    };
    // Costing at most what it holds, on the scopes it reserved, the settlement can only lower what the
    // next reservation is judged against, which then need not wait for it (see StorageGate.reserve).
    const held =
      this.state.reservationId === null || this.meter.reservationReleased ? 0 : this.state.reservedNano;
    this.spendWritten = this.guard.gate.settle(
      {
        reservationId: this.state.reservationId ?? `none-${this.state.requestId}`,
        scopes: this.state.scopes,
        costNano: record.costNano,
        now: endTime,
        log,
      },
      record.costNano > held,
      urgent,
    );
    if (this.escrowDraw) {
      // Its worst case is free in the lease again at once; its cost counts against the lease.
      this.guard.escrow?.settled(this.escrowDraw, record.costNano, this.spendWritten);
      this.escrowDraw = null;
    }
    const handed = this.guard.observers.active ? performance.now() : 0;
    const written = await this.spendWritten;
    if (this.guard.observers.active) this.observe(log, record, written, held, performance.now() - handed);
    if (!written)
      this.guard.settleFailures += 1; // kept and retried by the gate, never dropped silently
    else if (held > record.costNano) {
      // What the reservation held beyond the cost is free again: calls waiting for it may go.
      this.guard.capacity.freedOn(this.state.scopes.map(scopeKey), held - record.costNano);
    }
    if (this.state.rate) {
      await this.guard.settleRateLimits(
        this.state.rate,
        record.usage.promptTokens + record.usage.completionTokens,
      );
    }
    return {
      requestId: record.requestId,
      model: record.model,
      costUsd: record.costUsd,
      costNano: record.costNano,
      usage: record.usage,
      estimated: record.estimated,
      status,
      httpStatus,
      tags: record.tags,
    };
  }
}

/** What a spend log needs if the call's reservation (or the lease it opens) is charged unsettled. */
function pendingOf(
  requestId: string,
  body: Record<string, unknown>,
  tokenHash: string,
  ctx: KeyContext,
  model: string,
  endUser: string | null,
  tags: string[],
  startTime: Date,
): PendingCall {
  return {
    requestId,
    callType: body.stream === true ? 'acompletion_stream' : 'acompletion',
    apiKeyHash: tokenHash,
    model,
    userId: ctx.user?.userId ?? ctx.key.userId,
    teamId: ctx.team?.teamId ?? ctx.key.teamId,
    endUser,
    tags,
    startTime,
  };
}

/** A child call (`guard.fetch`, `track()`) of a guarded call: one function for every call. */
function spawnChildCall(this: void, state: CallState, guard: SpendGuard): GuardedCall {
  return new GuardedCall(guard, state);
}

function readPresentedKey(header: CallInput['header']): string {
  const auth = header('authorization');
  let value: string | null | undefined;
  if (auth) {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (!m) {
      throw new SpendGuardError(
        'INVALID_KEY',
        'Malformed API Key passed in. Ensure Key has `Bearer ` prefix.',
      );
    }
    value = m[1]!.trim();
  } else {
    value = header('x-api-key') ?? header('api-key') ?? header('x-goog-api-key');
  }
  if (!value) {
    throw new SpendGuardError(
      'MISSING_KEY',
      'Authentication Error, No api key passed in. Send `Authorization: Bearer sk-...`.',
    );
  }
  if (!value.startsWith('sk-') || value.length > 512) {
    throw new SpendGuardError(
      'INVALID_KEY',
      "Authentication Error, Invalid proxy server token passed. Keys start with 'sk-'.",
    );
  }
  return value;
}

/**
 * The call's tags with its key's own (LiteLLM applies a key's tags to every call it makes): its `tags`
 * and, as LiteLLM reads them too, its `metadata.tags` (checked to be strings when the key was written).
 */
function withKeyTags(tags: string[], ctx: KeyContext): string[] {
  const inMetadata = ctx.key.metadata.tags;
  const own = Array.isArray(inMetadata) ? [...ctx.key.tags, ...(inMetadata as string[])] : ctx.key.tags;
  return own.length > 0 ? [...new Set([...tags, ...own])] : tags;
}

/**
 * The call's end user, from every place LiteLLM reads one: the body's `user`, the
 * `x-litellm-customer-id` and `x-litellm-end-user-id` headers, `litellm_metadata.user` and
 * `metadata.user_id` (the body's `user` first, as spendguard always read it).
 */
function readEndUser(
  body: Record<string, unknown>,
  header: CallInput['header'],
): { id: string; field: string } | null {
  if (typeof body.user === 'string' && body.user !== '') return { id: body.user, field: 'user' };
  for (const name of ['x-litellm-customer-id', 'x-litellm-end-user-id']) {
    const value = header(name);
    if (value) return { id: value, field: name };
  }
  const litellmMetadata = body.litellm_metadata;
  if (
    isPlainObject(litellmMetadata) &&
    typeof litellmMetadata.user === 'string' &&
    litellmMetadata.user !== ''
  )
    return { id: litellmMetadata.user, field: 'litellm_metadata.user' };
  const metadata = body.metadata;
  if (isPlainObject(metadata) && typeof metadata.user_id === 'string' && metadata.user_id !== '')
    return { id: metadata.user_id, field: 'metadata.user_id' };
  return null;
}

/** Creates an end user seen for the first time; another instance creating it first is no error. */
async function upsertCustomer(
  storage: SpendStorage,
  endUserId: string,
  now: Date,
  budget: BudgetInit,
  budgetId: string | null,
): Promise<void> {
  try {
    await storage.insert([
      {
        type: 'customer',
        record: { endUserId, alias: null, blocked: false, metadata: {}, createdAt: now, budgetId },
        budget,
      },
    ]);
  } catch (error) {
    if (error instanceof SpendGuardError && error.param === 'budget_id') {
      // Served with no budget would be the one thing a budget must never do.
      throw new SpendGuardError(
        'INTERNAL',
        `defaultEndUserBudgetId '${budgetId}' names no budget, so end user '${endUserId}' cannot be given one; create it with /budget/new`,
      );
    }
    if (!(error instanceof StorageConflictError)) throw error;
  }
}

function readTags(body: Record<string, unknown>, header: CallInput['header']): string[] {
  const tags: string[] = [];
  const add = (value: unknown, where: string) => {
    if (value === undefined || value === null) return;
    if (!Array.isArray(value) || value.some((t) => typeof t !== 'string')) {
      throw new SpendGuardError('BAD_REQUEST', `${where} must be an array of strings`, { param: where });
    }
    for (const tag of value as string[]) assertText(tag, where, INPUT_LIMITS.nameLength);
    tags.push(...(value as string[]));
  };
  add(body.tags, 'tags');
  if (isPlainObject(body.metadata)) add(body.metadata.tags, 'metadata.tags');
  const h = header('x-litellm-tags');
  if (h)
    add(
      h
        .split(',')
        .map((t) => t.trim())
        .filter(Boolean),
      'x-litellm-tags',
    );
  const unique = tags.length > 1 ? [...new Set(tags)] : tags;
  assertTagCount(unique.length, 'tags');
  return unique;
}

/** How a 429 names the optional scope that refused (LiteLLM's `Team=…` style). */
function scopeLabel(ctx: KeyContext, scope: ScopeRef): string {
  switch (scope.kind) {
    case 'customer':
      return `EndUser=${scope.id}`;
    case 'tag':
      return `Tag=${scope.id}`;
    case 'model':
      return `Key=${ctx.key.keyAlias ?? ctx.key.keyName} Model=${scope.id.slice(ctx.key.tokenHash.length + 1)}`;
    case 'global':
      return 'Global=proxy';
    default:
      return `${scope.kind}=${scope.id}`;
  }
}

/**
 * LiteLLM's model access: the key's `models` (else its team's; none: every model), with `*`,
 * `all-proxy-models` and provider wildcards (`openai/*`). A name in the list also admits what the
 * `modelAliases` option maps it to, and a requested alias is admitted by its target's name.
 */
function modelAllowed(
  model: string,
  keyModels: string[],
  teamModels: string[],
  aliases: Record<string, string> = {},
): boolean {
  const list = keyModels.length > 0 ? keyModels : teamModels;
  if (list.length === 0) return true;
  const asked = Object.hasOwn(aliases, model) ? [model, aliases[model]!] : [model];
  return list.some((m) => {
    if (m === '*' || m === 'all-proxy-models') return true;
    const names = Object.hasOwn(aliases, m) ? [m, aliases[m]!] : [m];
    return asked.some((a) =>
      names.some((n) => n === a || (n.endsWith('/*') && a.startsWith(n.slice(0, -1)))),
    );
  });
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Python's float repr for the amounts in LiteLLM's messages (`50.0`, not `50`). */
function pyFloat(n: number): string {
  const s = String(Number(n.toFixed(9)));
  return s.includes('.') || s.includes('e') ? s : `${s}.0`;
}
