/**
 * Input no store can keep as given (issue 15's "bad input answered as a storage outage", issue 17's
 * lone-surrogate ids) is refused at the edge, nothing written, and the storage error counters
 * unchanged: a management body or query that fails its schema with LiteLLM's 422 (FastAPI's `detail`
 * naming the field in `loc`), a query value read before any route (and a guarded call) with 400 in
 * LiteLLM's envelope with `param` naming it. docs/input-limits.md lists the limits.
 */
import { randomBytes } from 'node:crypto';
import { MemoryStorage, type SpendStorage } from '@spendguard/core';
import { pgStorage } from '@spendguard/storage-pg';
import OpenAI from 'openai';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { sharedPostgres } from '../../multi-instance/test/postgres.js';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

// DATABASE_URL or the local server, else a throwaway one; in CI a missing server fails, never skips.
const server = await sharedPostgres();
const url = server.url;
const pool = new pg.Pool({ connectionString: url, max: 2 });
const schemas: string[] = [];
afterAll(async () => {
  for (const name of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
  await pool.end();
  await server.close();
});

const STATS_AT_REST = {
  storageErrors: 0,
  pendingSettlements: 0,
  settlementsRecovered: 0,
  settlementsDropped: 0,
  settlementsRefused: 0,
};

/** `{"metadata":{"x":{"x":...}}}` nested 10,000 deep, as text (JSON.stringify would overflow the stack). */
const DEEP_METADATA = `{"team_alias":"deep","metadata":${'{"x":'.repeat(10_000)}1${'}'.repeat(10_000)}}`;

/** Each bad input: the request, and the field its 422 (or, where named, 400) must name. */
const BAD_MANAGEMENT_INPUT: Array<{
  what: string;
  method: 'GET' | 'POST';
  path: string;
  body?: unknown;
  param: string;
  status?: 400;
}> = [
  {
    what: 'a 1e300 USD model budget',
    method: 'POST',
    path: '/key/generate',
    body: { model_max_budget: { 'gpt-4o': 1e300 } },
    param: 'model_max_budget.gpt-4o',
  },
  {
    what: 'a 1e300 USD budget_limit',
    method: 'POST',
    path: '/key/generate',
    body: { model_max_budget: { 'gpt-4o': { budget_limit: 1e300 } } },
    param: 'model_max_budget.gpt-4o.budget_limit',
  },
  {
    what: 'metadata nested 10,000 deep',
    method: 'POST',
    path: '/team/new',
    body: DEEP_METADATA,
    param: `metadata${'.x'.repeat(32)}`,
  },
  {
    what: "budget_duration '999999999999d'",
    method: 'POST',
    path: '/team/new',
    body: { budget_duration: '999999999999d' },
    param: 'budget_duration',
  },
  {
    what: "duration '1000000000d'",
    method: 'POST',
    path: '/key/generate',
    body: { duration: '1000000000d' },
    param: 'duration',
  },
  {
    what: 'a lone high surrogate in a team id',
    method: 'POST',
    path: '/team/new',
    body: { team_id: '\ud800' },
    param: 'team_id',
  },
  {
    what: 'another lone surrogate in a team id',
    method: 'POST',
    path: '/team/new',
    body: { team_id: '\udbff' },
    param: 'team_id',
  },
  {
    what: 'a lone surrogate in an end user id',
    method: 'POST',
    path: '/customer/new',
    body: { user_id: 'acme\udc00' },
    param: 'user_id',
  },
  {
    what: 'start_date=0001-01-01 on /spend/logs',
    method: 'GET',
    path: '/spend/logs?start_date=0001-01-01',
    param: 'start_date',
  },
  {
    what: 'start_date=0001-01-01 on /global/spend/report',
    method: 'GET',
    path: '/global/spend/report?start_date=0001-01-01&end_date=2026-01-31',
    param: 'start_date',
  },
  {
    what: 'NUL in a team id',
    method: 'POST',
    path: '/team/new',
    body: { team_id: 'team\u0000a' },
    param: 'team_id',
  },
  {
    what: 'NUL in a user id',
    method: 'POST',
    path: '/user/new',
    body: { user_id: '\u0000' },
    param: 'user_id',
  },
  {
    what: 'NUL in a team alias',
    method: 'POST',
    path: '/team/new',
    body: { team_alias: 'front\u0000end' },
    param: 'team_alias',
  },
  {
    what: 'NUL in a key alias',
    method: 'POST',
    path: '/key/generate',
    body: { key_alias: '\u0000' },
    param: 'key_alias',
  },
  {
    what: 'NUL in a tag name',
    method: 'POST',
    path: '/tag/new',
    body: { name: 'feature\u0000x' },
    param: 'name',
  },
  {
    what: 'NUL in a key tag',
    method: 'POST',
    path: '/key/generate',
    body: { tags: ['ok', '\u0000'] },
    param: 'tags.1',
  },
  {
    what: 'NUL in a metadata value',
    method: 'POST',
    path: '/key/generate',
    body: { metadata: { owner: { name: 'a\u0000' } } },
    param: 'metadata.owner.name',
  },
  // Every query value is checked before the route reads its query: 400.
  {
    what: 'NUL in a query string value',
    method: 'GET',
    path: '/team/info?team_id=a%00b',
    param: 'team_id',
    status: 400,
  },
  {
    what: 'NUL in a spend query filter',
    method: 'GET',
    path: '/spend/logs?user_id=%00',
    param: 'user_id',
    status: 400,
  },
];

describe.each(ADAPTERS)('input hygiene on $name', (framework) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
  });

  it("answers each bad input of issue 15's list with 422 (or 400) naming the field; nothing written, no storage error", async () => {
    app = await startTestApp(framework);
    const existing = await admin(app, 'POST', '/key/generate', { max_budget: 5 });
    expect(existing.status).toBe(200);
    for (const c of BAD_MANAGEMENT_INPUT) {
      const res = await admin(app, c.method, c.path, c.body);
      if (c.status === undefined) {
        expect(res.status, c.what).toBe(422);
        const loc = c.param.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p));
        expect(res.body.detail[0].loc, c.what).toEqual([c.method === 'GET' ? 'query' : 'body', ...loc]);
        expect(res.body.detail[0].msg, c.what).toMatch(/\w/);
        continue;
      }
      expect(res.status, c.what).toBe(400);
      expect(res.body.error, c.what).toMatchObject({
        type: 'invalid_request_error',
        param: c.param,
        code: '400',
      });
      expect(res.body.error.message, c.what).toMatch(/^Invalid (request|query): /);
    }
    // Nothing was written: the one key, no team, user, tag or end user.
    expect((await admin(app, 'GET', '/key/list')).body.keys).toEqual([existing.body.token]);
    expect((await admin(app, 'GET', '/team/list')).body).toEqual([]);
    expect((await admin(app, 'GET', '/user/list')).body.users).toEqual([]);
    expect((await admin(app, 'GET', '/tag/list')).body).toEqual([]);
    expect((await admin(app, 'GET', '/customer/info?end_user_id=acme%EF%BF%BD')).status).toBe(404);
    expect(app.guard.stats()).toEqual({ ...STATS_AT_REST, settleFailures: 0 });
  });

  it('refuses a guarded call whose tags, end user or model cannot be stored, before the route runs', async () => {
    app = await startTestApp(framework);
    const { key } = (await admin(app, 'POST', '/key/generate', { max_budget: 5 })).body;
    const client = new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
    const chat = {
      model: 'gpt-4o-mini',
      messages: [{ role: 'user' as const, content: 'hi' }],
      max_tokens: 5,
    };
    const cases: Array<{ body: Record<string, unknown>; headers?: Record<string, string>; param: string }> = [
      { body: { tags: ['\u0000'] }, param: 'tags' },
      { body: { user: '\u0000' }, param: 'user' },
      { body: { tags: ['ok'], user: 'acme\ud800' }, param: 'user' },
      { body: { metadata: { tags: ['\udbff'] } }, param: 'metadata.tags' },
      { body: { model: 'gpt-4o-mini\u0000' }, param: 'model' },
      { body: { tags: Array.from({ length: 101 }, (_, i) => `t${i}`) }, param: 'tags' },
      { body: {}, headers: { 'x-litellm-tags': `ok,${'x'.repeat(257)}` }, param: 'x-litellm-tags' },
      { body: {}, headers: { 'x-litellm-end-user-id': 'e'.repeat(257) }, param: 'x-litellm-end-user-id' },
    ];
    const before = app.simulator.requestCount;
    for (const c of cases) {
      const refused = await client.chat.completions
        .create({ ...chat, ...c.body } as OpenAI.ChatCompletionCreateParamsNonStreaming, {
          headers: c.headers,
        })
        .catch((e: unknown) => e);
      expect(refused, c.param).toBeInstanceOf(OpenAI.APIError);
      expect((refused as InstanceType<typeof OpenAI.APIError>).status, c.param).toBe(400);
      expect((refused as InstanceType<typeof OpenAI.APIError>).error, c.param).toMatchObject({
        type: 'invalid_request_error',
        param: c.param,
        code: '400',
      });
    }
    expect(app.simulator.requestCount).toBe(before); // the route never ran
    const served = await client.chat.completions.create({ ...chat, user: 'acme', tags: ['ok'] } as never);
    expect(served.usage?.completion_tokens).toBe(5);
    await app.guard.flush();
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body;
    expect(logs).toHaveLength(1);
    expect(app.guard.stats()).toEqual({ ...STATS_AT_REST, settleFailures: 0 });
  });
});

