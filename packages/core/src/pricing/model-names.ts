// How a model name asked for maps to the names a price table may hold.

/** A release date at the end of a name: `-2024-08-06`, `-20250929`, `@20250929` (Vertex), `@2024-08-06`. */
const DATE_SUFFIX = /(?:[-@]\d{4}-\d{2}-\d{2}|[-@]\d{8})$/;

/** The name without its trailing release date, or `undefined` when it carries none. */
export function withoutDateSuffix(name: string): string | undefined {
  const stripped = name.replace(DATE_SUFFIX, '');
  return stripped !== name && stripped !== '' && !stripped.endsWith('/') ? stripped : undefined;
}

/** `openrouter/openai/gpt-4o`, `openai/gpt-4o`, `gpt-4o`: the name, then without each leading segment. */
function withPrefixesStripped(name: string): string[] {
  const names = [name];
  let rest = name;
  for (let slash = rest.indexOf('/'); slash >= 0; slash = rest.indexOf('/')) {
    rest = rest.slice(slash + 1);
    if (rest === '') break;
    names.push(rest);
  }
  return names;
}

/**
 * The names to try for `model`, most specific first: the name and its provider-prefix-stripped forms,
 * then, if it ends in a release date no entry knows, the same for the undated name
 * (`vertex_ai/claude-sonnet-4-5@20990101` → `vertex_ai/claude-sonnet-4-5` → `claude-sonnet-4-5`).
 */
export function candidateNames(model: string): string[] {
  const names = withPrefixesStripped(model);
  const undated = withoutDateSuffix(model);
  if (undated !== undefined) names.push(...withPrefixesStripped(undated));
  return names;
}
