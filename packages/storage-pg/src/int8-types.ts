import pg from 'pg';

const INT8_OID = 20;

function parseInt8(text: string): number {
  const n = Number(text);
  // pg turns a parser's throw into this query's error, so an amount that would lose precision fails
  // loudly instead of being rounded.
  if (!Number.isSafeInteger(n)) throw new RangeError(`BIGINT ${text} is beyond 2^53 and cannot be exact`);
  return n;
}

/**
 * Per-query type parsers: BIGINT (money in nano-dollars, counts) as a JS number, everything else as pg
 * parses it by default. Passed with each query rather than set on pg's global `types`, so an app
 * sharing the `pg` module (or its pool) keeps its own parsing.
 */
export const int8AsNumber = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary'
      ? parseInt8
      : pg.types.getTypeParser(oid, format ?? 'text')) as pg.CustomTypesConfig['getTypeParser'],
} satisfies pg.CustomTypesConfig;
