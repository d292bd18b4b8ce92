import { describe, expect, it } from 'vitest';
import { isoTime } from '../src/iso-time.js';

// The reference is the built-in Date.prototype.toISOString.
describe('isoTime', () => {
  it('writes what toISOString writes, within a minute, across minutes, days and years', () => {
    const starts = [
      Date.UTC(2026, 11, 6, 8, 59, 59, 999),
      Date.UTC(2026, 11, 31, 23, 59, 58, 0),
      Date.UTC(1969, 11, 31, 23, 59, 59, 500), // negative epoch milliseconds
      Date.UTC(2024, 1, 29, 0, 0, 0, 1),
      0,
    ];
    for (const start of starts) {
      for (let ms = start - 61_000; ms < start + 121_000; ms += 7) {
        const d = new Date(ms);
        expect(isoTime(d)).toBe(d.toISOString());
      }
    }
  });

  it('hand-worked values, and years toISOString writes with six digits', () => {
    expect(isoTime(new Date(Date.UTC(2026, 11, 6, 8, 5, 3, 7)))).toBe('2026-12-06T08:05:03.007Z');
    expect(isoTime(new Date(Date.UTC(2026, 11, 6, 8, 5, 59, 999)))).toBe('2026-12-06T08:05:59.999Z');
    expect(isoTime(new Date(Date.UTC(2026, 11, 6, 8, 6, 0, 0)))).toBe('2026-12-06T08:06:00.000Z');
    const far = new Date(Date.UTC(10_000, 0, 1, 0, 0, 30, 5));
    expect(isoTime(far)).toBe('+010000-01-01T00:00:30.005Z');
    expect(isoTime(new Date(far.getTime() + 1))).toBe('+010000-01-01T00:00:30.006Z');
  });

  it('throws for an invalid date, as toISOString does', () => {
    expect(() => isoTime(new Date(Number.NaN))).toThrow(RangeError);
  });
});
