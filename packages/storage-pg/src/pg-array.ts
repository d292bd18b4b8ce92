/**
 * A flat JavaScript array as a Postgres array literal (`{"a","b\"c",NULL}`, `{1,2,3}`), for the
 * array parameters of the batched statements (each settlement batch sends 28 of them). `pg` builds
 * the same text one element at a time (two regular expressions and a few string concatenations per
 * element, ~7 KB of garbage per settled call on the example route, most of that process's GC); this
 * writes one string per array where no element needs escaping. `null` and `undefined` are `NULL`,
 * numbers and booleans are written bare (as `pg` writes them, `String(value)`), anything else is
 * written as its `String()` in double quotes with `\` and `"` escaped. Elements that are objects
 * (arrays, buffers, dates) are not this encoder's: `null` is returned and `pg` encodes the array itself.
 */
export function pgArrayLiteral(values: readonly unknown[]): string | null {
  if (values.length === 0) return '{}';
  let plain = true; // every element is a string that needs no escaping
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v === 'string') {
      if (plain && NEEDS_ESCAPE.test(v)) plain = false;
    } else if (typeof v === 'object' && v !== null) {
      return null;
    } else if (typeof v === 'function' || typeof v === 'symbol') {
      return null;
    } else plain = false; // null, undefined, a number, a boolean or a bigint
  }
  // Strings alone, none with a quote or a backslash: one join.
  if (plain) return `{"${values.join('","')}"}`;
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) parts[i] = 'NULL';
    else if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') parts[i] = String(v);
    else {
      const s = v as string;
      parts[i] = NEEDS_ESCAPE.test(s) ? `"${s.replace(ESCAPED, '\\$&')}"` : `"${s}"`;
    }
  }
  return `{${parts.join(',')}}`;
}

const NEEDS_ESCAPE = /["\\]/;
const ESCAPED = /["\\]/g;

/** `values` with every flat array as its literal (`pgArrayLiteral`); other values as they are. */
export function withArrayLiterals(values: readonly unknown[]): unknown[] {
  const out = new Array<unknown>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    out[i] = Array.isArray(v) ? (pgArrayLiteral(v) ?? v) : v;
  }
  return out;
}
