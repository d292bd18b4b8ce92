import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * LiteLLM's read routes over spend, /customer/list and /end_user/*, the health probes, the key
 * lookups and /team/block, /global/spend/reset, /spend/calculate. Every sum is checked against the
 * spend logs the same calls wrote (the logs are written per call, the routes read the daily rollups).
 */

const NOW = new Date('2026-05-04T10:00:00Z');
const TODAY = '2026-05-04';

async function chat(
  app: TestApp,
  key: string,
  body: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): Promise<number> {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({
      model: 'gpt-4o',
      max_tokens: 8,
      messages: [{ role: 'user', content: 'hi' }],
      ...body,
    }),
  });
  await res.arrayBuffer();
  return res.status;
}

interface Log {
  api_key: string;
  spend: number;
  end_user: string | null;
  model: string;
  team_id: string | null;
}

/** Sums in nano-dollars, as the rollups do, so that the float sums compare exactly. */
const sum = (logs: Log[]) => logs.reduce((n, l) => n + Math.round(l.spend * 1e9), 0) / 1e9;

describe.each(ADAPTERS)('LiteLLM routes on $name', (framework) => {
  let app: TestApp;
  let alpha: { key: string; token: string };
  let beta: { key: string; token: string };
  let logs: Log[];
  beforeEach(async () => {
    app = await startTestApp(framework, { now: () => NOW });
    await admin(app, 'POST', '/team/new', { team_id: 'eng', team_alias: 'Engineering' });
    alpha = (await admin(app, 'POST', '/key/generate', { team_id: 'eng', key_alias: 'alpha' })).body;
    beta = (await admin(app, 'POST', '/key/generate', {})).body;
    expect(await chat(app, alpha.key, { user: 'acme', tags: ['t1'] })).toBe(200);
    expect(await chat(app, alpha.key, { metadata: { user_id: 'acme', tags: ['t1'] } })).toBe(200);
    expect(await chat(app, beta.key, { model: 'gpt-4o-mini' }, { 'x-litellm-customer-id': 'globex' })).toBe(
      200,
    );
    logs = (await admin(app, 'GET', '/spend/logs')).body;
    expect(logs).toHaveLength(3);
  });
  afterEach(async () => {
    await app.close();
  });

  it('upserts end users from every place LiteLLM reads them; /customer/list and /end_user/* find them', async () => {
    expect(logs.map((l) => l.end_user).sort()).toEqual(['acme', 'acme', 'globex']);
    const list = await admin(app, 'GET', '/customer/list');
    expect(list.status).toBe(200);
    expect(list.body.map((c: { user_id: string }) => c.user_id)).toEqual(['acme', 'globex']);
    const acme = list.body[0];
    expect(acme).toMatchObject({
      blocked: false,
      max_budget: null,
      allowed_model_region: null,
      default_model: null,
    });
    expect(acme.spend).toBe(sum(logs.filter((l) => l.end_user === 'acme')));
    const info = await admin(app, 'GET', '/end_user/info?end_user_id=globex');
    expect(info.status).toBe(200);
    expect(info.body.spend).toBe(sum(logs.filter((l) => l.end_user === 'globex')));
    expect((await admin(app, 'GET', '/end_user/list')).body).toEqual(list.body);
  });

  it('answers /spend/keys, /spend/users and the /global/spend views from the same spend', async () => {
    const total = sum(logs);
    expect((await admin(app, 'GET', '/global/spend')).body).toEqual({ spend: total, max_budget: null });
    expect((await admin(app, 'GET', '/global/spend/logs')).body).toEqual([{ date: TODAY, spend: total }]);
    const ofBeta = await admin(app, 'GET', `/global/spend/logs?api_key=${beta.key}`);
    expect(ofBeta.body).toEqual([
      { date: TODAY, spend: sum(logs.filter((l) => l.api_key === beta.token)), api_key: beta.token },
    ]);

    const alphaSpend = sum(logs.filter((l) => l.api_key === alpha.token));
    const keys = (await admin(app, 'GET', '/spend/keys')).body;
    expect(keys.find((k: { token: string }) => k.token === alpha.token).spend).toBe(alphaSpend);
    const top = await admin(app, 'GET', '/global/spend/keys?limit=1');
    expect(top.body).toEqual([
      {
        api_key: alpha.token,
        total_spend: alphaSpend,
        key_alias: 'alpha',
        key_name: alpha.key.replace(/^(sk-).*(.{4})$/, '$1...$2'),
      },
    ]);

    const teams = (await admin(app, 'GET', '/global/spend/teams')).body;
    expect(teams.teams.sort()).toEqual(['Engineering', 'Unassigned']);
    expect(teams.daily_spend).toEqual([
      { date: TODAY, Engineering: alphaSpend, Unassigned: sum(logs.filter((l) => l.team_id === null)) },
    ]);
    expect(teams.total_spend_per_team[0]).toEqual({ team_id: 'Engineering', total_spend: alphaSpend });

    const models = (await admin(app, 'GET', '/global/spend/models')).body;
    expect(models).toEqual([
      { model: 'gpt-4o', total_spend: alphaSpend },
      { model: 'gpt-4o-mini', total_spend: sum(logs.filter((l) => l.model === 'gpt-4o-mini')) },
    ]);
    const tags = await admin(app, 'GET', `/global/spend/tags?start_date=${TODAY}&end_date=${TODAY}`);
    expect(tags.body).toEqual({ spend_per_tag: [{ name: 't1', spend: alphaSpend, log_count: 2 }] });
    const endUsers = await admin(app, 'POST', '/global/spend/end_users', {});
    expect(
      endUsers.body.map((r: { end_user: string; total_count: number }) => [r.end_user, r.total_count]),
    ).toEqual([
      ['acme', 2],
      ['globex', 1],
    ]);
    const providers = (await admin(app, 'GET', '/global/spend/provider')).body;
    expect(providers).toEqual([{ provider: 'openai', spend: total }]);
    expect((await admin(app, 'GET', '/spend/users')).status).toBe(200);
    expect((await admin(app, 'GET', '/key/aliases')).body).toMatchObject({
      aliases: ['alpha'],
      total_count: 1,
    });
  });

  it('/spend/logs?summarize=true answers per-day sums, padded with zero days through end_date', async () => {
    const r = await admin(app, 'GET', `/spend/logs?summarize=true&start_date=${TODAY}&end_date=2026-05-06`);
    expect(r.status).toBe(200);
    const byModel = (m: string) => sum(logs.filter((l) => l.model === m));
    expect(r.body).toEqual([
      {
        startTime: TODAY,
        spend: sum(logs),
        [alpha.token]: sum(logs.filter((l) => l.api_key === alpha.token)),
        [beta.token]: sum(logs.filter((l) => l.api_key === beta.token)),
        users: { null: sum(logs) },
        models: { 'gpt-4o': byModel('gpt-4o'), 'gpt-4o-mini': byModel('gpt-4o-mini') },
      },
      { startTime: '2026-05-05', spend: 0, users: {}, models: {} },
      { startTime: '2026-05-06', spend: 0, users: {}, models: {} },
    ]);
    // A key sums its own logs only.
    const own = await admin(
      app,
      'GET',
      `/spend/logs?summarize=true&start_date=${TODAY}&end_date=${TODAY}`,
      undefined,
      beta.key,
    );
    expect(own.body).toEqual([
      {
        startTime: TODAY,
        spend: byModel('gpt-4o-mini'),
        [beta.token]: byModel('gpt-4o-mini'),
        users: { null: byModel('gpt-4o-mini') },
        models: { 'gpt-4o-mini': byModel('gpt-4o-mini') },
      },
    ]);
  });

  it('/spend/logs with both dates sums per day unless summarize=false (LiteLLM summarize defaults to true)', async () => {
    const range = `start_date=${TODAY}&end_date=${TODAY}`;
    const explicit = await admin(app, 'GET', `/spend/logs?summarize=true&${range}`);
    const byDefault = await admin(app, 'GET', `/spend/logs?${range}`);
    expect(byDefault.status).toBe(200);
    expect(byDefault.body).toEqual(explicit.body);
    expect(byDefault.body).toHaveLength(1);
    expect(byDefault.body[0]).toMatchObject({ startTime: TODAY, spend: sum(logs) });
    const listed = await admin(app, 'GET', `/spend/logs?summarize=false&${range}`);
    expect(listed.body.map((l: Log) => l.api_key).sort()).toEqual(logs.map((l) => l.api_key).sort());
    // One date, or times rather than days (LiteLLM takes only days): the logs.
    expect((await admin(app, 'GET', `/spend/logs?start_date=${TODAY}`)).body).toHaveLength(3);
    const times = `start_date=${TODAY}T00:00:00Z&end_date=${TODAY}T23:59:59Z`;
    expect((await admin(app, 'GET', `/spend/logs?${times}`)).body).toHaveLength(3);
    // With request_id, that one request's day (LiteLLM filters its sums by it too).
    const one = logs.find((l) => l.model === 'gpt-4o-mini')! as Log & { request_id: string };
    const summed = await admin(app, 'GET', `/spend/logs?request_id=${one.request_id}&${range}`);
    expect(summed.status).toBe(200);
    expect(summed.body).toEqual([
      {
        startTime: TODAY,
        spend: one.spend,
        [beta.token]: one.spend,
        users: { null: one.spend },
        models: { 'gpt-4o-mini': one.spend },
      },
    ]);
  });

  it("/spend/logs/v2 pages the logs in LiteLLM's shape, with its filters and exact totals", async () => {
    const v2 = (query: Record<string, string>, key?: string) =>
      admin(app, 'GET', `/spend/logs/v2?${new URLSearchParams(query)}`, undefined, key);
    const missing = await v2({ start_date: `${TODAY} 00:00:00` });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toMatchObject({
      message: 'Start date and end date are required',
      param: 'end_date',
    });
    const day = { start_date: `${TODAY} 00:00:00`, end_date: `${TODAY} 23:59:59` };
    const p1 = await v2({ ...day, page_size: '2' });
    expect(p1.status).toBe(200);
    expect(p1.body).toMatchObject({ total: 3, page: 1, page_size: 2, total_pages: 2 });
    expect(p1.body.data).toHaveLength(2);
    const p2 = await v2({ ...day, page_size: '2', page: '2' });
    expect(p2.body).toMatchObject({ total: 3, page: 2, page_size: 2, total_pages: 2 });
    expect(p2.body.data).toHaveLength(1);
    const paged = [...p1.body.data, ...p2.body.data].map((l: { call_id: string }) => l.call_id);
    const all = (logs as Array<Log & { call_id: string }>).map((l) => l.call_id);
    expect(new Set(paged)).toEqual(new Set(all));
    expect(paged).toHaveLength(3);
    // LiteLLM's end is inclusive to the second: the calls ran at 10:00:00.000.
    expect((await v2({ ...day, end_date: `${TODAY} 09:59:59` })).body.total).toBe(0);
    expect((await v2({ ...day, end_date: `${TODAY} 10:00:00` })).body.total).toBe(3);
    expect((await v2({ ...day, model: 'gpt-4o-mini' })).body.total).toBe(1);
    const mini = logs.find((l) => l.model === 'gpt-4o-mini')!.spend;
    const big = Math.min(...logs.filter((l) => l.model === 'gpt-4o').map((l) => l.spend));
    expect(mini).toBeLessThan(big);
    expect((await v2({ ...day, min_spend: String(big) })).body.total).toBe(2);
    expect((await v2({ ...day, max_spend: String(mini) })).body.total).toBe(1);
    expect((await v2({ ...day, status_filter: 'failure' })).body.total).toBe(0);
    // A key reads its own logs only.
    const own = await v2(day, beta.key);
    expect(own.body).toMatchObject({ total: 1, total_pages: 1 });
    expect(own.body.data[0].api_key).toBe(beta.token);
    const oversized = await v2({ ...day, page_size: '101' });
    expect(oversized.status).toBe(422);
    expect(oversized.body.detail[0]).toMatchObject({
      type: 'less_than_equal',
      loc: ['query', 'page_size'],
      input: '101',
    });
  });

  it('answers /customer/daily/activity and /tag/daily/activity by end user and by tag', async () => {
    const customers = await admin(
      app,
      'GET',
      `/customer/daily/activity?start_date=${TODAY}&end_date=${TODAY}`,
    );
    expect(customers.status).toBe(200);
    expect(customers.body.metadata).toMatchObject({ total_spend: sum(logs), total_api_requests: 3 });
    const entities = customers.body.results[0].breakdown.entities;
    expect(Object.keys(entities).sort()).toEqual(['acme', 'globex']);
    expect(entities.acme.metrics).toMatchObject({
      spend: sum(logs.filter((l) => l.end_user === 'acme')),
      api_requests: 2,
    });
    const one = await admin(
      app,
      'GET',
      `/customer/daily/activity?start_date=${TODAY}&end_date=${TODAY}&end_user_ids=globex`,
    );
    expect(Object.keys(one.body.results[0].breakdown.entities)).toEqual(['globex']);
    const tags = await admin(app, 'GET', `/tag/daily/activity?start_date=${TODAY}&end_date=${TODAY}&tags=t1`);
    expect(tags.body.results[0].breakdown.entities.t1.metrics).toMatchObject({
      spend: sum(logs.filter((l) => l.api_key === alpha.token)),
      api_requests: 2,
    });
  });

  it('/team/bulk_member_add adds all members in one write or none; /user/bulk_update reports each user', async () => {
    await admin(app, 'POST', '/user/new', { user_id: 'ann', auto_create_key: false });
    const added = await admin(app, 'POST', '/team/bulk_member_add', {
      team_id: 'eng',
      members: [
        { user_id: 'ann', role: 'user' },
        { user_email: 'bo@acme.com', role: 'admin' },
      ],
      max_budget_in_team: 5,
    });
    expect(added.status).toBe(200);
    expect(added.body).toMatchObject({
      team_id: 'eng',
      total_requested: 2,
      successful_additions: 2,
      failed_additions: 0,
    });
    expect(added.body.results.map((r: { user_id: string; success: boolean }) => r.success)).toEqual([
      true,
      true,
    ]);
    expect(added.body.results[0].updated_team_membership).toMatchObject({
      user_id: 'ann',
      max_budget_in_team: 5,
    });
    // ann is a member now: adding her again refuses the whole batch, and cid is not added.
    const again = await admin(app, 'POST', '/team/bulk_member_add', {
      team_id: 'eng',
      members: [
        { user_id: 'cid', role: 'user' },
        { user_id: 'ann', role: 'user' },
      ],
    });
    expect(again.status).toBe(409);
    expect((await admin(app, 'GET', '/user/info?user_id=cid')).status).toBe(404);

    const updated = await admin(app, 'POST', '/user/bulk_update', {
      users: [
        { user_id: 'ann', max_budget: 7 },
        { user_id: 'nobody', max_budget: 7 },
      ],
    });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ total_requested: 2, successful_updates: 1, failed_updates: 1 });
    expect(updated.body.results[0]).toMatchObject({
      user_id: 'ann',
      success: true,
      updated_user: { max_budget: 7 },
    });
    expect(updated.body.results[1]).toMatchObject({ user_id: 'nobody', success: false, updated_user: null });
    // A bad body anywhere refuses the whole request before anything is written.
    const bad = await admin(app, 'POST', '/user/bulk_update', {
      users: [
        { user_id: 'ann', max_budget: 9 },
        { user_id: 'ann', max_budgt: 9 },
      ],
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error.param).toBe('users.1.max_budgt');
    expect((await admin(app, 'GET', '/user/info?user_id=ann')).body.user_info.max_budget).toBe(7);
  });

  it('answers /global/activity, /global/activity/model and /global/spend/all_tag_names from the same calls', async () => {
    const tokens = (ls: Log[]) =>
      ls.reduce((n, l) => n + (l as Log & { total_tokens: number }).total_tokens, 0);
    const activity = await admin(app, 'GET', `/global/activity?start_date=${TODAY}&end_date=${TODAY}`);
    expect(activity.body).toEqual({
      daily_data: [{ date: 'May 04', api_requests: 3, total_tokens: tokens(logs) }],
      sum_api_requests: 3,
      sum_total_tokens: tokens(logs),
    });
    const byModel = await admin(app, 'GET', `/global/activity/model?start_date=${TODAY}&end_date=${TODAY}`);
    const of = (m: string) => logs.filter((l) => l.model === m);
    expect(byModel.body).toEqual([
      {
        model: 'gpt-4o',
        daily_data: [{ date: 'May 04', api_requests: 2, total_tokens: tokens(of('gpt-4o')) }],
        sum_api_requests: 2,
        sum_total_tokens: tokens(of('gpt-4o')),
      },
      {
        model: 'gpt-4o-mini',
        daily_data: [{ date: 'May 04', api_requests: 1, total_tokens: tokens(of('gpt-4o-mini')) }],
        sum_api_requests: 1,
        sum_total_tokens: tokens(of('gpt-4o-mini')),
      },
    ]);
    expect((await admin(app, 'GET', '/global/spend/all_tag_names')).body).toEqual({ tag_names: ['t1'] });
    const undated = await admin(app, 'GET', '/global/activity');
    expect(undated.status).toBe(422);
    expect(undated.body.detail.map((d: { type: string; loc: string[] }) => [d.type, ...d.loc])).toEqual([
      ['missing', 'query', 'start_date'],
      ['missing', 'query', 'end_date'],
    ]);
  });

  it('keeps the spend views to the master key; a key reads only itself on /v2/key/info', async () => {
    for (const path of [
      '/global/spend',
      '/global/spend/keys',
      '/spend/keys',
      '/customer/list',
      '/key/aliases',
    ]) {
      expect((await admin(app, 'GET', path, undefined, beta.key)).status).toBe(403);
    }
    const own = await admin(app, 'POST', '/v2/key/info', { keys: [beta.key] }, beta.key);
    expect(own.status).toBe(200);
    expect(own.body.info.map((k: { token: string }) => k.token)).toEqual([beta.token]);
    expect((await admin(app, 'POST', '/v2/key/info', { keys: [alpha.token] }, beta.key)).status).toBe(403);
    expect((await admin(app, 'POST', '/key/health', {}, beta.key)).body).toEqual({
      key: 'healthy',
      logging_callbacks: null,
    });
  });

  it('serves the health probes without a credential', async () => {
    const live = await fetch(`${app.baseUrl}/health/liveliness`);
    expect([live.status, await live.json()]).toEqual([200, "I'm alive!"]);
    const ready = await fetch(`${app.baseUrl}/health/readiness`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'healthy', db: 'connected' });
  });

  it('/team/block refuses the team keys until /team/unblock; /global/spend/reset zeroes keys and teams, keeping logs', async () => {
    expect((await admin(app, 'POST', '/team/block', { team_id: 'Engineering' })).body.blocked).toBe(true);
    expect(await chat(app, alpha.key)).toBe(401);
    expect((await admin(app, 'POST', '/team/unblock', { team_id: 'eng' })).body.blocked).toBe(false);
    expect(await chat(app, alpha.key)).toBe(200);

    const reset = await admin(app, 'POST', '/global/spend/reset');
    expect(reset.body).toEqual({
      message: 'Spend for all API Keys and Teams reset successfully',
      status: 'success',
    });
    expect((await admin(app, 'GET', `/key/info?key=${alpha.token}`)).body.info.spend).toBe(0);
    expect((await admin(app, 'GET', '/team/info?team_id=eng')).body.team_info.spend).toBe(0);
    expect((await admin(app, 'GET', '/spend/logs')).body).toHaveLength(4);
  });

  it('/spend/calculate prices a response by its model and usage', async () => {
    // gpt-4o: $2.50 per million input tokens, $10 per million output: 1000 in + 500 out = $0.0075.
    const r = await admin(app, 'POST', '/spend/calculate', {
      completion_response: {
        model: 'gpt-4o',
        usage: { prompt_tokens: 1000, completion_tokens: 500, total_tokens: 1500 },
      },
    });
    expect(r.body).toEqual({ cost: 0.0075 });
    const neither = await admin(app, 'POST', '/spend/calculate', {});
    expect(neither.status).toBe(400);
    expect(neither.body.error.param).toBe('model');
  });
});
