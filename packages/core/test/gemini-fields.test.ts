/**
 * Gemini's REST API reads JSON by proto3 rules: each field in lowerCamelCase or in its proto name
 * (snake_case). The worst case reads both spellings (candidates, output cap, schemas, file parts,
 * cached content), lowers a cap in the spelling the request uses, and bounds and prices grounding with
 * Google Search by Google's rules (per grounded prompt on Gemini 2.x, per search query on Gemini 3).
 * Expected values are hand-worked from the price table (test/fixtures, LiteLLM's) and Google's docs.
 */
import { describe, expect, it } from 'vitest';
import { boundCall, boundNano, setOutputCap } from '../src/admission/worst-case.js';
import { requestedOutputTokens } from '../src/metering/request-body.js';
import { normalizeUsage } from '../src/pricing/normalize-usage.js';
import { PriceBook } from '../src/pricing/price-book.js';
import { startSimulator } from '../src/testing/simulator.js';

const prices = new PriceBook();
type Body = Record<string, unknown>;

function bound(model: string, body: Body, precise = false) {
  return boundCall(model, 'gemini', body, prices.resolve(model), { defaultMaxOutputTokens: 4096, precise });
}

function rates(model: string, b: ReturnType<typeof bound>) {
  const r = prices.worstCaseRates(model, {
    promptTokens: b.inputTokens,
    serviceTier: b.serviceTier,
    cacheWrites: b.cacheWrites,
    audioOutput: b.audioOutput,
  });
  if (!r) throw new Error(`no price for ${model}`);
  return r;
}

const contents = [{ role: 'user', parts: [{ text: 'hello there' }] }];

describe('generation config in either spelling', () => {
  it('bounds candidate_count and max_output_tokens as candidateCount and maxOutputTokens', () => {
    const snake = bound('gemini-2.5-flash', {
      contents,
      generation_config: { candidate_count: 4, max_output_tokens: 100 },
    });
    const camel = bound('gemini-2.5-flash', {
      contents,
      generationConfig: { candidateCount: 4, maxOutputTokens: 100 },
    });
    for (const b of [snake, camel]) {
      expect(b).toMatchObject({ choices: 4, outputTokens: 100, outputRequested: true });
    }
    // 4 candidates x 100 tokens x $2.5e-6 (gemini-2.5-flash output and reasoning) = $0.001
    const r = rates('gemini-2.5-flash', snake);
    expect(boundNano(snake, r) - boundNano(snake, r, 0)).toBe(1_000_000);
  });

  it('without a cap, bounds every candidate at the model maximum (65,535)', () => {
    const b = bound('gemini-2.5-flash', { contents, generation_config: { candidate_count: 3 } });
    expect(b).toMatchObject({ choices: 3, outputTokens: 65_535, outputRequested: false });
  });

  it('takes the larger value when a request spells a field both ways (Google refuses it, unbilled)', () => {
    const b = bound('gemini-2.5-flash', {
      contents,
      generationConfig: { candidateCount: 2, max_output_tokens: 700, maxOutputTokens: 50 },
      generation_config: { candidate_count: 5 },
    });
    expect(b).toMatchObject({ choices: 5, outputTokens: 700 });
  });

  it('is read by the metering estimate too', () => {
    expect(requestedOutputTokens({ contents, generation_config: { max_output_tokens: 321 } })).toBe(321);
  });
});

