// Hono on @hono/node-server: a route's answer made with c.json() / c.body() / c.text() is held whole
// with its headers as a plain record, and the guard meters it and answers it in that form (no web
// Headers built). The headers must come out as through any other Response: the route's own kept, the
// guard's added once each whatever case the route wrote them in, a stream still streamed.
import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { type SpendGuardEnv, spendGuard } from '@spendguard/hono';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MASTER = 'sk-master-test-key';

/** A chat completion as a provider answers it: gpt-4o-mini, 14 tokens in, 6 out. */
const COMPLETION = {
  id: 'chatcmpl-held',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'gpt-4o-mini',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Held.' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 14, completion_tokens: 6, total_tokens: 20 },
};
// gpt-4o-mini at $0.15 per million input tokens and $0.60 per million output tokens:
// 14 x 0.15e-6 + 6 x 0.60e-6 = 2.1e-6 + 3.6e-6 = $0.0000057.
const COST = 0.0000057;

const SSE = `data: ${JSON.stringify({ ...COMPLETION, object: 'chat.completion.chunk', choices: [] })}\n\ndata: [DONE]\n\n`;

let baseUrl = '';
let close: () => Promise<void>;
let key = '';

beforeAll(async () => {
  const mw = spendGuard({
    masterKey: MASTER,
    storage: sqliteStorage({ path: join(mkdtempSync(join(tmpdir(), 'spendguard-held-')), 's.db') }),
  });
  const app = new Hono<SpendGuardEnv>();
  app.route('/', mw.admin);
  app.use('/v1/*', mw);
  // The route's own headers, in its own case, two of them named as the guard's (a Response made with
  // a plain object: @hono/node-server's holds it as given; c.json() with several makes web Headers).
  app.post(
    '/v1/own-headers',
    () =>
      new Response(JSON.stringify(COMPLETION), {
        headers: {
          'Content-Type': 'application/json',
          'X-LiteLLM-Call-Id': 'the-route-own-id',
          'X-Litellm-Response-Cost': '999',
          'X-App': 'kept',
        },
      }),
  );
  app.post('/v1/plain', (c) =>
    c.body(JSON.stringify(COMPLETION), 200, { 'content-type': 'application/json' }),
  );
  // An SSE body given whole to c.body(): still a stream to the tap.
  app.post('/v1/sse', (c) => c.body(SSE, 200, { 'content-type': 'text/event-stream' }));
  app.post('/v1/error', (c) => c.json({ error: { message: 'nope' } }, 503));
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((r) => server.once('listening', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  close = async () => {
    await new Promise((r) => server.close(r));
    await mw.guard.close();
  };
  const made = await fetch(`${baseUrl}/key/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${MASTER}` },
    body: JSON.stringify({ max_budget: 10 }),
  });
  key = ((await made.json()) as { key: string }).key;
});
afterAll(() => close());

const call = (path: string) =>
  fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 6,
    }),
  });

describe('Hono: a body held whole with plain headers', () => {
  it("keeps the route's own headers and adds the guard's once each, whatever their case", async () => {
    const res = await call('/v1/own-headers');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(COMPLETION);
    expect(res.headers.get('x-app')).toBe('kept');
    expect(res.headers.get('content-type')).toBe('application/json');
    // The route named its call id itself: kept, as through a Response's Headers.
    expect(res.headers.get('x-litellm-call-id')).toBe('the-route-own-id');
    // The cost is the guard's, and only the guard's (two values would read "999, 5.7e-6").
    expect(Number(res.headers.get('x-litellm-response-cost'))).toBeCloseTo(COST, 12);
    expect(res.headers.get('x-litellm-key-spend')).toBe('0');
  });

  it('answers c.body() with its bytes, its content length and the cost of what it reported', async () => {
    const res = await call('/v1/plain');
    const text = await res.text();
    expect(text).toBe(JSON.stringify(COMPLETION));
    expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(text)));
    expect(Number(res.headers.get('x-litellm-response-cost'))).toBeCloseTo(COST, 12);
    expect(res.headers.get('x-litellm-call-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('streams an SSE body given whole: no cost header (its cost is known only at its end)', async () => {
    const res = await call('/v1/sse');
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    expect(await res.text()).toBe(SSE);
    expect(res.headers.get('x-litellm-response-cost')).toBeNull();
    expect(res.headers.get('x-litellm-call-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("passes a route's error status through, priced at nothing", async () => {
    const res = await call('/v1/error');
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: { message: 'nope' } });
    expect(Number(res.headers.get('x-litellm-response-cost'))).toBe(0);
  });

  it('settled every call at its real cost', async () => {
    const logs = (await (
      await fetch(`${baseUrl}/spend/logs`, { headers: { authorization: `Bearer ${MASTER}` } })
    ).json()) as Array<{ spend: number; status: string }>;
    expect(logs).toHaveLength(4);
    const spends = logs.map((l) => l.spend).sort((a, b) => a - b);
    expect(spends[0]).toBe(0);
    for (const s of spends.slice(1)) expect(s).toBeCloseTo(COST, 12);
  });
});
