import Anthropic from '@anthropic-ai/sdk';
import { calculateCost } from '@spendguard/core';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

// Every wire format metered end to end, on every adapter, with the official clients as callers: the
// recorded cost is the pricing's cost of the usage the simulator reported, to the nano-dollar. Then
// cut streams, the hidden include_usage chunk, and app routes that call the provider through an SDK
// given guard.fetch (or report usage with track()).

const nano = (usd: number) => Math.round(usd * 1e9);

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
    (await admin(app, 'POST', '/key/generate', { user_id: 'meter-alice', max_budget: 50, ...extra })).body
      .key as string;
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
      const expected = calculateCost(data.model, data).totalNano;
      expect(expected).toBeGreaterThan(0);
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
      const data = await openaiFor(key).chat.completions.create({
        model: 'gpt-4o-audio-preview',
        messages: [{ role: 'user', content: 'say it' }],
      });
      const expected = calculateCost('gpt-4o-audio-preview', data).totalNano;
      expect(expected).toBeGreaterThan(
        calculateCost('gpt-4o-audio-preview', { prompt_tokens: 900, completion_tokens: 400 }).totalNano,
      );
      expect(nano((await onlyLog(key)).spend)).toBe(expected);
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
      const log = await onlyLog(key);
      expect(nano(log.spend)).toBe(calculateCost('gpt-4o', usageChunk!).totalNano);
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
      expect(nano(logs[0]!.spend)).toBe(calculateCost('gpt-4.1', response).totalNano);
      expect(nano(logs[1]!.spend)).toBe(calculateCost('o4-mini', completed!).totalNano);
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
      expect(nano(log.spend)).toBe(calculateCost('text-embedding-3-small', result).totalNano);
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
      expect(nano(log.spend)).toBe(calculateCost('claude-sonnet-4-5', message.usage).totalNano);
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
      const log = await onlyLog(key);
      expect(nano(log.spend)).toBe(calculateCost('claude-haiku-4-5', usage).totalNano);
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
      expect(nano(logs[0]!.spend)).toBe(calculateCost('gemini-2.5-flash', json).totalNano);
      expect(nano(logs[1]!.spend)).toBe(calculateCost('gemini-2.5-flash', last).totalNano);
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
      expect(log.prompt_tokens).toBeGreaterThan(0);
      expect(nano(log.spend)).toBe(
        calculateCost('gpt-4o', { prompt_tokens: log.prompt_tokens, completion_tokens: 4 }).totalNano,
      );
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
      const log = await slowLog(key);
      expect(log).toMatchObject({
        prompt_tokens: 2400,
        completion_tokens: 3,
        metadata: { estimated: true, usage_partial: true, stream_cut: true },
      });
      expect(nano(log.spend)).toBe(
        calculateCost('claude-sonnet-4-5', { ...start, output_tokens: 3 }).totalNano,
      );
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
      expect(nano(log.spend)).toBe(
        calculateCost('gpt-4o', {
          prompt_tokens: 321,
          completion_tokens: 6,
          prompt_tokens_details: { cached_tokens: 100 },
        }).totalNano,
      );
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
        // The usage the SDK saw, priced; a chat stream's was hidden from it, so it is the scripted one.
        const reported = answer.body.usage ?? {
          prompt_tokens: RICH.prompt_tokens,
          completion_tokens: RICH.completion_tokens,
          prompt_tokens_details: { cached_tokens: RICH.cached_tokens },
          completion_tokens_details: { reasoning_tokens: RICH.reasoning_tokens },
        };
        if (provider === 'openai' && stream) expect(answer.body.usage).toBeUndefined();
        expect(nano(child!.spend)).toBe(calculateCost(model, reported).totalNano);
      });
    }

    it('meters an agent making three calls: three rows linked to the request', async () => {
      const key = await newKey();
      const before = app.simulator.requestCount;
      const answer = await ask(key, { steps: 3, max_tokens: 50 }, '/app/agent');
      expect(answer).toMatchObject({ status: 200, body: { completed: 3 } });
      expect(app.simulator.requestCount - before).toBe(3);
      const { parent, children } = split(await logsOf(key), answer.id);
      expect(parent).toMatchObject({ spend: 0, metadata: { child_calls: 3 } });
      expect(children).toHaveLength(3);
      expect(children.every((c) => c.completion_tokens === 50 && c.spend > 0)).toBe(true);
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
      expect(nano(children[0]!.spend)).toBe(calculateCost('gpt-4o-mini', answer.body.usage).totalNano);
    });
  });
});
