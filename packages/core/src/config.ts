import * as z from 'zod';
import type { BudgetAlertOptions } from './alerts/alert-options.js';
import { isValidBudgetDuration } from './budget-period.js';
import type { GuardLogger } from './guard-logger.js';
/** Where the guard reports what it cannot put in a response (unpriced models, settlement failures). */
import type { CallEvent, RefusalEvent } from './observability/call-events.js';
import type { TracingOptions } from './observability/otel-tracing.js';
import type { MetricsOptions } from './observability/prometheus-metrics.js';
import type { ModelPriceOverride } from './pricing/price-book.js';
import type { EnforcementMode, SpendStorage } from './storage/storage-contract.js';

export type { GuardLogger } from './guard-logger.js';

export interface SpendGuardOptions {
  /**
   * Where keys, budgets and spend live. A promise is awaited before the first request.
   * The adapters default to `@spendguard/storage-sqlite` (`./spendguard.db` or `SPENDGUARD_DB`).
   * @example storage: sqliteStorage({ path: './spend.db' })
   */
  storage: SpendStorage | Promise<SpendStorage>;
  /**
   * The admin credential for the management API (`Authorization: Bearer <masterKey>`).
   * @default process.env.SPENDGUARD_MASTER_KEY ?? process.env.LITELLM_MASTER_KEY
   */
  masterKey?: string;
  /**
   * Per-model prices in LiteLLM's format, over the shipped table.
   * @example modelPrices: { 'my-ft-model': { input_cost_per_token: 3e-6, output_cost_per_token: 1.2e-5 } }
   */
  modelPrices?: Record<string, ModelPriceOverride>;
  /**
   * Model names priced as another model, e.g. an Azure deployment name.
   * @example modelAliases: { 'prod-gpt4o-eastus': 'gpt-4o' }
   */
  modelAliases?: Record<string, string>;
  /**
   * The models the app serves, as its callers name them, for LiteLLM's model routes (`/model/info`,
   * `/v1/model/info`, `/model_group/info`, and `/v1/models` with `serveModelList`). spendguard routes
   * no models, so it lists only these: each with its price-table data (cost per token, context
   * window, provider, mode), a `modelAliases` name priced as its target. A key restricted to models
   * sees those of them it may call.
   * @default [] (the model routes answer an empty list)
   * @example models: ['gpt-4o', 'gpt-4o-mini', 'prod-gpt4o-eastus']
   */
  models?: string[];
  /**
   * Answer `GET /v1/models` and `GET /models` (LiteLLM's model list, from `models`) in the management
   * API. Off by default: the management API is mounted at the root before the app's own routes, so
   * it would answer an app's own `/v1/models` in its place.
   * @default false
   */
  serveModelList?: boolean;
  /**
   * A price table in LiteLLM's `model_prices_and_context_window.json` format instead of the shipped
   * snapshot: an object, a file path, or an http(s) URL refreshed every `priceTableRefreshMs` (a failed
   * refresh keeps the last good table and is logged).
   * @default the snapshot shipped in @spendguard/core
   */
  priceTable?: Record<string, unknown> | string | URL;
  /** Refresh interval of a URL `priceTable`. @default 3600000 (1 h) */
  priceTableRefreshMs?: number;
  /**
   * Output-token bound used for the worst-case estimate when a request sets no `max_tokens`
   * and the price table knows no `max_output_tokens` for the model.
   * @default 4096
   */
  defaultMaxOutputTokens?: number;
  /**
   * In `strict` mode, how long a call whose worst case would fit a budget once the calls in flight
   * settle may wait for them (then it is judged again), instead of being refused. 0 refuses at once.
   * @default 30000
   */
  budgetWaitMs?: number;
  /**
   * In `strict` mode, the least output a call's cap (`max_tokens`, `max_completion_tokens`,
   * `max_output_tokens`, Gemini `maxOutputTokens`) may be lowered to so that its worst case fits what
   * a budget has left (the response then carries `x-spendguard-output-tokens-lowered`). Below it the
   * call is refused. A call that asks for less than this is never lowered.
   * @default 256
   */
  minOutputTokens?: number;
  /**
   * A call to a model the price table does not know: `refuse` answers 400 naming the model (price it
   * with `modelPrices`, where 0 is allowed); `allow` serves it, records it at $0 flagged `unpriced`,
   * and sends no cost header.
   * @default 'refuse' in `strict` mode, 'allow' otherwise
   */
  unpricedModels?: 'refuse' | 'allow';
  /** How many resolved keys the in-process LRU cache holds. @default 10000 */
  keyCacheSize?: number;
  /**
   * How long a resolved key is trusted before it is read from storage again. Changes made through
   * this guard's management API invalidate it at once; this bounds changes made by other processes.
   * @default 5000
   */
  keyCacheTtlMs?: number;
  /**
   * After this a reservation that was never settled counts as abandoned, counted from when it is
   * written (after any wait for budget, see `budgetWaitMs`). @default 600000 (10 min)
   */
  reservationTtlMs?: number;
  /**
   * Escrow admission: a scope set called often (8 or more calls a second) and far from its caps (room
   * for at least 8,192 of its calls' worst cases) is
   * admitted in memory against a lease, a slice of its remaining budget this process holds in the store
   * as one reservation, renewed every second; near a cap, or on a quiet scope set, every call reserves
   * its own as before. Budgets stay exact across instances (see docs/budgets.md). Needs a store with
   * `setLease` (memory, SQLite, Postgres); not used in `soft` mode.
   * @default true
   * @example escrow: false // a reservation per call, always
   */
  escrow?: boolean;
  /** Largest JSON response the meter buffers to read usage from. @default 8 MiB */
  maxMeteredBodyBytes?: number;
  /**
   * Largest request body the guard reads, in bytes: a larger one is refused with a 413 (at once when
   * its `Content-Length` says so, without reading it). Bodies are read only once the caller's
   * credential is checked.
   * @default 10485760 (10 MiB)
   * @example bodyLimitBytes: 2 * 1024 * 1024
   */
  bodyLimitBytes?: number;
  /**
   * Most request-body bytes this guard reads at once, over every request in progress (guarded routes,
   * the management API, the dashboard): a request whose body would pass it is refused with a 503 and
   * `Retry-After`, so that many large bodies at once cannot exhaust the process's memory. A body with a
   * `Content-Length` holds its whole length from the start of its read; one without holds what has come.
   * @default 134217728 (128 MiB)
   * @example maxBodyBytesInFlight: 64 * 1024 * 1024
   */
  maxBodyBytesInFlight?: number;
  /**
   * How budgets admit calls: `strict` (only if the worst case fits: spend never exceeds a cap),
   * `shrink` (LiteLLM's: while any headroom is left, counting calls in flight), `soft` (recorded spend only).
   * @default 'strict'
   */
  enforcement?: EnforcementMode;
  /**
   * When storage cannot be reached: `deny` answers 503; `allow` serves the call unreserved (a key it
   * resolved before is still recognised) and writes its spend when storage is back.
   * @default 'deny'
   */
  onStorageError?: 'deny' | 'allow';
  /** How long one storage call may take before it counts as failed. @default 2000 */
  storageTimeoutMs?: number;
  /** Settlements kept for retry while storage is down (oldest dropped, and logged, beyond). @default 100000 */
  maxPendingSettlements?: number;
  /**
   * How long a finished call's settlement may wait to be written together with the others that finish
   * meanwhile (one transaction, counters and rollups summed): a settlement is off the request's path,
   * its reservation holds the call's worst case until then, and `flush()`/`close()` write at once.
   * 0 writes each one in the next event-loop turn. @default 5
   */
  settleBatchMs?: number;
  /**
   * Run each guarded route in its call's AsyncLocalStorage context from the start, which the module's
   * `track()` and `guard.fetch` need to find the request they belong to. Without it the context is
   * turned on by the first read of `guard.fetch` (so `new OpenAI({ fetch: guard.fetch })` at start-up is
   * enough), and stays off for apps that use neither: on Node 20 AsyncLocalStorage turns on promise
   * hooks for the whole process, about 200 µs of CPU per request on the example route.
   * `res.locals.spendguard.track()` (Hono: `c.get('spendguard').track()`) needs no context.
   * @default false (on once guard.fetch is read)
   */
  callContext?: boolean;
  /** How often unsettled reservations past their TTL are charged; 0 disables the sweep. @default 30000 */
  reservationSweepMs?: number;
  /**
   * Crash recovery on a store shared by several processes: each process beats in the store every
   * quarter of this, and once a process has not beaten for this long, any live one (or the process
   * restarted) charges its open reservations at their estimate, flagged `process_died` in the spend
   * log, instead of waiting for `reservationTtlMs`. Heartbeats use the system clock (not `now`):
   * hosts sharing a store need clocks within this of each other. 0 turns heartbeats off (the TTL alone
   * then settles what a dead process left open). See docs/crash-recovery.md.
   * @default 10000
   * @example heartbeatGraceMs: 5_000
   */
  heartbeatGraceMs?: number;
  /**
   * Commit each call's settlement before its response's last byte leaves, so that a call the client
   * received whole is charged its real cost even if this process dies right after. On by default where
   * a commit is this process's own and takes microseconds (`commitsInProcess`: SQLite); on Postgres it
   * adds a round trip and a commit to the end of every response (docs/crash-recovery.md). A call
   * admitted from a lease (`escrow`) does not wait: the lease holds its worst case in the store, and its
   * settlement is written with others within `settleBatchMs`.
   * @default storage.capabilities.commitsInProcess
   */
  settleBeforeLastByte?: boolean;
  /** How long `close()` keeps retrying pending settlements. @default 5000 */
  shutdownTimeoutMs?: number;
  /** @default console */
  logger?: GuardLogger;
  /** The clock; tests pass a controllable one. @default () => new Date() */
  now?: () => Date;
  /**
   * Budget alerts: a signed JSON webhook when a key's, user's or team's spend reaches a threshold of
   * its `max_budget` (or its `soft_budget`), once per threshold per budget period, sent after the
   * call is settled (never on the request's path).
   * @default undefined (no alerts)
   * @example alerts: { webhookUrl: 'https://hooks.example.com/spend', secret: process.env.WEBHOOK_SECRET! }
   */
  alerts?: BudgetAlertOptions;
  /**
   * One budget over every call of the deployment (LiteLLM's proxy-wide `max_budget`), in USD, applied
   * to storage when the guard opens it; instances sharing a store share it. Calls with the master key
   * count against it too.
   */
  globalBudget?: { maxBudget: number | null; budgetDuration?: string | null; softBudget?: number | null };
  /**
   * The budget an end user gets when it is first seen on a call (LiteLLM's `max_end_user_budget`), in
   * USD; end users created with `/customer/new` keep the budget given there.
   * @default none: a new end user is tracked, uncapped
   * @example defaultEndUserBudget: { maxBudget: 1, budgetDuration: '30d' }
   */
  defaultEndUserBudget?: { maxBudget: number; budgetDuration?: string | null };
  /**
   * The budget tier (`/budget/new`) an end user joins when it is given no budget of its own: when first
   * seen on a call, or created by `/customer/new` without limits or by `/customer/block` (LiteLLM's
   * `max_end_user_budget_id`). Every such end user spends its own counter under the tier's limits, and
   * `/budget/update` changes them for all at once. A call from a new end user while the tier does not
   * exist is refused (500) rather than served with no budget. Not with `defaultEndUserBudget`.
   * @default none
   * @example defaultEndUserBudgetId: 'free-tier'
   */
  defaultEndUserBudgetId?: string;
  /**
   * The dashboard served by the management router at `ui/` (see docs/dashboard.md): who may
   * log in, and for how long. It needs a password: this one, or else the master key.
   * @default { username: 'admin', password: masterKey, sessionTtlMs: 43200000 }
   * @example dashboard: { username: process.env.UI_USERNAME, password: process.env.UI_PASSWORD }
   */
  dashboard?: DashboardOptions;
  /**
   * Called after each call is settled, with its spend-log row, cost and usage (off the request's
   * path; an error it throws or rejects with is logged and never fails the call).
   * @default undefined
   * @example onCall: (e) => console.log(e.log.requestId, e.costUsd)
   */
  onCall?: (event: CallEvent) => unknown;
  /**
   * Called when a call is refused before its route runs, with the reason (`budget_exceeded`,
   * `rate_limited`, `invalid_key`, ...) and the scope that refused. Errors are logged, never thrown.
   * @default undefined
   * @example onRefused: (e) => log.warn(`${e.reason} on ${e.scope?.kind}`)
   */
  onRefused?: (event: RefusalEvent) => unknown;
  /**
   * Prometheus metrics in LiteLLM's names and labels, served by `guard.metrics` (needs the
   * `prom-client` package). See docs/observability.md.
   * @default false
   * @example metrics: { endUserLabel: true }
   */
  metrics?: boolean | MetricsOptions;
  /**
   * OpenTelemetry spans (GenAI semantic conventions) and the `gen_ai.client.token.usage` histogram,
   * through `@opentelemetry/api` (a no-op until the app registers an SDK).
   * @default false
   * @example tracing: true
   */
  tracing?: boolean | TracingOptions;
  /**
   * Spend logs older than this many days are deleted (at start, then hourly). The daily rollups stay,
   * so reports and the dashboard's totals are unchanged; `/spend/logs` and exports lose the old rows.
   * @default undefined (kept forever)
   * @example spendLogRetentionDays: 90
   */
  spendLogRetentionDays?: number;
}

