import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

// Every wire format metered end to end, on every adapter, with the official clients as callers: the
// recorded cost is the usage the simulator reported at the model's prices, to the nano-dollar. Then
// cut streams, the hidden include_usage chunk, and app routes that call the provider through an SDK
// given guard.fetch (or report usage with track()).
//
// Expected costs are worked out by hand from ../shared/data/model_prices_and_context_window.json
// (2026-07-24) and the providers' billing rules, never with the guard's own pricing: OpenAI bills
// cached prompt tokens at the cache-read price and reasoning tokens at the output price; Anthropic's
// input_tokens exclude cache reads (cache_read_input_token_cost) and writes (5-minute and 1-hour
// prices); Gemini bills thoughts at the reasoning price and audio prompt tokens at the audio price.
// The comment beside each literal shows the arithmetic in USD.

const nano = (usd: number) => Math.round(usd * 1e9);

/** Prices in nano-dollars per token (USD x 1e9), read by hand from the table, for usage not fixed in advance. */
const NANO_PER_TOKEN = {
  'gpt-4o': { input: 2_500, output: 10_000 },
  'gpt-4o-mini': { input: 150, output: 600 },
} as const;
/** Plain prompt and completion tokens at a model's base prices (no cache, reasoning or audio), in nano. */
const plainNano = (model: keyof typeof NANO_PER_TOKEN, prompt: number, completion: number) =>
  prompt * NANO_PER_TOKEN[model].input + completion * NANO_PER_TOKEN[model].output;

/** RICH on gpt-4o (OpenAI chat): 1800 x 2.5e-6 + 600 cached x 1.25e-6 + 150 x 1e-5 = 0.00675. */
const GPT_4O_RICH_NANO = 6_750_000;
/** RICH on gpt-4.1 (Responses): 1800 x 2e-6 + 600 cached x 5e-7 + 150 x 8e-6 = 0.0051. */
const GPT_41_RICH_NANO = 5_100_000;
/**
 * RICH on claude-sonnet-4-5: input_tokens 2400 - 600 - 300 - 200 = 1300; 1300 x 3e-6 + 600 read x 3e-7
 * + 300 5m-writes x 3.75e-6 + 200 1h-writes x 6e-6 + 150 x 1.5e-5
 * = 0.0039 + 0.00018 + 0.001125 + 0.0012 + 0.00225 = 0.008655.
 */
const SONNET_RICH_NANO = 8_655_000;

/** Scripted usage rich enough to exercise cached, cache-write (5m/1h), reasoning and audio prices. */
const RICH = {
  prompt_tokens: 2400,
  completion_tokens: 150,
  cached_tokens: 600,
  cache_write_tokens: 300,
  cache_write_1h_tokens: 200,
  reasoning_tokens: 50,
};

type Log = {
  request_id: string;
  call_type: string;
  spend: number;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  user: string | null;
  end_user: string | null;
  request_tags: string[];
  metadata: Record<string, any>;
};

/** SSE events of a raw response: `[event name, payload]`, in order. */
async function readSse(response: Response): Promise<Array<[string | null, any]>> {
  const text = await response.text();
  return text
    .split(/\r?\n\r?\n/)
    .filter((e) => e.includes('data:'))
    .map((e) => {
      const lines = e.split(/\r?\n/);
      const name =
        lines
          .find((l) => l.startsWith('event:'))
          ?.slice(6)
          .trim() ?? null;
      const data = lines
        .find((l) => l.startsWith('data:'))!
        .slice(5)
        .trim();
      return [name, data === '[DONE]' ? data : JSON.parse(data)];
    });
}

