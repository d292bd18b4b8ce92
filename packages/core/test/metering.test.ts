import { calculateCost, createSpendGuard, MemoryStorage, type SpendGuard, track } from '@spendguard/core';
import { type Simulator, startSimulator } from '@spendguard/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTokenizerLoaded } from '../src/metering/token-count.js';

// The guard's metering of every wire format, on the simulator's real bytes fed through a call's tap
// as an adapter would. Every scripted usage names its prompt tokens, so that nothing here needs
// tiktoken until the one test whose record must be estimated (this file runs in its own process).

const MASTER = 'sk-master-metering-test';
const USAGE = {
  prompt_tokens: 1200,
  completion_tokens: 90,
  cached_tokens: 300,
  cache_write_tokens: 200,
  cache_write_1h_tokens: 100,
  reasoning_tokens: 40,
};

let simulator: Simulator;
let storage: MemoryStorage;
let guard: SpendGuard;

beforeAll(async () => {
  simulator = await startSimulator();
  storage = new MemoryStorage();
  guard = createSpendGuard({
    storage,
    masterKey: MASTER,
    callContext: true,
    logger: { warn: () => {}, error: () => {} },
  });
});
afterAll(async () => {
  await guard.close();
  await simulator.close();
});

/** Sends `body` to the simulator and meters its answer through a guarded call, chunk by chunk. */
async function meter(path: string, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const outcome = await guard.admit({
    method: 'POST',
    path: path.split('?')[0]!,
    header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
    body,
  });
  if (!outcome.ok) throw new Error('refused');
  const call = outcome.call;
  const response = await fetch(`${simulator.origin}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-simulator-usage': JSON.stringify(USAGE), ...headers },
    body: call.rewrittenBody ?? JSON.stringify(body),
  });
  call.tap.begin(response.status, response.headers.get('content-type'));
  const sent: Buffer[] = [];
  let cut = false;
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      // Split further, so that events straddle chunks.
      for (let i = 0; i < chunk.length; i += 97) {
        const out = call.tap.write(chunk.subarray(i, i + 97));
        if (out !== null) sent.push(Buffer.from(out as Uint8Array));
      }
    }
  } catch {
    cut = true;
  }
  const rest = call.tap.drain();
  if (rest) sent.push(Buffer.from(rest));
  const record = await call.finish({ aborted: cut });
  return { record, text: Buffer.concat(sent).toString(), call };
}

/** The raw usage in a JSON body, or in the last SSE event that carries one. */
function reportedUsage(text: string): unknown {
  if (!text.startsWith('data:') && !text.startsWith('event:')) return JSON.parse(text);
  let last: unknown;
  for (const event of text.split(/\r?\n\r?\n/)) {
    const data = event.split(/\r?\n/).find((l) => l.startsWith('data: '));
    if (!data || data === 'data: [DONE]') continue;
    const payload = JSON.parse(data.slice(6));
    if (payload.usage || payload.usageMetadata || payload.response?.usage || payload.message?.usage)
      last = payload;
  }
  return last;
}

const FORMATS: Array<[string, string, Record<string, unknown>, string]> = [
  [
    'OpenAI chat',
    '/v1/chat/completions',
    { model: 'o4-mini', messages: [{ role: 'user', content: 'hi' }] },
    'o4-mini',
  ],
  ['OpenAI Responses', '/v1/responses', { model: 'gpt-4.1', input: 'hi' }, 'gpt-4.1'],
  [
    'Anthropic messages',
    '/v1/messages',
    { model: 'claude-sonnet-4-5', max_tokens: 500, messages: [] },
    'claude-sonnet-4-5',
  ],
];

describe('metering every wire format, priced as the pricing prices the reported usage', () => {
  for (const [name, path, body, model] of FORMATS) {
    for (const stream of [false, true]) {
      it(`${name}, ${stream ? 'streamed' : 'JSON'}`, async () => {
        // A chat client that streams asks for usage here (the case where it does not is below).
        const streamed = path.endsWith('/chat/completions')
          ? { stream: true, stream_options: { include_usage: true } }
          : { stream: true };
        const { record, text } = await meter(path, { ...body, ...(stream ? streamed : {}) });
        let raw = reportedUsage(text) as Record<string, any>;
        if (name === 'Anthropic messages' && stream) {
          // message_start carries the input side, message_delta the output: the usage is both.
          raw = { ...USAGE_ANTHROPIC, output_tokens: USAGE.completion_tokens };
        }
        const expected = calculateCost(model, raw).totalNano;
        expect(expected).toBeGreaterThan(0);
        expect(record).toMatchObject({ model, costNano: expected, estimated: false });
      });
    }
  }

  it('OpenAI chat streamed without include_usage: asks for it, hides it, prices it exactly', async () => {
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream: true };
    const { record, text, call } = await meter('/v1/chat/completions', body);
    expect(body).toMatchObject({ stream_options: { include_usage: true } }); // rewritten in place
    expect(JSON.parse(call.rewrittenBody!)).toEqual(body);
    expect(text).not.toContain('"usage"');
    expect(text).toContain('data: [DONE]');
    const usage = { ...USAGE, prompt_tokens_details: { cached_tokens: 300 } };
    expect(record.costNano).toBe(
      calculateCost('gpt-4o', {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        prompt_tokens_details: { cached_tokens: 300, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 40, audio_tokens: 0 },
      }).totalNano,
    );
    expect(record.estimated).toBe(false);
  });

  it('embeddings: prompt tokens only', async () => {
    const { record, text } = await meter('/v1/embeddings', {
      model: 'text-embedding-3-small',
      input: ['a', 'b'],
    });
    expect(record.usage).toMatchObject({ promptTokens: 1200, completionTokens: 0 });
    expect(record.costNano).toBe(calculateCost('text-embedding-3-small', JSON.parse(text)).totalNano);
  });

  for (const [suffix, label] of [
    [':generateContent', 'JSON'],
    [':streamGenerateContent?alt=sse', 'SSE'],
    [':streamGenerateContent', 'JSON array'],
  ] as const) {
    it(`Gemini ${label}: model from the URL or modelVersion`, async () => {
      const { record, text } = await meter(`/v1beta/models/gemini-2.5-flash${suffix}`, {
        contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
      });
      const raw =
        label === 'JSON' ? JSON.parse(text) : label === 'SSE' ? reportedUsage(text) : JSON.parse(text).at(-1);
      expect(record).toMatchObject({ model: 'gemini-2.5-flash', estimated: false });
      expect(record.costNano).toBe(calculateCost('gemini-2.5-flash', raw).totalNano);
      expect(record.usage).toMatchObject({ promptTokens: 1200, completionTokens: 90, reasoningTokens: 40 });
    });
  }

  it('writes each format its call type', async () => {
    const logs = await storage.querySpendLogs({ limit: 1000 });
    expect(new Set(logs.map((l) => l.callType))).toEqual(
      new Set([
        'acompletion',
        'acompletion_stream',
        'aresponses',
        'aresponses_stream',
        'anthropic_messages',
        'anthropic_messages_stream',
        'aembedding',
        'agenerate_content',
        'agenerate_content_stream',
      ]),
    );
  });

  it('charges a tracked usage as its own row and the request itself $0 (the double-count rule)', async () => {
    const outcome = await guard.admit({
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
    expect(tracked.costNano).toBe(
      calculateCost('claude-haiku-4-5', { input_tokens: 1000, output_tokens: 100 }).totalNano,
    );
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
    const [child] = await storage.querySpendLogs({ requestId: tracked.requestId });
    const [parent] = await storage.querySpendLogs({ requestId: call.requestId });
    expect(child).toMatchObject({
      callType: 'track',
      tags: ['agent'],
      metadata: { parent_request_id: call.requestId },
    });
    expect(parent).toMatchObject({ spendNano: 0, metadata: { child_calls: 1, metered_by: 'track' } });
    expect(() => track({}, { model: 'gpt-4o' })).toThrow(/no guarded request/);
  });

  it('has not loaded tiktoken for any of that', () => {
    expect(isTokenizerLoaded()).toBe(false);
  });

  it('estimates a stream cut before any usage, and only then loads tiktoken', async () => {
    const { record } = await meter(
      '/v1/responses',
      { model: 'gpt-4.1', input: 'hello there', stream: true },
      { 'x-simulator-cut-after': '6' },
    );
    expect(isTokenizerLoaded()).toBe(true);
    expect(record).toMatchObject({ model: 'gpt-4.1', estimated: true });
    expect(record.usage.completionTokens).toBe(2); // two deltas delivered: "hello", " hello"
    expect(record.usage.promptTokens).toBeGreaterThan(0);
  });

  it('keeps the input Anthropic reported for a stream cut before message_delta, estimating the output', async () => {
    const { record } = await meter(
      '/v1/messages',
      { model: 'claude-sonnet-4-5', max_tokens: 500, messages: [], stream: true },
      { 'x-simulator-cut-after': '8' },
    );
    expect(record.estimated).toBe(true);
    expect(record.usage).toMatchObject({
      promptTokens: 1200,
      cachedPromptTokens: 300,
      cacheWriteTokens: 300,
      completionTokens: 5,
    });
    const [log] = await storage.querySpendLogs({ requestId: record.requestId });
    expect(log!.metadata).toMatchObject({ usage_partial: true, stream_cut: true });
  });
});

const USAGE_ANTHROPIC = {
  input_tokens:
    USAGE.prompt_tokens - USAGE.cached_tokens - USAGE.cache_write_tokens - USAGE.cache_write_1h_tokens,
  cache_read_input_tokens: USAGE.cached_tokens,
  cache_creation_input_tokens: USAGE.cache_write_tokens + USAGE.cache_write_1h_tokens,
  cache_creation: {
    ephemeral_5m_input_tokens: USAGE.cache_write_tokens,
    ephemeral_1h_input_tokens: USAGE.cache_write_1h_tokens,
  },
  service_tier: 'standard',
};