export interface DashboardOptions {
  /** @default 'admin' */
  username?: string;
  /** @default the master key */
  password?: string;
  /** How long a login lasts. @default 43200000 (12 h) */
  sessionTtlMs?: number;
  /**
   * Failed sign-ins one client address may make within `loginWindowMs`; past it that client's sign-ins
   * are refused with a 429 and `Retry-After` until its oldest failure leaves the window.
   * @default 5
   */
  maxLoginFailuresPerClient?: number;
  /**
   * Failed sign-ins from all clients together within `loginWindowMs` (against guessing from many
   * addresses); past it every sign-in is refused with a 429 until the oldest failure leaves the window.
   * @default 50
   */
  maxLoginFailures?: number;
  /** The sliding window failed sign-ins are counted over. @default 900000 (15 min) */
  loginWindowMs?: number;
}

const DEFAULT_BODY_LIMIT = 10 * 1024 * 1024;

const bytesOption = z
  .number({ error: 'must be a positive whole number of bytes, e.g. 10 * 1024 * 1024' })
  .refine((n) => Number.isSafeInteger(n) && n > 0, {
    message: 'must be a positive whole number of bytes, e.g. 10 * 1024 * 1024',
  });

// LiteLLM's per-model fields: every cost field is a non-negative number (the pricing module reads
// the ones it knows, e.g. `*_above_200k_tokens`, `*_priority`, `tiered_pricing`).
const priceOverride = z.record(z.string(), z.unknown()).superRefine((entry, ctx) => {
  for (const [field, value] of Object.entries(entry)) {
    if (/cost|price/.test(field) && field !== 'tiered_pricing' && (typeof value !== 'number' || value < 0)) {
      ctx.addIssue({ code: 'custom', path: [field], message: 'must be a number of USD, 0 or more' });
    }
  }
});

