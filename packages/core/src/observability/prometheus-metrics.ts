/**
 * Prometheus metrics in LiteLLM's names and labels (so its Grafana dashboards and alerts work
 * unchanged), plus spendguard's own. `prom-client` is an optional peer, loaded on first use; events
 * that arrive while it loads are kept (bounded) and applied once it is there.
 */
import type * as Prom from 'prom-client';
import type { GuardLogger } from '../guard-logger.js';
import type { BudgetState, ScopeRef, SpendStorage } from '../storage/storage-contract.js';
import type { CallEvent, CallObserver, RefusalEvent } from './call-events.js';

/**
 * A prom-client `Registry`, as far as spendguard's public types name it (so that an app without
 * prom-client installed still type-checks; cast to `Registry` to use the rest of it).
 */
export interface MetricsRegistry {
  metrics(): Promise<string>;
  readonly contentType: string;
}

/** Options of the `metrics` option. */
export interface MetricsOptions {
  /**
   * The prom-client registry to register in (e.g. `client.register`, the app's default one).
   * @default a registry of the guard's own
   */
  registry?: MetricsRegistry;
  /**
   * Fill the `end_user` label (LiteLLM's `enable_end_user_cost_tracking_prometheus_only`). Off by
   * default: end users are as many as an app's own users.
   * @default false
   */
  endUserLabel?: boolean;
  /**
   * The most label sets (key x model x end user) the per-call metrics keep; calls beyond it are
   * counted under `hashed_api_key="__other__"` so that a flood of keys cannot blow up the registry.
   * @default 10000
   */
  maxLabelSets?: number;
}

/** `guard.metrics`: the exposition for `/metrics`, or the registry itself. */
export interface MetricsEndpoint {
  /** The metrics in Prometheus' text format, with their content type. */
  scrape(): Promise<{ status: number; contentType: string; body: string }>;
  /** The prom-client `Registry` the metrics live in (rejects when `metrics` is off or prom-client is missing). */
  registry(): Promise<MetricsRegistry>;
}

export const DISABLED_METRICS: MetricsEndpoint = {
  async scrape() {
    return {
      status: 404,
      contentType: 'text/plain; charset=utf-8',
      body: 'spendguard metrics are off: pass `metrics: true` to spendGuard() (and install prom-client)\n',
    };
  },
  registry() {
    return Promise.reject(new Error('spendguard metrics are off: pass `metrics: true` to spendGuard()'));
  },
};

const CALL_LABELS = [
  'end_user',
  'hashed_api_key',
  'api_key_alias',
  'model',
  'team',
  'team_alias',
  'user',
] as const;
const TOKEN_LABELS = [
  'end_user',
  'hashed_api_key',
  'api_key_alias',
  'requested_model',
  'team',
  'team_alias',
  'user',
  'model',
] as const;
const PROXY_LABELS = [
  'end_user',
  'hashed_api_key',
  'api_key_alias',
  'requested_model',
  'team',
  'team_alias',
  'user',
] as const;
/** LiteLLM's latency buckets, in seconds. */
const LATENCY_BUCKETS = [
  0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8,
  8.5, 9, 9.5, 10, 15, 20, 25, 30, 60, 120, 180, 240, 300,
];
const MAX_QUEUED = 10_000;
/** What LiteLLM's labels read when they have no value (`str(None)` in prometheus_client). */
const NONE = 'None';
/** Budget gauges are kept for at most this many keys, teams and users (the ones that called last). */
const MAX_BUDGET_SCOPES = 10_000;

interface Source {
  now(): Date;
  read<T>(what: string, fn: (storage: SpendStorage) => Promise<T>): Promise<T>;
  stats(): { storageErrors: number; pendingSettlements: number; settlementsDropped: number };
}

type Instruments = ReturnType<typeof createInstruments>;

export class PrometheusMetrics implements CallObserver, MetricsEndpoint {
  readonly name = 'metrics';
  private instruments: Instruments | null = null;
  private readonly loading: Promise<Instruments | null>;
  private queue: Array<() => void> = [];
  private readonly labelSets = new Set<string>();
  private inFlight = 0;
  /** The keys, teams and users seen on calls, whose budgets the gauges show (label values by scope). */
  private readonly budgetScopes = new Map<string, { scope: ScopeRef; alias: string }>();
  private refreshing: Promise<void> | null = null;
  private readonly maxLabelSets: number;

