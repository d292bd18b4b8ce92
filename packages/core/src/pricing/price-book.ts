import { candidateNames } from './model-names.js';
import {
  type BillingShape,
  type CompiledPrice,
  type CostBreakdownNano,
  type CostOptions,
  compilePrice,
  type ModelPrice,
  priceUsage,
  unpricedCost,
  type WorstCaseRates,
  worstCaseRates,
} from './model-price.js';
import { normalizeUsage, type TokenUsage } from './normalize-usage.js';
import {
  buildLowercaseIndex,
  fetchTable,
  isObject,
  type LiteLLMEntry,
  objectTable,
  type PriceTable,
  readTableFile,
  readTableFileSync,
  snapshotTable,
  type TableLocation,
  tableLocation,
  validateTable,
} from './price-table.js';

export type {
  BillingShape,
  CostBreakdownNano,
  CostOptions,
  ModelPrice,
  WorstCaseRates,
} from './model-price.js';
export type { TokenUsage } from './normalize-usage.js';

/** LiteLLM's web-search prices by search context size, USD per search. */
export interface SearchContextCost {
  search_context_size_low?: number;
  search_context_size_medium?: number;
  search_context_size_high?: number;
}

/**
 * LiteLLM-format per-model prices, as users write them in config. Costs are USD per token (or per call,
 * per search), exactly as in LiteLLM's `model_prices_and_context_window.json`; the fields given replace
 * the table's, the others stay. Any LiteLLM price field is accepted (`*_priority`, `*_flex`,
 * `*_batches`, `*_above_200k_tokens`, `tiered_pricing`...).
 * @example { 'gpt-4o': { input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001 } }
 */
export interface ModelPriceOverride {
  input_cost_per_token?: number;
  output_cost_per_token?: number;
  cache_read_input_token_cost?: number;
  /** 5-minute cache writes. */
  cache_creation_input_token_cost?: number;
  /** 1-hour cache writes. */
  cache_creation_input_token_cost_above_1hr?: number;
  output_cost_per_reasoning_token?: number;
  input_cost_per_audio_token?: number;
  output_cost_per_audio_token?: number;
  /** USD per call. */
  input_cost_per_request?: number;
  input_cost_per_token_batches?: number;
  output_cost_per_token_batches?: number;
  search_context_cost_per_query?: SearchContextCost;
  /** Prompt-size tiers: `[{ range: [0, 32000], input_cost_per_token, output_cost_per_token }, ...]`. */
  tiered_pricing?: Array<Record<string, number | number[]>>;
  max_output_tokens?: number;
  litellm_provider?: string;
  mode?: string;
  /** Any other LiteLLM price field, e.g. `input_cost_per_token_priority`. */
  [field: `${string}_cost_${string}` | `${string}_cost`]: number | SearchContextCost | undefined;
}

/** Options of {@link PriceBook}. */
export interface PriceBookOptions {
  /**
   * Per-model prices in LiteLLM's format, merged over the table's entry of the same name (or adding a
   * model the table lacks). Names resolve like model names do (`openai/gpt-4o` finds a `gpt-4o` override).
   * @default {}
   * @example { 'my-finetune': { input_cost_per_token: 0.000003, output_cost_per_token: 0.000012 } }
   */
  overrides?: Record<string, ModelPriceOverride>;
  /**
   * Model names priced as another model: deployment names, fine-tune ids, house names. The target
   * resolves like any model name (prefixes, dates, case).
   * @default {}
   * @example { 'my-azure-deployment': 'gpt-4o', 'house-fast': 'anthropic/claude-haiku-4-5' }
   */
  aliases?: Record<string, string>;
  /**
   * Called once per unknown model name (per PriceBook, per table) the first time a cost is asked for it;
   * such calls cost 0 and are flagged `priced: false`.
   * @example (model) => logger.warn(`no price for model ${model}: its calls are recorded at 0 USD`)
   */
  onUnpriced?: (model: string) => void;
  /**
   * The price table, in LiteLLM's `model_prices_and_context_window.json` format, used instead of the
   * snapshot shipped with the package:
   * - the parsed object;
   * - a file path (or `file:` URL), read when the PriceBook is created (an unreadable file throws then);
   * - an `http(s)` URL, fetched when the PriceBook is created and every `refreshIntervalMs`; until the
   *   first download succeeds, the bundled snapshot prices calls.
   * A download or re-read that fails, or gives something that is not a price table, keeps the last good
   * table and is reported to `onError`.
   * @default the bundled snapshot of LiteLLM's table (loaded on first use)
   * @example 'https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json'
   */
  table?: Record<string, unknown> | string | URL;
  /**
   * How often a URL (or file) table is fetched (re-read) again, in milliseconds; 0 never. The timer never
   * keeps the process alive; {@link PriceBook.close} stops it.
   * @default 3_600_000 (1 hour) for a URL, 0 for a file
   */
  refreshIntervalMs?: number;
  /**
   * Called when a table download or re-read fails (the last good table stays in use).
   * @default (error) => console.warn(...)
   * @example (error) => logger.warn(`price table refresh failed: ${error.message}`)
   */
  onError?: (error: Error) => void;
}

