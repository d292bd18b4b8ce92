// LiteLLM's pricing rules: a table entry compiled once into rate cards, then usage x rates.
import type { TokenUsage } from './normalize-usage.js';
import { isObject, type LiteLLMEntry } from './price-table.js';

/**
 * A model's prices in pico-dollars (1e-12 USD) per token, integers (Math.round(usd * 1e12)), at the
 * standard service tier and below every prompt-size tier. The optional prices are present when the table
 * defines them; the pricing falls back as LiteLLM does (cache read/write at the input price, reasoning at
 * the output price...).
 */
export interface ModelPrice {
  /** The price table's name for the model (may differ from the name asked for, e.g. `gpt-4o` for `openai/gpt-4o`). */
  model: string;
  /** LiteLLM's `litellm_provider`, e.g. `openai`, `anthropic`, `vertex_ai-language-models`. */
  provider?: string;
  /** LiteLLM's `mode`: `chat`, `embedding`, `completion`... */
  mode?: string;
  /** Price of a prompt token that is neither read from nor written to the cache. */
  inputPico: number;
  /** Price of a completion token. */
  outputPico: number;
  /** Price of a prompt token read from the cache; the input price applies when absent. */
  cacheReadPico?: number;
  /** Price of a prompt token written to the cache (5-minute TTL); the input price applies when absent. */
  cacheWritePico?: number;
  /** Price of a prompt token written to the cache with a 1-hour TTL; the 5-minute price applies when absent. */
  cacheWrite1hPico?: number;
  /** Price of a reasoning token; the output price applies when absent. */
  reasoningPico?: number;
  /** Price of an audio prompt token; the input price applies when absent. */
  audioInputPico?: number;
  /** Price of an audio completion token; the output price applies when absent. */
  audioOutputPico?: number;
  /** Fixed price of each call (`input_cost_per_request`), in pico-dollars. */
  requestPico?: number;
  /** Largest completion the model can produce, from the table's `max_output_tokens`. */
  maxOutputTokens?: number;
  /** Largest prompt the model takes (a larger one is refused by the provider, unbilled), from `max_input_tokens`. */
  maxInputTokens?: number;
  /**
   * What Google bills grounding with Google Search by, on Gemini models (`gemini`, `vertex_ai` providers):
   * `per_query` (each search query, Gemini 3) or `per_prompt` (one fee per grounded call, Gemini 2.x),
   * from the table's `web_search_billing_unit` (absent: `per_prompt`, as LiteLLM reads it). Absent on
   * other models, whose searches are each billed.
   */
  webSearchBillingUnit?: 'per_query' | 'per_prompt';
  /**
   * The most a prompt token can cost on this model: over every prompt-size tier, service tier, cache
   * write and modality. With {@link ModelPrice.maxOutputPico}, what an upper-bound estimate should use.
   */
  maxInputPico: number;
  /** The most a completion token can cost on this model (any tier, reasoning, audio or image). */
  maxOutputPico: number;
}

/**
 * How a call was served, where usage alone does not say.
 * @example { serviceTier: 'priority' }
 */
export interface CostOptions {
  /**
   * OpenAI/Gemini service tier: `priority` and `flex` use the table's `*_priority` / `*_flex` prices
   * (each price falling back to the standard one the tier lacks); anything else is standard. `batch` is
   * the same as `batch: true`.
   * @default the usage's `serviceTier`, else standard
   */
  serviceTier?: 'default' | 'priority' | 'flex' | 'batch' | (string & {});
  /**
   * A batch-API call: every prompt token at `input_cost_per_token_batches` and every completion token at
   * `output_cost_per_token_batches` (half the standard prices when the table has none), as LiteLLM does.
   * @default false (true when the usage's service tier is `batch`)
   */
  batch?: boolean;
  /**
   * Search context size of the call's web searches, which selects the `search_context_cost_per_query` price.
   * @default the usage's `searchContextSize`, else 'medium'
   */
  searchContextSize?: 'low' | 'medium' | 'high';
}

