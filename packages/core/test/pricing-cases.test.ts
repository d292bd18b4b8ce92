import { describe, expect, it, vi } from 'vitest';
import { type CostBreakdown, type CostOptions, calculateCost, PriceBook } from '../src/pricing/price-book.js';

// Every expected value below is worked out by hand from ../shared/data/model_prices_and_context_window.json
// (2026-07-24) with LiteLLM's rules, and written as a literal; the comment shows the arithmetic in USD.
// Usage is given in the provider's own shape, so each case also exercises normalizeUsage.

interface Case {
  /** The provider family the case belongs to (for the coverage check below). */
  provider: string;
  what: string;
  model: string;
  usage: unknown;
  options?: CostOptions;
  /** A PriceBook with overrides or aliases; the module-level calculateCost otherwise. */
  prices?: PriceBook;
  usd: number;
  /** Lines to check besides the total. */
  lines?: Partial<Omit<CostBreakdown, 'totalNano' | 'priced'>>;
  pricedAs?: string | null;
}

const withOverrides = new PriceBook({
  overrides: {
    'gpt-4o': { input_cost_per_token: 0.000005 },
    'my-finetune': { input_cost_per_token: 0.000003, output_cost_per_token: 0.000012 },
  },
});
const withAliases = new PriceBook({
  aliases: { 'my-azure-deployment': 'gpt-4o', 'house-fast': 'azure/gpt-4o-mini' },
});
const onUnpriced = vi.fn();
const watchingUnpriced = new PriceBook({ onUnpriced });

const chat = (prompt: number, completion: number, extra: Record<string, unknown> = {}) => ({
  prompt_tokens: prompt,
  completion_tokens: completion,
  total_tokens: prompt + completion,
  ...extra,
});

