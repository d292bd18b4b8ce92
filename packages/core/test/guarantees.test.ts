// Guarantees the README makes, each held by a test that fails when the guarantee is broken. Expected
// amounts are worked out by hand from ../shared/data/model_prices_and_context_window.json (2026-07-24)
// and the worst case's documented rule (docs/worst-case.md): far from a cap, the prompt bounded by the
// body's bytes + 4 per message + 16; near one, its strings counted + 4 per message + 16; the output by
// max_tokens x n; at the standard rates when the request names no service tier. The clock is the
// guard's, moved by the test; storage failures are injected into a real MemoryStorage.
import { describe, expect, it } from 'vitest';
import { createSpendGuard, MemoryStorage, type SpendGuard, type SpendGuardOptions } from '../src/index.js';
import type { ScopeRef } from '../src/storage/storage-contract.js';
import { manage } from './management-call.js';

const MASTER = 'sk-master-guarantees';
const T0 = Date.parse('2026-05-04T10:00:00.000Z');

/** gpt-4o-mini, 8 output tokens: 82 bytes of JSON. */
const MINI = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 };
/**
 * What a MINI call reserves far from a cap, in nano-dollars: (82 bytes + 4 + 16) x 1.5e-7 + 8 x 6e-7
 * = 0.0000201 USD (gpt-4o-mini's standard rates).
 */
const MINI_RESERVED_NANO = 20_100;
// Near a cap, its prompt counted: ('user' 1 + 'hi' 1 + 4 + 16) x 1.5e-7 + 8 x 6e-7 = 0.0000081 USD.

interface Harness {
  guard: SpendGuard;
  storage: MemoryStorage;
  clock: { now: number };
  errors: string[];
  /** Admits one call with this key (the body is MINI unless given), as an adapter would. */
  admit: (
    key: string,
    body?: Record<string, unknown>,
    headers?: Record<string, string>,
  ) => ReturnType<SpendGuard['admit']>;
  manage: (method: 'GET' | 'POST', path: string, json?: unknown) => ReturnType<typeof manage>;
}

function harness(options: Partial<SpendGuardOptions> = {}, storage = new MemoryStorage()): Harness {
  const clock = { now: T0 };
  const errors: string[] = [];
  const guard = createSpendGuard({
    storage,
    masterKey: MASTER,
    now: () => new Date(clock.now),
    settleBatchMs: 0,
    reservationSweepMs: 0,
    logger: { warn: () => {}, error: (message: string) => errors.push(message) },
    ...options,
  });
  return {
    guard,
    storage,
    clock,
    errors,
    admit: (key, body = MINI, headers = {}) =>
      guard.admit({
        method: 'POST',
        path: '/v1/chat/completions',
        header: (n) => (n === 'authorization' ? `Bearer ${key}` : headers[n]),
        body,
      }),
    manage: (method, path, json) => manage(guard, MASTER, method, path, json),
  };
}

/** Answers an admitted call with this usage and settles it. */
async function answer(outcome: Awaited<ReturnType<SpendGuard['admit']>>, completionTokens = 8) {
  if (!outcome.ok) throw new Error(`refused: ${JSON.stringify(outcome.response.body)}`);
  outcome.call.tap.begin(200, 'application/json');
  outcome.call.tap.write(
    JSON.stringify({
      object: 'chat.completion',
      model: 'gpt-4o-mini',
      usage: { prompt_tokens: 10, completion_tokens: completionTokens },
    }),
  );
  outcome.call.tap.drain();
  return outcome.call.finish();
}

const keyScope = (token: string): ScopeRef => ({ kind: 'key', id: token });

describe('the worst case reserved for a call', () => {
  it('counts every choice of n > 1 at max_tokens', async () => {
    const h = harness();
    const { key, token } = (await h.manage('POST', '/key/generate', { max_budget: 100 })).body;
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 };
    const reservedFor = async (b: Record<string, unknown>) => {
      const out = await h.admit(key, b);
      expect(out.ok).toBe(true);
      const [state] = await h.storage.getBudgets([keyScope(token)], new Date(h.clock.now));
      return state!.reservedNano;
    };
    // gpt-4o's standard rates: 2.5e-6 per input token, 1e-5 per output token.
    // n = 1, 79 bytes: (79 + 4 + 16) x 2.5e-6 + 100 x 1e-5 = 0.0012475 USD.
    expect(await reservedFor(body)).toBe(1_247_500);
    // n = 3, 85 bytes, on top of the first (still in flight): (85 + 20) x 2.5e-6 + 300 x 1e-5 = 0.0032625.
    expect(await reservedFor({ ...body, n: 3 })).toBe(1_247_500 + 3_262_500);
  });

  it('refuses in strict mode an n > 1 call whose worst case does not fit, and admits the n = 1 one', async () => {
    const h = harness();
    // $0.002 fits one choice's worst case ($0.0012475) but not three, even counted precisely:
    // 22 x 2.5e-6 + 300 x 1e-5 = $0.003055 (100 output tokens are under the minimum a cap is lowered to).
    const { key } = (await h.manage('POST', '/key/generate', { max_budget: 0.002 })).body;
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 };
    const three = await h.admit(key, { ...body, n: 3 });
    expect(three.ok).toBe(false);
    if (!three.ok) expect(three.response.status).toBe(429);
    expect((await h.admit(key, body)).ok).toBe(true);
  });
});

