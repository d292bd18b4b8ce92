import { createSpendGuard, MemoryStorage } from '@spendguard/core';
import { describe, expect, it } from 'vitest';

const MASTER = 'sk-master-escrow-test';
/** gpt-4o: 9 prompt tokens at $2.5e-6 and 5 completion tokens at $1e-5 = 22,500 + 50,000 nano-dollars. */
const CALL_NANO = 72_500;

/** A guard on a MemoryStorage that counts its reservations and lease writes, on a clock the test moves. */
async function setup(maxBudget: number) {
  const clock = { now: Date.parse('2026-05-04T10:00:00.000Z') };
  const storage = new MemoryStorage();
  const counts = { reserve: 0, setLease: 0 };
  const reserve = storage.reserve.bind(storage);
  const setLease = storage.setLease.bind(storage);
  storage.reserve = (input) => {
    if (!input.reservationId.startsWith('lease:')) counts.reserve += 1; // MemoryStorage opens a lease so
    return reserve(input);
  };
  storage.setLease = (input) => {
    counts.setLease += 1;
    return setLease(input);
  };
  const guard = createSpendGuard({
    storage,
    masterKey: MASTER,
    now: () => new Date(clock.now),
    reservationSweepMs: 0,
    logger: { warn: () => {}, error: () => {} },
  });
  const res = await guard.management.handle({
    method: 'POST',
    path: '/key/generate',
    query: new URLSearchParams(),
    header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
    body: JSON.stringify({ max_budget: maxBudget }),
  });
  const { key, token } = res!.body as { key: string; token: string };
  /** One call, answered and finished as an adapter does; the response status, or the refusal's. */
  const call = async (): Promise<number> => {
    const out = await guard.admit({
      method: 'POST',
      path: '/chat/completions',
      header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
      body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 },
    });
    if (!out.ok) return out.response.status;
    out.call.tap.begin(200, 'application/json');
    out.call.tap.write(
      JSON.stringify({ model: 'gpt-4o', usage: { prompt_tokens: 9, completion_tokens: 5 } }),
    );
    await out.call.finish();
    return 200;
  };
  const keyState = async () =>
    (await storage.getBudgets([{ kind: 'key', id: token }], new Date(clock.now)))[0]!;
  return { guard, storage, clock, counts, call, keyState, token };
}

describe('escrow admission in the guard', () => {
  it('admits a busy key from one lease instead of a reservation per call, its spend exact', async () => {
    const { guard, counts, call, keyState } = await setup(100);
    for (let i = 0; i < 20; i++) expect(await call()).toBe(200);
    // Calls 1 to 7 reserve their own; the 8th sees 8 calls in a second and opens the lease, which
    // admits it and the 12 after it in memory.
    expect(counts).toEqual({ reserve: 7, setLease: 1 });
    await guard.flush();
    const during = await keyState();
    expect(during.spendNano).toBe(20 * CALL_NANO);
    expect(during.reservedNano).toBeGreaterThan(0); // the lease, still held
    await guard.close();
    expect(await keyState()).toMatchObject({ spendNano: 20 * CALL_NANO, reservedNano: 0 });
  });

  it('stops admitting from memory within 1 s of a budget lowered by another process', async () => {
    const { storage, clock, counts, call, token, guard } = await setup(100);
    for (let i = 0; i < 8; i++) expect(await call()).toBe(200);
    expect(counts.setLease).toBe(1);
    // Another process (this one hears nothing) lowers the cap to what was spent: 8 calls.
    await storage.updateBudget(
      { kind: 'key', id: token },
      { maxBudgetNano: 8 * CALL_NANO },
      new Date(clock.now),
    );
    // Within the lease's second a call may still come from it...
    clock.now += 999;
    expect(await call()).toBe(200);
    // ...but a second after the lease was granted, none does: the budget refuses.
    clock.now += 1;
    expect(await call()).toBe(429);
    await guard.close();
  });

  it('keeps a reservation per call near a cap, however busy the key', async () => {
    // $1 is room for under 8,192 worst cases of these calls (about $0.001 each): no lease.
    const { guard, counts, call, keyState } = await setup(1);
    for (let i = 0; i < 20; i++) expect(await call()).toBe(200);
    expect(counts).toEqual({ reserve: 20, setLease: 0 });
    await guard.close();
    expect(await keyState()).toMatchObject({ spendNano: 20 * CALL_NANO, reservedNano: 0 });
  });

  it('keeps a reservation per call with escrow: false', async () => {
    const storage = new MemoryStorage();
    let leases = 0;
    const setLease = storage.setLease.bind(storage);
    storage.setLease = (input) => {
      leases += 1;
      return setLease(input);
    };
    const guard = createSpendGuard({ storage, masterKey: MASTER, escrow: false, reservationSweepMs: 0 });
    const res = await guard.management.handle({
      method: 'POST',
      path: '/key/generate',
      query: new URLSearchParams(),
      header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
      body: JSON.stringify({ max_budget: 10 }),
    });
    const { key } = res!.body as { key: string };
    for (let i = 0; i < 12; i++) {
      const out = await guard.admit({
        method: 'POST',
        path: '/chat/completions',
        header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
        body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 },
      });
      expect(out.ok).toBe(true);
      if (out.ok) await out.call.finish();
    }
    expect(leases).toBe(0);
    await guard.close();
  });
});
