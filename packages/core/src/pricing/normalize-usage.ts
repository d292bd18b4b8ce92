/**
 * Token counts of one call, with OpenAI chat-completions semantics: `promptTokens` INCLUDES the cached,
 * cache-write, audio and image prompt tokens; `completionTokens` INCLUDES the reasoning, audio and image
 * completion tokens. Usage reported another way (Anthropic's `input_tokens` exclude the cache, Gemini's
 * `candidatesTokenCount` excludes the thoughts) is brought to this shape by {@link normalizeUsage}.
 */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens read from the cache (OpenAI `prompt_tokens_details.cached_tokens`). */
  cachedPromptTokens?: number;
  /**
   * Prompt tokens written to the cache, all durations (Anthropic `cache_creation_input_tokens`). Priced at
   * the 5-minute write price, except the {@link TokenUsage.cacheWrite1hTokens} among them.
   */
  cacheWriteTokens?: number;
  /** Of the cache-write tokens, those written with a 1-hour TTL (Anthropic `ephemeral_1h_input_tokens`). */
  cacheWrite1hTokens?: number;
  /** Completion tokens spent reasoning (OpenAI `completion_tokens_details.reasoning_tokens`). */
  reasoningTokens?: number;
  /** Prompt tokens that are audio (OpenAI `prompt_tokens_details.audio_tokens`). */
  audioPromptTokens?: number;
  /** Completion tokens that are audio (OpenAI `completion_tokens_details.audio_tokens`). */
  audioCompletionTokens?: number;
  /** Prompt tokens that are images (Gemini `promptTokensDetails` IMAGE, OpenAI `image_tokens`). */
  imagePromptTokens?: number;
  /** Completion tokens that are images (Gemini `candidatesTokensDetails` IMAGE). */
  imageCompletionTokens?: number;
  /** Web searches the provider ran for the call (Anthropic `server_tool_use.web_search_requests`). */
  webSearchRequests?: number;
  /** Search context size the provider reports (Perplexity `search_context_size`), or the request named. */
  searchContextSize?: 'low' | 'medium' | 'high';
  /**
   * The OpenAI web search tool the searches ran with, which sets OpenAI's fee for a model the price
   * table gives no search price (`web_search_preview` costs more on non-reasoning models).
   */
  webSearchTool?: 'chat' | 'web_search' | 'web_search_preview';
  /** Service tier the provider says it served the call on (`default`, `priority`, `flex`, `batch`...). */
  serviceTier?: string;
}

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A token count: a finite positive number, else 0. */
function count(value: unknown): number {
  return typeof value === 'number' && value > 0 && Number.isFinite(value) ? value : 0;
}

function child(value: Obj, key: string): Obj | undefined {
  const found = value[key];
  return isObject(found) ? found : undefined;
}

function isNumber(value: unknown): value is number {
  return typeof value === 'number';
}

/** Builds a TokenUsage with only the optional fields that are non-zero. */
function usage(
  fields: Omit<TokenUsage, 'serviceTier' | 'searchContextSize' | 'webSearchTool'>,
  extra: Obj,
): TokenUsage {
  const out: TokenUsage = { promptTokens: fields.promptTokens, completionTokens: fields.completionTokens };
  const optional = [
    'cachedPromptTokens',
    'cacheWriteTokens',
    'cacheWrite1hTokens',
    'reasoningTokens',
    'audioPromptTokens',
    'audioCompletionTokens',
    'imagePromptTokens',
    'imageCompletionTokens',
    'webSearchRequests',
  ] as const;
  for (const key of optional) {
    const value = fields[key];
    if (value !== undefined && value > 0) out[key] = value;
  }
  const tier = extra.service_tier;
  if (typeof tier === 'string' && tier !== '') out.serviceTier = tier;
  const size = extra.search_context_size;
  if (size === 'low' || size === 'medium' || size === 'high') out.searchContextSize = size;
  const tool = extra.web_search_tool;
  if (tool === 'chat' || tool === 'web_search' || tool === 'web_search_preview') out.webSearchTool = tool;
  return out;
}

