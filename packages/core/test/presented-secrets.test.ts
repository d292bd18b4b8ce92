// The fast admission path under attack: a secret PresentedSecrets remembers, a key the key cache holds
// within its TTL and a call its lease covers are admitted without a promise. None of that may keep a
// blocked, deleted, expired or replaced key working, make another secret the master key, or let a burst
// of calls admitted in one tick spend past what they were admitted for.
import { createSpendGuard, MemoryStorage } from '@spendguard/core';
import { describe, expect, it } from 'vitest';
import { MasterKey, PresentedSecrets } from '../src/pipeline/identify.js';
import { manage } from './management-call.js';

const MASTER = 'sk-master-presented-secrets';
/** gpt-4o: 9 prompt tokens at $2.5e-6 and 5 completion tokens at $1e-5 = 22,500 + 50,000 nano-dollars. */
const CALL_NANO = 72_500;
const T0 = Date.parse('2026-05-04T10:00:00.000Z');

/**
 * A guard on a MemoryStorage, on a clock the test moves, with a key cache whose TTL (10 min) outlasts
 * every clock move here: a key this guard loaded stays in its cache, so every refusal below comes from
 * the synchronous path (`identify` on a cached key), not from a reload.
 */
async function setup(extra: { keyCacheSize?: number } = {}) {
  const clock = { now: T0 };
  const storage = new MemoryStorage();
  const counts = { reserve: 0, setLease: 0 };
  const reserve = storage.reserve.bind(storage);
  const setLease = storage.setLease.bind(storage);
  storage.reserve = (input) => {
    if (!input.reservationId.startsWith('lease:')) counts.reserve += 1;
    return reserve(input);
  };
  storage.setLease = (input) => {
    counts.setLease += 1;
    return setLease(input);
  };
  let finds = 0;
  const findKeyBySecret = storage.findKeyBySecret.bind(storage);
  storage.findKeyBySecret = (hash, now) => {
    finds += 1;
    return findKeyBySecret(hash, now);
  };
  const guard = createSpendGuard({
    storage,
    masterKey: MASTER,
    now: () => new Date(clock.now),
    keyCacheTtlMs: 600_000,
    reservationSweepMs: 0,
    logger: { warn: () => {}, error: () => {} },
    ...extra,
  });
  const generate = async (body: Record<string, unknown>) => {
    const res = await manage(guard, MASTER, 'POST', '/key/generate', body);
    expect(res.status).toBe(200);
    return res.body as { key: string; token: string };
  };
  /** Admits a call without finishing it: the admission's status (200) or the refusal's, and its code. */
  const admit = (secret: string) =>
    guard
      .admit({
        method: 'POST',
        path: '/chat/completions',
        header: (n) => (n === 'authorization' ? `Bearer ${secret}` : undefined),
        body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 },
      })
      .then((out) =>
        out.ok
          ? { status: 200, code: null as string | null, call: out.call }
          : {
              status: out.response.status,
              code: String((out.response.body as { error: { code: unknown } }).error.code),
              call: null,
            },
      );
  /** One call, answered (9 + 5 tokens) and finished as an adapter does. */
  const call = async (secret: string) => {
    const out = await admit(secret);
    if (out.call) await finish(out.call);
    return { status: out.status, code: out.code };
  };
  const keyState = async (token: string) =>
    (await storage.getBudgets([{ kind: 'key', id: token }], new Date(clock.now)))[0]!;
  return { guard, storage, clock, counts, generate, admit, call, keyState, finds: () => finds };
}

async function finish(call: import('@spendguard/core').GuardedCall): Promise<void> {
  call.tap.begin(200, 'application/json');
  call.tap.write(JSON.stringify({ model: 'gpt-4o', usage: { prompt_tokens: 9, completion_tokens: 5 } }));
  await call.finish();
}

/** Warms a key: 20 calls, so that its secret is remembered, its key cached and a lease open. */
async function warm(s: Awaited<ReturnType<typeof setup>>, secret: string): Promise<void> {
  for (let i = 0; i < 20; i++) expect(await s.call(secret)).toEqual({ status: 200, code: null });
  expect(s.counts.setLease).toBeGreaterThanOrEqual(1); // the last calls came from a lease, in memory
}