describe('a budget 429', () => {
  it("says in retry-after when the refusing scope's period resets, on the guard's clock", async () => {
    const h = harness();
    const { key } =
      // Below even the precise worst case ($0.0000081).
      (await h.manage('POST', '/key/generate', { max_budget: 0.000005, budget_duration: '1d' })).body;
    // 10:00 UTC: the daily budget resets at midnight, 14 h away.
    const first = await h.admit(key);
    expect(first.ok).toBe(false);
    if (!first.ok) {
      expect(first.response.status).toBe(429);
      expect(first.response.headers['retry-after']).toBe('50400');
    }
    // 23:59:58.5: 1.5 s left, rounded up.
    h.clock.now = Date.parse('2026-05-04T23:59:58.500Z');
    const late = await h.admit(key);
    expect(late.ok).toBe(false);
    if (!late.ok) expect(late.response.headers['retry-after']).toBe('2');
  });

  it("names the team when the team's cap refuses, and the key's own budget still has room", async () => {
    const h = harness();
    await h.manage('POST', '/team/new', { team_id: 'web', team_alias: 'web-team', max_budget: 0.00001 });
    await h.manage('POST', '/user/new', { user_id: 'ann', team_id: 'web', auto_create_key: false });
    const { key } = (
      await h.manage('POST', '/key/generate', { user_id: 'ann', team_id: 'web', max_budget: 10 })
    ).body;
    // $0.00001 takes one call counted precisely ($0.0000081), which costs $0.0000063; a second one's
    // worst case does not fit in what is left, and nothing is in flight to wait for.
    const first = await answer(await h.admit(key));
    expect(first.costNano).toBe(6_300); // 10 x 1.5e-7 + 8 x 6e-7
    const refused = await h.admit(key);
    expect(refused.ok).toBe(false);
    if (!refused.ok) {
      expect(refused.response.status).toBe(429);
      expect(refused.response.body).toMatchObject({
        error: { type: 'budget_exceeded', param: null, code: '429' },
      });
      expect((refused.response.body as { error: { message: string } }).error.message).toMatch(
        /^Budget has been exceeded! Team=web-team Current cost: 0\.0000063, Max budget: 0\.00001\. /,
      );
      expect(refused.response.headers['retry-after']).toBeUndefined(); // a budget without a period
    }
  });
});

describe('x-spendguard-budget-remaining', () => {
  it("is the tightest scope's headroom once this call's worst case is reserved, wherever it is", async () => {
    const h = harness();
    // Scopes in the order the guard lists them: key $3, team $2 (the tightest but one), tag $1 (the
    // tightest, and last); ann's own $5 is not checked on a team key.
    await h.manage('POST', '/team/new', { team_id: 'web', max_budget: 2 });
    await h.manage('POST', '/user/new', {
      user_id: 'ann',
      team_id: 'web',
      max_budget: 5,
      auto_create_key: false,
    });
    const { key } = (
      await h.manage('POST', '/key/generate', { user_id: 'ann', team_id: 'web', max_budget: 3 })
    ).body;
    await h.manage('POST', '/tag/new', { name: 'search', max_budget: 1 });
    const out = await h.admit(key, MINI, { 'x-litellm-tags': 'search' });
    if (!out.ok) throw new Error('refused');
    // $1 - $0.0000201
    expect(out.call.responseHeaders['x-spendguard-budget-remaining']).toBe('0.9999799');
    // Without the tag the team is the tightest: $2 - $0.0000201 - the first call's $0.0000201.
    const untagged = await h.admit(key);
    if (!untagged.ok) throw new Error('refused');
    expect(untagged.call.responseHeaders['x-spendguard-budget-remaining']).toBe('1.9999598');
  });
});

describe('storage failing during the rate-limit check', () => {
  async function limited(onStorageError: 'deny' | 'allow') {
    const storage = new MemoryStorage();
    const h = harness({ onStorageError }, storage);
    const { key, token } = (await h.manage('POST', '/key/generate', { max_budget: 1, rpm_limit: 10 })).body;
    storage.acquireRate = async () => {
      throw new Error('injected: the rate-limit write failed');
    };
    return { h, key, token };
  }

  it("'deny' answers 503 and reserves nothing", async () => {
    const { h, key, token } = await limited('deny');
    const out = await h.admit(key);
    expect(out.ok).toBe(false);
    if (!out.ok) {
      expect(out.response.status).toBe(503);
      expect(out.response.body).toMatchObject({ error: { type: 'service_unavailable', code: '503' } });
    }
    const [state] = await h.storage.getBudgets([keyScope(token)], new Date(h.clock.now));
    expect(state).toMatchObject({ spendNano: 0, reservedNano: 0 });
    expect(h.guard.stats().storageErrors).toBe(1);
  });

  it("'allow' serves the call unlimited, its budget still reserved", async () => {
    const { h, key, token } = await limited('allow');
    const out = await h.admit(key);
    expect(out.ok).toBe(true);
    if (out.ok) {
      expect(out.call.state.rate).toBeNull();
      expect(out.call.responseHeaders['x-ratelimit-limit-requests']).toBeUndefined();
    }
    const [state] = await h.storage.getBudgets([keyScope(token)], new Date(h.clock.now));
    expect(state).toMatchObject({ spendNano: 0, reservedNano: MINI_RESERVED_NANO });
    expect(h.guard.stats().storageErrors).toBe(1);
  });
});