describe('lowering the cap writes the spelling the request uses', () => {
  it('snake_case config: max_output_tokens inside generation_config, no generationConfig added', () => {
    const body: Body = { contents, generation_config: { candidate_count: 2, max_output_tokens: 9000 } };
    setOutputCap(body, 'generationConfig.maxOutputTokens', 512);
    expect(body).toEqual({ contents, generation_config: { candidate_count: 2, max_output_tokens: 512 } });
  });

  it('snake_case config, camelCase field: the field the request set', () => {
    const body: Body = { contents, generation_config: { maxOutputTokens: 9000, temperature: 0 } };
    setOutputCap(body, 'generationConfig.maxOutputTokens', 512);
    expect(body).toEqual({ contents, generation_config: { maxOutputTokens: 512, temperature: 0 } });
  });

  it('camelCase config, snake_case field', () => {
    const body: Body = { contents, generationConfig: { max_output_tokens: 9000 } };
    setOutputCap(body, 'generationConfig.maxOutputTokens', 512);
    expect(body).toEqual({ contents, generationConfig: { max_output_tokens: 512 } });
  });

  it('snake_case config without a cap: max_output_tokens', () => {
    const body: Body = { contents, generation_config: { candidate_count: 4 } };
    setOutputCap(body, 'generationConfig.maxOutputTokens', 300);
    expect(body).toEqual({ contents, generation_config: { candidate_count: 4, max_output_tokens: 300 } });
  });

  it('no config: generationConfig.maxOutputTokens', () => {
    const body: Body = { contents };
    setOutputCap(body, 'generationConfig.maxOutputTokens', 300);
    expect(body).toEqual({ contents, generationConfig: { maxOutputTokens: 300 } });
  });
});

describe('parts and references in snake_case', () => {
  const withPart = (part: Body) => ({ contents: [{ role: 'user', parts: [{ text: 'look' }, part] }] });

  it('file_data with mime_type image/png is one image of unknown size: 16 tiles x 258 = 4,128', () => {
    const base = bound('gemini-2.5-flash', withPart({ text: '' }), true).inputTokens;
    for (const part of [
      { file_data: { mime_type: 'image/png', file_uri: 'gs://b/photo.png' } },
      { fileData: { mimeType: 'image/png', fileUri: 'gs://b/photo.png' } },
    ]) {
      expect(bound('gemini-2.5-flash', withPart(part), true).inputTokens - base).toBe(4128);
    }
  });

  it('cached_content / cachedContent: the cache is billed as prompt, bounded by the context window', () => {
    for (const key of ['cached_content', 'cachedContent']) {
      // A key of the same length that means nothing: the same bytes, so the same cheap text bound.
      const other = bound('gemini-2.5-flash', { contents, [`x${key.slice(1)}`]: 'cachedContents/abc' });
      const cached = bound('gemini-2.5-flash', { contents, [key]: 'cachedContents/abc' });
      // gemini-2.5-flash: max_input_tokens 1,048,576.
      expect(cached.inputTokens - other.inputTokens, key).toBe(1_048_576);
    }
  });

  it('response_schema is counted like responseSchema', () => {
    const schema = { type: 'object', properties: { answer: { type: 'string', description: 'the answer' } } };
    const none = bound('gemini-2.5-flash', { contents }, true).inputTokens;
    const snake = bound(
      'gemini-2.5-flash',
      { contents, generation_config: { response_schema: schema } },
      true,
    );
    const camel = bound('gemini-2.5-flash', { contents, generationConfig: { responseSchema: schema } }, true);
    expect(snake.inputTokens).toBe(camel.inputTokens);
    expect(snake.inputTokens).toBeGreaterThan(none + 8);
  });
});

