import { readFileSync } from 'node:fs';

/** Prices in pico-dollars (1e-12 USD) per token, integers (Math.round(usd * 1e12)). */
export interface ModelPrice {
  /** The price table's name for the model (may differ from the name asked for, e.g. `gpt-4o` for `openai/gpt-4o`). */
  model: string;
  /** LiteLLM's `litellm_provider`, e.g. `openai`, `anthropic`, `vertex_ai-language-models`. */
  provider?: string;
  /** Price of a prompt token that is neither read from nor written to the cache. */
  inputPico: number;
  /** Price of a completion token. */
  outputPico: number;
  /** Price of a prompt token read from the cache; the input price applies when absent. */
  cacheReadPico?: number;
  /** Price of a prompt token written to the cache; the input price applies when absent. */
  cacheWritePico?: number;
  /** Price of a reasoning token; the output price applies when absent. */
  reasoningPico?: number;
  /** Largest completion the model can produce, from the table's `max_output_tokens`. */
  maxOutputTokens?: number;
}

/**
 * LiteLLM-format per-model override, as users write it in config. Costs are USD per token, exactly as in
 * LiteLLM's `model_prices_and_context_window.json`; the fields given replace the table's, the others stay.
 * @example { 'gpt-4o': { input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001 } }
 */
export interface ModelPriceOverride {
  input_cost_per_token?: number;
  output_cost_per_token?: number;
  cache_read_input_token_cost?: number;
  cache_creation_input_token_cost?: number;
  output_cost_per_reasoning_token?: number;
  max_output_tokens?: number;
  litellm_provider?: string;
}

/**
 * Token counts of one call, with OpenAI chat-completions semantics: `promptTokens` INCLUDES the cached
 * and cache-write tokens, `completionTokens` INCLUDES the reasoning tokens. Usage reported the Anthropic
 * way (input tokens excluding the cache) must be normalized to this before pricing.
 */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens read from the cache (OpenAI `prompt_tokens_details.cached_tokens`). */
  cachedPromptTokens?: number;
  /** Prompt tokens written to the cache (Anthropic `cache_creation_input_tokens`). */
  cacheWriteTokens?: number;
  /** Completion tokens spent reasoning (OpenAI `completion_tokens_details.reasoning_tokens`). */
  reasoningTokens?: number;
}

/**
 * Cost of one call in integer nano-dollars (1e-9 USD). Each line is rounded to the nearest nano-dollar on
 * its own; `totalNano` is rounded once from the exact pico-dollar sum, so it may differ from the sum of
 * the lines by a few nano-dollars.
 */
export interface CostBreakdownNano {
  /** Uncached prompt tokens x input price. */
  inputNano: number;
  /** Cache-read prompt tokens x cache-read price. */
  cachedInputNano: number;
  /** Cache-write prompt tokens x cache-write price. */
  cacheWriteNano: number;
  /** Completion tokens x output price, reasoning tokens at the reasoning price. */
  outputNano: number;
  totalNano: number;
  /** `false` when the model has no price: every amount is then 0. */
  priced: boolean;
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
   * Called once per unknown model name (per PriceBook) the first time a cost is asked for it; such calls
   * cost 0 and are flagged `priced: false`.
   * @example (model) => logger.warn(`no price for model ${model}: its calls are recorded at 0 USD`)
   */
  onUnpriced?: (model: string) => void;
  /**
   * A whole price table in LiteLLM's `model_prices_and_context_window.json` format (the parsed object),
   * used instead of the snapshot shipped with the package, e.g. a newer copy of LiteLLM's file.
   * @default the bundled snapshot of LiteLLM's table
   */
  table?: Record<string, unknown>;
}

type RawEntry = ModelPriceOverride;

/** A price table: exact lookups, plus a lowercase index built on first need. */
interface PriceSource {
  get(name: string): RawEntry | undefined;
  lowercaseIndex(): Map<string, string>;
}

interface SnapshotFile {
  meta: { sourceDate: string | null; count: number };
  fields: string[];
  models: Record<string, Array<string | number | null>>;
}

const NUMBER_FIELDS = [
  'input_cost_per_token',
  'output_cost_per_token',
  'cache_read_input_token_cost',
  'cache_creation_input_token_cost',
  'output_cost_per_reasoning_token',
  'max_output_tokens',
] as const;

// Bounds the per-PriceBook caches: model names come from request bodies, so an unbounded Map would let
// a caller grow memory with made-up names. Past the cap, lookups stay correct, just uncached.
const MAX_CACHED_NAMES = 10_000;

