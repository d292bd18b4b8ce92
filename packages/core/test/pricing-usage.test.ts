import { describe, expect, it } from 'vitest';
import { normalizeUsage } from '../src/pricing/normalize-usage.js';

describe('normalizeUsage', () => {
  it('OpenAI chat completions: details are already inside the totals', () => {
    expect(
      normalizeUsage({
        prompt_tokens: 1000,
        completion_tokens: 500,
        total_tokens: 1500,
        prompt_tokens_details: { cached_tokens: 600, audio_tokens: 100 },
        completion_tokens_details: { reasoning_tokens: 200, audio_tokens: 50, accepted_prediction_tokens: 0 },
      }),
    ).toEqual({
      promptTokens: 1000,
      completionTokens: 500,
      cachedPromptTokens: 600,
      audioPromptTokens: 100,
      reasoningTokens: 200,
      audioCompletionTokens: 50,
    });
  });

  it('OpenAI chat completions: a whole response body, with its service tier', () => {
    expect(
      normalizeUsage({
        id: 'chatcmpl-1',
        object: 'chat.completion',
        service_tier: 'priority',
        usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
      }),
    ).toEqual({ promptTokens: 10, completionTokens: 5, serviceTier: 'priority' });
  });

  it('OpenAI Responses: input_tokens include the cached ones, output_tokens the reasoning', () => {
    expect(
      normalizeUsage({
        input_tokens: 1000,
        input_tokens_details: { cached_tokens: 200 },
        output_tokens: 300,
        output_tokens_details: { reasoning_tokens: 100 },
        total_tokens: 1300,
      }),
    ).toEqual({ promptTokens: 1000, completionTokens: 300, cachedPromptTokens: 200, reasoningTokens: 100 });
  });

  it('OpenAI Responses: the response.completed stream event', () => {
    expect(
      normalizeUsage({
        type: 'response.completed',
        response: { service_tier: 'flex', usage: { input_tokens: 40, output_tokens: 2, total_tokens: 42 } },
      }),
    ).toEqual({ promptTokens: 40, completionTokens: 2, serviceTier: 'flex' });
  });

  it('OpenAI Realtime: input_token_details / output_token_details', () => {
    expect(
      normalizeUsage({
        total_tokens: 700,
        input_tokens: 500,
        output_tokens: 200,
        input_token_details: { cached_tokens: 100, text_tokens: 200, audio_tokens: 300 },
        output_token_details: { text_tokens: 50, audio_tokens: 150 },
      }),
    ).toEqual({
      promptTokens: 500,
      completionTokens: 200,
      cachedPromptTokens: 100,
      audioPromptTokens: 300,
      audioCompletionTokens: 150,
    });
  });

  it('Anthropic: input_tokens EXCLUDE the cache reads and writes', () => {
    expect(
      normalizeUsage({
        input_tokens: 100,
        cache_read_input_tokens: 900,
        cache_creation_input_tokens: 300,
        cache_creation: { ephemeral_5m_input_tokens: 100, ephemeral_1h_input_tokens: 200 },
        output_tokens: 50,
        server_tool_use: { web_search_requests: 2 },
        service_tier: 'standard',
      }),
    ).toEqual({
      promptTokens: 1300,
      completionTokens: 50,
      cachedPromptTokens: 900,
      cacheWriteTokens: 300,
      cacheWrite1hTokens: 200,
      webSearchRequests: 2,
      serviceTier: 'standard',
    });
  });

  it('Anthropic: cache_creation split without the total, and null cache fields', () => {
    expect(
      normalizeUsage({
        input_tokens: 10,
        cache_read_input_tokens: null,
        cache_creation: { ephemeral_5m_input_tokens: 5, ephemeral_1h_input_tokens: 7 },
        output_tokens: 1,
      }),
    ).toEqual({ promptTokens: 22, completionTokens: 1, cacheWriteTokens: 12, cacheWrite1hTokens: 7 });
  });

  it('Anthropic: a message_start stream event', () => {
    expect(
      normalizeUsage({
        type: 'message_start',
        message: { id: 'msg_1', usage: { input_tokens: 10, cache_read_input_tokens: 5, output_tokens: 1 } },
      }),
    ).toEqual({ promptTokens: 15, completionTokens: 1, cachedPromptTokens: 5 });
  });

  it('Gemini: candidates EXCLUDE the thoughts; cached content and tool-use prompt are in the prompt', () => {
    expect(
      normalizeUsage({
        promptTokenCount: 1000,
        cachedContentTokenCount: 400,
        candidatesTokenCount: 200,
        thoughtsTokenCount: 300,
        toolUsePromptTokenCount: 50,
        totalTokenCount: 1550,
        promptTokensDetails: [
          { modality: 'TEXT', tokenCount: 700 },
          { modality: 'AUDIO', tokenCount: 250 },
          { modality: 'IMAGE', tokenCount: 50 },
        ],
        candidatesTokensDetails: [{ modality: 'TEXT', tokenCount: 200 }],
      }),
    ).toEqual({
      promptTokens: 1050,
      completionTokens: 500,
      cachedPromptTokens: 400,
      reasoningTokens: 300,
      audioPromptTokens: 250,
      imagePromptTokens: 50,
    });
  });

  it('Gemini: a whole generateContent response; candidatesTokenCount left out', () => {
    expect(
      normalizeUsage({
        candidates: [{ content: { parts: [{ text: 'hi' }] } }],
        usageMetadata: { promptTokenCount: 100, thoughtsTokenCount: 20, totalTokenCount: 150 },
      }),
    ).toEqual({ promptTokens: 100, completionTokens: 50, reasoningTokens: 20 });
    expect(normalizeUsage({ usageMetadata: { promptTokenCount: 100, totalTokenCount: 100 } })).toEqual({
      promptTokens: 100,
      completionTokens: 0,
    });
  });

  it('Bedrock Converse: inputTokens exclude the cache', () => {
    expect(
      normalizeUsage({
        inputTokens: 1000,
        cacheReadInputTokens: 4000,
        cacheWriteInputTokens: 1000,
        outputTokens: 300,
        totalTokens: 6300,
      }),
    ).toEqual({
      promptTokens: 6000,
      completionTokens: 300,
      cachedPromptTokens: 4000,
      cacheWriteTokens: 1000,
    });
  });

  it('Cohere: the billed units, v2 usage and v1 meta', () => {
    const billed = { billed_units: { input_tokens: 1000, output_tokens: 300 } };
    expect(normalizeUsage({ ...billed, tokens: { input_tokens: 1200, output_tokens: 300 } })).toEqual({
      promptTokens: 1000,
      completionTokens: 300,
    });
    expect(normalizeUsage({ id: 'c1', usage: billed })).toEqual({
      promptTokens: 1000,
      completionTokens: 300,
    });
    expect(normalizeUsage({ text: 'hi', meta: billed })).toEqual({
      promptTokens: 1000,
      completionTokens: 300,
    });
  });

  it('DeepSeek: prompt_cache_hit_tokens', () => {
    expect(
      normalizeUsage({
        prompt_tokens: 1000,
        completion_tokens: 100,
        prompt_cache_hit_tokens: 500,
        prompt_cache_miss_tokens: 500,
      }),
    ).toEqual({ promptTokens: 1000, completionTokens: 100, cachedPromptTokens: 500 });
  });

  it('xAI-style reasoning beside completion_tokens is added when total_tokens says so, never otherwise', () => {
    expect(
      normalizeUsage({
        prompt_tokens: 100,
        completion_tokens: 50,
        total_tokens: 450,
        completion_tokens_details: { reasoning_tokens: 300 },
      }),
    ).toEqual({ promptTokens: 100, completionTokens: 350, reasoningTokens: 300 });
    // OpenAI: total = prompt + completion, reasoning already inside
    expect(
      normalizeUsage({
        prompt_tokens: 100,
        completion_tokens: 350,
        total_tokens: 450,
        completion_tokens_details: { reasoning_tokens: 300 },
      }),
    ).toEqual({ promptTokens: 100, completionTokens: 350, reasoningTokens: 300 });
  });

  it('Perplexity: search queries and search context size', () => {
    expect(
      normalizeUsage({
        prompt_tokens: 100,
        completion_tokens: 200,
        total_tokens: 300,
        num_search_queries: 1,
        search_context_size: 'low',
        citation_tokens: 12,
      }),
    ).toEqual({ promptTokens: 100, completionTokens: 200, webSearchRequests: 1, searchContextSize: 'low' });
  });

  it('the OpenAI web search tool of our own TokenUsage passes through; an unknown one is dropped', () => {
    for (const tool of ['chat', 'web_search', 'web_search_preview'] as const) {
      expect(normalizeUsage({ promptTokens: 1, completionTokens: 2, webSearchTool: tool })).toEqual({
        promptTokens: 1,
        completionTokens: 2,
        webSearchTool: tool,
      });
    }
    expect(normalizeUsage({ promptTokens: 1, completionTokens: 2, webSearchTool: 'file_search' })).toEqual({
      promptTokens: 1,
      completionTokens: 2,
    });
  });

  it('our own TokenUsage passes through, bad counts read as 0', () => {
    expect(
      normalizeUsage({
        promptTokens: 100,
        completionTokens: Number.NaN,
        cachedPromptTokens: 5,
        reasoningTokens: -3,
        serviceTier: 'flex',
      }),
    ).toEqual({ promptTokens: 100, completionTokens: 0, cachedPromptTokens: 5, serviceTier: 'flex' });
  });

  it('anything else is zero usage, never a throw', () => {
    for (const raw of [undefined, null, 'usage', 42, [], {}, { usage: null }, { prompt_tokens: '10' }]) {
      expect(normalizeUsage(raw)).toEqual({ promptTokens: 0, completionTokens: 0 });
    }
  });
});