describe('the fast path refuses a key that may no longer be used, at once on this instance', () => {
  it('a blocked key (then unblocked), though its secret, key and lease are all in memory', async () => {
    const s = await setup();
    const { key } = await s.generate({ max_budget: 100 });
    await warm(s, key);
    expect((await manage(s.guard, MASTER, 'POST', '/key/block', { key })).status).toBe(200);
    // 401 auth_error, as LiteLLM answers a blocked key.
    expect(await s.call(key)).toEqual({ status: 401, code: '401' });
    expect((await manage(s.guard, MASTER, 'POST', '/key/unblock', { key })).status).toBe(200);
    expect(await s.call(key)).toEqual({ status: 200, code: null });
    await s.guard.close();
  });

  it('a deleted key', async () => {
    const s = await setup();
    const { key } = await s.generate({ max_budget: 100 });
    await warm(s, key);
    expect((await manage(s.guard, MASTER, 'POST', '/key/delete', { keys: [key] })).status).toBe(200);
    expect((await s.call(key)).status).toBe(401);
    await s.guard.close();
  });

  it('an expired key while its cache entry is still fresh (the clock, not a reload, refuses it)', async () => {
    const s = await setup();
    const { key } = await s.generate({ max_budget: 100, duration: '30s' });
    await warm(s, key);
    const loads = s.finds();
    s.clock.now = T0 + 29_999;
    expect((await s.call(key)).status).toBe(200);
    s.clock.now = T0 + 30_000; // expires_at itself: expired (LiteLLM's 400 expired_key)
    expect(await s.call(key)).toEqual({ status: 400, code: '400' });
    expect(s.finds()).toBe(loads); // refused from the cached key, without a storage lookup
    await s.guard.close();
  });

  it("a regenerated key's old secret once its grace period ends, the new one still served", async () => {
    const s = await setup();
    const { key, token } = await s.generate({ max_budget: 100 });
    await warm(s, key);
    const regenerated = await manage(s.guard, MASTER, 'POST', `/key/${key}/regenerate`, {
      grace_period: '60s',
    });
    expect(regenerated.status).toBe(200);
    const fresh = (regenerated.body as { key: string }).key;
    expect(fresh).not.toBe(key);
    // Within the grace both secrets open the key (the old one re-cached with its end of grace).
    await warm(s, key);
    expect((await s.call(fresh)).status).toBe(200);
    const loads = s.finds();
    s.clock.now = T0 + 60_000;
    expect((await s.call(key)).status).toBe(401);
    expect(s.finds()).toBe(loads); // the cached old secret, refused by the clock
    expect((await s.call(fresh)).status).toBe(200);
    await s.guard.flush();
    // Every call that was served, and only those, is charged to the key: 20 + 20 + 1 + 1.
    expect((await s.keyState(token)).spendNano).toBe(42 * CALL_NANO);
    await s.guard.close();
  });

  it("a budget lowered to what was spent refuses once the lease's second is over", async () => {
    const s = await setup();
    const { key, token } = await s.generate({ max_budget: 100 });
    await warm(s, key);
    await s.guard.flush();
    expect((await s.keyState(token)).spendNano).toBe(20 * CALL_NANO);
    // Lowered through this guard to what was spent: no call fits any more.
    const updated = await manage(s.guard, MASTER, 'POST', '/key/update', {
      key,
      max_budget: (20 * CALL_NANO) / 1e9,
    });
    expect(updated.status).toBe(200);
    s.clock.now = T0 + 1_000; // a lease admits for 1 s after the write that granted it, at most
    expect(await s.call(key)).toEqual({ status: 429, code: '429' });
    await s.guard.flush();
    expect((await s.keyState(token)).spendNano).toBe(20 * CALL_NANO);
    await s.guard.close();
  });
});

describe('rate limits on the fast path', () => {
  it("a key's rpm limit refuses, and one set on a warm key (secret, key and lease in memory) applies at once", async () => {
    const s = await setup();
    const limited = await s.generate({ max_budget: 100, rpm_limit: 3 });
    for (let i = 0; i < 3; i++) expect((await s.call(limited.key)).status).toBe(200);
    expect(await s.call(limited.key)).toEqual({ status: 429, code: '429' });
    const warmed = await s.generate({ max_budget: 100 });
    await warm(s, warmed.key);
    const updated = await manage(s.guard, MASTER, 'POST', '/key/update', { key: warmed.key, rpm_limit: 2 });
    expect(updated.status).toBe(200);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await s.call(warmed.key)).status);
    expect(statuses).toEqual([200, 200, 429, 429]);
    await s.guard.close();
  });
});