/** Names a table may hold that are documentation, not models. */
const NOT_MODELS = new Set(['sample_spec', 'fallback_generalizations']);

function buildLowercaseIndex(names: Iterable<string>): Map<string, string> {
  const index = new Map<string, string>();
  for (const name of names) {
    const lower = name.toLowerCase();
    if (!index.has(lower)) index.set(lower, name);
  }
  return index;
}

function isPrice(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

/** Reads the fields spendguard prices with from a LiteLLM entry, ignoring values of the wrong type. */
function readLiteLLMEntry(entry: unknown): RawEntry | undefined {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return undefined;
  const record = entry as Record<string, unknown>;
  const raw: RawEntry = {};
  for (const field of NUMBER_FIELDS) {
    const value = record[field];
    if (isPrice(value)) raw[field] = value;
  }
  if (typeof record.litellm_provider === 'string') raw.litellm_provider = record.litellm_provider;
  return raw;
}

function tableSource(table: Record<string, unknown>): PriceSource {
  let index: Map<string, string> | undefined;
  return {
    get: (name) =>
      Object.hasOwn(table, name) && !NOT_MODELS.has(name) ? readLiteLLMEntry(table[name]) : undefined,
    lowercaseIndex: () => {
      index ??= buildLowercaseIndex(Object.keys(table).filter((name) => !NOT_MODELS.has(name)));
      return index;
    },
  };
}

let snapshot: PriceSource | undefined;

function readSnapshotText(): string {
  // From source, price-book.ts sits next to snapshot.json. From the build, the code is bundled into
  // dist/*.js (snapshot copied to dist/snapshot.json by tsup.config.ts) or dist/testing/*.js.
  const candidates = ['./snapshot.json', '../snapshot.json'];
  for (const candidate of candidates) {
    try {
      return readFileSync(new URL(candidate, import.meta.url), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  throw new Error(
    `@spendguard/core: the bundled price snapshot (snapshot.json) was not found next to ${import.meta.url}. ` +
      'If you bundle @spendguard/core into your app, copy its dist/snapshot.json next to the bundle, or pass ' +
      "a LiteLLM price table as `table` (JSON.parse of LiteLLM's model_prices_and_context_window.json).",
  );
}

/** Loads the bundled snapshot once per process, on first use. */
function snapshotSource(): PriceSource {
  if (snapshot) return snapshot;
  const file = JSON.parse(readSnapshotText()) as SnapshotFile;
  const { models } = file;
  const column = (field: string): number => file.fields.indexOf(field);
  const numberColumns = NUMBER_FIELDS.map((field) => [field, column(field)] as const);
  const providerColumn = column('litellm_provider');
  let index: Map<string, string> | undefined;
  snapshot = {
    get: (name) => {
      if (!Object.hasOwn(models, name)) return undefined;
      const row = models[name] ?? [];
      const raw: RawEntry = {};
      for (const [field, at] of numberColumns) {
        const value = row[at];
        if (typeof value === 'number') raw[field] = value;
      }
      const provider = row[providerColumn];
      if (typeof provider === 'string') raw.litellm_provider = provider;
      return raw;
    },
    lowercaseIndex: () => {
      index ??= buildLowercaseIndex(Object.keys(models));
      return index;
    },
  };
  return snapshot;
}

/** USD per token to integer pico-dollars per token. */
function toPico(usd: number): number {
  return Math.round(usd * 1e12);
}

function toModelPrice(model: string, raw: RawEntry): ModelPrice | undefined {
  if (raw.input_cost_per_token === undefined && raw.output_cost_per_token === undefined) return undefined;
  const price: ModelPrice = {
    model,
    inputPico: toPico(raw.input_cost_per_token ?? 0),
    outputPico: toPico(raw.output_cost_per_token ?? 0),
  };
  if (raw.litellm_provider !== undefined) price.provider = raw.litellm_provider;
  if (raw.cache_read_input_token_cost !== undefined) {
    price.cacheReadPico = toPico(raw.cache_read_input_token_cost);
  }
  if (raw.cache_creation_input_token_cost !== undefined) {
    price.cacheWritePico = toPico(raw.cache_creation_input_token_cost);
  }
  if (raw.output_cost_per_reasoning_token !== undefined) {
    price.reasoningPico = toPico(raw.output_cost_per_reasoning_token);
  }
  if (raw.max_output_tokens !== undefined) price.maxOutputTokens = raw.max_output_tokens;
  return Object.freeze(price);
}

function validateOverrides(overrides: Record<string, ModelPriceOverride>): Map<string, RawEntry> {
  const valid = new Map<string, RawEntry>();
  for (const [model, override] of Object.entries(overrides)) {
    const where = `PriceBook: overrides[${JSON.stringify(model)}]`;
    if (override === null || typeof override !== 'object' || Array.isArray(override)) {
      throw new TypeError(
        `${where} must be an object in LiteLLM's format, e.g. { input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001 }`,
      );
    }
    const raw: RawEntry = {};
    for (const field of NUMBER_FIELDS) {
      const value: unknown = override[field];
      if (value === undefined) continue;
      if (!isPrice(value)) {
        const unit = field === 'max_output_tokens' ? 'a token count' : 'USD per token, e.g. 0.0000025';
        throw new TypeError(
          `${where}.${field} must be a non-negative finite number (${unit}); got ${JSON.stringify(value)}`,
        );
      }
      raw[field] = value;
    }
    const provider: unknown = override.litellm_provider;
    if (provider !== undefined) {
      if (typeof provider !== 'string') {
        throw new TypeError(
          `${where}.litellm_provider must be a string such as 'openai'; got ${JSON.stringify(provider)}`,
        );
      }
      raw.litellm_provider = provider;
    }
    valid.set(model, raw);
  }
  return valid;
}

/** Token counts are non-negative integers; anything else is read so as never to under-count. */
function tokens(count: number | undefined): number {
  if (count === undefined || !(count > 0)) return 0;
  return Number.isFinite(count) ? Math.ceil(count) : 0;
}

function picoToNano(pico: number): number {
  return Math.round(pico / 1000);
}

function bigPicoToNano(pico: bigint): number {
  return Number((pico + 500n) / 1000n);
}

/**
 * Prices calls from a per-model price table: by default a snapshot of LiteLLM's
 * `model_prices_and_context_window.json` shipped with the package and loaded on first use.
 *
 * Costs follow LiteLLM's rules for OpenAI chat usage: cached and cache-write tokens are part of
 * `promptTokens` and priced at the cache-read and cache-write prices (the input price when the model has
 * none); reasoning tokens are part of `completionTokens` and priced at `output_cost_per_reasoning_token`
 * (the output price when absent). Reported cache and reasoning tokens are always charged in full, even
 * when they exceed the totals they should be part of: spend is never under-counted.
 *
 * @example
 * const prices = new PriceBook({ onUnpriced: (model) => console.warn(`no price for ${model}`) });
 * prices.cost('gpt-4o', { promptTokens: 1000, completionTokens: 500 }).totalNano; // 7_500_000 (0.0075 USD)
 */
export class PriceBook {
  readonly #overrides: Map<string, RawEntry>;
  readonly #table: Record<string, unknown> | undefined;
  readonly #onUnpriced: ((model: string) => void) | undefined;
  readonly #resolved = new Map<string, ModelPrice | null>();
  readonly #reportedUnpriced = new Set<string>();
  #source: PriceSource | undefined;
  #overrideIndex: Map<string, string> | undefined;

  constructor(options: PriceBookOptions = {}) {
    const { overrides = {}, onUnpriced, table } = options;
    if (overrides === null || typeof overrides !== 'object' || Array.isArray(overrides)) {
      throw new TypeError('PriceBook: `overrides` must be an object keyed by model name');
    }
    if (table !== undefined && (table === null || typeof table !== 'object' || Array.isArray(table))) {
      throw new TypeError(
        "PriceBook: `table` must be the parsed object of LiteLLM's model_prices_and_context_window.json",
      );
    }
    if (onUnpriced !== undefined && typeof onUnpriced !== 'function') {
      throw new TypeError('PriceBook: `onUnpriced` must be a function (model: string) => void');
    }
    this.#overrides = validateOverrides(overrides);
    this.#table = table;
    this.#onUnpriced = onUnpriced;
  }

  /**
   * The price of a model, or `undefined` when it has none. Tries the exact name, then its lowercase,
   * then the same after dropping each leading `provider/` segment in turn (`openrouter/openai/gpt-4o`,
   * `openai/gpt-4o`, `gpt-4o`). Results, misses included, are cached per name.
   */
  resolve(model: string): ModelPrice | undefined {
    const cached = this.#resolved.get(model);
    if (cached !== undefined) return cached ?? undefined;
    const price = this.#lookup(model) ?? null;
    if (this.#resolved.size < MAX_CACHED_NAMES) this.#resolved.set(model, price);
    return price ?? undefined;
  }

  /** The cost of one call of `model` with `usage`, in integer nano-dollars. See {@link CostBreakdownNano}. */
  cost(model: string, usage: TokenUsage): CostBreakdownNano {
    const price = this.resolve(model);
    if (!price) {
      this.#reportUnpriced(model);
      return {
        inputNano: 0,
        cachedInputNano: 0,
        cacheWriteNano: 0,
        outputNano: 0,
        totalNano: 0,
        priced: false,
      };
    }
    const cached = tokens(usage.cachedPromptTokens);
    const cacheWrite = tokens(usage.cacheWriteTokens);
    const uncached = Math.max(0, tokens(usage.promptTokens) - cached - cacheWrite);
    const reasoning = tokens(usage.reasoningTokens);
    const visibleOutput = Math.max(0, tokens(usage.completionTokens) - reasoning);

    const cacheReadPrice = price.cacheReadPico ?? price.inputPico;
    const cacheWritePrice = price.cacheWritePico ?? price.inputPico;
    const reasoningPrice = price.reasoningPico ?? price.outputPico;

    const inputPico = uncached * price.inputPico;
    const cachedPico = cached * cacheReadPrice;
    const writePico = cacheWrite * cacheWritePrice;
    const outputPico = visibleOutput * price.outputPico + reasoning * reasoningPrice;
    const totalPico = inputPico + cachedPico + writePico + outputPico;
    if (Number.isSafeInteger(totalPico)) {
      return {
        inputNano: picoToNano(inputPico),
        cachedInputNano: picoToNano(cachedPico),
        cacheWriteNano: picoToNano(writePico),
        outputNano: picoToNano(outputPico),
        totalNano: picoToNano(totalPico),
        priced: true,
      };
    }
    // Past 2^53 pico-dollars (~9,000 USD in one call) floats lose cents: redo it exactly.
    const bigInput = BigInt(uncached) * BigInt(price.inputPico);
    const bigCached = BigInt(cached) * BigInt(cacheReadPrice);
    const bigWrite = BigInt(cacheWrite) * BigInt(cacheWritePrice);
    const bigOutput =
      BigInt(visibleOutput) * BigInt(price.outputPico) + BigInt(reasoning) * BigInt(reasoningPrice);
    return {
      inputNano: bigPicoToNano(bigInput),
      cachedInputNano: bigPicoToNano(bigCached),
      cacheWriteNano: bigPicoToNano(bigWrite),
      outputNano: bigPicoToNano(bigOutput),
      totalNano: bigPicoToNano(bigInput + bigCached + bigWrite + bigOutput),
      priced: true,
    };
  }

  #reportUnpriced(model: string): void {
    if (!this.#onUnpriced || this.#reportedUnpriced.has(model)) return;
    // Past the cap, stay quiet rather than warn again for names already reported.
    if (this.#reportedUnpriced.size >= MAX_CACHED_NAMES) return;
    this.#reportedUnpriced.add(model);
    this.#onUnpriced(model);
  }

  #lookup(model: string): ModelPrice | undefined {
    let name = model;
    for (;;) {
      const price = this.#lookupName(name);
      if (price) return price;
      const slash = name.indexOf('/');
      if (slash < 0) return undefined;
      name = name.slice(slash + 1);
    }
  }

  #lookupName(name: string): ModelPrice | undefined {
    const exact = this.#entry(name);
    if (exact) return toModelPrice(name, exact);
    const lower = name.toLowerCase();
    this.#overrideIndex ??= buildLowercaseIndex(this.#overrides.keys());
    const canonical = this.#overrideIndex.get(lower) ?? this.#getSource().lowercaseIndex().get(lower);
    if (canonical === undefined || canonical === name) return undefined;
    const entry = this.#entry(canonical);
    return entry ? toModelPrice(canonical, entry) : undefined;
  }

  /** The table's entry with its override merged over it. */
  #entry(name: string): RawEntry | undefined {
    const override = this.#overrides.get(name);
    const base = this.#getSource().get(name);
    if (!override) return base;
    return base ? { ...base, ...override } : override;
  }

  #getSource(): PriceSource {
    this.#source ??= this.#table ? tableSource(this.#table) : snapshotSource();
    return this.#source;
  }
}
