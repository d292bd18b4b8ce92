/**
 * The storage contract: the one interface every backend implements.
 *
 * It is deliberately small and made of guarded, atomic operations (reserve on many scopes or none,
 * settle, insert a batch of entities or none) rather than generic CRUD, so that core never reads a
 * counter and writes it back. Money is always integer nano-dollars (1e-9 USD).
 */

/**
 * The kinds of scope a call can spend against:
 * - `key`, `user`, `team`: the key's own entities; their counters exist whenever the entity does;
 * - `member`: a user within a team (`${teamId}:${userId}`, LiteLLM's `max_budget_in_team`);
 * - `customer`: the end user (the body's `user` field or `x-litellm-end-user-id`);
 * - `tag`: one tag of the request;
 * - `model`: one model on one key (`${keyHash}:${model}`, LiteLLM's `model_max_budget`);
 * - `global`: the whole deployment (id `global`);
 * - `window`: one more budget window of a key, user or team (`budget_limits`, e.g. a daily cap beside
 *   the monthly `max_budget`), id `${kind}:${id}@${duration}` (`windowScopeId`).
 * The last five are optional (`isOptionalScope`): a call names them whether or not a budget was set,
 * and one without a counter is skipped by reserve and settle (no budget, nothing to count there).
 */
export type ScopeKind =
  | 'key'
  | 'user'
  | 'team'
  | 'member'
  | 'customer'
  | 'tag'
  | 'model'
  | 'global'
  | 'window';

const OPTIONAL_KINDS: ReadonlySet<ScopeKind> = new Set([
  'member',
  'customer',
  'tag',
  'model',
  'global',
  'window',
]);

/** True for the kinds whose counter may be missing (see `ScopeKind`). */
export function isOptionalScope(scope: ScopeRef): boolean {
  return OPTIONAL_KINDS.has(scope.kind);
}

/** The id of the `global` scope. */
export const GLOBAL_SCOPE_ID = 'global';

/** The id of a user's `member` scope in a team. */
export function memberScopeId(teamId: string, userId: string): string {
  return `${teamId}:${userId}`;
}

/** The id of one extra budget window (`budget_limits`) of a key, user or team. */
export function windowScopeId(owner: ScopeRef, duration: string): string {
  return `${owner.kind}:${owner.id}@${duration}`;
}

/** True when `windowId` is one of `owner`'s windows (an id like `user:a@b@1d` is user `a@b`'s). */
export function isWindowOf(windowId: string, owner: ScopeRef): boolean {
  return windowId.slice(0, windowId.lastIndexOf('@')) === `${owner.kind}:${owner.id}`;
}

/** The id of a key's `model` scope (its `model_max_budget` for one model). */
export function modelScopeId(tokenHash: string, model: string): string {
  return `${tokenHash}:${model}`;
}

export interface ScopeRef {
  kind: ScopeKind;
  /** The entity id (for keys: the key's SHA-256 hash). */
  id: string;
}

/** A scope's budget definition, as set when the entity is created. */
export interface BudgetInit {
  /** `null`: no cap, spend is still tracked. */
  maxBudgetNano: number | null;
  /** LiteLLM duration string, `null` for a budget that never resets. */
  budgetDuration: string | null;
  /** The first reset time, computed by core from `budgetDuration`. */
  budgetResetAt: Date | null;
  /**
   * LiteLLM's `soft_budget`: spend at which a `soft_budget_crossed` alert fires, once per period;
   * never refuses a call. Absent or `null`: none.
   */
  softBudgetNano?: number | null;
}

/** A scope's budget counter, as stored. */
export interface BudgetState extends BudgetInit {
  scope: ScopeRef;
  softBudgetNano: number | null;
  spendNano: number;
  /** Sum of open reservations' estimates. */
  reservedNano: number;
}

export interface TeamRecord {
  teamId: string;
  teamAlias: string | null;
  models: string[];
  metadata: Record<string, unknown>;
  blocked: boolean;
  createdAt: Date;
}

export interface UserRecord {
  userId: string;
  userEmail: string | null;
  userRole: string;
  teams: string[];
  models: string[];
  metadata: Record<string, unknown>;
  createdAt: Date;
}

export interface KeyRecord {
  /** SHA-256 hex of the key; the key itself is never stored. */
  tokenHash: string;
  /** Display form, `sk-...abcd`. */
  keyName: string;
  keyAlias: string | null;
  userId: string | null;
  teamId: string | null;
  models: string[];
  tags: string[];
  metadata: Record<string, unknown>;
  blocked: boolean;
  expiresAt: Date | null;
  createdAt: Date;
  /**
   * The budget tier (`/budget/new`) whose limits this key spends under, or `null` (its own). Absent
   * on an insert: `null`. While set, the backend keeps the key's counter and rate limits equal to the
   * tier's, as it does for a linked end user (`CustomerRecord.budgetId`).
   */
  budgetId?: string | null;
}

/** An end user with a budget (LiteLLM's customer, `/customer/new`). */
export interface CustomerRecord {
  endUserId: string;
  alias: string | null;
  blocked: boolean;
  metadata: Record<string, unknown>;
  createdAt: Date;
  /**
   * The budget tier (`/budget/new`) whose limits this end user spends under, or `null` (its own).
   * Absent on an insert: `null`. While set, the backend keeps the end user's counter and rate limits
   * equal to the tier's, in the same transaction as every write that links it or changes the tier.
   */
  budgetId?: string | null;
}

