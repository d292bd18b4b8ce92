import { type ClientRequest, type IncomingMessage, request } from 'node:http';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ADAPTERS, admin, MASTER, startTestApp, type TestApp } from './harness.js';

/**
 * A request whose body starts but never ends until `finish()`: a server that waited for the whole
 * body before answering would never answer it (the test then fails on its timeout).
 */
function openRequest(
  app: TestApp,
  o: {
    method?: string;
    path: string;
    headers?: Record<string, string>;
    /** Declared length; omitted: chunked. */
    length?: number;
    first?: string;
  },
) {
  const url = new URL(o.path, app.baseUrl);
  const headers: Record<string, string | number> = { 'content-type': 'application/json', ...o.headers };
  if (o.length !== undefined) headers['content-length'] = o.length;
  const req: ClientRequest = request(url, { method: o.method ?? 'POST', headers });
  // The server may answer and close while the body is still being sent: that is the point.
  req.on('error', () => {});
  const response = new Promise<{ status: number; headers: IncomingMessage['headers']; body: any }>(
    (resolve, reject) => {
      req.once('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        });
        res.on('error', reject);
      });
    },
  );
  req.flushHeaders();
  if (o.first) req.write(o.first);
  return {
    response,
    /** Sends `rest` and ends the body. */
    finish(rest = '') {
      req.end(rest);
    },
    abort() {
      req.destroy();
    },
  };
}

/** A chat completion body of exactly `bytes` bytes (padded with spaces), split at `at`. */
function chatBody(bytes: number): string {
  const json = JSON.stringify({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 5,
  });
  if (json.length > bytes) throw new Error(`a chat body needs at least ${json.length} bytes`);
  return json + ' '.repeat(bytes - json.length);
}

describe.each(ADAPTERS)('credentials before bodies, and body limits, on $name', (framework) => {
  const apps: TestApp[] = [];
  const open: Array<{ abort(): void }> = [];
  afterEach(async () => {
    for (const r of open.splice(0)) r.abort();
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });
  async function start(guardOptions: Parameters<typeof startTestApp>[1] = {}) {
    const app = await startTestApp(framework, guardOptions);
    apps.push(app);
    return app;
  }
  function pending(app: TestApp, o: Parameters<typeof openRequest>[1]) {
    const r = openRequest(app, o);
    open.push(r);
    return r;
  }

  it('answers 401 from the headers alone, never waiting for the body, on guarded, management and dashboard routes', async () => {
    const app = await start();
    const { body: key } = await admin(app, 'POST', '/key/generate', {});
    const cases: Array<{ path: string; headers?: Record<string, string>; status: number }> = [
      { path: '/v1/chat/completions', status: 401 },
      { path: '/v1/chat/completions', headers: { authorization: 'Bearer sk-not-a-key' }, status: 401 },
      { path: '/v1/chat/completions', headers: { authorization: 'Basic YWRtaW46YWRtaW4=' }, status: 401 },
      { path: '/team/new', status: 401 },
      { path: '/key/generate', headers: { authorization: 'Bearer sk-wrong-master' }, status: 401 },
      // A valid virtual key on an admin-only route: refused (403) before its body is read too.
      { path: '/team/new', headers: { authorization: `Bearer ${key.key}` }, status: 403 },
      { path: '/key/%ZZ/regenerate', status: 401 },
      { path: '/ui/api/keys/generate', status: 401 },
      { path: '/ui/logout', headers: { cookie: 'spendguard_session=forged' }, status: 401 },
    ];
    for (const c of cases) {
      const r = pending(app, { path: c.path, headers: c.headers, length: 10 * 1024 * 1024, first: '{"a":' });
      const res = await r.response;
      expect([c.path, res.status], JSON.stringify(res.body)).toEqual([c.path, c.status]);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(res.body.error.code).toBe(String(c.status));
    }
    expect(app.guard.bodies.bytesInFlight).toBe(0);
  });

  it('refuses a declared length over bodyLimitBytes with 413 before reading it', async () => {
    const app = await start({ guardOptions: { bodyLimitBytes: 4096 } });
    const { body: key } = await admin(app, 'POST', '/key/generate', {});
    for (const [path, auth] of [
      ['/v1/chat/completions', key.key],
      ['/team/new', MASTER],
    ] as const) {
      const r = pending(app, {
        path,
        headers: { authorization: `Bearer ${auth}` },
        length: 4097,
        first: '{"model":',
      });
      const res = await r.response;
      expect(res.status).toBe(413);
      expect(res.body).toEqual({
        error: {
          message: 'Request body is larger than 4096 bytes.',
          type: 'invalid_request_error',
          param: null,
          code: '413',
        },
      });
    }
    // Exactly the limit is read and served.
    const ok = pending(app, {
      path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${key.key}` },
      length: 4096,
    });
    ok.finish(chatBody(4096));
    expect((await ok.response).status).toBe(200);
  });

  it('answers 503 with Retry-After past maxBodyBytesInFlight, and serves again once the bytes are read', async () => {
    const app = await start({ guardOptions: { bodyLimitBytes: 1000, maxBodyBytesInFlight: 1500 } });
    const { body: key } = await admin(app, 'POST', '/key/generate', {});
    const auth = { authorization: `Bearer ${key.key}` };
    const body = chatBody(1000);
    // A holds its declared 1000 bytes from its first byte on, and sends only part of them.
    const a = pending(app, {
      path: '/v1/chat/completions',
      headers: auth,
      length: 1000,
      first: body.slice(0, 10),
    });
    await vi.waitFor(() => expect(app.guard.bodies.bytesInFlight).toBe(1000));

    const busy = [
      // Declared: refused before reading.
      pending(app, { path: '/v1/chat/completions', headers: auth, length: 600 }),
      pending(app, { path: '/team/new', headers: { authorization: `Bearer ${MASTER}` }, length: 600 }),
      // Chunked: refused once what came passes the budget.
      pending(app, { path: '/v1/chat/completions', headers: auth, first: ' '.repeat(600) }),
    ];
    for (const r of busy) {
      const res = await r.response;
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('1');
      expect(res.body.error).toMatchObject({ type: 'service_unavailable', code: '503' });
      expect(res.body.error.message).toContain('maxBodyBytesInFlight');
    }
    // What still fits is read meanwhile.
    const fits = pending(app, { path: '/v1/chat/completions', headers: auth, length: 500 });
    fits.finish(chatBody(500));
    expect((await fits.response).status).toBe(200);

    a.finish(body.slice(10));
    expect((await a.response).status).toBe(200);
    expect(app.guard.bodies.bytesInFlight).toBe(0);
    const after = pending(app, { path: '/v1/chat/completions', headers: auth, length: 1000 });
    after.finish(body);
    expect((await after.response).status).toBe(200);
  });

  it('validates the limits when the guard is created', () => {
    const bad = [
      [{ bodyLimitBytes: 0 }, /bodyLimitBytes: must be a positive whole number of bytes/],
      [{ maxBodyBytesInFlight: 1.5 }, /maxBodyBytesInFlight: must be a positive whole number of bytes/],
      [
        { bodyLimitBytes: 2048, maxBodyBytesInFlight: 1024 },
        /maxBodyBytesInFlight: must be at least bodyLimitBytes \(2048\)/,
      ],
    ] as const;
    for (const [options, message] of bad) {
      expect(() => framework.listen({ ...options, masterKey: MASTER }, 'http://127.0.0.1:9', false)).toThrow(
        message,
      );
    }
  });
});
