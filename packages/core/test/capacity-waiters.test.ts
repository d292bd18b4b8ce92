// Calls waiting for budget capacity (src/admission/capacity-waiters.ts), on vitest's fake timers (an
// injected clock: setTimeout and performance.now advance only when the test says so). The expected
// poll times are the documented ones worked by hand: 10 ms first, doubling, at most 250 ms, never past
// the deadline.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CapacityWaiters } from '../src/admission/capacity-waiters.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
});
afterEach(() => {
  vi.useRealTimers();
});

/** A wait whose settling can be read synchronously after the microtasks ran. */
function track(p: Promise<void>): { done: boolean } {
  const state = { done: false };
  void p.then(() => {
    state.done = true;
  });
  return state;
}

/** Advances the fake clock by `ms` and lets resolved promises run their callbacks. */
async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

describe('CapacityWaiters', () => {
  it.each([
    [0, 10],
    [1, 20],
    [3, 80],
    [4, 160],
    [5, 250], // 320 capped at 250
    [8, 250],
    [40, 250], // the exponent stops at 8: no overflow to Infinity
  ])('attempt %i polls after %i ms', async (attempt, ms) => {
    const waiters = new CapacityWaiters();
    const w = track(waiters.wait('key:a', 100, attempt, performance.now() + 10_000));
    expect(waiters.size).toBe(1);
    await advance(ms - 1);
    expect(w.done).toBe(false);
    await advance(1);
    expect(w.done).toBe(true);
    expect(waiters.size).toBe(0);
  });

  it('never waits past the deadline, and not at all when it has passed', async () => {
    const waiters = new CapacityWaiters();
    const near = track(waiters.wait('key:a', 100, 8, performance.now() + 30));
    await advance(29);
    expect(near.done).toBe(false);
    await advance(1);
    expect(near.done).toBe(true);

    const late = track(waiters.wait('key:a', 100, 0, performance.now() - 5));
    await advance(0);
    expect(late.done).toBe(true);
  });

  it('wakes a waiter as soon as its scope has freed what it needs, summed over settlements', async () => {
    const waiters = new CapacityWaiters();
    const a = track(waiters.wait('key:a', 100, 8, performance.now() + 10_000));
    const b = track(waiters.wait('team:t', 50, 8, performance.now() + 10_000));
    expect(waiters.size).toBe(2);

    waiters.freedOn(['key:a'], 60); // 60 of 100
    await advance(0);
    expect(a.done).toBe(false);
    waiters.freedOn(['team:t', 'key:other'], 49); // 49 of 50
    await advance(0);
    expect(b.done).toBe(false);

    waiters.freedOn(['key:a', 'team:t'], 40); // a: exactly 100; b: 89
    await advance(0);
    expect(a.done).toBe(true);
    expect(b.done).toBe(true);
    expect(waiters.size).toBe(0);
  });

  it('ignores nothing freed, a negative amount, and scopes nobody waits on', async () => {
    const waiters = new CapacityWaiters();
    const a = track(waiters.wait('key:a', 1, 8, performance.now() + 10_000));
    waiters.freedOn(['key:a'], 0);
    waiters.freedOn(['key:a'], -5);
    waiters.freedOn(['key:a'], Number.NaN);
    waiters.freedOn(['key:b'], 1_000);
    await advance(0);
    expect(a.done).toBe(false);
    expect(waiters.size).toBe(1);
    waiters.freedOn(['key:a'], 1);
    await advance(0);
    expect(a.done).toBe(true);
  });

  it('a woken waiter no longer counts what is freed later, and its poll timer is cleared', async () => {
    const waiters = new CapacityWaiters();
    const a = track(waiters.wait('key:a', 10, 0, performance.now() + 10_000));
    waiters.freedOn(['key:a'], 10);
    await advance(0);
    expect(a.done).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    const b = track(waiters.wait('key:a', 10, 0, performance.now() + 10_000));
    waiters.freedOn(['key:a'], 9); // a fresh waiter starts from nothing freed
    await advance(0);
    expect(b.done).toBe(false);
  });
});