  constructor(
    private readonly source: Source,
    private readonly logger: GuardLogger,
    private readonly options: MetricsOptions,
  ) {
    this.maxLabelSets = options.maxLabelSets ?? 10_000;
    this.loading = import('prom-client').then(
      (mod) => {
        const client = (
          'Registry' in mod ? mod : (mod as unknown as { default: typeof Prom }).default
        ) as typeof Prom;
        const instruments = createInstruments(
          client,
          (options.registry as Prom.Registry | undefined) ?? new client.Registry(),
          this,
        );
        this.instruments = instruments;
        for (const apply of this.queue) apply();
        this.queue = [];
        return instruments;
      },
      (error: unknown) => {
        this.queue = [];
        this.logger.error('metrics: true needs the prom-client package: npm install prom-client', error);
        return null;
      },
    );
  }

  admitted(): void {
    this.inFlight += 1;
  }

  onCall(event: CallEvent): void {
    if (event.admissionMs !== null) this.inFlight = Math.max(0, this.inFlight - 1);
    this.rememberBudgets(
      event.log.apiKeyHash,
      event.keyAlias,
      event.log.teamId,
      event.teamAlias,
      event.log.userId,
    );
    this.apply(() => this.recordCall(event));
  }

  onRefused(event: RefusalEvent): void {
    if (event.apiKeyHash) {
      this.rememberBudgets(event.apiKeyHash, event.keyAlias, event.teamId, event.teamAlias, event.userId);
    }
    this.apply(() => this.recordRefusal(event));
  }

  get reservationsInFlight(): number {
    return this.inFlight;
  }

  async registry(): Promise<MetricsRegistry> {
    const m = await this.loading;
    if (!m) throw new Error('spendguard metrics need the prom-client package: npm install prom-client');
    return m.registry;
  }

  async scrape(): Promise<{ status: number; contentType: string; body: string }> {
    const m = await this.loading;
    if (!m) {
      return {
        status: 500,
        contentType: 'text/plain; charset=utf-8',
        body: 'spendguard metrics need the prom-client package: npm install prom-client\n',
      };
    }
    return { status: 200, contentType: m.registry.contentType, body: await m.registry.metrics() };
  }

  private apply(fn: () => void): void {
    if (this.instruments) fn();
    else if (this.queue.length < MAX_QUEUED) this.queue.push(fn);
  }

  /** The identity labels of a call, bounded: past `maxLabelSets` distinct sets, under `__other__`. */
  private identity(keyHash: string, keyAlias: string | null, model: string, endUser: string | null) {
    const end = this.options.endUserLabel ? (endUser ?? NONE) : NONE;
    const id = `${keyHash}\u0000${model}\u0000${end}`;
    if (!this.labelSets.has(id)) {
      if (this.labelSets.size >= this.maxLabelSets) {
        return { hashed_api_key: '__other__', api_key_alias: NONE, end_user: NONE };
      }
      this.labelSets.add(id);
    }
    return { hashed_api_key: keyHash, api_key_alias: keyAlias ?? NONE, end_user: end };
  }

  private recordCall(e: CallEvent): void {
    const m = this.instruments!;
    const log = e.log;
    const who = this.identity(log.apiKeyHash, e.keyAlias, log.model, log.endUser);
    const base = {
      ...who,
      team: log.teamId ?? NONE,
      team_alias: e.teamAlias ?? NONE,
      user: log.userId ?? NONE,
    };
    m.spend.inc({ ...base, model: log.model }, e.costUsd);
    m.requests.inc({ ...base, model: log.model });
    const tokenLabels = { ...base, requested_model: e.requestedModel, model: log.model };
    m.inputTokens.inc(tokenLabels, log.promptTokens);
    m.outputTokens.inc(tokenLabels, log.completionTokens);
    m.totalTokens.inc(tokenLabels, log.totalTokens);
    m.totalLatency.observe(tokenLabels, (log.endTime.getTime() - log.startTime.getTime()) / 1000);
    if (e.admissionMs !== null) {
      m.overheadLatency.observe(tokenLabels, e.admissionMs / 1000);
      const proxy = { ...base, requested_model: e.requestedModel };
      m.proxyTotal.inc({ ...proxy, status_code: String(log.httpStatus) });
      if (log.httpStatus >= 400) {
        m.proxyFailed.inc({
          ...proxy,
          exception_status: String(log.httpStatus),
          exception_class: 'ProviderError',
        });
      }
    }
    m.settlementLag.observe(e.settleMs / 1000);
  }