/**
 * Cost of one call in integer nano-dollars (1e-9 USD). Each line is rounded to the nearest nano-dollar on
 * its own; `totalNano` is rounded once from the exact pico-dollar sum, so it may differ from the sum of
 * the lines by a few nano-dollars.
 */
export interface CostBreakdownNano {
  /** Prompt tokens neither cached, cache-written, audio nor image x the input price (all prompt tokens in batch). */
  inputNano: number;
  /** Cache-read prompt tokens x the cache-read price. */
  cachedInputNano: number;
  /** Cache-write prompt tokens x the 5-minute or 1-hour cache-write price. */
  cacheWriteNano: number;
  /** Completion tokens other than reasoning, audio and image x the output price (all of them in batch). */
  outputNano: number;
  /** Reasoning tokens x the reasoning price. */
  reasoningNano: number;
  /** Audio prompt and completion tokens x the audio prices. */
  audioNano: number;
  /** Image prompt and completion tokens x the image-token prices. */
  imageNano: number;
  /** The model's fixed per-call price. */
  requestNano: number;
  /** Web searches x the model's price per search. */
  webSearchNano: number;
  totalNano: number;
  /** `false` when the model has no price: every amount is then 0. */
  priced: boolean;
}

/** Per-token prices in pico-dollars with every fallback applied. */
interface RateCard {
  readonly input: number;
  readonly output: number;
  readonly cacheRead: number;
  readonly cacheWrite: number;
  readonly cacheWrite1h: number;
  readonly reasoning: number;
  readonly audioInput: number;
  readonly audioOutput: number;
  readonly imageInput: number;
  readonly imageOutput: number;
}

type RateKey = keyof RateCard;
type RawRates = { [K in RateKey]?: number };

/** A rate card that applies when the prompt has more than `above` tokens (0 for the base card). */
interface TierCard {
  readonly above: number;
  readonly rates: RateCard;
}

/** A table entry compiled for pricing; see {@link compilePrice}. */
export interface CompiledPrice {
  readonly price: ModelPrice;
  /** Prompt-size tiers by ascending threshold, the base card first; per service tier. */
  readonly standard: readonly TierCard[];
  readonly priority: readonly TierCard[];
  readonly flex: readonly TierCard[];
  readonly batchInput: number;
  readonly batchOutput: number;
  readonly request: number;
  readonly webSearch: { readonly low: number; readonly medium: number; readonly high: number } | undefined;
  /**
   * OpenAI's published fee per web search tool call (pico-dollars), for an OpenAI model the table gives
   * no `search_context_cost_per_query`: `web_search`, and `web_search_preview` on a reasoning model,
   * $10 per 1k calls; `web_search_preview` on another model $25 per 1k (`preview`).
   */
  readonly openaiSearchCall: { readonly call: number; readonly preview: number } | undefined;
}

/** OpenAI's web search fees per call (platform.openai.com/docs/pricing, "Built-in tools"), USD. */
export const OPENAI_WEB_SEARCH_CALL_USD = 0.01;
export const OPENAI_WEB_SEARCH_PREVIEW_CALL_USD = 0.025;
/** OpenAI's reasoning models (o-series, gpt-5 but its chat variants), whose preview searches cost $10/1k. */
const OPENAI_REASONING = /^(?:o\d|gpt-5(?!.*-chat))/;

/** LiteLLM's field for each rate. */
const FIELD: Readonly<Record<RateKey, string>> = {
  input: 'input_cost_per_token',
  output: 'output_cost_per_token',
  cacheRead: 'cache_read_input_token_cost',
  cacheWrite: 'cache_creation_input_token_cost',
  cacheWrite1h: 'cache_creation_input_token_cost_above_1hr',
  reasoning: 'output_cost_per_reasoning_token',
  audioInput: 'input_cost_per_audio_token',
  audioOutput: 'output_cost_per_audio_token',
  imageInput: 'input_cost_per_image_token',
  imageOutput: 'output_cost_per_image_token',
};
const RATE_KEYS = Object.keys(FIELD) as RateKey[];
/** The rates a `*_above_<n>k_tokens` tier can change (LiteLLM's `_get_token_base_cost`). */
const TIERED_KEYS: readonly RateKey[] = ['input', 'output', 'cacheRead', 'cacheWrite', 'cacheWrite1h'];
/** Only input prices declare thresholds, as in LiteLLM; the other fields follow them. */
const THRESHOLD_KEY = /^input_cost_per_token_above_(\d+(?:\.\d+)?)(k?)_tokens(?:_priority|_flex)?$/;