/**
 * A LiteLLM budget object (`/budget/new`): a tier of limits, not a counter. Every end user linked to
 * it (`CustomerRecord.budgetId`) spends against its own counter under these limits; changing the tier
 * changes them for every linked end user at once.
 */
export interface BudgetTierRecord {
  budgetId: string;
  maxBudgetNano: number | null;
  softBudgetNano: number | null;
  budgetDuration: string | null;
  rpmLimit: number | null;
  tpmLimit: number | null;
  maxParallelRequests: number | null;
  createdAt: Date;
  updatedAt: Date;
}

/** The fields of a budget tier that `updateBudgetTier` may change. */
export type BudgetTierPatch = Partial<
  Pick<
    BudgetTierRecord,
    'maxBudgetNano' | 'softBudgetNano' | 'budgetDuration' | 'rpmLimit' | 'tpmLimit' | 'maxParallelRequests'
  >
>;

/** `deleteBudgetTier`'s answer: whether the tier existed, and how many end users and keys link to it. */
export interface BudgetTierDeletion {
  found: boolean;
  /** End users and keys linked to it; when more than 0, nothing was deleted. */
  linked: number;
}

/** A tag with a budget (`/tag/new`). */
export interface TagRecord {
  name: string;
  description: string | null;
  metadata: Record<string, unknown>;
  createdAt: Date;
}

/** A team membership (LiteLLM's `members_with_roles`); its budget counter is scope `member`. */
export interface MemberRecord {
  teamId: string;
  userId: string;
  /** `admin` manages the team (its info, members and keys); `user` only uses it. */
  role: MemberRole;
  createdAt: Date;
}

export type MemberRole = 'admin' | 'user';

/** The fields of a team that `updateTeam` may change. */
export type TeamPatch = Partial<Pick<TeamRecord, 'teamAlias' | 'models' | 'metadata' | 'blocked'>>;

/** The fields of a user that `updateUser` may change. */
export type UserPatch = Partial<Pick<UserRecord, 'userEmail' | 'userRole' | 'models' | 'metadata'>>;

/** What `deleteTeam` / `deleteUser` removed along with the entity (spend logs always stay). */
export interface DeletedEntity {
  /** Hashes of the keys deleted with it (LiteLLM deletes a team's or user's keys with it). */
  deletedKeys: string[];
}

/** `regenerateKey`'s input: a new secret for the same key record (same counter, team, user, settings). */
export interface RegenerateKeyInput {
  /** The key record (its id, which stays). */
  tokenHash: string;
  /** SHA-256 of the new secret. */
  newSecretHash: string;
  /** The new display form, `sk-...abcd`. */
  newKeyName: string;
  /**
   * Until when the secret being replaced keeps working; `null` or not after `now`: it stops at once.
   */
  previousValidUntil: Date | null;
  now: Date;
}

/** A key found by the secret presented, and until when that secret works (`null`: no grace limit). */
export interface KeyBySecret {
  key: KeyRecord;
  /** Set when the secret was replaced by `regenerateKey` and is in its grace period. */
  secretValidUntil: Date | null;
}

/** The fields of a key that `updateKey` may change. */
export type KeyPatch = Partial<
  Pick<
    KeyRecord,
    'keyAlias' | 'models' | 'tags' | 'metadata' | 'blocked' | 'expiresAt' | 'budgetId' | 'teamId'
  >
>;

/** One key's change in `updateKeys`: its fields and, when given, its budget definition. */
export interface KeyUpdate {
  tokenHash: string;
  patch: KeyPatch;
  budget?: Partial<BudgetInit>;
}

/** One write of `insert`: an entity together with its budget counter (and rate limits, when it has any). */
export type EntityInsert =
  | { type: 'team'; record: TeamRecord; budget: BudgetInit; rateLimits?: RateLimits | null }
  | { type: 'user'; record: UserRecord; budget: BudgetInit; rateLimits?: RateLimits | null }
  | { type: 'key'; record: KeyRecord; budget: BudgetInit; rateLimits?: RateLimits | null }
  | { type: 'customer'; record: CustomerRecord; budget: BudgetInit; rateLimits?: RateLimits | null }
  | { type: 'tag'; record: TagRecord; budget: BudgetInit; rateLimits?: RateLimits | null }
  /** Also adds the team to the user's `teams` (when absent); counter id `memberScopeId(teamId, userId)`. */
  | { type: 'member'; record: MemberRecord; budget: BudgetInit; rateLimits?: RateLimits | null }
  /** A counter alone, for the kinds without a record of their own (`member`, `model`, `global`). */
  | { type: 'budget'; scope: ScopeRef; budget: BudgetInit };

/** The scope an `EntityInsert` creates a counter for. */
export function scopeOfInsert(e: EntityInsert): ScopeRef {
  switch (e.type) {
    case 'team':
      return { kind: 'team', id: e.record.teamId };
    case 'user':
      return { kind: 'user', id: e.record.userId };
    case 'key':
      return { kind: 'key', id: e.record.tokenHash };
    case 'customer':
      return { kind: 'customer', id: e.record.endUserId };
    case 'tag':
      return { kind: 'tag', id: e.record.name };
    case 'member':
      return { kind: 'member', id: memberScopeId(e.record.teamId, e.record.userId) };
    case 'budget':
      return e.scope;
  }
}

/**
 * A scope's rate limits, with LiteLLM's meaning: `rpm_limit`, `tpm_limit`, `max_parallel_requests`,
 * and the per-model `model_rpm_limit` / `model_tpm_limit` (`{ "gpt-4o": 10 }`). `null`: no limit.
 * Stored per scope (kind + id), so any scope kind can have them.
 */