const optionsSchema = z
  .object({
    storage: z.custom<SpendStorage | Promise<SpendStorage>>(
      (v) =>
        typeof v === 'object' &&
        v !== null &&
        ('reserve' in v || typeof (v as Promise<unknown>).then === 'function'),
      {
        message:
          'must be a SpendStorage (e.g. sqliteStorage() from @spendguard/storage-sqlite) or a promise of one',
      },
    ),
    // Any master key LiteLLM takes is taken (its docs' `sk-1234` included); a guessable one is warned of.
    masterKey: z.string().min(1, 'must not be empty; LiteLLM users usually start it with "sk-"').optional(),
    modelPrices: z.record(z.string(), priceOverride).optional(),
    modelAliases: z.record(z.string(), z.string()).optional(),
    models: z
      .array(z.string().min(1, 'must not be empty'), {
        error: "must be an array of model names, e.g. ['gpt-4o']",
      })
      .refine((names) => new Set(names).size === names.length, { message: 'must name each model once' })
      .optional(),
    serveModelList: z.boolean().optional(),
    priceTable: z
      .union([z.record(z.string(), z.unknown()), z.string().min(1), z.instanceof(URL)], {
        error: 'must be a LiteLLM price table object, a file path or a URL',
      })
      .optional(),
    priceTableRefreshMs: z.number().int().positive().optional(),
    defaultMaxOutputTokens: z.number().int().positive().optional(),
    budgetWaitMs: z.number().int().nonnegative().max(600_000, 'must be at most 600000 ms').optional(),
    minOutputTokens: z.number().int().positive().optional(),
    unpricedModels: z.enum(['refuse', 'allow'], { error: "must be 'refuse' or 'allow'" }).optional(),
    keyCacheSize: z.number().int().positive().optional(),
    keyCacheTtlMs: z.number().int().nonnegative().optional(),
    reservationTtlMs: z.number().int().positive().optional(),
    escrow: z.boolean().optional(),
    maxMeteredBodyBytes: z.number().int().positive().optional(),
    bodyLimitBytes: bytesOption.optional(),
    maxBodyBytesInFlight: bytesOption.optional(),
    enforcement: z
      .enum(['strict', 'shrink', 'soft'], { error: "must be 'strict', 'shrink' or 'soft'" })
      .optional(),
    onStorageError: z.enum(['deny', 'allow'], { error: "must be 'deny' or 'allow'" }).optional(),
    storageTimeoutMs: z.number().int().positive().optional(),
    maxPendingSettlements: z.number().int().positive().optional(),
    settleBatchMs: z.number().int().nonnegative().max(1000, 'must be at most 1000 ms').optional(),
    callContext: z.boolean().optional(),
    reservationSweepMs: z.number().int().nonnegative().optional(),
    heartbeatGraceMs: z
      .number()
      .int()
      .refine((ms) => ms === 0 || ms >= 1000, {
        message: 'must be 0 (off) or at least 1000 ms, e.g. 10000: a process beats every quarter of it',
      })
      .optional(),
    settleBeforeLastByte: z.boolean().optional(),
    shutdownTimeoutMs: z.number().int().nonnegative().optional(),
    logger: z
      .custom<GuardLogger>((v) => typeof v === 'object' && v !== null && 'warn' in v && 'error' in v)
      .optional(),
    now: z.custom<() => Date>((v) => typeof v === 'function').optional(),
    onCall: z
      .custom<(e: CallEvent) => unknown>((v) => typeof v === 'function', 'must be a function')
      .optional(),
    onRefused: z
      .custom<(e: RefusalEvent) => unknown>((v) => typeof v === 'function', 'must be a function')
      .optional(),
    metrics: z
      .union([
        z.boolean(),
        z
          .object({
            registry: z
              .custom<NonNullable<MetricsOptions['registry']>>(
                (v) => typeof v === 'object' && v !== null && 'metrics' in v,
                'must be a prom-client Registry',
              )
              .optional(),
            endUserLabel: z.boolean().optional(),
            maxLabelSets: z.number().int().positive().optional(),
          })
          .strict(),
      ])
      .optional(),
    spendLogRetentionDays: z
      .number({ error: 'must be a number of days, e.g. 90' })
      .positive('must be more than 0 days, e.g. 90 (leave it out to keep logs forever)')
      .optional(),
    tracing: z.union([z.boolean(), z.object({ name: z.string().min(1).optional() }).strict()]).optional(),
    defaultEndUserBudget: z
      .object({
        maxBudget: z.number({ error: 'must be a number of USD' }).nonnegative('must be 0 or more'),
        budgetDuration: z
          .string()
          .refine(isValidBudgetDuration, {
            message: "is not a duration; use e.g. '1d', '7d', '1mo' or 'monthly'",
          })
          .nullable()
          .optional(),
      })
      .strict()
      .optional(),
    defaultEndUserBudgetId: z.string().min(1, 'must name a budget (/budget/new)').max(256).optional(),
    globalBudget: z
      .object({
        maxBudget: z.number().nonnegative('must be a number of USD, 0 or more').nullable(),
        budgetDuration: z
          .string()
          .refine(isValidBudgetDuration, {
            message: "is not a duration; use e.g. '1d', '7d', '1mo' or 'monthly'",
          })
          .nullable()
          .optional(),
        softBudget: z.number().nonnegative('must be a number of USD, 0 or more').nullable().optional(),
      })
      .optional(),
    alerts: z
      .object({
        webhookUrl: z
          .string({ error: 'must be the http(s) URL alerts are POSTed to' })
          .refine((u) => /^https?:\/\//.test(u) && URL.canParse(u), {
            message: 'must be an http(s) URL, e.g. https://hooks.example.com/spendguard',
          }),
        secret: z
          .string({ error: 'must be a string: the HMAC key that signs each delivery' })
          .min(16, 'must be at least 16 characters (use a random secret; receivers verify with it)'),
        thresholds: z
          .array(
            z
              .number()
              .positive('must be a percentage above 0')
              .max(10_000, 'must be a percentage, at most 10000'),
            { error: 'must be an array of percentages of max_budget, e.g. [50, 80, 95, 100]' },
          )
          .optional(),
        retries: z.number().int().min(0).max(20, 'must be at most 20').optional(),
        retryDelayMs: z.number().int().nonnegative().optional(),
        timeoutMs: z.number().int().positive().optional(),
      })
      .optional(),
    dashboard: z
      .object({
        username: z.string().min(1, 'must not be empty').optional(),
        password: z
          .string()
          .min(8, 'must be at least 8 characters (it guards every key and budget)')
          .optional(),
        sessionTtlMs: z.number().int().positive().optional(),
        maxLoginFailuresPerClient: z
          .number()
          .int()
          .positive('must be a whole number of failed sign-ins, 1 or more')
          .optional(),
        maxLoginFailures: z
          .number()
          .int()
          .positive('must be a whole number of failed sign-ins, 1 or more')
          .optional(),
        loginWindowMs: z.number().int().positive('must be a whole number of milliseconds').optional(),
      })
      .optional(),
  })
  .superRefine((o, ctx) => {
    if (o.defaultEndUserBudget !== undefined && o.defaultEndUserBudgetId !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['defaultEndUserBudgetId'],
        message:
          'set defaultEndUserBudget (limits of its own for each new end user) or defaultEndUserBudgetId (a shared budget tier), not both',
      });
    }
    const limit = o.bodyLimitBytes ?? DEFAULT_BODY_LIMIT;
    if (o.maxBodyBytesInFlight !== undefined && o.maxBodyBytesInFlight < limit) {
      ctx.addIssue({
        code: 'custom',
        path: ['maxBodyBytesInFlight'],
        message: `must be at least bodyLimitBytes (${limit}), or no body of the largest size allowed could ever be read`,
      });
    }
  });

