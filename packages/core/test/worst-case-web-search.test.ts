// OpenAI's web search in the worst case: chat search models search once a call, the Responses tools up
// to `max_tool_calls`; each search at the dearest fee the model can be billed, and 10,000 prompt tokens
// of results. Expected values are worked by hand from the price table (data/model_prices...json).
import { describe, expect, it } from 'vitest';
import { boundCall, boundNano, unboundedSearchField } from '../src/admission/worst-case.js';
import { openaiWebSearch } from '../src/metering/web-search.js';
import type { WireFormat } from '../src/metering/wire-formats.js';
import type { ModelPrice } from '../src/pricing/model-price.js';
import { PriceBook } from '../src/pricing/price-book.js';

const prices = new PriceBook();

function bound(model: string, format: WireFormat | null, body: Record<string, unknown>) {
  return boundCall(model, format, body, prices.resolve(model), {
    defaultMaxOutputTokens: 4096,
    precise: true,
  });
}

const ratesOf = (model: string, promptTokens: number) =>
  prices.worstCaseRates(model, { promptTokens, cacheWrites: false, audioOutput: false })!;

const user = [{ role: 'user', content: 'news today?' }];

describe('which requests search, by OpenAI rule', () => {
  it('a chat search model, or web_search_options, searches once a call (per choice)', () => {
    expect(bound('gpt-4o-search-preview', 'openai-chat', { messages: user }).webSearches).toBe(1);
    expect(
      bound('gpt-4o-mini-search-preview-2025-03-11', 'openai-chat', { messages: user }).webSearches,
    ).toBe(1);
    expect(bound('openai/gpt-5-search-api', 'openai-chat', { messages: user }).webSearches).toBe(1);
    expect(bound('gpt-4o', 'openai-chat', { messages: user, web_search_options: {} }).webSearches).toBe(1);
    expect(
      bound('gpt-4o-search-preview', 'openai-chat', { messages: user, web_search_options: {}, n: 3 })
        .webSearches,
    ).toBe(3);
    expect(bound('GPT-4o-Search-Preview', 'openai-chat', { messages: user }).webSearches).toBe(1);
    // Chat takes no search tool, and the other providers' formats no web_search_options.
    expect(
      openaiWebSearch('openai-chat', 'gpt-4o', { messages: user, tools: [{ type: 'web_search' }] }),
    ).toBeNull();
    for (const format of ['anthropic-messages', 'gemini', 'openai-embeddings'] as const) {
      expect(
        openaiWebSearch(format, 'x-search-preview', {
          web_search_options: {},
          tools: [{ type: 'web_search' }],
        }),
        format,
      ).toBeNull();
    }
    // A plain chat model without the option runs none.
    expect(bound('gpt-4o', 'openai-chat', { messages: user }).webSearches).toBe(0);
    expect(openaiWebSearch('openai-chat', 'gpt-4o', { messages: user })).toBeNull();
  });

  it('a Responses web search tool searches up to max_tool_calls, whatever its version', () => {
    for (const type of [
      'web_search',
      'web_search_preview',
      'web_search_2025_08_26',
      'web_search_preview_2025_03_11',
    ]) {
      const body = { input: 'news?', tools: [{ type }], max_tool_calls: 4 };
      expect(bound('gpt-4.1', 'openai-responses', body).webSearches, type).toBe(4);
      expect(unboundedSearchField('openai-responses', 'gpt-4.1', body), type).toBeNull();
    }
    // max_tool_calls bounds every built-in call of the response: two search tools still search 4 times.
    const two = {
      input: 'x',
      tools: [{ type: 'web_search' }, { type: 'web_search_preview' }],
      max_tool_calls: 4,
    };
    expect(bound('gpt-4.1', 'openai-responses', two).webSearches).toBe(4);
    expect(openaiWebSearch('openai-responses', 'gpt-4.1', two)?.tool).toBe('web_search_preview');
    expect(bound('gpt-4.1', 'openai-responses', { ...two, max_tool_calls: 0 }).webSearches).toBe(0);
    // Choices multiply a chat search model's searches, not max_tool_calls.
    expect(bound('gpt-4.1', 'openai-responses', { ...two, n: 2 }).webSearches).toBe(4);
    // Not a search tool: a function, an Anthropic type, near misses at either end.
    for (const type of [
      'function',
      'web_search_20250305',
      'web_search_previewx',
      'file_search',
      'my_web_search',
    ]) {
      expect(openaiWebSearch('openai-responses', 'gpt-4.1', { tools: [{ type }] }), type).toBeNull();
    }
    // A route the guard does not know by its path reads the tools as well.
    expect(
      bound('gpt-4.1', null, { input: 'x', tools: [{ type: 'web_search' }], max_tool_calls: 2 }).webSearches,
    ).toBe(2);
  });

  it('without max_tool_calls (or with a bad one) the searches are unbounded: the field is named', () => {
    const body = { input: 'news?', tools: [{ type: 'web_search' }] };
    expect(unboundedSearchField('openai-responses', 'gpt-4.1', body)).toBe('max_tool_calls');
    for (const bad of [-1, 2.5, '3', null]) {
      expect(
        unboundedSearchField('openai-responses', 'gpt-4.1', { ...body, max_tool_calls: bad }),
        String(bad),
      ).toBe('max_tool_calls');
    }
    // Outside strict mode the bound still counts 10 searches, never 0.
    expect(bound('gpt-4.1', 'openai-responses', body).webSearches).toBe(10);
    // Chat search models and Anthropic's tool are bounded without it.
    expect(unboundedSearchField('openai-chat', 'gpt-4o-search-preview', { messages: user })).toBeNull();
    expect(
      unboundedSearchField('anthropic-messages', 'claude-sonnet-4-5', {
        messages: user,
        tools: [{ type: 'web_search_20250305', name: 'web_search' }],
      }),
    ).toBeNull();
    expect(unboundedSearchField('openai-responses', 'gpt-4.1', { input: 'x' })).toBeNull();
    // Chat takes no search tool: a web_search tool there leaves nothing unbounded (on an unknown
    // route it would).
    const chatTools = { messages: user, tools: [{ type: 'web_search' }] };
    expect(unboundedSearchField('openai-chat', 'gpt-4o', chatTools)).toBeNull();
    expect(unboundedSearchField(null, 'gpt-4o', chatTools)).toBe('max_tool_calls');
  });

  it("Anthropic's server tool keeps its own rule (max_uses), not OpenAI's", () => {
    const body = {
      max_tokens: 10,
      messages: user,
      tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 3 }],
    };
    expect(bound('claude-sonnet-4-5', 'anthropic-messages', body).webSearches).toBe(3);
    // An OpenAI tool type is never taken for Anthropic's (it used to count as 10 Anthropic searches).
    const openai = { input: 'x', tools: [{ type: 'web_search_preview' }], max_tool_calls: 1 };
    expect(bound('gpt-4.1', 'openai-responses', openai).webSearches).toBe(1);
  });

  it('the search context size comes from web_search_options or the first search tool', () => {
    expect(
      openaiWebSearch('openai-chat', 'gpt-4o-search-preview', {
        messages: user,
        web_search_options: { search_context_size: 'high' },
      }),
    ).toEqual({ tool: 'chat', size: 'high', maxSearches: 1 });
    expect(
      openaiWebSearch('openai-responses', 'gpt-4.1', {
        tools: [{ type: 'function' }, { type: 'web_search', search_context_size: 'low' }],
        max_tool_calls: 2,
      }),
    ).toEqual({ tool: 'web_search', size: 'low', maxSearches: 2 });
    expect(openaiWebSearch('openai-chat', 'gpt-4o-search-preview', { messages: user })?.size).toBeUndefined();
  });
});

