import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

describe.each(ADAPTERS)('management API on $name', (framework) => {
  let app: TestApp;
  beforeEach(async () => {
    app = await startTestApp(framework);
  });
  afterEach(async () => {
    await app.close();
  });

  it('creates a team, a user in it by alias, and a key, with LiteLLM field names', async () => {
    const team = await admin(app, 'POST', '/team/new', {
      team_alias: 'frontend-team',
      max_budget: 1000,
      budget_duration: '30d',
    });
    expect(team.status).toBe(200);
    expect(team.body).toMatchObject({
      team_alias: 'frontend-team',
      max_budget: 1000,
      budget_duration: '30d',
      spend: 0,
    });
    expect(team.body.team_id).toMatch(/^[0-9a-f-]{36}$/);
    // 30d resets on the 1st of next month, at midnight UTC (LiteLLM's calendar alignment).
    expect(team.body.budget_reset_at).toMatch(/^\d{4}-\d{2}-01T00:00:00\.000Z$/);

    const user = await admin(app, 'POST', '/user/new', {
      user_id: 'alice@acme.com',
      team_id: 'frontend-team',
      max_budget: 50,
    });
    expect(user.status).toBe(200);
    expect(user.body).toMatchObject({
      user_id: 'alice@acme.com',
      teams: [team.body.team_id],
      max_budget: 50,
    });
    expect(user.body.key).toMatch(/^sk-[A-Za-z0-9_-]{32}$/);

    const key = await admin(app, 'POST', '/key/generate', {
      user_id: 'alice@acme.com',
      team_id: 'frontend-team',
      max_budget: 50,
    });
    expect(key.status).toBe(200);
    expect(key.body).toMatchObject({
      user_id: 'alice@acme.com',
      team_id: team.body.team_id,
      max_budget: 50,
      spend: 0,
    });
    expect(key.body.key).toMatch(/^sk-/);
    expect(key.body.token).toMatch(/^[0-9a-f]{64}$/);
    expect(key.body.key_name).toBe(`sk-...${key.body.key.slice(-4)}`);

    // /key/info takes the key or its hash; the key itself is never returned again.
    for (const ref of [key.body.key, key.body.token]) {
      const info = await admin(app, 'GET', `/key/info?key=${encodeURIComponent(ref)}`);
      expect(info.status).toBe(200);
      expect(info.body.key).toBe(key.body.token);
      expect(info.body.info).toMatchObject({ user_id: 'alice@acme.com', max_budget: 50, spend: 0 });
      expect(JSON.stringify(info.body)).not.toContain(key.body.key);
    }
    // A key may read its own info, and nobody else's.
    const own = await admin(app, 'GET', '/key/info', undefined, key.body.key);
    expect(own.status).toBe(200);
    expect(own.body.key).toBe(key.body.token);
    const other = await admin(app, 'GET', `/key/info?key=${user.body.token}`, undefined, key.body.key);
    expect(other.status).toBe(403);

    const teamInfo = await admin(app, 'GET', '/team/info?team_id=frontend-team');
    expect(teamInfo.status).toBe(200);
    expect(teamInfo.body.team_id).toBe(team.body.team_id);
    expect(teamInfo.body.team_info).toMatchObject({ team_alias: 'frontend-team', max_budget: 1000 });
    expect(teamInfo.body.keys).toHaveLength(2);
    const userInfo = await admin(app, 'GET', '/user/info?user_id=alice@acme.com');
    expect(userInfo.status).toBe(200);
    expect(userInfo.body.user_info).toMatchObject({ user_id: 'alice@acme.com', max_budget: 50 });
    expect(userInfo.body.keys.map((k: { token: string }) => k.token).sort()).toEqual(
      [user.body.token, key.body.token].sort(),
    );
  });

  it('refuses an ambiguous team alias and accepts the id', async () => {
    const a = await admin(app, 'POST', '/team/new', { team_alias: 'dup' });
    await admin(app, 'POST', '/team/new', { team_alias: 'dup' });
    const ambiguous = await admin(app, 'POST', '/user/new', { user_id: 'bob', team_id: 'dup' });
    expect(ambiguous.status).toBe(400);
    expect(ambiguous.body.error.message).toMatch(/matches 2 team aliases/);
    const byId = await admin(app, 'POST', '/user/new', { user_id: 'bob', team_id: a.body.team_id });
    expect(byId.status).toBe(200);
  });

  // A body that fails its schema: LiteLLM's 422, FastAPI's detail naming the field. What the
  // handler refuses: 400 in the error envelope.
  const badInputs: Array<[string, string, unknown, 400, RegExp] | [string, string, unknown, 422, string]> = [
    ['a string budget', '/team/new', { team_alias: 'x', max_budget: 'lots' }, 422, 'max_budget'],
    ['a negative budget', '/team/new', { team_alias: 'x', max_budget: -1 }, 422, 'max_budget'],
    [
      'an unknown duration',
      '/team/new',
      { team_alias: 'x', budget_duration: '3 weeks' },
      422,
      'budget_duration',
    ],
    ['a numeric alias', '/team/new', { team_alias: 42 }, 422, 'team_alias'],
    ['models not an array', '/key/generate', { models: 'gpt-4o' }, 422, 'models'],
    ['an unknown team', '/user/new', { user_id: 'carol', team_id: 'no-such-team' }, 400, /Team not found/],
    ['an unknown user', '/key/generate', { user_id: 'nobody@acme.com' }, 400, /User not found/],
    ['an unknown team on a key', '/key/generate', { team_id: 'no-such-team' }, 400, /Team not found/],
    ['a malformed custom key', '/key/generate', { key: 'not-a-key' }, 422, 'key'],
  ];
  it.each(badInputs)(
    'answers 4xx JSON and writes nothing for %s',
    async (_name, path, body, status, expected) => {
      const res = await admin(app, 'POST', path, body);
      expect(res.status).toBe(status);
      if (typeof expected === 'string') {
        expect(res.body.detail).toHaveLength(1);
        expect(res.body.detail[0].loc).toEqual(['body', expected]);
        expect(res.body.detail[0].input).toEqual((body as Record<string, unknown>)[expected]);
      } else {
        expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: '400' });
        expect(res.body.error.message).toMatch(expected);
      }
      expect((await admin(app, 'GET', '/team/info?team_id=x')).status).toBe(404);
      expect((await admin(app, 'GET', '/user/info?user_id=carol')).status).toBe(404);
    },
  );

  it('answers a body that is no JSON, or no JSON object, as FastAPI does (422) and writes nothing', async () => {
    // '{"team_alias": "x",' ends at character 19, where a property name was expected.
    const broken = await admin(app, 'POST', '/team/new', '{"team_alias": "x",');
    expect(broken.status).toBe(422);
    expect(broken.body.error).toBeUndefined();
    expect(broken.body.detail).toEqual([
      {
        type: 'json_invalid',
        loc: ['body', 19],
        msg: 'JSON decode error',
        input: {},
        ctx: { error: expect.any(String) },
      },
    ]);
    const array = await admin(app, 'POST', '/team/new', '[1,2]');
    expect(array.status).toBe(422);
    expect(array.body.detail).toEqual([
      {
        type: 'model_attributes_type',
        loc: ['body'],
        msg: 'Input should be a valid dictionary or object to extract fields from',
        input: [1, 2],
      },
    ]);
    expect((await admin(app, 'POST', '/team/new', '"x"')).body.detail[0].input).toBe('x');
    expect((await admin(app, 'GET', '/team/info?team_id=x')).status).toBe(404);
  });

  it('answers 401 without the master key or with a wrong one, 403 to a virtual key on admin routes', async () => {
    const noAuth = await admin(app, 'POST', '/team/new', { team_alias: 'x' }, null);
    expect(noAuth.status).toBe(401);
    expect(noAuth.body.error.type).toBe('auth_error');
    const wrong = await admin(app, 'POST', '/team/new', { team_alias: 'x' }, 'sk-master-wrong');
    expect(wrong.status).toBe(401);
    const key = await admin(app, 'POST', '/key/generate', {});
    const asKey = await admin(app, 'POST', '/team/new', { team_alias: 'x' }, key.body.key);
    expect(asKey.status).toBe(403);
    expect(asKey.body.error).toMatchObject({ type: 'auth_error', code: '403' });
    expect((await admin(app, 'GET', '/team/info?team_id=x')).status).toBe(404);
  });

  it('rejects a duplicate id with 409 and keeps the first', async () => {
    expect((await admin(app, 'POST', '/team/new', { team_id: 'ops', max_budget: 5 })).status).toBe(200);
    const dup = await admin(app, 'POST', '/team/new', { team_id: 'ops', max_budget: 7 });
    expect(dup.status).toBe(409);
    expect((await admin(app, 'GET', '/team/info?team_id=ops')).body.team_info.max_budget).toBe(5);
  });

  it('validates /spend/logs dates', async () => {
    const res = await admin(app, 'GET', '/spend/logs?start_date=yesterday');
    expect(res.status).toBe(422);
    expect(res.body.detail).toEqual([
      expect.objectContaining({ type: 'value_error', loc: ['query', 'start_date'], input: 'yesterday' }),
    ]);
    expect(res.body.detail[0].msg).toMatch(/^Value error, must be a date/);
  });
});
