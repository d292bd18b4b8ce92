import { createSpendGuard, type EnforcementMode, MemoryStorage } from '@spendguard/core';
import { describe, expect, it } from 'vitest';

const MASTER = 'sk-master-guard-test';

async function setup(options: { enforcement?: EnforcementMode; maxBudget: number }) {
  let clock = new Date('2026-05-04T10:00:00.000Z');
  const storage = new MemoryStorage();
  const guard = createSpendGuard({
    storage,
    masterKey: MASTER,
    now: () => clock,
    reservationTtlMs: 60_000,
    reservationSweepMs: 0,
    enforcement: options.enforcement,
    logger: { warn: () => {}, error: () => {} },
  });
  const res = await guard.management.handle({
    method: 'POST',
    path: '/key/generate',
    query: new URLSearchParams(),
    header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
    body: JSON.stringify({ max_budget: options.maxBudget }),
  });
  const { key, token } = res!.body as { key: string; token: string };
  const admit = (maxTokens: number) =>
    guard.admit({
      method: 'POST',
      path: '/chat/completions',
      header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
      body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: maxTokens },
    });
  const keyState = async () => (await storage.getBudgets([{ kind: 'key', id: token }], clock))[0]!;
  return {
    guard,
    storage,
    admit,
    keyState,
    advance: (ms: number) => (clock = new Date(clock.getTime() + ms)),
  };
}

describe('reservations left unsettled (the process died mid-call)', () => {
  it('are charged at their estimate after the TTL, flagged, and a late settle adds nothing', async () => {
    const { guard, storage, admit, keyState, advance } = await setup({ maxBudget: 10 });
    const out = await admit(1000);
    expect(out.ok).toBe(true);
    const reserved = (await keyState()).reservedNano;
    expect(reserved).toBeGreaterThan(10_000_000); // 1000 output tokens of gpt-4o: at least $0.01
    advance(59_999);
    expect(await guard.sweepExpiredReservations()).toBe(0);
    advance(1);
    expect(await guard.sweepExpiredReservations()).toBe(1);
    expect(await keyState()).toMatchObject({ spendNano: reserved, reservedNano: 0 });
    const [log] = await storage.querySpendLogs({});
    expect(log).toMatchObject({ spendNano: reserved, estimated: true, status: 'failure', model: 'gpt-4o' });
    expect(log!.metadata).toMatchObject({ expired_reservation: true });
    if (out.ok) {
      out.call.tap.begin(200, 'application/json');
      out.call.tap.write(
        JSON.stringify({ model: 'gpt-4o', usage: { prompt_tokens: 9, completion_tokens: 5 } }),
      );
      await out.call.finish();
    }
    expect((await keyState()).spendNano).toBe(reserved);
    expect(await storage.querySpendLogs({})).toHaveLength(1);
  });
});

describe('enforcement modes', () => {
  // gpt-4o, 100 output tokens: a worst case of about $0.0012, over a $0.001 budget.
  it.each([
    ['strict', false],
    ['shrink', true],
    ['soft', true],
  ] as const)('%s admits a call whose worst case exceeds the budget: %s', async (enforcement, admitted) => {
    const { admit } = await setup({ enforcement, maxBudget: 0.001 });
    const out = await admit(100);
    expect(out.ok).toBe(admitted);
    if (!out.ok) expect(out.response.status).toBe(429);
  });

  it('shrink stops admitting once calls in flight cover the budget; soft looks at recorded spend only', async () => {
    const shrink = await setup({ enforcement: 'shrink', maxBudget: 0.001 });
    expect((await shrink.admit(100)).ok).toBe(true);
    expect((await shrink.admit(100)).ok).toBe(false);
    const soft = await setup({ enforcement: 'soft', maxBudget: 0.001 });
    expect((await soft.admit(100)).ok).toBe(true);
    expect((await soft.admit(100)).ok).toBe(true);
  });
});

describe('a strict call that waited for budget', () => {
  it('gets the whole TTL from when its reservation is written, not from when the call began', async () => {
    // $0.015: one call's worst case ($0.0100x) fits, a second fits only once the first settles.
    const { guard, storage, admit, keyState, advance } = await setup({ maxBudget: 0.015 });
    const first = await admit(1000);
    expect(first.ok).toBe(true);
    // Told when the store refuses the second call: from then on it waits for the first one's settlement.
    const refused = new Promise<void>((resolve) => {
      const reserve = storage.reserve.bind(storage);
      storage.reserve = async (input) => {
        const result = await reserve(input);
        if (!result.ok) resolve();
        return result;
      };
    });
    const second = admit(1000);
    await refused;
    advance(50_000); // the first call runs 50 s (of the 60 s TTL) while the second waits
    if (first.ok) {
      first.call.tap.begin(200, 'application/json');
      first.call.tap.write(
        JSON.stringify({ model: 'gpt-4o', usage: { prompt_tokens: 9, completion_tokens: 5 } }),
      );
      await first.call.finish();
    }
    const out = await second;
    expect(out.ok).toBe(true);
    const reserved = (await keyState()).reservedNano;
    expect(reserved).toBeGreaterThan(10_000_000);
    // 59.999 s after its reservation (109.999 s after the call began): still the call's own.
    advance(59_999);
    expect(await guard.sweepExpiredReservations()).toBe(0);
    advance(1);
    expect(await guard.sweepExpiredReservations()).toBe(1);
    const expired = (await storage.querySpendLogs({})).filter((l) => l.metadata?.expired_reservation);
    expect(expired).toHaveLength(1);
    expect(expired[0]!.spendNano).toBe(reserved);
  });
});
