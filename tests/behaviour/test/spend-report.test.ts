import type { SpendGroup } from '@spendguard/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/** A spend log as `/spend/logs` answers it (LiteLLM's field names). */
interface Log {
  api_key: string;
  spend: number;
  prompt_tokens: number;
  completion_tokens: number;
  startTime: string;
  model: string;
  custom_llm_provider: string | null;
  user: string | null;
  team_id: string | null;
  end_user: string | null;
  request_tags: string[];
  status: string;
}

/** Sums compared to the nano-dollar: USD amounts go back to integers before any comparison. */
interface Sums {
  requests: number;
  spendNano: number;
  promptTokens: number;
  completionTokens: number;
}
const nano = (usd: number) => Math.round(usd * 1e9);

/** Sums of the raw logs per key (one log may count under several keys: its tags). */
function sumLogs(logs: Log[], keysOf: (l: Log) => string[]): Map<string, Sums> {
  const out = new Map<string, Sums>();
  for (const l of logs) {
    for (const k of keysOf(l)) {
      const s = out.get(k) ?? { requests: 0, spendNano: 0, promptTokens: 0, completionTokens: 0 };
      s.requests += 1;
      s.spendNano += nano(l.spend);
      s.promptTokens += l.prompt_tokens;
      s.completionTokens += l.completion_tokens;
      out.set(k, s);
    }
  }
  return out;
}

const dayOf = (l: Log) => l.startTime.slice(0, 10);
/** The Monday of a day's ISO week, as 7d budgets and weekly reports bucket it. */
function mondayOf(day: string): string {
  const d = new Date(`${day}T00:00:00.000Z`);
  return new Date(d.getTime() - ((d.getUTCDay() + 6) % 7) * 86_400_000).toISOString().slice(0, 10);
}
const k = (...parts: Array<string | null>) => JSON.stringify(parts);

const FROM = '2026-03-01';
const TO = '2026-03-10';

