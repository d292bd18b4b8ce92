import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { calculateCost } from '@spendguard/core';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningDemo, startDemo, stopDemo } from './start-demo.js';

const MASTER = { authorization: 'Bearer sk-master', 'content-type': 'application/json' };

interface Log {
  /** The call id (`x-litellm-call-id`); `request_id` is the provider's response id. */
  call_id: string;
  spend: number;
  model: string;
  call_type: string;
}

/** Reads SSE `data:` payloads that are JSON. */
async function sseData(res: Response): Promise<any[]> {
  const text = await res.text();
  return text
    .split('\n')
    .filter((line) => line.startsWith('data: ') && line !== 'data: [DONE]')
    .map((line) => JSON.parse(line.slice('data: '.length)));
}

/**
 * The demos as a newcomer starts them, called by the official clients on every wire format the
 * simulator speaks, with and without `/v1`. Each call's recorded spend must equal `calculateCost` of
 * the usage the simulator reported to the client (not of anything the guard estimated).
 */
describe.each(['express', 'hono'] as const)('examples/%s: every wire format through the demo', (name) => {
  let demo: RunningDemo;
  let key: string;
  /** request id -> the cost of what the simulator reported for it. */
  const expected = new Map<string, { model: string; cost: number }>();
  const expect$ = (requestId: string | null, model: string, usage: unknown) => {
    expect(requestId).toBeTruthy();
    const cost = calculateCost(model, usage).total;
    expect(cost).toBeGreaterThan(0);
    expected.set(requestId!, { model, cost });
  };

  beforeAll(async () => {
    const db = join(mkdtempSync(join(tmpdir(), `spendguard-demo-formats-${name}-`)), 'demo.db');
    demo = await startDemo(name, [], { SPENDGUARD_DB: db });
    const res = await fetch(`${demo.base}/key/generate`, {
      method: 'POST',
      headers: MASTER,
      body: JSON.stringify({ max_budget: 10 }),
    });
    key = ((await res.json()) as { key: string }).key;
  });
  afterAll(async () => {
    if (demo) await stopDemo(demo.server);
  });

  it('Anthropic messages through the official client, JSON', async () => {
    const client = new Anthropic({ apiKey: key, baseURL: demo.base, maxRetries: 0 });
    const { data, response } = await client.messages
      .create({ model: 'claude-sonnet-4-5', max_tokens: 40, messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    expect(data.content[0]!.type).toBe('text');
    expect(data.usage.output_tokens).toBe(40);
    expect$(response.headers.get('x-litellm-call-id'), 'claude-sonnet-4-5', data.usage);
  });

  it('Anthropic messages through the official client, streamed', async () => {
    const client = new Anthropic({ apiKey: key, baseURL: demo.base, maxRetries: 0 });
    const { data: stream, response } = await client.messages
      .create({
        model: 'claude-sonnet-4-5',
        max_tokens: 30,
        messages: [{ role: 'user', content: 'stream please' }],
        stream: true,
      })
      .withResponse();
    const usage: Record<string, unknown> = {};
    for await (const event of stream) {
      if (event.type === 'message_start') Object.assign(usage, event.message.usage);
      if (event.type === 'message_delta') Object.assign(usage, event.usage);
    }
    expect(usage.output_tokens).toBe(30);
    expect$(response.headers.get('x-litellm-call-id'), 'claude-sonnet-4-5', usage);
  });

  it('the OpenAI Responses API through the official client, JSON and streamed', async () => {
    const client = new OpenAI({ apiKey: key, baseURL: `${demo.base}/v1`, maxRetries: 0 });
    const { data, response } = await client.responses
      .create({ model: 'gpt-4o-mini', input: 'hello', max_output_tokens: 25 })
      .withResponse();
    expect(data.usage!.output_tokens).toBe(25);
    expect$(response.headers.get('x-litellm-call-id'), 'gpt-4o-mini', data.usage);

    const streamed = await client.responses
      .create({ model: 'gpt-4o-mini', input: 'stream it', max_output_tokens: 12, stream: true })
      .withResponse();
    let usage: unknown;
    for await (const event of streamed.data) {
      // Stopped by max_output_tokens, as asked: the last event is response.incomplete.
      if (event.type === 'response.completed' || event.type === 'response.incomplete')
        usage = event.response.usage;
    }
    expect(usage).toMatchObject({ output_tokens: 12 });
    expect$(streamed.response.headers.get('x-litellm-call-id'), 'gpt-4o-mini', usage);
  });

  it('chat completions and embeddings without /v1, as LiteLLM snippets call them', async () => {
    const client = new OpenAI({ apiKey: key, baseURL: demo.base, maxRetries: 0 });
    const chat = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'no v1' }], max_tokens: 7 })
      .withResponse();
    expect(chat.data.usage!.completion_tokens).toBe(7);
    expect$(chat.response.headers.get('x-litellm-call-id'), 'gpt-4o-mini', chat.data.usage);

    const embedded = await client.embeddings
      .create({ model: 'text-embedding-3-small', input: ['one', 'two'] })
      .withResponse();
    expect(embedded.data.data).toHaveLength(2);
    expect$(embedded.response.headers.get('x-litellm-call-id'), 'text-embedding-3-small', embedded.data);
  });

  it('Gemini generateContent and streamGenerateContent?alt=sse, the model from the URL', async () => {
    const call = (method: string) =>
      fetch(`${demo.base}/v1beta/models/gemini-2.0-flash:${method}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
          generationConfig: { maxOutputTokens: 9 },
        }),
      });
    const json = await call('generateContent');
    expect(json.status).toBe(200);
    const body = (await json.json()) as { usageMetadata: { candidatesTokenCount: number } };
    expect(body.usageMetadata.candidatesTokenCount).toBe(9);
    expect$(json.headers.get('x-litellm-call-id'), 'gemini-2.0-flash', body);

    const sse = await call('streamGenerateContent?alt=sse');
    expect(sse.status).toBe(200);
    const events = await sseData(sse);
    expect(events.at(-1)!.usageMetadata.candidatesTokenCount).toBe(9);
    expect$(sse.headers.get('x-litellm-call-id'), 'gemini-2.0-flash', events.at(-1));
  });

  it("records each call at the cost of the simulator's usage, and the key's spend is their sum", async () => {
    expect(expected.size).toBe(8);
    // On SQLite (the demo's store) a settlement commits before the response's last byte leaves
    // (docs/crash-recovery.md): every call the client read whole is already logged, no wait needed.
    const res = await fetch(`${demo.base}/spend/logs?api_key=${key}`, { headers: MASTER });
    const logs = (await res.json()) as Log[];
    expect(logs).toHaveLength(expected.size);
    for (const log of logs) {
      const want = expected.get(log.call_id);
      expect(want, `a log for an unexpected request ${log.call_id}`).toBeDefined();
      expect({ model: log.model, spend: log.spend }).toEqual({ model: want!.model, spend: want!.cost });
    }
    const info = await (await fetch(`${demo.base}/key/info?key=${key}`, { headers: MASTER })).json();
    const sum = [...expected.values()].reduce((s, e) => s + e.cost, 0);
    expect((info as { info: { spend: number } }).info.spend).toBeCloseTo(sum, 9);
  });
});
