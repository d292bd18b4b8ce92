// The Hono adapter with no server at all: requests go through `app.request()` (Hono's fetch), as on
// an edge runtime. The rest of this suite runs it on @hono/node-server, next to Express.
import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { createSpendGuard, type SpendGuard } from '@spendguard/core';
import { type Simulator, startSimulator } from '@spendguard/core/testing';
import { type SpendGuardEnv, spendGuard } from '@spendguard/hono';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { cloneRawRequest } from 'hono/request';
import { validator } from 'hono/validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MASTER = 'sk-master-test-key';
const dbPath = () => join(mkdtempSync(join(tmpdir(), 'spendguard-hono-')), 'spend.db');

let simulator: Simulator;
let slowSimulator: Simulator;
beforeAll(async () => {
  simulator = await startSimulator();
  slowSimulator = await startSimulator({ chunkDelayMs: 2 });
});
afterAll(async () => {
  await simulator.close();
  await slowSimulator.close();
});

/** The app a Hono user writes: the guard on /v1, the management API, a route that proxies its provider. */
function buildApp(mw: ReturnType<typeof spendGuard>, provider: Simulator, appParsesBody = false) {
  const app = new Hono<SpendGuardEnv>();
  if (appParsesBody) app.use(validator('json', (value) => value));
  app.onError((error, c) =>
    error instanceof HTTPException ? error.getResponse() : c.json({ error: { message: error.message } }, 500),
  );
  app.route('/', mw.admin);
  app.use('/v1/*', mw);
  app.post('/v1/chat/completions', async (c) => {
    const upstream = await fetch(`${provider.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(await c.req.json()),
    });
    return new Response(upstream.body, {
      status: upstream.status,
      headers: { 'content-type': upstream.headers.get('content-type') ?? 'application/json' },
    });
  });
  app.post('/v1/whoami', async (c) => {
    const call = c.get('spendguard');
    return c.json({
      requestId: call.requestId,
      user: call.key?.user?.userId ?? null,
      team: call.key?.team?.teamAlias ?? null,
      body: await c.req.json(),
    });
  });
  app.post('/v1/broken', () => {
    const body = new ReadableStream({
      start(out) {
        out.enqueue(new TextEncoder().encode('{"usage": '));
        out.error(new Error('the provider went away'));
      },
    });
    return new Response(body, { headers: { 'content-type': 'application/json' } });
  });
  app.post('/v1/own-headers', (c) => {
    c.header('x-app', 'kept');
    c.header('set-cookie', 'a=1', { append: true });
    c.header('set-cookie', 'b=2', { append: true });
    return c.json({ ok: true });
  });
  app.post('/v1/raw', async (c) => c.json({ raw: await c.req.raw.json() }));
  app.post('/v1/raw-stream', async (c) => new Response(c.req.raw.body)); // a proxy route piping the body on
  app.post('/v1/raw-copy', async (c) => c.json({ copy: await new Request(c.req.raw).json() }));
  app.post('/v1/bytes', async (c) => c.json({ hex: Buffer.from(await c.req.arrayBuffer()).toString('hex') }));
  app.post('/v1/text', async (c) => c.json({ text: await c.req.text() }));
  app.post('/v1/clone', async (c) => {
    await c.req.text();
    return c.json({ cloned: await (await cloneRawRequest(c.req)).json() });
  });
  return app;
}

async function call(app: Hono<any>, path: string, init: RequestInit & { json?: unknown } = {}) {
  const { json, ...rest } = init;
  return app.request(path, {
    method: json === undefined && !rest.body ? 'GET' : 'POST',
    ...rest,
    body: json === undefined ? rest.body : JSON.stringify(json),
    headers: { 'content-type': 'application/json', ...(rest.headers as Record<string, string>) },
  });
}

async function setUp(
  provider = simulator,
  options: { appParsesBody?: boolean; bodyLimitBytes?: number } = {},
) {
  const mw = spendGuard({
    storage: sqliteStorage({ path: dbPath() }),
    masterKey: MASTER,
    bodyLimitBytes: options.bodyLimitBytes,
  });
  const app = buildApp(mw, provider, options.appParsesBody);
  const master = { authorization: `Bearer ${MASTER}` };
  await call(app, '/team/new', { headers: master, json: { team_alias: 'frontend-team', team_id: 't1' } });
  await call(app, '/user/new', { headers: master, json: { user_id: 'alice', team_id: 't1' } });
  const key = (
    await (
      await call(app, '/key/generate', { headers: master, json: { user_id: 'alice', team_id: 't1' } })
    ).json()
  ).key as string;
  const logs = async () => {
    await mw.guard.flush();
    return (await call(app, `/spend/logs?api_key=${key}`, { headers: master })).json();
  };
  return { mw, app, key, auth: { authorization: `Bearer ${key}` }, logs };
}

describe('the Hono adapter under app.request(), no server', () => {
  it('meters a JSON call: cost header, the call in c.get(), a spend log', async () => {
    const { mw, app, auth, logs } = await setUp();
    const res = await call(app, '/v1/chat/completions', {
      headers: auth,
      json: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 },
    });
    expect(res.status).toBe(200);
    const body = await res.json();
    const cost = Math.round((body.usage.prompt_tokens * 2.5e-6 + 10 * 1e-5) * 1e9) / 1e9;
    expect(Number(res.headers.get('x-litellm-response-cost'))).toBe(cost);
    expect(res.headers.get('x-litellm-key-spend')).toBe('0');
    const [log] = await logs();
    expect(log).toMatchObject({
      request_id: body.id, // the provider's response id, as LiteLLM keys its logs
      call_id: res.headers.get('x-litellm-call-id'),
      spend: cost,
      completion_tokens: 10,
      user: 'alice',
      team_id: 't1',
      call_type: 'acompletion',
      metadata: { estimated: false, http_status: 200 },
    });
    await mw.guard.close();
  });

  it('meters an SSE stream as it passes, from its usage chunk', async () => {
    const { mw, app, auth, logs } = await setUp();
    const res = await call(app, '/v1/chat/completions', {
      headers: auth,
      json: {
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'stream' }],
        max_tokens: 7,
        stream: true,
        stream_options: { include_usage: true },
      },
    });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('x-litellm-response-cost')).toBeNull(); // not known before the stream ends
    const text = await res.text();
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const [log] = await logs();
    expect(log).toMatchObject({ call_type: 'acompletion_stream', completion_tokens: 7 });
    expect(log.metadata).toEqual({ estimated: false, http_status: 200 });
    await mw.guard.close();
  });

  it('settles a stream the reader cancels as cut', async () => {
    const { mw, app, auth, logs } = await setUp(slowSimulator);
    const res = await call(app, '/v1/chat/completions', {
      headers: auth,
      json: {
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'long' }],
        max_tokens: 5000,
        stream: true,
      },
    });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    const [log] = await logs();
    expect(log.metadata).toMatchObject({ stream_cut: true, estimated: true });
    expect(log.completion_tokens).toBeLessThan(5000);
    await mw.guard.close();
  });

  it('settles a call whose JSON body fails midway, so nothing stays reserved', async () => {
    const { mw, app, auth, logs } = await setUp();
    const res = await call(app, '/v1/broken', { headers: auth, json: { model: 'gpt-4o', messages: [] } });
    expect(res.status).toBe(500);
    expect((await res.json()).error.message).toBe('the provider went away');
    const [log] = await logs();
    expect(log).toMatchObject({ spend: 0, metadata: { stream_cut: true } });
    expect(mw.guard.settleFailures).toBe(0);
    await mw.guard.close();
  });

  it('leaves the body readable by the route: c.req.json(), c.req.raw, cloneRawRequest', async () => {
    const { mw, app, auth } = await setUp();
    const payload = { model: 'gpt-4o', messages: [{ role: 'user', content: 'é ✓' }] };
    const who = await (await call(app, '/v1/whoami', { headers: auth, json: payload })).json();
    expect(who).toMatchObject({ user: 'alice', team: 'frontend-team', body: payload });
    expect(who.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await (await call(app, '/v1/raw', { headers: auth, json: payload })).json()).toEqual({
      raw: payload,
    });
    expect(await (await call(app, '/v1/clone', { headers: auth, json: payload })).json()).toEqual({
      cloned: payload,
    });
    await mw.guard.close();
  });

  it('leaves the body readable by the route on @hono/node-server too (which serves it from the bytes the guard read)', async () => {
    const { mw, app, auth } = await setUp();
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as AddressInfo;
    const post = (path: string, body: string | Uint8Array<ArrayBuffer>) =>
      fetch(`http://127.0.0.1:${port}${path}`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body,
      });
    const payload = { model: 'gpt-4o', messages: [{ role: 'user', content: 'é ✓ '.repeat(5000) }] };
    const text = JSON.stringify(payload);
    try {
      expect((await (await post('/v1/whoami', text)).json()).body).toEqual(payload);
      expect(await (await post('/v1/raw', text)).json()).toEqual({ raw: payload });
      expect(await (await post('/v1/raw-stream', text)).text()).toBe(text);
      expect(await (await post('/v1/raw-copy', text)).json()).toEqual({ copy: payload });
      expect(await (await post('/v1/clone', text)).json()).toEqual({ cloned: payload });
      expect(await (await post('/v1/text', text)).json()).toEqual({ text });
      expect(await (await post('/v1/bytes', text)).json()).toEqual({
        hex: Buffer.from(text).toString('hex'),
      });
      // Bytes that are not UTF-8 (0xff in a JSON string: the guard reads it as U+FFFD) reach the route as sent.
      const odd = Buffer.concat([
        Buffer.from('{"model":"gpt-4o","messages":[],"user":"a'),
        Buffer.from([0xff]),
        Buffer.from('"}'),
      ]);
      expect(await (await post('/v1/bytes', new Uint8Array(odd))).json()).toEqual({
        hex: odd.toString('hex'),
      });
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await mw.guard.close();
    }
  });

  it('keeps the route’s own headers (cookies too) on a metered JSON answer on @hono/node-server', async () => {
    const { mw, app, auth } = await setUp();
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v1/own-headers`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('transfer-encoding')).toBeNull();
      expect(res.headers.get('content-length')).toBe(String('{"ok":true}'.length));
      expect(res.headers.get('x-litellm-response-cost')).toBe('0');
      expect(res.headers.get('x-app')).toBe('kept');
      expect(res.headers.getSetCookie()).toEqual(['a=1', 'b=2']);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(await res.text()).toBe('{"ok":true}');
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await mw.guard.close();
    }
  });

  it('reads a body the app parsed first from Hono’s cache', async () => {
    const { mw, app, auth } = await setUp(simulator, { appParsesBody: true });
    const payload = { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], tags: 'prod' };
    const refused = await call(app, '/v1/whoami', { headers: auth, json: payload });
    expect(refused.status).toBe(400);
    expect((await refused.json()).error.message).toBe('tags must be an array of strings');
    const ok = await call(app, '/v1/whoami', { headers: auth, json: { ...payload, tags: ['a'] } });
    expect((await ok.json()).body.tags).toEqual(['a']);
    await mw.guard.close();
  });

  it('answers bad JSON with 400 and a body over the limit with 413, before the route runs', async () => {
    const { mw, app, auth } = await setUp(simulator, { bodyLimitBytes: 1024 });
    const before = simulator.requestCount;
    const bad = await call(app, '/v1/chat/completions', { headers: auth, body: '{"model": ' });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect((await bad.json()).error).toMatchObject({ type: 'invalid_request_error', code: '400' });
    const big = await call(app, '/v1/chat/completions', {
      headers: auth,
      json: { model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(2000) }] },
    });
    expect(big.status).toBe(413);
    expect((await big.json()).error.message).toBe('Request body is larger than 1024 bytes.');
    expect(simulator.requestCount).toBe(before);
    await mw.guard.close();
  });

  it('serves the management API under any base path, and leaves other paths to the app', async () => {
    const guard: SpendGuard = createSpendGuard({
      storage: sqliteStorage({ path: dbPath() }),
      masterKey: MASTER,
    });
    const mw = spendGuard(guard); // one guard, shared
    expect(mw.guard).toBe(guard);
    const app = new Hono();
    app.route('/admin', mw.admin);
    app.route('/tenants/:tenant/admin', spendGuard(guard).admin);
    app.get('/team/info', (c) => c.text('the app’s own route'));
    const master = { authorization: `Bearer ${MASTER}` };
    expect((await call(app, '/admin/team/new', { headers: master, json: { team_id: 'a' } })).status).toBe(
      200,
    );
    expect((await call(app, '/admin/team/new/', { headers: master, json: { team_id: 'b' } })).status).toBe(
      200,
    );
    const info = await call(app, '/tenants/acme/admin/team/info?team_id=a', { headers: master });
    expect((await info.json()).team_id).toBe('a');
    expect(await (await call(app, '/team/info?team_id=a', { headers: master })).text()).toBe(
      'the app’s own route',
    );
    expect((await call(app, '/admin/no/such/route', { headers: master })).status).toBe(404);
    const denied = await call(app, '/admin/team/new', { json: { team_id: 'c' } });
    expect(denied.status).toBe(401);
    expect((await denied.json()).error.type).toBe('auth_error');
    await guard.close();
  });

  it('validates its options when created, saying how to fix them', () => {
    expect(() => spendGuard({ bodyLimitBytes: 0 })).toThrow(
      /bodyLimitBytes: must be a positive whole number/,
    );
    expect(() => spendGuard({ masterKey: '', storage: sqliteStorage({ path: ':memory:' }) })).toThrow(
      /masterKey: must not be empty/,
    );
  });
});
