import { createHash } from 'node:crypto';
import {
  type AlertClaim,
  abandonedChargeScopes,
  activeFilters,
  applyDueReset,
  assertChangeableScopes,
  type BudgetInit,
  type BudgetListQuery,
  type BudgetState,
  type BudgetTierDeletion,
  type BudgetTierPatch,
  type BudgetTierRecord,
  type CustomerRecord,
  compareBudgetUse,
  compareTagSpend,
  type DashboardSessionRecord,
  type DeletedEntity,
  type EntityInsert,
  expiredReservationLog,
  finishSpendReport,
  isOptionalScope,
  isWindowOf,
  type KeyBySecret,
  type KeyPatch,
  type KeyRecord,
  type KeyUpdate,
  type LeaseInput,
  type LeaseResult,
  type MemberRecord,
  type MemberRole,
  memberScopeId,
  missingBudgetTier,
  type PendingCall,
  type RateAcquireInput,
  type RateAcquireResult,
  type RateBucketState,
  type RateLimits,
  type RateSettleInput,
  type RegenerateKeyInput,
  type ReserveInput,
  type ReserveResult,
  rankedDimension,
  retieredState,
  rollupColumn,
  rollupTableFor,
  type ScopeChanges,
  type ScopeKind,
  type ScopeRef,
  type SettleInput,
  type SettleResult,
  type SpendLogQuery,
  type SpendLogRecord,
  type SpendReportQuery,
  type SpendReportRow,
  type SpendStorage,
  type StorageCapabilities,
  StorageConflictError,
  scopeOfInsert,
  spendReportField,
  type TagRecord,
  type TagSpend,
  type TeamPatch,
  type TeamRecord,
  tierBudgetInit,
  tierRateLimits,
  topReportPlan,
  type UserPatch,
  type UserRecord,
  windowScopeId,
} from '@spendguard/core/storage';
import {
  and,
  arrayContains,
  asc,
  desc,
  eq,
  gte,
  inArray,
  isNull,
  lt,
  lte,
  or,
  type SQL,
  sql,
} from 'drizzle-orm';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import type { PgColumn } from 'drizzle-orm/pg-core';
import pg from 'pg';
import { int8AsNumber } from './int8-types.js';
import { isoTime } from './iso-time.js';
import { KEY_CHANGE_CHANNEL, KeyChangeFeed, recordKeyChanges } from './key-change-feed.js';
import { type BatchStats, MicroBatcher, type OpOutcome } from './micro-batch.js';
import { applyMigrations, assertMigrated, quoteIdent } from './migrations.js';
import { withArrayLiterals } from './pg-array.js';
import { defineTables, type Tables } from './schema.js';
import { reserveProblem, settleProblem } from './storable.js';

export interface PgStorageOptions {
  /**
   * Postgres connection URL. The store opens its own pool and closes it on `close()`.
   * @default process.env.DATABASE_URL
   * @example pgStorage({ connectionString: 'postgres://app@db.internal:5432/app' })
   */
  connectionString?: string;
  /**
   * Your own pool, instead of `connectionString`. The store runs its queries on it and leaves it open
   * on `close()`: you created it, you end it. Key-change listening (`watchKeyChanges`) opens one extra
   * connection with the pool's settings.
   * @default undefined
   * @example pgStorage({ pool: new pg.Pool({ connectionString, max: 20 }) })
   */
  pool?: pg.Pool;
  /**
   * The Postgres schema that holds spendguard's tables and functions (created by the migration if
   * missing), so that they stay apart from the app's own tables.
   * @default 'public'
   * @example pgStorage({ schema: 'spendguard' })
   */
  schema?: string;
  /**
   * Apply pending migrations in `init()`. Set `false` when a deploy step runs them
   * (`spendguard-pg-migrate` or `migratePg()`); `init()` then only checks that they were applied.
   * @default true
   * @example pgStorage({ migrate: false })
   */
  migrate?: boolean;
}

/**
 * The most reservations (or settlements) one statement carries. Under load a batch holds the calls
 * that arrived while the previous one was in flight, so this only bounds bursts (and the statement's
 * size and lock time).
 */
const MAX_BATCH = 128;

/** A budget row as the SQL functions return it, in array mode. */
type StateRow = [
  /** Set on the header row only (see the functions in migrations/0001_init.sql). */
  status: string | null,
  kind: ScopeKind | null,
  id: string | null,
  maxBudgetNano: number | null,
  budgetDuration: string | null,
  budgetResetAt: Date | null,
  spendNano: number | null,
  reservedNano: number | null,
  /** Last, so that the columns before keep their places (migration 2). */
  softBudgetNano: number | null,
];

interface Open {
  pool: pg.Pool;
  db: NodePgDatabase;
  t: Tables;
  /** Prepared-statement names are per connection and per text; the schema is part of the text. */
  statement: (name: string) => string;
}

interface Internals {
  pool: pg.Pool;
  schema: string;
  /** How the guarded writes were batched (see `MicroBatcher`). */
  batches: { reserve: BatchStats; settle: BatchStats };
}

const internals = new WeakMap<PgStorage, Internals>();

/**
 * The open pool and schema of a store, for this package's raw reader and tests. Not exported from the
 * package.
 */
export function internalsOf(storage: PgStorage): Internals {
  const open = internals.get(storage);
  if (!open) throw new Error('this PgStorage is not open: call init() first');
  return open;
}

/**
 * Postgres storage, shared by every app instance that points at the same database. Guarded writes are
 * batched: `reserve` calls, and `settle` calls (the TTL sweep's included), that arrive while one of
 * their kind is in flight go together as the next batch, one statement (one round trip, one commit)
 * calling the plpgsql functions of migration 8 (`spendguard_reserve_batch`, and `spendguard_settle_batch` as
 * migration 12 redefined it).
 * A batch locks each counter row it touches once (`FOR UPDATE`, always in (kind, id) order, so
 * instances queue instead of deadlocking), decides its ops in the order they were submitted, exactly
 * as one call each would, and writes each counter and rollup row once. A lone call is sent at once.
 * Each op answers on its own (a taken reservation id fails that op alone); a failure of the statement
 * fails every op of its batch and writes nothing.
 *
 * Expects Postgres's default READ COMMITTED isolation: under REPEATABLE READ or SERIALIZABLE as a
 * session default, contending reservations fail with a serialization error (never a wrong admission).
 */
/** An open reservation as the sweeps read it; `pending` also holds the holding process (migration 9). */
interface OpenReservationRow {
  id: string;
  scopes: ScopeRef[];
  amount_nano: number;
  pending: (Partial<Omit<PendingCall, 'startTime'>> & { startTime: string; holder?: string }) | null;
}

