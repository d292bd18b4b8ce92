// Stage 1's cache: virtual keys by the hash of a presented secret, each resolved with the scope
// chain it spends against (user, team, membership, budget windows) and those scopes' rate limits.
import { LRUCache } from 'lru-cache';
import { hasRateLimits } from '../storage/rate-limit-rules.js';
import type { ScopeRef } from '../storage/storage-contract.js';
import { isWindowOf, memberScopeId, scopeKey } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';
import type { KeyContext } from './call-types.js';

export interface KeyCacheOptions {
  /** `keyCacheSize`. */
  max: number;
  /** `keyCacheTtlMs` (0: entries are stale at once, but kept for `onStorageError: 'allow'`). */
  ttlMs: number;
  /** The guard's clock: entries age on it, so that `keyCacheTtlMs` follows an injected one too. */
  now: () => Date;
  /** The same clock in ms, read at every cache check: `Date.now` itself when the clock is the system's. */
  nowMs: () => number;
  /** Storage calls go through the guard's gate (timeouts, failure policy). */
  gate: Pick<StorageGate, 'call'>;
}

/** The in-process key cache, with loads shared by concurrent misses and invalidation by generation. */
export class KeyCache {
  private readonly cache: LRUCache<string, KeyContext>;
  /** Key loads in flight, by secret hash; `generation` counts invalidations. */
  private readonly loads = new Map<string, Promise<KeyContext | null>>();
  private generation = 0;
  private readonly now: () => Date;
  private readonly gate: Pick<StorageGate, 'call'>;

  constructor(options: KeyCacheOptions) {
    this.now = options.now;
    this.gate = options.gate;
    // Stale entries stay (not served) so that `onStorageError: 'allow'` can still recognise a key.
    // The cache ages on the guard's clock, read at every check (ttlResolution 0), as a clock a test
    // moves must not be seen a millisecond late.
    this.cache = new LRUCache({
      max: options.max,
      ttl: options.ttlMs || 1,
      ttlResolution: 0,
      noDeleteOnStaleGet: true,
      perf: { now: options.nowMs },
    });
  }

  /** The key a secret (by its hash) opens when the cache holds it within its TTL, else `undefined`. */
  cached(secretHash: string): KeyContext | undefined {
    return this.cache.get(secretHash);
  }

  /** A key this process resolved before, even past its TTL (for serving while storage is down). */
  seen(secretHash: string): KeyContext | null {
    return this.cache.get(secretHash, { allowStale: true }) ?? null;
  }

  /**
   * Drops a key from the in-process cache (after it was changed): the entry for that hash and every
   * entry cached under another secret of the same key (a regenerated key's current or grace secret).
   */
  invalidate(tokenHash: string): void {
    this.generation += 1; // a load already in flight may have read the old key: it is not cached
    this.loads.clear();
    this.cache.delete(tokenHash);
    for (const secret of [...this.cache.keys()]) {
      if (this.cache.peek(secret, { allowStale: true })?.key.tokenHash === tokenHash) {
        this.cache.delete(secret);
      }
    }
  }

  /** Drops every cached key (after a team or user change). */
  invalidateAll(): void {
    this.generation += 1;
    this.loads.clear();
    this.cache.clear();
  }

  /**
   * Resolves the key a presented secret (by its hash) opens, and the scopes it spends against. `null`
   * when no key opens with it (a regenerated key's old secret after its grace period included).
   */
  resolve(secretHash: string): Promise<KeyContext | null> {
    const cached = this.cached(secretHash);
    if (cached) return Promise.resolve(cached);
    // Concurrent misses on one key (its cache entry just expired, under load) share one load.
    let load = this.loads.get(secretHash);
    if (!load) {
      const generation = this.generation;
      load = this.load(secretHash, generation).finally(() => {
        if (this.loads.get(secretHash) === load) this.loads.delete(secretHash);
      });
      this.loads.set(secretHash, load);
    }
    return load;
  }

  private async load(secretHash: string, generation: number): Promise<KeyContext | null> {
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
    const countedOnly: ScopeRef[] = [];
    const labels = new Map<string, string>([[`key:${key.tokenHash}`, `Key=${key.keyAlias ?? key.keyName}`]]);
    if (user) {
      // A team key spends under the team's budgets only (LiteLLM); the user's counter still counts it.
      (key.teamId ? countedOnly : scopes).push({ kind: 'user', id: user.userId });
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
      const owner = [...scopes, ...countedOnly].find((o) => isWindowOf(w.scope.id, o));
      if (!owner) continue;
      (countedOnly.includes(owner) ? countedOnly : scopes).push(w.scope);
      const ownerLabel = labels.get(scopeKey(owner)) ?? `${owner.kind}=${owner.id}`;
      labels.set(scopeKey(w.scope), `${ownerLabel} (${w.budgetDuration} window)`);
    }
    const rateLimits = limits.filter(
      // Rate limits apply on every owner, the user of a team key included (LiteLLM's user_rpm_limit).
      (r) =>
        hasRateLimits(r.limits) &&
        [...scopes, ...countedOnly].some((s) => s.kind === r.scope.kind && s.id === r.scope.id),
    );
    const ctx: KeyContext = { key, user, team, scopes, countedOnly, labels, rateLimits, secretValidUntil };
    if (generation === this.generation) this.cache.set(secretHash, ctx);
    return ctx;
  }

  /**
   * A key and its user and team by the key's id (the `apiKeyHash` of its spend logs), for
   * attribution only: also a regenerated key, whose id no longer opens it. `null` when deleted.
   */
  async describe(tokenHash: string): Promise<Pick<KeyContext, 'key' | 'user' | 'team'> | null> {
    const cached = await this.resolve(tokenHash);
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
}