export interface RateLimits {
  rpmLimit: number | null;
  tpmLimit: number | null;
  maxParallelRequests: number | null;
  modelRpmLimit: Record<string, number>;
  modelTpmLimit: Record<string, number>;
}

/**
 * What a bucket counts: `rpm` requests admitted in the window, `tpm` tokens used in the window (the
 * calls' actual usage, added when they settle), `parallel` calls in flight (leases).
 */
export type RateMetric = 'rpm' | 'tpm' | 'parallel';

/** One counter a call is checked against. */
export interface RateBucket {
  scope: ScopeRef;
  metric: RateMetric;
  /** `''` for the scope's own limit; a model name for a per-model limit. */
  model: string;
  limit: number;
}

/** A bucket as it stands after an acquire (or the refusal). */
export interface RateBucketState extends RateBucket {
  /** Requests or tokens counted in the current window, or leases held; the admitted call included. */
  used: number;
  /** When the current window ends (`rpm`, `tpm`); `null` for `parallel`. */
  resetAt: Date | null;
}

export interface RateAcquireInput {
  /**
   * Names the call's parallel leases, released by `settleRate`. `<processId>:<unique>` for a process
   * that beats (see `heartbeat`): `settleDeadProcesses` then frees the leases of a dead one.
   */
  leaseId: string;
  /** Distinct buckets (core never passes one twice). */
  buckets: RateBucket[];
  now: Date;
  /**
   * Window length. A window starts at the first request after the previous one ended and lasts this
   * long (LiteLLM's fixed window).
   */
  windowMs: number;
  /** When the leases come back if never released (the process died mid-call). */
  leaseExpiresAt: Date;
}

export type RateAcquireResult =
  | { ok: true; states: RateBucketState[] }
  | {
      ok: false;
      /** The first bucket (in the order given) that refused; nothing was counted anywhere. */
      refused: RateBucketState;
    };

export interface RateSettleInput {
  /** The call's leases to release (none held: nothing happens). */
  leaseId: string;
  /** `tpm` buckets to add `tokens` to, in their current window (a new one if it ended). */
  buckets: RateBucket[];
  tokens: number;
  now: Date;
  windowMs: number;
}

export interface SpendLogRecord {
  requestId: string;
  callType: string;
  apiKeyHash: string;
  spendNano: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  startTime: Date;
  endTime: Date;
  model: string;
  provider: string | null;
  userId: string | null;
  teamId: string | null;
  endUser: string | null;
  tags: string[];
  /** `success` or `failure` (the route answered an error status or the stream was cut). */
  status: 'success' | 'failure';
  /** True when tokens were counted locally because the provider reported no usage. */
  estimated: boolean;
  /** HTTP status the route answered. */
  httpStatus: number;
  /** JSON-serialisable only (backends store it as JSON). */
  metadata: Record<string, unknown>;
  /**
   * The provider's id for its response (`chatcmpl-...`, `resp_...`, `msg_...`, a Gemini `responseId`):
   * what LiteLLM keys its spend logs by. Absent or `null`: the response gave none; backends return `null`.
   */
  responseId?: string | null;
}

/**
 * How a budget admits calls:
 * - `strict`: only if the worst case fits (`spend + reserved + amount <= max`): spend never exceeds a cap;
 * - `shrink`: LiteLLM's behaviour, while any headroom is left counting calls in flight
 *   (`spend + reserved < max`): overshoot is at most the last call admitted;
 * - `soft`: on recorded spend only (`spend < max`).
 */
export type EnforcementMode = 'strict' | 'shrink' | 'soft';

/**
 * What an entity update (`updateKey`, `updateTeam`, `updateUser`) also writes, in its transaction: all
 * of it with the entity's own change, or none of it. Applied only when the entity exists.
 */
export interface ScopeChanges {
  /** For the due period reset of the counters changed. */
  now: Date;
  /** Rate limits to set on a scope (`null` removes them). */
  rateLimits?: { scope: ScopeRef; limits: RateLimits | null };
  /** `model` and `window` counters to delete (any other kind is refused, and nothing is written). */
  deleteScopes?: ScopeRef[];
  /**
   * `model` and `window` counters to define: an existing one gets `set` (after its due reset; spend
   * and reservations stay), a missing one is created from `insert`.
   */
  upsertBudgets?: Array<{ scope: ScopeRef; set: Partial<BudgetInit>; insert: BudgetInit }>;
}

/** The kinds a `ScopeChanges` may delete or define. */
export function assertChangeableScopes(changes: ScopeChanges | undefined): void {
  if (!changes) return;
  const scopes = [...(changes.deleteScopes ?? []), ...(changes.upsertBudgets ?? []).map((u) => u.scope)];
  for (const scope of scopes) {
    if (scope.kind !== 'model' && scope.kind !== 'window') {
      throw new Error(`an entity update cannot delete or define a ${scope.kind} counter`);
    }
  }
}

/** What a spend log needs if a reservation is never settled and is charged after its TTL. */
export interface PendingCall {
  requestId: string;
  callType: string;
  apiKeyHash: string;
  model: string;
  userId: string | null;
  teamId: string | null;
  endUser: string | null;
  tags: string[];
  startTime: Date;
}