describe.each(ADAPTERS)('spend reports on $name', (framework) => {
  let app: TestApp;
  let clock = new Date('2026-02-27T12:00:00.000Z');
  let logs: Log[];
  const team: Record<string, string> = {};
  const key: Record<string, string> = {};

  beforeAll(async () => {
    app = await startTestApp(framework, { now: () => clock });
    for (const alias of ['frontend-team', 'backend-team']) {
      team[alias] = (await admin(app, 'POST', '/team/new', { team_alias: alias })).body.team_id;
    }
    await admin(app, 'POST', '/user/new', {
      user_id: 'alice',
      team_id: 'frontend-team',
      auto_create_key: false,
    });
    await admin(app, 'POST', '/user/new', {
      user_id: 'bob',
      team_id: 'backend-team',
      auto_create_key: false,
    });
    await admin(app, 'POST', '/user/new', { user_id: 'carol', auto_create_key: false });
    const keys: Array<[string, Record<string, unknown>]> = [
      // Team keys of their users' teams (without team_id, /key/generate makes a personal key, as LiteLLM).
      ['aliceWeb', { user_id: 'alice', team_id: 'frontend-team', tags: ['svc:web'], key_alias: 'alice-web' }],
      ['aliceBatch', { user_id: 'alice', team_id: 'frontend-team', key_alias: 'alice-batch' }],
      ['bob', { user_id: 'bob', team_id: 'backend-team' }],
      ['carol', { user_id: 'carol' }],
      ['service', { team_id: 'backend-team' }],
      ['loose', {}],
    ];
    for (const [name, body] of keys) key[name] = (await admin(app, 'POST', '/key/generate', body)).body.key;

    // [day, key, model, extra body, tag header]: several teams, users, keys, models, providers,
    // customers and tags, over days of two ISO weeks, one call before the range and one failure.
    const calls: Array<[string, string, string, Record<string, unknown>, string?]> = [
      ['2026-02-28', 'aliceWeb', 'gpt-4o', { tags: ['feature:chat'] }],
      ['2026-03-01', 'aliceWeb', 'gpt-4o', { tags: ['feature:chat'], user: 'cust-1' }],
      ['2026-03-01', 'aliceWeb', 'gpt-4o-mini', { tags: ['feature:search', 'env:prod'] }],
      ['2026-03-01', 'aliceBatch', 'gpt-4o', { max_tokens: 120 }, 'env:prod'],
      ['2026-03-01', 'bob', 'claude-3-haiku-20240307', { user: 'cust-2' }],
      ['2026-03-02', 'bob', 'gpt-4o', { tags: ['feature:chat', 'env:prod'], user: 'cust-1' }],
      ['2026-03-02', 'service', 'gpt-4o-mini', { metadata: { tags: ['batch'] } }],
      ['2026-03-02', 'carol', 'gpt-4o', {}],
      ['2026-03-02', 'loose', 'claude-3-haiku-20240307', { tags: ['feature:chat'] }],
      ['2026-03-04', 'aliceBatch', 'gpt-4o-mini', { user: 'cust-2', max_tokens: 7 }],
      ['2026-03-04', 'service', 'gpt-4o', {}, 'batch,env:prod'],
      ['2026-03-09', 'aliceWeb', 'claude-3-haiku-20240307', { tags: ['feature:search'] }],
      ['2026-03-09', 'bob', 'gpt-4o', { messages: 'not a list' }],
      ['2026-03-10', 'carol', 'gpt-4o-mini', { user: 'cust-1', max_tokens: 33 }],
      ['2026-03-11', 'bob', 'gpt-4o', {}],
    ];
    let i = 0;
    for (const [day, name, model, extra, tagHeader] of calls) {
      clock = new Date(`${day}T${String(8 + (i++ % 10)).padStart(2, '0')}:15:00.000Z`);
      const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key[name]}`,
          'content-type': 'application/json',
          ...(tagHeader ? { 'x-litellm-tags': tagHeader } : {}),
        },
        body: JSON.stringify({
          model,
          messages: [{ role: 'user', content: `call ${i}: ${'spend '.repeat(i)}` }],
          max_tokens: 20 + i,
          ...extra,
        }),
      });
      await res.arrayBuffer();
      await app.settled();
    }
    const all = await admin(
      app,
      'GET',
      `/spend/logs?start_date=${FROM}&end_date=${TO}&summarize=false&limit=1000`,
    );
    logs = all.body;
  });
  afterAll(async () => {
    await app.close();
  });

  it('seeded what the test expects: every dimension varies, one call failed, two fell outside', () => {
    expect(logs).toHaveLength(13);
    expect(new Set(logs.map((l) => l.team_id))).toEqual(
      new Set([team['frontend-team'], team['backend-team'], null]),
    );
    expect(new Set(logs.map((l) => l.custom_llm_provider))).toEqual(new Set(['openai', 'anthropic']));
    expect(logs.filter((l) => l.status === 'failure')).toHaveLength(1);
    expect(logs.every((l) => nano(l.spend) >= 0)).toBe(true);
    expect(logs.filter((l) => l.end_user !== null).length).toBeGreaterThanOrEqual(4);
  });

  it('the programmatic report equals the raw logs, per day, week, month and in total, by any grouping', async () => {
    const fields: Record<SpendGroup, (l: Log) => string | null> = {
      team: (l) => l.team_id,
      user: (l) => l.user,
      key: (l) => l.api_key,
      model: (l) => l.model,
      provider: (l) => l.custom_llm_provider,
      customer: (l) => l.end_user,
      tag: () => null, // expanded below
    };
    const cases: Array<{ groupBy: SpendGroup[]; granularity: 'day' | 'week' | 'month' | 'total' }> = [
      { groupBy: [], granularity: 'total' },
      { groupBy: ['team', 'model'], granularity: 'day' },
      { groupBy: ['user', 'key'], granularity: 'week' },
      { groupBy: ['provider', 'customer'], granularity: 'month' },
      { groupBy: ['tag'], granularity: 'total' },
      { groupBy: ['team', 'tag'], granularity: 'day' },
    ];
    for (const { groupBy, granularity } of cases) {
      const period = (l: Log) =>
        granularity === 'day'
          ? dayOf(l)
          : granularity === 'week'
            ? mondayOf(dayOf(l))
            : granularity === 'month'
              ? `${dayOf(l).slice(0, 7)}-01`
              : FROM;
      const expected = sumLogs(logs, (l) => {
        const values = groupBy.filter((g) => g !== 'tag').map((g) => fields[g](l));
        if (!groupBy.includes('tag')) return [k(period(l), ...values)];
        return l.request_tags.map((tag) => k(period(l), ...values, tag));
      });
      const report = await app.guard.spend.report({ from: FROM, to: TO, groupBy, granularity });
      const got = new Map(
        report.rows.map((r) => {
          const values = groupBy
            .filter((g) => g !== 'tag')
            .map((g) => (r as unknown as Record<string, string | null>)[g]!);
          const tag = groupBy.includes('tag') ? [(r as { tag: string }).tag] : [];
          return [
            k(r.period, ...values, ...tag),
            {
              requests: r.requests,
              spendNano: r.spendNano,
              promptTokens: r.promptTokens,
              completionTokens: r.completionTokens,
            },
          ];
        }),
      );
      expect(got, `${groupBy.join('+')} by ${granularity}`).toEqual(expected);
      for (const r of report.rows) expect(nano(r.spend)).toBe(r.spendNano);
      const totalNano = [...expected.values()].reduce((n, s) => n + s.spendNano, 0);
      expect(report.totals.spendNano).toBe(totalNano);
    }
    const all = await app.guard.spend.report({ from: FROM, to: TO });
    expect(all.totals.requests).toBe(13);
    expect(all.totals.failedRequests).toBe(1);
    expect(all.totals.spendNano).toBe(logs.reduce((n, l) => n + nano(l.spend), 0));
  });

  it('filters the programmatic report by team, key, model, customer and tag', async () => {
    const frontend = team['frontend-team']!;
    const match = (l: Log) =>
      l.team_id === frontend && l.request_tags.includes('feature:chat') && l.model === 'gpt-4o';
    const report = await app.guard.spend.report({
      from: FROM,
      to: TO,
      filters: { team: frontend, tags: ['feature:chat'], model: 'gpt-4o', key: key.aliceWeb },
    });
    expect(report.totals.spendNano).toBe(logs.filter(match).reduce((n, l) => n + nano(l.spend), 0));
    expect(report.totals.requests).toBe(logs.filter(match).length);
    const cust = await app.guard.spend.report({
      from: '2026-03-02',
      to: '2026-03-04',
      groupBy: ['customer'],
      filters: { customer: ['cust-1', 'cust-2'] },
    });
    const inRange = logs.filter((l) => dayOf(l) >= '2026-03-02' && dayOf(l) <= '2026-03-04');
    const expected = sumLogs(
      inRange.filter((l) => l.end_user === 'cust-1' || l.end_user === 'cust-2'),
      (l) => [l.end_user!],
    );
    expect(new Map(cust.rows.map((r) => [r.customer, r.spendNano]))).toEqual(
      new Map([...expected].map(([c, s]) => [c, s.spendNano])),
    );
  });

  it('GET /global/spend/report answers in LiteLLM shapes that equal the raw logs', async () => {
    const q = `start_date=${FROM}&end_date=${TO}`;
    const byTeam = await admin(app, 'GET', `/global/spend/report?${q}&group_by=team`);
    expect(byTeam.status).toBe(200);
    const teamExpected = sumLogs(logs, (l) => [k(dayOf(l), l.team_id, l.model, l.api_key)]);
    const teamGot = new Map<string, number>();
    const teamTotals = sumLogs(logs, (l) => [k(dayOf(l), l.team_id)]);
    for (const day of byTeam.body) {
      expect(day.group_by_day).toMatch(/^\d{4}-\d{2}-\d{2}T00:00:00\+00:00$/);
      for (const t of day.teams) {
        const d = day.group_by_day.slice(0, 10);
        expect(nano(t.total_spend)).toBe(teamTotals.get(k(d, t.team_id))?.spendNano);
        const alias = Object.entries(team).find(([, id]) => id === t.team_id)?.[0] ?? 'Unassigned Team';
        expect(t.team_name).toBe(alias);
        for (const m of t.metadata) teamGot.set(k(d, t.team_id, m.model, m.api_key), nano(m.spend));
      }
    }
    expect(teamGot).toEqual(new Map([...teamExpected].map(([id, s]) => [id, s.spendNano])));
    expect(byTeam.body.map((d: { group_by_day: string }) => d.group_by_day.slice(0, 10))).toEqual(
      [...new Set(logs.map(dayOf))].sort(),
    );

    const byCustomer = await admin(app, 'GET', `/global/spend/report?${q}&group_by=customer`);
    const custExpected = sumLogs(logs, (l) => [k(dayOf(l), l.end_user)]);
    const custGot = new Map<string, number>();
    for (const day of byCustomer.body) {
      for (const c of day.customers)
        custGot.set(k(day.group_by_day.slice(0, 10), c.customer), nano(c.total_spend));
    }
    expect(custGot).toEqual(new Map([...custExpected].map(([id, s]) => [id, s.spendNano])));

    const byKey = await admin(app, 'GET', `/global/spend/report?${q}&group_by=api_key`);
    const keyExpected = sumLogs(logs, (l) => [l.api_key]);
    expect(byKey.body).toHaveLength(keyExpected.size);
    const costs = byKey.body.map((r: { total_cost: number }) => r.total_cost);
    expect(costs).toEqual([...costs].sort((a, b) => b - a)); // most spend first, as LiteLLM
    for (const r of byKey.body) {
      const s = keyExpected.get(r.api_key)!;
      expect(nano(r.total_cost)).toBe(s.spendNano);
      expect([r.total_input_tokens, r.total_output_tokens]).toEqual([s.promptTokens, s.completionTokens]);
      const perModel = sumLogs(
        logs.filter((l) => l.api_key === r.api_key),
        (l) => [l.model],
      );
      expect(new Map(r.model_details.map((m: any) => [m.model, nano(m.total_cost)]))).toEqual(
        new Map([...perModel].map(([m, x]) => [m, x.spendNano])),
      );
    }

    // LiteLLM's filters answer in the api_key shape.
    const bob = await admin(app, 'GET', `/global/spend/report?${q}&internal_user_id=bob`);
    expect(nano(bob.body.reduce((n: number, r: { total_cost: number }) => n + r.total_cost, 0))).toBe(
      logs.filter((l) => l.user === 'bob').reduce((n, l) => n + nano(l.spend), 0),
    );
    const oneKey = await admin(app, 'GET', `/global/spend/report?${q}&api_key=${key.service}`);
    expect(oneKey.body).toHaveLength(1);
  });

  it('GET /user/daily/activity and /team/daily/activity equal the raw logs, day by day', async () => {
    const q = `start_date=${FROM}&end_date=${TO}`;
    const users = await admin(app, 'GET', `/user/daily/activity?${q}`);
    expect(users.status).toBe(200);
    const withUser = logs.filter((l) => l.user !== null);
    expect(nano(users.body.metadata.total_spend)).toBe(withUser.reduce((n, l) => n + nano(l.spend), 0));
    expect(users.body.metadata).toMatchObject({
      total_api_requests: withUser.length,
      total_failed_requests: 1,
      total_successful_requests: withUser.length - 1,
      page: 1,
      total_pages: 1,
      has_more: false,
    });
    const dates = users.body.results.map((r: { date: string }) => r.date);
    expect(dates).toEqual([...new Set(withUser.map(dayOf))].sort().reverse()); // newest first
    const perDay = sumLogs(withUser, (l) => [dayOf(l)]);
    const perModel = sumLogs(withUser, (l) => [k(dayOf(l), l.model)]);
    const perKey = sumLogs(withUser, (l) => [k(dayOf(l), l.api_key)]);
    const perUser = sumLogs(withUser, (l) => [k(dayOf(l), l.user)]);
    const perProvider = sumLogs(withUser, (l) => [k(dayOf(l), l.custom_llm_provider)]);
    for (const r of users.body.results) {
      const s = perDay.get(r.date)!;
      expect(r.metrics).toMatchObject({
        prompt_tokens: s.promptTokens,
        completion_tokens: s.completionTokens,
        total_tokens: s.promptTokens + s.completionTokens,
        api_requests: s.requests,
      });
      expect(nano(r.metrics.spend)).toBe(s.spendNano);
      const check = (breakdown: Record<string, any>, expected: Map<string, Sums>) => {
        for (const [id, b] of Object.entries(breakdown)) {
          expect(nano(b.metrics.spend), `${r.date} ${id}`).toBe(expected.get(k(r.date, id))?.spendNano);
        }
      };
      check(r.breakdown.models, perModel);
      check(r.breakdown.api_keys, perKey);
      check(r.breakdown.entities, perUser);
      check(r.breakdown.providers, perProvider);
      for (const [hash, b] of Object.entries<any>(r.breakdown.api_keys)) {
        if (hash === withUser.find((l) => l.user === 'alice' && l.api_key === hash)?.api_key) {
          expect(b.metadata.key_alias).toMatch(/^alice-/);
        }
      }
    }
    const alice = await admin(app, 'GET', `/user/daily/activity?${q}&user_id=alice&page_size=2&page=2`);
    const aliceDays = [...new Set(logs.filter((l) => l.user === 'alice').map(dayOf))].sort().reverse();
    expect(alice.body.results.map((r: { date: string }) => r.date)).toEqual(aliceDays.slice(2, 4));
    expect(alice.body.metadata).toMatchObject({ page: 2, total_pages: Math.ceil(aliceDays.length / 2) });

    const frontend = team['frontend-team']!;
    const teams = await admin(
      app,
      'GET',
      `/team/daily/activity?${q}&team_ids=${frontend},${team['backend-team']}`,
    );
    const withTeam = logs.filter((l) => l.team_id !== null);
    expect(nano(teams.body.metadata.total_spend)).toBe(withTeam.reduce((n, l) => n + nano(l.spend), 0));
    const perTeam = sumLogs(withTeam, (l) => [k(dayOf(l), l.team_id)]);
    for (const r of teams.body.results) {
      for (const [id, b] of Object.entries<any>(r.breakdown.entities)) {
        expect(nano(b.metrics.spend)).toBe(perTeam.get(k(r.date, id))?.spendNano);
        expect(b.metadata.team_alias).toMatch(/-team$/);
      }
    }
    const notFrontend = await admin(app, 'GET', `/team/daily/activity?${q}&exclude_team_ids=${frontend}`);
    expect(nano(notFrontend.body.metadata.total_spend)).toBe(
      withTeam.filter((l) => l.team_id !== frontend).reduce((n, l) => n + nano(l.spend), 0),
    );
  });

  it('reads a budget as it stands: guard.budgets.remaining', async () => {
    await admin(app, 'POST', '/key/update', { key: key.bob, max_budget: 10, soft_budget: 5 });
    const left = await app.guard.budgets.remaining({ key: key.bob! });
    const spent = (await admin(app, 'GET', `/spend/logs?api_key=${key.bob}`)).body.reduce(
      (n: number, l: Log) => n + nano(l.spend),
      0,
    );
    expect(left).toMatchObject({ maxBudget: 10, softBudget: 5, reserved: 0, resetAt: null });
    expect(nano(left!.spend)).toBe(spent);
    expect(nano(left!.remaining!)).toBe(10e9 - spent);
    expect(await app.guard.budgets.remaining({ team: 'frontend-team' })).toMatchObject({
      scope: { kind: 'team', id: team['frontend-team'] },
      maxBudget: null,
      remaining: null,
    });
    expect(await app.guard.budgets.remaining({ user: 'nobody' })).toBeNull();
  });

  // A query that fails its schema: LiteLLM's 422 naming the parameter; the handler's own rule: 400.
  const bad: Array<[string, number, string | RegExp, string]> = [
    ['/global/spend/report?start_date=2026-02-30&end_date=2026-03-10', 422, 'start_date', 'value_error'],
    ['/global/spend/report?start_date=2026-03-01', 422, 'end_date', 'missing'],
    ['/global/spend/report?start_date=2026-03-05&end_date=2026-03-01', 400, /after end_date/, ''],
    [
      '/global/spend/report?start_date=2026-03-01&end_date=2026-03-05&group_by=model',
      422,
      'group_by',
      'literal_error',
    ],
    ['/user/daily/activity?start_date=yesterday&end_date=2026-03-05', 422, 'start_date', 'value_error'],
    [
      '/team/daily/activity?start_date=2026-03-01&end_date=2026-03-05&page=0',
      422,
      'page',
      'greater_than_equal',
    ],
  ];
  it.each(bad)('answers %s with %s JSON', async (path, status, expected, type) => {
    const res = await admin(app, 'GET', path);
    expect(res.status).toBe(status);
    if (status === 422) {
      expect(res.body.detail).toEqual([expect.objectContaining({ type, loc: ['query', expected] })]);
      return;
    }
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: '400' });
    expect(res.body.error.message).toMatch(expected);
  });

  it('refuses the report routes without the master key (401) and to a virtual key (403)', async () => {
    for (const path of ['/global/spend/report', '/user/daily/activity', '/team/daily/activity']) {
      const q = `?start_date=${FROM}&end_date=${TO}`;
      expect((await admin(app, 'GET', path + q, undefined, null)).status).toBe(401);
      expect((await admin(app, 'GET', path + q, undefined, key.carol)).status).toBe(403); // a key, not the master key
    }
    await expect(app.guard.spend.report({ from: '2026-03-05', to: '2026-03-01' })).rejects.toThrow(/after/);
  });
});