const CASES: Case[] = [
  // ---------------------------------------------------------------- openai
  {
    provider: 'openai',
    what: 'plain (data README example)',
    model: 'gpt-4o',
    usage: chat(1000, 500),
    // 1000 x 2.5e-6 + 500 x 1e-5
    usd: 0.0075,
    lines: { input: 0.0025, output: 0.005 },
  },
  {
    provider: 'openai',
    what: 'cache read (data README example)',
    model: 'gpt-4o-mini',
    usage: chat(1000, 500, { prompt_tokens_details: { cached_tokens: 600 } }),
    // 400 x 1.5e-7 + 600 x 7.5e-8 + 500 x 6e-7
    usd: 0.000405,
    lines: { input: 0.00006, cachedInput: 0.000045, output: 0.0003 },
  },
  {
    provider: 'openai',
    what: 'reasoning without a reasoning price (data README example)',
    model: 'o4-mini',
    usage: chat(2000, 3000, { completion_tokens_details: { reasoning_tokens: 2500 } }),
    // 2000 x 1.1e-6 + 3000 x 4.4e-6 (500 visible + 2500 reasoning, both at the output rate)
    usd: 0.0154,
    lines: { input: 0.0022, output: 0.0022, reasoning: 0.011 },
  },
  {
    provider: 'openai',
    what: 'reasoning, Responses API shape',
    model: 'gpt-5-mini',
    usage: { input_tokens: 5000, output_tokens: 2000, output_tokens_details: { reasoning_tokens: 1500 } },
    // 5000 x 2.5e-7 + 2000 x 2e-6
    usd: 0.00525,
  },
  {
    provider: 'openai',
    what: 'audio in and out',
    model: 'gpt-4o-audio-preview',
    usage: chat(1000, 500, {
      prompt_tokens_details: { audio_tokens: 400 },
      completion_tokens_details: { audio_tokens: 200 },
    }),
    // 600 x 2.5e-6 + 400 x 4e-5 + 300 x 1e-5 + 200 x 8e-5 = 0.0015 + 0.016 + 0.003 + 0.016
    usd: 0.0365,
    lines: { input: 0.0015, output: 0.003, audio: 0.032 },
  },
  {
    provider: 'openai',
    what: 'priority service tier (from the response envelope)',
    model: 'gpt-4o',
    usage: { service_tier: 'priority', usage: chat(1000, 500) },
    // 1000 x 4.25e-6 + 500 x 1.7e-5
    usd: 0.01275,
  },
  {
    provider: 'openai',
    what: 'priority service tier with cache reads (from options)',
    model: 'gpt-4o-mini',
    usage: chat(1000, 500, { prompt_tokens_details: { cached_tokens: 600 } }),
    options: { serviceTier: 'priority' },
    // 400 x 2.5e-7 + 600 x 1.25e-7 + 500 x 1e-6 = 0.0001 + 0.000075 + 0.0005
    usd: 0.000675,
  },
  {
    provider: 'openai',
    what: 'flex service tier with cache and reasoning',
    model: 'o3',
    usage: chat(10_000, 4000, {
      prompt_tokens_details: { cached_tokens: 2000 },
      completion_tokens_details: { reasoning_tokens: 3000 },
    }),
    options: { serviceTier: 'flex' },
    // 8000 x 1e-6 + 2000 x 2.5e-7 + 4000 x 4e-6 = 0.008 + 0.0005 + 0.016
    usd: 0.0245,
  },
  {
    provider: 'openai',
    what: 'batch with *_batches prices',
    model: 'gpt-4o',
    usage: chat(1000, 500),
    options: { batch: true },
    // 1000 x 1.25e-6 + 500 x 5e-6
    usd: 0.00375,
  },
  {
    provider: 'openai',
    what: 'batch without *_batches prices: half the standard prices (LiteLLM)',
    model: 'o4-mini',
    usage: chat(2000, 3000),
    options: { batch: true },
    // 2000 x 5.5e-7 + 3000 x 2.2e-6 = 0.0011 + 0.0066
    usd: 0.0077,
  },
  {
    provider: 'openai',
    what: 'above_272k tier: exactly at the threshold stays below',
    model: 'gpt-5.4',
    usage: {
      input_tokens: 272_000,
      input_tokens_details: { cached_tokens: 100_000 },
      output_tokens: 1000,
      output_tokens_details: { reasoning_tokens: 400 },
    },
    // 172000 x 2.5e-6 + 100000 x 2.5e-7 + 1000 x 1.5e-5 = 0.43 + 0.025 + 0.015
    usd: 0.47,
  },
  {
    provider: 'openai',
    what: 'above_272k tier: one token more moves the whole call',
    model: 'gpt-5.4',
    usage: {
      input_tokens: 272_001,
      input_tokens_details: { cached_tokens: 100_000 },
      output_tokens: 1000,
      output_tokens_details: { reasoning_tokens: 400 },
    },
    // 172001 x 5e-6 + 100000 x 5e-7 + 1000 x 2.25e-5 = 0.860005 + 0.05 + 0.0225
    usd: 0.932505,
  },
  {
    provider: 'openai',
    what: 'priority below the 272k tier',
    model: 'gpt-5.4',
    usage: chat(1000, 1000),
    options: { serviceTier: 'priority' },
    // 1000 x 5e-6 + 1000 x 3e-5
    usd: 0.035,
  },
  {
    provider: 'openai',
    what: 'priority above the 272k tier, which has no priority prices: the larger of tier and priority',
    model: 'gpt-5.4',
    usage: chat(300_000, 1000),
    options: { serviceTier: 'priority' },
    // input max(5e-6 tier, 5e-6 priority), output max(2.25e-5 tier, 3e-5 priority)
    // 300000 x 5e-6 + 1000 x 3e-5 = 1.5 + 0.03
    usd: 1.53,
  },
  {
    provider: 'openai',
    what: 'web search, high search context',
    model: 'gpt-4o-search-preview',
    usage: { promptTokens: 1000, completionTokens: 500, webSearchRequests: 1 },
    options: { searchContextSize: 'high' },
    // 1000 x 2.5e-6 + 500 x 1e-5 + 1 x 0.05
    usd: 0.0575,
    lines: { webSearch: 0.05 },
  },
  {
    provider: 'openai',
    what: 'dated snapshot the table knows',
    model: 'gpt-4o-2024-08-06',
    usage: chat(2000, 1000),
    // 2000 x 2.5e-6 + 1000 x 1e-5
    usd: 0.015,
    pricedAs: 'gpt-4o-2024-08-06',
  },
  {
    provider: 'openai',
    what: 'unknown dated snapshot falls back to the undated name',
    model: 'gpt-4o-2031-01-01',
    usage: chat(1000, 500),
    // 1000 x 2.5e-6 + 500 x 1e-5
    usd: 0.0075,
    pricedAs: 'gpt-4o',
  },
  {
    provider: 'openai',
    what: 'provider prefix',
    model: 'openai/gpt-4o-mini',
    usage: chat(2000, 1000),
    // 2000 x 1.5e-7 + 1000 x 6e-7
    usd: 0.0009,
    pricedAs: 'gpt-4o-mini',
  },
  {
    provider: 'openai',
    what: 'override of one field keeps the rest',
    model: 'gpt-4o',
    prices: withOverrides,
    usage: chat(1000, 500),
    // 1000 x 5e-6 (override) + 500 x 1e-5 (table)
    usd: 0.01,
  },
  {
    provider: 'openai',
    what: 'override adding a model the table lacks',
    model: 'my-finetune',
    prices: withOverrides,
    usage: chat(100, 10),
    // 100 x 3e-6 + 10 x 1.2e-5
    usd: 0.00042,
  },
  // ---------------------------------------------------------------- azure
  {
    provider: 'azure',
    what: 'cache read',
    model: 'azure/gpt-4o',
    usage: chat(3000, 700, { prompt_tokens_details: { cached_tokens: 1000 } }),
    // 2000 x 2.5e-6 + 1000 x 1.25e-6 + 700 x 1e-5 = 0.005 + 0.00125 + 0.007
    usd: 0.01325,
    pricedAs: 'azure/gpt-4o',
  },
  {
    provider: 'azure',
    what: 'plain (azure prices differ from openai)',
    model: 'azure/gpt-4o-mini',
    usage: chat(10_000, 2000),
    // 10000 x 1.65e-7 + 2000 x 6.6e-7 = 0.00165 + 0.00132
    usd: 0.00297,
  },
  {
    provider: 'azure',
    what: 'above_272k tier with cache read',
    model: 'azure/us/gpt-5.6',
    usage: chat(300_000, 2000, { prompt_tokens_details: { cached_tokens: 50_000 } }),
    // 250000 x 1.1e-5 + 50000 x 1.1e-6 + 2000 x 4.95e-5 = 2.75 + 0.055 + 0.099
    usd: 2.904,
  },
  {
    provider: 'azure',
    what: 'priority',
    model: 'azure/us/gpt-5.6',
    usage: chat(10_000, 1000),
    options: { serviceTier: 'priority' },
    // 10000 x 1.375e-5 + 1000 x 8.25e-5 = 0.1375 + 0.0825
    usd: 0.22,
  },
  {
    provider: 'azure',
    what: 'deployment name through an alias',
    model: 'my-azure-deployment',
    prices: withAliases,
    usage: chat(1000, 500),
    // priced as gpt-4o: 1000 x 2.5e-6 + 500 x 1e-5
    usd: 0.0075,
    pricedAs: 'gpt-4o',
  },
  {
    provider: 'azure',
    what: 'alias behind a provider prefix, to an azure entry',
    model: 'azure/house-fast',
    prices: withAliases,
    usage: chat(10_000, 2000),
    // priced as azure/gpt-4o-mini: 10000 x 1.65e-7 + 2000 x 6.6e-7
    usd: 0.00297,
    pricedAs: 'azure/gpt-4o-mini',
  },
  // ---------------------------------------------------------------- anthropic
  {
    provider: 'anthropic',
    what: 'cache reads and 5-minute writes (input_tokens exclude the cache)',
    model: 'claude-sonnet-4-5',
    usage: {
      input_tokens: 2000,
      cache_read_input_tokens: 6000,
      cache_creation_input_tokens: 2000,
      output_tokens: 1000,
    },
    // 2000 x 3e-6 + 6000 x 3e-7 + 2000 x 3.75e-6 + 1000 x 1.5e-5 = 0.006 + 0.0018 + 0.0075 + 0.015
    usd: 0.0303,
    lines: { input: 0.006, cachedInput: 0.0018, cacheWrite: 0.0075, output: 0.015 },
  },
  {
    provider: 'anthropic',
    what: '5-minute and 1-hour cache writes',
    model: 'claude-haiku-4-5',
    usage: {
      input_tokens: 1000,
      cache_creation_input_tokens: 3000,
      cache_creation: { ephemeral_5m_input_tokens: 1000, ephemeral_1h_input_tokens: 2000 },
      output_tokens: 500,
    },
    // 1000 x 1e-6 + 1000 x 1.25e-6 + 2000 x 2e-6 + 500 x 5e-6 = 0.001 + 0.00125 + 0.004 + 0.0025
    usd: 0.00875,
    lines: { cacheWrite: 0.00525 },
  },
  {
    provider: 'anthropic',
    what: 'cache reads and 1-hour writes only',
    model: 'claude-opus-4-6',
    usage: {
      input_tokens: 500,
      cache_read_input_tokens: 20_000,
      cache_creation_input_tokens: 4000,
      cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 4000 },
      output_tokens: 800,
    },
    // 500 x 5e-6 + 20000 x 5e-7 + 4000 x 1e-5 + 800 x 2.5e-5 = 0.0025 + 0.01 + 0.04 + 0.02
    usd: 0.0725,
  },
  {
    provider: 'anthropic',
    what: 'above_200k tier: 200k prompt (cache included) stays below',
    model: 'claude-sonnet-4-5',
    usage: { input_tokens: 150_000, cache_read_input_tokens: 50_000, output_tokens: 1000 },
    // 150000 x 3e-6 + 50000 x 3e-7 + 1000 x 1.5e-5 = 0.45 + 0.015 + 0.015
    usd: 0.48,
  },
  {
    provider: 'anthropic',
    what: 'above_200k tier: cache tokens push the prompt over, whole call at tier rates',
    model: 'claude-sonnet-4-5',
    usage: {
      input_tokens: 150_001,
      cache_read_input_tokens: 50_000,
      cache_creation_input_tokens: 10_000,
      output_tokens: 1000,
    },
    // 150001 x 6e-6 + 50000 x 6e-7 + 10000 x 7.5e-6 + 1000 x 2.25e-5 = 0.900006 + 0.03 + 0.075 + 0.0225
    usd: 1.027506,
  },
  {
    provider: 'anthropic',
    what: 'above_200k tier with 1-hour writes (cache_creation_input_token_cost_above_1hr_above_200k_tokens)',
    model: 'claude-sonnet-4-5',
    usage: {
      input_tokens: 190_000,
      cache_creation_input_tokens: 20_000,
      cache_creation: { ephemeral_1h_input_tokens: 20_000 },
      output_tokens: 100,
    },
    // 190000 x 6e-6 + 20000 x 1.2e-5 + 100 x 2.25e-5 = 1.14 + 0.24 + 0.00225
    usd: 1.38225,
  },
  {
    provider: 'anthropic',
    what: 'web search requests',
    model: 'claude-opus-4-6',
    usage: { input_tokens: 1000, output_tokens: 200, server_tool_use: { web_search_requests: 3 } },
    // 1000 x 5e-6 + 200 x 2.5e-5 + 3 x 0.01
    usd: 0.04,
  },
  {
    provider: 'anthropic',
    what: 'unknown dated snapshot falls back to the undated name',
    model: 'claude-sonnet-4-5-20990101',
    usage: { input_tokens: 1000, output_tokens: 500 },
    // 1000 x 3e-6 + 500 x 1.5e-5
    usd: 0.0105,
    pricedAs: 'claude-sonnet-4-5',
  },
  {
    provider: 'anthropic',
    what: 'provider prefix, whole message body',
    model: 'anthropic/claude-haiku-4-5',
    usage: { id: 'msg_1', type: 'message', usage: { input_tokens: 2000, output_tokens: 1000 } },
    // 2000 x 1e-6 + 1000 x 5e-6
    usd: 0.007,
  },
  // ---------------------------------------------------------------- gemini / vertex
  {
    provider: 'gemini',
    what: 'thoughts at the reasoning price, candidates exclude them, cached content',
    model: 'gemini/gemini-2.5-flash',
    usage: {
      usageMetadata: {
        promptTokenCount: 1000,
        cachedContentTokenCount: 200,
        candidatesTokenCount: 500,
        thoughtsTokenCount: 300,
        totalTokenCount: 1800,
      },
    },
    // 800 x 3e-7 + 200 x 3e-8 + 500 x 2.5e-6 + 300 x 2.5e-6 = 0.00024 + 0.000006 + 0.00125 + 0.00075
    usd: 0.002246,
    lines: { reasoning: 0.00075 },
  },
  {
    provider: 'vertex',
    what: 'audio prompt tokens',
    model: 'gemini-2.5-flash',
    usage: {
      promptTokenCount: 1000,
      candidatesTokenCount: 100,
      promptTokensDetails: [
        { modality: 'TEXT', tokenCount: 400 },
        { modality: 'AUDIO', tokenCount: 600 },
      ],
    },
    // 400 x 3e-7 + 600 x 1e-6 + 100 x 2.5e-6 = 0.00012 + 0.0006 + 0.00025
    usd: 0.00097,
    lines: { audio: 0.0006 },
  },
  {
    provider: 'vertex',
    what: 'above_200k tier: 200k prompt stays below',
    model: 'gemini-2.5-pro',
    usage: { promptTokenCount: 200_000, candidatesTokenCount: 1000 },
    // 200000 x 1.25e-6 + 1000 x 1e-5
    usd: 0.26,
  },
  {
    provider: 'vertex',
    what: 'above_200k tier with cache read and thoughts',
    model: 'gemini-2.5-pro',
    usage: {
      promptTokenCount: 200_001,
      cachedContentTokenCount: 100_000,
      candidatesTokenCount: 1000,
      thoughtsTokenCount: 500,
    },
    // 100001 x 2.5e-6 + 100000 x 2.5e-7 + 1500 x 1.5e-5 = 0.2500025 + 0.025 + 0.0225
    usd: 0.2975025,
  },
  {
    provider: 'gemini',
    what: 'priority above the 200k tier (*_above_200k_tokens_priority)',
    model: 'gemini/gemini-3-pro-preview',
    usage: { promptTokenCount: 250_000, cachedContentTokenCount: 50_000, candidatesTokenCount: 2000 },
    options: { serviceTier: 'priority' },
    // 200000 x 7.2e-6 + 50000 x 7.2e-7 + 2000 x 3.24e-5 = 1.44 + 0.036 + 0.0648
    usd: 1.5408,
  },
  {
    provider: 'gemini',
    what: 'batch',
    model: 'gemini/gemini-3-pro-preview',
    usage: { promptTokenCount: 10_000, candidatesTokenCount: 1000 },
    options: { batch: true },
    // 10000 x 1e-6 + 1000 x 6e-6
    usd: 0.016,
  },
  {
    provider: 'gemini',
    what: 'above_128k tier: 128k prompt stays below',
    model: 'gemini/gemini-1.5-flash',
    usage: { promptTokenCount: 128_000, candidatesTokenCount: 1000 },
    // 128000 x 7.5e-8 + 1000 x 0
    usd: 0.0096,
  },
  {
    provider: 'gemini',
    what: 'above_128k tier',
    model: 'gemini/gemini-1.5-flash',
    usage: { promptTokenCount: 128_001, candidatesTokenCount: 1000 },
    // 128001 x 1.5e-7 + 1000 x 0
    usd: 0.01920015,
  },
  {
    provider: 'gemini',
    what: 'image output tokens',
    model: 'gemini/gemini-2.5-flash-image',
    usage: {
      promptTokenCount: 500,
      candidatesTokenCount: 1300,
      candidatesTokensDetails: [
        { modality: 'IMAGE', tokenCount: 1290 },
        { modality: 'TEXT', tokenCount: 10 },
      ],
    },
    // 500 x 3e-7 + 10 x 2.5e-6 + 1290 x 3e-5 = 0.00015 + 0.000025 + 0.0387
    usd: 0.038875,
    lines: { image: 0.0387 },
  },
  {
    provider: 'vertex',
    what: 'vertex claude with an unknown @date falls back to the prefixed undated entry',
    model: 'vertex_ai/claude-sonnet-4-5@20990101',
    usage: { input_tokens: 1000, output_tokens: 1000 },
    // 1000 x 3e-6 + 1000 x 1.5e-5
    usd: 0.018,
    pricedAs: 'vertex_ai/claude-sonnet-4-5',
  },
  // ---------------------------------------------------------------- bedrock
  {
    provider: 'bedrock',
    what: 'Converse usage',
    model: 'amazon.nova-pro-v1:0',
    usage: { inputTokens: 1000, outputTokens: 500, totalTokens: 1500 },
    // 1000 x 8e-7 + 500 x 3.2e-6
    usd: 0.0024,
  },
  {
    provider: 'bedrock',
    what: 'Converse cache read and write, regional prices',
    model: 'us.anthropic.claude-sonnet-4-5-20250929-v1:0',
    usage: { inputTokens: 1000, cacheReadInputTokens: 4000, cacheWriteInputTokens: 1000, outputTokens: 300 },
    // 1000 x 3.3e-6 + 4000 x 3.3e-7 + 1000 x 4.125e-6 + 300 x 1.65e-5 = 0.0033 + 0.00132 + 0.004125 + 0.00495
    usd: 0.013695,
  },
  {
    provider: 'bedrock',
    what: 'above_200k tier behind a bedrock/ prefix',
    model: 'bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0',
    usage: { inputTokens: 210_000, outputTokens: 1000 },
    // 210000 x 6e-6 + 1000 x 2.25e-5
    usd: 1.2825,
  },
  // ---------------------------------------------------------------- mistral
  {
    provider: 'mistral',
    what: 'plain',
    model: 'mistral/mistral-large-latest',
    usage: chat(1234, 567),
    // 1234 x 5e-7 + 567 x 1.5e-6 = 0.000617 + 0.0008505
    usd: 0.0014675,
  },
  {
    provider: 'mistral',
    what: 'cached tokens at the input price when the model has no cache price',
    model: 'mistral/mistral-small-latest',
    usage: chat(10_000, 1000, { prompt_tokens_details: { cached_tokens: 4000 } }),
    // 6000 x 6e-8 + 4000 x 6e-8 + 1000 x 1.8e-7 = 0.00036 + 0.00024 + 0.00018
    usd: 0.00078,
  },
  // ---------------------------------------------------------------- deepseek
  {
    provider: 'deepseek',
    what: 'prompt_cache_hit_tokens',
    model: 'deepseek/deepseek-chat',
    usage: chat(1000, 100, { prompt_cache_hit_tokens: 500, prompt_cache_miss_tokens: 500 }),
    // 500 x 2.8e-7 + 500 x 2.8e-8 + 100 x 4.2e-7 = 0.00014 + 0.000014 + 0.000042
    usd: 0.000196,
  },
  {
    provider: 'deepseek',
    what: 'reasoning at the output price',
    model: 'deepseek/deepseek-reasoner',
    usage: chat(2000, 3000, { completion_tokens_details: { reasoning_tokens: 2000 } }),
    // 2000 x 2.8e-7 + 3000 x 4.2e-7 = 0.00056 + 0.00126
    usd: 0.00182,
  },
  // ---------------------------------------------------------------- xai
  {
    provider: 'xai',
    what: 'above_128k tier: 128k prompt stays below',
    model: 'xai/grok-4-0709',
    usage: chat(128_000, 1000),
    // 128000 x 3e-6 + 1000 x 1.5e-5 = 0.384 + 0.015
    usd: 0.399,
  },
  {
    provider: 'xai',
    what: 'above_128k tier',
    model: 'xai/grok-4-0709',
    usage: chat(128_001, 1000),
    // 128001 x 6e-6 + 1000 x 3e-5 = 0.768006 + 0.03
    usd: 0.798006,
  },
  {
    provider: 'xai',
    what: 'above_128k tier without a tier cache price: cache read stays at its base price',
    model: 'xai/grok-4-1-fast-reasoning',
    usage: chat(200_000, 1000, { prompt_tokens_details: { cached_tokens: 100_000 } }),
    // 100000 x 4e-7 + 100000 x 5e-8 + 1000 x 1e-6 = 0.04 + 0.005 + 0.001
    usd: 0.046,
  },
  {
    provider: 'xai',
    what: 'reasoning reported beside completion_tokens (total_tokens says so)',
    model: 'xai/grok-3-mini',
    usage: {
      prompt_tokens: 100,
      completion_tokens: 50,
      total_tokens: 450,
      completion_tokens_details: { reasoning_tokens: 300 },
    },
    // 100 x 3e-7 + (50 + 300) x 5e-7 = 0.00003 + 0.000175
    usd: 0.000205,
  },
  // ---------------------------------------------------------------- groq
  {
    provider: 'groq',
    what: 'plain',
    model: 'groq/llama-3.3-70b-versatile',
    usage: chat(1000, 1000),
    // 1000 x 5.9e-7 + 1000 x 7.9e-7
    usd: 0.00138,
  },
  {
    provider: 'groq',
    what: 'cache read, nested provider name',
    model: 'groq/openai/gpt-oss-120b',
    usage: chat(4000, 2000, { prompt_tokens_details: { cached_tokens: 1000 } }),
    // 3000 x 1.5e-7 + 1000 x 7.5e-8 + 2000 x 6e-7 = 0.00045 + 0.000075 + 0.0012
    usd: 0.001725,
    pricedAs: 'groq/openai/gpt-oss-120b',
  },
  // ---------------------------------------------------------------- cohere
  {
    provider: 'cohere',
    what: 'billed units (not the raw token counts)',
    model: 'cohere/command-r-plus',
    usage: {
      billed_units: { input_tokens: 1000, output_tokens: 300 },
      tokens: { input_tokens: 1200, output_tokens: 300 },
    },
    // 1000 x 2.5e-6 + 300 x 1e-5
    usd: 0.0055,
    pricedAs: 'command-r-plus',
  },
  // ---------------------------------------------------------------- openrouter
  {
    provider: 'openrouter',
    what: 'prefixed entry of its own',
    model: 'openrouter/openai/gpt-4o',
    usage: chat(2000, 100),
    // 2000 x 2.5e-6 + 100 x 1e-5
    usd: 0.006,
    pricedAs: 'openrouter/openai/gpt-4o',
  },
  {
    provider: 'openrouter',
    what: 'claude through openrouter, OpenAI-shaped cache usage',
    model: 'openrouter/anthropic/claude-sonnet-4.5',
    usage: chat(10_000, 500, { prompt_tokens_details: { cached_tokens: 8000 } }),
    // 2000 x 3e-6 + 8000 x 3e-7 + 500 x 1.5e-5 = 0.006 + 0.0024 + 0.0075
    usd: 0.0159,
  },
  // ---------------------------------------------------------------- perplexity
  {
    provider: 'perplexity',
    what: 'per-request price',
    model: 'perplexity/pplx-70b-online',
    usage: chat(1000, 500),
    // 1000 x 0 + 500 x 2.8e-6 + 0.005
    usd: 0.0064,
    lines: { request: 0.005 },
  },
  {
    provider: 'perplexity',
    what: 'search queries at the reported search context size',
    model: 'perplexity/sonar',
    usage: chat(100, 200, { num_search_queries: 1, search_context_size: 'low' }),
    // 100 x 1e-6 + 200 x 1e-6 + 1 x 0.005
    usd: 0.0053,
  },
  // ---------------------------------------------------------------- dashscope / volcengine (tiered_pricing)
  {
    provider: 'dashscope',
    what: 'reasoning price above the output price',
    model: 'dashscope/qwen-turbo',
    usage: chat(1000, 1000, { completion_tokens_details: { reasoning_tokens: 600 } }),
    // 1000 x 5e-8 + 400 x 2e-7 + 600 x 5e-7 = 0.00005 + 0.00008 + 0.0003
    usd: 0.00043,
  },
  {
    provider: 'dashscope',
    what: 'tiered_pricing: 32000 prompt is the first tier',
    model: 'dashscope/qwen3-coder-plus',
    usage: chat(32_000, 1000, { prompt_tokens_details: { cached_tokens: 10_000 } }),
    // 22000 x 1e-6 + 10000 x 1e-7 + 1000 x 5e-6 = 0.022 + 0.001 + 0.005
    usd: 0.028,
  },
  {
    provider: 'dashscope',
    what: 'tiered_pricing: one token more moves the whole call to the second tier',
    model: 'dashscope/qwen3-coder-plus',
    usage: chat(32_001, 1000, { prompt_tokens_details: { cached_tokens: 10_000 } }),
    // 22001 x 1.8e-6 + 10000 x 1.8e-7 + 1000 x 9e-6 = 0.0396018 + 0.0018 + 0.009
    usd: 0.0504018,
  },
  {
    provider: 'dashscope',
    what: 'tiered_pricing: top tier',
    model: 'dashscope/qwen3-coder-plus',
    usage: chat(300_000, 2000),
    // 300000 x 6e-6 + 2000 x 6e-5 = 1.8 + 0.12
    usd: 1.92,
  },
  {
    provider: 'dashscope',
    what: 'tiered_pricing with a reasoning price per tier',
    model: 'dashscope/qwen-plus-latest',
    usage: chat(300_000, 5000, { completion_tokens_details: { reasoning_tokens: 4000 } }),
    // 300000 x 1.2e-6 + 1000 x 3.6e-6 + 4000 x 1.2e-5 = 0.36 + 0.0036 + 0.048
    usd: 0.4116,
  },
  {
    provider: 'volcengine',
    what: 'tiered_pricing: middle tier',
    model: 'volcengine/doubao-seed-2-0-pro-260215',
    usage: chat(100_000, 1000),
    // 100000 x 7e-7 + 1000 x 3.5e-6 = 0.07 + 0.0035
    usd: 0.0735,
  },
  // ---------------------------------------------------------------- unknown
  {
    provider: 'unknown',
    what: 'unknown model: 0, unpriced',
    model: 'no-such-model',
    prices: watchingUnpriced,
    usage: chat(1000, 500),
    usd: 0,
    pricedAs: null,
  },
  {
    provider: 'unknown',
    what: 'unknown dated model whose base is unknown too',
    model: 'no-such-model-2031-01-01',
    usage: chat(1000, 500),
    usd: 0,
    pricedAs: null,
  },
];

