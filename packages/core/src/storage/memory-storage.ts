import { StorageConflictError } from '../errors.js';
import {
  abandonedChargeScopes,
  applyDueReset,
  expiredReservationLog,
  fitsBudget,
  missingBudgetTier,
  retieredState,
  tierBudgetInit,
  tierRateLimits,
} from './budget-rules.js';
import { addRateTokens, decideRateBucket, type RateWindow, rateBucketKey } from './rate-limit-rules.js';
import { aggregateRollup, type RollupRow, readsTagRollup, rollupRowOf } from './spend-rollup.js';
import {
  type AlertClaim,
  assertChangeableScopes,
  type BudgetInit,
  type BudgetListQuery,
  type BudgetState,
  type BudgetTierDeletion,
  type BudgetTierPatch,
  type BudgetTierRecord,
  budgetUsedFraction,
  type CustomerRecord,
  compareBudgetUse,
  compareTagSpend,
  type DashboardSessionRecord,
  type DeletedEntity,
  type EntityInsert,
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
  type PendingCall,
  type RateAcquireInput,
  type RateAcquireResult,
  type RateBucketState,
  type RateLimits,
  type RateSettleInput,
  type RegenerateKeyInput,
  type ReserveInput,
  type ReserveResult,
  type ScopeChanges,
  type ScopeRef,
  type SettleInput,
  type SettleResult,
  type SpendLogQuery,
  type SpendLogRecord,
  type SpendReportQuery,
  type SpendReportRow,
  type SpendStorage,
  scopeKey,
  scopeOfInsert,
  type TagRecord,
  type TagSpend,
  type TeamPatch,
  type TeamRecord,
  type UserPatch,
  type UserRecord,
} from './storage-contract.js';

interface Reservation {
  scopes: ScopeRef[];
  amountNano: number;
  expiresAt: Date;
  pending: PendingCall | null;
  processId: string | null;
}

/**
 * In-process storage for tests and examples. Every operation runs synchronously inside one
 * microtask, which makes each one atomic in a single Node process. Nothing survives a restart.
 */
export class MemoryStorage implements SpendStorage {
  readonly capabilities = { sharedAcrossProcesses: false, name: 'memory' };
  private readonly teams = new Map<string, TeamRecord>();
  private readonly users = new Map<string, UserRecord>();
  private readonly keys = new Map<string, KeyRecord>();
  private readonly customers = new Map<string, CustomerRecord>();
  private readonly tags = new Map<string, TagRecord>();
  /** Budget tiers (`/budget/new`) by id. */
  private readonly budgetTiers = new Map<string, BudgetTierRecord>();
  /** The current secret of each regenerated key (by key id); absent: the key's own hash. */
  private readonly secrets = new Map<string, string>();
  /** Replaced secrets in their grace period: secret hash -> key id and until when. */
  private readonly graceSecrets = new Map<string, { tokenHash: string; validUntil: Date }>();
  /** Memberships by `memberScopeId`. */
  private readonly members = new Map<string, MemberRecord>();
  private readonly budgets = new Map<string, BudgetState>();
  private readonly reservations = new Map<string, Reservation>();
  /** Each process's last heartbeat (ms). */
  private readonly heartbeats = new Map<string, number>();
  private readonly logs = new Map<string, SpendLogRecord>();
  /** The daily rollups (see `RollupRow`), by their dimensions joined. */
  private readonly daily = new Map<string, RollupRow>();
  private readonly dailyByTag = new Map<string, RollupRow>();
  /** Alert claims and when each may be forgotten (ms; `null`: never). */
  private readonly alertClaims = new Map<string, number | null>();
  private readonly rateLimits = new Map<string, RateLimits>();
  /** Rate windows by `rateBucketKey`. */
  private readonly rateWindows = new Map<string, RateWindow>();
  /** Parallel leases: bucket key -> lease id -> expiry (ms). */
  private readonly rateLeases = new Map<string, Map<string, number>>();
  private readonly dashboardSessions = new Map<string, DashboardSessionRecord>();

  /**
   * Runs one entity write all or nothing, as the SQL backends' transactions do: the maps an entity
   * write may change are copied first (deeply: some records are changed in place) and put back whole
   * if the write throws midway. Only management writes pay for it, never a reservation or settlement.
   */
  private atomically<T>(write: () => T): T {
    const maps = this.entityMaps();
    const saved = maps.map((m) => structuredClone(m));
    try {
      return write();
    } catch (error) {
      maps.forEach((map, i) => {
        map.clear();
        // Map.prototype.set: the state comes back as it was, beneath anything that wraps this map.
        for (const [k, v] of saved[i]!) Map.prototype.set.call(map, k, v);
      });
      throw error;
    }
  }

  private entityMaps(): Array<Map<string, unknown>> {
    return [
      this.teams,
      this.users,
      this.keys,
      this.customers,
      this.tags,
      this.budgetTiers,
      this.secrets,
      this.graceSecrets,
      this.members,
      this.budgets,
      this.rateLimits,
    ];
  }

  async init(): Promise<void> {}
  async close(): Promise<void> {}

  async insert(entities: EntityInsert[]): Promise<void> {
    return this.atomically(() => this.insertNow(entities));
  }

