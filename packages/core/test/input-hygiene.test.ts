import { describe, expect, it } from 'vitest';
import {
  dateInRange,
  durationProblem,
  INPUT_LIMITS,
  metadataProblem,
  storableMetadata,
  textProblem,
  usdAmount,
} from '../src/input-hygiene.js';

/** `{"a":{"a":...1...}}` nested `levels` deep (the outer object is level 1). */
function nested(levels: number): unknown {
  return JSON.parse(`${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`);
}

describe('input hygiene', () => {
  it('refuses NUL and lone surrogates, with where they are, and keeps valid astral text', () => {
    expect(textProblem('team-1', 256)).toBeNull();
    expect(textProblem('\ud83d\ude00 smile', 256)).toBeNull(); // a surrogate pair: one valid character
    expect(textProblem('\ufffd', 256)).toBeNull();
    expect(textProblem('a\u0000b', 256)).toBe('must not contain a NUL character (\\u0000, at position 1)');
    expect(textProblem('\ud800', 256)).toBe(
      'must be valid Unicode text: it holds a lone surrogate (\\ud800 at position 0), which storage would turn into U+FFFD',
    );
    expect(textProblem('x\udbff', 256)).toContain('(\\udbff at position 1)');
    expect(textProblem('\ude00x', 256)).toContain('(\\ude00 at position 0)'); // a low one alone
    expect(textProblem('\ud83d\ude00\ude00', 256)).toContain('(\\ude00 at position 2)');
    expect(textProblem('x'.repeat(256), 256)).toBeNull();
    expect(textProblem('x'.repeat(257), 256)).toBe('must be at most 256 characters');
  });

  it('limits metadata to 32 levels, 64 KiB of JSON, finite numbers and storable strings and keys', () => {
    expect(metadataProblem(nested(1))).toBeNull();
    expect(metadataProblem(nested(32))).toBeNull(); // 32 objects, one in the other
    const deep = metadataProblem(nested(33));
    expect(deep?.problem).toBe('is nested too deep: metadata may nest at most 32 levels');
    expect(deep?.path).toEqual(Array(32).fill('a'));
    expect(metadataProblem(nested(10_000))?.path).toHaveLength(32); // stops at the limit
    expect(metadataProblem({ list: [1, 'ok', { x: 'a\u0000' }] })).toEqual({
      path: ['list', 2, 'x'],
      problem: 'must not contain a NUL character (\\u0000, at position 1)',
    });
    expect(metadataProblem({ ok: { 'k\ud800': 1 } })).toMatchObject({ path: ['ok'] });
    expect(metadataProblem({ n: Number.POSITIVE_INFINITY })).toEqual({
      path: ['n'],
      problem: 'must be a finite number',
    });
    // {"s":"..."} is 8 characters around the string.
    expect(metadataProblem({ s: 'x'.repeat(65_536 - 8) })).toBeNull();
    expect(metadataProblem({ s: 'x'.repeat(65_536 - 7) })?.problem).toBe(
      'is too large: at most 65536 characters as JSON, got 65537',
    );
    const parsed = storableMetadata.safeParse({ team: { name: 'a\u0000' } });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]?.path).toEqual(['team', 'name']);
  });

  it('takes durations up to 10 years in every unit, and refuses one a day longer', () => {
    for (const ok of ['30s', '1d', 'monthly', '3660d', '522w', '120mo', '87840h', '5270400m', '316224000s'])
      expect(durationProblem(ok), ok).toBeNull();
    for (const tooLong of ['3661d', '523w', '121mo', '87841h', '5270401m', '316224001s', '999999999999d'])
      expect(durationProblem(tooLong), tooLong).toBe(
        `must be at most 10 years ('3660d', '522w', '120mo', '87840h', '5270400m' or '316224000s'), got '${tooLong}'`,
      );
    expect(durationProblem('10 days')).toMatch(/^is not a duration/);
  });

  it('takes USD amounts whose nano-dollars fit in 2^53, and dates from 1970 to 9999', () => {
    expect(usdAmount.safeParse(9_000_000).success).toBe(true);
    expect(9_000_000 * 1e9).toBeLessThanOrEqual(Number.MAX_SAFE_INTEGER);
    for (const bad of [9_000_000.01, 1e300, -1, Number.POSITIVE_INFINITY, Number.NaN])
      expect(usdAmount.safeParse(bad).success, String(bad)).toBe(false);
    expect(dateInRange(Date.parse('1970-01-01T00:00:00.000Z'))).toBe(true);
    expect(dateInRange(Date.parse('1969-12-31T23:59:59.999Z'))).toBe(false);
    expect(dateInRange(Date.parse('9999-12-31T23:59:59.999Z'))).toBe(true);
    expect(dateInRange(Date.parse('0001-01-01T00:00:00.000Z'))).toBe(false);
    expect(INPUT_LIMITS.lastDate).toBe('9999-12-31');
  });
});