/** A call's cost in USD (numbers), line by line, with the exact total in nano-dollars. */
export interface CostBreakdown {
  /** The price-table entry the call was priced as (`gpt-4o` for `openai/gpt-4o-2031-01-01`), or null. */
  pricedAs: string | null;
  /** Prompt tokens at the input price (all prompt tokens in batch). */
  input: number;
  /** Cache-read prompt tokens at the cache-read price. */
  cachedInput: number;
  /** Cache-write prompt tokens at the 5-minute and 1-hour write prices. */
  cacheWrite: number;
  /** Completion tokens other than reasoning, audio and image at the output price (all of them in batch). */
  output: number;
  /** Reasoning tokens at the reasoning price (the output price when the model has none). */
  reasoning: number;
  /** Audio prompt and completion tokens at the audio prices. */
  audio: number;
  /** Image prompt and completion tokens at the image-token prices. */
  image: number;
  /** The model's fixed per-call price. */
  request: number;
  /** Web searches at the model's price per search. */
  webSearch: number;
  /** The whole cost, USD (`totalNano / 1e9`). */
  total: number;
  /** The whole cost in integer nano-dollars, rounded once from the exact sum. */
  totalNano: number;
  /** `false` when the model has no price: every amount is then 0. */
  priced: boolean;
}

// Bounds the per-PriceBook caches: model names come from request bodies, so an unbounded Map would let
// a caller grow memory with made-up names. Past the cap, lookups stay correct, just uncached.
const MAX_CACHED_NAMES = 10_000;
const MAX_ALIAS_DEPTH = 8;
const DEFAULT_URL_REFRESH_MS = 3_600_000;
/** setInterval's limit; a longer interval would fire at once. */
const MAX_INTERVAL_MS = 2 ** 31 - 1;

const TEXT_FIELDS = new Set(['litellm_provider', 'mode']);

function validateNumber(where: string, field: string, value: unknown, unit: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TypeError(
      `${where}.${field} must be a non-negative finite number (${unit}); got ${JSON.stringify(value)}`,
    );
  }
}

function validateOverride(where: string, override: unknown): LiteLLMEntry {
  if (!isObject(override)) {
    throw new TypeError(
      `${where} must be an object in LiteLLM's format, e.g. { input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001 }`,
    );
  }
  for (const [field, value] of Object.entries(override)) {
    if (value === undefined) continue;
    if (TEXT_FIELDS.has(field)) {
      if (typeof value !== 'string') {
        throw new TypeError(
          `${where}.${field} must be a string such as 'openai'; got ${JSON.stringify(value)}`,
        );
      }
    } else if (field === 'max_output_tokens') {
      validateNumber(where, field, value, 'a token count');
    } else if (field === 'tiered_pricing') {
      const ok =
        Array.isArray(value) &&
        value.every((tier) => isObject(tier) && Array.isArray(tier.range) && tier.range.length === 2);
      if (!ok) {
        throw new TypeError(
          `${where}.tiered_pricing must be a list like [{ range: [0, 32000], input_cost_per_token: 1e-6, output_cost_per_token: 5e-6 }]`,
        );
      }
      for (const [i, tier] of (value as Array<Record<string, unknown>>).entries()) {
        for (const [key, price] of Object.entries(tier)) {
          if (key.includes('cost'))
            validateNumber(`${where}.tiered_pricing[${i}]`, key, price, 'USD per token');
        }
      }
    } else if (field === 'search_context_cost_per_query') {
      if (!isObject(value)) {
        throw new TypeError(`${where}.${field} must be an object like { search_context_size_medium: 0.01 }`);
      }
      for (const [size, price] of Object.entries(value)) {
        validateNumber(`${where}.${field}`, size, price, 'USD per search');
      }
    } else if (field.includes('cost')) {
      const unit = field.includes('token') ? 'USD per token, e.g. 0.0000025' : 'USD';
      validateNumber(where, field, value, unit);
    }
    // Other LiteLLM fields (capabilities, context sizes) do not price anything: accepted, unused.
  }
  return override;
}

