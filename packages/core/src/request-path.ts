/**
 * A request path as WHATWG URL parsing leaves it: dot segments (`..`, `.`, `%2e`) resolved and `\`
 * read as `/`. Hono (a web `Request`) sees paths this way and Express sees them raw; routing on this
 * form makes both adapters answer `/key/../regenerate` alike. Percent-escapes are left as they are.
 */
export function canonicalPath(path: string): string {
  const q = path.indexOf('?');
  const p = q === -1 ? path : path.slice(0, q);
  // Most paths have nothing to resolve: no URL parse on the hot path.
  if (!/[.\\]|%2e/i.test(p)) return p;
  // Parsed after a fixed origin, so that a path starting `//` stays a path, never a host.
  return URL.canParse(`http://h${p}`) ? new URL(`http://h${p}`).pathname : p;
}

/**
 * True when `value` holds a C0 control character or DEL: no id in a path holds one, and a store may
 * refuse one (Postgres text cannot hold NUL), which must be the caller's 400, never a storage error.
 */
export function hasControlCharacter(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}