export class PgStorage implements SpendStorage {
  readonly capabilities: StorageCapabilities = { sharedAcrossProcesses: true, name: 'postgres' };
  readonly #schema: string;
  readonly #q: string;
  readonly #migrate: boolean;
  readonly #connectionString: string | undefined;
  readonly #userPool: pg.Pool | undefined;
  #open: Open | null = null;
  #opening: Promise<void> | null = null;
  #feed: KeyChangeFeed | null = null;
  /** The newest `key_changes` row when this instance opened: a watcher replays what came after. */
  #keyChangeSeq = 0;
  readonly #reserves = new MicroBatcher<ReserveInput, ReserveResult>(
    (inputs) => this.#reserveBatch(inputs),
    MAX_BATCH,
    1,
    refusedByPostgres,
  );
  readonly #settles = new MicroBatcher<{ input: SettleInput; claim: boolean }, SettleOutcome>(
    (ops) => this.#settleBatch(ops),
    MAX_BATCH,
    1,
    refusedByPostgres,
  );

  constructor(options: PgStorageOptions = {}) {
    const { pool, schema = 'public', migrate = true } = options;
    if (pool !== undefined && options.connectionString !== undefined) {
      throw new Error('pgStorage: pass either `connectionString` or `pool`, not both.');
    }
    const connectionString = pool ? undefined : (options.connectionString ?? process.env.DATABASE_URL);
    if (!pool && !connectionString) {
      throw new Error(
        'pgStorage: no database to connect to. Set `connectionString` (or the DATABASE_URL environment variable), or pass your own `pool`.',
      );
    }
    if (typeof schema !== 'string' || schema === '' || Buffer.byteLength(schema) > 63) {
      throw new Error(
        `pgStorage: \`schema\` must be a Postgres schema name of 1 to 63 bytes, got ${JSON.stringify(schema)}.`,
      );
    }
    this.#schema = schema;
    this.#q = quoteIdent(schema);
    this.#migrate = migrate;
    this.#connectionString = connectionString;
    this.#userPool = pool;
  }

  /** See `SpendStorage.isInputError`: a value Postgres refused (`refusedByPostgres`). */
  isInputError(error: unknown): boolean {
    return refusedByPostgres(error);
  }

  async init(): Promise<void> {
    if (this.#open) return;
    this.#opening ??= this.#doInit().finally(() => {
      this.#opening = null;
    });
    return this.#opening;
  }

  async #doInit(): Promise<void> {
    const pool = this.#userPool ?? new pg.Pool({ connectionString: this.#connectionString });
    // An idle connection that breaks (server restart) emits 'error' on the pool, which would crash the
    // process if unheard; the pool has already discarded it and the next query opens a new one.
    if (!this.#userPool) pool.on('error', () => {});
    try {
      if (this.#migrate) await applyMigrations(pool, this.#schema);
      else await assertMigrated(pool, this.#schema);
      const seq = await pool.query<{ seq: number }>({
        text: `SELECT coalesce(max(seq), 0) AS seq FROM ${this.#q}.key_changes`,
        types: int8AsNumber,
      });
      this.#keyChangeSeq = seq.rows[0]?.seq ?? 0;
    } catch (err) {
      if (!this.#userPool) await pool.end();
      throw err;
    }
    const tag = createHash('sha256').update(this.#schema).digest('hex').slice(0, 16);
    this.#open = {
      pool,
      db: drizzle({ client: pool }),
      t: defineTables(this.#schema),
      statement: (name) => `spendguard_${name}_${tag}`,
    };
    internals.set(this, {
      pool,
      schema: this.#schema,
      batches: { reserve: this.#reserves.stats, settle: this.#settles.stats },
    });
  }

  async close(): Promise<void> {
    await this.#opening?.catch(() => {});
    // Writes already submitted are sent (or fail) before the pool goes.
    await Promise.all([this.#reserves.idle(), this.#settles.idle()]);
    this.#feed?.stop();
    this.#feed = null;
    const open = this.#open;
    if (!open) return;
    this.#open = null;
    internals.delete(this);
    if (!this.#userPool) await open.pool.end();
  }

  #ready(): Open {
    if (this.#open) return this.#open;
    throw new Error('PgStorage is not open: call `await storage.init()` first.');
  }

  async insert(entities: EntityInsert[]): Promise<void> {
    const { db, t } = this.#ready();
    await db.transaction(async (tx) => {
      for (const given of entities) {
        const e = await this.#withTier(tx, given);
        const scope = scopeOfInsert(e);
        try {
          if (e.type === 'team') await tx.insert(t.teams).values(e.record);
          else if (e.type === 'user') await tx.insert(t.users).values(e.record);
          else if (e.type === 'key') await tx.insert(t.keys).values(e.record);
          else if (e.type === 'member') await this.#insertMember(tx, e.record);
          else if (e.type === 'customer') await tx.insert(t.customers).values(e.record);
          else if (e.type === 'tag') await tx.insert(t.tags).values(e.record);
          await tx
            .insert(t.budgets)
            .values({ scopeKind: scope.kind, scopeId: scope.id, ...e.budget, spendNano: 0, reservedNano: 0 });
          if (e.type !== 'budget' && e.rateLimits) {
            await tx.execute(
              sql`INSERT INTO ${sql.raw(this.#q)}.rate_limits (scope_kind, scope_id, limits) VALUES (${scope.kind}, ${scope.id}, ${JSON.stringify(e.rateLimits)}::jsonb)`,
            );
          }
        } catch (err) {
          // Throwing rolls the whole batch back.
          if (isUniqueViolation(err)) throw new StorageConflictError(e.type, scope.id);
          throw err;
        }
      }
    });
  }

  async getCustomer(endUserId: string): Promise<CustomerRecord | null> {
    const { db, t } = this.#ready();
    const [row] = await db.select().from(t.customers).where(eq(t.customers.endUserId, endUserId));
    return row ?? null;
  }

  async getTag(name: string): Promise<TagRecord | null> {
    const { db, t } = this.#ready();
    const [row] = await db.select().from(t.tags).where(eq(t.tags.name, name));
    return row ?? null;
  }

  async listCustomers(): Promise<CustomerRecord[]> {
    const { db, t } = this.#ready();
    return db.select().from(t.customers).orderBy(sql`${t.customers.endUserId} COLLATE "C"`);
  }

  async listTags(): Promise<TagRecord[]> {
    const { db, t } = this.#ready();
    return db.select().from(t.tags).orderBy(sql`${t.tags.name} COLLATE "C"`);
  }

  async updateCustomer(
    endUserId: string,
    patch: Partial<Pick<CustomerRecord, 'alias' | 'blocked' | 'metadata' | 'budgetId'>>,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<CustomerRecord | null> {
    assertChangeableScopes(also);
    const { db, t } = this.#ready();
    const set = definedOnly(patch);
    const where = eq(t.customers.endUserId, endUserId);
    return db.transaction(async (tx) => {
      // The tier first, locked against a change or delete until this link commits.
      const tier =
        typeof patch.budgetId === 'string' ? await this.#lockTier(tx, patch.budgetId, 'share') : null;
      if (typeof patch.budgetId === 'string' && !tier) throw missingBudgetTier(patch.budgetId);
      const [row] =
        Object.keys(set).length > 0
          ? await tx.update(t.customers).set(set).where(where).returning()
          : await tx.select().from(t.customers).where(where).for('update');
      if (!row) return null;
      await this.#applyScopeChanges(tx, also);
      await this.#patchBudget(tx, 'customer', endUserId, budget);
      // A linked end user's limits are its tier's, whatever else this update sets.
      const linked = tier ?? (row.budgetId ? await this.#lockTier(tx, row.budgetId, 'share') : null);
      if (row.budgetId && !linked) throw missingBudgetTier(row.budgetId);
      if (linked)
        await this.#retier(tx, { kind: 'customer', id: endUserId }, linked, also?.now ?? new Date());
      return row;
    });
  }

  async insertBudgetTier(tier: BudgetTierRecord): Promise<void> {
    const { db, t } = this.#ready();
    try {
      await db.insert(t.budgetTiers).values(tier);
    } catch (err) {
      if (isUniqueViolation(err)) throw new StorageConflictError('budget', tier.budgetId);
      throw err;
    }
  }

  async getBudgetTier(budgetId: string): Promise<BudgetTierRecord | null> {
    const { db, t } = this.#ready();
    const [row] = await db.select().from(t.budgetTiers).where(eq(t.budgetTiers.budgetId, budgetId));
    return row ?? null;
  }

  async listBudgetTiers(): Promise<BudgetTierRecord[]> {
    const { db, t } = this.#ready();
    return db.select().from(t.budgetTiers).orderBy(sql`${t.budgetTiers.budgetId} COLLATE "C"`);
  }

  async updateBudgetTier(
    budgetId: string,
    patch: BudgetTierPatch,
    now: Date,
  ): Promise<BudgetTierRecord | null> {
    const { db, t } = this.#ready();
    return db.transaction(async (tx) => {
      const [tier] = await tx
        .update(t.budgetTiers)
        .set({ ...definedOnly(patch), updatedAt: now })
        .where(eq(t.budgetTiers.budgetId, budgetId))
        .returning();
      if (!tier) return null;
      const linked = await tx
        .select({ id: t.customers.endUserId })
        .from(t.customers)
        .where(eq(t.customers.budgetId, budgetId));
      for (const { id } of linked) await this.#retier(tx, { kind: 'customer', id }, tier, now);
      const keys = await tx
        .select({ id: t.keys.tokenHash })
        .from(t.keys)
        .where(eq(t.keys.budgetId, budgetId));
      for (const { id } of keys) await this.#retier(tx, { kind: 'key', id }, tier, now);
      if (keys.length > 0) {
        await tx.execute(
          recordKeyChanges(
            this.#q,
            this.#schema,
            keys.map((k) => k.id),
          ),
        );
      }
      return tier;
    });
  }

  async deleteBudgetTier(budgetId: string): Promise<BudgetTierDeletion> {
    const { db, t } = this.#ready();
    return db.transaction(async (tx) => {
      if (!(await this.#lockTier(tx, budgetId, 'update'))) return { found: false, linked: 0 };
      const [row] = await tx
        .select({ n: sql<string>`count(*)` })
        .from(t.customers)
        .where(eq(t.customers.budgetId, budgetId));
      const [keyRow] = await tx
        .select({ n: sql<string>`count(*)` })
        .from(t.keys)
        .where(eq(t.keys.budgetId, budgetId));
      const linked = Number(row?.n ?? 0) + Number(keyRow?.n ?? 0);
      if (linked === 0) await tx.delete(t.budgetTiers).where(eq(t.budgetTiers.budgetId, budgetId));
      return { found: true, linked };
    });
  }

  /** Inside `tx`: a tier, locked (`share` to link to it, `update` to delete it); null if missing. */
  async #lockTier(tx: Tx, budgetId: string, mode: 'share' | 'update'): Promise<BudgetTierRecord | null> {
    const { t } = this.#ready();
    const [row] = await tx.select().from(t.budgetTiers).where(eq(t.budgetTiers.budgetId, budgetId)).for(mode);
    return row ?? null;
  }

  /** Inside `tx`: a customer or key insert with its tier's limits in place of its own. */
  async #withTier(tx: Tx, e: EntityInsert): Promise<EntityInsert> {
    if (e.type !== 'customer' && e.type !== 'key') return e;
    const budgetId = e.record.budgetId ?? null;
    const tier = budgetId === null ? null : await this.#lockTier(tx, budgetId, 'share');
    if (budgetId !== null && !tier) throw missingBudgetTier(budgetId);
    const linked = tier
      ? { budget: tierBudgetInit(tier, e.record.createdAt), rateLimits: tierRateLimits(tier) }
      : {};
    return e.type === 'key'
      ? { ...e, record: { ...e.record, budgetId }, ...linked }
      : { ...e, record: { ...e.record, budgetId }, ...linked };
  }

  /** Inside `tx`: a linked end user's or key's counter and rate limits made the tier's. */
  async #retier(tx: Tx, scope: ScopeRef, tier: BudgetTierRecord, now: Date): Promise<void> {
    await this.#changeCounterIn(tx, scope, now, (state) => retieredState(state, tier, now));
    await this.#applyScopeChanges(tx, { now, rateLimits: { scope, limits: tierRateLimits(tier) } });
  }

  async blockCustomers(
    endUserIds: string[],
    blocked: boolean,
    created: { createdAt: Date; budget: BudgetInit; budgetId?: string | null },
  ): Promise<void> {
    const { db, t } = this.#ready();
    const budgetId = created.budgetId ?? null;
    await db.transaction(async (tx) => {
      const tier = budgetId === null ? null : await this.#lockTier(tx, budgetId, 'share');
      if (budgetId !== null && !tier) throw missingBudgetTier(budgetId);
      for (const endUserId of endUserIds) {
        if (!blocked) {
          await tx.update(t.customers).set({ blocked }).where(eq(t.customers.endUserId, endUserId));
          continue;
        }
        // Created here unless it exists (or another instance creates it first): blocked either way.
        const [row] = await tx
          .insert(t.customers)
          .values({ endUserId, alias: null, blocked, metadata: {}, createdAt: created.createdAt, budgetId })
          .onConflictDoUpdate({ target: t.customers.endUserId, set: { blocked } })
          .returning({ inserted: sql<boolean>`(xmax = 0)` });
        await tx
          .insert(t.budgets)
          .values({
            scopeKind: 'customer',
            scopeId: endUserId,
            ...(tier ? tierBudgetInit(tier, created.createdAt) : created.budget),
            spendNano: 0,
            reservedNano: 0,
          })
          .onConflictDoNothing();
        const limits = tier ? tierRateLimits(tier) : null;
        if (row?.inserted && limits) {
          const scope: ScopeRef = { kind: 'customer', id: endUserId };
          await this.#applyScopeChanges(tx, { now: created.createdAt, rateLimits: { scope, limits } });
        }
      }
    });
  }

  async updateTag(
    name: string,
    patch: Partial<Pick<TagRecord, 'description' | 'metadata'>>,
    budget?: Partial<BudgetInit>,
  ): Promise<TagRecord | null> {
    const { db, t } = this.#ready();
    const set = definedOnly(patch);
    const where = eq(t.tags.name, name);
    return db.transaction(async (tx) => {
      const [row] =
        Object.keys(set).length > 0
          ? await tx.update(t.tags).set(set).where(where).returning()
          : await tx.select().from(t.tags).where(where).for('update');
      if (!row) return null;
      await this.#patchBudget(tx, 'tag', name, budget);
      return row;
    });
  }

  async deleteScopes(scopes: ScopeRef[]): Promise<number> {
    for (const scope of scopes) {
      if (!isOptionalScope(scope)) throw new Error(`deleteScopes cannot delete a ${scope.kind} scope`);
    }
    const { db, t } = this.#ready();
    return db.transaction(async (tx) => {
      let deleted = 0;
      for (const scope of scopes) {
        if (scope.kind === 'customer')
          await tx.delete(t.customers).where(eq(t.customers.endUserId, scope.id));
        if (scope.kind === 'tag') await tx.delete(t.tags).where(eq(t.tags.name, scope.id));
        await tx.execute(
          sql`DELETE FROM ${sql.raw(this.#q)}.rate_limits WHERE scope_kind = ${scope.kind} AND scope_id = ${scope.id}`,
        );
        const gone = await tx
          .delete(t.budgets)
          .where(and(eq(t.budgets.scopeKind, scope.kind), eq(t.budgets.scopeId, scope.id)))
          .returning({ id: t.budgets.scopeId });
        deleted += gone.length;
      }
      return deleted;
    });
  }

  async listWindows(owners: ScopeRef[], now: Date): Promise<BudgetState[]> {
    if (owners.length === 0) return [];
    const { db, t } = this.#ready();
    const b = t.budgets;
    const ranges = owners.map((owner) => {
      const prefix = windowScopeId(owner, '');
      // A range on the primary key (in "C" order, '@' + 1 is 'A').
      return and(
        sql`${b.scopeId} COLLATE "C" >= ${prefix}`,
        sql`${b.scopeId} COLLATE "C" < ${`${prefix.slice(0, -1)}A`}`,
      );
    });
    const rows = await db
      .select({ id: b.scopeId })
      .from(b)
      .where(and(eq(b.scopeKind, 'window'), or(...ranges)))
      .orderBy(sql`${b.scopeId} COLLATE "C"`);
    return this.getBudgets(
      rows
        .filter((r) => owners.some((o) => isWindowOf(r.id, o)))
        .map((r) => ({ kind: 'window' as const, id: r.id })),
      now,
    );
  }

  async updateBudget(scope: ScopeRef, budget: Partial<BudgetInit>, now: Date): Promise<BudgetState | null> {
    return this.#changeBudget(scope, now, (state) => ({ ...state, ...definedOnly(budget) }));
  }

  async resetSpend(scope: ScopeRef, toNano: number, now: Date): Promise<BudgetState | null> {
    return this.#changeBudget(scope, now, (state) => ({ ...state, spendNano: toNano }));
  }

  /** Locks a counter, applies a due reset, changes it and writes it back, in one transaction. */
  async #changeBudget(
    scope: ScopeRef,
    now: Date,
    change: (s: BudgetState) => BudgetState,
  ): Promise<BudgetState | null> {
    return this.#ready().db.transaction((tx) => this.#changeCounterIn(tx, scope, now, change));
  }

  /** Inside `tx`: a counter locked, its due reset applied, changed and written back; null if missing. */
  async #changeCounterIn(
    tx: Tx,
    scope: ScopeRef,
    now: Date,
    change: (s: BudgetState) => BudgetState,
  ): Promise<BudgetState | null> {
    const { t } = this.#ready();
    const where = and(eq(t.budgets.scopeKind, scope.kind), eq(t.budgets.scopeId, scope.id));
    const [row] = await tx.select().from(t.budgets).where(where).for('update');
    if (!row) return null;
    const next = change(applyDueReset({ ...row, scope, softBudgetNano: row.softBudgetNano ?? null }, now));
    await tx
      .update(t.budgets)
      .set({
        maxBudgetNano: next.maxBudgetNano,
        budgetDuration: next.budgetDuration,
        budgetResetAt: next.budgetResetAt,
        softBudgetNano: next.softBudgetNano,
        spendNano: next.spendNano,
      })
      .where(where);
    return next;
  }

  /** Inside an entity update's transaction, once the entity is found: the `ScopeChanges` it carries. */
  async #applyScopeChanges(tx: Tx, also: ScopeChanges | undefined): Promise<void> {
    if (!also) return;
    const { t } = this.#ready();
    if (also.rateLimits) {
      const { scope, limits } = also.rateLimits;
      await tx.execute(
        limits
          ? sql`INSERT INTO ${sql.raw(this.#q)}.rate_limits (scope_kind, scope_id, limits) VALUES (${scope.kind}, ${scope.id}, ${JSON.stringify(limits)}::jsonb)
              ON CONFLICT (scope_kind, scope_id) DO UPDATE SET limits = excluded.limits`
          : sql`DELETE FROM ${sql.raw(this.#q)}.rate_limits WHERE scope_kind = ${scope.kind} AND scope_id = ${scope.id}`,
      );
    }
    for (const scope of also.deleteScopes ?? []) await this.#deleteCounter(tx, scope.kind, scope.id);
    for (const { scope, set, insert } of also.upsertBudgets ?? []) {
      const changed = await this.#changeCounterIn(tx, scope, also.now, (state) => ({
        ...state,
        ...definedOnly(set),
      }));
      if (!changed) {
        await tx
          .insert(t.budgets)
          .values({ scopeKind: scope.kind, scopeId: scope.id, ...insert, spendNano: 0, reservedNano: 0 });
      }
    }
  }

  async getTeam(teamId: string): Promise<TeamRecord | null> {
    const { db, t } = this.#ready();
    const [row] = await db.select().from(t.teams).where(eq(t.teams.teamId, teamId));
    return row ?? null;
  }

  async findTeamsByAlias(alias: string): Promise<TeamRecord[]> {
    const { db, t } = this.#ready();
    return db
      .select()
      .from(t.teams)
      .where(eq(t.teams.teamAlias, alias))
      .orderBy(asc(t.teams.createdAt), asc(t.teams.teamId));
  }

  async getUser(userId: string): Promise<UserRecord | null> {
    const { db, t } = this.#ready();
    const [row] = await db.select().from(t.users).where(eq(t.users.userId, userId));
    return row ?? null;
  }

  async getKey(tokenHash: string): Promise<KeyRecord | null> {
    const { db, t } = this.#ready();
    const [row] = await db.select().from(t.keys).where(eq(t.keys.tokenHash, tokenHash));
    return row ?? null;
  }

  async listKeys(filter: { userId?: string; teamId?: string }): Promise<KeyRecord[]> {
    const { db, t } = this.#ready();
    const where: SQL[] = [];
    if (filter.userId !== undefined) where.push(eq(t.keys.userId, filter.userId));
    if (filter.teamId !== undefined) where.push(eq(t.keys.teamId, filter.teamId));
    return db
      .select()
      .from(t.keys)
      .where(and(...where))
      .orderBy(asc(t.keys.createdAt), asc(t.keys.tokenHash));
  }

  async listUsers(filter: { teamId?: string }): Promise<UserRecord[]> {
    const { db, t } = this.#ready();
    return db
      .select()
      .from(t.users)
      .where(filter.teamId === undefined ? undefined : arrayContains(t.users.teams, [filter.teamId]))
      .orderBy(asc(t.users.createdAt), asc(t.users.userId));
  }

  async getBudgets(scopes: ScopeRef[], now: Date): Promise<BudgetState[]> {
    const rows = await this.#call(
      'budget_states',
      'SELECT NULL::text, scope_kind, scope_id, max_budget_nano, budget_duration, budget_reset_at, spend_nano, reserved_nano, soft_budget_nano',
      'spendguard_budget_states($1, $2, $3) ORDER BY ord',
      [...scopeArrays(scopes), now.toISOString()],
    );
    return rows.map((row) => toState(row as StateRow));
  }

  async listBudgets(query: BudgetListQuery, now: Date): Promise<BudgetState[]> {
    const { db, t } = this.#ready();
    const b = t.budgets;
    // A counter whose period is over counts as spent 0 (the reset is applied in the answer only).
    const spend = sql`CASE WHEN ${b.budgetDuration} IS NOT NULL AND ${b.budgetResetAt} <= ${now.toISOString()}::timestamptz THEN 0 ELSE ${b.spendNano} END`;
    const used = sql`CASE WHEN ${b.maxBudgetNano} > 0 THEN (${spend})::float8 / ${b.maxBudgetNano}::float8 ELSE 'Infinity'::float8 END`;
    const where: SQL[] = [
      sql`${b.maxBudgetNano} IS NOT NULL`,
      sql`${used} >= ${query.minUsedFraction ?? 0}::float8`,
    ];
    if (query.kinds !== undefined) where.push(inArray(b.scopeKind, query.kinds));
    const limit = Math.max(0, Math.floor(Math.min(query.limit ?? 100, 1000)));
    const rows = await db
      .select()
      .from(b)
      .where(and(...where))
      .orderBy(sql`${used} DESC`, sql`${b.scopeKind} COLLATE "C"`, sql`${b.scopeId} COLLATE "C"`)
      .limit(limit);
    return rows
      .map((r) =>
        applyDueReset(
          {
            scope: { kind: r.scopeKind as ScopeKind, id: r.scopeId },
            maxBudgetNano: r.maxBudgetNano,
            budgetDuration: r.budgetDuration,
            budgetResetAt: r.budgetResetAt,
            spendNano: r.spendNano,
            reservedNano: r.reservedNano,
            softBudgetNano: r.softBudgetNano,
          },
          now,
        ),
      )
      .sort(compareBudgetUse);
  }

  async reserve(input: ReserveInput): Promise<ReserveResult> {
    this.#ready();
    const problem = reserveProblem(input);
    if (problem) throw problem; // alone, before it could fail a whole batch
    return this.#reserves.submit(input);
  }

  /**
   * One `spendguard_reserve_batch` statement for these reservations, answered op by op. It fails with
   * unique_violation, writing nothing, only when a concurrent statement took one of its reservation
   * ids while it ran; sent again, it finds the id taken and fails that op alone.
   */
  async #reserveBatch(inputs: ReserveInput[]): Promise<Array<OpOutcome<ReserveResult>>> {
    const scopes = inputs.flatMap((i) => i.scopes);
    const values = [
      inputs.map((i) => i.reservationId),
      inputs.map((i) => i.amountNano),
      inputs.map((i) => isoTime(i.now)),
      inputs.map((i) => isoTime(i.expiresAt)),
      inputs.map((i) => i.mode ?? 'strict'),
      // The holding process rides in the attribution (migration 9): `pending->>'holder'`.
      JSON.stringify(
        inputs.map((i) =>
          i.processId === undefined ? (i.pending ?? null) : { ...i.pending, holder: i.processId },
        ),
      ),
      inputs.map((i) => i.scopes.length),
      ...scopeArrays(scopes),
    ];
    const send = () =>
      this.#call(
        'reserve_batch',
        'SELECT *',
        'spendguard_reserve_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)',
        values,
      );
    const rows = await send().catch((err: unknown) => {
      if (isUniqueViolation(err)) return send();
      throw err;
    });
    return answersByOp(rows, inputs.length).map(({ status, detail, states }, i): OpOutcome<ReserveResult> => {
      const input = inputs[i]!;
      if (status === 'ok') return { ok: true, value: { ok: true, states } };
      if (status === 'refused' && states[0]) return { ok: true, value: { ok: false, refused: states[0] } };
      if (status === 'conflict') {
        return { ok: false, error: new StorageConflictError('reservation', input.reservationId) };
      }
      // As the single-op function raised them: no_data_found, invalid_parameter_value.
      if (status === 'no_counter' || status === 'bad_mode') {
        const code = status === 'no_counter' ? 'P0002' : '22023';
        return { ok: false, error: Object.assign(new Error(detail ?? status), { code }) };
      }
      return { ok: false, error: new Error(`spendguard_reserve_batch answered '${String(status)}'`) };
    });
  }

  async settle(input: SettleInput): Promise<SettleResult> {
    const { status, states } = await this.#settle(input, false);
    return { applied: status === 'applied', states };
  }

  async release(reservationId: string): Promise<boolean> {
    const [row] = await this.#call('release', 'SELECT *', 'spendguard_release($1)', [reservationId]);
    return row?.[0] === true;
  }

  /**
   * One statement (`spendguard_set_lease`, migration 15): the lease's counters locked in the order every
   * guarded write locks them, then the lease's row; its amount changed. Not open: a reserve opens it, in
   * its own guarded write. Not on a call's path: a lease is written about twice a second per scope set.
   */
  async setLease(input: LeaseInput): Promise<LeaseResult> {
    this.#ready();
    const { leaseId: reservationId, ...rest } = input;
    const problem = reserveProblem({ reservationId, ...rest });
    if (problem) throw problem;
    const rows = await this.#call(
      'set_lease',
      'SELECT *',
      'spendguard_set_lease($1, $2, $3, $4, $5, $6, $7)',
      [
        input.leaseId,
        input.amountNano,
        input.now.toISOString(),
        input.expiresAt.toISOString(),
        input.mode ?? 'strict',
        ...scopeArrays(input.scopes),
      ],
    );
    const [header, ...stateRows] = rows;
    const status = header?.[0];
    const previousNano = (header?.[1] as number | null) ?? 0;
    const states = stateRows.map((row) => toState(row.slice(1) as StateRow));
    if (status === 'ok') return { ok: true, states, previousNano };
    if (status === 'refused' && states[0]) return { ok: false, refused: states[0], heldNano: previousNano };
    if (status !== 'absent') throw new Error(`spendguard_set_lease answered '${String(status)}'`);
    if (input.amountNano === 0) return { ok: true, states, previousNano: 0 };
    const result = await this.reserve({ reservationId, ...rest });
    return result.ok
      ? { ok: true, states: result.states, previousNano: 0 }
      : { ok: false, refused: result.refused, heldNano: 0 };
  }

  /**
   * Charges reservations past their TTL. Each one is a claiming settle (with the spend log from core's
   * `expiredReservationLog`), batched like any settle: it charges only a reservation still open, so
   * instances sweeping at the same time never charge one twice, and a settle racing the sweep either
   * wins or finds the log.
   */
  async expireReservations(now: Date, limit = 1000): Promise<number> {
    const { pool } = this.#ready();
    const { rows } = await pool.query<OpenReservationRow>({
      text: `SELECT id, scopes, amount_nano, pending FROM ${this.#q}.reservations
             WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2`,
      values: [now.toISOString(), Math.max(0, Math.floor(limit))],
      types: int8AsNumber,
    });
    return this.#chargeAtEstimate(rows, now);
  }

  /** Claiming settles of these open reservations at their amount (see `expireReservations`). */
  async #chargeAtEstimate(rows: OpenReservationRow[], now: Date, deadProcesses = false): Promise<number> {
    const outcomes = await Promise.all(
      rows.map(({ id, scopes, amount_nano: amountNano, pending }) => {
        // A reservation made without a call holds only its process (`holder`) here.
        const attribution = pending?.requestId
          ? ({ ...pending, startTime: new Date(pending.startTime) } as PendingCall)
          : null;
        const dead = deadProcesses ? pending?.holder : undefined;
        const log = expiredReservationLog(id, amountNano, attribution, now, dead);
        const charged = abandonedChargeScopes(scopes, attribution);
        return this.#settle({ reservationId: id, scopes: charged, costNano: amountNano, now, log }, true);
      }),
    );
    return outcomes.filter((o) => o.status === 'applied' || o.status === 'released').length;
  }

  async heartbeat(processId: string, at: Date): Promise<void> {
    const { pool } = this.#ready();
    await pool.query(
      `INSERT INTO ${this.#q}.processes (id, heartbeat_at) VALUES ($1, $2)
       ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`,
      [processId, at.toISOString()],
    );
  }

  /**
   * Charges the open reservations of processes whose beat is at or before `staleBefore`, each by a
   * claiming settle as the TTL sweep does (a sweep racing another, or the call's own late settle,
   * finds it taken). A process forgotten while it still lives (it stalled) is registered again by its
   * next beat, and its reservations, which name it by id, are its own again.
   */
  async settleDeadProcesses(staleBefore: Date, now: Date, limit = 1000): Promise<number> {
    const { pool } = this.#ready();
    const max = Math.max(0, Math.floor(limit));
    const { rows } = await pool.query<OpenReservationRow>({
      // Open reservations are the calls in flight: a scan of them, no index to keep per reservation.
      text: `SELECT r.id, r.scopes, r.amount_nano, r.pending FROM ${this.#q}.reservations r
             JOIN ${this.#q}.processes p ON p.id = r.pending->>'holder'
             WHERE p.heartbeat_at <= $1 ORDER BY r.id LIMIT $2`,
      values: [staleBefore.toISOString(), max],
      types: int8AsNumber,
    });
    const charged = await this.#chargeAtEstimate(rows, now, true);
    // Their parallel-request leases (lease ids `<processId>:…`, see acquireRate) go with them.
    await pool.query(
      `DELETE FROM ${this.#q}.rate_leases l USING ${this.#q}.processes p
       WHERE p.heartbeat_at <= $1 AND starts_with(l.lease_id, p.id || ':')`,
      [staleBefore.toISOString()],
    );
    if (rows.length < max) {
      await pool.query(
        `DELETE FROM ${this.#q}.processes p WHERE p.heartbeat_at <= $1
         AND NOT EXISTS (SELECT 1 FROM ${this.#q}.reservations r WHERE r.pending->>'holder' = p.id)`,
        [staleBefore.toISOString()],
      );
    }
    return charged;
  }

  /** `claim`: only if the reservation is still open (the TTL sweep); see `spendguard_settle_v2`. */
  #settle(input: SettleInput, claim: boolean): Promise<SettleOutcome> {
    this.#ready();
    const problem = settleProblem(input);
    if (problem) return Promise.reject(problem); // alone, before it could fail a whole batch
    return this.#settles.submit({ input, claim });
  }

  /** One `spendguard_settle_batch` statement for these settlements, answered op by op. */
  async #settleBatch(
    ops: Array<{ input: SettleInput; claim: boolean }>,
  ): Promise<Array<OpOutcome<SettleOutcome>>> {
    const inputs = ops.map((o) => o.input);
    const logs = inputs.map((i) => i.log);
    const scopes = inputs.flatMap((i) => i.scopes);
    const rows = await this.#call(
      'settle_batch',
      'SELECT *',
      `spendguard_settle_batch(${Array.from({ length: 28 }, (_, i) => `$${i + 1}`).join(', ')})`,
      [
        inputs.map((i) => i.reservationId),
        inputs.map((i) => i.costNano),
        inputs.map((i) => isoTime(i.now)),
        ops.map((o) => o.claim),
        inputs.map((i) => i.scopes.length),
        ...scopeArrays(scopes),
        logs.map((l) => l.requestId),
        logs.map((l) => l.callType),
        logs.map((l) => l.apiKeyHash),
        logs.map((l) => l.spendNano),
        logs.map((l) => l.promptTokens),
        logs.map((l) => l.completionTokens),
        logs.map((l) => l.totalTokens),
        logs.map((l) => isoTime(l.startTime)),
        logs.map((l) => isoTime(l.endTime)),
        logs.map((l) => l.model),
        logs.map((l) => l.provider),
        logs.map((l) => l.userId),
        logs.map((l) => l.teamId),
        logs.map((l) => l.endUser),
        logs.map((l) => l.tags.length),
        logs.flatMap((l) => l.tags),
        logs.map((l) => l.status),
        logs.map((l) => l.estimated),
        logs.map((l) => l.httpStatus),
        JSON.stringify(logs.map((l) => l.metadata)),
        logs.map((l) => l.responseId ?? null),
      ],
    );
    return answersByOp(rows, ops.length).map(({ status, states }): OpOutcome<SettleOutcome> => {
      if (typeof status !== 'string') {
        return { ok: false, error: new Error('spendguard_settle_batch returned no header row for an op') };
      }
      return { ok: true, value: { status, states } };
    });
  }

  async pruneSpendLogs(before: Date, limit = 10_000): Promise<number> {
    const { pool } = this.#ready();
    // One statement (atomic); the rollups are other tables and stay.
    const res = await pool.query({
      text: `DELETE FROM ${this.#q}.spend_logs WHERE request_id IN
          (SELECT request_id FROM ${this.#q}.spend_logs WHERE start_time < $1 ORDER BY start_time LIMIT $2)`,
      values: [before.toISOString(), limit],
    });
    return res.rowCount ?? 0;
  }

  async querySpendLogs(query: SpendLogQuery): Promise<SpendLogRecord[]> {
    const { db, t } = this.#ready();
    const l = t.spendLogs;
    const where: SQL[] = [];
    if (query.apiKeyHash !== undefined) where.push(eq(l.apiKeyHash, query.apiKeyHash));
    if (query.userId !== undefined) where.push(eq(l.userId, query.userId));
    if (query.teamId !== undefined) where.push(eq(l.teamId, query.teamId));
    if (query.requestId !== undefined) {
      where.push(or(eq(l.requestId, query.requestId), eq(l.responseId, query.requestId))!);
    }
    if (query.startTime !== undefined) where.push(gte(l.startTime, query.startTime));
    if (query.endTime !== undefined) where.push(lt(l.startTime, query.endTime));
    if (query.model !== undefined) where.push(eq(l.model, query.model));
    if (query.status !== undefined) where.push(eq(l.status, query.status));
    if (query.tags !== undefined && query.tags.length > 0) where.push(arrayContains(l.tags, query.tags));
    if (query.before !== undefined) {
      const { startTime, requestId } = query.before;
      where.push(
        or(lt(l.startTime, startTime), and(eq(l.startTime, startTime), lt(l.requestId, requestId)))!,
      );
    }
    const limit = Math.max(0, Math.floor(Math.min(query.limit ?? 100, 1000)));
    return db
      .select()
      .from(l)
      .where(and(...where))
      .orderBy(desc(l.startTime), desc(l.requestId))
      .limit(limit);
  }

  async spendByTag(query: { fromDay?: string; toDay?: string }): Promise<TagSpend[]> {
    const { db, t } = this.#ready();
    const d = t.dailyTagSpend;
    const where: SQL[] = [];
    if (query.fromDay) where.push(gte(d.day, query.fromDay));
    if (query.toDay) where.push(lte(d.day, query.toDay));
    const rows = await db
      .select({
        tag: d.tag,
        requests: sql<number>`sum(${d.requests})`.mapWith(Number),
        spendNano: sql<number>`sum(${d.spendNano})`.mapWith(Number),
      })
      .from(d)
      .where(and(...where))
      .groupBy(d.tag);
    // Sorted here, not in SQL, so that ties order exactly as in core's reference implementation.
    return rows.sort(compareTagSpend);
  }

  async spendReport(query: SpendReportQuery): Promise<SpendReportRow[]> {
    const { db, t } = this.#ready();
    // The narrowest rollup with every column the report names (see rollupTableFor).
    const d = {
      team: t.dailyTeamSpend,
      team_tag: t.dailyTeamTagSpend,
      key: t.dailyKeySpend,
      spend: t.dailySpend,
      tag: t.dailyTagSpend,
    }[rollupTableFor(query)];
    const column = (name: string) => (d as unknown as Record<string, PgColumn>)[name]!;
    const where: SQL[] = [gte(d.day, query.fromDay), lte(d.day, query.toDay)];
    for (const [values, name] of activeFilters(query.filters)) where.push(inArray(column(name), values));
    const groups: Array<SQL | PgColumn> = query.groupBy.map((dimension) => column(rollupColumn(dimension)));
    // A top report, planned rank-first (see topReportPlan): the ranked column keeps its value inside
    // the top n over the range and is NULL (never stored: a missing value is '') for the rest, which
    // then sum into one "other" group per day; one statement, so one snapshot.
    const rankFirst = query.top !== undefined && topReportPlan(query) === 'rank-first';
    const selected: Array<SQL | PgColumn | SQL.Aliased> = [...groups];
    if (query.top && rankFirst) {
      const i = query.groupBy.indexOf(rankedDimension(query));
      const ranked = groups[i] as PgColumn;
      const top = db
        .select({ value: ranked })
        .from(d)
        .where(and(...where))
        .groupBy(ranked)
        .orderBy(sql`sum(${d.spendNano}) DESC`, sql`${ranked} COLLATE "C"`)
        .limit(query.top.n);
      selected[i] = sql`CASE WHEN ${inArray(ranked, top)} THEN ${ranked} END`.as('top_group');
      groups[i] = sql`${sql.identifier('top_group')}`;
    }
    const groupFirst = query.top !== undefined && !rankFirst;
    // Sums as text, read exactly (a sum past 2^53 fails instead of rounding); days as text. A top
    // report sums the sums again, so its inner query keeps them numeric and the outer one casts.
    const total = (c: PgColumn) => (groupFirst ? sql`sum(${c})` : sql<string>`sum(${c})::text`);
    const fields: Record<string, SQL | PgColumn | SQL.Aliased> = {
      requests: total(d.requests),
      failedRequests: total(d.failedRequests),
      spendNano: total(d.spendNano),
      promptTokens: total(d.promptTokens),
      completionTokens: total(d.completionTokens),
    };
    query.groupBy.forEach((dimension, i) => {
      const group = dimension === 'day' ? sql<string>`${groups[i]!}::text` : selected[i]!;
      fields[`g${i}`] = groupFirst ? sql`${group}`.as(`g${i}`) : group;
    });
    if (groupFirst) {
      for (const name of ['requests', 'failedRequests', 'spendNano', 'promptTokens', 'completionTokens']) {
        fields[name] = sql`${fields[name]}`.as(name);
      }
    }
    const built = db
      .select(fields)
      .from(d)
      .where(and(...where))
      .groupBy(...groups)
      // Without groups, no matching rows still make one row of NULL sums: none is wanted.
      .having(sql`count(*) > 0`)
      .toSQL();
    const { text, params } = groupFirst
      ? topReportSql(built.sql, built.params, query)
      : { text: built.sql, params: built.params };
    // Rows in array form, mapped here: drizzle's per-cell mapping cost as much as the query itself
    // on reports of tens of thousands of groups.
    const res = await this.#ready().pool.query<unknown[]>({
      text,
      values: params,
      rowMode: 'array',
    });
    const names = query.groupBy.map(spendReportField);
    const rows = res.rows.map((r) => {
      const row: SpendReportRow = {
        requests: exactNumber(r[0] as string),
        failedRequests: exactNumber(r[1] as string),
        spendNano: exactNumber(r[2] as string),
        promptTokens: exactNumber(r[3] as string),
        completionTokens: exactNumber(r[4] as string),
      };
      for (let i = 0; i < names.length; i++)
        (row as unknown as Record<string, unknown>)[names[i]!] = r[5 + i];
      return row;
    });
    return finishSpendReport(rows, query.groupBy, query.top);
  }

  async claimAlert(claim: AlertClaim): Promise<boolean> {
    const { pool } = this.#ready();
    const now = claim.now.toISOString();
    // One statement: prune the claims of periods that are over, then claim (or find it taken).
    const res = await pool.query({
      text: `WITH pruned AS (
          DELETE FROM ${this.#q}.alert_claims WHERE expires_at <= $5
        )
        INSERT INTO ${this.#q}.alert_claims (scope_kind, scope_id, period, threshold, claimed_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
      values: [
        claim.scope.kind,
        claim.scope.id,
        claim.period,
        claim.threshold,
        now,
        claim.expiresAt?.toISOString() ?? null,
      ],
    });
    return res.rowCount === 1;
  }

  async createDashboardSession(session: DashboardSessionRecord, now: Date): Promise<void> {
    const { pool } = this.#ready();
    try {
      // One statement: delete the expired sessions, then store this one.
      await pool.query({
        text: `WITH pruned AS (
            DELETE FROM ${this.#q}.dashboard_sessions WHERE expires_at <= $6
          )
          INSERT INTO ${this.#q}.dashboard_sessions (id_hash, username, credential_mac, created_at, expires_at)
          VALUES ($1, $2, $3, $4, $5)`,
        values: [
          session.idHash,
          session.username,
          session.credentialMac,
          session.createdAt.toISOString(),
          session.expiresAt.toISOString(),
          now.toISOString(),
        ],
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new StorageConflictError('dashboard session', session.idHash);
      throw err;
    }
  }

  async getDashboardSession(idHash: string, now: Date): Promise<DashboardSessionRecord | null> {
    const { pool } = this.#ready();
    const res = await pool.query<{
      username: string;
      credential_mac: string;
      created_at: Date;
      expires_at: Date;
    }>({
      text: `SELECT username, credential_mac, created_at, expires_at FROM ${this.#q}.dashboard_sessions
        WHERE id_hash = $1 AND expires_at > $2`,
      values: [idHash, now.toISOString()],
    });
    const row = res.rows[0];
    if (!row) return null;
    return {
      idHash,
      username: row.username,
      credentialMac: row.credential_mac,
      createdAt: new Date(row.created_at),
      expiresAt: new Date(row.expires_at),
    };
  }

  async deleteDashboardSession(idHash: string): Promise<boolean> {
    const { pool } = this.#ready();
    const res = await pool.query({
      text: `DELETE FROM ${this.#q}.dashboard_sessions WHERE id_hash = $1`,
      values: [idHash],
    });
    return res.rowCount === 1;
  }

  async updateKey(
    tokenHash: string,
    patch: KeyPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<KeyRecord | null> {
    assertChangeableScopes(also);
    const { db, t } = this.#ready();
    const fields = definedOnly(patch);
    const limits = definedOnly(budget ?? {});
    return db.transaction(async (tx) => {
      // A tier linked here is locked first (FOR SHARE), so no tier change slips between.
      const tier =
        typeof patch.budgetId === 'string' ? await this.#lockTier(tx, patch.budgetId, 'share') : null;
      if (typeof patch.budgetId === 'string' && !tier) throw missingBudgetTier(patch.budgetId);
      const byHash = eq(t.keys.tokenHash, tokenHash);
      const [key] =
        Object.keys(fields).length > 0
          ? await tx.update(t.keys).set(fields).where(byHash).returning()
          : await tx.select().from(t.keys).where(byHash).for('update');
      if (!key) return null;
      await this.#applyScopeChanges(tx, also);
      if (Object.keys(limits).length > 0) {
        await tx
          .update(t.budgets)
          .set(limits)
          .where(and(eq(t.budgets.scopeKind, 'key'), eq(t.budgets.scopeId, tokenHash)));
      }
      // A linked key's limits are its tier's, whatever else this update sets.
      const linked = tier ?? (key.budgetId ? await this.#lockTier(tx, key.budgetId, 'share') : null);
      if (key.budgetId && !linked) throw missingBudgetTier(key.budgetId);
      if (linked) await this.#retier(tx, { kind: 'key', id: tokenHash }, linked, also?.now ?? new Date());
      await tx.execute(recordKeyChanges(this.#q, this.#schema, [tokenHash]));
      return key;
    });
  }

  async updateKeys(changes: KeyUpdate[]): Promise<KeyRecord[] | null> {
    const { db, t } = this.#ready();
    try {
      return await db.transaction(async (tx) => {
        const done: KeyRecord[] = [];
        const now = new Date();
        for (const { tokenHash, patch, budget } of changes) {
          const fields = definedOnly(patch);
          const limits = definedOnly(budget ?? {});
          // A tier linked here is locked first (FOR SHARE), so no tier change slips between.
          const tier =
            typeof patch.budgetId === 'string' ? await this.#lockTier(tx, patch.budgetId, 'share') : null;
          if (typeof patch.budgetId === 'string' && !tier) throw missingBudgetTier(patch.budgetId);
          const byHash = eq(t.keys.tokenHash, tokenHash);
          const [key] =
            Object.keys(fields).length > 0
              ? await tx.update(t.keys).set(fields).where(byHash).returning()
              : await tx.select().from(t.keys).where(byHash).for('update');
          // A missing key undoes the ones before it: the transaction is rolled back by the throw.
          if (!key) throw new MissingKey();
          if (Object.keys(limits).length > 0) {
            await tx
              .update(t.budgets)
              .set(limits)
              .where(and(eq(t.budgets.scopeKind, 'key'), eq(t.budgets.scopeId, tokenHash)));
          }
          // A linked key's limits are its tier's; a missing tier rolls the whole batch back.
          const linked = tier ?? (key.budgetId ? await this.#lockTier(tx, key.budgetId, 'share') : null);
          if (key.budgetId && !linked) throw missingBudgetTier(key.budgetId);
          if (linked) await this.#retier(tx, { kind: 'key', id: tokenHash }, linked, now);
          done.push(key);
        }
        await tx.execute(
          recordKeyChanges(
            this.#q,
            this.#schema,
            done.map((k) => k.tokenHash),
          ),
        );
        return done;
      });
    } catch (error) {
      if (error instanceof MissingKey) return null;
      throw error;
    }
  }

  async deleteKeys(tokenHashes: string[]): Promise<number> {
    const { pool } = this.#ready();
    const q = this.#q;
    // One statement: the keys, their counters and the change records go together or not at all.
    const res = await pool.query({
      text: `WITH gone AS (
          DELETE FROM ${q}.keys WHERE token_hash = ANY($1::text[]) RETURNING token_hash
        ), counters AS (
          DELETE FROM ${q}.budgets b USING gone WHERE b.scope_kind = 'key' AND b.scope_id = gone.token_hash
        ), limits AS (
          DELETE FROM ${q}.rate_limits r USING gone WHERE r.scope_kind = 'key' AND r.scope_id = gone.token_hash
        ), secrets AS (
          DELETE FROM ${q}.key_secrets s USING gone WHERE s.token_hash = gone.token_hash
        ), changes AS (
          INSERT INTO ${q}.key_changes (token_hash) SELECT token_hash FROM gone RETURNING seq, token_hash
        )
        SELECT seq, pg_notify($2, json_build_object('schema', $3::text, 'tokenHash', token_hash, 'seq', seq)::text)
        FROM changes`,
      values: [tokenHashes, KEY_CHANGE_CHANNEL, this.#schema],
      types: int8AsNumber,
    });
    return res.rowCount ?? 0;
  }

  async findKeyBySecret(secretHash: string, now: Date): Promise<KeyBySecret | null> {
    const { db, t } = this.#ready();
    const ks = t.keySecrets;
    // One round trip: the key by a secret row, or by its own hash when it has no current secret row.
    const rows = await db
      .select({
        key: t.keys,
        validUntil: ks.validUntil,
        viaSecret: sql<boolean>`${ks.secretHash} IS NOT NULL`,
      })
      .from(t.keys)
      .leftJoin(ks, eq(ks.secretHash, secretHash))
      .where(
        sql`(${ks.secretHash} IS NOT NULL AND ${t.keys.tokenHash} = ${ks.tokenHash})
          OR (${ks.secretHash} IS NULL AND ${t.keys.tokenHash} = ${secretHash} AND NOT EXISTS (
            SELECT 1 FROM ${ks} c WHERE c.token_hash = ${secretHash} AND c.valid_until IS NULL))`,
      );
    const row = rows[0];
    if (!row) return null;
    if (row.validUntil && row.validUntil.getTime() <= now.getTime()) return null;
    return { key: row.key, secretValidUntil: row.validUntil };
  }

  async regenerateKey(input: RegenerateKeyInput): Promise<KeyRecord | null> {
    const { db, t } = this.#ready();
    const ks = t.keySecrets;
    try {
      return await db.transaction(async (tx) => {
        const [key] = await tx
          .update(t.keys)
          .set({ keyName: input.newKeyName })
          .where(eq(t.keys.tokenHash, input.tokenHash))
          .returning();
        if (!key) return null;
        const [current] = await tx
          .delete(ks)
          .where(and(eq(ks.tokenHash, input.tokenHash), isNull(ks.validUntil)))
          .returning();
        const previous = current?.secretHash ?? input.tokenHash;
        // Grace secrets whose time is over are dropped here rather than by a sweep.
        await tx.delete(ks).where(and(eq(ks.tokenHash, input.tokenHash), lte(ks.validUntil, input.now)));
        const grace = input.previousValidUntil;
        if (grace && grace.getTime() > input.now.getTime()) {
          await tx
            .insert(ks)
            .values({ secretHash: previous, tokenHash: input.tokenHash, validUntil: grace })
            .onConflictDoUpdate({ target: ks.secretHash, set: { validUntil: grace } });
        }
        await tx
          .insert(ks)
          .values({ secretHash: input.newSecretHash, tokenHash: input.tokenHash, validUntil: null });
        const changed = previous === input.tokenHash ? [input.tokenHash] : [input.tokenHash, previous];
        await tx.execute(recordKeyChanges(this.#q, this.#schema, changed));
        return key;
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new StorageConflictError('key', input.newSecretHash);
      throw err;
    }
  }

  async updateTeam(
    teamId: string,
    patch: TeamPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<TeamRecord | null> {
    assertChangeableScopes(also);
    const { db, t } = this.#ready();
    return db.transaction(async (tx) => {
      const fields = definedOnly(patch);
      const byId = eq(t.teams.teamId, teamId);
      const [team] =
        Object.keys(fields).length > 0
          ? await tx.update(t.teams).set(fields).where(byId).returning()
          : await tx.select().from(t.teams).where(byId).for('update');
      if (!team) return null;
      await this.#applyScopeChanges(tx, also);
      await this.#patchBudget(tx, 'team', teamId, budget);
      await tx.execute(recordKeyChanges(this.#q, this.#schema, [null]));
      return team;
    });
  }

  async deleteTeams(teamIds: string[]): Promise<DeletedEntity | null> {
    const { db, t } = this.#ready();
    return allOrNone(() =>
      db.transaction(async (tx) => {
        const deletedKeys: string[] = [];
        for (const teamId of new Set(teamIds)) {
          const gone = await tx
            .delete(t.teams)
            .where(eq(t.teams.teamId, teamId))
            .returning({ id: t.teams.teamId });
          if (gone.length === 0) throw MISSING;
          await this.#deleteCounter(tx, 'team', teamId);
          const members = await tx.select().from(t.teamMembers).where(eq(t.teamMembers.teamId, teamId));
          for (const m of members) await this.#dropMember(tx, m);
          deletedKeys.push(...(await this.#deleteKeysWhere(tx, eq(t.keys.teamId, teamId))));
        }
        return { deletedKeys };
      }),
    );
  }

  async listTeams(filter: { userId?: string }): Promise<TeamRecord[]> {
    const { db, t } = this.#ready();
    const tm = t.teamMembers;
    return db
      .select()
      .from(t.teams)
      .where(
        filter.userId === undefined
          ? undefined
          : sql`EXISTS (SELECT 1 FROM ${tm} WHERE ${tm.teamId} = ${t.teams.teamId} AND ${tm.userId} = ${filter.userId})`,
      )
      .orderBy(asc(t.teams.createdAt), asc(t.teams.teamId));
  }

  async updateUser(
    userId: string,
    patch: UserPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<UserRecord | null> {
    assertChangeableScopes(also);
    const { db, t } = this.#ready();
    return db.transaction(async (tx) => {
      const fields = definedOnly(patch);
      const byId = eq(t.users.userId, userId);
      const [user] =
        Object.keys(fields).length > 0
          ? await tx.update(t.users).set(fields).where(byId).returning()
          : await tx.select().from(t.users).where(byId).for('update');
      if (!user) return null;
      await this.#applyScopeChanges(tx, also);
      await this.#patchBudget(tx, 'user', userId, budget);
      await tx.execute(recordKeyChanges(this.#q, this.#schema, [null]));
      return user;
    });
  }

  async deleteUsers(userIds: string[]): Promise<DeletedEntity | null> {
    const { db, t } = this.#ready();
    return allOrNone(() =>
      db.transaction(async (tx) => {
        const deletedKeys: string[] = [];
        for (const userId of new Set(userIds)) {
          const gone = await tx
            .delete(t.users)
            .where(eq(t.users.userId, userId))
            .returning({ id: t.users.userId });
          if (gone.length === 0) throw MISSING;
          await this.#deleteCounter(tx, 'user', userId);
          const members = await tx.select().from(t.teamMembers).where(eq(t.teamMembers.userId, userId));
          for (const m of members) await this.#dropMember(tx, m);
          deletedKeys.push(...(await this.#deleteKeysWhere(tx, eq(t.keys.userId, userId))));
        }
        return { deletedKeys };
      }),
    );
  }

  async listMembers(filter: { teamId?: string; userId?: string }): Promise<MemberRecord[]> {
    const { db, t } = this.#ready();
    const tm = t.teamMembers;
    const where: SQL[] = [];
    if (filter.teamId !== undefined) where.push(eq(tm.teamId, filter.teamId));
    if (filter.userId !== undefined) where.push(eq(tm.userId, filter.userId));
    return db
      .select()
      .from(tm)
      .where(and(...where))
      .orderBy(asc(tm.createdAt), asc(tm.teamId), asc(tm.userId));
  }

  async updateMember(
    teamId: string,
    userId: string,
    patch: { role?: MemberRole },
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<MemberRecord | null> {
    assertChangeableScopes(also);
    const { db, t } = this.#ready();
    const tm = t.teamMembers;
    return db.transaction(async (tx) => {
      const which = and(eq(tm.teamId, teamId), eq(tm.userId, userId));
      const [member] =
        patch.role !== undefined
          ? await tx.update(tm).set({ role: patch.role }).where(which).returning()
          : await tx.select().from(tm).where(which).for('update');
      if (!member) return null;
      await this.#applyScopeChanges(tx, also);
      await this.#patchBudget(tx, 'member', memberScopeId(teamId, userId), budget);
      return member;
    });
  }

  async deleteMember(teamId: string, userId: string): Promise<DeletedEntity | null> {
    const { db, t } = this.#ready();
    const tm = t.teamMembers;
    return db.transaction(async (tx) => {
      const [member] = await tx
        .select()
        .from(tm)
        .where(and(eq(tm.teamId, teamId), eq(tm.userId, userId)))
        .for('update');
      if (!member) return null;
      await this.#dropMember(tx, member);
      const deletedKeys = await this.#deleteKeysWhere(
        tx,
        and(eq(t.keys.teamId, teamId), eq(t.keys.userId, userId))!,
      );
      return { deletedKeys };
    });
  }

  async #insertMember(tx: Tx, m: MemberRecord): Promise<void> {
    const { t } = this.#ready();
    await tx.insert(t.teamMembers).values(m);
    const [user] = await tx
      .update(t.users)
      .set({
        teams: sql`CASE WHEN ${m.teamId} = ANY(${t.users.teams}) THEN ${t.users.teams} ELSE array_append(${t.users.teams}, ${m.teamId}::text) END`,
      })
      .where(eq(t.users.userId, m.userId))
      .returning({ id: t.users.userId });
    if (!user) throw new Error(`no user '${m.userId}' to add to a team`);
    const [team] = await tx.select({ id: t.teams.teamId }).from(t.teams).where(eq(t.teams.teamId, m.teamId));
    if (!team) throw new Error(`no team '${m.teamId}' to add a member to`);
  }

  /** Removes a membership, its counter, and the team from the user's `teams`. */
  async #dropMember(tx: Tx, m: MemberRecord): Promise<void> {
    const { t } = this.#ready();
    const tm = t.teamMembers;
    await tx.delete(tm).where(and(eq(tm.teamId, m.teamId), eq(tm.userId, m.userId)));
    await this.#deleteCounter(tx, 'member', memberScopeId(m.teamId, m.userId));
    await tx
      .update(t.users)
      .set({ teams: sql`array_remove(${t.users.teams}, ${m.teamId}::text)` })
      .where(eq(t.users.userId, m.userId));
  }

  async #patchBudget(
    tx: Tx,
    kind: string,
    id: string,
    budget: Partial<BudgetInit> | undefined,
  ): Promise<void> {
    const { t } = this.#ready();
    const limits = definedOnly(budget ?? {});
    if (Object.keys(limits).length === 0) return;
    await tx
      .update(t.budgets)
      .set(limits)
      .where(and(eq(t.budgets.scopeKind, kind), eq(t.budgets.scopeId, id)));
  }

  async #deleteCounter(tx: Tx, kind: string, id: string): Promise<void> {
    const { t } = this.#ready();
    await tx.delete(t.budgets).where(and(eq(t.budgets.scopeKind, kind), eq(t.budgets.scopeId, id)));
  }

  /** Deletes the keys matching `where`, their counters and secrets, and records every change. */
  async #deleteKeysWhere(tx: Tx, where: SQL): Promise<string[]> {
    const { t } = this.#ready();
    const gone = await tx.delete(t.keys).where(where).returning({ h: t.keys.tokenHash });
    const hashes = gone.map((r) => r.h);
    if (hashes.length > 0) {
      await tx
        .delete(t.budgets)
        .where(and(eq(t.budgets.scopeKind, 'key'), inArray(t.budgets.scopeId, hashes)));
      await tx.delete(t.keySecrets).where(inArray(t.keySecrets.tokenHash, hashes));
    }
    await tx.execute(recordKeyChanges(this.#q, this.#schema, [...hashes, null]));
    return hashes;
  }

  /**
   * Calls `listener` when a key changes in any instance that shares this database, this one included
   * (`updateKey`, `deleteKeys`, `notifyKeyChange`), with the key's token hash, or `null` for "any key
   * may have changed: drop every cached key". Changes travel by Postgres NOTIFY on the channel
   * `spendguard_key_changes` and arrive within milliseconds. `null` also comes each time the
   * listening connection is (re)established (it reconnects by itself after errors), followed by the
   * changes recorded since the last one seen. The first listener opens one dedicated connection; the
   * returned function unsubscribes, and the last unsubscribe (or `close()`) closes it.
   * @example
   * const stop = storage.watchKeyChanges((hash) => (hash === null ? cache.clear() : cache.delete(hash)));
   */
  watchKeyChanges(listener: (tokenHash: string | null) => void): () => void {
    this.#ready();
    this.#feed ??= new KeyChangeFeed({
      // Named, so that operators can tell it apart in pg_stat_activity.
      newClient: () =>
        new pg.Client({
          ...(this.#userPool ? this.#userPool.options : { connectionString: this.#connectionString }),
          application_name: `spendguard_key_changes:${this.#schema}`.slice(0, 63),
        }),
      schema: this.#schema,
      q: this.#q,
      lastSeq: this.#keyChangeSeq,
    });
    return this.#feed.subscribe(listener);
  }

  /**
   * The same as `watchKeyChanges` (the storage contract's name, added there after this method was
   * asked for).
   * @deprecated Use `watchKeyChanges`.
   */
  onKeyChange(listener: (tokenHash: string | null) => void): () => void {
    return this.watchKeyChanges(listener);
  }

  /**
   * Tells every instance watching this database (`watchKeyChanges`), this one included, that the key
   * with this token hash changed, or with `null` that any key may have (a team was blocked, say).
   * `updateKey` and `deleteKeys` do this themselves.
   * @example
   * await storage.notifyKeyChange(hashVirtualKey(key));
   */
  async notifyKeyChange(tokenHash: string | null): Promise<void> {
    const { db } = this.#ready();
    await db.execute(recordKeyChanges(this.#q, this.#schema, [tokenHash]));
  }

  async setRateLimits(scope: ScopeRef, limits: RateLimits | null): Promise<void> {
    const { pool } = this.#ready();
    if (limits) {
      await pool.query({
        text: `INSERT INTO ${this.#q}.rate_limits (scope_kind, scope_id, limits) VALUES ($1, $2, $3::jsonb)
          ON CONFLICT (scope_kind, scope_id) DO UPDATE SET limits = excluded.limits`,
        values: [scope.kind, scope.id, JSON.stringify(limits)],
      });
    } else {
      await pool.query({
        text: `DELETE FROM ${this.#q}.rate_limits WHERE scope_kind = $1 AND scope_id = $2`,
        values: [scope.kind, scope.id],
      });
    }
  }

  async getRateLimits(scopes: ScopeRef[]): Promise<Array<{ scope: ScopeRef; limits: RateLimits }>> {
    if (scopes.length === 0) return [];
    const { pool } = this.#ready();
    const res = await pool.query<{ ord: number; limits: RateLimits }>({
      name: this.#ready().statement('rate_limits'),
      text: `SELECT s.ord::int AS ord, r.limits FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS s (kind, id, ord)
        JOIN ${this.#q}.rate_limits r ON r.scope_kind = s.kind AND r.scope_id = s.id ORDER BY s.ord`,
      values: scopeArrays(scopes),
    });
    return res.rows.map((row) => {
      const scope = scopes[row.ord - 1]!;
      return { scope: { kind: scope.kind, id: scope.id }, limits: row.limits };
    });
  }

  async acquireRate(input: RateAcquireInput): Promise<RateAcquireResult> {
    const b = input.buckets;
    if (b.length === 0) return { ok: true, states: [] };
    const rows = (await this.#call(
      'rate_acquire',
      'SELECT *',
      'spendguard_rate_acquire($1, $2, $3, $4, $5, $6, $7, $8, $9)',
      [
        input.leaseId,
        ...scopeArrays(b.map((x) => x.scope)),
        b.map((x) => x.metric),
        b.map((x) => x.model),
        b.map((x) => x.limit),
        input.now.getTime(),
        input.windowMs,
        input.leaseExpiresAt.getTime(),
      ],
    )) as Array<[ok: boolean, idx: number, used: number, reset: number | null]>;
    const states = rows.map(([, idx, used, reset]): RateBucketState => {
      const bucket = b[idx - 1]!;
      return {
        scope: { kind: bucket.scope.kind, id: bucket.scope.id },
        metric: bucket.metric,
        model: bucket.model,
        limit: bucket.limit,
        used,
        resetAt: reset === null ? null : new Date(reset),
      };
    });
    if (rows[0]?.[0] === false) return { ok: false, refused: states[0]! };
    return { ok: true, states };
  }

  async settleRate(input: RateSettleInput): Promise<void> {
    const tpm = input.buckets.filter((x) => x.metric === 'tpm');
    await this.#call('rate_settle', 'SELECT', 'spendguard_rate_settle($1, $2, $3, $4, $5, $6, $7)', [
      input.leaseId,
      ...scopeArrays(tpm.map((x) => x.scope)),
      tpm.map((x) => x.model),
      input.tokens,
      input.now.getTime(),
      input.windowMs,
    ]);
  }

  /** One statement, prepared once per connection, rows as arrays with BIGINT parsed to numbers. */
  async #call(name: string, select: string, fn: string, values: unknown[]): Promise<unknown[][]> {
    const { pool, statement } = this.#ready();
    const res = await pool.query<unknown[]>({
      name: statement(name),
      text: `${select} FROM ${this.#q}.${fn}`,
      values: withArrayLiterals(values),
      rowMode: 'array',
      types: int8AsNumber,
    });
    return res.rows;
  }
}

/**
 * Creates the Postgres store. Call `await storage.init()` (the guard does) to connect and apply
 * migrations.
 * @example
 * const storage = pgStorage({ connectionString: process.env.DATABASE_URL, schema: 'spendguard' });
 */
export function pgStorage(options: PgStorageOptions = {}): PgStorage {
  return new PgStorage(options);
}

/** The transaction handle drizzle passes to `db.transaction`. */
/** Thrown inside `allOrNone` when a record to delete is missing: the transaction rolls back. */
const MISSING = Symbol('missing');

/** `run` (one transaction); `null`, with nothing written, when it throws `MISSING`. */
async function allOrNone<T>(run: () => Promise<T>): Promise<T | null> {
  try {
    return await run();
  } catch (error) {
    if (error === MISSING) return null;
    throw error;
  }
}

type Tx = Parameters<Parameters<NodePgDatabase['transaction']>[0]>[0];

/** What `spendguard_settle_batch` answered for one op: its status and the states it returned. */
interface SettleOutcome {
  status: string;
  states: BudgetState[];
}

/**
 * The rows of a batch function (`r_op`, then a state row's columns, then any extra), split by op: each
 * op's header row gives its status (and `r_detail`, when the function has it), the rows after it are
 * its states.
 */
function answersByOp(
  rows: unknown[][],
  count: number,
): Array<{ status: string | null; detail: string | null; states: BudgetState[] }> {
  const answers = Array.from({ length: count }, () => ({
    status: null as string | null,
    detail: null as string | null,
    states: [] as BudgetState[],
  }));
  for (const row of rows) {
    const answer = answers[(row[0] as number) - 1];
    if (!answer) throw new Error(`a batch function answered for op ${String(row[0])} of ${count}`);
    if (row[1] !== null) {
      answer.status = row[1] as string;
      answer.detail = (row[10] as string | null | undefined) ?? null;
    } else {
      answer.states.push(toState(row.slice(1, 10) as StateRow));
    }
  }
  return answers;
}

/** The entries of a patch that are set: `undefined` means "leave as is". */
function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function scopeArrays(scopes: ScopeRef[]): [kinds: string[], ids: string[]] {
  return [scopes.map((s) => s.kind), scopes.map((s) => s.id)];
}

function toState(row: StateRow): BudgetState {
  const [, kind, id, maxBudgetNano, budgetDuration, budgetResetAt, spendNano, reservedNano, softBudgetNano] =
    row;
  return {
    scope: { kind: kind as ScopeKind, id: id as string },
    maxBudgetNano,
    budgetDuration,
    budgetResetAt,
    spendNano: spendNano as number,
    reservedNano: reservedNano as number,
    softBudgetNano: softBudgetNano ?? null,
  };
}

/**
 * A value Postgres refused, raised by pg directly or wrapped by drizzle (`cause`): a data exception
 * (SQLSTATE class 22: a NUL in text or JSON, a lone surrogate escaped in JSON, a number or date out of
 * range), an integrity violation other than a taken key (class 23), or a program limit (class 54: an
 * index row too large). The same statement sent again fails again: it is the input's fault.
 */
function refusedByPostgres(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^(22|54)[0-9A-Z]{3}$|^23(?!505)[0-9A-Z]{3}$/.test(code)) return true;
  }
  return false;
}

/** A unique-key collision, raised by pg directly or wrapped by drizzle (`cause`). */
function isUniqueViolation(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if ((e as { code?: unknown }).code === '23505') return true;
  }
  return false;
}

/** A BIGINT or NUMERIC sum as a number, refusing one that a number cannot hold exactly. */
function exactNumber(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`sum ${text} is beyond 2^53 and cannot be exact`);
  return n;
}

/**
 * A `top` report in one statement (one snapshot, so the top n and "other" sum to the exact total):
 * the plain report's groups are computed once (`per`), ranked by spend over the whole range (`top`),
 * and summed again with the ranked column NULL outside the top n (never stored: a missing value is
 * ''), which makes one "other" group per remaining combination (per day). Reading the rollup once,
 * not once to rank and once to sum, is what keeps a 90-day report by key or tag fast.
 */
function topReportSql(
  inner: string,
  params: unknown[],
  query: SpendReportQuery,
): { text: string; params: unknown[] } {
  const ranked = `g${query.groupBy.indexOf(rankedDimension(query))}`;
  const keys = query.groupBy.map((_, i) =>
    `g${i}` === ranked ? `CASE WHEN ${ranked} IN (SELECT v FROM top) THEN ${ranked} END` : `g${i}`,
  );
  const text = `WITH per AS MATERIALIZED (${inner}),
    top AS (SELECT ${ranked} AS v FROM per GROUP BY ${ranked} ORDER BY sum("spendNano") DESC, ${ranked} COLLATE "C" LIMIT $${params.length + 1})
    SELECT sum("requests")::text, sum("failedRequests")::text, sum("spendNano")::text, sum("promptTokens")::text, sum("completionTokens")::text, ${keys.join(', ')}
    FROM per GROUP BY ${keys.map((_, i) => i + 6).join(', ')}`;
  return { text, params: [...params, query.top!.n] };
}

/** Thrown inside `updateKeys`' transaction to roll it back when a key does not exist. */
class MissingKey extends Error {}