describe.each(ADAPTERS)('metering every wire format on $name', (framework) => {
  let app: TestApp;
  let openaiFor: (key: string) => OpenAI;
  let anthropicFor: (key: string) => Anthropic;

  beforeAll(async () => {
    app = await startTestApp(framework);
    await admin(app, 'POST', '/team/new', { team_id: 't-metering', max_budget: 1000 });
    await admin(app, 'POST', '/user/new', { user_id: 'meter-alice', team_id: 't-metering' });
    openaiFor = (key) => new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
    anthropicFor = (key) => new Anthropic({ apiKey: key, baseURL: app.baseUrl, maxRetries: 0 });
  });
  afterAll(async () => {
    await app.close();
  });

  const newKey = async (extra: Record<string, unknown> = {}) =>
    (
      await admin(app, 'POST', '/key/generate', {
        user_id: 'meter-alice',
        team_id: 't-metering',
        max_budget: 50,
        ...extra,
      })
    ).body.key as string;
  const logsOf = async (key: string): Promise<Log[]> => {
    await app.settled();
    return (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body;
  };
  const onlyLog = async (key: string) => {
    const logs = await logsOf(key);
    expect(logs).toHaveLength(1);
    return logs[0]!;
  };

  describe('priced to the nano-dollar from what the simulator reported', () => {
    it('OpenAI chat, JSON, with cached and reasoning tokens (and the cost header)', async () => {
      const key = await newKey();
      app.simulator.scriptNextUsage(RICH);
      const { data, response } = await openaiFor(key)
        .chat.completions.create({ model: 'o4-mini', messages: [{ role: 'user', content: 'hi' }] })
        .withResponse();
      expect(data.usage).toMatchObject({ prompt_tokens: 2400, completion_tokens: 150 });
      // o4-mini: 1800 x 1.1e-6 + 600 cached x 2.75e-7 + 150 (50 reasoning) x 4.4e-6
      // = 0.00198 + 0.000165 + 0.00066 = 0.002805
      const expected = 2_805_000;
      expect(nano(Number(response.headers.get('x-litellm-response-cost')))).toBe(expected);
      const log = await onlyLog(key);
      expect(nano(log.spend)).toBe(expected);
      expect(log).toMatchObject({ call_type: 'acompletion', prompt_tokens: 2400, completion_tokens: 150 });
    });

    it('OpenAI chat, JSON, with audio tokens', async () => {
      const key = await newKey();
      app.simulator.scriptNextUsage({
        prompt_tokens: 900,
        completion_tokens: 400,
        prompt_audio_tokens: 700,
        completion_audio_tokens: 300,
      });
      await openaiFor(key).chat.completions.create({
        model: 'gpt-4o-audio-preview',
        messages: [{ role: 'user', content: 'say it' }],
      });
      // 200 text in x 2.5e-6 + 700 audio in x 4e-5 + 100 text out x 1e-5 + 300 audio out x 8e-5
      // = 0.0005 + 0.028 + 0.001 + 0.024 = 0.0535
      expect(nano((await onlyLog(key)).spend)).toBe(53_500_000);
    });

    it('OpenAI chat, streamed with include_usage', async () => {
      const key = await newKey();
      app.simulator.scriptNextUsage(RICH);
      const stream = await openaiFor(key).chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let usageChunk: OpenAI.ChatCompletionChunk | undefined;
      for await (const chunk of stream) if (chunk.usage) usageChunk = chunk;
      expect(usageChunk?.usage).toMatchObject({ prompt_tokens: 2400, completion_tokens: 150 });
      const log = await onlyLog(key);
      expect(nano(log.spend)).toBe(GPT_4O_RICH_NANO);
      expect(log).toMatchObject({ call_type: 'acompletion_stream', metadata: { estimated: false } });
    });

    it('OpenAI Responses, JSON and streamed', async () => {
      const key = await newKey();
      const client = openaiFor(key);
      app.simulator.scriptNextUsage(RICH);
      const response = await client.responses.create({
        model: 'gpt-4.1',
        input: 'hi',
        max_output_tokens: 200,
      });
      expect(response.output_text).toMatch(/^hello/);
      app.simulator.scriptNextUsage({ ...RICH, completion_tokens: 90 });
      const stream = await client.responses.create({ model: 'o4-mini', input: 'hi', stream: true });
      let completed: OpenAI.Responses.Response | undefined;
      for await (const event of stream) if (event.type === 'response.completed') completed = event.response;
      const logs = (await logsOf(key)).sort((a, b) => a.call_type.localeCompare(b.call_type));
      expect(logs.map((l) => l.call_type)).toEqual(['aresponses', 'aresponses_stream']);
      expect(response.usage).toMatchObject({ input_tokens: 2400, output_tokens: 150 });
      expect(completed?.usage).toMatchObject({ input_tokens: 2400, output_tokens: 90 });
      expect(nano(logs[0]!.spend)).toBe(GPT_41_RICH_NANO);
      // o4-mini: 1800 x 1.1e-6 + 600 cached x 2.75e-7 + 90 x 4.4e-6 = 0.00198 + 0.000165 + 0.000396
      expect(nano(logs[1]!.spend)).toBe(2_541_000);
    });

    it('OpenAI embeddings (prompt tokens only; the client asks for base64)', async () => {
      const key = await newKey();
      app.simulator.scriptNextUsage({ prompt_tokens: 5000 });
      const result = await openaiFor(key).embeddings.create({
        model: 'text-embedding-3-small',
        input: ['a', 'b'],
      });
      expect(result.data[1]!.embedding).toHaveLength(8);
      const log = await onlyLog(key);
      expect(log).toMatchObject({ call_type: 'aembedding', prompt_tokens: 5000, completion_tokens: 0 });
      expect(result.usage.prompt_tokens).toBe(5000);
      expect(nano(log.spend)).toBe(100_000); // 5000 x 2e-8
    });

    it('Anthropic messages, JSON, with cache reads and 5-minute and 1-hour cache writes', async () => {
      const key = await newKey();
      app.simulator.scriptNextUsage(RICH);
      const message = await anthropicFor(key).messages.create({
        model: 'claude-sonnet-4-5',
        max_tokens: 500,
        messages: [{ role: 'user', content: 'hi' }],
      });
      expect(message.usage).toMatchObject({ cache_creation_input_tokens: 500, cache_read_input_tokens: 600 });
      const log = await onlyLog(key);
      expect(nano(log.spend)).toBe(SONNET_RICH_NANO);
      expect(log).toMatchObject({
        call_type: 'anthropic_messages',
        prompt_tokens: 2400,
        completion_tokens: 150,
      });
    });

    it('Anthropic messages, streamed: message_start (input, cache) + message_delta (output)', async () => {
      const key = await newKey();
      app.simulator.scriptNextUsage(RICH);
      const stream = await anthropicFor(key).messages.create({
        model: 'claude-haiku-4-5',
        max_tokens: 500,
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
      });
      const usage: Record<string, unknown> = {};
      const types: string[] = [];
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'message_start') Object.assign(usage, event.message.usage);
        if (event.type === 'message_delta') Object.assign(usage, event.usage);
      }
      expect(types[0]).toBe('message_start');
      expect(types.at(-2)).toBe('message_delta');
      expect(usage).toMatchObject({ input_tokens: 1300, cache_read_input_tokens: 600, output_tokens: 150 });
      const log = await onlyLog(key);
      // claude-haiku-4-5: 1300 x 1e-6 + 600 read x 1e-7 + 300 5m-writes x 1.25e-6 + 200 1h-writes x 2e-6
      // + 150 x 5e-6 = 0.0013 + 0.00006 + 0.000375 + 0.0004 + 0.00075 = 0.002885
      expect(nano(log.spend)).toBe(2_885_000);
      expect(log).toMatchObject({ call_type: 'anthropic_messages_stream', metadata: { estimated: false } });
    });

    it('Gemini generateContent (JSON) and streamGenerateContent?alt=sse, model from the URL', async () => {
      const key = await newKey();
      const call = (path: string) =>
        fetch(`${app.baseUrl}/v1beta/models/gemini-2.5-flash:${path}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({
            contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
            generationConfig: { maxOutputTokens: 300 },
          }),
        });
      app.simulator.scriptNextUsage(RICH);
      const json = await (await call('generateContent')).json();
      app.simulator.scriptNextUsage({ ...RICH, prompt_audio_tokens: 400 });
      const events = await readSse(await call('streamGenerateContent?alt=sse'));
      expect(events.length).toBeGreaterThan(2);
      const last = events.at(-1)![1];
      expect(last.candidates[0].finishReason).toBe('STOP');
      const logs = (await logsOf(key)).sort((a, b) => a.call_type.localeCompare(b.call_type));
      expect(logs.map((l) => l.call_type)).toEqual(['agenerate_content', 'agenerate_content_stream']);
      expect(logs.every((l) => l.model === 'gemini-2.5-flash')).toBe(true);
      expect(json.usageMetadata).toMatchObject({ promptTokenCount: 2400, candidatesTokenCount: 100 });
      expect(last.usageMetadata).toMatchObject({ promptTokenCount: 2400, thoughtsTokenCount: 50 });
      // 1800 x 3e-7 + 600 cached x 3e-8 + 100 x 2.5e-6 + 50 thoughts x 2.5e-6
      // = 0.00054 + 0.000018 + 0.00025 + 0.000125 = 0.000933
      expect(nano(logs[0]!.spend)).toBe(933_000);
      // 400 of the prompt is audio: 1400 text x 3e-7 + 400 audio x 1e-6 + 600 cached x 3e-8 + 100 x 2.5e-6
      // + 50 x 2.5e-6 = 0.00042 + 0.0004 + 0.000018 + 0.00025 + 0.000125 = 0.001213
      expect(nano(logs[1]!.spend)).toBe(1_213_000);
    });
  });

  describe('streams cut midway', () => {
    // Events spaced in time, as a provider's are: the response has started when the cut comes (a
    // Hono response whose body fails before its headers go out is a 500, guarded or not).
    let slow: TestApp;
    beforeAll(async () => {
      slow = await startTestApp(framework, { simulator: { chunkDelayMs: 3 } });
    });
    afterAll(async () => {
      await slow.close();
    });
    const slowKey = async () => (await admin(slow, 'POST', '/key/generate', {})).body.key as string;
    const slowLog = async (key: string) => {
      await slow.settled();
      const logs = (await admin(slow, 'GET', `/spend/logs?api_key=${key}`)).body as Log[];
      expect(logs).toHaveLength(1);
      return logs[0]!;
    };

    it('a chat stream the provider cuts before usage: recorded from what was delivered, estimated', async () => {
      const key = await slowKey();
      slow.simulator.cutNextStream(5); // the role chunk and four one-token deltas
      const client = new OpenAI({ apiKey: key, baseURL: `${slow.baseUrl}/v1`, maxRetries: 0 });
      const stream = await client.chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 100,
        stream: true,
      });
      let text = '';
      await expect(async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      }).rejects.toThrow();
      expect(text).toBe('hello hello hello hello');
      const log = await slowLog(key);
      expect(log).toMatchObject({
        call_type: 'acompletion_stream',
        completion_tokens: 4,
        metadata: { estimated: true, stream_cut: true },
      });
      // The prompt counted by OpenAI's rule: 3 per message + 'user' + 'hi' + 3 for the reply's start.
      expect(log.prompt_tokens).toBe(8);
      expect(nano(log.spend)).toBe(60_000); // 8 x 2.5e-6 + 4 x 1e-5
    });

    it('an Anthropic stream cut after message_start: the reported input kept, the output counted', async () => {
      const key = await slowKey();
      slow.simulator.scriptNextUsage(RICH);
      slow.simulator.cutNextStream(6); // message_start, content_block_start, ping, three deltas
      const client = new Anthropic({ apiKey: key, baseURL: slow.baseUrl, maxRetries: 0 });
      const stream = await client.messages.create({
        model: 'claude-sonnet-4-5',
        max_tokens: 500,
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
      });
      let start: Record<string, unknown> = {};
      await expect(async () => {
        for await (const event of stream)
          if (event.type === 'message_start') start = { ...event.message.usage };
      }).rejects.toThrow();
      expect(start).toMatchObject({ input_tokens: 1300, cache_read_input_tokens: 600 });
      const log = await slowLog(key);
      expect(log).toMatchObject({
        prompt_tokens: 2400,
        completion_tokens: 3,
        metadata: { estimated: true, usage_partial: true, stream_cut: true },
      });
      // As SONNET_RICH_NANO with 3 output tokens instead of 150: 0.008655 - 147 x 1.5e-5 = 0.00645
      expect(nano(log.spend)).toBe(6_450_000);
    });

    it('a Gemini stream the client cuts: input reported so far kept, output counted', async () => {
      {
        const key = await slowKey();
        slow.simulator.scriptNextUsage({ prompt_tokens: 777, completion_tokens: 4000 });
        const ac = new AbortController();
        const res = await fetch(
          `${slow.baseUrl}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse`,
          {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ contents: [{ parts: [{ text: 'long' }] }] }),
            signal: ac.signal,
          },
        );
        await res.body!.getReader().read();
        ac.abort();
        await slow.settled();
        const [log] = (await admin(slow, 'GET', `/spend/logs?api_key=${key}`)).body as Log[];
        expect(log).toMatchObject({ prompt_tokens: 777, metadata: { estimated: true, stream_cut: true } });
        expect(log!.completion_tokens).toBeGreaterThan(0);
        expect(log!.completion_tokens).toBeLessThan(4000);
      }
    });
  });

  describe('include_usage asked on the client’s behalf', () => {
    it('is invisible to a client that did not ask, and prices the stream exactly', async () => {
      const key = await newKey();
      const body = JSON.stringify({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 6,
        stream: true,
      });
      const usage = { prompt_tokens: 321, completion_tokens: 6, cached_tokens: 100 };
      app.simulator.scriptNextUsage(usage);
      const direct = await readSse(
        await fetch(`${app.simulator.url}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        }),
      );
      app.simulator.scriptNextUsage(usage);
      const guarded = await readSse(
        await fetch(`${app.baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body,
        }),
      );
      const normalise = (events: Array<[string | null, any]>) =>
        events.map(([, data]) => (data === '[DONE]' ? data : { ...data, id: '<id>', created: 0 }));
      expect(normalise(guarded)).toEqual(normalise(direct));
      expect(guarded.some(([, d]) => d !== '[DONE]' && 'usage' in d)).toBe(false);
      const log = await onlyLog(key);
      expect(log.metadata.estimated).toBe(false);
      // 221 x 2.5e-6 + 100 cached x 1.25e-6 + 6 x 1e-5 = 0.0005525 + 0.000125 + 0.00006
      expect(nano(log.spend)).toBe(737_500);
    });

    it('leaves the stream as it is for a client that asked', async () => {
      const key = await newKey();
      const stream = await openaiFor(key).chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 3,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks: OpenAI.ChatCompletionChunk[] = [];
      for await (const chunk of stream) chunks.push(chunk);
      expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 3 } });
      expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    });
  });

  describe('app routes that call the provider themselves', () => {
    const ask = async (key: string, body: Record<string, unknown>, path = '/app/ask') => {
      const res = await fetch(`${app.baseUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify({ ...body, tags: ['feature:ask'] }),
      });
      return {
        status: res.status,
        body: (await res.json()) as any,
        id: res.headers.get('x-litellm-call-id')!,
        cost: Number(res.headers.get('x-litellm-response-cost')),
      };
    };
    /** The request's own row ($0, says its children) and its children's rows. */
    const split = (logs: Log[], parentId: string) => ({
      parent: logs.find((l) => l.request_id === parentId)!,
      children: logs.filter((l) => l.metadata.parent_request_id === parentId),
    });

    for (const [provider, stream, model] of [
      ['openai', false, 'gpt-4o'],
      ['openai', true, 'gpt-4o'],
      ['openai-responses', false, 'gpt-4.1'],
      ['anthropic', false, 'claude-sonnet-4-5'],
      ['anthropic', true, 'claude-sonnet-4-5'],
    ] as const) {
      it(`meters the upstream call of an SDK given guard.fetch (${provider}${stream ? ', streamed' : ''})`, async () => {
        const key = await newKey();
        app.simulator.scriptNextUsage(RICH);
        const answer = await ask(key, { provider, stream, model });
        expect(answer.status).toBe(200);
        expect(answer.body.answer).toMatch(/^hello/);
        const logs = await logsOf(key);
        expect(logs).toHaveLength(2);
        const { parent, children } = split(logs, answer.id);
        expect(parent).toMatchObject({ spend: 0, metadata: { child_calls: 1, metered_by: 'guard.fetch' } });
        const [child] = children;
        expect(child).toMatchObject({
          model,
          user: 'meter-alice',
          request_tags: ['feature:ask'],
          metadata: { estimated: false },
        });
        // The SDK saw the scripted usage, except a chat stream's, which guard.fetch hid from it.
        if (provider === 'openai' && stream) expect(answer.body.usage).toBeUndefined();
        else if (provider === 'anthropic') expect(answer.body.usage).toMatchObject({ output_tokens: 150 });
        else expect(answer.body.usage).toMatchObject({ total_tokens: 2550 });
        const expected = {
          'gpt-4o': GPT_4O_RICH_NANO,
          'gpt-4.1': GPT_41_RICH_NANO,
          'claude-sonnet-4-5': SONNET_RICH_NANO,
        }[model];
        expect(nano(child!.spend)).toBe(expected);
      });
    }

    for (const [how, path] of [
      ['guard.fetch', '/app/agent'],
      ["the call's own fetch", '/app/agent-own'],
    ] as const)
      it(`meters an agent making three calls through ${how}: three rows linked to the request`, async () => {
        const key = await newKey();
        const before = app.simulator.requestCount;
        const answer = await ask(key, { steps: 3, max_tokens: 50 }, path);
        expect(answer).toMatchObject({ status: 200, body: { completed: 3 } });
        expect(app.simulator.requestCount - before).toBe(3);
        const { parent, children } = split(await logsOf(key), answer.id);
        expect(parent).toMatchObject({ spend: 0, metadata: { child_calls: 3 } });
        expect(children).toHaveLength(3);
        expect(children.map((c) => c.completion_tokens)).toEqual([50, 50, 50]);
        for (const c of children) expect(nano(c.spend)).toBe(plainNano('gpt-4o', c.prompt_tokens, 50));
        const total = children.reduce((s, c) => s + nano(c.spend), 0);
        expect(nano(answer.cost)).toBe(total); // the request's cost header: its calls' costs
        const info = await admin(app, 'GET', `/key/info?key=${key}`);
        expect(nano(info.body.info.spend)).toBe(total);
      });

    it('refuses the upstream call that no longer fits, before it is sent', async () => {
      // Each step: gpt-4o, 14 prompt tokens and 1,000 output tokens = 14 x $2.5e-6 + 1000 x $1e-5 =
      // $0.010035. The budget takes two steps and $0.001 more: less than a third step's worst case even
      // with its output cut to the 256-token minimum ($0.00256 and more), so the third is refused.
      const budget = 2 * 0.010035 + 0.001;
      const key = await newKey({ max_budget: budget });
      const before = app.simulator.requestCount;
      const answer = await ask(key, { steps: 3, max_tokens: 1000 }, '/app/agent');
      expect(answer.status).toBe(429); // the route's own answer to the SDK's RateLimitError
      expect(answer.body).toMatchObject({
        completed: 2,
        error: expect.stringMatching(/Budget has been exceeded/),
      });
      expect(app.simulator.requestCount - before).toBe(2);
      const { parent, children } = split(await logsOf(key), answer.id);
      expect(children).toHaveLength(2);
      expect(parent.spend).toBe(0);
      const info = await admin(app, 'GET', `/key/info?key=${key}`);
      expect(info.body.info.spend).toBeLessThanOrEqual(budget);
    });

    it('records usage a route reports with track(), and charges the route itself $0', async () => {
      const key = await newKey();
      const answer = await ask(key, { model: 'gpt-4o-mini' }, '/app/tracked');
      expect(answer.status).toBe(200);
      const { parent, children } = split(await logsOf(key), answer.id);
      expect(parent).toMatchObject({ spend: 0, metadata: { child_calls: 1, metered_by: 'track' } });
      expect(children).toHaveLength(1);
      expect(children[0]).toMatchObject({
        call_type: 'track',
        model: 'gpt-4o-mini',
        request_tags: ['feature:ask'],
      });
      const usage = answer.body.usage as { prompt_tokens: number; completion_tokens: number };
      expect(usage.completion_tokens).toBe(10);
      expect(nano(children[0]!.spend)).toBe(plainNano('gpt-4o-mini', usage.prompt_tokens, 10));
    });
  });
});
