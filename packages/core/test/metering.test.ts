import { track } from '@spendguard/core';
import { describe, expect, it } from 'vitest';
import { isTokenizerLoaded } from '../src/metering/token-count.js';
import { MASTER, meteringBench, meterThrough } from './metered-call.js';

// The guard's metering of every wire format, on the simulator's real bytes fed through a call's tap
// as an adapter would. Every scripted usage names its prompt tokens, so that nothing here needs
// tiktoken: each metered call checks that it is still not loaded (this file runs in its own process;
// the estimated records are in metering-estimated.test.ts). Each test checks only its own records,
// so the tests hold in any order.
//
// Expected costs are worked out by hand from ../shared/data/model_prices_and_context_window.json
// (2026-07-24) with the providers' rules (cached prompt tokens at the cache-read price, Anthropic's
// input_tokens without its cache reads and writes, reasoning at the output or reasoning price); the
// comment beside each literal shows the arithmetic in USD, for USAGE below.

const bench = meteringBench();

/** One call metered, and tiktoken still not loaded after it. */
async function meter(path: string, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const metered = await meterThrough(bench, path, body, headers);
  expect(isTokenizerLoaded(), 'metered without counting tokens').toBe(false);
  return metered;
}

/** Name, path, body, model, expected cost (nano-dollars), call type when JSON (`_stream` appended when streamed). */
const FORMATS: Array<[string, string, Record<string, unknown>, string, number, string]> = [
  [
    'OpenAI chat',
    '/v1/chat/completions',
    { model: 'o4-mini', messages: [{ role: 'user', content: 'hi' }] },
    'o4-mini',
    // 900 x 1.1e-6 + 300 cached x 2.75e-7 + 90 (40 reasoning) x 4.4e-6 = 0.00099 + 0.0000825 + 0.000396
    1_468_500,
    'acompletion',
  ],
  [
    'OpenAI Responses',
    '/v1/responses',
    { model: 'gpt-4.1', input: 'hi' },
    'gpt-4.1',
    // 900 x 2e-6 + 300 cached x 5e-7 + 90 x 8e-6 = 0.0018 + 0.00015 + 0.00072
    2_670_000,
    'aresponses',
  ],
  [
    'Anthropic messages',
    '/v1/messages',
    { model: 'claude-sonnet-4-5', max_tokens: 500, messages: [] },
    'claude-sonnet-4-5',
    // input_tokens 1200 - 300 - 200 - 100 = 600: 600 x 3e-6 + 300 read x 3e-7 + 200 5m-writes x 3.75e-6
    // + 100 1h-writes x 6e-6 + 90 x 1.5e-5 = 0.0018 + 0.00009 + 0.00075 + 0.0006 + 0.00135
    4_590_000,
    'anthropic_messages',
  ],
];

describe('metering every wire format, priced as the pricing prices the reported usage', () => {
  for (const [name, path, body, model, costNano, callType] of FORMATS) {
    for (const stream of [false, true]) {
      it(`${name}, ${stream ? 'streamed' : 'JSON'}`, async () => {
        // A chat client that streams asks for usage here (the case where it does not is below).
        const streamed = path.endsWith('/chat/completions')
          ? { stream: true, stream_options: { include_usage: true } }
          : { stream: true };
        const { record, log } = await meter(path, { ...body, ...(stream ? streamed : {}) });
        expect(record).toMatchObject({ model, costNano, estimated: false });
        expect(record.usage).toMatchObject({ promptTokens: 1200, completionTokens: 90 });
        expect(log).toMatchObject({
          callType: stream ? `${callType}_stream` : callType,
          spendNano: costNano,
        });
      });
    }
  }

  it('OpenAI chat streamed without include_usage: asks for it, hides it, prices it exactly', async () => {
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream: true };
    const { record, text, call, log } = await meter('/v1/chat/completions', body);
    expect(body).toMatchObject({ stream_options: { include_usage: true } }); // rewritten in place
    expect(JSON.parse(call.rewrittenBody!)).toEqual(body);
    expect(text).not.toContain('"usage"');
    expect(text).toContain('data: [DONE]');
    // 900 x 2.5e-6 + 300 cached x 1.25e-6 + 90 x 1e-5 = 0.00225 + 0.000375 + 0.0009
    expect(record.costNano).toBe(3_525_000);
    expect(record.estimated).toBe(false);
    expect(log.callType).toBe('acompletion_stream');
  });

  it('embeddings: prompt tokens only', async () => {
    const { record, log } = await meter('/v1/embeddings', {
      model: 'text-embedding-3-small',
      input: ['a', 'b'],
    });
    expect(record.usage).toMatchObject({ promptTokens: 1200, completionTokens: 0 });
    expect(record.costNano).toBe(24_000); // 1200 x 2e-8
    expect(log.callType).toBe('aembedding');
  });

  for (const [suffix, label] of [
    [':generateContent', 'JSON'],
    [':streamGenerateContent?alt=sse', 'SSE'],
    [':streamGenerateContent', 'JSON array'],
  ] as const) {
    it(`Gemini ${label}: model from the URL or modelVersion`, async () => {
      const { record, log } = await meter(`/v1beta/models/gemini-2.5-flash${suffix}`, {
        contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
      });
      expect(record).toMatchObject({ model: 'gemini-2.5-flash', estimated: false });
      // 900 x 3e-7 + 300 cached x 3e-8 + 50 x 2.5e-6 + 40 thoughts x 2.5e-6
      // = 0.00027 + 0.000009 + 0.000125 + 0.0001
      expect(record.costNano).toBe(504_000);
      expect(record.usage).toMatchObject({ promptTokens: 1200, completionTokens: 90, reasoningTokens: 40 });
      // The call type follows the answer's framing: the JSON array of streamGenerateContent without
      // alt=sse is read as one JSON body.
      expect(log.callType).toBe(label === 'SSE' ? 'agenerate_content_stream' : 'agenerate_content');
    });
  }

  it('charges a tracked usage as its own row and the request itself $0 (the double-count rule)', async () => {
    const outcome = await bench.guard.admit({
      method: 'POST',
      path: '/agent',
      header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
      body: { question: 'x', tags: ['agent'] },
    });
    if (!outcome.ok) throw new Error('refused');
    const call = outcome.call;
    const tracked = await call.run(async () => {
      await Promise.resolve();
      return track({ input_tokens: 1000, output_tokens: 100 }, { model: 'claude-haiku-4-5' });
    });
    expect(tracked.costNano).toBe(1_500_000); // 1000 x 1e-6 + 100 x 5e-6
    // The route then answers with usage of its own: not charged again.
    call.tap.begin(200, 'application/json');
    call.tap.write(
      JSON.stringify({
        object: 'chat.completion',
        model: 'gpt-4o',
        usage: { prompt_tokens: 5, completion_tokens: 5 },
      }),
    );
    call.tap.drain();
    const own = await call.finish();
    expect(own.costNano).toBe(0);
    const [child] = await bench.storage.querySpendLogs({ requestId: tracked.requestId });
    const [parent] = await bench.storage.querySpendLogs({ requestId: call.requestId });
    expect(child).toMatchObject({
      callType: 'track',
      tags: ['agent'],
      metadata: { parent_request_id: call.requestId },
    });
    expect(parent).toMatchObject({ spendNano: 0, metadata: { child_calls: 1, metered_by: 'track' } });
    expect(() => track({}, { model: 'gpt-4o' })).toThrow(/no guarded request/);
  });
});
