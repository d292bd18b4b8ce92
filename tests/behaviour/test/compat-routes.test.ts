import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * LiteLLM routes added for issue 16: `GET /global/activity/cache_hits` (LiteLLM's rows per key alias
 * and model) and `POST /key/service-account/generate` (a team key with no user), with LiteLLM's shapes,
 * messages and RBAC.
 */

const TODAY = '2026-05-04';
const YESTERDAY = '2026-05-03';

interface Key {
  key: string;
  token: string;
}

interface Log {
  api_key: string;
  model: string;
  status: string;
  completion_tokens: number;
  startTime: string;
}

describe.each(ADAPTERS)('LiteLLM compat routes on $name', (framework) => {
  let app: TestApp;
  let clock: Date;
  let m: (method: string, path: string, body?: unknown, auth?: string | null) => Promise<any>;
  let ann: Key; // ann is an admin of eng
  let bob: Key; // bob is a member of eng, no admin
  const chat = async (key: string, body: Record<string, unknown> = {}) => {
    const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'gpt-4o',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'hi' }],
        ...body,
      }),
    });
    await res.arrayBuffer();
    await app.settled();
    return res.status;
  };

  beforeEach(async () => {
    clock = new Date(`${TODAY}T10:00:00Z`);
    app = await startTestApp(framework, { now: () => clock });
    m = (method, path, body, auth) => admin(app, method, path, body, auth);
    await m('POST', '/team/new', {
      team_id: 'eng',
      max_budget: 50,
      members_with_roles: [
        { user_id: 'ann', role: 'admin' },
        { user_id: 'bob', role: 'user' },
      ],
    });
    await m('POST', '/team/new', { team_id: 'ops' });
    ann = (await m('POST', '/key/generate', { user_id: 'ann', team_id: 'eng' })).body;
    bob = (await m('POST', '/key/generate', { user_id: 'bob', team_id: 'eng' })).body;
  });
  afterEach(async () => {
    await app.close();
  });

  describe('GET /global/activity/cache_hits', () => {
    it('answers LiteLLM’s rows per key alias and model: no cache hits, every completion token generated', async () => {
      const s1 = (await m('POST', '/key/generate', { team_id: 'eng', key_alias: 'shared' })).body as Key;
      const s2 = (await m('POST', '/key/generate', { key_alias: 'shared' })).body as Key;
      const plain = (await m('POST', '/key/generate', {})).body as Key;
      clock = new Date(`${YESTERDAY}T12:00:00Z`); // outside the range asked for below
      expect(await chat(s1.key)).toBe(200);
      clock = new Date(`${TODAY}T10:00:00Z`);
      expect(await chat(s1.key, { max_tokens: 20 })).toBe(200);
      expect(await chat(s2.key)).toBe(200);
      expect(await chat(s2.key, { model: 'gpt-4o-mini' })).toBe(200);
      expect(await chat(plain.key)).toBe(200);
      expect(await chat(plain.key, { messages: 'not a list' })).toBe(400); // logged as a failure

      // The oracle: the spend logs those calls wrote (the route reads the daily rollups).
      const logs: Log[] = (await m('GET', '/spend/logs?summarize=false')).body;
      expect(logs).toHaveLength(6);
      const today = logs.filter((l) => l.startTime.startsWith(TODAY));
      const completion = (keys: Key[], model: string) =>
        today
          .filter((l) => keys.some((k) => k.token === l.api_key) && l.model === model)
          .reduce((n, l) => n + l.completion_tokens, 0);
      expect(completion([s1, s2], 'gpt-4o')).toBeGreaterThan(0);

      const res = await m('GET', `/global/activity/cache_hits?start_date=${TODAY}&end_date=${TODAY}`);
      expect(res.status).toBe(200);
      const row = (
        api_key: string,
        model: string,
        total_rows: number,
        failed_rows: number,
        tokens: number,
      ) => ({
        api_key,
        call_type: null,
        model,
        total_rows,
        cache_hit_true_rows: 0,
        failed_rows,
        cached_completion_tokens: 0,
        generated_completion_tokens: tokens,
      });
      expect(res.body).toEqual([
        row('Unnamed Key', 'gpt-4o', 2, 1, completion([plain], 'gpt-4o')),
        // Two keys with one alias are one row, as LiteLLM groups by the alias.
        row('shared', 'gpt-4o', 2, 0, completion([s1, s2], 'gpt-4o')),
        row('shared', 'gpt-4o-mini', 1, 0, completion([s2], 'gpt-4o-mini')),
      ]);

      // Both days: yesterday's call joins the shared gpt-4o row.
      const both = await m('GET', `/global/activity/cache_hits?start_date=${YESTERDAY}&end_date=${TODAY}`);
      const yesterday = logs.find((l) => l.startTime.startsWith(YESTERDAY))!;
      expect(both.body[1]).toEqual(
        row('shared', 'gpt-4o', 3, 0, completion([s1, s2], 'gpt-4o') + yesterday.completion_tokens),
      );
      // A deleted key has no alias left: its calls stay, as an Unnamed Key.
      await m('POST', '/key/delete', { keys: [s2.key] });
      const after = await m('GET', `/global/activity/cache_hits?start_date=${TODAY}&end_date=${TODAY}`);
      expect(after.body.map((r: { api_key: string; model: string }) => [r.api_key, r.model])).toEqual([
        ['Unnamed Key', 'gpt-4o'],
        ['Unnamed Key', 'gpt-4o-mini'],
        ['shared', 'gpt-4o'],
      ]);
      expect(after.body[0].total_rows).toBe(3);
    });

    it('needs both dates, in order; the master key only', async () => {
      const q = `start_date=${TODAY}&end_date=${TODAY}`;
      for (const [path, param] of [
        ['/global/activity/cache_hits', 'start_date'],
        [`/global/activity/cache_hits?start_date=${TODAY}`, 'end_date'],
        [`/global/activity/cache_hits?start_date=${TODAY}&end_date=${YESTERDAY}`, 'start_date'],
        [`/global/activity/cache_hits?${q}&model=gpt-4o`, 'model'],
      ] as const) {
        const res = await m('GET', path);
        expect(res.status, path).toBe(400);
        expect(res.body.error.param, path).toBe(param);
      }
      // A date that fails the query's schema is LiteLLM's (FastAPI's) 422 with its location.
      const bad = await m('GET', `/global/activity/cache_hits?start_date=2026-02-30&end_date=${TODAY}`);
      expect(bad.status).toBe(422);
      expect(bad.body.detail[0].loc).toEqual(['query', 'start_date']);
      expect((await m('GET', '/global/activity/cache_hits')).body.error.message).toBe(
        'Please provide start_date and end_date',
      );
      expect((await m('GET', `/global/activity/cache_hits?${q}`)).body).toEqual([]);
      expect((await m('GET', `/global/activity/cache_hits?${q}`, undefined, ann.key)).status).toBe(403);
      expect((await m('GET', `/global/activity/cache_hits?${q}`, undefined, bob.key)).status).toBe(403);
      expect((await m('GET', `/global/activity/cache_hits?${q}`, undefined, null)).status).toBe(401);
    });
  });

  describe('POST /key/service-account/generate', () => {
    it('makes a key of the team and of no user, that spends on the team', async () => {
      const res = await m('POST', '/key/service-account/generate', {
        team_id: 'eng',
        key_alias: 'billing-worker',
        max_budget: 5,
      });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({
        team_id: 'eng',
        user_id: null,
        key_alias: 'billing-worker',
        max_budget: 5,
      });
      expect(res.body.key).toMatch(/^sk-/);
      const info = (await m('GET', `/key/info?key=${res.body.token}`)).body.info;
      expect(info).toMatchObject({ team_id: 'eng', user_id: null });
      expect(await chat(res.body.key)).toBe(200);
      const [log] = (await m('GET', `/spend/logs?api_key=${res.body.token}&summarize=false`)).body as Array<
        Log & { spend: number; team_id: string | null; user: string | null }
      >;
      expect(log).toMatchObject({ team_id: 'eng', user: null });
      expect(log!.spend).toBeGreaterThan(0);
      const team = (await m('GET', '/team/info?team_id=eng')).body.team_info;
      expect(team.spend).toBe(log!.spend);
    });

    it('refuses a body without team_id, with an unknown team, or naming a user', async () => {
      const cases: Array<[Record<string, unknown>, string, string | RegExp]> = [
        [
          {},
          'team_id',
          'team_id is required for service account keys. Please specify `team_id` in the request body.',
        ],
        [
          { team_id: null },
          'team_id',
          'team_id is required for service account keys. Please specify `team_id` in the request body.',
        ],
        [{ team_id: 'nope' }, 'team_id', /Team not found/],
        [{ team_id: 'eng', user_id: 'ann' }, 'user_id', /user_id is not supported/],
        [{ team_id: 'eng', frobnicate: 1 }, 'frobnicate', /not a field this route takes/],
      ];
      for (const [body, param, message] of cases) {
        const res = await m('POST', '/key/service-account/generate', body);
        expect(res.status, JSON.stringify(body)).toBe(400);
        expect(res.body.error.param).toBe(param);
        expect(res.body.error.message).toMatch(message);
      }
      // Nothing was made: the team has ann's and bob's keys only.
      expect((await m('GET', '/key/list?team_id=eng')).body.keys).toHaveLength(2);
    });

    it('the master key or an admin of the team, within the team’s bounds, as /key/generate', async () => {
      const own = await m('POST', '/key/service-account/generate', { team_id: 'eng' }, ann.key);
      expect(own.status).toBe(200);
      expect(own.body).toMatchObject({ team_id: 'eng', user_id: null });
      expect((await m('POST', '/key/service-account/generate', { team_id: 'ops' }, ann.key)).status).toBe(
        403,
      );
      expect((await m('POST', '/key/service-account/generate', { team_id: 'eng' }, bob.key)).status).toBe(
        403,
      );
      expect((await m('POST', '/key/service-account/generate', { team_id: 'eng' }, null)).status).toBe(401);
      // A team admin's key budget stays under the team's cap (50), as on /key/generate.
      const over = await m(
        'POST',
        '/key/service-account/generate',
        { team_id: 'eng', max_budget: 60 },
        ann.key,
      );
      const generate = await m('POST', '/key/generate', { team_id: 'eng', max_budget: 60 }, ann.key);
      expect(generate.status).toBe(403);
      expect([over.status, over.body.error.param]).toEqual([generate.status, generate.body.error.param]);
      expect((await m('POST', '/key/service-account/generate', { team_id: 'ops' })).status).toBe(200);
    });
  });
});
