// The rate-limit rules every backend applies (storage/rate-limit-rules.ts), at their edges: the last
// request a limit admits, the first it refuses, the millisecond a window ends. Expected values are literals.
import { describe, expect, it } from 'vitest';
import {
  addRateTokens,
  decideRateBucket,
  hasRateLimits,
  rateBucketKey,
  rateBucketsFor,
} from '../src/storage/rate-limit-rules.js';
import type { RateBucket, RateLimits, ScopeRef } from '../src/storage/storage-contract.js';

const K: ScopeRef = { kind: 'key', id: 'k1' };
const T: ScopeRef = { kind: 'team', id: 't1' };
const WINDOW = 60_000;
const START = Date.parse('2026-03-10T12:00:00.000Z');
const bucket = (metric: RateBucket['metric'], limit: number): RateBucket => ({
  scope: K,
  metric,
  model: '',
  limit,
});
const none: RateLimits = {
  rpmLimit: null,
  tpmLimit: null,
  maxParallelRequests: null,
  modelRpmLimit: {},
  modelTpmLimit: {},
};

describe('decideRateBucket: rpm', () => {
  it('opens a window at the first request, counting it', () => {
    expect(decideRateBucket(bucket('rpm', 3), null, START, WINDOW)).toEqual({
      ok: true,
      state: { ...bucket('rpm', 3), used: 1, resetAt: new Date(START + WINDOW) },
      next: { windowStartMs: START, used: 1 },
    });
  });

  it('admits up to the limit itself, then refuses without counting', () => {
    const now = START + 10_000;
    expect(decideRateBucket(bucket('rpm', 3), { windowStartMs: START, used: 2 }, now, WINDOW)).toEqual({
      ok: true,
      state: { ...bucket('rpm', 3), used: 3, resetAt: new Date(START + WINDOW) },
      next: { windowStartMs: START, used: 3 },
    });
    expect(decideRateBucket(bucket('rpm', 3), { windowStartMs: START, used: 3 }, now, WINDOW)).toEqual({
      ok: false,
      state: { ...bucket('rpm', 3), used: 3, resetAt: new Date(START + WINDOW) },
      next: { windowStartMs: START, used: 3 },
    });
  });

  it('keeps a window until its last millisecond, and opens a new one when it has ended', () => {
    const full = { windowStartMs: START, used: 3 };
    expect(decideRateBucket(bucket('rpm', 3), full, START + WINDOW - 1, WINDOW).ok).toBe(false);
    expect(decideRateBucket(bucket('rpm', 3), full, START + WINDOW, WINDOW)).toEqual({
      ok: true,
      state: { ...bucket('rpm', 3), used: 1, resetAt: new Date(START + 2 * WINDOW) },
      next: { windowStartMs: START + WINDOW, used: 1 },
    });
  });
});

describe('decideRateBucket: tpm', () => {
  it("admits while the window's tokens are below the limit, counting nothing at admission", () => {
    const window = { windowStartMs: START, used: 999 };
    expect(decideRateBucket(bucket('tpm', 1_000), window, START + 1, WINDOW)).toEqual({
      ok: true,
      state: { ...bucket('tpm', 1_000), used: 999, resetAt: new Date(START + WINDOW) },
      next: { windowStartMs: START, used: 999 },
    });
    const spent = { windowStartMs: START, used: 1_000 };
    expect(decideRateBucket(bucket('tpm', 1_000), spent, START + 1, WINDOW).ok).toBe(false);
    // The next window starts empty.
    expect(decideRateBucket(bucket('tpm', 1_000), spent, START + WINDOW, WINDOW)).toEqual({
      ok: true,
      state: { ...bucket('tpm', 1_000), used: 0, resetAt: new Date(START + 2 * WINDOW) },
      next: { windowStartMs: START + WINDOW, used: 0 },
    });
  });
});