describe('calculateCost: hand-worked cases', () => {
  it.each(CASES.map((c) => [`${c.provider}: ${c.model}, ${c.what}`, c] as const))('%s', (_, c) => {
    const cost = c.prices
      ? c.prices.calculateCost(c.model, c.usage, c.options)
      : calculateCost(c.model, c.usage, c.options);
    expect(cost.totalNano).toBe(Math.round(c.usd * 1e9));
    expect(cost.total).toBeCloseTo(c.usd, 9);
    expect(cost.priced).toBe(c.usd > 0 || c.pricedAs !== null);
    for (const [line, usd] of Object.entries(c.lines ?? {})) {
      expect(cost[line as keyof CostBreakdown], line).toBeCloseTo(usd as number, 9);
    }
    if (c.pricedAs !== undefined) expect(cost.pricedAs).toBe(c.pricedAs);
  });

  it('covers at least 40 cases across at least 8 providers', () => {
    const providers = new Set(CASES.map((c) => c.provider).filter((p) => p !== 'unknown'));
    expect(CASES.length).toBeGreaterThanOrEqual(40);
    expect(providers.size).toBeGreaterThanOrEqual(8);
  });

  it('reports an unknown model once', () => {
    watchingUnpriced.calculateCost('no-such-model', chat(1, 1));
    expect(onUnpriced).toHaveBeenCalledTimes(1);
    expect(onUnpriced).toHaveBeenCalledWith('no-such-model');
  });

  it('the nano-dollar lines add up to the total for a call with every kind of token', () => {
    const cost = calculateCost('gpt-4o-audio-preview', {
      prompt_tokens: 5000,
      completion_tokens: 2000,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 1000 },
      completion_tokens_details: { reasoning_tokens: 500, audio_tokens: 700 },
    });
    // 4000 x 2.5e-6 + 1000 x 4e-5 + 800 x 1e-5 + 500 x 1e-5 + 700 x 8e-5 = 0.01 + 0.04 + 0.008 + 0.005 + 0.056
    expect(cost).toMatchObject({
      input: 0.01,
      output: 0.008,
      reasoning: 0.005,
      audio: 0.096,
      totalNano: 119_000_000,
    });
  });
});

