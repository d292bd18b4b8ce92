import {
  type AlertClaim,
  abandonedChargeScopes,
  activeFilters,
  addRateTokens,
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
  decideRateBucket,
  type EntityInsert,
  expiredReservationLog,
  finishSpendReport,
  fitsBudget,
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
  type RateLimits,
  type RateSettleInput,
  type RegenerateKeyInput,
  type ReserveInput,
  type ReserveResult,
  type RollupTable,
  rankedDimension,
  retieredState,
  rollupColumn,
  rollupRowOf,
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
  scopeKey,
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
  withCounters,
} from '@spendguard/core/storage';
import Database from 'better-sqlite3';
import { and, asc, desc, eq, gte, inArray, isNull, lt, lte, or, type SQL, sql } from 'drizzle-orm';
import { type BetterSQLite3Database, drizzle } from 'drizzle-orm/better-sqlite3';
import type { SQLiteColumn } from 'drizzle-orm/sqlite-core';
import { BackgroundCheckpointer } from './checkpointer.js';
import { GroupCommit } from './group-commit.js';
import { applyMigrations } from './migrations.js';
import { ReservationProfiles } from './reservation-profiles.js';
import * as schema from './schema.js';
import { type BudgetRow, type RollupParams, toState, WriteBatch } from './write-batch.js';

export interface SqliteStorageOptions {
  /**
   * Path of the database file, created with its tables on first use. Several processes may open the
   * same file. `':memory:'` gives a private in-memory database (nothing survives, nothing is shared).
   * @default process.env.SPENDGUARD_DB ?? './spendguard.db'
   * @example sqliteStorage({ path: '/var/lib/my-app/spend.db' })
   */
  path?: string;
  /**
   * How long a write waits for another connection's write lock before it fails with `SQLITE_BUSY`.
   * @default 5000
   * @example sqliteStorage({ busyTimeoutMs: 10_000 })
   */
  busyTimeoutMs?: number;
  /**
   * Your own better-sqlite3 handle, instead of `path`. The store sets its pragmas (WAL, busy timeout,
   * `synchronous = NORMAL`, foreign keys), applies its migrations, and leaves the handle open on
   * `close()`: you opened it, you close it.
   * @default undefined
   * @example sqliteStorage({ database: new Database('app.db') })
   */
  database?: Database.Database;
  /**
   * How often a background thread checkpoints the WAL into the database file (PASSIVE: it never
   * blocks a write), so that the checkpoint's fsync never stalls the event loop. 0 leaves checkpoints
   * to SQLite, on this thread, every 1,000 WAL pages. Not used with your own `database` handle.
   * @default 100
   */
  checkpointIntervalMs?: number;
}

/** The spend log insert's parameters, in column order. */
type SpendLogParams = [
  requestId: string,
  callType: string,
  apiKeyHash: string,
  spendNano: number,
  promptTokens: number,
  completionTokens: number,
  totalTokens: number,
  startTime: number,
  endTime: number,
  model: string,
  provider: string | null,
  userId: string | null,
  teamId: string | null,
  endUser: string | null,
  tagsJson: string,
  status: string,
  estimated: 0 | 1,
  httpStatus: number,
  metadataJson: string,
  responseId: string | null,
];

type Orm = BetterSQLite3Database<typeof schema>;
type Statements = ReturnType<typeof prepareStatements>;

/** Everything that exists only while the store is open: the handle, statements prepared once, transactions. */
interface Open {
  db: Database.Database;
  orm: Orm;
  s: Statements;
  insert: (entities: EntityInsert[]) => void;
  reserve: (input: ReserveInput) => Promise<ReserveResult>;
  settle: (input: SettleInput) => Promise<SettleResult>;
  release: (reservationId: string) => Promise<boolean>;
  setLease: (input: LeaseInput) => Promise<LeaseResult>;
  expire: (now: Date, limit: number) => Promise<number>;
  heartbeat: (processId: string, at: Date) => Promise<void>;
  settleDead: (staleBefore: Date, now: Date, limit: number) => Promise<number>;
  acquireRate: (input: RateAcquireInput) => Promise<RateAcquireResult>;
  settleRate: (input: RateSettleInput) => Promise<void>;
  readBudgets: (scopes: ScopeRef[], now: Date) => BudgetState[];
}

const handles = new WeakMap<SqliteStorage, Database.Database>();

const ROLLUP_TABLES = {
  team: schema.dailyTeamSpend,
  team_tag: schema.dailyTeamTagSpend,
  key: schema.dailyKeySpend,
  spend: schema.dailySpend,
  tag: schema.dailyTagSpend,
} satisfies Record<RollupTable, unknown>;

/** The open handle of a store, for this package's raw reader. Not exported from the package. */
export function databaseOf(storage: SqliteStorage): Database.Database {
  const db = handles.get(storage);
  if (!db) throw new Error('this SqliteStorage is not open: call init() first');
  return db;
}

/**
 * The embedded storage backend: one SQLite file in WAL mode, shared safely by every process that
 * opens it. Each guarded write (`insert`, `reserve`, `settle`) runs in a `BEGIN IMMEDIATE` transaction
 * (reserves and settles submitted in the same event-loop turn share one, see GroupCommit), so it reads and writes its counters while holding the database's single write lock: it is atomic
 * within the process and across processes, and a failure writes nothing.
 *
 * better-sqlite3 is synchronous, so every method does its work before its promise settles.
 */
export class SqliteStorage implements SpendStorage {
  readonly capabilities: StorageCapabilities;
  readonly #path: string;
  readonly #busyTimeoutMs: number;
  readonly #userDatabase: Database.Database | undefined;
  readonly #checkpointMs: number;
  #checkpointer: BackgroundCheckpointer | null = null;
  #open: Open | null = null;