export interface ReserveInput {
  /** Unique per reservation; a reused id is a `StorageConflictError`. */
  reservationId: string;
  /** Distinct scopes (core never passes one twice). */
  scopes: ScopeRef[];
  /** Upper-bound estimate reserved on every scope. */
  amountNano: number;
  now: Date;
  /** After this the reservation counts as abandoned (see the TTL rule in DESIGN.md). */
  expiresAt: Date;
  /** @default 'strict' */
  mode?: EnforcementMode;
  /** Attribution for the spend log written if the reservation expires unsettled. */
  pending?: PendingCall;
  /**
   * The process holding the reservation (see `heartbeat`): once that process's heartbeat is stale,
   * `settleDeadProcesses` charges it. Absent, or a process that never beat: only the TTL does.
   */
  processId?: string;
}

export type ReserveResult =
  | { ok: true; states: BudgetState[] }
  | {
      ok: false;
      /** The first scope (in the order given) whose budget cannot take the amount. */
      refused: BudgetState;
    };

export interface SettleInput {
  reservationId: string;
  /** The scopes charged (the same as reserved). */
  scopes: ScopeRef[];
  /** The actual cost, added to every scope and to the rollups; authoritative (equals `log.spendNano`). */
  costNano: number;
  now: Date;
  log: SpendLogRecord;
}

export interface SettleResult {
  /** False when this request id was already settled (the call is idempotent). */
  applied: boolean;
  states: BudgetState[];
}

/**
 * `setLease`'s input: a lease is an open reservation a process holds for many calls (escrow
 * admission), sized and resized as a whole; the calls it admits settle with ids of their own.
 */
export interface LeaseInput {
  /** The lease's reservation id, never used by `reserve` (core: `lease:<processId>:<n>`). */
  leaseId: string;
  /** Distinct scopes; an open lease keeps the scopes it was opened with (core passes the same). */
  scopes: ScopeRef[];
  /** What the lease holds once written; 0 closes it. */
  amountNano: number;
  now: Date;
  /** After this the lease counts as abandoned and is charged at its amount, as a reservation is. */
  expiresAt: Date;
  /** @default 'strict' */
  mode?: EnforcementMode;
  /** Attribution for the spend log written if the lease is charged unreturned. */
  pending?: PendingCall;
  /** The process holding the lease (see `ReserveInput.processId`). */
  processId?: string;
}

export type LeaseResult =
  | {
      ok: true;
      /** The counters of the lease's scopes after the write (as `reserve` answers). */
      states: BudgetState[];
      /** What the lease held before this write (0: it was not open). */
      previousNano: number;
    }
  | {
      ok: false;
      /** The first scope whose budget cannot take the growth; nothing was written. */
      refused: BudgetState;
      /** What the lease still holds (0: not open). */
      heldNano: number;
    };

export interface SpendLogQuery {
  apiKeyHash?: string;
  userId?: string;
  teamId?: string;
  /** The log whose `requestId` or `responseId` is this one. */
  requestId?: string;
  /** Inclusive. */
  startTime?: Date;
  /** Exclusive. */
  endTime?: Date;
  model?: string;
  status?: 'success' | 'failure';
  /** Only logs carrying every one of these tags. */
  tags?: string[];
  /**
   * Keyset paging: only logs after this one in the newest-first order (older `startTime`, or the same
   * `startTime` and a smaller `requestId`).
   */
  before?: { startTime: Date; requestId: string };
  /** Newest first (ties by `requestId`, descending); default 100, at most 1000. */
  limit?: number;
}

/** Which budgets `listBudgets` returns: capped scopes whose spend is at least a fraction of their cap. */
export interface BudgetListQuery {
  /**
   * Only scopes whose spend (after any due reset) is at least this fraction of `maxBudgetNano`;
   * `0` lists every capped scope.
   * @default 0
   */
  minUsedFraction?: number;
  /** Only these kinds; absent: all. */
  kinds?: ScopeKind[];
  /** At most this many, default 100, at most 1000. */
  limit?: number;
}

export interface TagSpend {
  tag: string;
  requests: number;
  spendNano: number;
}

/**
 * A dimension of the daily rollups. `key` is the key's hash, `customer` the end user (the request's
 * `user` field), `provider` the model's provider as priced when the call settled.
 */
export type SpendDimension = 'day' | 'team' | 'user' | 'key' | 'model' | 'provider' | 'customer' | 'tag';

/**
 * Which rollup rows a spend report counts. Each filter keeps the rows whose value is one of those
 * listed (an empty list keeps none); an absent filter keeps every row.
 */
export interface SpendReportFilters {
  teamIds?: string[];
  userIds?: string[];
  apiKeyHashes?: string[];
  models?: string[];
  providers?: string[];
  endUsers?: string[];
  /**
   * Only requests carrying one of these tags. Tag rows count a request once per tag it carries, so
   * with several tags here a request that has two of them counts twice unless `tag` is grouped by.
   */
  tags?: string[];
}

export interface SpendReportQuery {
  /** First UTC day, `YYYY-MM-DD`, inclusive. */
  fromDay: string;
  /** Last UTC day, `YYYY-MM-DD`, inclusive. */
  toDay: string;
  /**
   * The dimensions to group by, in the order rows are sorted (none: one row of totals, or none when
   * nothing was spent). With `tag` (or a `tags` filter) the answer comes from the tag rollup, where a
   * request counts once under each of its tags and untagged requests do not appear.
   */
  groupBy: SpendDimension[];
  filters?: SpendReportFilters;
  /**
   * Keep only the `n` groups with the most spend over the whole range (ties: the smaller value in
   * code-unit order, a missing one first) and sum every other group into rows marked `other`, one per
   * remaining combination of the other dimensions (per day, say). The rows still sum to the report's
   * exact totals. Needs exactly one grouped dimension besides `day`: that is the one ranked.
   */
  top?: SpendReportTop;
}