type Service = 'priority' | 'flex' | undefined;

/** A price in USD: a non-negative finite number (or numeric string, as LiteLLM also reads them). */
export function readUsd(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value === 'string' && value.trim() !== '') {
    const parsed = Number(value);
    return Number.isFinite(parsed) && parsed >= 0 ? parsed : undefined;
  }
  return undefined;
}

/** USD to integer pico-dollars. */
function toPico(usd: number): number {
  return Math.round(usd * 1e12);
}

/** LiteLLM's `_get_cost_per_unit`: the service tier's price when the entry has one, else the plain one. */
function field(entry: LiteLLMEntry, key: string, service: Service): number | undefined {
  if (service !== undefined) {
    const tiered = readUsd(entry[`${key}_${service}`]);
    if (tiered !== undefined) return tiered;
  }
  return readUsd(entry[key]);
}

function baseRates(entry: LiteLLMEntry, service: Service): RawRates {
  const raw: RawRates = {};
  for (const key of RATE_KEYS) {
    const value = field(entry, FIELD[key], service);
    if (value !== undefined) raw[key] = value;
  }
  return raw;
}

/**
 * Above a threshold: the tier's price where the entry defines one, else the price below the tier. For a
 * service tier whose price the size tier lacks (`gpt-5.4` has `input_cost_per_token_priority` and
 * `input_cost_per_token_above_272k_tokens` but no `..._above_272k_tokens_priority`), LiteLLM takes the
 * standard tier price; we take the larger of that and the service tier's base price, so that a long
 * priority call never costs less per token than a short one.
 */
function thresholdRates(entry: LiteLLMEntry, label: string, service: Service, base: RawRates): RawRates {
  const raw: RawRates = { ...base };
  for (const key of TIERED_KEYS) {
    const name = `${FIELD[key]}_above_${label}_tokens`;
    const own = service !== undefined ? readUsd(entry[`${name}_${service}`]) : undefined;
    const standard = readUsd(entry[name]);
    const below = base[key];
    if (own !== undefined) raw[key] = own;
    else if (standard !== undefined)
      raw[key] = service !== undefined && below !== undefined ? Math.max(standard, below) : standard;
  }
  return raw;
}

/** One `tiered_pricing` item: its prices, else the entry's top-level ones. */
function listTierRates(tier: LiteLLMEntry, service: Service, base: RawRates): RawRates {
  const raw: RawRates = { ...base };
  for (const key of RATE_KEYS) {
    const value = field(tier, FIELD[key], service);
    if (value !== undefined) raw[key] = value;
  }
  return raw;
}

/** USD rates to a pico-dollar rate card, with LiteLLM's fallbacks (and the input price for cache writes). */
function toCard(raw: RawRates): RateCard {
  const input = toPico(raw.input ?? 0);
  const output = toPico(raw.output ?? 0);
  const cacheWrite = raw.cacheWrite !== undefined ? toPico(raw.cacheWrite) : input;
  return {
    input,
    output,
    cacheRead: raw.cacheRead !== undefined ? toPico(raw.cacheRead) : input,
    cacheWrite,
    cacheWrite1h: raw.cacheWrite1h !== undefined ? toPico(raw.cacheWrite1h) : cacheWrite,
    reasoning: raw.reasoning !== undefined ? toPico(raw.reasoning) : output,
    audioInput: raw.audioInput !== undefined ? toPico(raw.audioInput) : input,
    audioOutput: raw.audioOutput !== undefined ? toPico(raw.audioOutput) : output,
    imageInput: raw.imageInput !== undefined ? toPico(raw.imageInput) : input,
    imageOutput: raw.imageOutput !== undefined ? toPico(raw.imageOutput) : output,
  };
}