/** Sum of the token counts of one modality in Gemini's `[{ modality, tokenCount }]` lists. */
function modalityTokens(details: unknown, modality: string): number {
  if (!Array.isArray(details)) return 0;
  let total = 0;
  for (const item of details) {
    if (isObject(item) && item.modality === modality) total += count(item.tokenCount);
  }
  return total;
}

/** Already our shape (`promptTokens`...): copied, with bad counts read as 0. */
function fromTokenUsage(raw: Obj): TokenUsage {
  return usage(
    {
      promptTokens: count(raw.promptTokens),
      completionTokens: count(raw.completionTokens),
      cachedPromptTokens: count(raw.cachedPromptTokens),
      cacheWriteTokens: count(raw.cacheWriteTokens),
      cacheWrite1hTokens: count(raw.cacheWrite1hTokens),
      reasoningTokens: count(raw.reasoningTokens),
      audioPromptTokens: count(raw.audioPromptTokens),
      audioCompletionTokens: count(raw.audioCompletionTokens),
      imagePromptTokens: count(raw.imagePromptTokens),
      imageCompletionTokens: count(raw.imageCompletionTokens),
      webSearchRequests: count(raw.webSearchRequests),
    },
    {
      service_tier: raw.serviceTier,
      search_context_size: raw.searchContextSize,
      web_search_tool: raw.webSearchTool,
    },
  );
}

/**
 * Search queries a Gemini response ran for grounding with Google Search: the non-empty
 * `groundingMetadata.webSearchQueries` of every candidate (either spelling), as LiteLLM counts them.
 * Pricing then bills one per grounded prompt or each query, by the model's `web_search_billing_unit`.
 */
function geminiSearchQueries(candidates: unknown): number {
  if (!Array.isArray(candidates)) return 0;
  let queries = 0;
  for (const candidate of candidates) {
    if (!isObject(candidate)) continue;
    const grounding = child(candidate, 'groundingMetadata') ?? child(candidate, 'grounding_metadata');
    const list = grounding?.webSearchQueries ?? grounding?.web_search_queries;
    if (!Array.isArray(list)) continue;
    for (const query of list) if (typeof query === 'string' && query.trim() !== '') queries += 1;
  }
  return queries;
}

/** Gemini / Vertex `usageMetadata`: `candidatesTokenCount` excludes the thoughts, billed as output. */
function fromGemini(raw: Obj, extra: Obj, searches = 0): TokenUsage {
  const toolUse = count(raw.toolUsePromptTokenCount);
  const prompt = count(raw.promptTokenCount) + toolUse;
  const thoughts = count(raw.thoughtsTokenCount);
  const candidates = isNumber(raw.candidatesTokenCount)
    ? count(raw.candidatesTokenCount)
    : Math.max(0, count(raw.totalTokenCount) - prompt - thoughts);
  return usage(
    {
      promptTokens: prompt,
      completionTokens: candidates + thoughts,
      cachedPromptTokens: count(raw.cachedContentTokenCount),
      reasoningTokens: thoughts,
      audioPromptTokens: modalityTokens(raw.promptTokensDetails, 'AUDIO'),
      imagePromptTokens: modalityTokens(raw.promptTokensDetails, 'IMAGE'),
      audioCompletionTokens: modalityTokens(raw.candidatesTokensDetails, 'AUDIO'),
      imageCompletionTokens: modalityTokens(raw.candidatesTokensDetails, 'IMAGE'),
      webSearchRequests: searches,
    },
    extra,
  );
}

/** Anthropic (and Bedrock/Vertex Claude): `input_tokens` EXCLUDE the cache reads and writes. */
function fromAnthropic(raw: Obj, extra: Obj): TokenUsage {
  const read = count(raw.cache_read_input_tokens);
  const split = child(raw, 'cache_creation');
  const write5m = count(split?.ephemeral_5m_input_tokens);
  const write1h = count(split?.ephemeral_1h_input_tokens);
  const writes = Math.max(count(raw.cache_creation_input_tokens), write5m + write1h);
  return usage(
    {
      promptTokens: count(raw.input_tokens) + read + writes,
      completionTokens: count(raw.output_tokens),
      cachedPromptTokens: read,
      cacheWriteTokens: writes,
      cacheWrite1hTokens: write1h,
      webSearchRequests: count(child(raw, 'server_tool_use')?.web_search_requests),
    },
    { ...extra, service_tier: raw.service_tier ?? extra.service_tier },
  );
}

