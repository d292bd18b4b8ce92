import { describe, expect, it } from 'vitest';
import { pgArrayLiteral } from '../src/pg-array.js';
import { admin } from './test-schemas.js';

// The reference is Postgres itself: each literal is parsed by the real server and must give back the
// very elements it was made of, and match what `pg` writes for the same array.
const roundTrip = async (values: unknown[], type: string) => {
  const literal = pgArrayLiteral(values);
  if (literal === null) throw new Error('not encoded');
  const res = await admin.query({
    text: `SELECT $1::${type}[] AS a`,
    values: [literal],
    types: { getTypeParser: (() => (v: string) => v) as never },
  });
  const viaPg = await admin.query({
    text: `SELECT $1::${type}[] AS a`,
    values: [values],
    types: { getTypeParser: (() => (v: string) => v) as never },
  });
  return { literal, ours: res.rows[0].a as string, pg: viaPg.rows[0].a as string };
};

describe('pgArrayLiteral', () => {
  it('strings with quotes, backslashes, commas, braces, spaces, unicode, "NULL" and empty ones come back as sent', async () => {
    const values = [
      'plain',
      'with "quotes"',
      'back\\slash',
      '\\"both\\"',
      'a,b',
      '{braces}',
      '  spaced  ',
      'NULL',
      'null',
      '',
      'émoji 🚀 ✓',
      "single'quote",
      'new\nline\ttab',
    ];
    const { ours, pg: viaPg } = await roundTrip(values, 'text');
    expect(ours).toBe(viaPg);
    const parsed = await admin.query({
      text: 'SELECT unnest($1::text[]) AS v',
      values: [pgArrayLiteral(values)],
    });
    expect(parsed.rows.map((r) => r.v)).toEqual(values);
  });

  it('NULL for null and undefined, bare numbers and booleans, as pg writes them', async () => {
    const mixed = ['a', null, 'b', undefined];
    expect(pgArrayLiteral(mixed)).toBe('{"a",NULL,"b",NULL}');
    const parsed = await admin.query({
      text: 'SELECT unnest($1::text[]) AS v',
      values: [pgArrayLiteral(mixed)],
    });
    expect(parsed.rows.map((r) => r.v)).toEqual(['a', null, 'b', null]);
    const big = [0, -1, 9_007_199_254_740_991, 42];
    const ints = await admin.query({
      text: 'SELECT unnest($1::int8[])::text AS v',
      values: [pgArrayLiteral(big)],
    });
    expect(ints.rows.map((r) => r.v)).toEqual(big.map(String));
    const flags = await admin.query({
      text: 'SELECT unnest($1::bool[]) AS v',
      values: [pgArrayLiteral([true, false, null])],
    });
    expect(flags.rows.map((r) => r.v)).toEqual([true, false, null]);
    expect((await roundTrip([1, 2, null], 'int8')).ours).toBe((await roundTrip([1, 2, null], 'int8')).pg);
  });

  it('one join when no element needs escaping; empty arrays; objects left to pg', () => {
    expect(pgArrayLiteral(['a', 'b c', 'd'])).toBe('{"a","b c","d"}');
    expect(pgArrayLiteral([])).toBe('{}');
    expect(pgArrayLiteral(['x"y'])).toBe('{"x\\"y"}');
    expect(pgArrayLiteral(['x\\y'])).toBe('{"x\\\\y"}');
    expect(pgArrayLiteral([new Date(0)])).toBeNull();
    expect(pgArrayLiteral([['nested']])).toBeNull();
    expect(pgArrayLiteral([Buffer.from('a')])).toBeNull();
  });

  it('a text with a NUL is still refused by Postgres (22021), as through pg', async () => {
    await expect(
      admin.query({ text: 'SELECT $1::text[]', values: [pgArrayLiteral(['a\u0000b'])] }),
    ).rejects.toMatchObject({
      code: '22021',
    });
    await expect(admin.query({ text: 'SELECT $1::text[]', values: [['a\u0000b']] })).rejects.toMatchObject({
      code: '22021',
    });
  });
});