  private insertNow(entities: EntityInsert[]): void {
    const seen = new Set<string>();
    for (const e of entities) {
      const scope = scopeOfInsert(e);
      const taken =
        e.type === 'budget' ? this.budgets.has(scopeKey(scope)) : this.mapFor(e.type).has(scope.id);
      if (seen.has(scopeKey(scope)) || taken) throw new StorageConflictError(e.type, scope.id);
      if (e.type === 'member') {
        const { userId, teamId } = e.record;
        const userInBatch = entities.some((o) => o.type === 'user' && o.record.userId === userId);
        const teamInBatch = entities.some((o) => o.type === 'team' && o.record.teamId === teamId);
        if (!userInBatch && !this.users.has(userId)) throw new Error(`no user '${userId}' to add to a team`);
        if (!teamInBatch && !this.teams.has(teamId))
          throw new Error(`no team '${teamId}' to add a member to`);
      }
      seen.add(scopeKey(scope));
    }
    for (const given of entities) {
      const e = this.withTier(given);
      const scope = scopeOfInsert(e);
      if (e.type !== 'budget') {
        this.mapFor(e.type).set(scope.id, structuredClone(e.record) as never);
        if (e.rateLimits) this.rateLimits.set(scopeKey(scope), structuredClone(e.rateLimits));
      }
      if (e.type === 'member') {
        const user = this.users.get(e.record.userId)!;
        if (!user.teams.includes(e.record.teamId)) user.teams = [...user.teams, e.record.teamId];
      }
      this.budgets.set(scopeKey(scope), {
        scope,
        ...e.budget,
        softBudgetNano: e.budget.softBudgetNano ?? null,
        spendNano: 0,
        reservedNano: 0,
      });
    }
  }

  /** A customer or key insert with its tier's limits in place of its own (a missing tier throws). */
  private withTier(e: EntityInsert): EntityInsert {
    if (e.type !== 'customer' && e.type !== 'key') return e;
    const budgetId = e.record.budgetId ?? null;
    const tier = budgetId === null ? null : this.budgetTiers.get(budgetId);
    if (budgetId !== null && !tier) throw missingBudgetTier(budgetId);
    const linked = tier
      ? { budget: tierBudgetInit(tier, e.record.createdAt), rateLimits: tierRateLimits(tier) }
      : {};
    return e.type === 'key'
      ? { ...e, record: { ...e.record, budgetId }, ...linked }
      : { ...e, record: { ...e.record, budgetId }, ...linked };
  }

  async insertBudgetTier(tier: BudgetTierRecord): Promise<void> {
    if (this.budgetTiers.has(tier.budgetId)) throw new StorageConflictError('budget', tier.budgetId);
    this.budgetTiers.set(tier.budgetId, structuredClone(tier));
  }
  async getBudgetTier(budgetId: string): Promise<BudgetTierRecord | null> {
    return cloneOrNull(this.budgetTiers.get(budgetId));
  }
  async listBudgetTiers(): Promise<BudgetTierRecord[]> {
    return [...this.budgetTiers.values()]
      .sort((a, b) => (a.budgetId < b.budgetId ? -1 : a.budgetId > b.budgetId ? 1 : 0))
      .map((t) => structuredClone(t));
  }
  async updateBudgetTier(
    budgetId: string,
    patch: BudgetTierPatch,
    now: Date,
  ): Promise<BudgetTierRecord | null> {
    return this.atomically(() => {
      const found = this.budgetTiers.get(budgetId);
      if (!found) return null;
      const tier: BudgetTierRecord = { ...found, ...definedOnly(patch), updatedAt: now };
      this.budgetTiers.set(budgetId, tier);
      for (const customer of this.customers.values()) {
        if (customer.budgetId === budgetId)
          this.retier({ kind: 'customer', id: customer.endUserId }, tier, now);
      }
      for (const key of this.keys.values()) {
        if (key.budgetId !== budgetId) continue;
        this.retier({ kind: 'key', id: key.tokenHash }, tier, now);
        this.emitKeyChange(key.tokenHash);
      }
      return structuredClone(tier);
    });
  }
  async deleteBudgetTier(budgetId: string): Promise<BudgetTierDeletion> {
    return this.atomically(() => {
      if (!this.budgetTiers.has(budgetId)) return { found: false, linked: 0 };
      let linked = 0;
      for (const customer of this.customers.values()) if (customer.budgetId === budgetId) linked++;
      for (const key of this.keys.values()) if (key.budgetId === budgetId) linked++;
      if (linked === 0) this.budgetTiers.delete(budgetId);
      return { found: true, linked };
    });
  }

  /** A linked end user's or key's counter and rate limits made the tier's. */
  private retier(scope: ScopeRef, tier: BudgetTierRecord, now: Date): void {
    const state = this.budgets.get(scopeKey(scope));
    if (state) this.budgets.set(scopeKey(scope), retieredState(state, tier, now));
    const limits = tierRateLimits(tier);
    if (limits) this.rateLimits.set(scopeKey(scope), limits);
    else this.rateLimits.delete(scopeKey(scope));
  }

  private mapFor(type: Exclude<EntityInsert['type'], 'budget'>): Map<string, unknown> {
    return {
      team: this.teams,
      user: this.users,
      key: this.keys,
      customer: this.customers,
      tag: this.tags,
      member: this.members,
    }[type];
  }

