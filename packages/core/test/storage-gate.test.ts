// The storage gate bounds every storage call by `timeoutMs` with one timer for all the calls in flight:
// each call still times out on its own deadline, and calls that answer are untouched by the others.
// Time is vitest's fake clock, moved by the tests: a deadline is checked to the millisecond.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SpendGuardError } from '../src/errors.js';
import { MemoryStorage } from '../src/index.js';
import type { SettleInput, SpendStorage } from '../src/storage/storage-contract.js';
import { StorageGate, type StorageGateOptions } from '../src/storage/storage-gate.js';
import { spendLogFixture } from '../src/testing/storage-conformance.js';

const silent = { warn() {}, error() {} };
const TIMEOUT = 60;

function gate(storage: SpendStorage, opened = true, options: Partial<StorageGateOptions> = {}) {
  return new StorageGate(
    () => Promise.resolve(storage),
    { timeoutMs: TIMEOUT, maxPendingSettlements: 10, settleBatchMs: 0, logger: silent, ...options },
    () => (opened ? storage : null),
  );
}

/**
 * A logger that keeps what it was given, one `warn: ...` or `error: ...` line each; an error's own
 * error follows ` | ` as its message.
 */
function recordingLogger() {
  const lines: string[] = [];
  return {
    lines,
    warn: (m: string) => lines.push(`warn: ${m}`),
    error: (m: string, e?: unknown) =>
      lines.push(`error: ${m}${e === undefined ? '' : ` | ${e instanceof Error ? e.message : String(e)}`}`),
  };
}

/**
 * MemoryStorage whose `settle` fails while `down` is set (and always for the ids in `failing`), and which notes the fake-clock time (ms since
 * it was made) and request id of every settle it is asked for.
 */
