import { randomUUID } from 'node:crypto';
import { ManagementApi } from './admin/management-api.js';
import { CapacityWaiters } from './admission/capacity-waiters.js';
import { ESCROW_DEFAULTS, Escrow } from './admission/escrow.js';
import { BudgetAlerts } from './alerts/budget-alerts.js';
import { BodyReader } from './body-reader.js';
import { nextBudgetResetAt } from './budget-period.js';
import { type GuardLogger, type ResolvedOptions, resolveOptions, type SpendGuardOptions } from './config.js';
import { Dashboard } from './dashboard/dashboard.js';
import { KeyQueries, TeamQueries, UserQueries } from './entity-queries.js';
import { SpendGuardError, StorageConflictError } from './errors.js';
import { useCallContext } from './metering/track.js';
import { createGuardFetch } from './metering/upstream-fetch.js';
import { usdToNano } from './money.js';
import { type CallObservers, createObservers, metricsOf, refusalEvent } from './observability/observers.js';
import type { MetricsEndpoint } from './observability/prometheus-metrics.js';
import { Admission } from './pipeline/admit.js';
import type { CallInput, GuardResponse, KeyContext } from './pipeline/call-types.js';
import { EndUserGates } from './pipeline/end-users.js';
import { type AdmitOutcome, GuardedCall } from './pipeline/guarded-call.js';
import {
  assertKeyUsable,
  type IdentifyDeps,
  type Identity,
  identify,
  MasterKey,
  modelAllowed,
  PresentedSecrets,
} from './pipeline/identify.js';
import { KeyCache } from './pipeline/key-cache.js';
import { RateLimiter } from './pipeline/rate-admission.js';
import { ReservationSweeper } from './pipeline/sweep.js';
import { PriceBook } from './pricing/price-book.js';
import { BudgetQueries, SpendQueries } from './queries.js';
import type { RateAdmission } from './rate-limits.js';
import { SpendLogRetention } from './storage/spend-log-retention.js';
import type { BudgetInit, ScopeRef, SpendStorage } from './storage/storage-contract.js';
import { GLOBAL_SCOPE_ID } from './storage/storage-contract.js';
import { StorageGate, type StorageGateStats } from './storage/storage-gate.js';

export type { CallInput, CallRecord, GuardResponse, KeyContext } from './pipeline/call-types.js';
export { isPlainObject } from './pipeline/call-types.js';
export type { AdmitOutcome } from './pipeline/guarded-call.js';
export { GuardedCall } from './pipeline/guarded-call.js';

/**
 * The framework-neutral guard: resolves keys, admits calls against budgets, meters what the route
 * answered, prices it, and settles it. Adapters only translate their framework to this. Each stage
 * lives in its own module under `pipeline/` (docs/architecture.md); this class wires them.
 */
export class SpendGuard {
  readonly options: ResolvedOptions;
  readonly prices: PriceBook;
  readonly logger: GuardLogger;
  private storageReady: Promise<SpendStorage> | null = null;
  private storageValue: SpendStorage | null = null;
  /** Stage 1's key cache (by the hash of a presented secret). */
  private readonly keyCache: KeyCache;
  /** End users' blocked flag and rate limits, for admission (an end user without a record: neither). */
  private readonly endUsers: EndUserGates;
  private readonly master: MasterKey;
  private readonly rates: RateLimiter;
  private readonly admission: Admission<GuardedCall>;
  private readonly sweeper: ReservationSweeper;
  private readonly identifyDeps: IdentifyDeps;
  private readonly pending = new Set<Promise<unknown>>();
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
  private stopWatching: (() => void) | undefined;
  /**
   * This process's id in the store's heartbeats: its reservations carry it, and once it stops beating
   * another process charges them (see `heartbeatGraceMs`). New at every start.
   */
  readonly processId: string = randomUUID();
  /** Whether calls commit their settlement before their last byte (see `settleBeforeLastByte`). */
  private settlesFirst = false;
  /** Calls waiting for capacity on a budget (see `budgetWaitMs`). */
  readonly capacity = new CapacityWaiters();