/** The `tiered_pricing` items that price tokens by prompt size (`range: [from, to]`), by ascending `from`. */
function tokenTiers(entry: LiteLLMEntry): Array<{ from: number; tier: LiteLLMEntry }> {
  const list = entry.tiered_pricing;
  if (!Array.isArray(list)) return [];
  const tiers: Array<{ from: number; tier: LiteLLMEntry }> = [];
  for (const tier of list) {
    if (!isObject(tier) || !Array.isArray(tier.range)) continue;
    const from = tier.range[0];
    if (typeof from !== 'number' || !Number.isFinite(from) || from < 0) continue;
    if (
      readUsd(tier.input_cost_per_token) === undefined &&
      readUsd(tier.output_cost_per_token) === undefined
    ) {
      continue; // e.g. search tools priced per query by result count
    }
    tiers.push({ from, tier });
  }
  return tiers.sort((a, b) => a.from - b.from);
}

/** `{ '200k': 200000 }` for each `input_cost_per_token_above_200k_tokens[_priority|_flex]` key. */
function thresholds(entry: LiteLLMEntry): Array<{ label: string; above: number }> {
  const found = new Map<string, number>();
  for (const key in entry) {
    const match = THRESHOLD_KEY.exec(key);
    if (!match || readUsd(entry[key]) === undefined) continue;
    const [, digits = '', k] = match;
    found.set(`${digits}${k}`, Number(digits) * (k ? 1000 : 1));
  }
  return [...found].map(([label, above]) => ({ label, above })).sort((a, b) => a.above - b.above);
}

/** Rate cards by prompt size for one service tier, and the raw base rates (for {@link ModelPrice}). */
function tierCards(entry: LiteLLMEntry, service: Service): { cards: TierCard[]; base: RawRates } {
  const base = baseRates(entry, service);
  const listed = tokenTiers(entry);
  if (listed.length > 0) {
    const raws = listed.map(({ from, tier }) => ({ above: from, raw: listTierRates(tier, service, base) }));
    // Below the first listed range (none of LiteLLM's start above 0), the top-level prices apply.
    if ((raws[0]?.above ?? 0) > 0) raws.unshift({ above: 0, raw: base });
    return {
      cards: raws.map(({ above, raw }) => ({ above, rates: toCard(raw) })),
      base: raws[0]?.raw ?? base,
    };
  }
  const cards: TierCard[] = [{ above: 0, rates: toCard(base) }];
  for (const { label, above } of thresholds(entry)) {
    cards.push({ above, rates: toCard(thresholdRates(entry, label, service, base)) });
  }
  return { cards, base };
}

function hasServiceTier(entry: LiteLLMEntry, suffix: string): boolean {
  for (const key in entry) if (key.endsWith(suffix)) return true;
  return false;
}

function maxOf(cards: readonly TierCard[], keys: readonly RateKey[]): number {
  let max = 0;
  for (const { rates } of cards) for (const key of keys) max = Math.max(max, rates[key]);
  return max;
}

/**
 * Compiles a LiteLLM entry into rate cards, or `undefined` when it has no per-token or per-call price
 * (an image, audio-second or rerank model, or no price at all): those calls cannot be priced from tokens.
 */