/** The ranked form of a spend report: see `SpendReportQuery.top`. */
export interface SpendReportTop {
  /** How many groups to keep apart, 1 or more. */
  n: number;
}

/**
 * One group of a spend report: its dimension values (only those grouped by are set; a missing team,
 * user, provider or customer is `null`) and its sums.
 */
export interface SpendReportRow {
  day?: string;
  teamId?: string | null;
  userId?: string | null;
  apiKeyHash?: string;
  model?: string;
  provider?: string | null;
  endUser?: string | null;
  tag?: string;
  /**
   * Set (true) on the rows of a `top` report that sum every group outside the top `n`; the ranked
   * dimension is `null` there.
   */
  other?: true;
  requests: number;
  /** Requests logged with status `failure`. */
  failedRequests: number;
  spendNano: number;
  promptTokens: number;
  completionTokens: number;
}

/** One alert to send at most once: per scope, budget period and threshold. */
export interface AlertClaim {
  scope: ScopeRef;
  /** The budget period, e.g. its reset time as an ISO string; `''` for a budget that never resets. */
  period: string;
  /** Which threshold, e.g. `'80%'` or `'soft_budget'`. */
  threshold: string;
  now: Date;
  /** After this the claim may be forgotten (the period is over); `null`: keep it. */
  expiresAt: Date | null;
}

/**
 * A dashboard sign-in, kept in the guard's store so that logout and expiry hold on every instance
 * sharing it and across restarts.
 */
export interface DashboardSessionRecord {
  /** SHA-256 (hex) of the random session id the cookie carries: the id itself is never stored. */
  idHash: string;
  username: string;
  /**
   * Binds the session to the credentials it was opened with (an HMAC keyed by the session id, so
   * worthless without the cookie): a changed username or password ends it.
   */
  credentialMac: string;
  createdAt: Date;
  expiresAt: Date;
}

export interface StorageCapabilities {
  /** Several processes may share this store and its budgets stay exact. */
  sharedAcrossProcesses: boolean;
  /**
   * A commit is made by this process itself, in microseconds, and survives the process's crash once
   * it returns (an embedded database such as SQLite in WAL mode), rather than by a server a network
   * round trip away. The guard then commits each call's settlement before the response's last byte
   * leaves (see `settleBeforeLastByte`). Absent: false.
   */
  commitsInProcess?: boolean;
  /** Human-readable backend name for logs and /health. */
  name: string;
}

export interface SpendStorage {
  readonly capabilities: StorageCapabilities;
  /** Opens the store and applies migrations. Idempotent. */
  init(): Promise<void>;
  close(): Promise<void>;
  /**
   * Optional: true when `error`, thrown by one of this store's operations, means that the store answered
   * and refused a value the operation carries (a NUL character Postgres cannot hold, a number outside a
   * column's range, a fractional nano-dollar a STRICT table refuses): the input's fault, not an outage.
   * The guard answers such a call 400, never counts it as a storage error and never retries it (it could
   * never succeed). A backend that writes several calls in one statement fails such a call alone.
   */
  isInputError?(error: unknown): boolean;

  /** Inserts every entity and its budget counter, or none (`StorageConflictError` on a taken id). */
  insert(entities: EntityInsert[]): Promise<void>;
  getTeam(teamId: string): Promise<TeamRecord | null>;
  findTeamsByAlias(alias: string): Promise<TeamRecord[]>;
  getUser(userId: string): Promise<UserRecord | null>;
  getKey(tokenHash: string): Promise<KeyRecord | null>;
  listKeys(filter: { userId?: string; teamId?: string }): Promise<KeyRecord[]>;
  listUsers(filter: { teamId?: string }): Promise<UserRecord[]>;

