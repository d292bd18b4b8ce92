import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, MASTER, startTestApp, type TestApp } from './harness.js';

/** A raw request: the path and headers exactly as given (fetch would normalise some of them). */
function raw(
  app: TestApp,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; type: string; body: string }> {
  const { port } = new URL(app.baseUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: text }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

const master = { authorization: `Bearer ${MASTER}` };

describe.each(ADAPTERS)('malformed paths, queries and headers on $name', (framework) => {
  let app: TestApp;
  let session: { cookie: string; csrf: string };
  beforeAll(async () => {
    app = await startTestApp(framework, { guardOptions: { dashboard: { password: 'dashboard-pass-1' } } });
    const res = await fetch(`${app.baseUrl}/ui/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: 'admin', password: 'dashboard-pass-1' }),
    });
    const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0]!;
    const page = await (await fetch(`${app.baseUrl}/ui/`, { headers: { cookie } })).text();
    session = { cookie, csrf: /name="csrf-token" content="([^"]+)"/.exec(page)![1]! };
  });
  afterAll(() => app.close());

  const cases: Array<{
    what: string;
    method: string;
    path: string;
    headers?: () => Record<string, string>;
    body?: string;
    status: number;
    param?: string;
    /** A 422's field, as FastAPI's detail locates it. */
    loc?: Array<string | number>;
  }> = [
    {
      what: 'a malformed escape in the key, no credential',
      method: 'POST',
      path: '/key/%ZZ/regenerate',
      status: 401,
    },
    {
      what: 'a malformed escape in the key, as the master',
      method: 'POST',
      path: '/key/%ZZ/regenerate',
      headers: () => master,
      status: 400,
      param: 'key',
    },
    {
      what: 'a truncated escape in the key',
      method: 'POST',
      path: '/key/sk-abc%E0%A4/regenerate',
      headers: () => master,
      status: 400,
      param: 'key',
    },
    {
      what: 'a NUL in the key',
      method: 'POST',
      path: '/key/sk-a%00b/regenerate',
      headers: () => master,
      status: 400,
      param: 'key',
    },
    {
      what: 'an escaped backslash in the key',
      method: 'POST',
      path: '/key/a%5Cb/regenerate',
      headers: () => master,
      status: 404,
    },
    {
      what: 'a NUL in a log id',
      method: 'GET',
      path: '/ui/api/logs/a%00',
      headers: () => ({ cookie: session.cookie }),
      status: 400,
      param: 'request_id',
    },
    {
      what: 'an unknown key in the path',
      method: 'POST',
      path: '/key/sk-nope%20x/regenerate',
      headers: () => master,
      status: 404,
    },
    {
      what: 'a malformed escape in a query',
      method: 'GET',
      path: '/key/info?key=%ZZ',
      headers: () => master,
      status: 404,
    },
    {
      what: 'a malformed date in a query',
      method: 'GET',
      path: '/spend/logs?start_date=%ZZ&end_date=2026-01-01',
      headers: () => master,
      status: 422,
      loc: ['query', 'start_date'],
    },
    {
      what: 'a query with no name',
      method: 'GET',
      path: '/team/list?=&&=x',
      headers: () => master,
      status: 200,
    },
    {
      what: 'Bearer and nothing',
      method: 'GET',
      path: '/team/list',
      headers: () => ({ authorization: 'Bearer' }),
      status: 401,
    },
    {
      what: 'a key without Bearer on a guarded route',
      method: 'POST',
      path: '/v1/chat/completions',
      headers: () => ({ authorization: MASTER }),
      status: 401,
    },
    {
      what: 'a key of 4 KB',
      method: 'POST',
      path: '/v1/chat/completions',
      headers: () => ({ authorization: `Bearer sk-${'x'.repeat(4096)}` }),
      status: 401,
    },
    {
      what: 'Latin-1 bytes in a key',
      method: 'GET',
      path: '/key/info',
      headers: () => ({ 'x-api-key': 'sk-\u00ff\u00fe' }),
      status: 401,
    },
    {
      what: 'a malformed escape in a log id',
      method: 'GET',
      path: '/ui/api/logs/%ZZ',
      headers: () => ({ cookie: session.cookie }),
      status: 400,
      param: 'request_id',
    },
    {
      what: 'a malformed escape below ui/',
      method: 'GET',
      path: '/ui/%ZZ',
      headers: () => ({ cookie: session.cookie }),
      status: 404,
    },
    {
      what: 'a malformed cookie header',
      method: 'GET',
      path: '/ui/api/session',
      headers: () => ({ cookie: ';;=;spendguard_session' }),
      status: 401,
    },
    {
      what: 'an Origin that is not a URL',
      method: 'POST',
      path: '/ui/login',
      headers: () => ({ origin: 'http://[::1', 'content-type': 'application/x-www-form-urlencoded' }),
      body: 'username=admin&password=dashboard-pass-1',
      status: 403,
    },
    {
      what: 'a CSRF header of another session',
      method: 'POST',
      path: '/ui/api/keys/block',
      headers: () => ({ cookie: session.cookie, 'x-csrf-token': '%ZZ' }),
      body: '{}',
      status: 403,
      param: 'csrf_token',
    },
    {
      what: 'bad JSON in a dashboard change',
      method: 'POST',
      path: '/ui/api/keys/block',
      headers: () => ({
        cookie: session.cookie,
        'x-csrf-token': session.csrf,
        'content-type': 'application/json',
      }),
      body: '{"key":',
      status: 422, // FastAPI's json_invalid at the end of the input (character 7)
      loc: ['body', 7],
    },
  ];

  it.each(cases)('$what: $method $path answers $status JSON', async (c) => {
    const res = await raw(app, c.method, c.path, c.headers?.(), c.body);
    expect(res.status, res.body).toBe(c.status);
    expect(res.type).toMatch(/^application\/json/);
    const body = JSON.parse(res.body);
    if (c.status === 422) {
      expect(body.detail[0].loc).toEqual(c.loc);
      expect(JSON.stringify(body)).not.toMatch(/ at .*\.(ts|js):\d+/); // no stack trace
    } else if (c.status >= 400) {
      expect(body.error.code).toBe(String(c.status));
      expect(body.error.message).not.toMatch(/ at .*\.(ts|js):\d+/); // no stack trace
      if (c.param) expect(body.error.param).toBe(c.param);
    }
  });

  it('routes dot segments as Hono sees them, on every adapter: /key/../regenerate is no management route', async () => {
    for (const path of ['/key/../regenerate', '/key/%2e%2e/regenerate', '/key/%2E./regenerate']) {
      const res = await raw(app, 'POST', path, master, '{}');
      expect([path, res.status]).toEqual([path, 404]);
      expect(res.body).not.toContain('"error"'); // the app's own 404: the management API did not answer
    }
    // Resolved into a route, it is that route.
    const regenerate = await raw(app, 'POST', '/key/./x/../regenerate', master, '{}');
    expect([regenerate.status, JSON.parse(regenerate.body).error.code]).toEqual([400, '400']);
    const listed = await raw(app, 'GET', '/team/x/../list', master);
    expect([listed.status, listed.type]).toEqual([200, 'application/json; charset=utf-8']);
    expect(JSON.parse(listed.body)).toEqual([]);
    const ui = await raw(app, 'GET', '/x/../ui/api/session', { cookie: session.cookie });
    expect(ui.status).toBe(200);
  });

  it('wrote nothing for any of them', async () => {
    expect((await admin(app, 'GET', '/key/list')).body.total_count).toBe(0);
    expect((await admin(app, 'GET', '/team/list')).body).toEqual([]);
  });
});
