// Stage 2's view of end users: `/customer/block`'s flag and the end user's rate limits, cached like
// keys, and the upsert of an end user seen for the first time (as LiteLLM does).
import { LRUCache } from 'lru-cache';
import { nextBudgetResetAt } from '../budget-period.js';
import type { ResolvedOptions } from '../config.js';
import { SpendGuardError, StorageConflictError } from '../errors.js';
import { usdToNano } from '../money.js';
import { hasRateLimits } from '../storage/rate-limit-rules.js';
import type { BudgetInit, RateLimits, SpendStorage } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';

/** What admission needs of an end user: `/customer/block`'s flag and the end user's rate limits. */
export interface EndUserGate {
  blocked: boolean;
  limits: RateLimits | null;
}

export interface EndUserGatesOptions {
  /** `keyCacheSize`. */
  max: number;
  /** `keyCacheTtlMs`. */
  ttlMs: number;
  now: () => Date;
  /** The same clock in ms (the cache's age): `Date.now` itself when the clock is the system's. */
  nowMs: () => number;
  gate: Pick<StorageGate, 'call'>;
  /** `defaultEndUserBudget` (a first call's budget) and `defaultEndUserBudgetId` (its tier). */
  options: Pick<ResolvedOptions, 'defaultEndUserBudget' | 'defaultEndUserBudgetId'>;
}

/**
 * End users' blocked flag and rate limits, cached like keys: a call with an end user reads them once
 * per `keyCacheTtlMs`, and `/customer/update` on this instance drops the entry at once.
 */
export class EndUserGates {
  private readonly cache: LRUCache<string, EndUserGate>;

  constructor(private readonly o: EndUserGatesOptions) {
    this.cache = new LRUCache({
      max: o.max,
      ttl: o.ttlMs || 1,
      ttlResolution: 0,
      perf: { now: o.nowMs },
    });
  }

  /** Drops an end user's cached blocked flag and rate limits (after `/customer/update`, `/customer/block`). */
  invalidate(endUserId: string): void {
    this.cache.delete(endUserId);
  }

  /** Drops every end user's cached gate (after a budget tier's limits changed). */
  invalidateAll(): void {
    this.cache.clear();
  }

  /** An end user's blocked flag and rate limits (cached for `keyCacheTtlMs`). */
  async get(endUser: string): Promise<EndUserGate> {
    const cached = this.cache.get(endUser);
    if (cached) return cached;
    const [[found], record] = await this.o.gate.call('end-user lookup', (s) =>
      Promise.all([s.getRateLimits([{ kind: 'customer', id: endUser }]), s.getCustomer(endUser)]),
    );
    // LiteLLM upserts an end user on its first call, so /customer/info and /customer/list find it; its
    // counter then tracks its spend from that first call on (no cap until one is set).
    if (!record) {
      const now = this.o.now();
      const first = this.o.options.defaultEndUserBudget;
      const budget: BudgetInit = {
        maxBudgetNano: first ? usdToNano(first.maxBudget) : null,
        budgetDuration: first?.budgetDuration ?? null,
        budgetResetAt: first?.budgetDuration ? nextBudgetResetAt(first.budgetDuration, now) : null,
        softBudgetNano: null,
      };
      const tier = this.o.options.defaultEndUserBudgetId ?? null;
      await this.o.gate.call('end-user upsert', (s) => upsertCustomer(s, endUser, now, budget, tier));
      // Linked to the default tier: its rate limits are the end user's from this first call on.
      if (tier) return this.get(endUser);
    }
    const gate: EndUserGate = {
      blocked: record?.blocked === true,
      limits: found && hasRateLimits(found.limits) ? found.limits : null,
    };
    this.cache.set(endUser, gate);
    return gate;
  }
}

/** Creates an end user seen for the first time; another instance creating it first is no error. */
async function upsertCustomer(
  storage: SpendStorage,
  endUserId: string,
  now: Date,
  budget: BudgetInit,
  budgetId: string | null,
): Promise<void> {
  try {
    await storage.insert([
      {
        type: 'customer',
        record: { endUserId, alias: null, blocked: false, metadata: {}, createdAt: now, budgetId },
        budget,
      },
    ]);
  } catch (error) {
    if (error instanceof SpendGuardError && error.param === 'budget_id') {
      // Served with no budget would be the one thing a budget must never do.
      throw new SpendGuardError(
        'INTERNAL',
        `defaultEndUserBudgetId '${budgetId}' names no budget, so end user '${endUserId}' cannot be given one; create it with /budget/new`,
      );
    }
    if (!(error instanceof StorageConflictError)) throw error;
  }
}