function flaky() {
  const storage = new MemoryStorage();
  const state = { down: true, failing: new Set<string>(), attempts: [] as string[] };
  const settle = storage.settle.bind(storage);
  const t0 = Date.now();
  storage.settle = (input) => {
    state.attempts.push(`${input.log.requestId}@${Date.now() - t0}`);
    return state.down || state.failing.has(input.log.requestId)
      ? Promise.reject(new Error('unavailable'))
      : settle(input);
  };
  return { storage, state };
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
    const log = recordingLogger();
    const g = gate(storage, true, { logger: log });
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
    expect(log.lines).toEqual([
      // settleInput costs 5 nano-dollars; the store's own error follows.
      'error: the store refused the spend of request poison ($5e-9) for a value it carries; not retried: its reservation will be charged at its estimate after the TTL | NUL',
    ]);
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

  it('drops the oldest pending settlement when the queue is full, logs it, and writes the rest later', async () => {
    const { storage, state } = flaky();
    const log = recordingLogger();
    const g = gate(storage, true, { logger: log });
    const ids = Array.from({ length: 11 }, (_, i) => `s${i}`);
    for (const id of ids) expect(await g.settle(settleInput(id))).toBe(false);
    // maxPendingSettlements is 10: the 11th pushes out s0, the oldest.
    expect(g.stats).toEqual({
      storageErrors: 11,
      pendingSettlements: 10,
      settlementsRecovered: 0,
      settlementsDropped: 1,
      settlementsRefused: 0,
    });
    expect(log.lines).toEqual([
      // The storage's own error, not the gate's STORAGE_UNAVAILABLE wrapping it.
      'error: could not record the spend of request s0; keeping it and retrying (spendguard pending settlements: 1) | unavailable',
      // settleInput costs 5 nano-dollars: $5e-9.
      'error: pending settlement queue full (10): dropped request s0 ($5e-9); its reservation will be charged at its estimate after the TTL',
    ]);
    state.down = false;
    await g.drain();
    expect(g.stats).toMatchObject({ pendingSettlements: 0, settlementsRecovered: 10, settlementsDropped: 1 });
    expect(log.lines.at(-1)).toBe('warn: storage is back: every pending settlement is written');
    const logged = (await storage.querySpendLogs({ limit: 20 })).map((l) => l.requestId).sort();
    expect(logged).toEqual(ids.slice(1).sort());
    // The retry timer the first failure set fires, finds nothing pending, and sets no other.
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('retries a pending settlement after 100 ms, doubling the wait up to 5 s, and from 100 ms again once written', async () => {
    const { storage, state } = flaky();
    const g = gate(storage);
    expect(await g.settle(settleInput('a'))).toBe(false);
    // Waits 100, 200, 400, 800, 1600, 3200, then 5000 (not 6400), 5000: attempts at their running sums.
    await vi.advanceTimersByTimeAsync(16_300);
    expect(state.attempts).toEqual([0, 100, 300, 700, 1500, 3100, 6300, 11_300, 16_300].map((t) => `a@${t}`));
    state.down = false;
    await vi.advanceTimersByTimeAsync(5_000); // written at 21,300: the wait goes back to 100 ms
    expect(g.stats).toMatchObject({ pendingSettlements: 0, settlementsRecovered: 1 });
    state.down = true;
    expect(await g.settle(settleInput('b'))).toBe(false);
    await vi.advanceTimersByTimeAsync(300);
    expect(state.attempts.slice(9)).toEqual(['a@21300', 'b@21300', 'b@21400', 'b@21600']);
  });

  it('waits 100 ms again after a drain that wrote a batch whole', async () => {
    const { storage, state } = flaky();
    const g = gate(storage);
    for (const id of ['a', 'b']) expect(await g.settle(settleInput(id))).toBe(false);
    // A failed head goes last: 'a' alone at 100, 'b' alone at 300; the wait is now 400.
    await vi.advanceTimersByTimeAsync(300);
    state.down = false;
    await vi.advanceTimersByTimeAsync(400); // at 700: 'a' alone, then the batch ['b']
    expect(g.stats).toMatchObject({ pendingSettlements: 0, settlementsRecovered: 2 });
    state.down = true;
    expect(await g.settle(settleInput('c'))).toBe(false);
    await vi.advanceTimersByTimeAsync(100);
    expect(state.attempts).toEqual(['a@0', 'b@0', 'a@100', 'b@300', 'a@700', 'b@700', 'c@700', 'c@800']);
  });

  it('a batch handed over early leaves no timer of its window behind', async () => {
    const { storage, state } = flaky();
    state.down = false;
    const g = gate(storage, true, { settleBatchMs: 1_000 });
    const first = g.settle(settleInput('a'));
    const urgent = g.settle(settleInput('b'), true, true); // hands 'a' over with it, now
    expect([await first, await urgent]).toEqual([true, true]);
    await vi.advanceTimersByTimeAsync(500);
    const late = g.settle(settleInput('c')); // its window ends at 1,500, not when 'a''s would have
    await vi.advanceTimersByTimeAsync(999);
    expect(state.attempts).toEqual(['a@0', 'b@0']);
    await vi.advanceTimersByTimeAsync(1);
    expect(await late).toBe(true);
    expect(state.attempts).toEqual(['a@0', 'b@0', 'c@1500']);
  });

  it('on shutdown, flush() keeps retrying until its deadline, then logs what is left and stops', async () => {
    const { storage, state } = flaky();
    const log = recordingLogger();
    const g = gate(storage, true, { logger: log });
    expect(await g.settle(settleInput('a'))).toBe(false);
    let flushed = false;
    // flush tries at 0 and 200 (its waits: the retry delay, 200, then what is left of the deadline, 700).
    const flushing = g.flush(900).then(() => (flushed = true));
    await vi.advanceTimersByTimeAsync(899);
    expect(flushed).toBe(false);
    const tried = state.attempts.length;
    expect(tried).toBeGreaterThan(2); // the first write, and flush's own tries
    await vi.advanceTimersByTimeAsync(1);
    expect(flushed).toBe(true);
    await flushing;
    expect(log.lines.at(-1)).toBe(
      'error: shutting down with 1 settlements unwritten; their reservations will be charged at their estimates after the TTL',
    );
    // Nothing retries after a flush gave up: the process is going away.
    await vi.advanceTimersByTimeAsync(60_000);
    expect(state.attempts).toHaveLength(tried);
  });

  it('on shutdown, flush() writes the waiting batch and the pending settlements once storage answers', async () => {
    const { storage, state } = flaky();
    const log = recordingLogger();
    const g = gate(storage, true, { logger: log, settleBatchMs: 1_000 });
    const first = g.settle(settleInput('a'));
    await g.flush(0); // the window of 1 s has not passed: flush hands 'a' over now
    expect(await first).toBe(false); // storage is down: 'a' is pending
    state.down = false;
    const second = g.settle(settleInput('b'));
    await g.flush(10_000); // no clock moves: it resolves as soon as both are written
    expect(await second).toBe(true);
    expect(g.stats).toMatchObject({ pendingSettlements: 0, settlementsRecovered: 1 });
    expect(log.lines.filter((l) => l.includes('shutting down'))).toEqual([]);
    // 'a' at once (not after the 1 s window), then 'b' handed over by the second flush, then 'a' retried.
    expect(state.attempts).toEqual(['a@0', 'b@0', 'a@0']);
  });

  it('tells onSettled of each settlement written, at once or late, but not of a repeat; its throw is logged', async () => {
    const { storage, state } = flaky();
    const log = recordingLogger();
    const seen: string[] = [];
    const onSettled = (input: SettleInput, result: { applied: boolean }) => {
      if (input.log.requestId === 'c') throw new Error('sink broke');
      seen.push(`${input.log.requestId}:${result.applied}`);
    };
    const g = gate(storage, true, { logger: log, onSettled });
    state.down = false;
    expect(await g.settle(settleInput('a'))).toBe(true);
    expect(await g.settle(settleInput('a'))).toBe(true); // already settled: applied false
    state.down = true;
    expect(await g.settle(settleInput('b'))).toBe(false);
    expect(seen).toEqual(['a:true']);
    state.down = false;
    await g.drain();
    expect(seen).toEqual(['a:true', 'b:true']);
    expect(await g.settle(settleInput('c'))).toBe(true);
    expect(log.lines).toEqual([
      'error: could not record the spend of request b; keeping it and retrying (spendguard pending settlements: 1) | unavailable',
      'warn: storage is back: every pending settlement is written',
      'error: after settling request c | sink broke',
    ]);
  });

  it("a refused value's 400 quotes the first line of the innermost cause, at most 200 characters", async () => {
    class Poison extends Error {}
    const storage = Object.assign(new MemoryStorage(), { isInputError: (e: unknown) => e instanceof Poison });
    const g = gate(storage);
    const nested = new Poison('wrapper', {
      cause: new Error('driver', { cause: new Error('bad byte\nat 3') }),
    });
    const refused = await g.call('refused', () => Promise.reject(nested)).catch((e: unknown) => e);
    expect((refused as Error).message).toBe(
      'Invalid request: storage refused a value of this request (bad byte)',
    );
    expect((refused as Error).cause).toBe(nested);
    const long = await g
      .call('long', () => Promise.reject(new Poison('x'.repeat(300))))
      .catch((e: unknown) => e);
    expect((long as Error).message).toBe(
      `Invalid request: storage refused a value of this request (${'x'.repeat(200)})`,
    );
    const notError = await g
      .call('odd', () => Promise.reject(Object.assign(new Poison(), { cause: 'a string cause' })))
      .catch((e: unknown) => e);
    expect((notError as Error).message).toBe('Invalid request: storage refused a value of this request ()');
  });

  it('leaves no timer once every call has answered, in any order, and arms the next at the deadline', async () => {
    const g = gate(new MemoryStorage());
    const a = deferred<number>();
    const b = deferred<number>();
    const first = g.call('a', () => a.promise);
    const second = g.call('b', () => b.promise);
    expect(vi.getTimerCount()).toBe(1); // one timer watches both
    b.resolve(2); // the later call answers first
    expect(await second).toBe(2);
    a.resolve(1);
    expect(await first).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
    const hung = g.call('hung', () => new Promise<number>(() => {})).catch((e: unknown) => e);
    const t0 = Date.now();
    await vi.advanceTimersToNextTimerAsync();
    expect(Date.now() - t0).toBe(TIMEOUT);
    expect(((await hung) as SpendGuardError).code).toBe('STORAGE_UNAVAILABLE');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('keeps the deadlines of later calls when a call answers after it timed out', async () => {
    const g = gate(new MemoryStorage());
    const late = deferred<number>();
    const outcomes: string[] = [];
    const first = g.call('late', () => late.promise).catch(() => outcomes.push('late'));
    await vi.advanceTimersByTimeAsync(TIMEOUT / 2);
    void g.call('hung', () => new Promise<number>(() => {})).catch(() => outcomes.push('hung'));
    await vi.advanceTimersByTimeAsync(TIMEOUT / 2);
    await first;
    late.resolve(1); // the gate gave up on it already
    await vi.advanceTimersByTimeAsync(TIMEOUT / 2);
    expect(outcomes).toEqual(['late', 'hung']);
  });

  it('a call that fails before storage is open is a storage failure with its cause', async () => {
    const storage = Object.assign(new MemoryStorage(), { isInputError: () => false });
    const g = gate(storage, false);
    const failed = await g
      .call('down', () => Promise.reject(new Error('connection refused')))
      .catch((e: unknown) => e);
    expect(failed).toMatchObject({
      code: 'STORAGE_UNAVAILABLE',
      message: 'spendguard could not reach its storage; try again',
    });
    expect(String((failed as Error).cause)).toBe('Error: connection refused');
  });

  it('names a reservation in its timeout, and logs a late reservation it could not release', async () => {
    const storage = new MemoryStorage();
    const late = deferred<void>();
    const reserve = storage.reserve.bind(storage);
    storage.reserve = async (input) => {
      await late.promise;
      return reserve(input);
    };
    const asked = deferred<void>();
    storage.release = async () => {
      asked.resolve();
      throw new Error('connection lost');
    };
    const log = recordingLogger();
    const g = gate(storage, true, { logger: log });
    const failed = g.reserve(reserveInput('r1', 1)).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(TIMEOUT);
    expect(String(((await failed) as Error).cause)).toBe(
      'Error: storage did not answer reserve within 60 ms',
    );
    late.resolve();
    await asked.promise;
    await vi.advanceTimersByTimeAsync(0);
    expect(log.lines).toEqual(['error: could not release abandoned reservation r1 | connection lost']);
  });

  it('logs the timeout of a settlement it keeps, naming the settlement', async () => {
    const storage = new MemoryStorage();
    storage.settle = () => new Promise(() => {});
    const log = recordingLogger();
    const g = gate(storage, true, { logger: log });
    const kept = g.settle(settleInput('slow'));
    await vi.advanceTimersByTimeAsync(TIMEOUT);
    expect(await kept).toBe(false);
    expect(log.lines).toEqual([
      'error: could not record the spend of request slow; keeping it and retrying (spendguard pending settlements: 1) | storage did not answer settle within 60 ms',
    ]);
  });

  it('drains nothing when nothing is pending', async () => {
    const g = gate(new MemoryStorage());
    await g.drain();
    expect(g.stats).toEqual({
      storageErrors: 0,
      pendingSettlements: 0,
      settlementsRecovered: 0,
      settlementsDropped: 0,
      settlementsRefused: 0,
    });
  });

  it('after a drain that left one behind, backs off and does not say storage is back', async () => {
    const { storage, state } = flaky();
    const log = recordingLogger();
    const g = gate(storage, true, { logger: log });
    for (const id of ['h', 'x', 'y']) expect(await g.settle(settleInput(id))).toBe(false);
    state.down = false;
    state.failing.add('x');
    await g.drain(); // 'h' alone first, then 'x' and 'y' together: 'x' fails again
    expect(g.stats).toMatchObject({ pendingSettlements: 1, settlementsRecovered: 2 });
    // The retry timer set by the first failure fires at 100; the wait then is 400 (100 doubled by this
    // drain's failure, then by that retry's): the next try is at 500.
    await vi.advanceTimersByTimeAsync(500);
    expect(state.attempts).toEqual(['h@0', 'x@0', 'y@0', 'h@0', 'x@0', 'y@0', 'x@100', 'x@500']);
    expect(log.lines.filter((l) => l.startsWith('warn'))).toEqual([]);
  });

  it('writes more than 256 pending settlements 256 at a time, and stops at a batch that fails whole', async () => {
    const { storage, state } = flaky();
    let inFlight = 0;
    let most = 0;
    const settle = storage.settle;
    storage.settle = (input) => {
      most = Math.max(most, ++inFlight);
      return settle(input).finally(() => inFlight--);
    };
    const g = gate(storage, true, { maxPendingSettlements: 1_000 });
    const ids = Array.from({ length: 300 }, (_, i) => `p${i}`);
    for (const id of ids) await g.settle(settleInput(id));
    state.down = false;
    state.failing = new Set(ids.slice(1, 257)); // the whole first batch after the head
    most = 0;
    await g.drain();
    // 'p0' alone, then p1..p256 together, all failing: the round stops there (p257.. are not tried).
    expect(g.stats).toMatchObject({ pendingSettlements: 299, settlementsRecovered: 1 });
    expect(most).toBe(256);
    expect(state.attempts).toHaveLength(300 + 1 + 256);
    // Next round, only 'p2' fails: 'p1' alone, then p2..p257 (p2 fails and stays), then p258..p299.
    state.failing = new Set(['p2']);
    most = 0;
    await g.drain();
    expect(g.stats).toMatchObject({ pendingSettlements: 1, settlementsRecovered: 299 });
    expect(most).toBe(256);
    expect(state.attempts).toHaveLength(557 + 1 + 298);
  });

  it('counts a pending settlement that the store refuses on a retry as refused, and stops retrying it', async () => {
    class Poison extends Error {}
    const { storage, state } = flaky();
    Object.assign(storage, { isInputError: (e: unknown) => e instanceof Poison });
    const g = gate(storage);
    expect(await g.settle(settleInput('p'))).toBe(false);
    const settle = storage.settle;
    storage.settle = (input) => {
      settle(input).catch(() => {}); // only to note the attempt: the store's answer is the one below
      return Promise.reject(new Poison('NUL'));
    };
    await g.drain();
    expect(g.stats).toMatchObject({ pendingSettlements: 0, settlementsRefused: 1, settlementsRecovered: 0 });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(state.attempts).toEqual(['p@0', 'p@0']);
  });

  it('on shutdown, flush() returns as soon as storage is back', async () => {
    const { storage, state } = flaky();
    const g = gate(storage);
    expect(await g.settle(settleInput('a'))).toBe(false);
    setTimeout(() => (state.down = false), 150);
    let flushed = false;
    void g.flush(10_000).then(() => (flushed = true));
    // flush tries at 0 and then waits the retry delay, 200 ms (doubled by that failure): written at 200.
    await vi.advanceTimersByTimeAsync(199);
    expect(flushed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(flushed).toBe(true);
    expect(g.stats).toMatchObject({ pendingSettlements: 0, settlementsRecovered: 1 });
  });
});

describe('StorageGate: settlement batches', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** MemoryStorage that notes its reserve and settle calls in order. */
  function ordered() {
    const storage = new MemoryStorage();
    const calls: string[] = [];
    const reserve = storage.reserve.bind(storage);
    const settle = storage.settle.bind(storage);
    storage.reserve = (input) => {
      calls.push(`reserve:${input.reservationId}`);
      return reserve(input);
    };
    storage.settle = (input) => {
      calls.push(`settle:${input.log.requestId}`);
      return settle(input);
    };
    return { storage, calls };
  }

  it('waits the window unless urgent; by default a settlement may raise the count, so it goes first', async () => {
    const { storage, calls } = ordered();
    const g = gate(storage, true, { settleBatchMs: 1_000 });
    const a = g.settle(settleInput('a'));
    await vi.advanceTimersByTimeAsync(999);
    expect(calls).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(await a).toBe(true);
    expect(calls).toEqual(['settle:a']);
    // Defaults: may raise, not urgent. A reservation writes it first, in the same turn.
    const b = g.settle(settleInput('b'));
    expect((await g.reserve(reserveInput('r1', 1))).ok).toBe(true);
    expect(calls).toEqual(['settle:a', 'settle:b', 'reserve:r1']);
    expect(await b).toBe(true);
    // One that cannot raise the count waits behind the next reservation (nothing before it may raise).
    const c = g.settle(settleInput('c'), false);
    expect((await g.reserve(reserveInput('r2', 1))).ok).toBe(true);
    expect(calls).toEqual(['settle:a', 'settle:b', 'reserve:r1', 'reserve:r2']);
    // Urgent: handed over now, with what waits.
    const d = g.settle(settleInput('d'), false, true);
    expect(calls.slice(4)).toEqual(['settle:c', 'settle:d']);
    expect([await c, await d]).toEqual([true, true]);
  });

  it('hands a batch over as soon as it holds 256 settlements', async () => {
    const { storage, calls } = ordered();
    const g = gate(storage, true, { settleBatchMs: 1_000 });
    const settled = Array.from({ length: 255 }, (_, i) => g.settle(settleInput(`s${i}`), false));
    expect(calls).toHaveLength(0);
    settled.push(g.settle(settleInput('s255'), false));
    expect(calls).toHaveLength(256);
    expect(new Set(await Promise.all(settled))).toEqual(new Set([true]));
  });

  it('hands a reservation to open storage in the turn it is asked for, after the settlements that may raise', () => {
    const { storage, calls } = ordered();
    const g = gate(storage, true, { settleBatchMs: 1_000 });
    void g.settle(settleInput('a'));
    void g.reserve(reserveInput('r1', 1));
    // No await: both reached the store in this turn (one SQLite transaction), the settlement first.
    expect(calls).toEqual(['settle:a', 'reserve:r1']);
  });

  it('times out each settlement of a batch its storage does not answer, alone; a late answer counts once', async () => {
    const storage = new MemoryStorage();
    const settle = storage.settle.bind(storage);
    const late = deferred<void>();
    storage.settle = async (input) => {
      if (input.log.requestId === 'late') await late.promise;
      return settle(input);
    };
    const log = recordingLogger();
    const seen: string[] = [];
    const onSettled = (input: SettleInput) => void seen.push(input.log.requestId);
    const g = gate(storage, true, { settleBatchMs: 1_000, logger: log, onSettled });
    const answers: Record<string, boolean> = {};
    void g.settle(settleInput('quick'), false).then((w) => (answers.quick = w));
    void g.settle(settleInput('late'), false, true).then((w) => (answers.late = w)); // urgent: both go now
    await vi.advanceTimersByTimeAsync(TIMEOUT - 1);
    expect(answers).toEqual({ quick: true });
    await vi.advanceTimersByTimeAsync(1);
    expect(answers).toEqual({ quick: true, late: false });
    expect(g.stats).toMatchObject({ storageErrors: 1, pendingSettlements: 1 });
    expect(log.lines).toEqual([
      'error: could not record the spend of request late; keeping it and retrying (spendguard pending settlements: 1) | storage did not answer settle within 60 ms',
    ]);
    // Its answer after the timeout is not a second answer: the settlement stays kept, to be retried.
    late.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toEqual(['quick']);
    expect(g.stats).toMatchObject({ storageErrors: 1, pendingSettlements: 1 });
  });

  it('fails alone a settlement of a batch whose store throws at once', async () => {
    const storage = new MemoryStorage();
    const settle = storage.settle.bind(storage);
    storage.settle = (input) => {
      if (input.log.requestId === 'bad') throw new Error('broke');
      return settle(input);
    };
    const g = gate(storage, true, { settleBatchMs: 1_000 });
    const good = g.settle(settleInput('good'), false);
    const bad = g.settle(settleInput('bad'), false, true);
    expect([await good, await bad]).toEqual([true, false]);
    expect(g.stats).toMatchObject({ storageErrors: 1, pendingSettlements: 1 });
  });

  it('writes a batch handed over before storage is open once it opens', async () => {
    const { storage, calls } = ordered();
    const g = gate(storage, false, { settleBatchMs: 1_000 });
    const a = g.settle(settleInput('a'), false);
    const b = g.settle(settleInput('b'), false, true);
    expect([await a, await b]).toEqual([true, true]);
    expect(calls).toEqual(['settle:a', 'settle:b']);
    expect((await storage.querySpendLogs({})).map((l) => l.requestId).sort()).toEqual(['a', 'b']);
  });

  it('judges a refused reservation again after a settlement still being written', async () => {
    const storage = new MemoryStorage();
    await storage.insert([
      {
        type: 'budget',
        scope: GLOBAL,
        budget: { maxBudgetNano: 1_000, budgetDuration: null, budgetResetAt: null, softBudgetNano: null },
      } as any,
    ]);
    const g = gate(storage, true, { settleBatchMs: 1_000 });
    expect((await g.reserve(reserveInput('r1', 800, [GLOBAL]))).ok).toBe(true);
    const held = deferred<void>();
    const settle = storage.settle.bind(storage);
    storage.settle = async (input) => {
      await held.promise;
      return settle(input);
    };
    // r1 cost 100 of its 800: urgent, so it is being written (not waiting) when r2 comes.
    const written = g.settle(
      { ...settleInput('r1'), reservationId: 'r1', scopes: [GLOBAL], costNano: 100 },
      false,
      true,
    );
    const second = g.reserve(reserveInput('r2', 500, [GLOBAL])); // 800 + 500 > 1000 as written now
    await vi.advanceTimersByTimeAsync(0);
    held.resolve();
    expect(await written).toBe(true);
    expect((await second).ok).toBe(true); // 100 + 500 <= 1000
  });
});

const GLOBAL = { kind: 'global', id: 'proxy' } as const;

function reserveInput(reservationId: string, amountNano: number, scopes: Array<typeof GLOBAL> = []) {
  const now = new Date();
  return { reservationId, scopes: [...scopes], amountNano, now, expiresAt: new Date(now.getTime() + 60_000) };
}

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
