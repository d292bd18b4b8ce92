import type { RateBucket, RateBucketState, RateLimits, ScopeRef } from './storage-contract.js';

/**
 * The rate-limit rules every backend applies inside its guarded write, written once here so that
 * backends evaluated in JavaScript cannot drift apart (Postgres runs the same rule in SQL).
 */

/** A bucket's stored counter: the start of its current window (ms) and what it counted in it. */
export interface RateWindow {
  windowStartMs: number;
  used: number;
}

/**
 * Decides one bucket without writing: whether it admits the call, the state to answer, and the
 * counter to write if every bucket of the call admits it. For `parallel`, `current.used` is the
 * number of live leases and `windowStartMs` is ignored.
 */
export function decideRateBucket(
  bucket: RateBucket,
  current: RateWindow | null,
  nowMs: number,
  windowMs: number,
): { ok: boolean; state: RateBucketState; next: RateWindow } {
  if (bucket.metric === 'parallel') {
    const used = current?.used ?? 0;
    const ok = used + 1 <= bucket.limit;
    return {
      ok,
      state: { ...bucket, used: ok ? used + 1 : used, resetAt: null },
      next: { windowStartMs: nowMs, used: ok ? used + 1 : used },
    };
  }
  const live =
    current && nowMs < current.windowStartMs + windowMs ? current : { windowStartMs: nowMs, used: 0 };
  const resetAt = new Date(live.windowStartMs + windowMs);
  if (bucket.metric === 'rpm') {
    const ok = live.used + 1 <= bucket.limit;
    const used = ok ? live.used + 1 : live.used;
    return { ok, state: { ...bucket, used, resetAt }, next: { windowStartMs: live.windowStartMs, used } };
  }
  // tpm: a call's tokens are known only when it settles, so admission checks what the window has
  // already used (LiteLLM's rule) and counts nothing now.
  return { ok: live.used < bucket.limit, state: { ...bucket, used: live.used, resetAt }, next: live };
}

/** The window a `tpm` bucket adds a settled call's tokens to. */
export function addRateTokens(
  current: RateWindow | null,
  tokens: number,
  nowMs: number,
  windowMs: number,
): RateWindow {
  const live =
    current && nowMs < current.windowStartMs + windowMs ? current : { windowStartMs: nowMs, used: 0 };
  return { windowStartMs: live.windowStartMs, used: live.used + tokens };
}

/** True when the limits limit anything. */
export function hasRateLimits(limits: RateLimits | null | undefined): limits is RateLimits {
  return (
    !!limits &&
    (limits.rpmLimit !== null ||
      limits.tpmLimit !== null ||
      limits.maxParallelRequests !== null ||
      Object.keys(limits.modelRpmLimit).length > 0 ||
      Object.keys(limits.modelTpmLimit).length > 0)
  );
}

/**
 * The buckets a call to `model` is checked against, for every scope of the call that has limits
 * (whatever its kind: key, user, team, or any scope added later).
 */
export function rateBucketsFor(
  scoped: Array<{ scope: ScopeRef; limits: RateLimits }>,
  model: string,
): RateBucket[] {
  const buckets: RateBucket[] = [];
  for (const { scope, limits } of scoped) {
    if (limits.rpmLimit !== null) buckets.push({ scope, metric: 'rpm', model: '', limit: limits.rpmLimit });
    if (limits.tpmLimit !== null) buckets.push({ scope, metric: 'tpm', model: '', limit: limits.tpmLimit });
    if (limits.maxParallelRequests !== null)
      buckets.push({ scope, metric: 'parallel', model: '', limit: limits.maxParallelRequests });
    if (!model) continue;
    const rpm = limits.modelRpmLimit[model];
    const tpm = limits.modelTpmLimit[model];
    if (rpm !== undefined) buckets.push({ scope, metric: 'rpm', model, limit: rpm });
    if (tpm !== undefined) buckets.push({ scope, metric: 'tpm', model, limit: tpm });
  }
  return buckets;
}

/** `key:abc:rpm:gpt-4o`: a bucket's identity, for maps and lock ordering. */
export function rateBucketKey(b: Pick<RateBucket, 'scope' | 'metric' | 'model'>): string {
  return `${b.scope.kind}\u0000${b.scope.id}\u0000${b.metric}\u0000${b.model}`;
}