  private recordRefusal(e: RefusalEvent): void {
    const m = this.instruments!;
    const who = e.apiKeyHash
      ? this.identity(e.apiKeyHash, e.keyAlias, e.requestedModel, e.endUser)
      : { hashed_api_key: NONE, api_key_alias: NONE, end_user: NONE };
    const proxy = {
      ...who,
      requested_model: who.hashed_api_key === '__other__' ? NONE : e.requestedModel || NONE,
      team: e.teamId ?? NONE,
      team_alias: e.teamAlias ?? NONE,
      user: e.userId ?? NONE,
    };
    m.proxyTotal.inc({ ...proxy, status_code: String(e.status) });
    m.proxyFailed.inc({
      ...proxy,
      exception_status: String(e.status),
      exception_class: exceptionClass(e.reason),
    });
    m.refusals.inc({ reason: e.reason, scope: e.scope?.kind ?? '' });
  }

  private rememberBudgets(
    keyHash: string,
    keyAlias: string | null,
    teamId: string | null,
    teamAlias: string | null,
    userId: string | null,
  ): void {
    const remember = (scope: ScopeRef, alias: string) => {
      const id = `${scope.kind}:${scope.id}`;
      this.budgetScopes.delete(id); // most recent last
      this.budgetScopes.set(id, { scope, alias });
      if (this.budgetScopes.size > MAX_BUDGET_SCOPES) {
        const oldest = this.budgetScopes.keys().next().value;
        if (oldest !== undefined) this.budgetScopes.delete(oldest);
      }
    };
    remember({ kind: 'key', id: keyHash }, keyAlias ?? NONE);
    if (teamId) remember({ kind: 'team', id: teamId }, teamAlias ?? NONE);
    if (userId) remember({ kind: 'user', id: userId }, NONE);
  }