/** Bedrock Converse: `inputTokens` exclude the cache, as Anthropic's do. */
function fromBedrockConverse(raw: Obj, extra: Obj): TokenUsage {
  const read = count(raw.cacheReadInputTokens);
  const writes = count(raw.cacheWriteInputTokens);
  return usage(
    {
      promptTokens: count(raw.inputTokens) + read + writes,
      completionTokens: count(raw.outputTokens),
      cachedPromptTokens: read,
      cacheWriteTokens: writes,
    },
    extra,
  );
}

/** OpenAI Responses and Realtime: `input_tokens` INCLUDE the cached ones, `output_tokens` the reasoning. */
function fromOpenAIResponses(raw: Obj, extra: Obj): TokenUsage {
  const input = child(raw, 'input_tokens_details') ?? child(raw, 'input_token_details');
  const output = child(raw, 'output_tokens_details') ?? child(raw, 'output_token_details');
  return usage(
    {
      promptTokens: count(raw.input_tokens),
      completionTokens: count(raw.output_tokens),
      cachedPromptTokens: count(input?.cached_tokens),
      audioPromptTokens: count(input?.audio_tokens),
      imagePromptTokens: count(input?.image_tokens),
      reasoningTokens: count(output?.reasoning_tokens),
      audioCompletionTokens: count(output?.audio_tokens),
      imageCompletionTokens: count(output?.image_tokens),
    },
    extra,
  );
}

/**
 * OpenAI chat completions, and everyone who speaks it (Azure, Mistral, DeepSeek, xAI, Groq, OpenRouter,
 * Perplexity...). `prompt_tokens` include the cached and audio tokens, `completion_tokens` the reasoning
 * and audio tokens.
 */
function fromOpenAIChat(raw: Obj, extra: Obj): TokenUsage {
  const prompt = count(raw.prompt_tokens);
  let completion = count(raw.completion_tokens);
  const promptDetails = child(raw, 'prompt_tokens_details');
  const completionDetails = child(raw, 'completion_tokens_details');
  const reasoning = count(completionDetails?.reasoning_tokens) || count(raw.reasoning_tokens);
  // A few providers (xAI, Perplexity) report reasoning beside completion_tokens rather than inside it;
  // their total_tokens then says so. OpenAI's total is always prompt + completion.
  const total = count(raw.total_tokens);
  if (reasoning > 0 && total !== prompt + completion && total === prompt + completion + reasoning) {
    completion += reasoning;
  }
  return usage(
    {
      promptTokens: prompt,
      completionTokens: completion,
      // DeepSeek's older field for the same thing.
      cachedPromptTokens: count(promptDetails?.cached_tokens) || count(raw.prompt_cache_hit_tokens),
      audioPromptTokens: count(promptDetails?.audio_tokens),
      imagePromptTokens: count(promptDetails?.image_tokens),
      reasoningTokens: reasoning,
      audioCompletionTokens: count(completionDetails?.audio_tokens),
      imageCompletionTokens: count(completionDetails?.image_tokens),
      webSearchRequests: count(raw.num_search_queries),
    },
    {
      ...extra,
      service_tier: raw.service_tier ?? extra.service_tier,
      search_context_size: raw.search_context_size ?? extra.search_context_size,
    },
  );
}

const ANTHROPIC_KEYS = [
  'cache_read_input_tokens',
  'cache_creation_input_tokens',
  'cache_creation',
  'server_tool_use',
];