describe('the master key and remembered secrets', () => {
  it('stays the master key after a flood of other secrets evicted it, and no other secret becomes it', async () => {
    // keyCacheSize 2: PresentedSecrets remembers two secrets at most.
    const s = await setup({ keyCacheSize: 2 });
    const { key } = await s.generate({ max_budget: 100 });
    // Calls as the master key are admitted (it has no budget of its own).
    expect((await s.call(MASTER)).status).toBe(200);
    for (let i = 0; i < 50; i++) expect((await s.call(`sk-made-up-${i}`)).status).toBe(401);
    expect((await s.call(MASTER)).status).toBe(200);
    // Near misses of the master key: one character changed, one added, one removed, a prefix.
    for (const near of [
      `${MASTER.slice(0, -1)}x`,
      `${MASTER}x`,
      MASTER.slice(0, -1),
      'sk-master',
      ` ${MASTER}`.trim().toUpperCase(),
    ]) {
      expect((await s.call(near)).status, near).toBe(401);
      expect((await manage(s.guard, near, 'GET', '/key/list')).status, near).toBe(401);
    }
    // Interleaved with a virtual key, both evicted in turn: each still opens what it opened.
    for (let i = 0; i < 5; i++) {
      expect((await s.call(key)).status).toBe(200);
      expect((await s.call(`sk-other-${i}`)).status).toBe(401);
      expect((await s.call(`sk-another-${i}`)).status).toBe(401);
      expect((await s.call(MASTER)).status).toBe(200);
    }
    expect((await manage(s.guard, MASTER, 'GET', '/key/list')).status).toBe(200);
    await s.guard.close();
  });

  it('a virtual key is never taken for the master key of another guard (one PresentedSecrets per guard)', () => {
    const a = new PresentedSecrets(new MasterKey('sk-master-a'), 8);
    const b = new PresentedSecrets(new MasterKey('sk-master-b'), 8);
    expect(a.of('sk-master-a').master).toBe(true);
    expect(b.of('sk-master-a').master).toBe(false);
    expect(b.of('sk-master-b').master).toBe(true);
    expect(a.of('sk-master-b').master).toBe(false);
  });
});

describe('calls admitted in one tick from a lease', () => {
  it('a burst admitted synchronously is charged exactly, and a block between two bursts refuses the second', async () => {
    const s = await setup();
    const { key, token } = await s.generate({ max_budget: 100 });
    await warm(s, key);
    // 200 admissions started in the same tick: none waits on another.
    const first = await Promise.all(Array.from({ length: 200 }, () => s.admit(key)));
    expect(first.every((o) => o.status === 200)).toBe(true);
    // Blocked while those 200 are still in flight...
    expect((await manage(s.guard, MASTER, 'POST', '/key/block', { key })).status).toBe(200);
    const second = await Promise.all(Array.from({ length: 200 }, () => s.admit(key)));
    expect(second.map((o) => o.status)).toEqual(Array(200).fill(401));
    // ...the calls admitted before the block finish and are charged, each its own cost.
    await Promise.all(first.map((o) => finish(o.call!)));
    await s.guard.close();
    expect(await s.keyState(token)).toMatchObject({ spendNano: 220 * CALL_NANO, reservedNano: 0 });
  });

  it('never admits past a cap lowered near it, whatever is admitted at once: spend stays within it', async () => {
    const s = await setup();
    const { key, token } = await s.generate({ max_budget: 50 });
    await warm(s, key);
    await s.guard.flush();
    expect((await s.keyState(token)).spendNano).toBe(20 * CALL_NANO);
    // Another process lowers the cap to room for about 40 calls of 1 prompt and 100 output tokens
    // (2,500 + 1,000,000 nano-dollars); a second later the lease admits nothing more from memory.
    const cap = 20 * CALL_NANO + 40 * 1_002_500;
    await s.storage.updateBudget({ kind: 'key', id: token }, { maxBudgetNano: cap }, new Date(s.clock.now));
    s.clock.now += 1_000;
    // 300 admissions started in one tick; each admitted call is answered at once at its output cap (the
    // guard may have lowered it in the body near the cap) and finished, so the ones waiting can go on.
    let spent = 20 * CALL_NANO;
    let served = 0;
    const statuses = await Promise.all(
      Array.from({ length: 300 }, async () => {
        const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 };
        const out = await s.guard.admit({
          method: 'POST',
          path: '/chat/completions',
          header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
          body,
        });
        if (!out.ok) return out.response.status;
        const output = body.max_tokens;
        expect(output).toBeLessThanOrEqual(100);
        out.call.tap.begin(200, 'application/json');
        out.call.tap.write(
          JSON.stringify({ model: 'gpt-4o', usage: { prompt_tokens: 1, completion_tokens: output } }),
        );
        await out.call.finish();
        spent += 2_500 + output * 10_000;
        served += 1;
        return 200;
      }),
    );
    expect(statuses.filter((x) => x !== 200 && x !== 429)).toEqual([]);
    expect(served).toBeGreaterThan(0);
    expect(served).toBeLessThanOrEqual(40);
    await s.guard.close();
    const end = await s.keyState(token);
    expect(end).toMatchObject({ spendNano: spent, reservedNano: 0 });
    expect(end.spendNano).toBeLessThanOrEqual(cap);
  });
});
