// The storage gate bounds every storage call by `timeoutMs` with one timer for all the calls in flight:
// each call still times out on its own deadline, and calls that answer are untouched by the others.
// Time is vitest's fake clock, moved by the tests: a deadline is checked to the millisecond.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SpendGuardError } from '../src/errors.js';
import { MemoryStorage } from '../src/index.js';
import type { SettleInput, SpendStorage } from '../src/storage/storage-contract.js';
import { StorageGate } from '../src/storage/storage-gate.js';
import { spendLogFixture } from '../src/testing/storage-conformance.js';

const silent = { warn() {}, error() {} };
const TIMEOUT = 60;

function gate(storage: SpendStorage, opened = true) {
  return new StorageGate(
    () => Promise.resolve(storage),
    { timeoutMs: TIMEOUT, maxPendingSettlements: 10, settleBatchMs: 0, logger: silent as any },
    () => (opened ? storage : null),
  );
}

/** A promise and its resolver, to answer a storage call when the test says so. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('StorageGate', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fails a call that does not answer within the timeout, and only that call', async () => {
    const g = gate(new MemoryStorage());
    const never = new Promise<number>(() => {});
    const slow = deferred<number>();
    let error: unknown = null;
    const hung = g.call('hung', () => never).catch((e: unknown) => (error = e));
    const answered = g.call('answered', () => slow.promise);
    const quick = await g.call('quick', async () => 7);
    expect(quick).toBe(7);
    slow.resolve(3);
    expect(await answered).toBe(3);
    await vi.advanceTimersByTimeAsync(TIMEOUT - 1);
    expect(error).toBeNull(); // not before its deadline
    await vi.advanceTimersByTimeAsync(1);
    await hung;
    expect(error).toBeInstanceOf(SpendGuardError);
    expect((error as SpendGuardError).code).toBe('STORAGE_UNAVAILABLE');
    expect(String((error as Error).cause)).toContain('did not answer hung within 60 ms');
    expect(g.stats.storageErrors).toBe(1);
  });

  it('times each hung call out on its own deadline, started at different times', async () => {
    const g = gate(new MemoryStorage());
    const never = () => new Promise<number>(() => {});
    const outcomes: string[] = [];
    const first = g.call('first', never).catch(() => outcomes.push('first'));
    await vi.advanceTimersByTimeAsync(TIMEOUT / 2);
    const second = g.call('second', never).catch(() => outcomes.push('second'));
    await vi.advanceTimersByTimeAsync(TIMEOUT / 2);
    await first;
    // The first deadline has passed; the second, started later, has not.
    expect(outcomes).toEqual(['first']);
    await vi.advanceTimersByTimeAsync(TIMEOUT / 2 - 1);
    expect(outcomes).toEqual(['first']);
    await vi.advanceTimersByTimeAsync(1);
    await second;
    expect(outcomes).toEqual(['first', 'second']);
    // The gate goes on working after its timer emptied.
    expect(await g.call('after', async () => 'ok')).toBe('ok');
  });

  it('turns a synchronous throw into a storage failure, and passes conflicts and refusals through', async () => {
    const g = gate(new MemoryStorage());
    const thrown = await g
      .call('throws', () => {
        throw new Error('boom');
      })
      .catch((e: unknown) => e);
    expect((thrown as SpendGuardError).code).toBe('STORAGE_UNAVAILABLE');
    const refused = new SpendGuardError('BUDGET_EXCEEDED', 'no');
    expect(await g.call('refuses', async () => Promise.reject(refused)).catch((e: unknown) => e)).toBe(
      refused,
    );
  });

  it('waits for storage to open when it is not open yet', async () => {
    const storage = new MemoryStorage();
    const g = gate(storage, false);
    expect(await g.call('open first', async (s) => s === storage)).toBe(true);
  });

  it('releases a reservation that lands after its call timed out', async () => {
    const storage = new MemoryStorage();
    await storage.insert([
      {
        type: 'budget',
        scope: { kind: 'global', id: 'proxy' },
        budget: { maxBudgetNano: 1_000, budgetDuration: null, budgetResetAt: null, softBudgetNano: null },
      } as any,
    ]);
    const late = deferred<void>();
    const reserve = storage.reserve.bind(storage);
    let landed = false;
    storage.reserve = async (input) => {
      await late.promise;
      const result = await reserve(input);
      landed = true;
      return result;
    };
    const release = storage.release.bind(storage);
    const released = deferred<boolean>();
    storage.release = async (id) => {
      const done = await release(id);
      released.resolve(done);
      return done;
    };
    const g = gate(storage);
    const scopes = [{ kind: 'global', id: 'proxy' }] as const;
    const now = new Date();
    const failed = g
      .reserve({
        reservationId: 'r1',
        scopes: [...scopes],
        amountNano: 400,
        now,
        expiresAt: new Date(now.getTime() + 60_000),
      })
      .catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(TIMEOUT);
    expect(((await failed) as SpendGuardError).code).toBe('STORAGE_UNAVAILABLE');
    late.resolve();
    // The reservation lands now, and the gate releases it: nothing stays reserved.
    expect(await released.promise).toBe(true);
    expect(landed).toBe(true);
    const [state] = await storage.getBudgets([...scopes], new Date());
    expect(state?.reservedNano).toBe(0);
    expect(await storage.release('r1')).toBe(false); // already released by the gate
  });

  it('answers a value the store refuses as a 400, never as a storage error, and never retries its settlement', async () => {
    class Poison extends Error {}
    const storage = Object.assign(new MemoryStorage(), { isInputError: (e: unknown) => e instanceof Poison });
    const settle = storage.settle.bind(storage);
    storage.settle = (input) =>
      input.log.requestId === 'poison' ? Promise.reject(new Poison('NUL')) : settle(input);
    const g = gate(storage);
    const refused = await g
      .call('refused', () => Promise.reject(new Poison('0x00 in a tag')))
      .catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'BAD_REQUEST', status: 400 });
    expect((refused as Error).message).toContain('0x00 in a tag');
    expect(await g.settle(settleInput('poison'))).toBe(false);
    expect(await g.settle(settleInput('fine'))).toBe(true);
    expect(g.stats).toEqual({
      storageErrors: 0,
      pendingSettlements: 0,
      settlementsRecovered: 0,
      settlementsDropped: 0,
      settlementsRefused: 1,
    });
    expect((await storage.querySpendLogs({ limit: 10 })).map((l) => l.requestId)).toEqual(['fine']);
  });

  it('never lets a pending settlement that keeps failing block those behind it', async () => {
    const storage = new MemoryStorage();
    let down = true;
    const settle = storage.settle.bind(storage);
    storage.settle = (input) =>
      down || input.log.requestId === 'stuck' ? Promise.reject(new Error('unavailable')) : settle(input);
    const g = gate(storage);
    for (const id of ['stuck', 'a', 'b']) expect(await g.settle(settleInput(id))).toBe(false);
    expect(g.stats.pendingSettlements).toBe(3);
    down = false;
    // The first round finds 'stuck' still failing and puts it last; the next writes 'a' and 'b'.
    await g.drain();
    await g.drain();
    expect(g.stats).toMatchObject({ pendingSettlements: 1, settlementsRecovered: 2 });
    const logged = (await storage.querySpendLogs({ limit: 10 })).map((l) => l.requestId).sort();
    expect(logged).toEqual(['a', 'b']);
  });
});

/** A settlement of a call that reserved nothing, on no scope: only its spend log is written. */
function settleInput(requestId: string): SettleInput {
  return {
    reservationId: `none-${requestId}`,
    scopes: [],
    costNano: 5,
    now: new Date(),
    log: spendLogFixture(requestId),
  };
}