function normalize(raw: unknown, extra: Obj, depth: number): TokenUsage {
  if (!isObject(raw) || depth > 3) return { promptTokens: 0, completionTokens: 0 };
  if (isNumber(raw.promptTokens) || isNumber(raw.completionTokens)) return fromTokenUsage(raw);

  // A whole response (or stream event) rather than its usage: look inside, keeping what the envelope says.
  const outer: Obj = { ...extra };
  if (typeof raw.service_tier === 'string') outer.service_tier = raw.service_tier;
  const gemini = child(raw, 'usageMetadata');
  if (gemini) return fromGemini(gemini, outer, geminiSearchQueries(raw.candidates));
  const inner = child(raw, 'usage') ?? child(child(raw, 'meta') ?? {}, 'billed_units');
  if (inner) return normalize(inner, outer, depth + 1);
  const nested = child(raw, 'response') ?? child(raw, 'message');
  if (nested && (isObject(nested.usage) || isObject(nested.usageMetadata))) {
    return normalize(nested, outer, depth + 1);
  }

  if (isNumber(raw.promptTokenCount) || isNumber(raw.candidatesTokenCount) || isNumber(raw.totalTokenCount)) {
    return fromGemini(raw, outer);
  }
  if (isNumber(raw.inputTokens) || isNumber(raw.outputTokens)) return fromBedrockConverse(raw, outer);
  if (isNumber(raw.prompt_tokens) || isNumber(raw.completion_tokens)) return fromOpenAIChat(raw, outer);
  // Cohere: the billed units are what is charged (`tokens` may include the prompt template).
  const billed = child(raw, 'billed_units');
  if (billed) return normalize(billed, outer, depth + 1);
  if (isNumber(raw.input_tokens) || isNumber(raw.output_tokens)) {
    return ANTHROPIC_KEYS.some((key) => raw[key] !== undefined && raw[key] !== null)
      ? fromAnthropic(raw, outer)
      : fromOpenAIResponses(raw, outer);
  }
  return { promptTokens: 0, completionTokens: 0 };
}

/**
 * Normalizes the usage a provider reported, in any of the shapes below, into {@link TokenUsage}
 * (OpenAI chat-completions semantics: cache, audio and image tokens inside the prompt total, reasoning,
 * audio and image tokens inside the completion total). Accepts the usage object itself or the whole
 * response body that carries it (`usage`, `usageMetadata`, `meta.billed_units`, a Responses-API
 * `response` or Anthropic `message` event). Unknown or missing input gives zero usage, never a throw.
 *
 * - OpenAI chat (and Azure, Mistral, DeepSeek, xAI, Groq, OpenRouter, Perplexity): `prompt_tokens`,
 *   `completion_tokens`, `prompt_tokens_details.{cached_tokens,audio_tokens}`,
 *   `completion_tokens_details.{reasoning_tokens,audio_tokens}`
 * - OpenAI Responses / Realtime: `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`,
 *   `output_tokens_details.reasoning_tokens`
 * - Anthropic: `input_tokens` (excluding the cache), `cache_read_input_tokens`,
 *   `cache_creation_input_tokens`, `cache_creation.{ephemeral_5m_input_tokens,ephemeral_1h_input_tokens}`,
 *   `output_tokens`, `server_tool_use.web_search_requests`
 * - Gemini / Vertex: `promptTokenCount`, `candidatesTokenCount` (excluding thoughts), `thoughtsTokenCount`,
 *   `cachedContentTokenCount`, `toolUsePromptTokenCount`, per-modality `*TokensDetails`; from a whole
 *   response, the grounding search queries of its candidates (`groundingMetadata.webSearchQueries`)
 * - Bedrock Converse: `inputTokens`, `outputTokens`, `cacheReadInputTokens`, `cacheWriteInputTokens`
 * - Cohere: `billed_units.{input_tokens,output_tokens}`
 *
 * @example
 * normalizeUsage({ input_tokens: 100, cache_read_input_tokens: 900, output_tokens: 50 });
 * // { promptTokens: 1000, completionTokens: 50, cachedPromptTokens: 900 }
 */
export function normalizeUsage(raw: unknown): TokenUsage {
  return normalize(raw, {}, 0);
}