describe('grounding with Google Search', () => {
  // Same byte length as every grounding key below, padded: the cheap text bound is then equal.
  const tool = (key: string) => ({ contents, tools: [{ [key]: {} }] });
  const plain = (key: string) => tool('x'.repeat(key.length));

  it('Gemini 2.x bills a grounded prompt: 1 fee ($0.035), up to 10 queries of 10,000 result tokens', () => {
    for (const key of ['google_search', 'googleSearch', 'google_search_retrieval', 'googleSearchRetrieval']) {
      const grounded = bound('gemini-2.5-flash', tool(key));
      const other = bound('gemini-2.5-flash', plain(key));
      expect(grounded.webSearches, key).toBe(1);
      expect(other.webSearches, key).toBe(0);
      expect(grounded.inputTokens - other.inputTokens, key).toBe(100_000);
    }
    const b = bound('gemini-2.5-flash', tool('google_search'));
    const r = rates('gemini-2.5-flash', b);
    expect(r.webSearch).toBe(35_000_000_000); // $0.035 in pico-dollars
    const o = bound('gemini-2.5-flash', plain('google_search'));
    // $0.035 + 100,000 tokens x $3e-7 = $0.065
    expect(boundNano(b, r) - boundNano(o, rates('gemini-2.5-flash', o))).toBe(65_000_000);
  });

  it('one grounded prompt with 4 candidates is still one fee, but each candidate may search', () => {
    const body = { ...tool('google_search'), generation_config: { candidate_count: 4 } };
    const other = { ...plain('google_search'), generation_config: { candidate_count: 4 } };
    const b = bound('gemini-2.5-flash', body);
    expect(b.webSearches).toBe(1);
    expect(b.inputTokens - bound('gemini-2.5-flash', other).inputTokens).toBe(400_000);
  });

  it('Gemini 3 bills each search query (web_search_billing_unit per_query): 10 per candidate', () => {
    const body = { ...tool('googleSearch'), generationConfig: { candidateCount: 2 } };
    const b = bound('gemini/gemini-3-pro-preview', body);
    expect(b.webSearches).toBe(20);
    expect(rates('gemini/gemini-3-pro-preview', b).webSearch).toBe(14_000_000_000); // $0.014
  });

  it('prices what the response reports: one fee per grounded prompt, or each query', () => {
    const usage = { promptTokens: 0, completionTokens: 0, webSearchRequests: 3 };
    // gemini-2.5-flash: per prompt, $0.035 once.
    expect(prices.cost('gemini-2.5-flash', usage).webSearchNano).toBe(35_000_000);
    expect(prices.cost('gemini/gemini-2.5-flash', usage).webSearchNano).toBe(35_000_000);
    // gemini-3-pro-preview: per query, 3 x $0.014.
    expect(prices.cost('gemini/gemini-3-pro-preview', usage).webSearchNano).toBe(42_000_000);
    // No search price in the table: LiteLLM's Gemini default, $0.035 a grounded prompt.
    expect(prices.cost('gemini/gemini-2.5-computer-use-preview-10-2025', usage).webSearchNano).toBe(
      35_000_000,
    );
    // Claude (also on Vertex) is billed per search, as before: 3 x $0.01.
    expect(prices.cost('claude-sonnet-4-5', usage).webSearchNano).toBe(30_000_000);
    expect(prices.resolve('vertex_ai/claude-sonnet-4-5')?.webSearchBillingUnit).toBeUndefined();
  });

  it('meters the search queries of every candidate from a response, in either spelling', () => {
    const response = {
      candidates: [
        { index: 0, groundingMetadata: { webSearchQueries: ['weather paris', 'weather lyon', ''] } },
        { index: 1, grounding_metadata: { web_search_queries: ['weather nice'] } },
        { index: 2 },
      ],
      usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 20, totalTokenCount: 30 },
    };
    expect(normalizeUsage(response)).toEqual({
      promptTokens: 10,
      completionTokens: 20,
      webSearchRequests: 3,
    });
  });
});

describe('the simulator', () => {
  it('generates and bills every candidate, reads snake_case, reports grounding queries per candidate', async () => {
    const sim = await startSimulator();
    try {
      const res = await fetch(`${sim.origin}/v1beta/models/gemini-2.5-flash:generateContent`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          contents: [{ parts: [{ text: 'abcdefgh' }] }],
          tools: [{ google_search: {} }],
          generation_config: { candidate_count: 3, max_output_tokens: 5 },
        }),
      });
      const body = await res.json();
      expect(res.status).toBe(200);
      expect(body.candidates).toHaveLength(3);
      // 3 candidates x 5 tokens; prompt: 'abcdefgh' 2 + '[{"google_search":{}}]' (22 chars) 6.
      expect(body.usageMetadata).toMatchObject({ promptTokenCount: 8, candidatesTokenCount: 15 });
      for (const candidate of body.candidates) {
        expect(candidate.groundingMetadata.webSearchQueries).toHaveLength(1);
      }
      expect(normalizeUsage(body).webSearchRequests).toBe(3);
    } finally {
      await sim.close();
    }
  });

  it('refuses a field given in both spellings, as Google does', async () => {
    const sim = await startSimulator();
    try {
      const res = await fetch(`${sim.origin}/v1beta/models/gemini-2.5-flash:generateContent`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          contents,
          generationConfig: { maxOutputTokens: 10 },
          generation_config: { max_output_tokens: 10 },
        }),
      });
      expect(res.status).toBe(400);
    } finally {
      await sim.close();
    }
  });
});