  constructor(options: SqliteStorageOptions = {}) {
    const { database, busyTimeoutMs = 5000, checkpointIntervalMs = 100 } = options;
    if (database !== undefined && options.path !== undefined) {
      throw new Error('sqliteStorage: pass either `path` or `database`, not both.');
    }
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
      throw new Error(
        `sqliteStorage: \`busyTimeoutMs\` must be a whole number of milliseconds >= 0, got ${String(busyTimeoutMs)}.`,
      );
    }
    if (!Number.isSafeInteger(checkpointIntervalMs) || checkpointIntervalMs < 0) {
      throw new Error(
        `sqliteStorage: \`checkpointIntervalMs\` must be a whole number of milliseconds >= 0 (0: SQLite's own checkpoints), got ${String(checkpointIntervalMs)}.`,
      );
    }
    const path = options.path ?? process.env.SPENDGUARD_DB ?? './spendguard.db';
    if (database === undefined && (typeof path !== 'string' || path === '')) {
      throw new Error(
        "sqliteStorage: `path` must be a file path (or ':memory:'); set it or the SPENDGUARD_DB environment variable.",
      );
    }
    this.#path = path;
    this.#busyTimeoutMs = busyTimeoutMs;
    this.#checkpointMs = checkpointIntervalMs;
    this.#userDatabase = database;
    const inMemory = database ? database.memory : path === ':memory:';
    // A commit is this process's own write to the WAL, in microseconds, and in the OS's page cache
    // once it returns: it survives this process's crash (synchronous = NORMAL: not a power loss).
    this.capabilities = { sharedAcrossProcesses: !inMemory, name: 'sqlite', commitsInProcess: true };
  }

  /** See `SpendStorage.isInputError`: a value SQLite refused (`refusedBySqlite`). */
  isInputError(error: unknown): boolean {
    return refusedBySqlite(error);
  }

  async init(): Promise<void> {
    if (this.#open) return;
    const db = this.#userDatabase ?? new Database(this.#path);
    try {
      // The busy timeout first: switching to WAL and migrating may wait on another process's lock.
      db.pragma(`busy_timeout = ${this.#busyTimeoutMs}`);
      // A file we create gets SQLite's default 4 KiB pages (a no-op on an existing file). Settlements
      // commit in batches (tens of calls a commit under load), so a commit's pages are mostly full:
      // each WAL frame costs two writes whatever its size, and 1 KiB pages cost the event loop about
      // 10 µs more per call (`bench/ab-route.ts`, repeated and unique response ids alike).
      if (!this.#userDatabase) db.pragma('page_size = 4096');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      // A 2 MiB page cache (SQLite's own default; better-sqlite3 builds with 16 MiB): when a B-tree
      // balance moves a page, SQLite parks it under the lock-byte page's number, and the next commit
      // then walks the whole page cache to drop pages past the end of the file. With 16,000 cached
      // pages that walk cost the example route ~100 µs of CPU per request (`pnpm bench`, perf).
      if (!this.#userDatabase) db.pragma('cache_size = -2000');
      applyMigrations(db);
      if (this.#checkpointMs > 0 && !this.#userDatabase && this.capabilities.sharedAcrossProcesses) {
        // Checkpoints move to a thread of their own; SQLite's own, on this thread, stays as a backstop
        // (the WAL past ~64 MiB) should that thread ever fall behind.
        db.pragma('wal_autocheckpoint = 65536');
        this.#checkpointer = new BackgroundCheckpointer(
          this.#path,
          this.#checkpointMs,
          this.#busyTimeoutMs,
          (message) => console.error(`[spendguard] WAL checkpoint failed on ${this.#path}: ${message}`),
        );
      }
      this.#open = this.#prepare(db);
      handles.set(this, db);
    } catch (err) {
      if (!this.#userDatabase) db.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    const open = this.#open;
    if (!open) return;
    this.#open = null;
    handles.delete(this);
    await this.#checkpointer?.stop();
    this.#checkpointer = null;
    if (!this.#userDatabase) open.db.close();
  }

  #ready(): Open {
    if (this.#open) return this.#open;
    throw notOpenError();
  }

  async insert(entities: EntityInsert[]): Promise<void> {
    this.#ready().insert(entities);
  }

  async getTeam(teamId: string): Promise<TeamRecord | null> {
    return this.#ready().s.getTeam.get({ id: teamId }) ?? null;
  }

  async findTeamsByAlias(alias: string): Promise<TeamRecord[]> {
    const { orm } = this.#ready();
    const t = schema.teams;
    return orm.select().from(t).where(eq(t.teamAlias, alias)).orderBy(asc(t.createdAt), asc(t.teamId)).all();
  }

  async getUser(userId: string): Promise<UserRecord | null> {
    return this.#ready().s.getUser.get({ id: userId }) ?? null;
  }

  async getKey(tokenHash: string): Promise<KeyRecord | null> {
    return this.#ready().s.getKey.get({ id: tokenHash }) ?? null;
  }

  async getCustomer(endUserId: string): Promise<CustomerRecord | null> {
    const { orm } = this.#ready();
    return orm.select().from(schema.customers).where(eq(schema.customers.endUserId, endUserId)).get() ?? null;
  }

  async getTag(name: string): Promise<TagRecord | null> {
    const { orm } = this.#ready();
    return orm.select().from(schema.tags).where(eq(schema.tags.name, name)).get() ?? null;
  }

  async listCustomers(): Promise<CustomerRecord[]> {
    const { orm } = this.#ready();
    return orm.select().from(schema.customers).orderBy(asc(schema.customers.endUserId)).all();
  }

  async listTags(): Promise<TagRecord[]> {
    const { orm } = this.#ready();
    return orm.select().from(schema.tags).orderBy(asc(schema.tags.name)).all();
  }

  async updateCustomer(
    endUserId: string,
    patch: Partial<Pick<CustomerRecord, 'alias' | 'blocked' | 'metadata' | 'budgetId'>>,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<CustomerRecord | null> {
    assertChangeableScopes(also);
    const { orm, db, s } = this.#ready();
    const c = schema.customers;
    const run = db.transaction((): CustomerRecord | null => {
      const set = definedOnly(patch);
      if (Object.keys(set).length > 0) orm.update(c).set(set).where(eq(c.endUserId, endUserId)).run();
      const customer = orm.select().from(c).where(eq(c.endUserId, endUserId)).get();
      if (!customer) return null;
      applyScopeChanges(orm, s, also);
      patchBudget(orm, 'customer', endUserId, budget);
      // A linked end user's limits are its tier's, whatever else this update sets.
      if (customer.budgetId) {
        const tier = selectTier(orm, customer.budgetId);
        if (!tier) throw missingBudgetTier(customer.budgetId);
        retier(orm, s, { kind: 'customer', id: endUserId }, tier, also?.now ?? new Date());
      }
      return customer;
    });
    return run.immediate();
  }

  async insertBudgetTier(tier: BudgetTierRecord): Promise<void> {
    const { orm } = this.#ready();
    try {
      orm.insert(schema.budgetTiers).values(tier).run();
    } catch (err) {
      if (isKeyConflict(err)) throw new StorageConflictError('budget', tier.budgetId);
      throw err;
    }
  }

  async getBudgetTier(budgetId: string): Promise<BudgetTierRecord | null> {
    return selectTier(this.#ready().orm, budgetId);
  }

  async listBudgetTiers(): Promise<BudgetTierRecord[]> {
    const { orm } = this.#ready();
    return orm.select().from(schema.budgetTiers).orderBy(asc(schema.budgetTiers.budgetId)).all();
  }

  async updateBudgetTier(
    budgetId: string,
    patch: BudgetTierPatch,
    now: Date,
  ): Promise<BudgetTierRecord | null> {
    const { orm, db, s } = this.#ready();
    const t = schema.budgetTiers;
    const run = db.transaction((): BudgetTierRecord | null => {
      orm
        .update(t)
        .set({ ...definedOnly(patch), updatedAt: now })
        .where(eq(t.budgetId, budgetId))
        .run();
      const tier = selectTier(orm, budgetId);
      if (!tier) return null;
      const linked = orm
        .select({ id: schema.customers.endUserId })
        .from(schema.customers)
        .where(eq(schema.customers.budgetId, budgetId))
        .all();
      for (const { id } of linked) retier(orm, s, { kind: 'customer', id }, tier, now);
      const keys = orm
        .select({ id: schema.keys.tokenHash })
        .from(schema.keys)
        .where(eq(schema.keys.budgetId, budgetId))
        .all();
      for (const { id } of keys) {
        retier(orm, s, { kind: 'key', id }, tier, now);
        orm.insert(schema.keyChanges).values({ tokenHash: id, changedAt: new Date() }).run();
      }
      return tier;
    });
    return run.immediate();
  }

  async deleteBudgetTier(budgetId: string): Promise<BudgetTierDeletion> {
    const { orm, db } = this.#ready();
    const run = db.transaction((): BudgetTierDeletion => {
      if (!selectTier(orm, budgetId)) return { found: false, linked: 0 };
      const [row] = orm
        .select({ n: sql<number>`count(*)` })
        .from(schema.customers)
        .where(eq(schema.customers.budgetId, budgetId))
        .all();
      const [keyRow] = orm
        .select({ n: sql<number>`count(*)` })
        .from(schema.keys)
        .where(eq(schema.keys.budgetId, budgetId))
        .all();
      const linked = Number(row?.n ?? 0) + Number(keyRow?.n ?? 0);
      if (linked === 0) orm.delete(schema.budgetTiers).where(eq(schema.budgetTiers.budgetId, budgetId)).run();
      return { found: true, linked };
    });
    return run.immediate();
  }

  async blockCustomers(
    endUserIds: string[],
    blocked: boolean,
    created: { createdAt: Date; budget: BudgetInit; budgetId?: string | null },
  ): Promise<void> {
    const { orm, db, s } = this.#ready();
    const c = schema.customers;
    const run = db.transaction((): void => {
      for (const endUserId of endUserIds) {
        const changed = orm.update(c).set({ blocked }).where(eq(c.endUserId, endUserId)).run();
        if (changed.changes > 0 || !blocked) continue;
        const record = {
          endUserId,
          alias: null,
          blocked,
          metadata: {},
          createdAt: created.createdAt,
          budgetId: created.budgetId ?? null,
        };
        insertEntities(orm, s, [{ type: 'customer', record, budget: created.budget }]);
      }
    });
    run.immediate();
  }

  async updateTag(
    name: string,
    patch: Partial<Pick<TagRecord, 'description' | 'metadata'>>,
    budget?: Partial<BudgetInit>,
  ): Promise<TagRecord | null> {
    const { orm, db } = this.#ready();
    const t = schema.tags;
    const run = db.transaction((): TagRecord | null => {
      const set = definedOnly(patch);
      if (Object.keys(set).length > 0) orm.update(t).set(set).where(eq(t.name, name)).run();
      const tag = orm.select().from(t).where(eq(t.name, name)).get();
      if (!tag) return null;
      patchBudget(orm, 'tag', name, budget);
      return tag;
    });
    return run.immediate();
  }

  async deleteScopes(scopes: ScopeRef[]): Promise<number> {
    for (const scope of scopes) {
      if (!isOptionalScope(scope)) throw new Error(`deleteScopes cannot delete a ${scope.kind} scope`);
    }
    const { orm, db, s } = this.#ready();
    const run = db.transaction((): number => {
      let deleted = 0;
      for (const scope of scopes) {
        if (scope.kind === 'customer')
          orm.delete(schema.customers).where(eq(schema.customers.endUserId, scope.id)).run();
        if (scope.kind === 'tag') orm.delete(schema.tags).where(eq(schema.tags.name, scope.id)).run();
        s.deleteRateLimits.run(scope.kind, scope.id);
        const gone = orm
          .delete(schema.budgets)
          .where(and(eq(schema.budgets.scopeKind, scope.kind), eq(schema.budgets.scopeId, scope.id)))
          .run();
        deleted += gone.changes;
      }
      return deleted;
    });
    return run.immediate();
  }

  async listWindows(owners: ScopeRef[], now: Date): Promise<BudgetState[]> {
    const { orm } = this.#ready();
    const b = schema.budgets;
    const scopes: ScopeRef[] = [];
    for (const owner of owners) {
      const prefix = windowScopeId(owner, '');
      // A range on the primary key: ids that start with the prefix ('@' + 1 is 'A').
      const rows = orm
        .select({ id: b.scopeId })
        .from(b)
        .where(
          and(eq(b.scopeKind, 'window'), gte(b.scopeId, prefix), lt(b.scopeId, `${prefix.slice(0, -1)}A`)),
        )
        .orderBy(asc(b.scopeId))
        .all();
      for (const row of rows) if (isWindowOf(row.id, owner)) scopes.push({ kind: 'window', id: row.id });
    }
    return this.getBudgets(scopes, now);
  }

  async updateBudget(scope: ScopeRef, budget: Partial<BudgetInit>, now: Date): Promise<BudgetState | null> {
    return this.#changeBudget(scope, now, (state) => ({ ...state, ...definedOnly(budget) }));
  }

  async resetSpend(scope: ScopeRef, toNano: number, now: Date): Promise<BudgetState | null> {
    return this.#changeBudget(scope, now, (state) => ({ ...state, spendNano: toNano }));
  }

  /** Reads a counter (due reset applied), changes it and writes it back in one write transaction. */
  #changeBudget(scope: ScopeRef, now: Date, change: (s: BudgetState) => BudgetState): BudgetState | null {
    const { orm, db, s } = this.#ready();
    return db.transaction(() => changeCounter(orm, s, scope, now, change)).immediate();
  }

  async listKeys(filter: { userId?: string; teamId?: string }): Promise<KeyRecord[]> {
    const { orm } = this.#ready();
    const k = schema.keys;
    const where: SQL[] = [];
    if (filter.userId !== undefined) where.push(eq(k.userId, filter.userId));
    if (filter.teamId !== undefined) where.push(eq(k.teamId, filter.teamId));
    return orm
      .select()
      .from(k)
      .where(and(...where))
      .orderBy(asc(k.createdAt), asc(k.tokenHash))
      .all();
  }

  async updateKey(
    tokenHash: string,
    patch: KeyPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<KeyRecord | null> {
    assertChangeableScopes(also);
    const { orm, db, s } = this.#ready();
    const run = db.transaction((): KeyRecord | null => {
      if (Object.keys(patch).length > 0) {
        orm.update(schema.keys).set(patch).where(eq(schema.keys.tokenHash, tokenHash)).run();
      }
      const key = orm.select().from(schema.keys).where(eq(schema.keys.tokenHash, tokenHash)).get();
      if (!key) return null;
      applyScopeChanges(orm, s, also);
      if (budget && Object.keys(budget).length > 0) {
        orm
          .update(schema.budgets)
          .set(budget)
          .where(and(eq(schema.budgets.scopeKind, 'key'), eq(schema.budgets.scopeId, tokenHash)))
          .run();
      }
      // A linked key's limits are its tier's, whatever else this update sets.
      if (key.budgetId) {
        const tier = selectTier(orm, key.budgetId);
        if (!tier) throw missingBudgetTier(key.budgetId);
        retier(orm, s, { kind: 'key', id: tokenHash }, tier, also?.now ?? new Date());
      }
      orm.insert(schema.keyChanges).values({ tokenHash, changedAt: new Date() }).run();
      return key;
    });
    return run.immediate();
  }

  async updateKeys(changes: KeyUpdate[]): Promise<KeyRecord[] | null> {
    const { orm, db, s } = this.#ready();
    const k = schema.keys;
    const now = new Date();
    const run = db.transaction((): KeyRecord[] | null => {
      const done: KeyRecord[] = [];
      for (const { tokenHash, patch, budget } of changes) {
        if (Object.keys(patch).length > 0) orm.update(k).set(patch).where(eq(k.tokenHash, tokenHash)).run();
        const key = orm.select().from(k).where(eq(k.tokenHash, tokenHash)).get();
        // A missing key undoes the ones before it: the transaction is rolled back by the throw.
        if (!key) throw new MissingKey();
        if (budget && Object.keys(budget).length > 0) {
          orm
            .update(schema.budgets)
            .set(budget)
            .where(and(eq(schema.budgets.scopeKind, 'key'), eq(schema.budgets.scopeId, tokenHash)))
            .run();
        }
        // A linked key's limits are its tier's; a missing tier rolls the whole batch back.
        if (key.budgetId) {
          const tier = selectTier(orm, key.budgetId);
          if (!tier) throw missingBudgetTier(key.budgetId);
          retier(orm, s, { kind: 'key', id: tokenHash }, tier, now);
        }
        orm.insert(schema.keyChanges).values({ tokenHash, changedAt: new Date() }).run();
        done.push(key);
      }
      return done;
    });
    try {
      return run.immediate();
    } catch (error) {
      if (error instanceof MissingKey) return null;
      throw error;
    }
  }

  async deleteKeys(tokenHashes: string[]): Promise<number> {
    const { orm, db, s } = this.#ready();
    const run = db.transaction((): number => {
      let deleted = 0;
      for (const tokenHash of tokenHashes) {
        const gone = orm.delete(schema.keys).where(eq(schema.keys.tokenHash, tokenHash)).run();
        if (gone.changes === 0) continue;
        deleted++;
        orm
          .delete(schema.budgets)
          .where(and(eq(schema.budgets.scopeKind, 'key'), eq(schema.budgets.scopeId, tokenHash)))
          .run();
        s.deleteRateLimits.run('key', tokenHash);
        orm.delete(schema.keySecrets).where(eq(schema.keySecrets.tokenHash, tokenHash)).run();
        orm.insert(schema.keyChanges).values({ tokenHash, changedAt: new Date() }).run();
      }
      return deleted;
    });
    return run.immediate();
  }

  async findKeyBySecret(secretHash: string, now: Date): Promise<KeyBySecret | null> {
    const { orm } = this.#ready();
    const ks = schema.keySecrets;
    const row = orm.select().from(ks).where(eq(ks.secretHash, secretHash)).get();
    if (row) {
      if (row.validUntil && row.validUntil.getTime() <= now.getTime()) return null;
      const key = await this.getKey(row.tokenHash);
      return key ? { key, secretValidUntil: row.validUntil } : null;
    }
    // A key's own hash opens it only while it has never been given another secret.
    const key = await this.getKey(secretHash);
    if (!key) return null;
    const replaced = orm
      .select({ h: ks.secretHash })
      .from(ks)
      .where(and(eq(ks.tokenHash, secretHash), isNull(ks.validUntil)))
      .get();
    return replaced ? null : { key, secretValidUntil: null };
  }

  async regenerateKey(input: RegenerateKeyInput): Promise<KeyRecord | null> {
    const { orm, db } = this.#ready();
    const ks = schema.keySecrets;
    const run = db.transaction((): KeyRecord | null => {
      const k = schema.keys;
      const key = orm
        .update(k)
        .set({ keyName: input.newKeyName })
        .where(eq(k.tokenHash, input.tokenHash))
        .returning()
        .get();
      if (!key) return null;
      const current = orm
        .delete(ks)
        .where(and(eq(ks.tokenHash, input.tokenHash), isNull(ks.validUntil)))
        .returning()
        .get();
      const previous = current?.secretHash ?? input.tokenHash;
      // Grace secrets whose time is over are dropped here rather than by a sweep.
      orm
        .delete(ks)
        .where(and(eq(ks.tokenHash, input.tokenHash), lte(ks.validUntil, input.now)))
        .run();
      const grace = input.previousValidUntil;
      if (grace && grace.getTime() > input.now.getTime()) {
        orm
          .insert(ks)
          .values({ secretHash: previous, tokenHash: input.tokenHash, validUntil: grace })
          .onConflictDoUpdate({ target: ks.secretHash, set: { validUntil: grace } })
          .run();
      }
      orm
        .insert(ks)
        .values({ secretHash: input.newSecretHash, tokenHash: input.tokenHash, validUntil: null })
        .run();
      const changedAt = new Date();
      orm.insert(schema.keyChanges).values({ tokenHash: input.tokenHash, changedAt }).run();
      if (previous !== input.tokenHash)
        orm.insert(schema.keyChanges).values({ tokenHash: previous, changedAt }).run();
      return key;
    });
    try {
      return run.immediate();
    } catch (err) {
      if (isKeyConflict(err)) throw new StorageConflictError('key', input.newSecretHash);
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
    const { orm, db, s } = this.#ready();
    const t = schema.teams;
    const run = db.transaction((): TeamRecord | null => {
      const fields = definedOnly(patch);
      if (Object.keys(fields).length > 0) orm.update(t).set(fields).where(eq(t.teamId, teamId)).run();
      const team = orm.select().from(t).where(eq(t.teamId, teamId)).get();
      if (!team) return null;
      applyScopeChanges(orm, s, also);
      patchBudget(orm, 'team', teamId, budget);
      recordAnyKeyChange(orm);
      return team;
    });
    return run.immediate();
  }

  async deleteTeams(teamIds: string[]): Promise<DeletedEntity | null> {
    const { orm, db } = this.#ready();
    const tm = schema.teamMembers;
    return allOrNone(db, () => {
      const deletedKeys: string[] = [];
      for (const teamId of new Set(teamIds)) {
        const gone = orm.delete(schema.teams).where(eq(schema.teams.teamId, teamId)).run();
        if (gone.changes === 0) throw MISSING;
        deleteCounter(orm, 'team', teamId);
        for (const m of orm.select().from(tm).where(eq(tm.teamId, teamId)).all()) dropMember(orm, m);
        const keys = orm
          .select({ h: schema.keys.tokenHash })
          .from(schema.keys)
          .where(eq(schema.keys.teamId, teamId))
          .all()
          .map((r) => r.h);
        deleteKeysIn(orm, keys);
        deletedKeys.push(...keys);
      }
      recordAnyKeyChange(orm);
      return { deletedKeys };
    });
  }

  async listTeams(filter: { userId?: string }): Promise<TeamRecord[]> {
    const { orm } = this.#ready();
    const t = schema.teams;
    const tm = schema.teamMembers;
    const member =
      filter.userId === undefined
        ? undefined
        : sql`exists (select 1 from ${tm} where ${tm.teamId} = ${t.teamId} and ${tm.userId} = ${filter.userId})`;
    return orm.select().from(t).where(member).orderBy(asc(t.createdAt), asc(t.teamId)).all();
  }

  async updateUser(
    userId: string,
    patch: UserPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<UserRecord | null> {
    assertChangeableScopes(also);
    const { orm, db, s } = this.#ready();
    const u = schema.users;
    const run = db.transaction((): UserRecord | null => {
      const fields = definedOnly(patch);
      if (Object.keys(fields).length > 0) orm.update(u).set(fields).where(eq(u.userId, userId)).run();
      const user = orm.select().from(u).where(eq(u.userId, userId)).get();
      if (!user) return null;
      applyScopeChanges(orm, s, also);
      patchBudget(orm, 'user', userId, budget);
      recordAnyKeyChange(orm);
      return user;
    });
    return run.immediate();
  }

  async deleteUsers(userIds: string[]): Promise<DeletedEntity | null> {
    const { orm, db } = this.#ready();
    const tm = schema.teamMembers;
    return allOrNone(db, () => {
      const deletedKeys: string[] = [];
      for (const userId of new Set(userIds)) {
        const gone = orm.delete(schema.users).where(eq(schema.users.userId, userId)).run();
        if (gone.changes === 0) throw MISSING;
        deleteCounter(orm, 'user', userId);
        for (const m of orm.select().from(tm).where(eq(tm.userId, userId)).all()) dropMember(orm, m);
        const keys = orm
          .select({ h: schema.keys.tokenHash })
          .from(schema.keys)
          .where(eq(schema.keys.userId, userId))
          .all()
          .map((r) => r.h);
        deleteKeysIn(orm, keys);
        deletedKeys.push(...keys);
      }
      recordAnyKeyChange(orm);
      return { deletedKeys };
    });
  }

  async listMembers(filter: { teamId?: string; userId?: string }): Promise<MemberRecord[]> {
    const { orm } = this.#ready();
    const tm = schema.teamMembers;
    const where: SQL[] = [];
    if (filter.teamId !== undefined) where.push(eq(tm.teamId, filter.teamId));
    if (filter.userId !== undefined) where.push(eq(tm.userId, filter.userId));
    return orm
      .select()
      .from(tm)
      .where(and(...where))
      .orderBy(asc(tm.createdAt), asc(tm.teamId), asc(tm.userId))
      .all();
  }

  async updateMember(
    teamId: string,
    userId: string,
    patch: { role?: MemberRole },
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<MemberRecord | null> {
    assertChangeableScopes(also);
    const { orm, db, s } = this.#ready();
    const tm = schema.teamMembers;
    const run = db.transaction((): MemberRecord | null => {
      const which = and(eq(tm.teamId, teamId), eq(tm.userId, userId));
      if (patch.role !== undefined) orm.update(tm).set({ role: patch.role }).where(which).run();
      const member = orm.select().from(tm).where(which).get();
      if (!member) return null;
      applyScopeChanges(orm, s, also);
      patchBudget(orm, 'member', memberScopeId(teamId, userId), budget);
      return member;
    });
    return run.immediate();
  }

  async deleteMember(teamId: string, userId: string): Promise<DeletedEntity | null> {
    const { orm, db } = this.#ready();
    const tm = schema.teamMembers;
    const run = db.transaction((): DeletedEntity | null => {
      const member = orm
        .select()
        .from(tm)
        .where(and(eq(tm.teamId, teamId), eq(tm.userId, userId)))
        .get();
      if (!member) return null;
      dropMember(orm, member);
      const k = schema.keys;
      const keys = orm
        .select({ h: k.tokenHash })
        .from(k)
        .where(and(eq(k.teamId, teamId), eq(k.userId, userId)))
        .all()
        .map((r) => r.h);
      deleteKeysIn(orm, keys);
      recordAnyKeyChange(orm);
      return { deletedKeys: keys };
    });
    return run.immediate();
  }

  /**
   * Polls the `key_changes` sequence (every `pollMs`, 250 ms by default) and reports each change
   * made by any process on this file, this one included.
   */
  watchKeyChanges(listener: (tokenHash: string | null) => void, pollMs = 250): () => void {
    const { db } = this.#ready();
    const latest = db.prepare<[], number>('SELECT coalesce(max(seq), 0) FROM key_changes').pluck();
    const since = db.prepare<[number], { seq: number; token_hash: string }>(
      'SELECT seq, token_hash FROM key_changes WHERE seq > ? ORDER BY seq LIMIT 1000',
    );
    let last = latest.get() ?? 0;
    let polls = 0;
    const timer = setInterval(() => {
      if (!this.#open) return;
      try {
        for (const row of since.all(last)) {
          last = row.seq;
          listener(row.token_hash === ANY_KEY ? null : row.token_hash);
        }
        // Changes older than an hour have been seen by every live watcher.
        if (++polls % 1000 === 0)
          db.prepare('DELETE FROM key_changes WHERE changed_at < ?').run(Date.now() - 3_600_000);
      } catch {
        listener(null); // could not read the changes: anything may have changed
      }
    }, pollMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  async listUsers(filter: { teamId?: string }): Promise<UserRecord[]> {
    const { orm } = this.#ready();
    const u = schema.users;
    const member =
      filter.teamId === undefined
        ? undefined
        : sql`exists (select 1 from json_each(${u.teams}) where json_each.value = ${filter.teamId})`;
    return orm.select().from(u).where(member).orderBy(asc(u.createdAt), asc(u.userId)).all();
  }

  async getBudgets(scopes: ScopeRef[], now: Date): Promise<BudgetState[]> {
    return this.#ready().readBudgets(scopes, now);
  }

  async listBudgets(query: BudgetListQuery, now: Date): Promise<BudgetState[]> {
    const { orm } = this.#ready();
    const b = schema.budgets;
    // A counter whose period is over counts as spent 0 (the reset is applied in the answer only).
    const spend = sql`CASE WHEN ${b.budgetDuration} IS NOT NULL AND ${b.budgetResetAt} <= ${now.getTime()} THEN 0 ELSE ${b.spendNano} END`;
    const used = sql`CASE WHEN ${b.maxBudgetNano} > 0 THEN CAST(${spend} AS REAL) / ${b.maxBudgetNano} ELSE 9e999 END`;
    const where: SQL[] = [sql`${b.maxBudgetNano} IS NOT NULL`, sql`${used} >= ${query.minUsedFraction ?? 0}`];
    if (query.kinds !== undefined) where.push(inArray(b.scopeKind, query.kinds));
    const limit = Math.max(0, Math.floor(Math.min(query.limit ?? 100, 1000)));
    const rows = orm
      .select()
      .from(b)
      .where(and(...where))
      .orderBy(sql`${used} DESC`, asc(b.scopeKind), asc(b.scopeId))
      .limit(limit)
      .all();
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

  // The guarded path's two calls hand back the group commit's own promise (an async method returning
  // a promise would add a promise and two microtask turns to every call).
  reserve(input: ReserveInput): Promise<ReserveResult> {
    return this.#open ? this.#open.reserve(input) : Promise.reject(notOpenError());
  }

  settle(input: SettleInput): Promise<SettleResult> {
    return this.#open ? this.#open.settle(input) : Promise.reject(notOpenError());
  }

  async release(reservationId: string): Promise<boolean> {
    return this.#ready().release(reservationId);
  }

  async setLease(input: LeaseInput): Promise<LeaseResult> {
    return this.#ready().setLease(input);
  }

  async expireReservations(now: Date, limit = 1000): Promise<number> {
    return this.#ready().expire(now, limit);
  }

  async heartbeat(processId: string, at: Date): Promise<void> {
    return this.#ready().heartbeat(processId, at);
  }

  async settleDeadProcesses(staleBefore: Date, now: Date, limit = 1000): Promise<number> {
    return this.#ready().settleDead(staleBefore, now, limit);
  }

  async pruneSpendLogs(before: Date, limit = 10_000): Promise<number> {
    const { db } = this.#ready();
    // One statement (atomic); the rollups are other tables and stay.
    return db
      .prepare(
        `DELETE FROM spend_logs WHERE request_id IN
           (SELECT request_id FROM spend_logs WHERE start_time < ? ORDER BY start_time LIMIT ?)`,
      )
      .run(before.getTime(), limit).changes;
  }

  async querySpendLogs(query: SpendLogQuery): Promise<SpendLogRecord[]> {
    const { orm } = this.#ready();
    const l = schema.spendLogs;
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
    for (const tag of query.tags ?? []) {
      where.push(sql`EXISTS (SELECT 1 FROM json_each(${l.tags}) WHERE value = ${tag})`);
    }
    if (query.before !== undefined) {
      const { startTime, requestId } = query.before;
      where.push(
        or(lt(l.startTime, startTime), and(eq(l.startTime, startTime), lt(l.requestId, requestId)))!,
      );
    }
    const limit = Math.max(0, Math.floor(Math.min(query.limit ?? 100, 1000)));
    return orm
      .select()
      .from(l)
      .where(and(...where))
      .orderBy(desc(l.startTime), desc(l.requestId))
      .limit(limit)
      .all();
  }

  async spendByTag(query: { fromDay?: string; toDay?: string }): Promise<TagSpend[]> {
    const { orm } = this.#ready();
    const d = schema.dailyTagSpend;
    const where: SQL[] = [];
    if (query.fromDay) where.push(gte(d.day, query.fromDay));
    if (query.toDay) where.push(lte(d.day, query.toDay));
    const rows = orm
      .select({
        tag: d.tag,
        requests: sql<number>`sum(${d.requests})`.mapWith(Number),
        spendNano: sql<number>`sum(${d.spendNano})`.mapWith(Number),
      })
      .from(d)
      .where(and(...where))
      .groupBy(d.tag)
      .all();
    // Sorted here, not in SQL, so that ties order exactly as in core's reference implementation.
    return rows.sort(compareTagSpend);
  }

  async spendReport(query: SpendReportQuery): Promise<SpendReportRow[]> {
    const { orm, db } = this.#ready();
    // The narrowest rollup with every column the report names (see rollupTableFor).
    const d = ROLLUP_TABLES[rollupTableFor(query)];
    const column = (name: string) => (d as unknown as Record<string, SQLiteColumn>)[name]!;
    const where: SQL[] = [gte(d.day, query.fromDay), lte(d.day, query.toDay)];
    for (const [values, name] of activeFilters(query.filters)) where.push(inArray(column(name), values));
    const groups: Array<SQL | SQLiteColumn> = query.groupBy.map((dimension) =>
      column(rollupColumn(dimension)),
    );
    // A top report, planned rank-first (see topReportPlan): the ranked column keeps its value inside
    // the top n over the range and is NULL (never stored: a missing value is '') for the rest, which
    // then sum into one "other" group per day; one statement, so one snapshot.
    const rankFirst = query.top !== undefined && topReportPlan(query) === 'rank-first';
    const selected: Array<SQL | SQLiteColumn | SQL.Aliased> = [...groups];
    if (query.top && rankFirst) {
      const i = query.groupBy.indexOf(rankedDimension(query));
      const ranked = groups[i] as SQLiteColumn;
      const top = orm
        .select({ value: ranked })
        .from(d)
        .where(and(...where))
        .groupBy(ranked)
        .orderBy(sql`sum(${d.spendNano}) DESC`, sql`${ranked}`)
        .limit(query.top.n);
      selected[i] = sql`CASE WHEN ${inArray(ranked, top)} THEN ${ranked} END`.as('top_group');
      groups[i] = sql`${sql.identifier('top_group')}`;
    }
    const groupFirst = query.top !== undefined && !rankFirst;
    const total = (c: SQLiteColumn) => sql<number>`sum(${c})`;
    const fields: Record<string, SQL | SQLiteColumn | SQL.Aliased> = {
      requests: total(d.requests),
      failedRequests: total(d.failedRequests),
      spendNano: total(d.spendNano),
      promptTokens: total(d.promptTokens),
      completionTokens: total(d.completionTokens),
    };
    selected.forEach((field, i) => {
      fields[`g${i}`] = groupFirst ? sql`${field}`.as(`g${i}`) : field;
    });
    if (groupFirst) {
      for (const name of ['requests', 'failedRequests', 'spendNano', 'promptTokens', 'completionTokens']) {
        fields[name] = sql`${fields[name]}`.as(name);
      }
    }
    let { sql: text, params } = orm
      .select(fields)
      .from(d)
      .where(and(...where))
      .groupBy(...groups)
      // Without groups, no matching rows still make one row of NULL sums: none is wanted.
      .having(sql`count(*) > 0`)
      .toSQL();
    if (groupFirst) {
      ({ text, params } = topReportSql(text, params, query));
    }
    // Rows in array form, mapped here: drizzle's per-cell mapping cost as much as the query itself
    // on reports of tens of thousands of groups.
    const names = query.groupBy.map(spendReportField);
    const rows = (
      db
        .prepare(text)
        .raw()
        .all(...params) as unknown[][]
    ).map((r) => {
      const row: SpendReportRow = {
        requests: r[0] as number,
        failedRequests: r[1] as number,
        spendNano: r[2] as number,
        promptTokens: r[3] as number,
        completionTokens: r[4] as number,
      };
      for (let i = 0; i < names.length; i++)
        (row as unknown as Record<string, unknown>)[names[i]!] = r[5 + i];
      return row;
    });
    return finishSpendReport(rows, query.groupBy, query.top);
  }

  async claimAlert(claim: AlertClaim): Promise<boolean> {
    const { s } = this.#ready();
    const now = claim.now.getTime();
    s.pruneAlertClaims.run(now);
    const { changes } = s.claimAlert.run(
      claim.scope.kind,
      claim.scope.id,
      claim.period,
      claim.threshold,
      now,
      claim.expiresAt?.getTime() ?? null,
    );
    return changes === 1;
  }

  async createDashboardSession(session: DashboardSessionRecord, now: Date): Promise<void> {
    const { s } = this.#ready();
    s.pruneDashboardSessions.run(now.getTime());
    try {
      s.insertDashboardSession.run(
        session.idHash,
        session.username,
        session.credentialMac,
        session.createdAt.getTime(),
        session.expiresAt.getTime(),
      );
    } catch (error) {
      if (isKeyConflict(error)) throw new StorageConflictError('dashboard session', session.idHash);
      throw error;
    }
  }

  async getDashboardSession(idHash: string, now: Date): Promise<DashboardSessionRecord | null> {
    const { s } = this.#ready();
    const row = s.selectDashboardSession.get(idHash, now.getTime());
    if (!row) return null;
    const [username, credentialMac, createdAt, expiresAt] = row;
    return {
      idHash,
      username,
      credentialMac,
      createdAt: new Date(createdAt),
      expiresAt: new Date(expiresAt),
    };
  }

  async deleteDashboardSession(idHash: string): Promise<boolean> {
    return this.#ready().s.deleteDashboardSession.run(idHash).changes === 1;
  }

  async setRateLimits(scope: ScopeRef, limits: RateLimits | null): Promise<void> {
    const { s } = this.#ready();
    if (limits) s.upsertRateLimits.run(scope.kind, scope.id, JSON.stringify(limits));
    else s.deleteRateLimits.run(scope.kind, scope.id);
  }

  async getRateLimits(scopes: ScopeRef[]): Promise<Array<{ scope: ScopeRef; limits: RateLimits }>> {
    const { s } = this.#ready();
    const out: Array<{ scope: ScopeRef; limits: RateLimits }> = [];
    for (const scope of scopes) {
      const json = s.selectRateLimits.get(scope.kind, scope.id);
      if (json !== undefined)
        out.push({ scope: { kind: scope.kind, id: scope.id }, limits: JSON.parse(json) });
    }
    return out;
  }

  async acquireRate(input: RateAcquireInput): Promise<RateAcquireResult> {
    return this.#ready().acquireRate(input);
  }

  async settleRate(input: RateSettleInput): Promise<void> {
    return this.#ready().settleRate(input);
  }

  #prepare(db: Database.Database): Open {
    const orm = drizzle({ client: db, schema });
    const s = prepareStatements(db, orm);
    const p = new ReservationProfiles(s);
    const group = new GroupCommit(db, () => new WriteBatch(s), p, refusedBySqlite);
    const holders = new ProcessIds(s);
    return {
      db,
      orm,
      s,
      insert: db.transaction((entities: EntityInsert[]) => insertEntities(orm, s, entities)).immediate,
      reserve: (input: ReserveInput) => group.submit((b) => reserveBudgets(s, p, b, input, holders)),
      settle: (input: SettleInput) => group.submit((b) => settleReservation(s, p, b, input)),
      release: (reservationId: string) =>
        group.submit((b) => releaseReservation(s, p, b, reservationId, new Date())),
      setLease: (input: LeaseInput) => group.submit((b) => setLease(s, p, b, input, holders)),
      expire: (now: Date, limit: number) => group.submit((b) => expireReservations(s, p, b, now, limit)),
      heartbeat: async (processId: string, at: Date) => {
        const id = await group.submit(() => s.beat.get(processId, at.getTime())!.id);
        holders.committed(processId, id); // the row is committed: its id may name reservations
      },
      settleDead: (staleBefore: Date, now: Date, limit: number) =>
        group.submit((b) => settleDeadProcesses(s, p, b, staleBefore, now, limit)),
      acquireRate: (input: RateAcquireInput) => group.submit(() => acquireRate(s, input)),
      settleRate: (input: RateSettleInput) => group.submit(() => settleRate(s, input)),
      // A read transaction, so that every counter comes from one snapshot.
      readBudgets: db.transaction((scopes: ScopeRef[], now: Date) =>
        readBudgets(new WriteBatch(s), scopes, now),
      ).deferred,
    };
  }
}

function notOpenError(): Error {
  return new Error('SqliteStorage is not open: call `await storage.init()` first.');
}

/**
 * Creates the embedded SQLite store. Call `await storage.init()` (the guard does) to open the file
 * and apply migrations.
 * @example
 * const storage = sqliteStorage({ path: './spendguard.db' });
 */
export function sqliteStorage(options: SqliteStorageOptions = {}): SqliteStorage {
  return new SqliteStorage(options);
}

function prepareStatements(db: Database.Database, orm: Orm) {
  const id = sql.placeholder('id');
  return {
    getTeam: orm.select().from(schema.teams).where(eq(schema.teams.teamId, id)).prepare(),
    getUser: orm.select().from(schema.users).where(eq(schema.users.userId, id)).prepare(),
    getKey: orm.select().from(schema.keys).where(eq(schema.keys.tokenHash, id)).prepare(),
    // The hot path below is plain better-sqlite3: drizzle's parameter filling and row mapping add
    // ~0.8 µs to each statement (measured here), about what a primary-key lookup itself costs.
    selectBudget: db
      .prepare<[string, string], BudgetRow>(
        'SELECT max_budget_nano, budget_duration, budget_reset_at, spend_nano, reserved_nano, soft_budget_nano FROM budgets WHERE scope_kind = ? AND scope_id = ?',
      )
      .raw(),
    // Absolute values: they were computed from a row read in this same write transaction.
    writeBudget: db.prepare<[number, number, number | null, string, string]>(
      'UPDATE budgets SET spend_nano = ?, reserved_nano = ?, budget_reset_at = ? WHERE scope_kind = ? AND scope_id = ?',
    ),
    // A reservation row points to its profile (migration 10): what a key's calls share, written once.
    insertProfile: db.prepare<[string], { id: number }>(
      'INSERT INTO reservation_profiles (body) VALUES (?) ON CONFLICT (body) DO NOTHING RETURNING id',
    ),
    selectProfileId: db.prepare<[string], { id: number }>(
      'SELECT id FROM reservation_profiles WHERE body = ?',
    ),
    selectProfile: db.prepare<[number], { body: string }>(
      'SELECT body FROM reservation_profiles WHERE id = ?',
    ),
    insertReservation: db.prepare<
      [
        string,
        number,
        number,
        number,
        number,
        number | null,
        string | null,
        string | null,
        string | null,
        number | null,
      ]
    >(
      'INSERT INTO reservations (id, profile_id, amount_nano, expires_at, created_at, start_time, request_id, end_user, tags, holder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    beat: db.prepare<[string, number], { id: number }>(
      `INSERT INTO processes (name, heartbeat_at) VALUES (?, ?)
       ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at RETURNING id`,
    ),
    processId: db.prepare<[string], { id: number }>('SELECT id FROM processes WHERE name = ?'),
    // Open reservations are the calls in flight (hundreds at most): a scan, no index to keep per write.
    deadReservations: db.prepare<[number, number], ReservationRow & { process: string }>(
      `SELECT r.id, r.profile_id, r.amount_nano, r.start_time, r.request_id, r.end_user, r.tags, p.name AS process
       FROM reservations r JOIN processes p ON p.id = r.holder WHERE p.heartbeat_at <= ? LIMIT ?`,
    ),
    freeDeadLeases: db.prepare<[number]>(
      `DELETE FROM rate_leases WHERE EXISTS (SELECT 1 FROM processes p WHERE p.heartbeat_at <= ?
         AND substr(rate_leases.lease_id, 1, length(p.name) + 1) = p.name || ':')`,
    ),
    forgetDead: db.prepare<[number]>(
      'DELETE FROM processes WHERE heartbeat_at <= ? AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.holder = processes.id)',
    ),
    expiredReservations: db.prepare<[number, number], ReservationRow>(
      'SELECT id, profile_id, amount_nano, start_time, request_id, end_user, tags FROM reservations WHERE expires_at <= ? ORDER BY expires_at LIMIT ?',
    ),
    selectReservation: db.prepare<[string], { profile_id: number; amount_nano: number }>(
      'SELECT profile_id, amount_nano FROM reservations WHERE id = ?',
    ),
    resizeReservation: db.prepare<[number, number, string]>(
      'UPDATE reservations SET amount_nano = ?, expires_at = ? WHERE id = ?',
    ),
    takeReservation: db.prepare<[string], { profile_id: number; amount_nano: number }>(
      'DELETE FROM reservations WHERE id = ? RETURNING profile_id, amount_nano',
    ),
    // A settlement's reservation, looked up before it is deleted: most settlements (calls admitted from
    // an escrow lease) have none, and a lookup that misses costs ~0.3 µs where a DELETE ... RETURNING
    // that misses costs ~1.1 µs (both measured here). Both run under the batch's write lock.
    findReservation: db
      .prepare<[string], [profileId: number, amountNano: number]>(
        'SELECT profile_id, amount_nano FROM reservations WHERE id = ?',
      )
      .raw(),
    deleteReservation: db.prepare<[string]>('DELETE FROM reservations WHERE id = ?'),
    // Only a taken request id is ignored; any other constraint still fails the settle.
    insertLog: db.prepare<SpendLogParams>(
      `INSERT INTO spend_logs (request_id, call_type, api_key_hash, spend_nano, prompt_tokens, completion_tokens,
         total_tokens, start_time, end_time, model, provider, user_id, team_id, end_user, tags, status, estimated,
         http_status, metadata, response_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (request_id) DO NOTHING`,
    ),
    upsertDaily: db.prepare<RollupParams>(
      `INSERT INTO daily_spend (day, team_id, user_id, api_key_hash, model, provider, end_user, requests,
         failed_requests, spend_nano, prompt_tokens, completion_tokens)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (day, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
         requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests,
         spend_nano = spend_nano + excluded.spend_nano,
         prompt_tokens = prompt_tokens + excluded.prompt_tokens,
         completion_tokens = completion_tokens + excluded.completion_tokens`,
    ),
    upsertTag: db.prepare<[tag: string, ...RollupParams]>(
      `INSERT INTO daily_tag_spend (tag, day, team_id, user_id, api_key_hash, model, provider, end_user, requests,
         failed_requests, spend_nano, prompt_tokens, completion_tokens)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (day, tag, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
         requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests,
         spend_nano = spend_nano + excluded.spend_nano,
         prompt_tokens = prompt_tokens + excluded.prompt_tokens,
         completion_tokens = completion_tokens + excluded.completion_tokens`,
    ),
    claimAlert: db.prepare<[string, string, string, string, number, number | null]>(
      `INSERT INTO alert_claims (scope_kind, scope_id, period, threshold, claimed_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
    ),
    selectRateLimits: db
      .prepare<[string, string], string>(
        'SELECT limits FROM rate_limits WHERE scope_kind = ? AND scope_id = ?',
      )
      .pluck(),
    upsertRateLimits: db.prepare<[string, string, string]>(
      `INSERT INTO rate_limits (scope_kind, scope_id, limits) VALUES (?, ?, ?)
       ON CONFLICT (scope_kind, scope_id) DO UPDATE SET limits = excluded.limits`,
    ),
    deleteRateLimits: db.prepare<[string, string]>(
      'DELETE FROM rate_limits WHERE scope_kind = ? AND scope_id = ?',
    ),
    selectRateWindow: db
      .prepare<[string, string, string, string], [number, number]>(
        'SELECT window_start, used FROM rate_windows WHERE scope_kind = ? AND scope_id = ? AND metric = ? AND model = ?',
      )
      .raw(),
    writeRateWindow: db.prepare<[string, string, string, string, number, number]>(
      `INSERT INTO rate_windows (scope_kind, scope_id, metric, model, window_start, used) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (scope_kind, scope_id, metric, model) DO UPDATE SET
         window_start = excluded.window_start, used = excluded.used`,
    ),
    pruneRateLeases: db.prepare<[string, string, string, number]>(
      'DELETE FROM rate_leases WHERE scope_kind = ? AND scope_id = ? AND model = ? AND expires_at <= ?',
    ),
    countRateLeases: db
      .prepare<[string, string, string], number>(
        'SELECT count(*) FROM rate_leases WHERE scope_kind = ? AND scope_id = ? AND model = ?',
      )
      .pluck(),
    insertRateLease: db.prepare<[string, string, string, string, number]>(
      'INSERT INTO rate_leases (scope_kind, scope_id, model, lease_id, expires_at) VALUES (?, ?, ?, ?, ?)',
    ),
    releaseRateLeases: db.prepare<[string]>('DELETE FROM rate_leases WHERE lease_id = ?'),
    pruneAlertClaims: db.prepare<[number]>(
      'DELETE FROM alert_claims WHERE expires_at IS NOT NULL AND expires_at <= ?',
    ),
    insertDashboardSession: db.prepare<[string, string, string, number, number]>(
      'INSERT INTO dashboard_sessions (id_hash, username, credential_mac, created_at, expires_at) VALUES (?, ?, ?, ?, ?)',
    ),
    selectDashboardSession: db
      .prepare<[string, number], [string, string, number, number]>(
        'SELECT username, credential_mac, created_at, expires_at FROM dashboard_sessions WHERE id_hash = ? AND expires_at > ?',
      )
      .raw(),
    deleteDashboardSession: db.prepare<[string]>('DELETE FROM dashboard_sessions WHERE id_hash = ?'),
    pruneDashboardSessions: db.prepare<[number]>('DELETE FROM dashboard_sessions WHERE expires_at <= ?'),
  };
}

function insertEntities(orm: Orm, s: Statements, entities: EntityInsert[]): void {
  for (const given of entities) {
    const e = withTier(orm, given);
    const scope = scopeOfInsert(e);
    try {
      if (e.type === 'team') orm.insert(schema.teams).values(e.record).run();
      else if (e.type === 'user') orm.insert(schema.users).values(e.record).run();
      else if (e.type === 'key') orm.insert(schema.keys).values(e.record).run();
      else if (e.type === 'member') insertMember(orm, e.record);
      else if (e.type === 'customer') orm.insert(schema.customers).values(e.record).run();
      else if (e.type === 'tag') orm.insert(schema.tags).values(e.record).run();
      orm
        .insert(schema.budgets)
        .values({ scopeKind: scope.kind, scopeId: scope.id, ...e.budget, spendNano: 0, reservedNano: 0 })
        .run();
      if (e.type !== 'budget' && e.rateLimits)
        s.upsertRateLimits.run(scope.kind, scope.id, JSON.stringify(e.rateLimits));
    } catch (err) {
      // Throwing rolls the whole batch back.
      if (isKeyConflict(err)) throw new StorageConflictError(e.type, scope.id);
      throw err;
    }
  }
}

function selectTier(orm: Orm, budgetId: string): BudgetTierRecord | null {
  return orm.select().from(schema.budgetTiers).where(eq(schema.budgetTiers.budgetId, budgetId)).get() ?? null;
}

/** Inside a write transaction: a customer or key insert with its tier's limits in place of its own. */
function withTier(orm: Orm, e: EntityInsert): EntityInsert {
  if (e.type !== 'customer' && e.type !== 'key') return e;
  const budgetId = e.record.budgetId ?? null;
  const tier = budgetId === null ? null : selectTier(orm, budgetId);
  if (budgetId !== null && !tier) throw missingBudgetTier(budgetId);
  const linked = tier
    ? { budget: tierBudgetInit(tier, e.record.createdAt), rateLimits: tierRateLimits(tier) }
    : {};
  return e.type === 'key'
    ? { ...e, record: { ...e.record, budgetId }, ...linked }
    : { ...e, record: { ...e.record, budgetId }, ...linked };
}

/** Inside a write transaction: a linked end user's or key's counter and rate limits made the tier's. */
function retier(orm: Orm, s: Statements, scope: ScopeRef, tier: BudgetTierRecord, now: Date): void {
  changeCounter(orm, s, scope, now, (state) => retieredState(state, tier, now));
  const limits = tierRateLimits(tier);
  if (limits) s.upsertRateLimits.run(scope.kind, scope.id, JSON.stringify(limits));
  else s.deleteRateLimits.run(scope.kind, scope.id);
}

/** Thrown inside `allOrNone` when a record to delete is missing: the transaction rolls back. */
const MISSING = Symbol('missing');

/** `run` in one write transaction; `null`, with nothing written, when it throws `MISSING`. */
function allOrNone<T>(db: Database.Database, run: () => T): T | null {
  try {
    return db.transaction(run).immediate();
  } catch (error) {
    if (error === MISSING) return null;
    throw error;
  }
}

/** `key_changes.token_hash` for "any key may have changed" (the column is NOT NULL). */
const ANY_KEY = '*';

function recordAnyKeyChange(orm: Orm): void {
  orm.insert(schema.keyChanges).values({ tokenHash: ANY_KEY, changedAt: new Date() }).run();
}

function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function patchBudget(orm: Orm, kind: string, id: string, budget: Partial<BudgetInit> | undefined): void {
  const limits = definedOnly(budget ?? {});
  if (Object.keys(limits).length === 0) return;
  const b = schema.budgets;
  orm
    .update(b)
    .set(limits)
    .where(and(eq(b.scopeKind, kind), eq(b.scopeId, id)))
    .run();
}

/** Inside a write transaction: a counter read (due reset applied), changed and written back; null if missing. */
function changeCounter(
  orm: Orm,
  s: Statements,
  scope: ScopeRef,
  now: Date,
  change: (state: BudgetState) => BudgetState,
): BudgetState | null {
  const row = s.selectBudget.get(scope.kind, scope.id);
  if (!row) return null;
  const next = change(applyDueReset(toState(scope, row), now));
  orm
    .update(schema.budgets)
    .set({
      maxBudgetNano: next.maxBudgetNano,
      budgetDuration: next.budgetDuration,
      budgetResetAt: next.budgetResetAt,
      softBudgetNano: next.softBudgetNano,
      spendNano: next.spendNano,
    })
    .where(and(eq(schema.budgets.scopeKind, scope.kind), eq(schema.budgets.scopeId, scope.id)))
    .run();
  return next;
}

/** Inside an entity update's transaction, once the entity is found: the `ScopeChanges` it carries. */
function applyScopeChanges(orm: Orm, s: Statements, also: ScopeChanges | undefined): void {
  if (!also) return;
  if (also.rateLimits) {
    const { scope, limits } = also.rateLimits;
    if (limits) s.upsertRateLimits.run(scope.kind, scope.id, JSON.stringify(limits));
    else s.deleteRateLimits.run(scope.kind, scope.id);
  }
  for (const scope of also.deleteScopes ?? []) deleteCounter(orm, scope.kind, scope.id);
  for (const { scope, set, insert } of also.upsertBudgets ?? []) {
    const changed = changeCounter(orm, s, scope, also.now, (state) => ({ ...state, ...definedOnly(set) }));
    if (!changed) {
      orm
        .insert(schema.budgets)
        .values({ scopeKind: scope.kind, scopeId: scope.id, ...insert, spendNano: 0, reservedNano: 0 })
        .run();
    }
  }
}

function deleteCounter(orm: Orm, kind: string, id: string): void {
  const b = schema.budgets;
  orm
    .delete(b)
    .where(and(eq(b.scopeKind, kind), eq(b.scopeId, id)))
    .run();
}

/** Inside a transaction: keys, their counters and secrets, with a change record each. */
function deleteKeysIn(orm: Orm, tokenHashes: string[]): void {
  for (const tokenHash of tokenHashes) {
    orm.delete(schema.keys).where(eq(schema.keys.tokenHash, tokenHash)).run();
    deleteCounter(orm, 'key', tokenHash);
    orm.delete(schema.keySecrets).where(eq(schema.keySecrets.tokenHash, tokenHash)).run();
    orm.insert(schema.keyChanges).values({ tokenHash, changedAt: new Date() }).run();
  }
}

/** Inserts a membership; the user must exist and gains the team in its `teams`. */
function insertMember(orm: Orm, m: MemberRecord): void {
  const u = schema.users;
  const user = orm.select({ teams: u.teams }).from(u).where(eq(u.userId, m.userId)).get();
  if (!user) throw new Error(`no user '${m.userId}' to add to a team`);
  if (
    !orm.select({ id: schema.teams.teamId }).from(schema.teams).where(eq(schema.teams.teamId, m.teamId)).get()
  ) {
    throw new Error(`no team '${m.teamId}' to add a member to`);
  }
  orm.insert(schema.teamMembers).values(m).run();
  if (!user.teams.includes(m.teamId)) {
    orm
      .update(u)
      .set({ teams: [...user.teams, m.teamId] })
      .where(eq(u.userId, m.userId))
      .run();
  }
}

/** Removes a membership, its counter, and the team from the user's `teams`. */
function dropMember(orm: Orm, m: MemberRecord): void {
  const tm = schema.teamMembers;
  orm
    .delete(tm)
    .where(and(eq(tm.teamId, m.teamId), eq(tm.userId, m.userId)))
    .run();
  deleteCounter(orm, 'member', memberScopeId(m.teamId, m.userId));
  const u = schema.users;
  const user = orm.select({ teams: u.teams }).from(u).where(eq(u.userId, m.userId)).get();
  if (user?.teams.includes(m.teamId)) {
    orm
      .update(u)
      .set({ teams: user.teams.filter((t) => t !== m.teamId) })
      .where(eq(u.userId, m.userId))
      .run();
  }
}

function reserveBudgets(
  s: Statements,
  p: ReservationProfiles,
  b: WriteBatch,
  input: ReserveInput,
  holders: ProcessIds,
): ReserveResult {
  const next: BudgetState[] = [];
  for (const scope of input.scopes) {
    const current = b.read(scope, input.now);
    if (!current) {
      if (isOptionalScope(scope)) continue;
      throw new Error(`no budget counter for ${scopeKey(scope)}`);
    }
    if (!fitsBudget(current, input.amountNano, input.mode)) return { ok: false, refused: current };
    next.push(withCounters(current, current.spendNano, current.reservedNano + input.amountNano));
  }
  const { pending } = input;
  const profile = p.idFor(next, pending);
  try {
    s.insertReservation.run(
      input.reservationId,
      profile.id,
      input.amountNano,
      input.expiresAt.getTime(),
      input.now.getTime(),
      pending ? pending.startTime.getTime() : null,
      pending && pending.requestId !== input.reservationId ? pending.requestId : null,
      pending?.endUser ?? null,
      pending && pending.tags.length > 0 ? JSON.stringify(pending.tags) : null,
      input.processId === undefined ? null : holders.idOf(input.processId),
    );
  } catch (err) {
    if (isKeyConflict(err)) throw new StorageConflictError('reservation', input.reservationId);
    throw err;
  }
  p.written(profile);
  b.write(next);
  return { ok: true, states: next };
}

/** `setLease`: opens the lease as a reservation, or changes an open one's amount and expiry. */
function setLease(
  s: Statements,
  p: ReservationProfiles,
  b: WriteBatch,
  input: LeaseInput,
  holders: ProcessIds,
): LeaseResult {
  const open = s.selectReservation.get(input.leaseId);
  if (!open) {
    if (input.amountNano === 0)
      return { ok: true, states: readBudgets(b, input.scopes, input.now), previousNano: 0 };
    const { leaseId: reservationId, ...rest } = input;
    const opened = reserveBudgets(s, p, b, { reservationId, ...rest }, holders);
    return opened.ok
      ? { ok: true, states: opened.states, previousNano: 0 }
      : { ok: false, refused: opened.refused, heldNano: 0 };
  }
  const delta = input.amountNano - open.amount_nano;
  const next: BudgetState[] = [];
  for (const scope of p.get(open.profile_id).scopes) {
    const current = b.read(scope, input.now);
    if (!current) continue; // deleted since: nothing left to hold there
    if (delta > 0 && !fitsBudget(current, delta, input.mode)) {
      return { ok: false, refused: current, heldNano: open.amount_nano };
    }
    next.push(withCounters(current, current.spendNano, current.reservedNano + delta));
  }
  if (input.amountNano === 0) s.takeReservation.get(input.leaseId);
  else s.resizeReservation.run(input.amountNano, input.expiresAt.getTime(), input.leaseId);
  b.write(next);
  return { ok: true, states: next, previousNano: open.amount_nano };
}

function settleReservation(
  s: Statements,
  p: ReservationProfiles,
  b: WriteBatch,
  input: SettleInput,
): SettleResult {
  const { log, costNano, now } = input;
  const logged = s.insertLog.run(
    log.requestId,
    log.callType,
    log.apiKeyHash,
    log.spendNano,
    log.promptTokens,
    log.completionTokens,
    log.totalTokens,
    log.startTime.getTime(),
    log.endTime.getTime(),
    log.model,
    log.provider,
    log.userId,
    log.teamId,
    log.endUser,
    log.tags.length === 0 ? '[]' : JSON.stringify(log.tags),
    log.status,
    log.estimated ? 1 : 0,
    log.httpStatus,
    JSON.stringify(log.metadata),
    log.responseId ?? null,
  );
  // Already settled: nothing was written, so committing this transaction changes nothing.
  if (logged.changes === 0) return { applied: false, states: readBudgets(b, input.scopes, now) };

  const reservation = s.findReservation.get(input.reservationId);
  const states: BudgetState[] = [];
  if (!reservation) {
    // No reservation (admitted from a lease, or already charged by a sweep): charge the cost alone.
    for (const scope of input.scopes) {
      const current = b.read(scope, now);
      if (current) states.push(withCounters(current, current.spendNano + costNano, current.reservedNano));
    }
    b.write(states);
  } else {
    s.deleteReservation.run(input.reservationId);
    // Release the reservation and charge the cost in one write per scope where the two coincide (the
    // usual case); a reserved scope that is not charged is released on its own.
    const [profileId, released] = reservation;
    const toRelease: (ScopeRef | null)[] = p.get(profileId).scopes.slice();
    for (const scope of input.scopes) {
      const at = toRelease.findIndex((r) => r !== null && r.kind === scope.kind && r.id === scope.id);
      if (at >= 0) toRelease[at] = null;
      const current = b.read(scope, now);
      if (!current) continue;
      states.push(
        withCounters(
          current,
          current.spendNano + costNano,
          at >= 0 ? current.reservedNano - released : current.reservedNano,
        ),
      );
    }
    const releasedOnly: BudgetState[] = [];
    for (const scope of toRelease) {
      const current = scope && b.read(scope, now);
      if (current)
        releasedOnly.push(withCounters(current, current.spendNano, current.reservedNano - released));
    }
    b.write(states);
    b.write(releasedOnly);
  }
  b.rollup(rollupRowOf(log, costNano), log.tags);
  return { applied: true, states };
}

/** Decides every bucket from the rows read under the write lock, then writes all of them or none. */
function acquireRate(s: Statements, input: RateAcquireInput): RateAcquireResult {
  const nowMs = input.now.getTime();
  const decided = input.buckets.map((bucket) => {
    const { kind, id } = bucket.scope;
    let current: { windowStartMs: number; used: number } | null = null;
    if (bucket.metric === 'parallel') {
      s.pruneRateLeases.run(kind, id, bucket.model, nowMs);
      current = { windowStartMs: nowMs, used: s.countRateLeases.get(kind, id, bucket.model) ?? 0 };
    } else {
      const row = s.selectRateWindow.get(kind, id, bucket.metric, bucket.model);
      current = row ? { windowStartMs: row[0], used: row[1] } : null;
    }
    return { bucket, ...decideRateBucket(bucket, current, nowMs, input.windowMs) };
  });
  const refused = decided.find((d) => !d.ok);
  // Refused: throwing would roll back the pruned leases too; they are expired, so keeping the prune is harmless.
  if (refused) return { ok: false, refused: refused.state };
  for (const { bucket, next } of decided) {
    const { kind, id } = bucket.scope;
    if (bucket.metric === 'parallel') {
      s.insertRateLease.run(kind, id, bucket.model, input.leaseId, input.leaseExpiresAt.getTime());
    } else if (bucket.metric === 'rpm') {
      s.writeRateWindow.run(kind, id, bucket.metric, bucket.model, next.windowStartMs, next.used);
    }
  }
  return { ok: true, states: decided.map((d) => d.state) };
}

function settleRate(s: Statements, input: RateSettleInput): void {
  const nowMs = input.now.getTime();
  for (const bucket of input.buckets) {
    if (bucket.metric !== 'tpm') continue;
    const { kind, id } = bucket.scope;
    const row = s.selectRateWindow.get(kind, id, 'tpm', bucket.model);
    const next = addRateTokens(
      row ? { windowStartMs: row[0], used: row[1] } : null,
      input.tokens,
      nowMs,
      input.windowMs,
    );
    s.writeRateWindow.run(kind, id, 'tpm', bucket.model, next.windowStartMs, next.used);
  }
  s.releaseRateLeases.run(input.leaseId);
}

function releaseReservation(
  s: Statements,
  p: ReservationProfiles,
  b: WriteBatch,
  reservationId: string,
  now: Date,
): boolean {
  const reservation = s.takeReservation.get(reservationId);
  if (!reservation) return false;
  const released: BudgetState[] = [];
  for (const scope of p.get(reservation.profile_id).scopes) {
    const current = b.read(scope, now);
    if (current)
      released.push(withCounters(current, current.spendNano, current.reservedNano - reservation.amount_nano));
  }
  b.write(released);
  return true;
}

/** An open reservation as the sweep reads it (migration 10). */
interface ReservationRow {
  id: string;
  profile_id: number;
  amount_nano: number;
  start_time: number | null;
  request_id: string | null;
  end_user: string | null;
  tags: string | null;
}

function expireReservations(
  s: Statements,
  p: ReservationProfiles,
  b: WriteBatch,
  now: Date,
  limit: number,
): number {
  const rows = s.expiredReservations.all(now.getTime(), limit);
  for (const row of rows) chargeAtEstimate(s, p, b, row, now);
  return rows.length;
}

/** Charges the open reservations of the processes whose last beat is at or before `staleBefore`. */
function settleDeadProcesses(
  s: Statements,
  p: ReservationProfiles,
  b: WriteBatch,
  staleBefore: Date,
  now: Date,
  limit: number,
): number {
  const rows = s.deadReservations.all(staleBefore.getTime(), limit);
  for (const row of rows) chargeAtEstimate(s, p, b, row, now, row.process);
  s.freeDeadLeases.run(staleBefore.getTime());
  if (rows.length < limit) s.forgetDead.run(staleBefore.getTime());
  return rows.length;
}

/** Charges one open reservation at its amount, with its call's attribution (see `expiredReservationLog`). */
function chargeAtEstimate(
  s: Statements,
  p: ReservationProfiles,
  b: WriteBatch,
  row: ReservationRow,
  now: Date,
  deadProcess?: string,
): void {
  const profile = p.get(row.profile_id);
  const pending: PendingCall | null = profile.call && {
    requestId: row.request_id ?? row.id,
    ...profile.call,
    endUser: row.end_user,
    tags: row.tags === null ? [] : (JSON.parse(row.tags) as string[]),
    startTime: new Date(row.start_time ?? now.getTime()),
  };
  const log = expiredReservationLog(row.id, row.amount_nano, pending, now, deadProcess);
  // settle() releases the reservation and charges its amount, as the contract says.
  settleReservation(s, p, b, {
    reservationId: row.id,
    scopes: abandonedChargeScopes(profile.scopes, pending),
    costNano: row.amount_nano,
    now,
    log,
  });
  releaseReservation(s, p, b, row.id, now); // only left if that request id was already logged: release it
}

/**
 * The `processes.id` of each process id, as a reservation row names it. Learned from the heartbeat's
 * own write once it committed; a process not known here (it never beat) is looked up, and one never
 * registered names no process (its reservations are left to the TTL).
 */
class ProcessIds {
  readonly #s: Statements;
  readonly #ids = new Map<string, number>();

  constructor(s: Statements) {
    this.#s = s;
  }

  idOf(processId: string): number | null {
    return this.#ids.get(processId) ?? this.#s.processId.get(processId)?.id ?? null;
  }

  /** A heartbeat committed: its row's id (a new one when the row had been forgotten meanwhile). */
  committed(processId: string, id: number): void {
    this.#ids.set(processId, id);
  }
}

/** Counters with due resets applied in the answer only; the next guarded write persists them. */
function readBudgets(b: WriteBatch, scopes: ScopeRef[], now: Date): BudgetState[] {
  const out: BudgetState[] = [];
  for (const scope of scopes) {
    const state = b.read(scope, now);
    if (state) out.push(state);
  }
  return out;
}

/** A primary-key collision, raised by better-sqlite3 directly or wrapped by drizzle (`cause`). */
/**
 * Codes of a value SQLite refused: a type a STRICT column cannot hold (a fractional nano-dollar), a
 * CHECK or NOT NULL constraint, a string or blob past SQLite's size limit, a datatype mismatch. The same
 * write fails again whenever it is tried: it is the input's fault.
 */
const INPUT_ERRORS = new Set([
  'SQLITE_CONSTRAINT_DATATYPE',
  'SQLITE_CONSTRAINT_CHECK',
  'SQLITE_CONSTRAINT_NOTNULL',
  'SQLITE_TOOBIG',
  'SQLITE_MISMATCH',
]);

function refusedBySqlite(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof Database.SqliteError) return INPUT_ERRORS.has(e.code);
  }
  return false;
}

function isKeyConflict(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof Database.SqliteError) {
      return e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || e.code === 'SQLITE_CONSTRAINT_UNIQUE';
    }
  }
  return false;
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
    top AS (SELECT ${ranked} AS v FROM per GROUP BY ${ranked} ORDER BY sum("spendNano") DESC, ${ranked} LIMIT ?)
    SELECT sum("requests"), sum("failedRequests"), sum("spendNano"), sum("promptTokens"), sum("completionTokens"), ${keys.join(', ')}
    FROM per GROUP BY ${keys.map((_, i) => i + 6).join(', ')}`;
  return { text, params: [...params, query.top!.n] };
}

/** Thrown inside `updateKeys`' transaction to roll it back when a key does not exist. */
class MissingKey extends Error {}
