import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, startTestApp, type TestApp, type TestAppOptions } from './harness.js';

const USER = 'ops';
const PASSWORD = 'dashboard-password-1';
const T0 = Date.parse('2026-03-10T12:00:00.000Z');

/**
 * POSTs the sign-in form from a given loopback address (every 127.x.y.z is this host), so that
 * "one client" and "many clients" can both be played.
 */
function signIn(
  app: TestApp,
  o: { password?: string; from?: string; accept?: string } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const form = new URLSearchParams({ username: USER, password: o.password ?? PASSWORD }).toString();
  return new Promise((resolve, reject) => {
    const req = request(`${app.baseUrl}/ui/login`, {
      method: 'POST',
      localAddress: o.from ?? '127.0.0.1',
      agent: false,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'content-length': Buffer.byteLength(form),
        ...(o.accept ? { accept: o.accept } : {}),
      },
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(form);
  });
}

function cookieOf(res: { headers: Record<string, string | string[] | undefined> }): string {
  const set = res.headers['set-cookie'];
  const first = Array.isArray(set) ? set[0] : set;
  if (!first) throw new Error('no session cookie was set');
  return first.split(';')[0]!;
}

async function get(app: TestApp, path: string, cookie: string) {
  const res = await fetch(`${app.baseUrl}${path}`, { headers: { cookie }, redirect: 'manual' });
  return { status: res.status, body: await res.text() };
}

describe.each(ADAPTERS)('dashboard sign-in and sessions on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });
  let clock = T0;
  async function start(o: TestAppOptions = {}, dashboard: Record<string, number> = {}) {
    const app = await startTestApp(framework, {
      now: () => new Date(clock),
      ...o,
      guardOptions: { dashboard: { username: USER, password: PASSWORD, ...dashboard } },
    });
    apps.push(app);
    return app;
  }

  it('throttles one client after its failures (429 + Retry-After), even with the right password, until the window moves on', async () => {
    clock = T0;
    const app = await start({}, { maxLoginFailuresPerClient: 3, loginWindowMs: 60_000 });
    for (let i = 0; i < 3; i++) {
      clock = T0 + i * 1000;
      expect((await signIn(app, { password: `guess-${i}` })).status).toBe(401);
    }
    const refused = await signIn(app);
    expect(refused.status).toBe(429);
    // The first failure (at T0) leaves the window at T0 + 60 s; it is now T0 + 2 s.
    expect(refused.headers['retry-after']).toBe('58');
    expect(JSON.parse(refused.body)).toEqual({
      error: {
        message: 'Too many failed sign-ins; try again in 58 s.',
        type: 'rate_limit_error',
        param: null,
        code: '429',
      },
    });
    expect(refused.headers['set-cookie']).toBeUndefined();
    // A browser's form gets the sign-in page with the message, same status.
    const page = await signIn(app, { accept: 'text/html,application/xhtml+xml' });
    expect([page.status, page.headers['retry-after']]).toEqual([429, '58']);
    expect(page.body).toContain('Too many failed sign-ins; try again in 58 s.');
    // Another address is not held up by this one.
    expect((await signIn(app, { from: '127.0.0.2' })).status).toBe(303);
    clock = T0 + 60_000;
    const back = await signIn(app);
    expect(back.status).toBe(303);
    expect((await get(app, '/ui/api/session', cookieOf(back))).status).toBe(200);
  });

  it('throttles every client once the failures from all addresses reach maxLoginFailures', async () => {
    clock = T0;
    const app = await start({}, { maxLoginFailuresPerClient: 2, maxLoginFailures: 4, loginWindowMs: 60_000 });
    for (const from of ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']) {
      expect((await signIn(app, { from, password: 'wrong' })).status).toBe(401);
    }
    const fresh = await signIn(app, { from: '127.0.0.9' });
    expect([fresh.status, fresh.headers['retry-after']]).toEqual([429, '60']);
    clock = T0 + 60_000;
    expect((await signIn(app, { from: '127.0.0.9' })).status).toBe(303);
  });

  it('keeps sessions in the store: a second instance accepts them, logout and expiry hold on both and across a restart', async () => {
    clock = T0;
    const a = await start({}, { sessionTtlMs: 3_600_000 });
    const b = await start({ dbPath: a.dbPath });
    const kept = cookieOf(await signIn(a));
    const ended = cookieOf(await signIn(a));
    expect((await get(b, '/ui/api/session', kept)).status).toBe(200);
    expect((await get(b, '/ui/api/session', ended)).status).toBe(200);

    // Log out on b: a refuses the cookie too.
    const page = await get(b, '/ui/', ended);
    const csrf = /name="csrf-token" content="([^"]+)"/.exec(page.body)?.[1] ?? '';
    const out = await fetch(`${b.baseUrl}/ui/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: ended, 'x-csrf-token': csrf },
    });
    expect(out.status).toBe(303);
    expect((await get(a, '/ui/api/session', ended)).status).toBe(401);
    expect((await get(b, '/ui/api/session', ended)).status).toBe(401);

    // A restart of both: the logged-out cookie stays refused, the other still works.
    await Promise.all(apps.splice(0).map((x) => x.close()));
    const restarted = await start({ dbPath: a.dbPath }, { sessionTtlMs: 3_600_000 });
    expect((await get(restarted, '/ui/api/session', ended)).status).toBe(401);
    expect((await get(restarted, '/ui/api/session', kept)).status).toBe(200);
    expect((await get(restarted, '/ui/', ended)).status).toBe(303); // the page sends it to the login
    // Expired at its TTL, on every instance.
    clock = T0 + 3_600_000;
    expect((await get(restarted, '/ui/api/session', kept)).status).toBe(401);
  });

  it('ends every session when the dashboard password changes', async () => {
    clock = T0;
    const a = await start();
    const cookie = cookieOf(await signIn(a));
    const other = await startTestApp(framework, {
      dbPath: a.dbPath,
      now: () => new Date(clock),
      guardOptions: { dashboard: { username: USER, password: 'a-new-dashboard-password' } },
    });
    apps.push(other);
    expect((await get(a, '/ui/api/session', cookie)).status).toBe(200);
    expect((await get(other, '/ui/api/session', cookie)).status).toBe(401);
  });
});
