// Price tables in LiteLLM's model_prices_and_context_window.json format: the bundled snapshot, a parsed
// object, a file or a URL. All of them hand out LiteLLM entries, priced by the same code.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** One model's entry in LiteLLM's format (`input_cost_per_token`, `litellm_provider`...). */
export type LiteLLMEntry = Readonly<Record<string, unknown>>;

/** A price table: exact lookups, plus a lowercase index built on first need. */
export interface PriceTable {
  get(name: string): LiteLLMEntry | undefined;
  lowercaseIndex(): ReadonlyMap<string, string>;
}

/** Keys of a LiteLLM table that document it rather than price a model. */
const NOT_MODELS = new Set(['sample_spec', 'fallback_generalizations', 'last_updated']);

export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function buildLowercaseIndex(names: Iterable<string>): Map<string, string> {
  const index = new Map<string, string>();
  for (const name of names) {
    const lower = name.toLowerCase();
    if (!index.has(lower)) index.set(lower, name);
  }
  return index;
}

/**
 * Whether an entry carries a price of any kind (a field whose name contains `cost`, or `tiered_pricing`).
 * Entries without one (`github_copilot/*`, capability-only entries) are read as absent, exactly as the
 * bundled snapshot, which ships priced entries only, reads them.
 */
export function hasAnyPrice(entry: unknown): entry is Record<string, unknown> {
  if (!isObject(entry)) return false;
  for (const field in entry) if (field.includes('cost') || field === 'tiered_pricing') return true;
  return false;
}

/** A parsed LiteLLM table. */
export function objectTable(table: Readonly<Record<string, unknown>>): PriceTable {
  let index: Map<string, string> | undefined;
  return {
    get(name) {
      if (!Object.hasOwn(table, name) || NOT_MODELS.has(name)) return undefined;
      const entry = table[name];
      return hasAnyPrice(entry) ? entry : undefined;
    },
    lowercaseIndex() {
      index ??= buildLowercaseIndex(
        Object.keys(table).filter((name) => !NOT_MODELS.has(name) && hasAnyPrice(table[name])),
      );
      return index;
    },
  };
}

interface SnapshotFile {
  meta: { sourceDate: string | null; count: number };
  columns: string[];
  fields: string[];
  models: Record<string, unknown[]>;
}

function readSnapshotText(): string {
  // From source, this file sits next to snapshot.json. From the build, the code is bundled into
  // dist/*.js (snapshot copied to dist/snapshot.json by tsup.config.ts) or dist/testing/*.js.
  for (const candidate of ['./snapshot.json', '../snapshot.json']) {
    try {
      return readFileSync(new URL(candidate, import.meta.url), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  throw new Error(
    `@spendguard/core: the bundled price snapshot (snapshot.json) was not found next to ${import.meta.url}. ` +
      'If you bundle @spendguard/core into your app, copy its dist/snapshot.json next to the bundle, or pass ' +
      "a LiteLLM price table as `table` (a parsed object, a file path or a URL of LiteLLM's " +
      'model_prices_and_context_window.json).',
  );
}

let snapshot: PriceTable | undefined;

/**
 * The snapshot of LiteLLM's table shipped with the package (scripts/build-price-snapshot.mjs), read and
 * parsed once per process on first use, never at import. Rows turn back into LiteLLM entries on demand.
 */
export function snapshotTable(): PriceTable {
  if (snapshot) return snapshot;
  const file = JSON.parse(readSnapshotText()) as SnapshotFile;
  const { columns, fields, models } = file;
  let index: Map<string, string> | undefined;
  snapshot = {
    get(name) {
      if (!Object.hasOwn(models, name)) return undefined;
      const row = models[name] ?? [];
      const entry: Record<string, unknown> = {};
      const positional = Math.min(columns.length, row.length);
      for (let i = 0; i < positional; i++) {
        const value = row[i];
        if (value !== null && value !== undefined) entry[columns[i] as string] = value;
      }
      for (let i = columns.length; i + 1 < row.length; i += 2) {
        const field = fields[row[i] as number];
        if (field !== undefined) entry[field] = row[i + 1];
      }
      return entry;
    },
    lowercaseIndex() {
      index ??= buildLowercaseIndex(Object.keys(models));
      return index;
    },
  };
  return snapshot;
}

/** Whether an entry has a per-token price (top level or in a `tiered_pricing` list). */
function hasTokenPrice(entry: unknown): boolean {
  if (!isObject(entry)) return false;
  if (entry.input_cost_per_token !== undefined || entry.output_cost_per_token !== undefined) return true;
  return Array.isArray(entry.tiered_pricing);
}

/**
 * Checks that a parsed value is a LiteLLM price table worth switching to: an object keyed by model name
 * with at least one priced model. Anything else (an HTML error page, `[]`, `{}`) is refused, so that a bad
 * download can never wipe out every price.
 */
export function validateTable(value: unknown, where: string): Record<string, unknown> {
  if (!isObject(value)) {
    throw new TypeError(
      `${where}: expected LiteLLM's model_prices_and_context_window.json (an object keyed by model name)`,
    );
  }
  for (const name in value) {
    if (!NOT_MODELS.has(name) && hasTokenPrice(value[name])) return value;
  }
  throw new TypeError(
    `${where}: the table prices no model (no entry has input_cost_per_token or output_cost_per_token); ` +
      "is it LiteLLM's model_prices_and_context_window.json?",
  );
}

function parseTable(text: string, where: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`${where}: not valid JSON (${(error as Error).message})`);
  }
  return validateTable(parsed, where);
}

/** Where a user-supplied table lives: a file or an http(s) URL. */
export type TableLocation = { kind: 'file'; path: string } | { kind: 'url'; url: string };

/** Reads `table: string | URL` as a location: an http(s) URL, else a file path or file: URL. */
export function tableLocation(table: string | URL): TableLocation {
  const text = String(table);
  if (/^https?:\/\//i.test(text)) return { kind: 'url', url: text };
  if (table instanceof URL || /^file:\/\//i.test(text)) {
    const url = new URL(text);
    if (url.protocol !== 'file:') {
      throw new TypeError(`PriceBook: \`table\` URL ${text} must be http:, https: or file:`);
    }
    return { kind: 'file', path: fileURLToPath(url) };
  }
  return { kind: 'file', path: text };
}

/** Reads and validates a table file synchronously (at construction, so config errors surface early). */
export function readTableFileSync(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(
      `PriceBook: cannot read the price table ${path} (${(error as Error).message}); pass the path of a ` +
        "copy of LiteLLM's model_prices_and_context_window.json, an http(s) URL, or the parsed object",
    );
  }
  return parseTable(text, path);
}

/** Reads and validates a table file. */
export async function readTableFile(path: string): Promise<Record<string, unknown>> {
  return parseTable(await readFile(path, 'utf8'), path);
}

/** Time allowed for one download of a table. */
const FETCH_TIMEOUT_MS = 30_000;

/** Downloads and validates a table with the global fetch. */
export async function fetchTable(url: string, signal: AbortSignal): Promise<Record<string, unknown>> {
  // AbortSignal.any arrived in Node 20.3; before it, only close() can cut a download short.
  const timeout = AbortSignal.timeout(FETCH_TIMEOUT_MS);
  const response = await fetch(url, {
    signal: typeof AbortSignal.any === 'function' ? AbortSignal.any([signal, timeout]) : signal,
    headers: { accept: 'application/json' },
  });
  if (!response.ok) {
    await response.body?.cancel();
    throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`.trim());
  }
  return parseTable(await response.text(), url);
}