function validateOverrides(overrides: unknown): Map<string, LiteLLMEntry> {
  if (!isObject(overrides))
    throw new TypeError('PriceBook: `overrides` must be an object keyed by model name');
  const valid = new Map<string, LiteLLMEntry>();
  for (const [model, override] of Object.entries(overrides)) {
    valid.set(model, validateOverride(`PriceBook: overrides[${JSON.stringify(model)}]`, override));
  }
  return valid;
}

function validateAliases(aliases: unknown, overrides: Map<string, LiteLLMEntry>): Map<string, string> {
  if (!isObject(aliases)) {
    throw new TypeError(
      "PriceBook: `aliases` must be an object of model names, e.g. { 'my-deployment': 'gpt-4o' }",
    );
  }
  const valid = new Map<string, string>();
  for (const [alias, target] of Object.entries(aliases)) {
    if (typeof target !== 'string' || target === '') {
      throw new TypeError(
        `PriceBook: aliases[${JSON.stringify(alias)}] must be the name of a priced model, e.g. 'gpt-4o'; got ${JSON.stringify(target)}`,
      );
    }
    if (overrides.has(alias)) {
      throw new TypeError(
        `PriceBook: ${JSON.stringify(alias)} is both an alias and an override: keep one (an alias prices it as ${JSON.stringify(target)}, an override with its own prices)`,
      );
    }
    valid.set(alias, target);
  }
  const lower = buildLowercaseIndex(valid.keys());
  for (const start of valid.keys()) {
    const seen = new Set([start.toLowerCase()]);
    let next = valid.get(start);
    while (next !== undefined) {
      const key = lower.get(next.toLowerCase());
      if (key === undefined) break;
      if (seen.has(key.toLowerCase())) {
        throw new TypeError(
          `PriceBook: aliases form a cycle through ${JSON.stringify(start)}: point one at a priced model`,
        );
      }
      seen.add(key.toLowerCase());
      next = valid.get(key);
    }
  }
  return valid;
}

function defaultOnError(error: Error): void {
  console.warn(`spendguard: price table refresh failed, keeping the last good table: ${error.message}`);
}

function toNanoBreakdown(cost: CostBreakdownNano, pricedAs: string | null): CostBreakdown {
  return {
    pricedAs,
    input: cost.inputNano / 1e9,
    cachedInput: cost.cachedInputNano / 1e9,
    cacheWrite: cost.cacheWriteNano / 1e9,
    output: cost.outputNano / 1e9,
    reasoning: cost.reasoningNano / 1e9,
    audio: cost.audioNano / 1e9,
    image: cost.imageNano / 1e9,
    request: cost.requestNano / 1e9,
    webSearch: cost.webSearchNano / 1e9,
    total: cost.totalNano / 1e9,
    totalNano: cost.totalNano,
    priced: cost.priced,
  };
}

/**
 * Prices calls from a per-model price table in LiteLLM's format: by default a snapshot of LiteLLM's
 * `model_prices_and_context_window.json` shipped with the package and loaded on first use.
 *
 * Costs follow LiteLLM's rules (see {@link PriceBook.cost}): cache reads and writes (5-minute and
 * 1-hour), reasoning, audio and image tokens at their own prices, prompt-size tiers
 * (`*_above_200k_tokens`, `tiered_pricing`) that move the whole call to the tier's rates, `priority` and
 * `flex` service tiers, batch prices, per-call and web-search prices.
 *
 * @example
 * const prices = new PriceBook({ aliases: { 'my-deployment': 'gpt-4o' } });
 * prices.cost('gpt-4o', { promptTokens: 1000, completionTokens: 500 }).totalNano; // 7_500_000 (0.0075 USD)
 * prices.calculateCost('my-deployment', { prompt_tokens: 1000, completion_tokens: 500 }).total; // 0.0075
 */
export class PriceBook {
  readonly #overrides: Map<string, LiteLLMEntry>;
  readonly #aliases: Map<string, string>;
  readonly #onUnpriced: ((model: string) => void) | undefined;
  readonly #onError: (error: Error) => void;
  readonly #location: TableLocation | undefined;
  readonly #resolved = new Map<string, CompiledPrice | null>();
  readonly #reportedUnpriced = new Set<string>();
  readonly #abort = new AbortController();
  #table: PriceTable | undefined;
  #overrideIndex: Map<string, string> | undefined;
  #aliasIndex: Map<string, string> | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #inflight: Promise<boolean> | undefined;
  #closed = false;