  async getCustomer(endUserId: string): Promise<CustomerRecord | null> {
    return cloneOrNull(this.customers.get(endUserId));
  }
  async getTag(name: string): Promise<TagRecord | null> {
    return cloneOrNull(this.tags.get(name));
  }
  async listCustomers(): Promise<CustomerRecord[]> {
    return [...this.customers.values()]
      .sort((a, b) => (a.endUserId < b.endUserId ? -1 : a.endUserId > b.endUserId ? 1 : 0))
      .map((c) => structuredClone(c));
  }
  async listTags(): Promise<TagRecord[]> {
    return [...this.tags.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((t) => structuredClone(t));
  }
  async updateCustomer(
    endUserId: string,
    patch: Partial<Pick<CustomerRecord, 'alias' | 'blocked' | 'metadata' | 'budgetId'>>,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<CustomerRecord | null> {
    return this.atomically(() => {
      assertChangeableScopes(also);
      const found = this.customers.get(endUserId);
      if (!found) return null;
      this.applyChanges(also);
      this.patchBudget({ kind: 'customer', id: endUserId }, budget);
      // A linked end user's limits are its tier's, whatever else this update sets.
      const budgetId = patch.budgetId !== undefined ? patch.budgetId : (found.budgetId ?? null);
      if (budgetId !== null) {
        const tier = this.budgetTiers.get(budgetId);
        if (!tier) throw missingBudgetTier(budgetId);
        this.retier({ kind: 'customer', id: endUserId }, tier, also?.now ?? new Date());
      }
      const updated = { ...found, budgetId: found.budgetId ?? null, ...structuredClone(definedOnly(patch)) };
      this.customers.set(endUserId, updated);
      return structuredClone(updated);
    });
  }
  async blockCustomers(
    endUserIds: string[],
    blocked: boolean,
    created: { createdAt: Date; budget: BudgetInit; budgetId?: string | null },
  ): Promise<void> {
    return this.atomically(() => {
      for (const endUserId of endUserIds) {
        const found = this.customers.get(endUserId);
        if (found) this.customers.set(endUserId, { ...found, blocked });
        else if (blocked) {
          const record: CustomerRecord = {
            endUserId,
            alias: null,
            blocked,
            metadata: {},
            createdAt: created.createdAt,
            budgetId: created.budgetId ?? null,
          };
          this.insertNow([{ type: 'customer', record, budget: created.budget }]);
        }
      }
    });
  }
  async updateTag(
    name: string,
    patch: Partial<Pick<TagRecord, 'description' | 'metadata'>>,
    budget?: Partial<BudgetInit>,
  ): Promise<TagRecord | null> {
    return this.atomically(() => {
      const found = this.tags.get(name);
      if (!found) return null;
      this.patchBudget({ kind: 'tag', id: name }, budget);
      const updated = { ...found, ...structuredClone(definedOnly(patch)) };
      this.tags.set(name, updated);
      return structuredClone(updated);
    });
  }
  async deleteScopes(scopes: ScopeRef[]): Promise<number> {
    return this.atomically(() => {
      for (const scope of scopes) {
        if (!isOptionalScope(scope)) throw new Error(`deleteScopes cannot delete a ${scope.kind} scope`);
      }
      let deleted = 0;
      for (const scope of scopes) {
        if (scope.kind === 'customer') this.customers.delete(scope.id);
        if (scope.kind === 'tag') this.tags.delete(scope.id);
        this.rateLimits.delete(scopeKey(scope));
        if (this.budgets.delete(scopeKey(scope))) deleted++;
      }
      return deleted;
    });
  }
  async updateBudget(scope: ScopeRef, budget: Partial<BudgetInit>, now: Date): Promise<BudgetState | null> {
    const state = this.budgets.get(scopeKey(scope));
    if (!state) return null;
    const updated = { ...applyDueReset(state, now), ...definedOnly(budget) };
    this.budgets.set(scopeKey(scope), updated);
    return structuredClone(updated);
  }
  async resetSpend(scope: ScopeRef, toNano: number, now: Date): Promise<BudgetState | null> {
    const state = this.budgets.get(scopeKey(scope));
    if (!state) return null;
    const updated = { ...applyDueReset(state, now), spendNano: toNano };
    this.budgets.set(scopeKey(scope), updated);
    return structuredClone(updated);
  }

  async getTeam(teamId: string): Promise<TeamRecord | null> {
    return cloneOrNull(this.teams.get(teamId));
  }
  async findTeamsByAlias(alias: string): Promise<TeamRecord[]> {
    return [...this.teams.values()].filter((t) => t.teamAlias === alias).map((t) => structuredClone(t));
  }
  async getUser(userId: string): Promise<UserRecord | null> {
    return cloneOrNull(this.users.get(userId));
  }
  async getKey(tokenHash: string): Promise<KeyRecord | null> {
    return cloneOrNull(this.keys.get(tokenHash));
  }
  async listKeys(filter: { userId?: string; teamId?: string }): Promise<KeyRecord[]> {
    return [...this.keys.values()]
      .filter(
        (k) =>
          (filter.userId === undefined || k.userId === filter.userId) &&
          (filter.teamId === undefined || k.teamId === filter.teamId),
      )
      .map((k) => structuredClone(k));
  }
  async listUsers(filter: { teamId?: string }): Promise<UserRecord[]> {
    return [...this.users.values()]
      .filter((u) => filter.teamId === undefined || u.teams.includes(filter.teamId))
      .map((u) => structuredClone(u));
  }

  private readonly keyWatchers = new Set<(tokenHash: string | null) => void>();

  /** An entity update's `ScopeChanges` (checked by `assertChangeableScopes` before anything is written). */
  private applyChanges(also: ScopeChanges | undefined): void {
    if (!also) return;
    if (also.rateLimits) {
      const { scope, limits } = also.rateLimits;
      if (limits) this.rateLimits.set(scopeKey(scope), structuredClone(limits));
      else this.rateLimits.delete(scopeKey(scope));
    }
    for (const scope of also.deleteScopes ?? []) this.budgets.delete(scopeKey(scope));
    for (const { scope, set, insert } of also.upsertBudgets ?? []) {
      const state = this.budgets.get(scopeKey(scope));
      this.budgets.set(
        scopeKey(scope),
        state
          ? { ...applyDueReset(state, also.now), ...definedOnly(set) }
          : {
              scope: { kind: scope.kind, id: scope.id },
              ...insert,
              softBudgetNano: insert.softBudgetNano ?? null,
              spendNano: 0,
              reservedNano: 0,
            },
      );
    }
  }

  async updateKey(
    tokenHash: string,
    patch: KeyPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<KeyRecord | null> {
    return this.atomically(() => {
      assertChangeableScopes(also);
      const key = this.keys.get(tokenHash);
      if (!key) return null;
      this.applyChanges(also);
      const updated = { ...key, budgetId: key.budgetId ?? null, ...structuredClone(definedOnly(patch)) };
      this.keys.set(tokenHash, updated);
      const state = this.budgets.get(`key:${tokenHash}`);
      if (budget && state) {
        const defined = Object.entries(budget).filter(([, v]) => v !== undefined);
        this.budgets.set(`key:${tokenHash}`, { ...state, ...Object.fromEntries(defined) });
      }
      // A linked key's limits are its tier's, whatever else this update sets.
      if (updated.budgetId !== null) {
        const tier = this.budgetTiers.get(updated.budgetId);
        if (!tier) throw missingBudgetTier(updated.budgetId);
        this.retier({ kind: 'key', id: tokenHash }, tier, also?.now ?? new Date());
      }
      this.emitKeyChange(tokenHash);
      return structuredClone(updated);
    });
  }

  async updateKeys(changes: KeyUpdate[]): Promise<KeyRecord[] | null> {
    return this.atomically(() => {
      if (changes.some((c) => !this.keys.has(c.tokenHash))) return null;
      const now = new Date();
      // A missing tier throws: `atomically` puts back the keys changed before it.
      return changes.map(({ tokenHash, patch, budget }) => {
        const key = this.keys.get(tokenHash)!;
        const updated = { ...key, budgetId: key.budgetId ?? null, ...structuredClone(definedOnly(patch)) };
        this.keys.set(tokenHash, updated);
        const state = this.budgets.get(`key:${tokenHash}`);
        if (budget && state) {
          const defined = Object.entries(budget).filter(([, v]) => v !== undefined);
          this.budgets.set(`key:${tokenHash}`, { ...state, ...Object.fromEntries(defined) });
        }
        if (updated.budgetId !== null) {
          const tier = this.budgetTiers.get(updated.budgetId);
          if (!tier) throw missingBudgetTier(updated.budgetId);
          this.retier({ kind: 'key', id: tokenHash }, tier, now);
        }
        this.emitKeyChange(tokenHash);
        return structuredClone(updated);
      });
    });
  }

  async deleteKeys(tokenHashes: string[]): Promise<number> {
    return this.atomically(() => this.deleteKeysNow(tokenHashes));
  }

  private deleteKeysNow(tokenHashes: string[]): number {
    let deleted = 0;
    for (const hash of tokenHashes) {
      if (!this.keys.delete(hash)) continue;
      this.budgets.delete(`key:${hash}`);
      this.rateLimits.delete(`key:${hash}`);
      this.secrets.delete(hash);
      for (const [secret, g] of this.graceSecrets) if (g.tokenHash === hash) this.graceSecrets.delete(secret);
      deleted++;
      this.emitKeyChange(hash);
    }
    return deleted;
  }

  async findKeyBySecret(secretHash: string, now: Date): Promise<KeyBySecret | null> {
    const own = this.keys.get(secretHash);
    if (own && (this.secrets.get(secretHash) ?? secretHash) === secretHash) {
      return { key: structuredClone(own), secretValidUntil: null };
    }
    for (const [id, secret] of this.secrets) {
      if (secret === secretHash) return { key: structuredClone(this.keys.get(id)!), secretValidUntil: null };
    }
    const grace = this.graceSecrets.get(secretHash);
    const key =
      grace && grace.validUntil.getTime() > now.getTime() ? this.keys.get(grace.tokenHash) : undefined;
    return key ? { key: structuredClone(key), secretValidUntil: new Date(grace!.validUntil) } : null;
  }

  async regenerateKey(input: RegenerateKeyInput): Promise<KeyRecord | null> {
    return this.atomically(() => {
      const key = this.keys.get(input.tokenHash);
      if (!key) return null;
      const previous = this.secrets.get(input.tokenHash) ?? input.tokenHash;
      if (input.previousValidUntil && input.previousValidUntil.getTime() > input.now.getTime()) {
        this.graceSecrets.set(previous, {
          tokenHash: input.tokenHash,
          validUntil: new Date(input.previousValidUntil),
        });
      }
      this.secrets.set(input.tokenHash, input.newSecretHash);
      key.keyName = input.newKeyName;
      this.emitKeyChange(input.tokenHash);
      if (previous !== input.tokenHash) this.emitKeyChange(previous);
      return structuredClone(key);
    });
  }

  async updateTeam(
    teamId: string,
    patch: TeamPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<TeamRecord | null> {
    return this.atomically(() => {
      assertChangeableScopes(also);
      const team = this.teams.get(teamId);
      if (!team) return null;
      this.applyChanges(also);
      Object.assign(team, structuredClone(definedOnly(patch)));
      this.patchBudget({ kind: 'team', id: teamId }, budget);
      this.emitAnyKeyChange();
      return structuredClone(team);
    });
  }

  async deleteTeams(teamIds: string[]): Promise<DeletedEntity | null> {
    return this.atomically(() => {
      if (!teamIds.every((id) => this.teams.has(id))) return null;
      const deletedKeys: string[] = [];
      for (const teamId of new Set(teamIds)) {
        this.teams.delete(teamId);
        this.budgets.delete(`team:${teamId}`);
        for (const m of [...this.members.values()]) if (m.teamId === teamId) this.dropMember(m);
        const keys = [...this.keys.values()].filter((k) => k.teamId === teamId).map((k) => k.tokenHash);
        this.deleteKeysNow(keys);
        deletedKeys.push(...keys);
      }
      this.emitAnyKeyChange();
      return { deletedKeys };
    });
  }

  async listTeams(filter: { userId?: string }): Promise<TeamRecord[]> {
    return [...this.teams.values()]
      .filter((t) => filter.userId === undefined || this.members.has(memberScopeId(t.teamId, filter.userId)))
      .sort(byCreated((t) => t.teamId))
      .map((t) => structuredClone(t));
  }

  async updateUser(
    userId: string,
    patch: UserPatch,
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<UserRecord | null> {
    return this.atomically(() => {
      assertChangeableScopes(also);
      const user = this.users.get(userId);
      if (!user) return null;
      this.applyChanges(also);
      Object.assign(user, structuredClone(definedOnly(patch)));
      this.patchBudget({ kind: 'user', id: userId }, budget);
      this.emitAnyKeyChange();
      return structuredClone(user);
    });
  }

  async deleteUsers(userIds: string[]): Promise<DeletedEntity | null> {
    return this.atomically(() => {
      if (!userIds.every((id) => this.users.has(id))) return null;
      const deletedKeys: string[] = [];
      for (const userId of new Set(userIds)) {
        this.users.delete(userId);
        this.budgets.delete(`user:${userId}`);
        for (const m of [...this.members.values()]) if (m.userId === userId) this.dropMember(m);
        const keys = [...this.keys.values()].filter((k) => k.userId === userId).map((k) => k.tokenHash);
        this.deleteKeysNow(keys);
        deletedKeys.push(...keys);
      }
      this.emitAnyKeyChange();
      return { deletedKeys };
    });
  }

  async listMembers(filter: { teamId?: string; userId?: string }): Promise<MemberRecord[]> {
    return [...this.members.values()]
      .filter(
        (m) =>
          (filter.teamId === undefined || m.teamId === filter.teamId) &&
          (filter.userId === undefined || m.userId === filter.userId),
      )
      .sort(byCreated((m) => memberScopeId(m.teamId, m.userId)))
      .map((m) => structuredClone(m));
  }

  async updateMember(
    teamId: string,
    userId: string,
    patch: { role?: MemberRole },
    budget?: Partial<BudgetInit>,
    also?: ScopeChanges,
  ): Promise<MemberRecord | null> {
    return this.atomically(() => {
      assertChangeableScopes(also);
      const member = this.members.get(memberScopeId(teamId, userId));
      if (!member) return null;
      this.applyChanges(also);
      if (patch.role !== undefined) member.role = patch.role;
      this.patchBudget({ kind: 'member', id: memberScopeId(teamId, userId) }, budget);
      return structuredClone(member);
    });
  }

  async deleteMember(teamId: string, userId: string): Promise<DeletedEntity | null> {
    return this.atomically(() => {
      const member = this.members.get(memberScopeId(teamId, userId));
      if (!member) return null;
      this.dropMember(member);
      const deletedKeys = [...this.keys.values()]
        .filter((k) => k.teamId === teamId && k.userId === userId)
        .map((k) => k.tokenHash);
      this.deleteKeysNow(deletedKeys);
      this.emitAnyKeyChange();
      return { deletedKeys };
    });
  }

  /** Removes a membership, its counter, and the team from the user's `teams`. */
  private dropMember(m: MemberRecord): void {
    const id = memberScopeId(m.teamId, m.userId);
    this.members.delete(id);
    this.budgets.delete(`member:${id}`);
    const user = this.users.get(m.userId);
    if (user) user.teams = user.teams.filter((t) => t !== m.teamId);
  }

  private patchBudget(scope: ScopeRef, budget: Partial<BudgetInit> | undefined): void {
    const state = this.budgets.get(scopeKey(scope));
    if (budget && state) this.budgets.set(scopeKey(scope), { ...state, ...definedOnly(budget) });
  }

  watchKeyChanges(listener: (tokenHash: string | null) => void): () => void {
    this.keyWatchers.add(listener);
    return () => this.keyWatchers.delete(listener);
  }

  private emitKeyChange(tokenHash: string): void {
    for (const listener of this.keyWatchers) queueMicrotask(() => listener(tokenHash));
  }

  async listWindows(owners: ScopeRef[], now: Date): Promise<BudgetState[]> {
    const ids = [...this.budgets.values()]
      .filter((b) => b.scope.kind === 'window' && owners.some((o) => isWindowOf(b.scope.id, o)))
      .map((b) => b.scope)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return this.getBudgets(ids, now);
  }

  /** A team or user changed: any cached key may now resolve differently. */
  private emitAnyKeyChange(): void {
    for (const listener of this.keyWatchers) queueMicrotask(() => listener(null));
  }

  async getBudgets(scopes: ScopeRef[], now: Date): Promise<BudgetState[]> {
    const out: BudgetState[] = [];
    for (const scope of scopes) {
      const state = this.budgets.get(scopeKey(scope));
      if (!state) continue;
      const current = applyDueReset(state, now);
      this.budgets.set(scopeKey(scope), current);
      out.push(structuredClone(current));
    }
    return out;
  }

  async listBudgets(query: BudgetListQuery, now: Date): Promise<BudgetState[]> {
    const min = query.minUsedFraction ?? 0;
    const limit = Math.max(0, Math.floor(Math.min(query.limit ?? 100, 1000)));
    return [...this.budgets.values()]
      .filter((s) => s.maxBudgetNano !== null && (!query.kinds || query.kinds.includes(s.scope.kind)))
      .map((s) => applyDueReset(s, now))
      .filter((s) => budgetUsedFraction(s) >= min)
      .sort(compareBudgetUse)
      .slice(0, limit)
      .map((s) => structuredClone(s));
  }

  async reserve(input: ReserveInput): Promise<ReserveResult> {
    if (this.reservations.has(input.reservationId))
      throw new StorageConflictError('reservation', input.reservationId);
    const next: BudgetState[] = [];
    for (const scope of input.scopes) {
      const state = this.budgets.get(scopeKey(scope));
      if (!state) {
        if (isOptionalScope(scope)) continue;
        throw new Error(`no budget counter for ${scopeKey(scope)}`);
      }
      const current = applyDueReset(state, input.now);
      if (!fitsBudget(current, input.amountNano, input.mode))
        return { ok: false, refused: structuredClone(current) };
      next.push({ ...current, reservedNano: current.reservedNano + input.amountNano });
    }
    for (const state of next) this.budgets.set(scopeKey(state.scope), state);
    this.reservations.set(input.reservationId, {
      scopes: next.map((state) => state.scope),
      amountNano: input.amountNano,
      expiresAt: input.expiresAt,
      pending: input.pending ? structuredClone(input.pending) : null,
      processId: input.processId ?? null,
    });
    return { ok: true, states: structuredClone(next) };
  }

  async setLease(input: LeaseInput): Promise<LeaseResult> {
    const open = this.reservations.get(input.leaseId);
    if (!open) {
      if (input.amountNano === 0) {
        return { ok: true, states: await this.getBudgets(input.scopes, input.now), previousNano: 0 };
      }
      const { leaseId: reservationId, ...rest } = input;
      const opened = await this.reserve({ reservationId, ...rest });
      return opened.ok
        ? { ok: true, states: opened.states, previousNano: 0 }
        : { ok: false, refused: opened.refused, heldNano: 0 };
    }
    const delta = input.amountNano - open.amountNano;
    const next: BudgetState[] = [];
    for (const scope of open.scopes) {
      const state = this.budgets.get(scopeKey(scope));
      if (!state) continue; // deleted since: nothing left to hold there
      const current = applyDueReset(state, input.now);
      if (delta > 0 && !fitsBudget(current, delta, input.mode)) {
        return { ok: false, refused: structuredClone(current), heldNano: open.amountNano };
      }
      next.push({ ...current, reservedNano: current.reservedNano + delta });
    }
    for (const state of next) this.budgets.set(scopeKey(state.scope), state);
    if (input.amountNano === 0) this.reservations.delete(input.leaseId);
    else
      this.reservations.set(input.leaseId, {
        ...open,
        amountNano: input.amountNano,
        expiresAt: input.expiresAt,
      });
    return { ok: true, states: structuredClone(next), previousNano: open.amountNano };
  }

  async release(reservationId: string): Promise<boolean> {
    const reservation = this.reservations.get(reservationId);
    if (!reservation) return false;
    this.reservations.delete(reservationId);
    for (const scope of reservation.scopes) {
      const state = this.budgets.get(scopeKey(scope));
      if (state) state.reservedNano -= reservation.amountNano;
    }
    return true;
  }

  async expireReservations(now: Date, limit = 1000): Promise<number> {
    let expired = 0;
    for (const [id, r] of [...this.reservations]) {
      if (expired >= limit) break;
      if (r.expiresAt.getTime() > now.getTime()) continue;
      const log = expiredReservationLog(id, r.amountNano, r.pending, now);
      // settle() releases the reservation and charges its amount, exactly as the contract says.
      await this.settle({
        reservationId: id,
        scopes: abandonedChargeScopes(r.scopes, r.pending),
        costNano: r.amountNano,
        now,
        log,
      });
      await this.release(id); // only left if that request id was already logged
      expired++;
    }
    return expired;
  }

  async heartbeat(processId: string, at: Date): Promise<void> {
    this.heartbeats.set(processId, at.getTime());
  }

  async settleDeadProcesses(staleBefore: Date, now: Date, limit = 1000): Promise<number> {
    const dead = (id: string | null) => {
      const beat = id === null ? undefined : this.heartbeats.get(id);
      return beat !== undefined && beat <= staleBefore.getTime();
    };
    let charged = 0;
    for (const [id, r] of [...this.reservations]) {
      if (charged >= limit) break;
      // Another sweep (or the call's own settle) may have taken it since the loop began.
      if (!dead(r.processId) || !this.reservations.has(id)) continue;
      const log = expiredReservationLog(id, r.amountNano, r.pending, now, r.processId!);
      await this.settle({
        reservationId: id,
        scopes: abandonedChargeScopes(r.scopes, r.pending),
        costNano: r.amountNano,
        now,
        log,
      });
      await this.release(id); // only left if that request id was already logged
      charged++;
    }
    const deadPrefixes = [...this.heartbeats.keys()].filter(dead).map((id) => `${id}:`);
    for (const leases of this.rateLeases.values()) {
      for (const lease of [...leases.keys()]) {
        if (deadPrefixes.some((prefix) => lease.startsWith(prefix))) leases.delete(lease);
      }
    }
    const holding = new Set([...this.reservations.values()].map((r) => r.processId));
    for (const id of [...this.heartbeats.keys()])
      if (dead(id) && !holding.has(id)) this.heartbeats.delete(id);
    return charged;
  }

  async settle(input: SettleInput): Promise<SettleResult> {
    if (this.logs.has(input.log.requestId)) {
      return { applied: false, states: await this.getBudgets(input.scopes, input.now) };
    }
    const reservation = this.reservations.get(input.reservationId);
    if (reservation) {
      this.reservations.delete(input.reservationId);
      for (const scope of reservation.scopes) {
        const state = this.budgets.get(scopeKey(scope));
        if (state) state.reservedNano -= reservation.amountNano;
      }
    }
    const states: BudgetState[] = [];
    for (const scope of input.scopes) {
      const state = this.budgets.get(scopeKey(scope));
      if (!state) continue;
      const current = applyDueReset(state, input.now);
      const updated = { ...current, spendNano: current.spendNano + input.costNano };
      this.budgets.set(scopeKey(scope), updated);
      states.push(structuredClone(updated));
    }
    this.logs.set(input.log.requestId, {
      ...structuredClone(input.log),
      responseId: input.log.responseId ?? null,
    });
    const row = rollupRowOf(input.log, input.costNano);
    addTo(this.daily, row);
    for (const tag of input.log.tags) addTo(this.dailyByTag, { ...row, tag });
    return { applied: true, states };
  }

  async pruneSpendLogs(before: Date, limit = 10_000): Promise<number> {
    const old = [...this.logs.values()]
      .filter((l) => l.startTime < before)
      .sort((a, b) => a.startTime.getTime() - b.startTime.getTime())
      .slice(0, limit);
    for (const l of old) this.logs.delete(l.requestId);
    return old.length;
  }

  async querySpendLogs(query: SpendLogQuery): Promise<SpendLogRecord[]> {
    const limit = Math.min(query.limit ?? 100, 1000);
    return [...this.logs.values()]
      .filter(
        (l) =>
          (query.apiKeyHash === undefined || l.apiKeyHash === query.apiKeyHash) &&
          (query.userId === undefined || l.userId === query.userId) &&
          (query.teamId === undefined || l.teamId === query.teamId) &&
          (query.requestId === undefined ||
            l.requestId === query.requestId ||
            l.responseId === query.requestId) &&
          (query.startTime === undefined || l.startTime >= query.startTime) &&
          (query.endTime === undefined || l.startTime < query.endTime) &&
          (query.model === undefined || l.model === query.model) &&
          (query.status === undefined || l.status === query.status) &&
          (query.tags === undefined || query.tags.every((t) => l.tags.includes(t))) &&
          (query.before === undefined ||
            l.startTime.getTime() < query.before.startTime.getTime() ||
            (l.startTime.getTime() === query.before.startTime.getTime() &&
              l.requestId < query.before.requestId)),
      )
      .sort((a, b) => b.startTime.getTime() - a.startTime.getTime() || (a.requestId < b.requestId ? 1 : -1))
      .slice(0, limit)
      .map((l) => structuredClone(l));
  }

  async spendByTag(query: { fromDay?: string; toDay?: string }): Promise<TagSpend[]> {
    const totals = new Map<string, TagSpend>();
    for (const row of this.dailyByTag.values()) {
      if ((query.fromDay && row.day < query.fromDay) || (query.toDay && row.day > query.toDay)) continue;
      const tag = row.tag ?? '';
      const t = totals.get(tag) ?? { tag, requests: 0, spendNano: 0 };
      t.requests += row.requests;
      t.spendNano += row.spendNano;
      totals.set(tag, t);
    }
    return [...totals.values()].sort(compareTagSpend);
  }

  async spendReport(query: SpendReportQuery): Promise<SpendReportRow[]> {
    const rows = readsTagRollup(query) ? this.dailyByTag : this.daily;
    return aggregateRollup(rows.values(), query);
  }

  async claimAlert(claim: AlertClaim): Promise<boolean> {
    const now = claim.now.getTime();
    for (const [k, expiresAt] of this.alertClaims) {
      if (expiresAt !== null && expiresAt <= now) this.alertClaims.delete(k);
    }
    const k = [scopeKey(claim.scope), claim.period, claim.threshold].join('\u0000');
    if (this.alertClaims.has(k)) return false;
    this.alertClaims.set(k, claim.expiresAt?.getTime() ?? null);
    return true;
  }

  async createDashboardSession(session: DashboardSessionRecord, now: Date): Promise<void> {
    for (const [id, s] of this.dashboardSessions) {
      if (s.expiresAt.getTime() <= now.getTime()) this.dashboardSessions.delete(id);
    }
    if (this.dashboardSessions.has(session.idHash))
      throw new StorageConflictError('dashboard session', session.idHash);
    this.dashboardSessions.set(session.idHash, structuredClone(session));
  }

  async getDashboardSession(idHash: string, now: Date): Promise<DashboardSessionRecord | null> {
    const s = this.dashboardSessions.get(idHash);
    return s && s.expiresAt.getTime() > now.getTime() ? structuredClone(s) : null;
  }

  async deleteDashboardSession(idHash: string): Promise<boolean> {
    return this.dashboardSessions.delete(idHash);
  }

  async setRateLimits(scope: ScopeRef, limits: RateLimits | null): Promise<void> {
    if (limits) this.rateLimits.set(scopeKey(scope), structuredClone(limits));
    else this.rateLimits.delete(scopeKey(scope));
  }

  async getRateLimits(scopes: ScopeRef[]): Promise<Array<{ scope: ScopeRef; limits: RateLimits }>> {
    const out: Array<{ scope: ScopeRef; limits: RateLimits }> = [];
    for (const scope of scopes) {
      const limits = this.rateLimits.get(scopeKey(scope));
      if (limits) out.push({ scope: { ...scope }, limits: structuredClone(limits) });
    }
    return out;
  }

  async acquireRate(input: RateAcquireInput): Promise<RateAcquireResult> {
    const nowMs = input.now.getTime();
    const decided = input.buckets.map((bucket) => {
      const k = rateBucketKey(bucket);
      let current = this.rateWindows.get(k) ?? null;
      if (bucket.metric === 'parallel') {
        const leases = this.rateLeases.get(k);
        for (const [id, expires] of leases ?? []) if (expires <= nowMs) leases!.delete(id);
        current = { windowStartMs: nowMs, used: leases?.size ?? 0 };
      }
      return { k, bucket, ...decideRateBucket(bucket, current, nowMs, input.windowMs) };
    });
    const refused = decided.find((d) => !d.ok);
    if (refused) return { ok: false, refused: structuredClone(refused.state) };
    for (const d of decided) {
      if (d.bucket.metric === 'parallel') {
        const leases = this.rateLeases.get(d.k) ?? new Map<string, number>();
        leases.set(input.leaseId, input.leaseExpiresAt.getTime());
        this.rateLeases.set(d.k, leases);
      } else this.rateWindows.set(d.k, d.next);
    }
    return { ok: true, states: decided.map((d): RateBucketState => structuredClone(d.state)) };
  }

  async settleRate(input: RateSettleInput): Promise<void> {
    const nowMs = input.now.getTime();
    for (const bucket of input.buckets) {
      if (bucket.metric !== 'tpm') continue;
      const k = rateBucketKey(bucket);
      this.rateWindows.set(
        k,
        addRateTokens(this.rateWindows.get(k) ?? null, input.tokens, nowMs, input.windowMs),
      );
    }
    for (const leases of this.rateLeases.values()) leases.delete(input.leaseId);
  }
}

/** Adds a request's rollup row to the row with the same dimensions. */
function addTo(rollup: Map<string, RollupRow>, row: RollupRow): void {
  const k = [
    row.day,
    row.tag ?? '',
    row.teamId,
    row.userId,
    row.apiKeyHash,
    row.model,
    row.provider,
    row.endUser,
  ].join('\u0000');
  const sum = rollup.get(k);
  if (!sum) {
    rollup.set(k, row);
    return;
  }
  sum.requests += row.requests;
  sum.failedRequests += row.failedRequests;
  sum.spendNano += row.spendNano;
  sum.promptTokens += row.promptTokens;
  sum.completionTokens += row.completionTokens;
}

/** The entries whose value is not `undefined` (a patch's fields to change). */
function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Oldest first, ties by id: the order every backend lists teams and members in. */
function byCreated<T extends { createdAt: Date }>(id: (x: T) => string): (a: T, b: T) => number {
  return (a, b) =>
    a.createdAt.getTime() - b.createdAt.getTime() || (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0);
}

function cloneOrNull<T>(value: T | undefined): T | null {
  return value === undefined ? null : structuredClone(value);
}
