import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const USER = 'ops';
const PASSWORD = 'dashboard-password-1';

/** Logs in through the form; returns the cookie and the page's CSRF token. */
async function login(app: TestApp, headers: Record<string, string> = {}) {
  const res = await fetch(`${app.baseUrl}/ui/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams({ username: USER, password: PASSWORD }),
  });
  expect(res.status).toBe(303);
  const setCookie = res.headers.get('set-cookie') ?? '';
  const cookie = setCookie.split(';')[0]!;
  const page = await (await fetch(`${app.baseUrl}/ui/`, { headers: { cookie } })).text();
  const csrf = /name="csrf-token" content="([^"]+)"/.exec(page)?.[1];
  expect(csrf).toMatch(/^[\w-]{43}$/); // an HMAC-SHA256, base64url
  return { cookie, csrf: csrf!, setCookie };
}

async function send(
  app: TestApp,
  method: string,
  path: string,
  o: { cookie?: string; csrf?: string; body?: unknown } = {},
) {
  const headers: Record<string, string> = {};
  if (o.cookie) headers.cookie = o.cookie;
  if (o.csrf) headers['x-csrf-token'] = o.csrf;
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${app.baseUrl}${path}`, {
    method,
    headers,
    redirect: 'manual',
    body: o.body === undefined ? undefined : JSON.stringify(o.body),
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, body, headers: res.headers };
}

const GETS = [
  '/ui/api/session',
  '/ui/api/spend',
  '/ui/api/spend.csv',
  '/ui/api/budgets',
  '/ui/api/list/keys',
  '/ui/api/list/teams',
  '/ui/api/list/users',
  '/ui/api/list/customers',
  '/ui/api/list/tags',
  '/ui/api/team/some-team',
  '/ui/api/key/some-key',
  '/ui/api/models',
  '/ui/api/logs',
  '/ui/api/logs/some-request',
  '/ui/api/nope',
  '/ui/assets/app.js',
  '/ui/assets/app.css',
];
const POSTS = [
  '/ui/api/keys/generate',
  '/ui/api/keys/block',
  '/ui/api/keys/unblock',
  '/ui/api/keys/delete',
  '/ui/api/keys/regenerate',
  '/ui/logout',
];

describe.each(ADAPTERS)('dashboard over HTTP on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });
  async function start() {
    const app = await startTestApp(framework, {
      guardOptions: { dashboard: { username: USER, password: PASSWORD } },
    });
    apps.push(app);
    return app;
  }

  it('refuses every dashboard route without a session: pages redirect to the login, the rest answer 401 JSON', async () => {
    const app = await start();
    const root = await send(app, 'GET', '/ui');
    expect([root.status, root.headers.get('location')]).toEqual([303, 'ui/']);
    const page = await send(app, 'GET', '/ui/');
    expect([page.status, page.headers.get('location')]).toEqual([303, 'login']);
    const loginPage = await send(app, 'GET', '/ui/login');
    expect(loginPage.status).toBe(200);
    expect(loginPage.body).toContain('<form method="post" action="login">');
    const forged = 'spendguard_session=v1.9999999999999.abc.b3Bz.forgedsignature';
    for (const path of GETS) {
      for (const cookie of [undefined, forged]) {
        const r = await send(app, 'GET', path, { cookie });
        expect(r.status, `${path}`).toBe(401);
        expect(r.body).toMatchObject({ error: { type: 'auth_error', code: '401' } });
      }
    }
    for (const path of POSTS) {
      const r = await send(app, 'POST', path, { body: { key_alias: 'sneaky', keys: ['x'], key: 'x' } });
      expect(r.status, path).toBe(401);
      expect(r.body.error.code).toBe('401');
    }
    expect((await admin(app, 'GET', '/key/list')).body.total_count).toBe(0);
  });

  it('logs in with the configured credentials only; the cookie is httpOnly, SameSite=Strict, Secure behind TLS', async () => {
    const app = await start();
    for (const [username, password] of [
      [USER, 'wrong-password'],
      ['admin', PASSWORD],
      ['', ''],
    ]) {
      const res = await fetch(`${app.baseUrl}/ui/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ username: username!, password: password! }),
      });
      expect(res.status).toBe(401);
      expect(res.headers.get('set-cookie')).toBeNull();
    }
    const plain = await login(app);
    expect(plain.setCookie).toMatch(/HttpOnly/);
    expect(plain.setCookie).toMatch(/SameSite=Strict/);
    expect(plain.setCookie).not.toMatch(/Secure/);
    const behindTls = await login(app, { 'x-forwarded-proto': 'https' });
    expect(behindTls.setCookie).toMatch(/; Secure/);
    const session = await send(app, 'GET', '/ui/api/session', { cookie: plain.cookie });
    expect(session.body).toEqual({ username: USER, csrf_token: plain.csrf });
    // A form posted from another site is refused before the password is even looked at.
    const crossSite = await fetch(`${app.baseUrl}/ui/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
      body: new URLSearchParams({ username: USER, password: PASSWORD }),
    });
    expect(crossSite.status).toBe(403);
  });

  it('refuses a change without the CSRF token (403) and changes nothing; with it the change is made', async () => {
    const app = await start();
    const { cookie, csrf } = await login(app);
    for (const token of [undefined, 'not-the-token']) {
      const r = await send(app, 'POST', '/ui/api/keys/generate', {
        cookie,
        csrf: token,
        body: { key_alias: 'k' },
      });
      expect(r.status).toBe(403);
      expect(r.body).toMatchObject({ error: { param: 'csrf_token', code: '403' } });
    }
    expect((await admin(app, 'GET', '/key/list')).body.total_count).toBe(0);
    // Another session's token is no good either.
    const other = await login(app);
    expect(
      (await send(app, 'POST', '/ui/api/keys/generate', { cookie, csrf: other.csrf, body: {} })).status,
    ).toBe(403);

    const made = await send(app, 'POST', '/ui/api/keys/generate', {
      cookie,
      csrf,
      body: { key_alias: 'k', max_budget: 2 },
    });
    expect(made.status).toBe(200);
    expect(made.body.key).toMatch(/^sk-/);
    const listed = await send(app, 'GET', '/ui/api/list/keys', { cookie });
    expect(listed.body).toMatchObject({ total: 1, page: 1, pages: 1 });
    expect(listed.body.rows[0]).toMatchObject({ key_alias: 'k', max_budget: 2, last_used_day: null });
    expect(JSON.stringify(listed.body)).not.toContain(made.body.key); // shown once, never listed

    for (const path of ['/ui/api/keys/block', '/ui/api/keys/delete']) {
      expect(
        (await send(app, 'POST', path, { cookie, body: { key: made.body.token, keys: [made.body.token] } }))
          .status,
      ).toBe(403);
    }
    expect(
      (await send(app, 'POST', '/ui/api/keys/block', { cookie, csrf, body: { key: made.body.token } })).body,
    ).toMatchObject({ blocked: true });

    // Rotating answers whatever the management API's /key/regenerate answers; without that route, its error.
    const rotated = await send(app, 'POST', '/ui/api/keys/regenerate', {
      cookie,
      csrf,
      body: { key: made.body.token, grace_period: '1h' },
    });
    expect(rotated.status).toBe(200);
    expect(rotated.body).toMatchObject({ token: made.body.token, key: expect.stringMatching(/^sk-/) });
    expect(rotated.body.key).not.toBe(made.body.key);

    // Logout is a change too: refused without the token, then it ends the session.
    expect((await send(app, 'POST', '/ui/logout', { cookie })).status).toBe(403);
    expect((await send(app, 'GET', '/ui/api/session', { cookie })).status).toBe(200);
    const out = await send(app, 'POST', '/ui/logout', { cookie, csrf });
    expect([out.status, out.headers.get('location')]).toEqual([303, 'login']);
    expect(out.headers.get('set-cookie')).toMatch(/^spendguard_session=; Max-Age=0/);
    expect((await send(app, 'GET', '/ui/api/session', { cookie })).status).toBe(401);
  });

  it('serves the bundle at a versioned URL browsers may keep; any other version is never cached', async () => {
    const app = await start();
    const { cookie } = await login(app);
    const page = await send(app, 'GET', '/ui/', { cookie });
    expect(page.headers.get('cache-control')).toBe('no-store');
    const js = /<script src="assets\/app\.js\?v=([0-9a-f]{16})"><\/script>/.exec(page.body)?.[1];
    const css = /href="assets\/app\.css\?v=([0-9a-f]{16})"/.exec(page.body)?.[1];
    expect(js).toMatch(/^[0-9a-f]{16}$/);
    expect(css).toBe(js);
    const kept = await send(app, 'GET', `/ui/assets/app.js?v=${js}`, { cookie });
    expect([kept.status, kept.headers.get('cache-control')]).toEqual([
      200,
      'private, max-age=31536000, immutable',
    ]);
    const styles = await send(app, 'GET', `/ui/assets/app.css?v=${js}`, { cookie });
    expect([styles.status, styles.headers.get('cache-control')]).toEqual([
      200,
      'private, max-age=31536000, immutable',
    ]);
    // An old page's version (or none) gets today's bundle, but not for keeps.
    for (const path of ['/ui/assets/app.js', '/ui/assets/app.js?v=0000000000000000']) {
      const res = await send(app, 'GET', path, { cookie });
      expect([res.status, res.headers.get('cache-control')]).toEqual([200, 'no-store']);
      expect(res.body).toBe(kept.body);
    }
    // Without a session the bundle is not served at all, versioned or not.
    expect((await send(app, 'GET', `/ui/assets/app.js?v=${js}`)).status).toBe(401);
  });

  it("answers the entity lists and a team's and a key's page; refuses a parameter they do not take", async () => {
    const app = await start();
    const { cookie } = await login(app);
    await admin(app, 'POST', '/team/new', { team_id: 'team-a', team_alias: 'Alpha', max_budget: 10 });
    const made = await admin(app, 'POST', '/key/generate', { team_id: 'team-a', key_alias: 'alpha-bot' });
    const list = await send(app, 'GET', '/ui/api/list/keys?q=ALPHA', { cookie });
    expect(list.status).toBe(200);
    expect(list.body).toMatchObject({ total: 1, total_unfiltered: 1, page: 1, pages: 1 });
    expect(list.body.rows[0]).toMatchObject({
      key_alias: 'alpha-bot',
      team_id: 'team-a',
      team_alias: 'Alpha',
    });
    const none = await send(app, 'GET', '/ui/api/list/keys?q=beta', { cookie });
    expect(none.body).toMatchObject({ total: 0, total_unfiltered: 1, rows: [] });
    const refused = await send(app, 'GET', '/ui/api/list/teams?limit=5', { cookie });
    expect([refused.status, refused.body.error.param]).toEqual([400, 'limit']);
    const team = await send(app, 'GET', '/ui/api/team/team-a', { cookie });
    expect(team.status).toBe(200);
    expect(team.body).toMatchObject({ kind: 'team', name: 'Alpha', spend: 0, recent: [] });
    expect(team.body.budget).toMatchObject({ maxBudget: 10, spend: 0, usedFraction: 0 });
    expect(team.body.keys).toEqual([expect.objectContaining({ token: made.body.token })]);
    const key = await send(app, 'GET', `/ui/api/key/${encodeURIComponent(made.body.key)}`, { cookie });
    expect(key.status).toBe(200);
    expect(key.body).toMatchObject({
      kind: 'key',
      name: 'alpha-bot',
      record: { team_alias: 'Alpha' },
      budget: null,
    });
    expect((await send(app, 'GET', '/ui/api/team/nobody', { cookie })).status).toBe(404);
    const extra = await send(app, 'GET', '/ui/api/team/team-a?days=3', { cookie });
    expect([extra.status, extra.body.error.param]).toEqual([400, 'days']);
  });

  it('answers spend by tag, by a tag combination from the logs, as CSV, and the budgets overview', async () => {
    const app = await start();
    const { cookie } = await login(app);
    await admin(app, 'POST', '/team/new', { team_id: 'growth', team_alias: 'Growth', max_budget: 0.0001 });
    const key = (await admin(app, 'POST', '/key/generate', { team_id: 'growth' })).body.key;
    const calls: string[][] = [
      ['feature:onboarding', 'env:prod'],
      ['feature:onboarding'],
      ['env:prod'],
      ['feature:onboarding', 'env:prod'],
    ];
    for (const tags of calls) {
      const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 5,
          tags,
        }),
      });
      expect(res.status).toBe(200);
      await res.text();
    }
    await app.settled(); // settles are written after the response
    const byTag = await send(app, 'GET', '/ui/api/spend?groupBy=tag&granularity=total', { cookie });
    expect(byTag.body.source).toBe('rollups');
    expect(Object.fromEntries(byTag.body.rows.map((r: any) => [r.tag, r.requests]))).toEqual({
      'env:prod': 3,
      'feature:onboarding': 3,
    });
    const both = await send(
      app,
      'GET',
      `/ui/api/spend?granularity=total&tags=${encodeURIComponent('feature:onboarding AND env:prod')}`,
      { cookie },
    );
    expect(both.body.source).toBe('logs');
    expect(both.body.totals.requests).toBe(2);
    expect(both.body.note).toMatch(/cannot tell/);
    const byTeam = await send(app, 'GET', '/ui/api/spend?groupBy=team', { cookie });
    expect(byTeam.body.labels).toEqual({ growth: 'Growth' });
    expect(byTeam.body.totals.requests).toBe(4);
    const csv = await send(app, 'GET', '/ui/api/spend.csv?groupBy=team&granularity=total', { cookie });
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    expect(csv.body.split('\r\n')[0]).toBe(
      'period,team,requests,failed_requests,spend_usd,prompt_tokens,completion_tokens',
    );
    expect(csv.body.split('\r\n')[1]).toMatch(/^\d{4}-\d{2}-\d{2},Growth \(growth\),4,0,/);
    // Not yet near its cap: listed with min=0 only, with its burn rate and when it runs out at that rate.
    const near = await send(app, 'GET', '/ui/api/budgets?min=0.8', { cookie });
    expect(near.body.entries).toEqual([]);
    const budgets = await send(app, 'GET', '/ui/api/budgets?min=0&kind=team', { cookie });
    expect(budgets.body.entries).toHaveLength(1);
    const team = budgets.body.entries[0];
    expect(team).toMatchObject({ name: 'Growth', status: 'ok', maxBudget: 0.0001, resetsFirst: false });
    expect(team.usedFraction).toBeCloseTo(team.spend / team.maxBudget, 9);
    expect(team.burnRatePerDay).toBeGreaterThan(0);
    const daysLeft = (Date.parse(team.projectedRunOut) - Date.now()) / 86_400_000;
    expect(daysLeft).toBeCloseTo(team.remaining / team.burnRatePerDay, 1);
    const logs = await send(app, 'GET', '/ui/api/logs?tag=env:prod&limit=2', { cookie });
    expect(logs.body.logs).toHaveLength(2);
    // The cursor is the last log's start time and call id (the key it is stored under).
    const last = (await admin(app, 'GET', `/spend/logs?request_id=${logs.body.logs[1].request_id}`)).body[0];
    expect(logs.body.next).toBe(`${last.startTime}|${last.call_id}`);
    const older = await send(
      app,
      'GET',
      `/ui/api/logs?tag=env:prod&limit=2&before=${encodeURIComponent(logs.body.next)}`,
      { cookie },
    );
    expect(older.body.logs).toHaveLength(1);
    const detail = await send(app, 'GET', `/ui/api/logs/${older.body.logs[0].request_id}`, { cookie });
    expect(detail.body).toMatchObject({ team_id: 'growth', prompt: null, response: null });
    expect(detail.body.bodies_note).toMatch(/does not store prompt/);
    const models = await send(app, 'GET', '/ui/api/models', { cookie });
    expect(models.body.models[0]).toMatchObject({ requests: 4, recent_requests: 4, health: 'healthy' });
    expect(models.body.models[0].latency_p95_ms).toBeGreaterThanOrEqual(models.body.models[0].latency_p50_ms);
  });

  it('charts a grouping with many groups as its top 10 by spend plus "other", totals exact; the CSV lists all', async () => {
    const app = await start();
    const { cookie } = await login(app);
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key;
    // 12 customers (the body's `user`), customer i asking for i + 1 completion tokens: each spends more.
    for (let i = 0; i < 12; i++) {
      const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: i + 1,
          user: `cust-${String(i).padStart(2, '0')}`,
        }),
      });
      expect(res.status).toBe(200);
      await res.text();
    }
    await app.settled();
    const logs: any[] = (await admin(app, 'GET', '/spend/logs')).body;
    const byCustomer = await send(app, 'GET', '/ui/api/spend?groupBy=customer&granularity=total', { cookie });
    expect(byCustomer.status).toBe(200);
    expect(byCustomer.body.top).toBe(10);
    const rows: any[] = byCustomer.body.rows;
    expect(rows).toHaveLength(11);
    // The two smallest spenders are summed as the last row, "other".
    expect(rows.filter((r) => !r.other).map((r) => r.customer)).toEqual(
      Array.from({ length: 10 }, (_, i) => `cust-${String(i + 2).padStart(2, '0')}`),
    );
    const other = rows.at(-1);
    expect(other).toMatchObject({ other: true, customer: null, requests: 2, completionTokens: 1 + 2 });
    const spendOf = (id: string) => logs.find((l) => l.end_user === id).spend;
    expect(other.spend).toBeCloseTo(spendOf('cust-00') + spendOf('cust-01'), 12);
    expect(byCustomer.body.totals.requests).toBe(12);
    expect(byCustomer.body.totals.spend).toBeCloseTo(
      logs.reduce((n, l) => n + l.spend, 0),
      12,
    );
    expect(byCustomer.body.note).toMatch(/The 10 customers with the most spend/);
    // Few groups: no "other", no note.
    const byModel = await send(app, 'GET', '/ui/api/spend?groupBy=model&granularity=total', { cookie });
    expect(byModel.body).toMatchObject({ top: null, note: null });
    expect(byModel.body.rows).toHaveLength(1);
    const csv = await send(app, 'GET', '/ui/api/spend.csv?groupBy=customer&granularity=total', { cookie });
    const lines = csv.body.trim().split('\r\n');
    expect(lines).toHaveLength(1 + 12);
    expect(lines.some((l: string) => l.includes(',cust-00,'))).toBe(true);
  });
});