describe('PriceBook.cost: options and usage fields in the internal shape', () => {
  const prices = new PriceBook();

  it('a usage serviceTier of batch prices the call as batch', () => {
    // 1000 x 1.25e-6 + 500 x 5e-6
    expect(
      prices.cost('gpt-4o', { promptTokens: 1000, completionTokens: 500, serviceTier: 'batch' }).totalNano,
    ).toBe(3_750_000);
    // options win over the usage
    expect(
      prices.cost(
        'gpt-4o',
        { promptTokens: 1000, completionTokens: 500, serviceTier: 'priority' },
        { serviceTier: 'default' },
      ).totalNano,
    ).toBe(7_500_000);
  });

  it('a service tier the model has no prices for is priced at the standard prices', () => {
    // mistral has no *_priority prices: 1234 x 5e-7 + 567 x 1.5e-6
    expect(
      prices.cost(
        'mistral/mistral-large-latest',
        { promptTokens: 1234, completionTokens: 567 },
        { serviceTier: 'priority' },
      ).totalNano,
    ).toBe(1_467_500);
  });

  it('web searches on a model without a search price cost nothing extra, except OpenAI tool fees', () => {
    // A non-OpenAI model the table gives no search price: 1000 x 5e-7 + 500 x 1.5e-6, no search line.
    expect(
      prices.cost('mistral/mistral-large-latest', {
        promptTokens: 1000,
        completionTokens: 500,
        webSearchRequests: 2,
      }).totalNano,
    ).toBe(1_250_000);
    // An OpenAI model (LiteLLM would charge 0): OpenAI's fee per call. 1000 x 2.5e-6 + 500 x 1e-5 =
    // 0.0075, plus `web_search` (and no tool said) 2 x $0.01, `web_search_preview` on a non-reasoning
    // model 2 x $0.025.
    const gpt4o = { promptTokens: 1000, completionTokens: 500, webSearchRequests: 2 };
    expect(prices.cost('gpt-4o', gpt4o).totalNano).toBe(27_500_000);
    expect(prices.cost('gpt-4o', { ...gpt4o, webSearchTool: 'web_search' }).webSearchNano).toBe(20_000_000);
    expect(prices.cost('gpt-4o', { ...gpt4o, webSearchTool: 'web_search_preview' }).totalNano).toBe(
      57_500_000,
    );
    // A chat search model the table gives no search price (gpt-5-search-api): $0.01 a call.
    expect(
      prices.cost('gpt-5-search-api', {
        promptTokens: 0,
        completionTokens: 0,
        webSearchRequests: 1,
        webSearchTool: 'chat',
      }).totalNano,
    ).toBe(10_000_000);
    // A reasoning model pays $0.01 for a preview search too: 1000 x 1.1e-6 + 500 x 4.4e-6 = 0.0033.
    expect(
      prices.cost('o4-mini', { ...gpt4o, webSearchRequests: 1, webSearchTool: 'web_search_preview' })
        .totalNano,
    ).toBe(13_300_000);
    // gpt-5-chat-latest is not a reasoning model: the preview fee is $0.025.
    expect(
      prices.cost('gpt-5-chat-latest', {
        promptTokens: 0,
        completionTokens: 0,
        webSearchRequests: 1,
        webSearchTool: 'web_search_preview',
      }).webSearchNano,
    ).toBe(25_000_000);
  });

  it('a model the table prices per search context size keeps that price, whatever the tool', () => {
    // gpt-4o-search-preview: medium $0.035, high $0.05; 100 x 2.5e-6 + 10 x 1e-5 = 0.00035.
    const usage = { promptTokens: 100, completionTokens: 10, webSearchRequests: 1 } as const;
    expect(prices.cost('gpt-4o-search-preview', { ...usage, webSearchTool: 'chat' }).totalNano).toBe(
      35_350_000,
    );
    expect(
      prices.cost('gpt-4o-search-preview', { ...usage, webSearchTool: 'chat', searchContextSize: 'high' })
        .totalNano,
    ).toBe(50_350_000);
  });

  it('1-hour writes beyond the reported writes are still charged in full', () => {
    // cacheWriteTokens 0 but 1000 1h writes: prompt total 1000 = 1000 writes at 2e-6
    expect(
      prices.cost('claude-haiku-4-5', { promptTokens: 0, completionTokens: 0, cacheWrite1hTokens: 1000 }),
    ).toMatchObject({ cacheWriteNano: 2_000_000, totalNano: 2_000_000 });
  });
});