describe('decideRateBucket: parallel', () => {
  it('takes a lease while fewer than the limit are live, with no window', () => {
    expect(decideRateBucket(bucket('parallel', 2), { windowStartMs: 0, used: 1 }, START, WINDOW)).toEqual({
      ok: true,
      state: { ...bucket('parallel', 2), used: 2, resetAt: null },
      next: { windowStartMs: START, used: 2 },
    });
    expect(decideRateBucket(bucket('parallel', 2), { windowStartMs: 0, used: 2 }, START, WINDOW)).toEqual({
      ok: false,
      state: { ...bucket('parallel', 2), used: 2, resetAt: null },
      next: { windowStartMs: START, used: 2 },
    });
    expect(decideRateBucket(bucket('parallel', 1), null, START, WINDOW).state.used).toBe(1);
  });
});

describe('addRateTokens', () => {
  it("adds a settled call's tokens to the live window, or to a new one when it has ended", () => {
    const live = { windowStartMs: START, used: 500 };
    expect(addRateTokens(live, 120, START + WINDOW - 1, WINDOW)).toEqual({ windowStartMs: START, used: 620 });
    expect(addRateTokens(live, 120, START + WINDOW, WINDOW)).toEqual({
      windowStartMs: START + WINDOW,
      used: 120,
    });
    expect(addRateTokens(null, 7, START, WINDOW)).toEqual({ windowStartMs: START, used: 7 });
  });
});

describe('hasRateLimits', () => {
  it('is true as soon as one limit is set, 0 included', () => {
    expect(hasRateLimits(null)).toBe(false);
    expect(hasRateLimits(undefined)).toBe(false);
    expect(hasRateLimits(none)).toBe(false);
    expect(hasRateLimits({ ...none, rpmLimit: 0 })).toBe(true);
    expect(hasRateLimits({ ...none, tpmLimit: 0 })).toBe(true);
    expect(hasRateLimits({ ...none, maxParallelRequests: 0 })).toBe(true);
    expect(hasRateLimits({ ...none, modelRpmLimit: { 'gpt-4o': 1 } })).toBe(true);
    expect(hasRateLimits({ ...none, modelTpmLimit: { 'gpt-4o': 1 } })).toBe(true);
  });
});

describe('rateBucketsFor', () => {
  const all: RateLimits = {
    rpmLimit: 10,
    tpmLimit: 1_000,
    maxParallelRequests: 2,
    modelRpmLimit: { 'gpt-4o': 3, o1: 1 },
    modelTpmLimit: { 'gpt-4o': 500 },
  };

  it("lists every limit of every scope, and the model's own only for that model", () => {
    expect(
      rateBucketsFor(
        [
          { scope: K, limits: all },
          { scope: T, limits: { ...none, rpmLimit: 100 } },
        ],
        'gpt-4o',
      ),
    ).toEqual([
      { scope: K, metric: 'rpm', model: '', limit: 10 },
      { scope: K, metric: 'tpm', model: '', limit: 1_000 },
      { scope: K, metric: 'parallel', model: '', limit: 2 },
      { scope: K, metric: 'rpm', model: 'gpt-4o', limit: 3 },
      { scope: K, metric: 'tpm', model: 'gpt-4o', limit: 500 },
      { scope: T, metric: 'rpm', model: '', limit: 100 },
    ]);
    expect(rateBucketsFor([{ scope: K, limits: all }], 'o1').map((b) => `${b.metric}:${b.model}`)).toEqual([
      'rpm:',
      'tpm:',
      'parallel:',
      'rpm:o1',
    ]);
    expect(rateBucketsFor([{ scope: K, limits: all }], '')).toHaveLength(3);
    // A call with no model is held to the scope-wide limits only, even by a per-model limit keyed ''.
    expect(
      rateBucketsFor(
        [{ scope: K, limits: { ...all, modelRpmLimit: { '': 1 }, modelTpmLimit: { '': 1 } } }],
        '',
      ),
    ).toHaveLength(3);
    expect(rateBucketsFor([{ scope: K, limits: none }], 'gpt-4o')).toEqual([]);
  });
});

describe('rateBucketKey', () => {
  it('joins scope, metric and model with a separator no id can hold', () => {
    expect(rateBucketKey({ scope: K, metric: 'rpm', model: 'gpt-4o' })).toBe(
      'key\u0000k1\u0000rpm\u0000gpt-4o',
    );
  });
});