export function compilePrice(model: string, entry: LiteLLMEntry): CompiledPrice | undefined {
  const request = readUsd(entry.input_cost_per_request);
  const standard = tierCards(entry, undefined);
  const raw = standard.base;
  if (raw.input === undefined && raw.output === undefined && request === undefined) return undefined;

  const priority = hasServiceTier(entry, '_priority') ? tierCards(entry, 'priority').cards : standard.cards;
  const flex = hasServiceTier(entry, '_flex') ? tierCards(entry, 'flex').cards : standard.cards;
  const base = standard.cards[0]!.rates;
  const batchIn = readUsd(entry.input_cost_per_token_batches);
  const batchOut = readUsd(entry.output_cost_per_token_batches);
  // LiteLLM's batch_cost_calculator: half the standard prices when the table has no batch prices.
  const batchInput = batchIn !== undefined ? toPico(batchIn) : Math.ceil(base.input / 2);
  const batchOutput = batchOut !== undefined ? toPico(batchOut) : Math.ceil(base.output / 2);

  let webSearch: CompiledPrice['webSearch'];
  const search = entry.search_context_cost_per_query;
  if (isObject(search)) {
    const low = readUsd(search.search_context_size_low);
    const medium = readUsd(search.search_context_size_medium);
    const high = readUsd(search.search_context_size_high);
    const fallback = medium ?? high ?? low;
    if (fallback !== undefined) {
      webSearch = {
        low: toPico(low ?? fallback),
        medium: toPico(fallback),
        high: toPico(high ?? fallback),
      };
    }
  }

  const gemini = geminiSearchBilling(model, entry);
  if (gemini && webSearch === undefined) {
    const fee = toPico(GEMINI_DEFAULT_SEARCH_USD);
    webSearch = { low: fee, medium: fee, high: fee };
  }

  let openaiSearchCall: CompiledPrice['openaiSearchCall'];
  if (webSearch === undefined && entry.litellm_provider === 'openai') {
    const name = model.slice(model.lastIndexOf('/') + 1).toLowerCase();
    const call = toPico(OPENAI_WEB_SEARCH_CALL_USD);
    openaiSearchCall = {
      call,
      preview: OPENAI_REASONING.test(name) ? call : toPico(OPENAI_WEB_SEARCH_PREVIEW_CALL_USD),
    };
  }

  const all = [...standard.cards, ...priority, ...flex];
  const price: ModelPrice = {
    model,
    inputPico: base.input,
    outputPico: base.output,
    maxInputPico: Math.max(
      batchInput,
      maxOf(all, ['input', 'cacheRead', 'cacheWrite', 'cacheWrite1h', 'audioInput', 'imageInput']),
    ),
    maxOutputPico: Math.max(batchOutput, maxOf(all, ['output', 'reasoning', 'audioOutput', 'imageOutput'])),
  };
  if (typeof entry.litellm_provider === 'string') price.provider = entry.litellm_provider;
  if (typeof entry.mode === 'string') price.mode = entry.mode;
  if (raw.cacheRead !== undefined) price.cacheReadPico = base.cacheRead;
  if (raw.cacheWrite !== undefined) price.cacheWritePico = base.cacheWrite;
  if (raw.cacheWrite1h !== undefined) price.cacheWrite1hPico = base.cacheWrite1h;
  if (raw.reasoning !== undefined) price.reasoningPico = base.reasoning;
  if (raw.audioInput !== undefined) price.audioInputPico = base.audioInput;
  if (raw.audioOutput !== undefined) price.audioOutputPico = base.audioOutput;
  if (request !== undefined) price.requestPico = toPico(request);
  if (gemini) price.webSearchBillingUnit = gemini;
  const maxOutputTokens = entry.max_output_tokens;
  if (typeof maxOutputTokens === 'number' && maxOutputTokens > 0 && Number.isFinite(maxOutputTokens)) {
    price.maxOutputTokens = maxOutputTokens;
  }
  const maxInputTokens = entry.max_input_tokens;
  if (typeof maxInputTokens === 'number' && maxInputTokens > 0 && Number.isFinite(maxInputTokens)) {
    price.maxInputTokens = maxInputTokens;
  }

  return {
    price: Object.freeze(price),
    standard: standard.cards,
    priority,
    flex,
    batchInput,
    batchOutput,
    request: request !== undefined ? toPico(request) : 0,
    webSearch,
    openaiSearchCall,
  };
}

/** LiteLLM's Gemini search fee when the table has no `search_context_cost_per_query`: $35 per 1,000 grounded prompts. */
const GEMINI_DEFAULT_SEARCH_USD = 0.035;

/**
 * How Google bills grounding on a Gemini model (LiteLLM's gemini and vertex_ai cost calculators):
 * per search query when the table says `per_query`, else per grounded prompt; `undefined` for a model
 * of another provider.
 */
