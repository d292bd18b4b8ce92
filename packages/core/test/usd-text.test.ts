import { describe, expect, it } from 'vitest';
import { usdText } from '../src/pipeline/usd-text.js';

describe('usdText: the dollar text of nano-dollars, as String(nano / 1e9) writes it', () => {
  it('writes hand-worked amounts', () => {
    expect(usdText(0)).toBe('0');
    expect(usdText(999)).toBe('9.99e-7'); // below $0.000001: the exponent form
    expect(usdText(1000)).toBe('0.000001');
    expect(usdText(1500)).toBe('0.0000015');
    expect(usdText(120_000)).toBe('0.00012');
    expect(usdText(1_000_000_000)).toBe('1');
    expect(usdText(5_000_000_000)).toBe('5');
    expect(usdText(1_000_000_001)).toBe('1.000000001');
    expect(usdText(1_234_567_890)).toBe('1.23456789');
    expect(usdText(10_250_000_000)).toBe('10.25');
    expect(usdText(123_456_789_012_345)).toBe('123456.789012345');
    expect(usdText(999_999_999_999_999)).toBe('999999.999999999');
    expect(usdText(1e15)).toBe('1000000');
    expect(usdText(-2_500_000_000)).toBe('-2.5');
    expect(usdText(1234.5)).toBe('0.0000012345');
  });

  it('matches String(nano / 1e9) over every amount up to 200,000 and random ones up to 10^16', () => {
    const mismatches: number[] = [];
    const check = (n: number) => {
      if (usdText(n) !== String(n / 1e9)) mismatches.push(n);
    };
    for (let n = 0; n <= 200_000; n++) check(n);
    let seed = 19;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    for (let i = 0; i < 50_000; i++) {
      const digits = 1 + Math.floor(next() * 16);
      check(Math.floor(next() * 10 ** digits));
      check(Math.floor(next() * 1e9) * 1e6); // round amounts with trailing zeros
    }
    expect(mismatches.slice(0, 5)).toEqual([]);
  });
});