  constructor(options: SpendGuardOptions) {
    this.options = resolveOptions(options);
    // The system clock in ms without a Date made per read; an injected clock is read through `now`.
    // (`Date.now` looked up at each read, as the default `new Date()` is: a faked global Date applies.)
    this.nowMs = options.now ? () => this.options.now().getTime() : () => Date.now();
    this.master = new MasterKey(this.options.masterKey);
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
    // Both caches age on the guard's clock, so that `keyCacheTtlMs` follows an injected one too.
    const now = () => this.now();
    const nowMs = this.nowMs;
    this.keyCache = new KeyCache({
      max: this.options.keyCacheSize,
      ttlMs: this.options.keyCacheTtlMs,
      now,
      nowMs,
      gate: this.gate,
    });
    this.endUsers = new EndUserGates({
      max: this.options.keyCacheSize,
      ttlMs: this.options.keyCacheTtlMs,
      now,
      nowMs,
      gate: this.gate,
      options: this.options,
    });
    const servesThrough = (error: unknown) => this.servesThrough(error);
    this.rates = new RateLimiter({
      gate: this.gate,
      logger: this.logger,
      now,
      processId: this.processId,
      options: this.options,
      track: (p) => this.track(p),
      servesThrough,
    });
    this.admission = new Admission<GuardedCall>({
      options: this.options,
      prices: this.prices,
      gate: this.gate,
      processId: this.processId,
      now,
      master: this.master,
      keys: this.keyCache,
      endUsers: this.endUsers,
      rates: this.rates,
      capacity: this.capacity,
      servesThrough,
      escrow: () => this.escrow,
      newCall: (state, draw) => {
        const call = new GuardedCall(this, state);
        call.escrowDraw = draw ?? null;
        return call;
      },
    });
    this.identifyDeps = {
      master: this.master,
      secrets: new PresentedSecrets(this.master, this.options.keyCacheSize),
      keys: this.keyCache,
      servesThrough,
      servableWhileDown: (ctx, at) => this.admission.servableWhileDown(ctx, at),
    };
    this.sweeper = new ReservationSweeper({
      options: this.options,
      gate: this.gate,
      logger: this.logger,
      now,
      processId: this.processId,
      logStorageError: (error) => this.logStorageError(error),
    });
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
        if (this.sweeper.beatsHeartbeat(s)) await s.heartbeat(this.processId, new Date());
        this.settlesFirst = this.options.settleBeforeLastByte ?? s.capabilities.commitsInProcess === true;
        this.storageValue = s;
        this.startEscrow(s);
        this.sweeper.startSweep();
        this.retention.start();
        this.sweeper.startHeartbeat(s);
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

  /** `now()` in ms, read where no Date is kept (the caches' ages, the leases' times). */
  private readonly nowMs: () => number;

  /** Compares a presented credential with the master key in constant time. */
  isMasterKey(presented: string | null): boolean {
    return this.master.is(presented);
  }

  /**
   * Drops a key from the in-process cache (after it was changed): the entry for that hash and every
   * entry cached under another secret of the same key (a regenerated key's current or grace secret).
   */
  invalidateKey(tokenHash: string): void {
    this.keyCache.invalidate(tokenHash);
  }

  /** Drops every cached key (after a team or user change). */
  invalidateAllKeys(): void {
    this.keyCache.invalidateAll();
  }

  /**
   * Resolves the key a presented secret (by its hash) opens, and the scopes it spends against. `null`
   * when no key opens with it (a regenerated key's old secret after its grace period included).
   */
  resolveKey(secretHash: string): Promise<KeyContext | null> {
    return this.keyCache.resolve(secretHash);
  }

  /**
   * A key and its user and team by the key's id (the `apiKeyHash` of its spend logs), for
   * attribution only: also a regenerated key, whose id no longer opens it. `null` when deleted.
   */
  describeKey(tokenHash: string): Promise<Pick<KeyContext, 'key' | 'user' | 'team'> | null> {
    return this.keyCache.describe(tokenHash);
  }

  /** Whether admission lets a key with these model lists (the key's, else its team's) call `model`. */
  keyAllowsModel(model: string, keyModels: string[], teamModels: string[]): boolean {
    return modelAllowed(model, keyModels, teamModels, this.options.modelAliases);
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
    assertKeyUsable(ctx, now);
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
      // A key in the cache, and a call its lease covers, are admitted without a promise of their own.
      // One reading of the clock: the key is judged usable, and the call starts, at the same instant.
      const now = this.now();
      const found = identify(this.identifyDeps, input.header, now);
      identity = found instanceof Promise ? await found : found;
      if (input.readBody) {
        const reading = input.readBody();
        const read = reading instanceof Promise ? await reading : reading;
        input = {
          method: input.method,
          path: input.path,
          header: input.header,
          body: read.body,
          bodyBytes: read.bytes,
        };
      }
      const admitted = this.admission.admit(input, identity, now);
      const call = admitted instanceof Promise ? await admitted : admitted;
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

  /** Drops an end user's cached blocked flag and rate limits (after `/customer/update`, `/customer/block`). */
  invalidateCustomer(endUserId: string): void {
    this.endUsers.invalidate(endUserId);
  }

  /** Drops every end user's cached gate (after a budget tier's limits changed). */
  invalidateAllCustomers(): void {
    this.endUsers.invalidateAll();
  }

  /** Adds a settled call's tokens to its tpm buckets and releases its parallel slots. */
  settleRateLimits(rate: RateAdmission, tokens: number): Promise<void> {
    return this.rates.settle(rate, tokens);
  }

  /** Charges unsettled reservations past their TTL at their estimate (also run on a timer). */
  sweepExpiredReservations(): Promise<number> {
    return this.sweeper.sweepExpiredReservations();
  }

  /**
   * Charges, at their estimate, the open reservations of every process that last beat at or before
   * `staleBefore` (the heartbeat timer runs this; a test or an operator may too).
   */
  settleDeadProcesses(staleBefore: Date): Promise<number> {
    return this.sweeper.settleDeadProcesses(staleBefore);
  }

  /** True when calls commit their settlement before their response's last byte (`settleBeforeLastByte`). */
  get settlesBeforeLastByte(): boolean {
    return this.settlesFirst;
  }

  /** Counters for metrics: storage errors, settlements pending / recovered / dropped. */
  stats(): StorageGateStats & { settleFailures: number } {
    return { ...this.gate.stats, settleFailures: this.settleFailures };
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
    return this.admission.estimateNano(model, body, bodyBytes, precise, path);
  }

  /**
   * Escrow admission (`escrow` option): busy scope sets admitted in memory against leases of their
   * budget (see admission/escrow.ts); `null` when off, in `soft` mode, or on a store without leases.
   */
  escrow: Escrow | null = null;
  private escrowTimer: NodeJS.Timeout | null = null;

  private startEscrow(storage: SpendStorage): void {
    if (!this.options.escrow || this.options.enforcement === 'soft' || !storage.setLease || this.escrow)
      return;
    const leaseMs = ESCROW_DEFAULTS.leaseMs;
    this.escrow = new Escrow({
      ...ESCROW_DEFAULTS,
      processId: this.processId,
      now: this.nowMs,
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

  /** Keeps a settlement promise alive until `close()` so shutdown never drops spend. */
  track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    // One reaction for both outcomes (a `finally` and a `catch` were two promises more per call).
    const done = () => void this.pending.delete(p);
    p.then(done, done);
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
    // No more beats: what this process still holds after the flush is charged by the others.
    this.sweeper.stop();
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