function geminiSearchBilling(model: string, entry: LiteLLMEntry): 'per_query' | 'per_prompt' | undefined {
  const provider = typeof entry.litellm_provider === 'string' ? entry.litellm_provider : '';
  // Google's own models only: Vertex also serves Claude, Llama, Mistral... billed by their own rules.
  if (provider !== 'gemini' && provider !== 'vertex_ai-language-models' && provider !== 'vertex_ai') {
    return undefined;
  }
  if (provider === 'vertex_ai' && !/gemini/i.test(model)) return undefined;
  return entry.web_search_billing_unit === 'per_query' ? 'per_query' : 'per_prompt';
}

/** Token counts are non-negative integers; anything else is read so as never to under-count. */
function tokens(count: number | undefined): number {
  if (count === undefined || !(count > 0)) return 0;
  return Number.isFinite(count) ? Math.ceil(count) : 0;
}

// The lines of a bill: tokens x pico-dollar rate each. Scratch arrays rather than objects keep the hot
// path free of allocations (pricing is synchronous, so they are never shared).
const INPUT = 0;
const CACHED = 1;
const WRITE_5M = 2;
const WRITE_1H = 3;
const OUTPUT = 4;
const REASONING = 5;
const AUDIO_IN = 6;
const AUDIO_OUT = 7;
const IMAGE_IN = 8;
const IMAGE_OUT = 9;
const REQUEST = 10;
const SEARCH = 11;
const LINES = 12;
const COUNTS = new Float64Array(LINES);
const RATES = new Float64Array(LINES);

function line(i: number): number {
  return COUNTS[i]! * RATES[i]!;
}

function picoToNano(pico: number): number {
  return Math.round(pico / 1000);
}

function bigPicoToNano(pico: bigint): number {
  return Number((pico + 500n) / 1000n);
}

/** The cost of nothing, for a model without a price. */
export function unpricedCost(): CostBreakdownNano {
  return {
    inputNano: 0,
    cachedInputNano: 0,
    cacheWriteNano: 0,
    outputNano: 0,
    reasoningNano: 0,
    audioNano: 0,
    imageNano: 0,
    requestNano: 0,
    webSearchNano: 0,
    totalNano: 0,
    priced: false,
  };
}

/**
 * Usage x prices, by LiteLLM's rules (`generic_cost_per_token`):
 * - the prompt total (cache reads and writes included) picks the prompt-size tier, and the WHOLE call is
 *   priced at that tier's rates (those it defines; the others stay);
 * - cached tokens at the cache-read price, cache writes at the 5-minute or 1-hour write price, audio and
 *   image prompt tokens at their prices, the rest of the prompt at the input price;
 * - reasoning, audio and image completion tokens at their prices, the rest at the output price;
 * - plus the per-call price and the web searches.
 * Reported cache, audio and reasoning tokens are charged in full even beyond the totals they should be
 * part of: spend is never under-counted.
 */