/** Every backend, behind one adapter: lone surrogates are refused, never merged into U+FFFD. */
const BACKENDS: Array<{ name: string; storage: () => SpendStorage | undefined }> = [
  { name: 'memory', storage: () => new MemoryStorage() },
  { name: 'sqlite', storage: () => undefined }, // the harness's own SQLite file
  {
    name: 'postgres',
    storage: () => {
      const schema = `sg_hygiene_${randomBytes(6).toString('hex')}`;
      schemas.push(schema);
      return pgStorage({ connectionString: url, schema });
    },
  },
];

describe.each(BACKENDS)('ids on $name', (backend) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
  });

  it('refuses two different lone-surrogate ids instead of storing both as U+FFFD, and keeps valid ones byte-exact', async () => {
    app = await startTestApp(ADAPTERS[0]!, { storage: backend.storage() });
    for (const id of ['\ud800', '\udbff']) {
      for (const [path, body, param] of [
        ['/team/new', { team_id: id }, 'team_id'],
        ['/user/new', { user_id: id }, 'user_id'],
        ['/customer/new', { user_id: id }, 'user_id'],
        ['/tag/new', { name: id }, 'name'],
      ] as const) {
        const res = await admin(app, 'POST', path, body);
        expect(res.status, `${path} ${JSON.stringify(id)}`).toBe(422);
        expect(res.body.detail[0].loc).toEqual(['body', param]);
      }
    }
    // U+FFFD itself, and two characters outside the BMP (surrogate pairs), are three different ids.
    const ids = ['\ufffd', '\ud83d\ude00', '\ud83d\ude01'];
    for (const id of ids) expect((await admin(app, 'POST', '/team/new', { team_id: id })).status).toBe(200);
    for (const id of ids) {
      const info = await admin(app, 'GET', `/team/info?team_id=${encodeURIComponent(id)}`);
      expect(info.body.team_id).toBe(id);
    }
    expect(
      (await admin(app, 'GET', '/team/list')).body.map((t: { team_id: string }) => t.team_id).sort(),
    ).toEqual([...ids].sort());
    // A guarded call naming a lone-surrogate end user is refused as well.
    const { key } = (await admin(app, 'POST', '/key/generate', {})).body;
    const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'hi' }],
        user: '\udbff',
      }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe('user');
    expect(app.guard.stats().storageErrors).toBe(0);
  });
});