describe('what the searches add to the bound, in dollars', () => {
  it('a chat search model: its dearest context size, and 10,000 prompt tokens of results', () => {
    const body = { messages: user, max_completion_tokens: 100 };
    const b = bound('gpt-4o-search-preview', 'openai-chat', body);
    const r = ratesOf('gpt-4o-search-preview', b.inputTokens);
    // gpt-4o-search-preview: high $0.05 a search.
    expect(r.webSearch).toBe(50_000_000_000);
    const plain = bound('gpt-4o', 'openai-chat', body);
    expect(b.inputTokens - plain.inputTokens).toBe(10_000);
    // The search adds 10,000 x $2.5e-6 = $0.025 of results plus $0.05: $0.075.
    const without = boundNano({ ...b, webSearches: 0, inputTokens: plain.inputTokens }, r);
    expect(boundNano(b, r) - without).toBe(75_000_000);
  });

  it('an OpenAI model the table gives no search price: $0.025 a search, the dearest OpenAI fee', () => {
    // gpt-4.1 has no search_context_cost_per_query; a preview search on it costs $25 per 1k calls.
    expect(ratesOf('gpt-4.1', 0).webSearch).toBe(25_000_000_000);
    expect(ratesOf('o4-mini', 0).webSearch).toBe(10_000_000_000);
    expect(ratesOf('gpt-5', 0).webSearch).toBe(10_000_000_000);
    expect(ratesOf('gpt-5-chat-latest', 0).webSearch).toBe(25_000_000_000);
    const body = {
      input: 'news?',
      tools: [{ type: 'web_search' }],
      max_tool_calls: 3,
      max_output_tokens: 50,
    };
    const b = bound('gpt-4.1', 'openai-responses', body);
    const r = ratesOf('gpt-4.1', b.inputTokens);
    const without = boundNano({ ...b, webSearches: 0, inputTokens: b.inputTokens - 30_000 }, r);
    // 3 x ($0.025 + 10,000 x $2e-6) = 3 x $0.045 = $0.135
    expect(boundNano(b, r) - without).toBe(135_000_000);
    // A model of another provider with no search price bounds no search fee.
    expect(ratesOf('claude-sonnet-4-5', 0).webSearch).toBe(10_000_000_000);
    expect(ratesOf('mistral/mistral-large-latest', 0).webSearch).toBe(0);
  });
});