export function priceUsage(
  compiled: CompiledPrice,
  usage: TokenUsage,
  options?: CostOptions,
): CostBreakdownNano {
  const cached = tokens(usage.cachedPromptTokens);
  const write1h = tokens(usage.cacheWrite1hTokens);
  const write5m = Math.max(0, tokens(usage.cacheWriteTokens) - write1h);
  const audioIn = tokens(usage.audioPromptTokens);
  const imageIn = tokens(usage.imagePromptTokens);
  const special = cached + write5m + write1h + audioIn + imageIn;
  const prompt = Math.max(tokens(usage.promptTokens), special);
  const reasoning = tokens(usage.reasoningTokens);
  const audioOut = tokens(usage.audioCompletionTokens);
  // OpenAI's Images API reports gpt-image-1's output tokens without a split, and they are all image
  // tokens: an image generation model's output not said to be images is images (never the text price,
  // which such a model may not even have).
  const imageOut =
    compiled.price.mode === 'image_generation' && !(tokens(usage.imageCompletionTokens) > 0)
      ? Math.max(0, tokens(usage.completionTokens) - reasoning - audioOut)
      : tokens(usage.imageCompletionTokens);
  const completion = Math.max(tokens(usage.completionTokens), reasoning + audioOut + imageOut);

  const serviceTier = options?.serviceTier ?? usage.serviceTier;
  COUNTS.fill(0);
  if (options?.batch ?? serviceTier === 'batch') {
    COUNTS[INPUT] = prompt;
    RATES[INPUT] = compiled.batchInput;
    COUNTS[OUTPUT] = completion;
    RATES[OUTPUT] = compiled.batchOutput;
  } else {
    const cards =
      serviceTier === 'priority'
        ? compiled.priority
        : serviceTier === 'flex'
          ? compiled.flex
          : compiled.standard;
    let card = cards[0]!;
    for (let i = 1; i < cards.length; i++) {
      const next = cards[i]!;
      if (prompt > next.above) card = next;
    }
    const rates = card.rates;
    COUNTS[INPUT] = prompt - special;
    RATES[INPUT] = rates.input;
    COUNTS[CACHED] = cached;
    RATES[CACHED] = rates.cacheRead;
    COUNTS[WRITE_5M] = write5m;
    RATES[WRITE_5M] = rates.cacheWrite;
    COUNTS[WRITE_1H] = write1h;
    RATES[WRITE_1H] = rates.cacheWrite1h;
    COUNTS[AUDIO_IN] = audioIn;
    RATES[AUDIO_IN] = rates.audioInput;
    COUNTS[IMAGE_IN] = imageIn;
    RATES[IMAGE_IN] = rates.imageInput;
    COUNTS[OUTPUT] = completion - reasoning - audioOut - imageOut;
    RATES[OUTPUT] = rates.output;
    COUNTS[REASONING] = reasoning;
    RATES[REASONING] = rates.reasoning;
    COUNTS[AUDIO_OUT] = audioOut;
    RATES[AUDIO_OUT] = rates.audioOutput;
    COUNTS[IMAGE_OUT] = imageOut;
    RATES[IMAGE_OUT] = rates.imageOutput;
  }
  COUNTS[REQUEST] = compiled.request > 0 ? 1 : 0;
  RATES[REQUEST] = compiled.request;
  let searches = tokens(usage.webSearchRequests);
  // Google bills a grounded prompt once, however many queries it ran (Gemini 2.x).
  if (compiled.price.webSearchBillingUnit === 'per_prompt') searches = Math.min(1, searches);
  if (searches > 0 && compiled.webSearch) {
    COUNTS[SEARCH] = searches;
    RATES[SEARCH] = compiled.webSearch[options?.searchContextSize ?? usage.searchContextSize ?? 'medium'];
  } else if (searches > 0 && compiled.openaiSearchCall) {
    COUNTS[SEARCH] = searches;
    RATES[SEARCH] =
      usage.webSearchTool === 'web_search_preview'
        ? compiled.openaiSearchCall.preview
        : compiled.openaiSearchCall.call;
  }

  let total = 0;
  for (let i = 0; i < LINES; i++) total += COUNTS[i]! * RATES[i]!;
  if (!Number.isSafeInteger(total)) return bigPriceLines();
  return {
    inputNano: picoToNano(line(INPUT)),
    cachedInputNano: picoToNano(line(CACHED)),
    cacheWriteNano: picoToNano(line(WRITE_5M) + line(WRITE_1H)),
    outputNano: picoToNano(line(OUTPUT)),
    reasoningNano: picoToNano(line(REASONING)),
    audioNano: picoToNano(line(AUDIO_IN) + line(AUDIO_OUT)),
    imageNano: picoToNano(line(IMAGE_IN) + line(IMAGE_OUT)),
    requestNano: picoToNano(line(REQUEST)),
    webSearchNano: picoToNano(line(SEARCH)),
    totalNano: picoToNano(total),
    priced: true,
  };
}

