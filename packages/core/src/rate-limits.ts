import { SpendGuardError } from './errors.js';
import type { RateBucket, RateBucketState } from './storage/storage-contract.js';
import { scopeKey } from './storage/storage-contract.js';

/** What a call's admission counted on the rate limits, kept until it settles. */
export interface RateAdmission {
  /** Names the call's parallel leases. */
  leaseId: string;
  buckets: RateBucket[];
  /** The buckets as the admission left them (for the response headers). */
  states: RateBucketState[];
}

const LIMIT_TYPE = { rpm: 'requests', tpm: 'tokens', parallel: 'max_parallel_requests' } as const;

/** Whole seconds from `now` until `at`, at least 1 (`retry-after`, `x-ratelimit-reset-*`). */
function secondsUntil(at: Date, now: Date): number {
  return Math.max(1, Math.ceil((at.getTime() - now.getTime()) / 1000));
}

/**
 * OpenAI's and LiteLLM's `x-ratelimit-*` headers: for requests and for tokens, the bucket with the
 * least left among those the call was checked against (its limit, what is left of it, and the
 * seconds until its window resets).
 */
export function rateLimitHeaders(states: RateBucketState[], now: Date): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const metric of ['rpm', 'tpm'] as const) {
    let tightest: RateBucketState | null = null;
    for (const s of states) {
      if (s.metric !== metric) continue;
      if (!tightest || s.limit - s.used < tightest.limit - tightest.used) tightest = s;
    }
    if (!tightest) continue;
    const name = LIMIT_TYPE[metric];
    headers[`x-ratelimit-limit-${name}`] = String(tightest.limit);
    headers[`x-ratelimit-remaining-${name}`] = String(Math.max(0, tightest.limit - tightest.used));
    if (tightest.resetAt) headers[`x-ratelimit-reset-${name}`] = String(secondsUntil(tightest.resetAt, now));
  }
  return headers;
}

/**
 * The 429 for a refused bucket, worded as LiteLLM's limiter words it, naming the scope (and model)
 * and the limit; `retry-after` says when the window resets (1 s for a parallel limit).
 */
export function rateLimitedError(
  labels: Map<string, string>,
  refused: RateBucketState,
  now: Date,
): SpendGuardError {
  const label = labels.get(scopeKey(refused.scope)) ?? `${refused.scope.kind}=${refused.scope.id}`;
  const what = refused.model ? `${label} model=${refused.model}` : label;
  const resets = refused.resetAt ? ` Limit resets at: ${refused.resetAt.toISOString()}` : '';
  const headers = {
    'retry-after': String(refused.resetAt ? secondsUntil(refused.resetAt, now) : 1),
    ...rateLimitHeaders([refused], now),
  };
  return new SpendGuardError(
    'RATE_LIMITED',
    `Rate limit exceeded for ${what}. Limit type: ${LIMIT_TYPE[refused.metric]}. Current limit: ${refused.limit}, Remaining: 0.${resets}`,
    { headers, scope: refused.scope },
  );
}
