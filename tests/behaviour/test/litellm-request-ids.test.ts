import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

// LiteLLM keys a spend log by the provider's response id (chatcmpl-..., resp_..., msg_..., Gemini's
// responseId) when the response has one, its call id otherwise. The ids below are the ones the official
// clients (or a plain fetch, for Gemini) received from the simulator, read from what the caller saw,
// never from the guard.

type Log = { request_id: string; call_id: string; call_type: string };

describe.each(ADAPTERS)('spend logs keyed by the provider response id on $name', (framework) => {
  let app: TestApp;
  let openai: (key: string) => OpenAI;
  let anthropic: (key: string) => Anthropic;

  beforeAll(async () => {
    app = await startTestApp(framework);
    openai = (key) => new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
    anthropic = (key) => new Anthropic({ apiKey: key, baseURL: app.baseUrl, maxRetries: 0 });
  });
  afterAll(async () => {
    await app.close();
  });

  const newKey = async () =>
    (await admin(app, 'POST', '/key/generate', { max_budget: 10 })).body.key as string;
  /** The key's one log, and what `/spend/logs?request_id=` finds for the response id and the call id. */
  const check = async (key: string, responseId: string | null, callId: string, callType: string) => {
    await app.settled();
    const logs: Log[] = (await admin(app, 'GET', `/spend/logs?api_key=${key}&summarize=false`)).body;
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatchObject({ request_id: responseId ?? callId, call_id: callId, call_type: callType });
    for (const id of [responseId, callId]) {
      if (id === null) continue;
      const found = await admin(
        app,
        'GET',
        `/spend/logs?request_id=${encodeURIComponent(id)}&summarize=false`,
      );
      expect(found.status).toBe(200);
      expect(found.body.map((l: Log) => l.call_id)).toEqual([callId]);
    }
  };

  it('OpenAI chat completions, JSON and streamed: chatcmpl-...', async () => {
    const key = await newKey();
    const { data, response } = await openai(key)
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    expect(data.id).toMatch(/^chatcmpl-/);
    await check(key, data.id, response.headers.get('x-litellm-call-id')!, 'acompletion');

    const key2 = await newKey();
    const { data: stream, response: r2 } = await openai(key2)
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream: true })
      .withResponse();
    const ids = new Set<string>();
    for await (const chunk of stream) ids.add(chunk.id);
    expect(ids.size).toBe(1);
    await check(key2, [...ids][0]!, r2.headers.get('x-litellm-call-id')!, 'acompletion_stream');
  });

  it('OpenAI Responses, JSON and streamed: resp_...', async () => {
    const key = await newKey();
    const { data, response } = await openai(key)
      .responses.create({ model: 'gpt-4.1', input: 'hi' })
      .withResponse();
    expect(data.id).toMatch(/^resp_/);
    await check(key, data.id, response.headers.get('x-litellm-call-id')!, 'aresponses');

    const key2 = await newKey();
    const { data: stream, response: r2 } = await openai(key2)
      .responses.create({ model: 'gpt-4.1', input: 'hi', stream: true })
      .withResponse();
    let id: string | null = null;
    for await (const event of stream) if (event.type === 'response.completed') id = event.response.id;
    expect(id).toMatch(/^resp_/);
    await check(key2, id, r2.headers.get('x-litellm-call-id')!, 'aresponses_stream');
  });

  it('Anthropic messages, JSON and streamed: msg_...', async () => {
    const key = await newKey();
    const body = {
      model: 'claude-haiku-4-5',
      max_tokens: 100,
      messages: [{ role: 'user' as const, content: 'hi' }],
    };
    const { data, response } = await anthropic(key).messages.create(body).withResponse();
    expect(data.id).toMatch(/^msg_/);
    await check(key, data.id, response.headers.get('x-litellm-call-id')!, 'anthropic_messages');

    const key2 = await newKey();
    const { data: stream, response: r2 } = await anthropic(key2)
      .messages.create({ ...body, stream: true })
      .withResponse();
    let id: string | null = null;
    for await (const event of stream) if (event.type === 'message_start') id = event.message.id;
    expect(id).toMatch(/^msg_/);
    await check(key2, id, r2.headers.get('x-litellm-call-id')!, 'anthropic_messages_stream');
  });

  it("Gemini generateContent, JSON and streamed: the body's responseId", async () => {
    const call = (key: string, method: string) =>
      fetch(`${app.baseUrl}/v1beta/models/gemini-2.5-flash:${method}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      });
    const key = await newKey();
    const res = await call(key, 'generateContent');
    const json = (await res.json()) as { responseId: string };
    expect(json.responseId).toMatch(/^\w{22}$/);
    await check(key, json.responseId, res.headers.get('x-litellm-call-id')!, 'agenerate_content');

    const key2 = await newKey();
    const res2 = await call(key2, 'streamGenerateContent?alt=sse');
    const text = await res2.text();
    const ids = new Set([...text.matchAll(/"responseId":"(\w+)"/g)].map((m) => m[1]!));
    expect(ids.size).toBe(1);
    await check(key2, [...ids][0]!, res2.headers.get('x-litellm-call-id')!, 'agenerate_content_stream');
  });

  it('embeddings carry no response id: the call id keys the log', async () => {
    const key = await newKey();
    const { response } = await openai(key)
      .embeddings.create({ model: 'text-embedding-3-small', input: 'a' })
      .withResponse();
    await check(key, null, response.headers.get('x-litellm-call-id')!, 'aembedding');
  });
});