describe('keyCacheTtlMs', () => {
  it('bounds how long a change made by another process goes unseen, on the guard clock', async () => {
    const storage = new MemoryStorage();
    // Another process's change: this guard hears nothing of it (no change feed).
    (storage as { watchKeyChanges?: unknown }).watchKeyChanges = undefined;
    const h = harness({ keyCacheTtlMs: 5_000 }, storage);
    const { key, token } = (await h.manage('POST', '/key/generate', { max_budget: 1 })).body;
    await answer(await h.admit(key)); // the key is cached from now on
    await storage.updateKey(token, { blocked: true });
    h.clock.now += 5_000;
    await answer(await h.admit(key)); // still the cached key, 5 s old
    h.clock.now += 1;
    const refused = await h.admit(key);
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.response.status).toBe(401);
  });
});

describe('settlements storage could not write', () => {
  /** MemoryStorage whose settle fails while `down`, and then `failuresLeft` more times. */
  function flakyStorage() {
    const storage = new MemoryStorage();
    const settle = storage.settle.bind(storage);
    const control = { down: true, failuresLeft: 0, attempts: 0 };
    storage.settle = async (input) => {
      control.attempts += 1;
      if (control.down) throw new Error('injected: storage is down');
      if (control.failuresLeft > 0) {
        control.failuresLeft -= 1;
        throw new Error('injected: storage failed once more');
      }
      return settle(input);
    };
    return { storage, control };
  }

  it('are kept up to maxPendingSettlements, the oldest dropped (logged, counted) beyond it', async () => {
    const { storage, control } = flakyStorage();
    const h = harness({ maxPendingSettlements: 2, reservationTtlMs: 60_000 }, storage);
    const { key, token } = (await h.manage('POST', '/key/generate', { max_budget: 1 })).body;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await answer(await h.admit(key))).requestId);
    expect(h.guard.stats()).toMatchObject({
      pendingSettlements: 2,
      settlementsDropped: 1,
      settlementsRecovered: 0,
      settleFailures: 3,
    });
    expect(h.errors.join('\n')).toContain(`pending settlement queue full (2): dropped request ${ids[0]}`);

    // close() writes the two kept, retrying while storage still fails.
    control.down = false;
    control.failuresLeft = 1;
    await h.guard.close();
    expect(h.guard.stats()).toMatchObject({ pendingSettlements: 0, settlementsRecovered: 2 });
    const logged = (await storage.querySpendLogs({})).map((l) => l.requestId).sort();
    expect(logged).toEqual([ids[1], ids[2]].sort());
    // The dropped call's reservation stays, and is charged at its worst case once its TTL passes.
    const [before] = await storage.getBudgets([keyScope(token)], new Date(h.clock.now));
    expect(before).toMatchObject({ reservedNano: MINI_RESERVED_NANO });
    expect(await storage.expireReservations(new Date(h.clock.now + 60_000))).toBe(1);
    const [after] = await storage.getBudgets([keyScope(token)], new Date(h.clock.now + 60_000));
    expect(after!.reservedNano).toBe(0);
    // Two calls at 10 x 1.5e-7 + 8 x 6e-7 = 0.0000063 each, and the dropped one at its worst case.
    expect(after!.spendNano).toBe(2 * 6_300 + MINI_RESERVED_NANO);
  });

  it('close() retries the pending ones until they are written, within shutdownTimeoutMs', async () => {
    const { storage, control } = flakyStorage();
    const h = harness({ shutdownTimeoutMs: 30_000 }, storage);
    const { key } = (await h.manage('POST', '/key/generate', { max_budget: 1 })).body;
    const { requestId } = await answer(await h.admit(key));
    expect(h.guard.stats().pendingSettlements).toBe(1);
    control.down = false;
    control.failuresLeft = 2; // close() must try three times
    const attemptsBefore = control.attempts;
    await h.guard.close();
    expect(control.attempts - attemptsBefore).toBeGreaterThanOrEqual(3);
    expect(h.guard.stats()).toMatchObject({ pendingSettlements: 0, settlementsRecovered: 1 });
    expect((await storage.querySpendLogs({})).map((l) => l.requestId)).toEqual([requestId]);
  });
});
