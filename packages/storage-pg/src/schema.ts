import {
  bigint,
  bigserial,
  boolean,
  date,
  index,
  integer,
  jsonb,
  type PgTableFn,
  pgSchema,
  pgTable,
  primaryKey,
  text,
  timestamp,
} from 'drizzle-orm/pg-core';

/**
 * The tables as drizzle sees them, for typed reads. The DDL that creates them, and the functions that
 * do the guarded writes, live in `migrations/*.sql` (versioned, frozen SQL); a test checks that both
 * describe the same columns.
 *
 * The Postgres schema is chosen at run time (`pgStorage({ schema })`), so the tables are built per
 * store. Conventions: money is BIGINT nano-dollars (every value stays below 2^53, so `mode: 'number'`
 * is exact), instants are timestamptz, lists text[], objects jsonb. The TypeScript property names equal
 * the contract's record fields, so a selected row *is* a record.
 */
export function defineTables(schema: string) {
  const table: PgTableFn<string | undefined> = schema === 'public' ? pgTable : pgSchema(schema).table;
  const nano = (name: string) => bigint(name, { mode: 'number' });
  const at = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });
  const json = (name: string) => jsonb(name).$type<Record<string, unknown>>();

  const teams = table(
    'teams',
    {
      teamId: text('team_id').primaryKey(),
      teamAlias: text('team_alias'),
      models: text('models').array().notNull(),
      metadata: json('metadata').notNull(),
      blocked: boolean('blocked').notNull(),
      createdAt: at('created_at').notNull(),
    },
    (t) => [index('teams_team_alias_idx').on(t.teamAlias)],
  );

  const users = table('users', {
    userId: text('user_id').primaryKey(),
    userEmail: text('user_email'),
    userRole: text('user_role').notNull(),
    teams: text('teams').array().notNull(),
    models: text('models').array().notNull(),
    metadata: json('metadata').notNull(),
    createdAt: at('created_at').notNull(),
  });

  const keys = table(
    'keys',
    {
      tokenHash: text('token_hash').primaryKey(),
      keyName: text('key_name').notNull(),
      keyAlias: text('key_alias'),
      userId: text('user_id'),
      teamId: text('team_id'),
      models: text('models').array().notNull(),
      tags: text('tags').array().notNull(),
      metadata: json('metadata').notNull(),
      blocked: boolean('blocked').notNull(),
      expiresAt: at('expires_at'),
      createdAt: at('created_at').notNull(),
      /** The budget tier the key spends under (migration 13), or null. */
      budgetId: text('budget_id'),
    },
    (t) => [
      index('keys_user_id_idx').on(t.userId),
      index('keys_team_id_idx').on(t.teamId),
      index('keys_budget_id_idx').on(t.budgetId),
    ],
  );

  /** End users with a budget of their own (migration 3). */
  const customers = table(
    'customers',
    {
      endUserId: text('end_user_id').primaryKey(),
      alias: text('alias'),
      blocked: boolean('blocked').notNull(),
      metadata: json('metadata').notNull(),
      createdAt: at('created_at').notNull(),
      /** Migration 11: the budget tier it spends under, or null. */
      budgetId: text('budget_id'),
    },
    (c) => [index('customers_budget_id_idx').on(c.budgetId)],
  );

  /** LiteLLM's budget objects: tiers of limits end users link to (migration 11). */
  const budgetTiers = table('budget_tiers', {
    budgetId: text('budget_id').primaryKey(),
    maxBudgetNano: nano('max_budget_nano'),
    softBudgetNano: nano('soft_budget_nano'),
    budgetDuration: text('budget_duration'),
    rpmLimit: integer('rpm_limit'),
    tpmLimit: integer('tpm_limit'),
    maxParallelRequests: integer('max_parallel_requests'),
    createdAt: at('created_at').notNull(),
    updatedAt: at('updated_at').notNull(),
  });

  /** Tags with a budget of their own (migration 3). */
  const tags = table('tags', {
    name: text('name').primaryKey(),
    description: text('description'),
    metadata: json('metadata').notNull(),
    createdAt: at('created_at').notNull(),
  });

  /** One counter per scope; written only by the SQL functions `spendguard_reserve_v2` / `_settle_v2`. */
  const budgets = table(
    'budgets',
    {
      scopeKind: text('scope_kind').notNull(),
      scopeId: text('scope_id').notNull(),
      /** `null`: no cap. */
      maxBudgetNano: nano('max_budget_nano'),
      budgetDuration: text('budget_duration'),
      budgetResetAt: at('budget_reset_at'),
      spendNano: nano('spend_nano').notNull(),
      reservedNano: nano('reserved_nano').notNull(),
      /** LiteLLM's `soft_budget`: alerts only (migration 2). */
      softBudgetNano: nano('soft_budget_nano'),
    },
    (t) => [primaryKey({ columns: [t.scopeKind, t.scopeId] })],
  );

  /** Open reservations; a settle or release deletes its row, the TTL sweep charges expired ones. */
  const reservations = table('reservations', {
    id: text('id').primaryKey(),
    scopes: jsonb('scopes').$type<{ kind: string; id: string }[]>().notNull(),
    amountNano: nano('amount_nano').notNull(),
    expiresAt: at('expires_at').notNull(),
    createdAt: at('created_at').notNull(),
    /** JSON `PendingCall` (its `startTime` an ISO string): attribution for an expired reservation's log. */
    pending: jsonb('pending').$type<Record<string, unknown>>(),
  });

  const spendLogs = table(
    'spend_logs',
    {
      requestId: text('request_id').primaryKey(),
      callType: text('call_type').notNull(),
      apiKeyHash: text('api_key_hash').notNull(),
      spendNano: nano('spend_nano').notNull(),
      promptTokens: integer('prompt_tokens').notNull(),
      completionTokens: integer('completion_tokens').notNull(),
      totalTokens: integer('total_tokens').notNull(),
      startTime: at('start_time').notNull(),
      endTime: at('end_time').notNull(),
      model: text('model').notNull(),
      provider: text('provider'),
      userId: text('user_id'),
      teamId: text('team_id'),
      endUser: text('end_user'),
      tags: text('tags').array().notNull(),
      status: text('status', { enum: ['success', 'failure'] }).notNull(),
      estimated: boolean('estimated').notNull(),
      httpStatus: integer('http_status').notNull(),
      metadata: json('metadata').notNull(),
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
   * shape of migration 2). A missing dimension is `''`.
   */
  const dailySpend = table(
    'daily_spend',
    {
      day: date('day', { mode: 'string' }).notNull(),
      teamId: text('team_id').notNull(),
      userId: text('user_id').notNull(),
      apiKeyHash: text('api_key_hash').notNull(),
      model: text('model').notNull(),
      provider: text('provider').notNull(),
      endUser: text('end_user').notNull(),
      requests: nano('requests').notNull(),
      failedRequests: nano('failed_requests').notNull(),
      spendNano: nano('spend_nano').notNull(),
      promptTokens: nano('prompt_tokens').notNull(),
      completionTokens: nano('completion_tokens').notNull(),
    },
    (t) => [
      primaryKey({ columns: [t.day, t.teamId, t.userId, t.apiKeyHash, t.model, t.provider, t.endUser] }),
    ],
  );

  /** The same per tag: a request adds to one row per tag it carries (migration 2). */
  const dailyTagSpend = table(
    'daily_tag_spend',
    {
      day: date('day', { mode: 'string' }).notNull(),
      tag: text('tag').notNull(),
      teamId: text('team_id').notNull(),
      userId: text('user_id').notNull(),
      apiKeyHash: text('api_key_hash').notNull(),
      model: text('model').notNull(),
      provider: text('provider').notNull(),
      endUser: text('end_user').notNull(),
      requests: nano('requests').notNull(),
      failedRequests: nano('failed_requests').notNull(),
      spendNano: nano('spend_nano').notNull(),
      promptTokens: nano('prompt_tokens').notNull(),
      completionTokens: nano('completion_tokens').notNull(),
    },
    (t) => [
      primaryKey({
        columns: [t.day, t.tag, t.teamId, t.userId, t.apiKeyHash, t.model, t.provider, t.endUser],
      }),
    ],
  );

  /**
   * Narrow rollups (migration 7), each the exact sum of its full rollup, kept so by triggers: reports
   * that need no other dimension read these (see `rollupTableFor` in core).
   */
  const rollupSums = () => ({
    requests: nano('requests').notNull(),
    failedRequests: nano('failed_requests').notNull(),
    spendNano: nano('spend_nano').notNull(),
    promptTokens: nano('prompt_tokens').notNull(),
    completionTokens: nano('completion_tokens').notNull(),
  });
  /** Day x team x model x provider. */
  const dailyTeamSpend = table(
    'daily_team_spend',
    {
      day: date('day', { mode: 'string' }).notNull(),
      teamId: text('team_id').notNull(),
      model: text('model').notNull(),
      provider: text('provider').notNull(),
      ...rollupSums(),
    },
    (t) => [primaryKey({ columns: [t.day, t.teamId, t.model, t.provider] })],
  );
  /** Day x tag x team x model x provider. */
  const dailyTeamTagSpend = table(
    'daily_team_tag_spend',
    {
      day: date('day', { mode: 'string' }).notNull(),
      tag: text('tag').notNull(),
      teamId: text('team_id').notNull(),
      model: text('model').notNull(),
      provider: text('provider').notNull(),
      ...rollupSums(),
    },
    (t) => [primaryKey({ columns: [t.day, t.tag, t.teamId, t.model, t.provider] })],
  );
  /** Day x team x user x key. */
  const dailyKeySpend = table(
    'daily_key_spend',
    {
      day: date('day', { mode: 'string' }).notNull(),
      teamId: text('team_id').notNull(),
      userId: text('user_id').notNull(),
      apiKeyHash: text('api_key_hash').notNull(),
      ...rollupSums(),
    },
    (t) => [primaryKey({ columns: [t.day, t.teamId, t.userId, t.apiKeyHash] })],
  );

  /** Alerts already sent (being sent), one per scope, budget period and threshold (migration 2). */
  const alertClaims = table(
    'alert_claims',
    {
      scopeKind: text('scope_kind').notNull(),
      scopeId: text('scope_id').notNull(),
      period: text('period').notNull(),
      threshold: text('threshold').notNull(),
      claimedAt: at('claimed_at').notNull(),
      /** After this the claim is pruned; `null`: kept (a budget that never resets). */
      expiresAt: at('expires_at'),
    },
    (t) => [primaryKey({ columns: [t.scopeKind, t.scopeId, t.period, t.threshold] })],
  );

  /** Key changes, in order, for other instances' key caches (see `KeyChangeFeed`). */
  const keyChanges = table('key_changes', {
    seq: bigserial('seq', { mode: 'number' }).primaryKey(),
    /** `null`: any key may have changed. */
    tokenHash: text('token_hash'),
    changedAt: at('changed_at').notNull().defaultNow(),
  });

  /** Secrets of regenerated keys: the current one (`validUntil` null) and replaced ones in grace (0004). */
  const keySecrets = table(
    'key_secrets',
    {
      secretHash: text('secret_hash').primaryKey(),
      tokenHash: text('token_hash').notNull(),
      validUntil: at('valid_until'),
    },
    (t) => [index('key_secrets_token_hash_idx').on(t.tokenHash)],
  );

  /** Team memberships with their role; each has a `member` budget counter (0004). */
  const teamMembers = table(
    'team_members',
    {
      teamId: text('team_id').notNull(),
      userId: text('user_id').notNull(),
      role: text('role').$type<'admin' | 'user'>().notNull(),
      createdAt: at('created_at').notNull(),
    },
    (t) => [primaryKey({ columns: [t.teamId, t.userId] }), index('team_members_user_id_idx').on(t.userId)],
  );

  /** Dashboard sign-ins by the hash of the cookie's id (0010). */
  const dashboardSessions = table(
    'dashboard_sessions',
    {
      idHash: text('id_hash').primaryKey(),
      username: text('username').notNull(),
      credentialMac: text('credential_mac').notNull(),
      createdAt: at('created_at').notNull(),
      expiresAt: at('expires_at').notNull(),
    },
    (t) => [index('dashboard_sessions_expires_at_idx').on(t.expiresAt)],
  );

  /** Applied schema versions (see `migrations.ts`). */
  const migrations = table('spendguard_migrations', {
    version: integer('version').primaryKey(),
    name: text('name').notNull(),
    appliedAt: at('applied_at').notNull().defaultNow(),
  });

  return {
    teams,
    users,
    keys,
    customers,
    budgetTiers,
    tags,
    budgets,
    reservations,
    spendLogs,
    dailyTagSpend,
    dailySpend,
    dailyTeamSpend,
    dailyTeamTagSpend,
    dailyKeySpend,
    alertClaims,
    keyChanges,
    keySecrets,
    teamMembers,
    dashboardSessions,
    migrations,
  };
}

export type Tables = ReturnType<typeof defineTables>;