  /** Reads the budgets of the scopes seen, once per scrape (every gauge's collect shares it). */
  refreshBudgets(): Promise<void> {
    this.refreshing ??= this.readBudgets().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async readBudgets(): Promise<void> {
    const m = this.instruments!;
    const entries = [...this.budgetScopes.values()];
    const now = this.source.now();
    const states: BudgetState[] =
      entries.length === 0
        ? []
        : await this.source.read('metrics', (s) =>
            s.getBudgets(
              entries.map((e) => e.scope),
              now,
            ),
          );
    const aliases = new Map(entries.map((e) => [`${e.scope.kind}:${e.scope.id}`, e.alias]));
    for (const g of m.budgetGauges) g.reset();
    for (const state of states) {
      if (state.maxBudgetNano === null) continue;
      const kind = state.scope.kind;
      if (kind !== 'key' && kind !== 'team' && kind !== 'user') continue;
      const alias = aliases.get(`${kind}:${state.scope.id}`) ?? NONE;
      const labels: Prom.LabelValues<string> =
        kind === 'key'
          ? { hashed_api_key: state.scope.id, api_key_alias: alias }
          : kind === 'team'
            ? { team: state.scope.id, team_alias: alias }
            : { user: state.scope.id };
      const g: Record<'max' | 'remaining' | 'hours', Prom.Gauge<string>> = m.budget[kind];
      g.max.set(labels, state.maxBudgetNano / 1e9);
      g.remaining.set(labels, (state.maxBudgetNano - state.spendNano) / 1e9);
      if (state.budgetResetAt)
        g.hours.set(labels, (state.budgetResetAt.getTime() - now.getTime()) / 3_600_000);
    }
  }

  stats(): { storageErrors: number; pendingSettlements: number; settlementsDropped: number } {
    return this.source.stats();
  }
}

/** LiteLLM's `exception_class` style for a refusal: `BudgetExceededError`, `RateLimitedError`, ... */
function exceptionClass(reason: string): string {
  return `${reason
    .split('_')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('')}Error`;
}

function createInstruments(client: typeof Prom, registry: Prom.Registry, owner: PrometheusMetrics) {
  const registers = [registry];
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new client.Counter<L>({ name, help, labelNames, registers });
  const histogram = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new client.Histogram<L>({ name, help, labelNames, buckets: LATENCY_BUCKETS, registers });
  const budgetGauge = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new client.Gauge<L>({
      name,
      help,
      labelNames,
      registers,
      async collect() {
        await owner.refreshBudgets();
      },
    });
  const budget = {
    key: {
      remaining: budgetGauge(
        'litellm_remaining_api_key_budget_metric',
        'Remaining budget for the API key (USD)',
        ['hashed_api_key', 'api_key_alias'],
      ),
      max: budgetGauge('litellm_api_key_max_budget_metric', 'Maximum budget set for the API key (USD)', [
        'hashed_api_key',
        'api_key_alias',
      ]),
      hours: budgetGauge(
        'litellm_api_key_budget_remaining_hours_metric',
        'Hours until the API key budget resets',
        ['hashed_api_key', 'api_key_alias'],
      ),
    },
    team: {
      remaining: budgetGauge('litellm_remaining_team_budget_metric', 'Remaining budget for the team (USD)', [
        'team',
        'team_alias',
      ]),
      max: budgetGauge('litellm_team_max_budget_metric', 'Maximum budget set for the team (USD)', [
        'team',
        'team_alias',
      ]),
      hours: budgetGauge('litellm_team_budget_remaining_hours_metric', 'Hours until the team budget resets', [
        'team',
        'team_alias',
      ]),
    },
    user: {
      remaining: budgetGauge('litellm_remaining_user_budget_metric', 'Remaining budget for the user (USD)', [
        'user',
      ]),
      max: budgetGauge('litellm_user_max_budget_metric', 'Maximum budget set for the user (USD)', ['user']),
      hours: budgetGauge('litellm_user_budget_remaining_hours_metric', 'Hours until the user budget resets', [
        'user',
      ]),
    },
  };
  // Read at each scrape from the guard's counters: a gauge, or a counter for the `_total` ones.
  const stat = (name: string, help: string, read: () => number) =>
    name.endsWith('_total')
      ? new client.Counter({
          name,
          help,
          registers,
          collect() {
            this.reset();
            this.inc(read());
          },
        })
      : new client.Gauge({
          name,
          help,
          registers,
          collect() {
            this.set(read());
          },
        });
  stat(
    'spendguard_reservations_in_flight',
    'Calls admitted by this process whose settlement is not written yet',
    () => owner.reservationsInFlight,
  );
  stat(
    'spendguard_storage_errors_total',
    'Storage calls that failed or timed out (this process)',
    () => owner.stats().storageErrors,
  );
  stat(
    'spendguard_settlement_queue_depth',
    'Settlements kept for retry while storage is unavailable',
    () => owner.stats().pendingSettlements,
  );
  stat(
    'spendguard_settlements_dropped_total',
    'Settlements dropped because the retry queue was full',
    () => owner.stats().settlementsDropped,
  );
  return {
    registry,
    budget,
    budgetGauges: Object.values(budget).flatMap((b) => [b.remaining, b.max, b.hours]),
    spend: counter('litellm_spend_metric_total', 'Total spend on LLM requests (USD)', CALL_LABELS),
    requests: counter('litellm_requests_metric_total', 'Total number of LLM calls', CALL_LABELS),
    inputTokens: counter('litellm_input_tokens_metric_total', 'Total input tokens', TOKEN_LABELS),
    outputTokens: counter('litellm_output_tokens_metric_total', 'Total output tokens', TOKEN_LABELS),
    totalTokens: counter('litellm_total_tokens_metric_total', 'Total input + output tokens', TOKEN_LABELS),
    proxyTotal: counter('litellm_proxy_total_requests_metric_total', 'Requests to the guarded routes', [
      ...PROXY_LABELS,
      'status_code',
    ]),
    proxyFailed: counter(
      'litellm_proxy_failed_requests_metric_total',
      'Requests to the guarded routes that did not get a success response',
      [...PROXY_LABELS, 'exception_status', 'exception_class'],
    ),
    totalLatency: histogram(
      'litellm_request_total_latency_metric',
      'Total latency of a guarded request (seconds)',
      TOKEN_LABELS,
    ),
    overheadLatency: histogram(
      'litellm_overhead_latency_metric',
      'Latency added by spendguard before the route ran (seconds)',
      TOKEN_LABELS,
    ),
    refusals: counter(
      'spendguard_refusals_total',
      'Calls refused before the route ran, by reason and scope',
      ['reason', 'scope'],
    ),
    settlementLag: new client.Histogram({
      name: 'spendguard_settlement_lag_seconds',
      help: 'From the end of a response to its settlement written (or kept for retry)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
  };
}