  constructor(options: PriceBookOptions = {}) {
    const {
      overrides = {},
      aliases = {},
      onUnpriced,
      onError = defaultOnError,
      table,
      refreshIntervalMs,
    } = options;
    if (onUnpriced !== undefined && typeof onUnpriced !== 'function') {
      throw new TypeError('PriceBook: `onUnpriced` must be a function (model: string) => void');
    }
    if (typeof onError !== 'function') {
      throw new TypeError('PriceBook: `onError` must be a function (error: Error) => void');
    }
    if (
      refreshIntervalMs !== undefined &&
      (typeof refreshIntervalMs !== 'number' ||
        !(refreshIntervalMs >= 0) ||
        refreshIntervalMs > MAX_INTERVAL_MS)
    ) {
      throw new TypeError(
        `PriceBook: \`refreshIntervalMs\` must be a number of milliseconds between 0 (never) and ${MAX_INTERVAL_MS}, e.g. 3_600_000 for hourly`,
      );
    }
    this.#overrides = validateOverrides(overrides);
    this.#aliases = validateAliases(aliases, this.#overrides);
    this.#onUnpriced = onUnpriced;
    this.#onError = onError;

    if (table === undefined) return;
    if (typeof table === 'string' || table instanceof URL) {
      this.#location = tableLocation(table);
    } else if (isObject(table)) {
      this.#table = objectTable(validateTable(table, 'PriceBook: `table`'));
      return;
    } else {
      throw new TypeError(
        "PriceBook: `table` must be LiteLLM's model_prices_and_context_window.json as a parsed object, a file path or an http(s) URL",
      );
    }
    if (this.#location.kind === 'file') this.#table = objectTable(readTableFileSync(this.#location.path));
    else void this.refresh();
    const interval = refreshIntervalMs ?? (this.#location.kind === 'url' ? DEFAULT_URL_REFRESH_MS : 0);
    if (interval > 0) {
      this.#timer = setInterval(() => void this.refresh(), interval);
      this.#timer.unref();
    }
  }

  /**
   * The price of a model, or `undefined` when it has none. Tries, in order: the exact name (an alias
   * first, then an override or table entry), its lowercase, the same after dropping each leading
   * `provider/` segment in turn (`openrouter/openai/gpt-4o`, `openai/gpt-4o`, `gpt-4o`), then all of that
   * again without a trailing release date (`gpt-4o-2031-01-01` → `gpt-4o`). The first name the table
   * knows decides: an entry priced only per image, second or query gives `undefined`. Results, misses
   * included, are cached per name until the table changes.
   */
  resolve(model: string): ModelPrice | undefined {
    return this.#compiled(model)?.price;
  }

  /**
   * The dearest rates a call of this shape can be billed at on `model` (see `worstCaseRates`), or
   * `undefined` when the model has no price.
   */
  worstCaseRates(model: string, shape: BillingShape): WorstCaseRates | undefined {
    const compiled = this.#compiled(model);
    return compiled ? worstCaseRates(compiled, shape) : undefined;
  }

  /**
   * The cost of one call of `model` with `usage` (OpenAI chat semantics, see {@link TokenUsage}), in
   * integer nano-dollars. See {@link CostBreakdownNano} and {@link CostOptions}.
   * @example prices.cost('o4-mini', { promptTokens: 2000, completionTokens: 3000, reasoningTokens: 2500 }).totalNano // 15_400_000
   */
  cost(model: string, usage: TokenUsage, options?: CostOptions): CostBreakdownNano {
    const compiled = this.#compiled(model);
    if (!compiled) {
      this.#reportUnpriced(model);
      return unpricedCost();
    }
    return priceUsage(compiled, usage, options);
  }

  /**
   * The cost of one call in USD, line by line, for usage in any provider's shape (OpenAI chat or
   * Responses, Anthropic, Gemini, Bedrock, Cohere; see {@link normalizeUsage}) or a {@link TokenUsage}.
   * @example prices.calculateCost('claude-sonnet-4-5', { input_tokens: 1000, output_tokens: 500 }).total // 0.0105
   */
  calculateCost(model: string, usage: unknown, options?: CostOptions): CostBreakdown {
    const compiled = this.#compiled(model);
    if (!compiled) {
      this.#reportUnpriced(model);
      return toNanoBreakdown(unpricedCost(), null);
    }
    return toNanoBreakdown(priceUsage(compiled, normalizeUsage(usage), options), compiled.price.model);
  }

  /**
   * Fetches (or re-reads) a URL or file table now. Resolves `true` when the new table is in use, `false`
   * when there is nothing to refresh or the refresh failed (reported to `onError`; the last good table
   * stays). Never rejects. Concurrent calls share one download.
   */
  refresh(): Promise<boolean> {
    const location = this.#location;
    if (!location || this.#closed) return Promise.resolve(false);
    this.#inflight ??= this.#load(location).finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  /** Stops the refresh timer and any download in flight. Prices stay usable. Idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
  }

  async #load(location: TableLocation): Promise<boolean> {
    try {
      const table =
        location.kind === 'url'
          ? await fetchTable(location.url, this.#abort.signal)
          : await readTableFile(location.path);
      if (this.#closed) return false;
      this.#table = objectTable(table);
      this.#resolved.clear();
      this.#reportedUnpriced.clear();
      return true;
    } catch (error) {
      if (!this.#closed) this.#onError(error instanceof Error ? error : new Error(String(error)));
      return false;
    }
  }

  #compiled(model: string): CompiledPrice | undefined {
    const cached = this.#resolved.get(model);
    if (cached !== undefined) return cached ?? undefined;
    const found = this.#lookup(model, 0) ?? null;
    if (this.#resolved.size < MAX_CACHED_NAMES) this.#resolved.set(model, found);
    return found ?? undefined;
  }

  #reportUnpriced(model: string): void {
    if (!this.#onUnpriced || this.#reportedUnpriced.has(model)) return;
    // Past the cap, stay quiet rather than warn again for names already reported.
    if (this.#reportedUnpriced.size >= MAX_CACHED_NAMES) return;
    this.#reportedUnpriced.add(model);
    this.#onUnpriced(model);
  }

  #lookup(model: string, depth: number): CompiledPrice | undefined {
    for (const name of candidateNames(model)) {
      const target = this.#aliasTarget(name);
      if (target !== undefined) return depth < MAX_ALIAS_DEPTH ? this.#lookup(target, depth + 1) : undefined;
      const price = this.#lookupName(name);
      // The first name the table knows decides: an entry priced per image, second or query is not
      // priced as some other entry that happens to share its suffix.
      if (price !== undefined) return price ?? undefined;
    }
    return undefined;
  }

  #aliasTarget(name: string): string | undefined {
    if (this.#aliases.size === 0) return undefined;
    const exact = this.#aliases.get(name);
    if (exact !== undefined) return exact;
    this.#aliasIndex ??= buildLowercaseIndex(this.#aliases.keys());
    const key = this.#aliasIndex.get(name.toLowerCase());
    return key === undefined ? undefined : this.#aliases.get(key);
  }

  /** The compiled price of a table (or override) name; `null` when the entry exists but has no token price. */
  #lookupName(name: string): CompiledPrice | null | undefined {
    const exact = this.#entry(name);
    if (exact) return compilePrice(name, exact) ?? null;
    const lower = name.toLowerCase();
    this.#overrideIndex ??= buildLowercaseIndex(this.#overrides.keys());
    const canonical = this.#overrideIndex.get(lower) ?? this.#getTable().lowercaseIndex().get(lower);
    if (canonical === undefined || canonical === name) return undefined;
    const entry = this.#entry(canonical);
    return entry ? (compilePrice(canonical, entry) ?? null) : undefined;
  }

  /** The table's entry with its override merged over it. */
  #entry(name: string): LiteLLMEntry | undefined {
    const override = this.#overrides.get(name);
    const base = this.#getTable().get(name);
    if (!override) return base;
    return base ? { ...base, ...override } : override;
  }

  #getTable(): PriceTable {
    this.#table ??= snapshotTable();
    return this.#table;
  }
}

let defaultPriceBook: PriceBook | undefined;

/**
 * The cost of one call in USD, line by line, priced from the bundled snapshot of LiteLLM's table (loaded
 * on first use), for usage in any provider's shape (see {@link normalizeUsage}). For your own table,
 * overrides or aliases, use {@link PriceBook.calculateCost}.
 * @example
 * calculateCost('gpt-4o-mini', { prompt_tokens: 1000, completion_tokens: 500, prompt_tokens_details: { cached_tokens: 600 } });
 * // { input: 0.00006, cachedInput: 0.000045, output: 0.0003, total: 0.000405, totalNano: 405_000, priced: true, ... }
 */
export function calculateCost(model: string, usage: unknown, options?: CostOptions): CostBreakdown {
  defaultPriceBook ??= new PriceBook();
  return defaultPriceBook.calculateCost(model, usage, options);
}

export { normalizeUsage };