describe('reading the search tools and options, field by field', () => {
  it('the three context sizes OpenAI names, and nothing else', () => {
    for (const size of ['low', 'medium', 'high'] as const) {
      expect(
        openaiWebSearch('openai-chat', 'gpt-4o', { web_search_options: { search_context_size: size } }),
        size,
      ).toEqual({ tool: 'chat', size, maxSearches: 1 });
      expect(
        openaiWebSearch('openai-responses', 'gpt-4.1', {
          tools: [{ type: 'web_search', search_context_size: size }],
          max_tool_calls: 1,
        })?.size,
        size,
      ).toBe(size);
    }
    // A size OpenAI does not name is no size: the default (medium) applies, read as undefined.
    for (const size of ['huge', 'HIGH', '', 3, null]) {
      expect(
        openaiWebSearch('openai-chat', 'gpt-4o', { web_search_options: { search_context_size: size } })?.size,
        String(size),
      ).toBeUndefined();
    }
  });

  it('a tool entry that is no object, or whose type is no string, is no search tool', () => {
    // null, a bare string and an array among the tools are skipped (never read as a tool, never a throw).
    expect(
      openaiWebSearch('openai-responses', 'gpt-4.1', {
        tools: [null, 'web_search', ['web_search'], { type: 'web_search' }],
        max_tool_calls: 2,
      }),
    ).toEqual({ tool: 'web_search', size: undefined, maxSearches: 2 });
    // A type that would read as `web_search` once made a string (an array of it) is not a string.
    expect(openaiWebSearch('openai-responses', 'gpt-4.1', { tools: [{ type: ['web_search'] }] })).toBeNull();
    // `tools` that is not a list is no tool.
    expect(openaiWebSearch('openai-responses', 'gpt-4.1', { tools: { type: 'web_search' } })).toBeNull();
  });

  it('the first search tool names the size; a preview tool anywhere names the kind', () => {
    const tools = [
      { type: 'web_search_preview', search_context_size: 'high' },
      { type: 'web_search', search_context_size: 'low' },
    ];
    // Preview first, then web_search: still preview, and the first tool's size.
    expect(openaiWebSearch('openai-responses', 'gpt-4.1', { tools, max_tool_calls: 5 })).toEqual({
      tool: 'web_search_preview',
      size: 'high',
      maxSearches: 5,
    });
    // web_search first (low), preview second (high): preview, the first tool's size (low).
    expect(
      openaiWebSearch('openai-responses', 'gpt-4.1', { tools: [...tools].reverse(), max_tool_calls: 5 }),
    ).toEqual({ tool: 'web_search_preview', size: 'low', maxSearches: 5 });
    // Two plain tools stay plain.
    expect(
      openaiWebSearch('openai-responses', 'gpt-4.1', {
        tools: [{ type: 'web_search' }, { type: 'web_search_2025_08_26' }],
      }),
    ).toEqual({ tool: 'web_search', size: undefined, maxSearches: null });
  });

  it('Responses reads only the tools: a search model name or web_search_options is no search there', () => {
    expect(openaiWebSearch('openai-responses', 'gpt-4.1', { input: 'x', web_search_options: {} })).toBeNull();
    expect(openaiWebSearch('openai-responses', 'gpt-4o-search-preview', { input: 'x' })).toBeNull();
    // A route the guard does not know by its path reads both.
    expect(openaiWebSearch(null, 'gpt-4o-search-preview', { input: 'x' })?.tool).toBe('chat');
  });

  it("the search model is read from the model's base name, after the last slash", () => {
    // A provider prefix that itself reads like a search model does not make the model one.
    expect(openaiWebSearch('openai-chat', 'proxy-search-api-eu/gpt-4o', { messages: user })).toBeNull();
    expect(openaiWebSearch('openai-chat', 'a/b/gpt-4o-search-preview', { messages: user })?.tool).toBe(
      'chat',
    );
    // Only the name's end or a dash may follow the suffix.
    expect(openaiWebSearch('openai-chat', 'gpt-4o-search-previewer', { messages: user })).toBeNull();
    expect(openaiWebSearch('openai-chat', 'gpt-4o-search-preview.2', { messages: user })).toBeNull();
  });

  it('max_tool_calls: a non-negative integer bounds the searches, 0 included', () => {
    const body = { tools: [{ type: 'web_search' }] };
    for (const [value, expected] of [
      [0, 0],
      [1, 1],
      [7, 7],
      [-1, null],
      [1.5, null],
      ['2', null],
      [Number.POSITIVE_INFINITY, null],
      [Number.NaN, null],
    ] as const) {
      expect(
        openaiWebSearch('openai-responses', 'gpt-4.1', { ...body, max_tool_calls: value })?.maxSearches,
        String(value),
      ).toBe(expected);
    }
  });
});