  /**
   * Atomically changes a key's fields and, when `budget` is given, its budget definition (spend and
   * reservations stay), and applies `also` in the same transaction. Records a key change for
   * `watchKeyChanges`. `null` when the key does not exist, and then nothing is written. A `budgetId`
   * in the patch links the key to that tier (its counter and rate limits take the tier's, after
   * `budget` and `also`), `null` unlinks it, as `updateCustomer` does; a tier that does not exist
   * throws `missingBudgetTier`'s error, and nothing is written.
   */
  updateKey(
    tokenHash: string,
    patch: KeyPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<KeyRecord | null>;
  /**
   * Several keys' changes (as `updateKey`, without `also`) in one transaction: every key changed, or
   * none. Records a key change for each. `null` when one of the keys does not exist, and then nothing
   * is written. A linked key (a `budgetId` in its patch, or one it had) takes its tier's limits, as in
   * `updateKey`; a tier that does not exist throws `missingBudgetTier`'s error, and nothing is
   * written. Returns the keys as changed, in the order given.
   */
  updateKeys(changes: KeyUpdate[]): Promise<KeyRecord[] | null>;
  /** Deletes keys and their budget counters (their spend logs stay); records key changes. Returns how many existed. */
  deleteKeys(tokenHashes: string[]): Promise<number>;
  /**
   * Optional: calls `listener` with the hash of every key changed by any process sharing this store
   * (`null`: anything may have changed), within about a second. Returns an unsubscribe function.
   */
  watchKeyChanges?(listener: (tokenHash: string | null) => void): () => void;
  getCustomer(endUserId: string): Promise<CustomerRecord | null>;
  getTag(name: string): Promise<TagRecord | null>;
  /** Every tag created with a budget, by name. */
  listTags(): Promise<TagRecord[]>;
  /** Every customer (end user), by id in code-unit order (LiteLLM's `/customer/list`). */
  listCustomers(): Promise<CustomerRecord[]>;
  /**
   * Atomically changes a customer's fields and its budget definition, with `also`; `null` when it does
   * not exist, and nothing written. A `budgetId` in the patch links it to that tier (its counter and
   * rate limits take the tier's, after `budget` and `also`), `null` unlinks it (its counter and rate
   * limits stay as they are, its own from then on). An insert or update naming a tier that does not
   * exist throws `missingBudgetTier`'s error, and nothing is written.
   */
  updateCustomer(
    endUserId: string,
    patch: Partial<Pick<CustomerRecord, 'alias' | 'blocked' | 'metadata' | 'budgetId'>>,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<CustomerRecord | null>;
  /**
   * Atomically sets `blocked` on every one of these customers; blocking one not stored creates it
   * (no alias, no metadata, with `created`'s counter, or linked to `created.budgetId`'s tier as an
   * insert would link it), as LiteLLM's `/customer/block` does.
   */
  blockCustomers(
    endUserIds: string[],
    blocked: boolean,
    created: { createdAt: Date; budget: BudgetInit; budgetId?: string | null },
  ): Promise<void>;
  /**
   * Inserts a budget tier (`StorageConflictError` on a taken id). Budget tiers, their links and the
   * linked counters are all written by these operations and by `insert` / `updateCustomer` /
   * `updateKey`, each in one
   * transaction, using `tierBudgetInit` and `tierRateLimits` for the linked counters.
   */
  insertBudgetTier(tier: BudgetTierRecord): Promise<void>;
  getBudgetTier(budgetId: string): Promise<BudgetTierRecord | null>;
  /** Every budget tier, by id in code-unit order. */
  listBudgetTiers(): Promise<BudgetTierRecord[]>;
  /**
   * Atomically changes a tier and, in the same transaction, the counter of every end user and key
   * linked to it (due reset first; spend and reservations stay; a changed duration restarts the reset
   * schedule from `now`) and their rate limits; records a key change for each linked key. `null`: no
   * such tier, and nothing written.
   */
  updateBudgetTier(budgetId: string, patch: BudgetTierPatch, now: Date): Promise<BudgetTierRecord | null>;
  /** Atomically deletes a tier unless an end user or a key still links to it (then nothing is written). */
  deleteBudgetTier(budgetId: string): Promise<BudgetTierDeletion>;
  /** Atomically changes a tag's fields and its budget definition; `null` when it does not exist. */
  updateTag(
    name: string,
    patch: Partial<Pick<TagRecord, 'description' | 'metadata'>>,
    budget?: Partial<BudgetInit>,
  ): Promise<TagRecord | null>;
  /**
   * Atomically deletes scopes with their records (customers, tags), counters and rate limits; spend
   * logs and rollups stay. Only for the optional kinds (`isOptionalScope`). Returns how many counters
   * existed.
   */
  deleteScopes(scopes: ScopeRef[]): Promise<number>;
  /**
   * Atomically changes a counter's budget definition (spend and reservations stay). `null` when the
   * scope has no counter.
   */
  updateBudget(scope: ScopeRef, budget: Partial<BudgetInit>, now: Date): Promise<BudgetState | null>;
  /**
   * Atomically sets a counter's recorded spend to `toNano` (a manual reset; reservations stay and
   * later settles add to it). `null` when the scope has no counter.
   */
  resetSpend(scope: ScopeRef, toNano: number, now: Date): Promise<BudgetState | null>;
  /**
   * The `window` counters of these owners (`windowScopeId(owner, …)` for any duration), due resets
   * applied as `getBudgets` does, in id order.
   */
  listWindows(owners: ScopeRef[], now: Date): Promise<BudgetState[]>;
  /**
   * The key a presented secret opens: the key whose current secret it is (a key never regenerated:
   * its own `tokenHash`), or a key whose previous secret it is while that secret's grace period runs
   * (`validUntil > now`). `null` otherwise.
   */
  findKeyBySecret(secretHash: string, now: Date): Promise<KeyBySecret | null>;
  /**
   * Atomically gives a key a new secret: the record, its id and its budget counter stay, the secret
   * replaced keeps working until `previousValidUntil` (earlier grace secrets keep theirs). Records key
   * changes for the key and the replaced secret. `null` when the key does not exist.
   */
  regenerateKey(input: RegenerateKeyInput): Promise<KeyRecord | null>;

  /**
   * Atomically changes a team's fields and budget definition, with `also`; records an "any key"
   * change. `null`: no such team, and nothing written.
   */
  updateTeam(
    teamId: string,
    patch: TeamPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<TeamRecord | null>;
  /**
   * Atomically deletes teams, each with its counter, its memberships and their counters, its keys and
   * their counters, and removes it from its users' `teams`; records key changes. Spend logs and
   * rollups stay. `null` when one of them does not exist, and then none is deleted.
   */
  deleteTeams(teamIds: string[]): Promise<DeletedEntity | null>;
  /** Every team (oldest first), or those `userId` is a member of. */
  listTeams(filter: { userId?: string }): Promise<TeamRecord[]>;
  /**
   * Atomically changes a user's fields and budget definition, with `also`; records an "any key"
   * change. `null`: no such user, and nothing written.
   */
  updateUser(
    userId: string,
    patch: UserPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<UserRecord | null>;
  /**
   * Atomically deletes users, each with its counter, its memberships and their counters, its keys and
   * their counters; records key changes. Spend logs and rollups stay. `null` when one of them does
   * not exist, and then none is deleted.
   */
  deleteUsers(userIds: string[]): Promise<DeletedEntity | null>;
  /** Memberships (oldest first) of a team, of a user, or both. */
  listMembers(filter: { teamId?: string; userId?: string }): Promise<MemberRecord[]>;
  /**
   * Atomically changes a member's role and its member budget definition, with `also`. `null`: not a
   * member, and nothing written.
   */
  updateMember(
    teamId: string,
    userId: string,
    patch: { role?: MemberRole },
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<MemberRecord | null>;
  /**
   * Atomically removes a membership and its counter, removes the team from the user's `teams`, and
   * deletes the user's keys in that team (as LiteLLM does); records key changes. `null`: not a member.
   */
  deleteMember(teamId: string, userId: string): Promise<DeletedEntity | null>;

  /** Budget counters for these scopes (missing ones are omitted), as they stand after any due reset (a backend may answer with the reset applied without writing it). */
  getBudgets(scopes: ScopeRef[], now: Date): Promise<BudgetState[]>;

  /**
   * Capped budget counters (a `maxBudgetNano` is set) matching `query`, as they stand after any due
   * reset (applied in the answer, not necessarily written), in `compareBudgetUse` order: the most
   * used fraction of its cap first. A scan of the budget counters, never of the spend logs.
   */
  listBudgets(query: BudgetListQuery, now: Date): Promise<BudgetState[]>;

  /**
   * Atomically, on every scope or none: apply due period resets, then check
   * `spend + reserved + amount <= max` where a max is set, then add `amount` to `reserved`
   * and record the reservation. A `key`, `user` or `team` scope without a counter row is an error;
   * an optional one (`isOptionalScope`) without a counter is skipped, and left out of `states`.
   */
  reserve(input: ReserveInput): Promise<ReserveResult>;
  /**
   * Atomically: release the reservation (if still open), add `costNano` to the spend of each of its
   * scopes, write the spend log and the daily rollups. Idempotent on `log.requestId`.
   */
  settle(input: SettleInput): Promise<SettleResult>;
  /**
   * Optional (escrow admission uses it where present): atomically, on every scope or none, sets lease
   * `leaseId` to hold `amountNano` until `expiresAt`. A lease not open is reserved as `reserve` reserves
   * (`amountNano` 0: nothing is written); an open one changes by the difference on each of its scopes
   * (due resets applied), a growth checked as `reserve` checks its amount, a shrink never refused; 0
   * releases it. Refused: nothing is written and the lease keeps what it held. An open lease is a
   * reservation for every other operation: `release`, `expireReservations` and `settleDeadProcesses`
   * release or charge it at what it holds.
   */
  setLease?(input: LeaseInput): Promise<LeaseResult>;
  /**
   * Atomically drops an open reservation without charging anything (an admission that was abandoned,
   * e.g. after a timeout). False when it was not open.
   */
  release(reservationId: string): Promise<boolean>;
  /**
   * Atomically charges every reservation whose `expiresAt <= now` at its reserved amount (spend +=
   * amount, reserved -= amount on each of its scopes, due resets applied), writes its spend log
   * (`expiredReservationLog`) and rollups, and deletes it; at most `limit` of them (default 1000).
   * A later settle of the same request id finds the log and applies nothing. Returns how many expired.
   */
  expireReservations(now: Date, limit?: number): Promise<number>;
  /**
   * Records that process `processId` is alive at `at` (its first beat registers it). Every process
   * sharing the store beats every few seconds; `settleDeadProcesses` reads the beats.
   */
  heartbeat(processId: string, at: Date): Promise<void>;
  /**
   * Atomically charges, as `expireReservations` does (spend log from `expiredReservationLog` with the
   * dead process named), every open reservation whose `processId` last beat at or before
   * `staleBefore`, at most `limit` of them (default 1000), due resets as of `now`; deletes the
   * parallel-request leases of those processes (`leaseId` `<processId>:…`); then forgets the processes
   * stale before then that hold nothing. A reservation without a process, or of one that
   * never beat, is left to the TTL. Instances sweeping at once charge each reservation once; a later
   * settle of the same request id applies nothing. Returns how many were charged.
   */
  settleDeadProcesses(staleBefore: Date, now: Date, limit?: number): Promise<number>;

  querySpendLogs(query: SpendLogQuery): Promise<SpendLogRecord[]>;
  /**
   * Deletes the spend logs whose `startTime` is before `before`, oldest first, at most `limit`
   * (default 10000) per call; returns how many. Only the logs: the daily rollups stay, so reports and
   * the dashboard's totals are unchanged (the `spendLogRetentionDays` option).
   */
  pruneSpendLogs(before: Date, limit?: number): Promise<number>;
  /** Spend per tag from the daily rollups, over the UTC days `fromDay..toDay` (`YYYY-MM-DD`, inclusive). */
  spendByTag(query: { fromDay?: string; toDay?: string }): Promise<TagSpend[]>;
  /**
   * Sums of the daily rollups over the UTC days `fromDay..toDay`, grouped by `groupBy`, in
   * `compareSpendReportRows` order; never a scan of the spend logs. Groups with no requests are
   * omitted. From the tag rollup when grouping or filtering by tag: there a request with several
   * tags counts once per tag, and a request without tags is not counted.
   */
  spendReport(query: SpendReportQuery): Promise<SpendReportRow[]>;
  /**
   * Atomically records that this alert is being sent: true for the first claim of a scope, period
   * and threshold, false for every later one from any process sharing this store. Claims whose
   * `expiresAt` has passed may be dropped.
   */
  claimAlert(claim: AlertClaim): Promise<boolean>;

  /** Stores a new dashboard session, and deletes the sessions expired at `now`. */
  createDashboardSession(session: DashboardSessionRecord, now: Date): Promise<void>;
  /** A dashboard session by its id's hash; `null` when there is none or it has expired at `now`. */
  getDashboardSession(idHash: string, now: Date): Promise<DashboardSessionRecord | null>;
  /** Ends a dashboard session (logout); `false` when there was none. */
  deleteDashboardSession(idHash: string): Promise<boolean>;

  /** Sets (replaces) a scope's rate limits; `null` removes them. */
  setRateLimits(scope: ScopeRef, limits: RateLimits | null): Promise<void>;
  /** The rate limits of these scopes, in the order given; scopes without any are omitted. */
  getRateLimits(scopes: ScopeRef[]): Promise<Array<{ scope: ScopeRef; limits: RateLimits }>>;
  /**
   * Atomically, on every bucket or none: start a new window where the current one ended, drop
   * expired leases, then admit iff every `rpm` bucket has `used + 1 <= limit`, every `tpm` bucket
   * `used < limit` and every `parallel` bucket fewer than `limit` live leases; if so count the
   * request on each `rpm` bucket and take a lease (until `leaseExpiresAt`) on each `parallel` one.
   * The decision is `decideRateBucket`'s (core), so every backend agrees.
   */
  acquireRate(input: RateAcquireInput): Promise<RateAcquireResult>;
  /** Atomically: adds the call's tokens to its `tpm` buckets and releases its leases. */
  settleRate(input: RateSettleInput): Promise<void>;
}

/** `key:abc`: the map key used for scopes in memory and in reservation records. */
export function scopeKey(scope: ScopeRef): string {
  return `${scope.kind}:${scope.id}`;
}

/**
 * The used fraction of a capped budget, `spend / max` (a cap of 0 counts as fully used whatever the
 * spend: `Infinity`). Backends compute the same IEEE division in SQL.
 */
export function budgetUsedFraction(state: Pick<BudgetState, 'spendNano' | 'maxBudgetNano'>): number {
  const max = state.maxBudgetNano ?? 0;
  return max > 0 ? state.spendNano / max : Number.POSITIVE_INFINITY;
}

/** The order of `listBudgets`: most used first, ties by kind then id in code-unit order. */
export function compareBudgetUse(a: BudgetState, b: BudgetState): number {
  const fa = budgetUsedFraction(a);
  const fb = budgetUsedFraction(b);
  if (fa !== fb) return fb > fa ? 1 : -1;
  if (a.scope.kind !== b.scope.kind) return a.scope.kind < b.scope.kind ? -1 : 1;
  return a.scope.id === b.scope.id ? 0 : a.scope.id < b.scope.id ? -1 : 1;
}

/** The order of `spendByTag`: most spend first, ties by tag in code-unit order (locale-independent). */
export function compareTagSpend(a: TagSpend, b: TagSpend): number {
  return b.spendNano - a.spendNano || (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0);
}

const REPORT_FIELDS: Record<SpendDimension, keyof SpendReportRow> = {
  day: 'day',
  team: 'teamId',
  user: 'userId',
  key: 'apiKeyHash',
  model: 'model',
  provider: 'provider',
  customer: 'endUser',
  tag: 'tag',
};

/** The row field that holds a dimension's value (`team` -> `teamId`). */
export function spendReportField(dimension: SpendDimension): keyof SpendReportRow {
  return REPORT_FIELDS[dimension];
}

/**
 * The order of `spendReport`: by each grouped dimension in turn, `null` first, then in code-unit
 * order (locale-independent, so every backend sorts alike); a `top` report's `other` rows come after
 * the ranked groups of their day.
 */
export function compareSpendReportRows(
  groupBy: SpendDimension[],
): (a: SpendReportRow, b: SpendReportRow) => number {
  const fields = groupBy.map(spendReportField);
  return (a, b) => {
    for (const field of fields) {
      if (field !== 'day' && a.other !== b.other) return a.other ? 1 : -1;
      const x = a[field] as string | null | undefined;
      const y = b[field] as string | null | undefined;
      if (x === y) continue;
      if (x === null || x === undefined) return -1;
      if (y === null || y === undefined) return 1;
      return x < y ? -1 : 1;
    }
    return 0;
  };
}

/** The day bucket of a daily rollup: `YYYY-MM-DD` in UTC. */
export function utcDay(date: Date): string {
  const ms = date.getTime();
  if (ms >= lastDay.startMs && ms < lastDay.startMs + DAY_MS) return lastDay.text;
  const text = date.toISOString().slice(0, 10); // throws on an invalid date, as it always did
  lastDay = { startMs: ms - (((ms % DAY_MS) + DAY_MS) % DAY_MS), text };
  return text;
}

const DAY_MS = 86_400_000;
/** The last day `utcDay` formatted: every settle asks for the same one, all day long. */
let lastDay = { startMs: Number.NaN, text: '' };
