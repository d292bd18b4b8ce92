import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
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
 * simulator speaks, with and without `/v1`. Each call's recorded spend must equal the cost of the usage
 * the simulator reported to the client (not of anything the guard estimated), worked by hand from the
 * price table (shared/data, model_prices_and_context_window.json) with the token counts the client
 * read: the prompt tokens are the simulator's own count (provider-billing.ts), asserted as literals.
 * Prices per token: claude-sonnet-4-5 input 3e-6, output 1.5e-5; gpt-4o-mini input 1.5e-7, output
 * 6e-7; text-embedding-3-small input 2e-8; gemini-2.0-flash input 1e-7, output 4e-7 (no cache tokens).
 */
describe.each(['express', 'hono'] as const)('examples/%s: every wire format through the demo', (name) => {
  let demo: RunningDemo;
  let key: string;
  /** request id -> the hand-worked cost (dollars) of what the simulator reported for it. */
  const expected = new Map<string, { model: string; cost: number }>();
  const expect$ = (requestId: string | null, model: string, cost: number) => {
    expect(requestId).toMatch(/\S/);
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
    expect(data.usage).toMatchObject({
      input_tokens: 6,
      output_tokens: 40,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    });
    // 6 x 3e-6 + 40 x 1.5e-5 = 0.000018 + 0.0006
    expect$(response.headers.get('x-litellm-call-id'), 'claude-sonnet-4-5', 0.000618);
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
    expect(usage).toMatchObject({
      input_tokens: 7,
      output_tokens: 30,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    });
    // 7 x 3e-6 + 30 x 1.5e-5 = 0.000021 + 0.00045
    expect$(response.headers.get('x-litellm-call-id'), 'claude-sonnet-4-5', 0.000471);
  });

  it('the OpenAI Responses API through the official client, JSON and streamed', async () => {
    const client = new OpenAI({ apiKey: key, baseURL: `${demo.base}/v1`, maxRetries: 0 });
    const { data, response } = await client.responses
      .create({ model: 'gpt-4o-mini', input: 'hello', max_output_tokens: 25 })
      .withResponse();
    expect(data.usage).toMatchObject({
      input_tokens: 8,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 25,
    });
    // 8 x 1.5e-7 + 25 x 6e-7 = 0.0000012 + 0.000015
    expect$(response.headers.get('x-litellm-call-id'), 'gpt-4o-mini', 0.0000162);

    const streamed = await client.responses
      .create({ model: 'gpt-4o-mini', input: 'stream it', max_output_tokens: 12, stream: true })
      .withResponse();
    let usage: unknown;
    for await (const event of streamed.data) {
      // Stopped by max_output_tokens, as asked: the last event is response.incomplete.
      if (event.type === 'response.completed' || event.type === 'response.incomplete')
        usage = event.response.usage;
    }
    expect(usage).toMatchObject({
      input_tokens: 9,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 12,
    });
    // 9 x 1.5e-7 + 12 x 6e-7 = 0.00000135 + 0.0000072
    expect$(streamed.response.headers.get('x-litellm-call-id'), 'gpt-4o-mini', 0.00000855);
  });

  it('chat completions and embeddings without /v1, as LiteLLM snippets call them', async () => {
    const client = new OpenAI({ apiKey: key, baseURL: demo.base, maxRetries: 0 });
    const chat = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'no v1' }], max_tokens: 7 })
      .withResponse();
    expect(chat.data.usage).toMatchObject({
      prompt_tokens: 10,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens: 7,
    });
    // 10 x 1.5e-7 + 7 x 6e-7 = 0.0000015 + 0.0000042
    expect$(chat.response.headers.get('x-litellm-call-id'), 'gpt-4o-mini', 0.0000057);

    const embedded = await client.embeddings
      .create({ model: 'text-embedding-3-small', input: ['one', 'two'] })
      .withResponse();
    expect(embedded.data.data).toHaveLength(2);
    expect(embedded.data.usage).toEqual({ prompt_tokens: 2, total_tokens: 2 });
    // 2 x 2e-8
    expect$(embedded.response.headers.get('x-litellm-call-id'), 'text-embedding-3-small', 0.00000004);
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
    const body = (await json.json()) as { usageMetadata: unknown };
    // The same usage for both calls: 1 x 1e-7 + 9 x 4e-7 = 0.0000001 + 0.0000036
    const usage = { promptTokenCount: 1, candidatesTokenCount: 9, totalTokenCount: 10 };
    expect(body.usageMetadata).toMatchObject(usage);
    expect$(json.headers.get('x-litellm-call-id'), 'gemini-2.0-flash', 0.0000037);

    const sse = await call('streamGenerateContent?alt=sse');
    expect(sse.status).toBe(200);
    const events = await sseData(sse);
    expect(events.at(-1)!.usageMetadata).toMatchObject(usage);
    expect$(sse.headers.get('x-litellm-call-id'), 'gemini-2.0-flash', 0.0000037);
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
    // 0.000618 + 0.000471 + 0.0000162 + 0.00000855 + 0.0000057 + 0.00000004 + 2 x 0.0000037
    expect((info as { info: { spend: number } }).info.spend).toBeCloseTo(0.00112689, 12);
  });
});
