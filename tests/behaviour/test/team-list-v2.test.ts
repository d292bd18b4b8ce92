import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/** LiteLLM's `GET /v2/team/list`: its paged shape, filters and order (its list_team_v2). */

const T0 = Date.parse('2026-05-04T10:00:00Z');
const ids = (body: { teams: Array<{ team_id: string }> }) => body.teams.map((t) => t.team_id);

describe.each(ADAPTERS)('GET /v2/team/list on $name', (framework) => {
  let app: TestApp;
  let m: (path: string, auth?: string | null) => Promise<any>;
  let annKey: string;
  let loneKey: string;

  beforeEach(async () => {
    const clock = { now: T0 };
    app = await startTestApp(framework, { now: () => new Date(clock.now) });
    const post = (path: string, body: unknown) => admin(app, 'POST', path, body);
    m = (path, auth) => admin(app, 'GET', path, undefined, auth);
    await post('/user/new', { user_id: 'ann', auto_create_key: false });
    await post('/user/new', { user_id: 'bob', auto_create_key: false });
    // One second apart, so that "newest first" is a known order: g3, b2, a1.
    await post('/team/new', { team_id: 'a1', team_alias: 'alpha web', max_budget: 10 });
    clock.now += 1000;
    await post('/team/new', { team_id: 'b2', team_alias: 'beta' });
    clock.now += 1000;
    await post('/team/new', { team_id: 'g3', team_alias: 'gamma web' });
    await post('/team/member_add', { team_id: 'a1', member: { user_id: 'ann', role: 'admin' } });
    await post('/team/member_add', { team_id: 'g3', member: { user_id: 'ann', role: 'user' } });
    annKey = (await post('/key/generate', { user_id: 'ann', team_id: 'a1' })).body.key;
    loneKey = (await post('/key/generate', {})).body.key;
  });
  afterEach(async () => {
    await app.close();
  });

  it('pages every team for the master key, newest first, in LiteLLM’s shape', async () => {
    const all = await m('/v2/team/list');
    expect(all.status).toBe(200);
    expect(ids(all.body)).toEqual(['g3', 'b2', 'a1']);
    expect(all.body).toMatchObject({ total: 3, page: 1, page_size: 10, total_pages: 1 });
    expect(all.body.teams[2]).toMatchObject({
      team_id: 'a1',
      team_alias: 'alpha web',
      max_budget: 10,
      members_with_roles: [{ user_id: 'ann', role: 'admin' }],
    });
    // 3 teams, 2 a page: 2 pages (3 / 2 rounded up); the second holds the oldest.
    const second = await m('/v2/team/list?page=2&page_size=2');
    expect(ids(second.body)).toEqual(['a1']);
    expect(second.body).toMatchObject({ total: 3, page: 2, page_size: 2, total_pages: 2 });
    const beyond = await m('/v2/team/list?page=3&page_size=2');
    expect(beyond.body).toMatchObject({ teams: [], total: 3, total_pages: 2 });
  });

  it('filters by user_id, team_id and part of team_alias (any case), and sorts as asked', async () => {
    expect(ids((await m('/v2/team/list?team_alias=WEB')).body)).toEqual(['g3', 'a1']);
    expect(ids((await m('/v2/team/list?team_id=b2')).body)).toEqual(['b2']);
    expect(ids((await m('/v2/team/list?user_id=ann')).body)).toEqual(['g3', 'a1']);
    expect(ids((await m('/v2/team/list?sort_by=team_alias')).body)).toEqual(['a1', 'b2', 'g3']);
    expect(ids((await m('/v2/team/list?sort_by=team_id&sort_order=desc')).body)).toEqual(['g3', 'b2', 'a1']);
    expect(ids((await m('/v2/team/list?sort_by=created_at')).body)).toEqual(['a1', 'b2', 'g3']);
    const notMember = await m('/v2/team/list?user_id=ann&team_id=b2');
    expect(notMember.status).toBe(404);
    expect(notMember.body.error.message).toBe('User is not a member of team_id=b2');
    const noUser = await m('/v2/team/list?user_id=nobody');
    expect(noUser.status).toBe(404);
    expect(noUser.body.error.message).toBe('User not found, passed user_id=nobody');
  });

  it('shows any other key only its own user’s teams', async () => {
    const own = await m('/v2/team/list', annKey);
    expect(own.status).toBe(200);
    expect(ids(own.body)).toEqual(['g3', 'a1']);
    expect((await m('/v2/team/list?user_id=ann', annKey)).status).toBe(200);
    const other = await m('/v2/team/list?user_id=bob', annKey);
    expect(other.status).toBe(403);
    expect(other.body.error.param).toBe('user_id');
    expect((await m('/v2/team/list', loneKey)).status).toBe(403);
    expect((await m('/v2/team/list', null)).status).toBe(401);
  });

  it('refuses what it does not act on (400) and values its schema refuses (422), naming them', async () => {
    const unknown = await m('/v2/team/list?organization_id=org-1');
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.param).toBe('organization_id');
    for (const [query, param, type] of [
      ['sort_by=spend', 'sort_by', 'literal_error'],
      ['sort_order=up', 'sort_order', 'literal_error'],
      ['page_size=101', 'page_size', 'less_than_equal'],
      ['page=0', 'page', 'greater_than_equal'],
    ] as const) {
      const res = await m(`/v2/team/list?${query}`);
      expect(res.status, query).toBe(422);
      expect(res.body.detail, query).toEqual([
        expect.objectContaining({ type, loc: ['query', param], input: query.split('=')[1] }),
      ]);
    }
  });
});