type OptionalOptions =
  | 'masterKey'
  | 'modelPrices'
  | 'modelAliases'
  | 'models'
  | 'serveModelList'
  | 'priceTable'
  | 'priceTableRefreshMs'
  | 'alerts'
  | 'globalBudget'
  | 'defaultEndUserBudget'
  | 'defaultEndUserBudgetId'
  | 'dashboard'
  | 'settleBeforeLastByte'
  | 'onCall'
  | 'onRefused'
  | 'metrics'
  | 'tracing'
  | 'spendLogRetentionDays';
export type ResolvedOptions = Required<Omit<SpendGuardOptions, OptionalOptions>> &
  Pick<SpendGuardOptions, OptionalOptions>;

/** The default logger: one object, so that a warning said once per logger is said once per process. */
const CONSOLE_LOGGER: GuardLogger = {
  warn: (m) => console.warn(`[spendguard] ${m}`),
  error: (m, e) => console.error(`[spendguard] ${m}`, e ?? ''),
};

/** Validates once, at creation, with messages that say how to fix the option. */
export function resolveOptions(options: SpendGuardOptions): ResolvedOptions {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .map((i) => `  - ${i.path.join('.') || 'options'}: ${i.message}`)
      .join('\n');
    throw new TypeError(`spendguard: invalid options\n${problems}`);
  }
  const masterKey = options.masterKey ?? process.env.SPENDGUARD_MASTER_KEY ?? process.env.LITELLM_MASTER_KEY;
  const logger: GuardLogger = options.logger ?? CONSOLE_LOGGER;
  const weak = masterKey ? weakMasterKey(masterKey) : null;
  if (weak) logger.warn(weak);
  return {
    storage: options.storage,
    masterKey: masterKey || undefined,
    modelPrices: options.modelPrices,
    modelAliases: { ...LITELLM_DOCS_MODEL_ALIASES, ...options.modelAliases },
    models: options.models,
    serveModelList: options.serveModelList,
    priceTable: options.priceTable,
    priceTableRefreshMs: options.priceTableRefreshMs,
    defaultMaxOutputTokens: options.defaultMaxOutputTokens ?? 4096,
    budgetWaitMs: options.budgetWaitMs ?? 30_000,
    minOutputTokens: options.minOutputTokens ?? 256,
    unpricedModels:
      options.unpricedModels ?? ((options.enforcement ?? 'strict') === 'strict' ? 'refuse' : 'allow'),
    keyCacheSize: options.keyCacheSize ?? 10_000,
    keyCacheTtlMs: options.keyCacheTtlMs ?? 5_000,
    reservationTtlMs: options.reservationTtlMs ?? 600_000,
    escrow: options.escrow ?? true,
    maxMeteredBodyBytes: options.maxMeteredBodyBytes ?? 8 * 1024 * 1024,
    bodyLimitBytes: options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT,
    maxBodyBytesInFlight: options.maxBodyBytesInFlight ?? 128 * 1024 * 1024,
    enforcement: options.enforcement ?? 'strict',
    onStorageError: options.onStorageError ?? 'deny',
    storageTimeoutMs: options.storageTimeoutMs ?? 2_000,
    maxPendingSettlements: options.maxPendingSettlements ?? 100_000,
    settleBatchMs: options.settleBatchMs ?? 5,
    callContext: options.callContext ?? false,
    reservationSweepMs: options.reservationSweepMs ?? 30_000,
    heartbeatGraceMs: options.heartbeatGraceMs ?? 10_000,
    settleBeforeLastByte: options.settleBeforeLastByte,
    shutdownTimeoutMs: options.shutdownTimeoutMs ?? 5_000,
    logger,
    now: options.now ?? (() => new Date()),
    alerts: options.alerts,
    globalBudget: options.globalBudget,
    defaultEndUserBudget: options.defaultEndUserBudget,
    defaultEndUserBudgetId: options.defaultEndUserBudgetId,
    dashboard: options.dashboard,
    onCall: options.onCall,
    onRefused: options.onRefused,
    metrics: options.metrics,
    tracing: options.tracing,
    spendLogRetentionDays: options.spendLogRetentionDays,
  };
}

