import { describe, expect, it, vi } from 'vitest';
import { timeOrderedId } from '../src/ids.js';

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('timeOrderedId', () => {
  it('is a UUID version 7 carrying the current time in milliseconds', () => {
    const before = Date.now();
    const id = timeOrderedId();
    const after = Date.now();
    expect(id).toMatch(V7);
    const ms = Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
  });

  it('sorts in the order ids were made across milliseconds, and never repeats', () => {
    const ids: string[] = [];
    // The clock is injected (vitest's fake Date): five milliseconds, 200 ids in each.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.UTC(2026, 4, 4, 10, 0, 0, 998) });
    try {
      for (let i = 0; i < 5; i++) {
        for (let j = 0; j < 200; j++) ids.push(timeOrderedId());
        vi.setSystemTime(Date.now() + 1);
      }
    } finally {
      vi.useRealTimers();
    }
    expect(new Set(ids).size).toBe(ids.length);
    const firstOfEachMs = ids.filter((id, i) => i === 0 || id.slice(0, 13) !== ids[i - 1]!.slice(0, 13));
    expect(firstOfEachMs).toHaveLength(5);
    expect([...firstOfEachMs].sort()).toEqual(firstOfEachMs);
    // Within one millisecond the order is random, but every id of a later millisecond sorts after.
    const prefixes = ids.map((id) => id.slice(0, 13));
    expect([...prefixes].sort()).toEqual(prefixes);
  });
});
