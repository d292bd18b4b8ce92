import { describe, expect, it } from 'vitest';
import { utcDay } from '../src/storage/storage-contract.js';

describe('utcDay (it remembers the last day it formatted)', () => {
  it('gives the UTC day of each instant, across day boundaries in any order', () => {
    const instants = [
      '2026-11-27T00:00:00.000Z',
      '2026-11-27T23:59:59.999Z',
      '2026-11-28T00:00:00.000Z',
      '2026-11-27T12:00:00.000Z',
      '2026-11-26T23:59:59.999Z',
      '1969-12-31T23:59:59.999Z',
      '1969-12-31T00:00:00.000Z',
      '1970-01-01T00:00:00.000Z',
      '2026-11-28T00:00:00.001Z',
    ];
    for (const iso of instants) expect(utcDay(new Date(iso))).toBe(iso.slice(0, 10));
  });

  it('still throws on an invalid date', () => {
    expect(() => utcDay(new Date(Number.NaN))).toThrow(RangeError);
  });
});