/**
 * The model names LiteLLM's cost-tracking, budget and customer docs call with (names from their
 * example configs, not in the price table), priced as the model each example config serves, so that
 * the docs' snippets run unchanged. `modelAliases` overrides any of them.
 */
export const LITELLM_DOCS_MODEL_ALIASES: Readonly<Record<string, string>> = {
  // docs/proxy/cost_tracking.md: llama3 served by Groq (api_base https://api.groq.com/openai/v1/).
  llama3: 'groq/llama-3.1-8b-instant',
  // docs/proxy/customers.md and cost_tracking.md: an Azure gpt-3.5 deployment.
  'azure-gpt-3.5': 'azure/gpt-35-turbo',
  // docs/proxy/customers.md: `mistral`, Mistral's small model.
  mistral: 'mistral/mistral-small',
};

/** Master keys printed in LiteLLM's and spendguard's docs: anyone who read them can guess these. */
const EXAMPLE_MASTER_KEYS = new Set([
  'sk-1234',
  'sk-12345',
  'sk-123456',
  'sk-1234567890',
  'sk-master',
  'sk-master-key',
  'sk-admin',
  'sk-test',
  'sk-litellm',
  'sk-litellm-master-key',
  'sk-my-master-key',
]);

/** A loud warning for a master key anyone could guess; `null` for one that looks random enough. */
export function weakMasterKey(masterKey: string): string | null {
  if (EXAMPLE_MASTER_KEYS.has(masterKey.toLowerCase())) {
    return `WARNING: the master key is '${masterKey}', an example value from the docs: anyone can guess it and manage every key, team and budget. Set SPENDGUARD_MASTER_KEY to a random value (e.g. sk-$(openssl rand -hex 24)) before this serves anything real.`;
  }
  // Short enough to guess by trying (the docs' `sk-` plus a few characters).
  if (masterKey.length < 12) {
    return `WARNING: the master key is ${masterKey.length} characters long: short enough to guess. Use at least 16 random characters (e.g. sk-$(openssl rand -hex 24)).`;
  }
  return null;
}
