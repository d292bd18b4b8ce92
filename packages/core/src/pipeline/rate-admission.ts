// Stage 2's rate limits: a call counted on the rpm/tpm/parallel buckets of every scope that has any,
// in one guarded write, and its tokens and parallel slots settled after it (or given back on refusal).
import { randomUUID } from 'node:crypto';
import type { GuardLogger } from '../config.js';
import { type RateAdmission, rateLimitedError } from '../rate-limits.js';
import { rateBucketsFor } from '../storage/rate-limit-rules.js';
import type { RateLimits, SpendStorage } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';
import type { KeyContext } from './call-types.js';

/** LiteLLM's rate-limit window: rpm and tpm count per minute. */
const RATE_WINDOW_MS = 60_000;

export interface RateLimiterDeps {
  gate: Pick<StorageGate, 'call'>;
  logger: GuardLogger;
  now(): Date;
  /** Leases are named after this process, so that they are freed within seconds should it die. */
  processId: string;
  options: { reservationTtlMs: number };
  /** Keeps a background write alive until `close()`. */
  track<T>(p: Promise<T>): Promise<T>;
  /** True when the failure is storage's and the policy says to serve anyway. */
  servesThrough(error: unknown): boolean;
}

export class RateLimiter {
  constructor(private readonly deps: RateLimiterDeps) {}

  /**
   * Checks and counts the call on the rate limits of every scope that has any (one guarded write,
   * none when no scope has limits). `null`: nothing to count (or storage is down under 'allow').
   */
  async acquire(
    ctx: KeyContext,
    model: string,
    now: Date,
    endUser: string | null,
    endUserLimits: RateLimits | null,
  ): Promise<RateAdmission | null> {
    let scoped = ctx.rateLimits;
    let labels = ctx.labels;
    if (endUser && endUserLimits) {
      scoped = [...scoped, { scope: { kind: 'customer', id: endUser }, limits: endUserLimits }];
      labels = new Map(labels).set(`customer:${endUser}`, `EndUser=${endUser}`);
    }
    if (scoped.length === 0) return null;
    const buckets = rateBucketsFor(scoped, model);
    if (buckets.length === 0) return null;
    // Named after this process, so that its leases are freed within seconds should it die.
    const leaseId = `${this.deps.processId}:${randomUUID()}`;
    let result: Awaited<ReturnType<SpendStorage['acquireRate']>>;
    try {
      result = await this.deps.gate.call('rate limit', (s) =>
        s.acquireRate({
          leaseId,
          buckets,
          now,
          windowMs: RATE_WINDOW_MS,
          leaseExpiresAt: new Date(now.getTime() + this.deps.options.reservationTtlMs),
        }),
      );
    } catch (error) {
      if (!this.deps.servesThrough(error)) throw error;
      return null;
    }
    if (!result.ok) throw rateLimitedError(labels, result.refused, now);
    return { leaseId, buckets, states: result.states };
  }

  /** Gives back the call's parallel slots (its admission failed after the rate limits let it in). */
  release(rate: RateAdmission): void {
    if (!rate.buckets.some((b) => b.metric === 'parallel')) return;
    void this.deps.track(
      this.deps.gate
        .call('rate release', (s) =>
          s.settleRate({
            leaseId: rate.leaseId,
            buckets: [],
            tokens: 0,
            now: this.deps.now(),
            windowMs: RATE_WINDOW_MS,
          }),
        )
        // Never silent; the leases come back after the TTL anyway.
        .catch((error: unknown) =>
          this.deps.logger.error("could not release a refused call's parallel slots", error),
        ),
    );
  }

  /** Adds a settled call's tokens to its tpm buckets and releases its parallel slots. */
  async settle(rate: RateAdmission, tokens: number): Promise<void> {
    const tpm = rate.buckets.filter((b) => b.metric === 'tpm');
    if (tpm.length === 0 && !rate.buckets.some((b) => b.metric === 'parallel')) return;
    try {
      await this.deps.gate.call('rate settle', (s) =>
        s.settleRate({
          leaseId: rate.leaseId,
          buckets: tpm,
          tokens,
          now: this.deps.now(),
          windowMs: RATE_WINDOW_MS,
        }),
      );
    } catch (error) {
      // Not money: tokens not counted for one window, leases back after the TTL. Never silent.
      this.deps.logger.error('could not record a call on its rate limits', error);
    }
  }
}
