/**
 * Reads a JSON response body's top-level members without building the completion itself: every member
 * is parsed except the bulky ones a call's cost never depends on (`choices`, `content`, `output`,
 * `data`, `candidates`: the generated text), which become empty values of their type. Strings are
 * stepped over with a native byte search, so a 4 KB chat completion is read in a fraction of what
 * `JSON.parse` of the whole text costs, and without allocating it.
 *
 * `null` when the body is not one JSON object, is malformed where it is read, or its text is dense with
 * escaped quotes: the caller then parses it whole. The skipped members are only checked for balanced
 * brackets and closed strings.
 */
export function skimJsonObject(bytes: Uint8Array): Record<string, unknown> | null {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    return skim(b);
  } catch {
    return null; // a member that is not valid JSON
  }
}

const BULKY = new Set(['choices', 'content', 'output', 'data', 'candidates']);

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/**
 * Finds the top-level members whose values are bulky, then parses the body once with those values cut
 * out (`[]`, `{}` or `""` in their place): one `JSON.parse` of the small rest, with its exact semantics
 * (duplicate keys, `__proto__`, validation), instead of one per member.
 */
function skim(b: Buffer): Record<string, unknown> | null {
  escapedQuotesLeft = MAX_ESCAPED_QUOTES;
  const end = b.length;
  let i = space(b, 0);
  if (b[i] !== OPEN_BRACE) return null;
  i = space(b, i + 1);
  let text = '';
  let from = 0; // the start of the bytes not yet copied into `text`
  if (b[i] !== CLOSE_BRACE) {
    for (;;) {
      if (b[i] !== QUOTE) return null;
      const keyEnd = stringEnd(b, i);
      if (keyEnd < 0) return null;
      const bulky = keyEnd - i - 2 <= LONGEST_BULKY && BULKY.has(b.toString('latin1', i + 1, keyEnd - 1));
      i = space(b, keyEnd);
      if (b[i] !== COLON) return null;
      const start = space(b, i + 1);
      const valueEnd = skipValue(b, start);
      if (valueEnd < 0) return null;
      const empty = bulky ? EMPTY.get(b[start]!) : undefined;
      if (empty !== undefined) {
        text += b.toString('utf8', from, start) + empty;
        from = valueEnd;
      }
      i = space(b, valueEnd);
      if (b[i] === COMMA) {
        i = space(b, i + 1);
        continue;
      }
      if (b[i] === CLOSE_BRACE) break;
      return null;
    }
  }
  if (space(b, i + 1) !== end) return null;
  const parsed: unknown = JSON.parse(from === 0 ? b.toString('utf8') : text + b.toString('utf8', from, end));
  return parsed as Record<string, unknown>;
}

const LONGEST_BULKY = Math.max(...[...BULKY].map((k) => k.length));
/** What a bulky value is replaced with, by its first byte (other kinds of value are kept). */
const EMPTY = new Map<number, string>([
  [OPEN_BRACKET, '[]'],
  [OPEN_BRACE, '{}'],
  [QUOTE, '""'],
]);

function space(b: Buffer, i: number): number {
  while (i < b.length) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    i++;
  }
  return i;
}

/**
 * Escaped quotes a skim steps over before it gives up: each costs a byte search of its own, so text
 * dense with them (code) is read faster by `JSON.parse` of the whole body, which the caller then does.
 */
const MAX_ESCAPED_QUOTES = 64;
let escapedQuotesLeft = MAX_ESCAPED_QUOTES;

/** The index just past the string opening at `i`; -1 when it never closes (or too many escaped quotes). */
function stringEnd(b: Buffer, i: number): number {
  let from = i + 1;
  for (;;) {
    const q = b.indexOf(QUOTE, from);
    if (q < 0) return -1;
    let backslashes = 0;
    for (let k = q - 1; b[k] === BACKSLASH; k--) backslashes++;
    if (backslashes % 2 === 0) return q + 1;
    if (--escapedQuotesLeft < 0) return -1;
    from = q + 1;
  }
}

/** The index just past the value starting at `i` (brackets balanced, strings closed), or -1. */
function skipValue(b: Buffer, i: number): number {
  const c = b[i];
  if (c === QUOTE) return stringEnd(b, i);
  if (c !== OPEN_BRACE && c !== OPEN_BRACKET) {
    // A number or a literal: up to the next delimiter (JSON.parse checks it).
    while (i < b.length) {
      const d = b[i]!;
      if (d === COMMA || d === CLOSE_BRACE || d === CLOSE_BRACKET || d <= 0x20) break;
      i++;
    }
    return i;
  }
  const closers: number[] = [];
  while (i < b.length) {
    const d = b[i];
    if (d === QUOTE) {
      i = stringEnd(b, i);
      if (i < 0) return -1;
      continue;
    }
    if (d === OPEN_BRACE) closers.push(CLOSE_BRACE);
    else if (d === OPEN_BRACKET) closers.push(CLOSE_BRACKET);
    else if (d === CLOSE_BRACE || d === CLOSE_BRACKET) {
      if (closers.pop() !== d) return -1;
      if (closers.length === 0) return i + 1;
    }
    i++;
  }
  return -1;
}