describe('grounding with Google Search in the bound (Gemini tools)', () => {
  // The cheap bound with the body's bytes given: the text part is then the same for every body below
  // (one message, 1,000 bytes, 4 + 16), and so is the tool framing for the same number of tools
  // (32 a tool + 16). What differs is the grounding alone.
  const gemini = (unit?: 'per_query' | 'per_prompt'): ModelPrice => ({
    model: 'made-up',
    provider: 'gemini',
    inputPico: 1,
    outputPico: 1,
    maxInputPico: 1,
    maxOutputPico: 1,
    ...(unit ? { webSearchBillingUnit: unit } : {}),
  });
  const contents = [{ role: 'user', parts: [{ text: 'weather?' }] }];
  const cheapBound = (body: Record<string, unknown>, price?: ModelPrice) =>
    boundCall('gemini-x', 'gemini', { contents, ...body }, price, {
      defaultMaxOutputTokens: 10,
      precise: false,
      bodyBytes: 1000,
    });
  // 1,000 bytes x 1.35 = 1,350, + 4 (one message) + 16; one tool: + 32 + 16.
  const TEXT = 1350 + 4 + 16;
  const ONE_TOOL = 32 + 16;

  it('a grounded prompt billed per prompt: 1 fee, 10 queries of 10,000 result tokens', () => {
    for (const key of ['google_search', 'googleSearch', 'google_search_retrieval', 'googleSearchRetrieval']) {
      const b = cheapBound({ tools: [{ [key]: {} }] }, gemini('per_prompt'));
      expect(b.webSearches, key).toBe(1);
      expect(b.inputTokens, key).toBe(TEXT + ONE_TOOL + 100_000);
    }
  });

  it('billed per query (or with no unit in the table): 10 queries per candidate, each billed', () => {
    for (const price of [gemini('per_query'), gemini(), undefined]) {
      const one = cheapBound({ tools: [{ googleSearch: {} }] }, price);
      expect(one.webSearches).toBe(10);
      expect(one.inputTokens).toBe(TEXT + ONE_TOOL + 100_000);
      const three = cheapBound(
        { tools: [{ googleSearch: {} }], generationConfig: { candidateCount: 3 } },
        price,
      );
      expect(three.webSearches).toBe(30);
      expect(three.inputTokens).toBe(TEXT + ONE_TOOL + 300_000);
    }
    // Per prompt, 3 candidates: still 1 fee, but 30 queries of results.
    const b = cheapBound(
      { tools: [{ google_search: {} }], generation_config: { candidate_count: 3 } },
      gemini('per_prompt'),
    );
    expect(b.webSearches).toBe(1);
    expect(b.inputTokens).toBe(TEXT + ONE_TOOL + 300_000);
  });

  it('any one grounding tool among the tools grounds the prompt; other tools do not', () => {
    const b = cheapBound(
      { tools: [{ functionDeclarations: [] }, { googleSearch: {} }] },
      gemini('per_prompt'),
    );
    expect(b.webSearches).toBe(1);
    expect(b.inputTokens).toBe(TEXT + 2 * 32 + 16 + 100_000);
    const none = cheapBound(
      { tools: [{ functionDeclarations: [] }, { codeExecution: {} }] },
      gemini('per_prompt'),
    );
    expect(none.webSearches).toBe(0);
    expect(none.inputTokens).toBe(TEXT + 2 * 32 + 16);
    // A null or a bare name among the tools is no grounding tool (and no throw).
    const odd = cheapBound({ tools: [null, 'google_search'] }, gemini('per_prompt'));
    expect(odd.webSearches).toBe(0);
    expect(odd.inputTokens).toBe(TEXT + 2 * 32 + 16);
    // Tools that are no list: no tool at all.
    const notList = cheapBound({ tools: { googleSearch: {} } }, gemini('per_prompt'));
    expect(notList.webSearches).toBe(0);
    expect(notList.inputTokens).toBe(TEXT);
  });

  it("grounding adds to an Anthropic-style search tool's searches", () => {
    // A web_search_ tool with max_uses 3 (3 searches, 3 x 10,000 tokens) and a grounded prompt billed
    // per prompt (1 fee, 10 x 10,000 tokens): 4 billed, 13 x 10,000 tokens of results.
    const b = cheapBound(
      { tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 3 }, { googleSearch: {} }] },
      gemini('per_prompt'),
    );
    expect(b.webSearches).toBe(4);
    expect(b.inputTokens).toBe(TEXT + 2 * 32 + 16 + 130_000);
  });
});
