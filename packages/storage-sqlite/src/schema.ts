import { index, integer, primaryKey, sqliteTable, text } from 'drizzle-orm/sqlite-core';

/**
 * The tables as drizzle sees them, for typed queries. The DDL that creates them lives in
 * `migrations.ts` (versioned, frozen SQL); a test checks that both describe the same columns.
 *
 * Conventions: money is INTEGER nano-dollars (SQLite integers are 64-bit; every value stays below
 * 2^53, so `mode: 'number'` is exact), instants are INTEGER ms since the epoch, JSON is TEXT.
 * The TypeScript property names equal the contract's record fields, so a selected row *is* a record.
 */

const nano = (name: string) => integer(name, { mode: 'number' });
const ms = (name: string) => integer(name, { mode: 'timestamp_ms' });

export const teams = sqliteTable(
  'teams',
  {
    teamId: text('team_id').primaryKey(),
    teamAlias: text('team_alias'),
    models: text('models', { mode: 'json' }).$type<string[]>().notNull(),
    metadata: text('metadata', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    blocked: integer('blocked', { mode: 'boolean' }).notNull(),
    createdAt: ms('created_at').notNull(),
  },
  (t) => [index('teams_team_alias_idx').on(t.teamAlias)],
);

export const users = sqliteTable('users', {
  userId: text('user_id').primaryKey(),
  userEmail: text('user_email'),
  userRole: text('user_role').notNull(),
  teams: text('teams', { mode: 'json' }).$type<string[]>().notNull(),
  models: text('models', { mode: 'json' }).$type<string[]>().notNull(),
  metadata: text('metadata', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
  createdAt: ms('created_at').notNull(),
});

export const keys = sqliteTable(
  'keys',
  {
    tokenHash: text('token_hash').primaryKey(),
    keyName: text('key_name').notNull(),
    keyAlias: text('key_alias'),
    userId: text('user_id'),
    teamId: text('team_id'),
    models: text('models', { mode: 'json' }).$type<string[]>().notNull(),
    tags: text('tags', { mode: 'json' }).$type<string[]>().notNull(),
    metadata: text('metadata', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    blocked: integer('blocked', { mode: 'boolean' }).notNull(),
    expiresAt: ms('expires_at'),
    createdAt: ms('created_at').notNull(),
    /** The budget tier the key spends under (migration 15), or null. */
    budgetId: text('budget_id'),
  },
  (t) => [
    index('keys_user_id_idx').on(t.userId),
    index('keys_team_id_idx').on(t.teamId),
    index('keys_budget_id_idx').on(t.budgetId),
  ],
);

/** End users with a budget of their own (migration 5), or linked to a budget tier (migration 13). */
export const customers = sqliteTable(
  'customers',
  {
    endUserId: text('end_user_id').primaryKey(),
    alias: text('alias'),
    blocked: integer('blocked', { mode: 'boolean' }).notNull(),
    metadata: text('metadata', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    createdAt: ms('created_at').notNull(),
    budgetId: text('budget_id'),
  },
  (t) => [index('customers_budget_id_idx').on(t.budgetId)],
);

/** LiteLLM's budget objects: tiers of limits end users link to (migration 13). */
export const budgetTiers = sqliteTable('budget_tiers', {
  budgetId: text('budget_id').primaryKey(),
  maxBudgetNano: nano('max_budget_nano'),
  softBudgetNano: nano('soft_budget_nano'),
  budgetDuration: text('budget_duration'),
  rpmLimit: integer('rpm_limit', { mode: 'number' }),
  tpmLimit: integer('tpm_limit', { mode: 'number' }),
  maxParallelRequests: integer('max_parallel_requests', { mode: 'number' }),
  createdAt: ms('created_at').notNull(),
  updatedAt: ms('updated_at').notNull(),
});

/** Tags with a budget of their own (migration 5). */
export const tags = sqliteTable('tags', {
  name: text('name').primaryKey(),
  description: text('description'),
  metadata: text('metadata', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
  createdAt: ms('created_at').notNull(),
});

/** One counter per scope (`WITHOUT ROWID` in the DDL: small rows looked up by their key). */
export const budgets = sqliteTable(
  'budgets',
  {
    scopeKind: text('scope_kind').notNull(),
    scopeId: text('scope_id').notNull(),
    /** `null`: no cap. */
    maxBudgetNano: nano('max_budget_nano'),
    budgetDuration: text('budget_duration'),
    budgetResetAt: ms('budget_reset_at'),
    spendNano: nano('spend_nano').notNull(),
    reservedNano: nano('reserved_nano').notNull(),
    /** LiteLLM's `soft_budget`: alerts only (migration 4). */
    softBudgetNano: nano('soft_budget_nano'),
  },
  (t) => [primaryKey({ columns: [t.scopeKind, t.scopeId] })],
);

/**
 * What a key's calls share in their reservations (migration 10): `[scopes, call]` as JSON, where call
 * is `{ callType, apiKeyHash, model, userId, teamId }` or null. Written once, pointed to by id.
 */
export const reservationProfiles = sqliteTable('reservation_profiles', {
  id: integer('id').primaryKey(),
  body: text('body').notNull().unique(),
});

/** Open reservations; a settle deletes its row, the TTL sweep charges and deletes expired ones. */
export const reservations = sqliteTable('reservations', {
  id: text('id').primaryKey(),
  /** `reservation_profiles.id`: the scopes held and who the call is for (migration 10). */
  profileId: integer('profile_id').notNull(),
  amountNano: nano('amount_nano').notNull(),
  expiresAt: ms('expires_at').notNull(),
  createdAt: ms('created_at').notNull(),
  /** The call's own attribution, for the log written if the reservation expires (null: no call). */
  startTime: ms('start_time'),
  /** The call's request id when it is not the reservation's id. */
  requestId: text('request_id'),
  endUser: text('end_user'),
  /** JSON `string[]`; null when the call has no tags. */
  tags: text('tags'),
  /** `processes.id` of the process holding it (migration 11); null: only the TTL settles it. */
  holder: integer('holder'),
});

/** Each process's last heartbeat (migration 11), ms; `name` is the guard's process id. */
export const processes = sqliteTable('processes', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  name: text('name').notNull().unique(),
  heartbeatAt: ms('heartbeat_at').notNull(),
});

export const spendLogs = sqliteTable(
  'spend_logs',
  {
    requestId: text('request_id').primaryKey(),
    callType: text('call_type').notNull(),
    apiKeyHash: text('api_key_hash').notNull(),
    spendNano: nano('spend_nano').notNull(),
    promptTokens: integer('prompt_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
    totalTokens: integer('total_tokens').notNull(),
    startTime: ms('start_time').notNull(),
    endTime: ms('end_time').notNull(),
    model: text('model').notNull(),
    provider: text('provider'),
    userId: text('user_id'),
    teamId: text('team_id'),
    endUser: text('end_user'),
    tags: text('tags', { mode: 'json' }).$type<string[]>().notNull(),
    status: text('status', { enum: ['success', 'failure'] }).notNull(),
    estimated: integer('estimated', { mode: 'boolean' }).notNull(),
    httpStatus: integer('http_status').notNull(),
    metadata: text('metadata', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    /** The provider's id for its response (`chatcmpl-...`, `msg_...`), `null` when it gave none. */
    responseId: text('response_id'),
  },
  (t) => [
    index('spend_logs_start_time_idx').on(t.startTime),
    index('spend_logs_api_key_hash_start_time_idx').on(t.apiKeyHash, t.startTime),
    index('spend_logs_user_id_start_time_idx').on(t.userId, t.startTime),
    index('spend_logs_team_id_start_time_idx').on(t.teamId, t.startTime),
    index('spend_logs_response_id_idx').on(t.responseId),
  ],
);

/**
 * Spend per UTC day x team x user x key x model x provider x end user, upserted by every settle (the
 * shape of migration 4). A missing dimension is `''`.
 */
export const dailySpend = sqliteTable(
  'daily_spend',
  {
    day: text('day').notNull(),
    teamId: text('team_id').notNull(),
    userId: text('user_id').notNull(),
    apiKeyHash: text('api_key_hash').notNull(),
    model: text('model').notNull(),
    provider: text('provider').notNull(),
    endUser: text('end_user').notNull(),
    requests: integer('requests').notNull(),
    failedRequests: integer('failed_requests').notNull(),
    spendNano: nano('spend_nano').notNull(),
    promptTokens: integer('prompt_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
  },
  (t) => [
    primaryKey({
      columns: [t.day, t.teamId, t.userId, t.apiKeyHash, t.model, t.provider, t.endUser],
    }),
  ],
);

/**
 * The same per tag: a request adds to one row per tag it carries (migration 4; before it, the table
 * had only day and tag).
 */
export const dailyTagSpend = sqliteTable(
  'daily_tag_spend',
  {
    day: text('day').notNull(),
    tag: text('tag').notNull(),
    teamId: text('team_id').notNull(),
    userId: text('user_id').notNull(),
    apiKeyHash: text('api_key_hash').notNull(),
    model: text('model').notNull(),
    provider: text('provider').notNull(),
    endUser: text('end_user').notNull(),
    requests: integer('requests').notNull(),
    failedRequests: integer('failed_requests').notNull(),
    spendNano: nano('spend_nano').notNull(),
    promptTokens: integer('prompt_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
  },
  (t) => [
    primaryKey({
      columns: [t.day, t.tag, t.teamId, t.userId, t.apiKeyHash, t.model, t.provider, t.endUser],
    }),
  ],
);

/**
 * Narrow rollups (migration 9), each the exact sum of its full rollup, kept so by triggers: reports
 * that need no other dimension read these (see `rollupTableFor` in core).
 */
const rollupSums = () => ({
  requests: integer('requests').notNull(),
  failedRequests: integer('failed_requests').notNull(),
  spendNano: nano('spend_nano').notNull(),
  promptTokens: integer('prompt_tokens').notNull(),
  completionTokens: integer('completion_tokens').notNull(),
});

/** Day x team x model x provider. */
export const dailyTeamSpend = sqliteTable(
  'daily_team_spend',
  {
    day: text('day').notNull(),
    teamId: text('team_id').notNull(),
    model: text('model').notNull(),
    provider: text('provider').notNull(),
    ...rollupSums(),
  },
  (t) => [primaryKey({ columns: [t.day, t.teamId, t.model, t.provider] })],
);

/** Day x tag x team x model x provider. */
export const dailyTeamTagSpend = sqliteTable(
  'daily_team_tag_spend',
  {
    day: text('day').notNull(),
    tag: text('tag').notNull(),
    teamId: text('team_id').notNull(),
    model: text('model').notNull(),
    provider: text('provider').notNull(),
    ...rollupSums(),
  },
  (t) => [primaryKey({ columns: [t.day, t.tag, t.teamId, t.model, t.provider] })],
);

/** Day x team x user x key. */
export const dailyKeySpend = sqliteTable(
  'daily_key_spend',
  {
    day: text('day').notNull(),
    teamId: text('team_id').notNull(),
    userId: text('user_id').notNull(),
    apiKeyHash: text('api_key_hash').notNull(),
    ...rollupSums(),
  },
  (t) => [primaryKey({ columns: [t.day, t.teamId, t.userId, t.apiKeyHash] })],
);

/** Alerts already sent (being sent), one per scope, budget period and threshold (migration 4). */
export const alertClaims = sqliteTable(
  'alert_claims',
  {
    scopeKind: text('scope_kind').notNull(),
    scopeId: text('scope_id').notNull(),
    period: text('period').notNull(),
    threshold: text('threshold').notNull(),
    claimedAt: ms('claimed_at').notNull(),
    /** After this the claim is pruned; `null`: kept (a budget that never resets). */
    expiresAt: ms('expires_at'),
  },
  (t) => [primaryKey({ columns: [t.scopeKind, t.scopeId, t.period, t.threshold] })],
);

/** Dashboard sign-ins by the hash of the cookie's id (migration 12). */
export const dashboardSessions = sqliteTable(
  'dashboard_sessions',
  {
    idHash: text('id_hash').primaryKey(),
    username: text('username').notNull(),
    credentialMac: text('credential_mac').notNull(),
    createdAt: ms('created_at').notNull(),
    expiresAt: ms('expires_at').notNull(),
  },
  (t) => [index('dashboard_sessions_expires_at_idx').on(t.expiresAt)],
);

/** Applied schema versions (see `migrations.ts`). */
export const migrationsTable = sqliteTable('spendguard_migrations', {
  version: integer('version').primaryKey(),
  name: text('name').notNull(),
  appliedAt: ms('applied_at').notNull(),
});

/** Key changes in order, polled by the other processes sharing the file (migration 3). */
export const keyChanges = sqliteTable('key_changes', {
  seq: integer('seq').primaryKey({ autoIncrement: true }),
  tokenHash: text('token_hash').notNull(),
  changedAt: ms('changed_at').notNull(),
});

/** Secrets of regenerated keys: the current one (`validUntil` null) and replaced ones in grace (migration 6). */
export const keySecrets = sqliteTable(
  'key_secrets',
  {
    secretHash: text('secret_hash').primaryKey(),
    tokenHash: text('token_hash').notNull(),
    validUntil: ms('valid_until'),
  },
  (t) => [index('key_secrets_token_hash_idx').on(t.tokenHash)],
);

/** Team memberships with their role; each has a `member` budget counter (migration 6). */
export const teamMembers = sqliteTable(
  'team_members',
  {
    teamId: text('team_id').notNull(),
    userId: text('user_id').notNull(),
    role: text('role', { enum: ['admin', 'user'] }).notNull(),
    createdAt: ms('created_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.teamId, t.userId] }), index('team_members_user_id_idx').on(t.userId)],
);