/** Past 2^53 pico-dollars (~9,000 USD in one call) floats lose cents: the same lines, exactly. */
function bigPriceLines(): CostBreakdownNano {
  const bigLine = (...indexes: number[]): bigint => {
    let sum = 0n;
    for (const i of indexes) sum += BigInt(COUNTS[i]!) * BigInt(RATES[i]!);
    return sum;
  };
  const all = Array.from({ length: LINES }, (_, i) => i);
  return {
    inputNano: bigPicoToNano(bigLine(INPUT)),
    cachedInputNano: bigPicoToNano(bigLine(CACHED)),
    cacheWriteNano: bigPicoToNano(bigLine(WRITE_5M, WRITE_1H)),
    outputNano: bigPicoToNano(bigLine(OUTPUT)),
    reasoningNano: bigPicoToNano(bigLine(REASONING)),
    audioNano: bigPicoToNano(bigLine(AUDIO_IN, AUDIO_OUT)),
    imageNano: bigPicoToNano(bigLine(IMAGE_IN, IMAGE_OUT)),
    requestNano: bigPicoToNano(bigLine(REQUEST)),
    webSearchNano: bigPicoToNano(bigLine(SEARCH)),
    totalNano: bigPicoToNano(bigLine(...all)),
    priced: true,
  };
}

/** What a request says about how it can be billed, for {@link worstCaseRates}. */
export interface BillingShape {
  /** An upper bound of the prompt's tokens (picks the prompt-size tiers that can apply). */
  promptTokens: number;
  /** The service tier the request names (`service_tier`); none: the standard prices. */
  serviceTier?: string | undefined;
  /** The request marks content for caching (Anthropic `cache_control`): cache-write prices can apply. */
  cacheWrites: boolean;
  /** The request asks for audio output (`modalities` with `audio`). */
  audioOutput: boolean;
}

/** The dearest pico-dollar rates a call of this shape can be billed at, per token of each kind. */
export interface WorstCaseRates {
  /** A text, image or file prompt token. */
  input: number;
  /** An audio prompt token. */
  audioInput: number;
  /** A completion token (reasoning included). */
  output: number;
  /** The per-call price (`input_cost_per_request`). */
  request: number;
  /**
   * One web search at the dearest search-context size (an OpenAI model the table gives no search price:
   * OpenAI's dearest fee per call), 0 when the model has no search price.
   */
  webSearch: number;
}

/**
 * The dearest rates a request can be billed at, from what the request itself says: the prompt-size tiers
 * its prompt bound can reach (the whole call is priced at one tier, so every tier up to the bound
 * counts), the service tier it names (`priority`, `flex`; the standard prices otherwise), cache writes
 * only when it marks content for caching, audio output only when it asks for it. Reasoning tokens are
 * completion tokens and count at the dearer of the two prices.
 */
export function worstCaseRates(compiled: CompiledPrice, shape: BillingShape): WorstCaseRates {
  const cards =
    shape.serviceTier === 'priority'
      ? compiled.priority
      : shape.serviceTier === 'flex'
        ? compiled.flex
        : compiled.standard;
  let input = 0;
  let audioInput = 0;
  let output = 0;
  for (let i = 0; i < cards.length; i++) {
    const card = cards[i]!;
    if (i > 0 && !(shape.promptTokens > card.above)) break;
    const r = card.rates;
    let cardInput = Math.max(r.input, r.cacheRead, r.imageInput);
    if (shape.cacheWrites) cardInput = Math.max(cardInput, r.cacheWrite, r.cacheWrite1h);
    input = Math.max(input, cardInput);
    audioInput = Math.max(audioInput, cardInput, r.audioInput);
    let cardOutput = Math.max(r.output, r.reasoning, r.imageOutput);
    if (shape.audioOutput) cardOutput = Math.max(cardOutput, r.audioOutput);
    output = Math.max(output, cardOutput);
  }
  const search = compiled.webSearch;
  const call = compiled.openaiSearchCall;
  return {
    input,
    audioInput,
    output,
    request: compiled.request,
    webSearch: search
      ? Math.max(search.low, search.medium, search.high)
      : call
        ? Math.max(call.call, call.preview)
        : 0,
  };
}
