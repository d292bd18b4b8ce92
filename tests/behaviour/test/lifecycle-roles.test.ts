import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp, untilRefused } from './harness.js';

const chat = JSON.stringify({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: 'hi' }],
  max_tokens: 5,
});

async function call(app: TestApp, key: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: chat,
  });
  return { status: res.status, body: await res.json() };
}

/** Every refusal is LiteLLM's JSON error with this status. */
function expectRefused(res: { status: number; body: any }, status: 401 | 403, what = ''): void {
  expect(res.status, what).toBe(status);
  expect(res.body.error).toMatchObject({ type: 'auth_error', code: String(status) });
  expect(res.body.error).toHaveProperty('param'); // null, or the field refused
  expect(typeof res.body.error.message).toBe('string');
}

describe.each(ADAPTERS)('key, team and user lifecycle and roles on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });
  let now = new Date('2026-04-01T10:00:00.000Z');
  const clock = () => now;
  const start = async (dbPath?: string) => {
    const app = await startTestApp(framework, { now: clock, dbPath });
    apps.push(app);
    return app;
  };

  it('regenerates a key: both secrets work during the grace period on every instance, only the new one after, on one budget', async () => {
    now = new Date('2026-04-01T10:00:00.000Z');
    const a = await start();
    const b = await start(a.dbPath);
    await admin(a, 'POST', '/team/new', { team_id: 'web', max_budget: 100 });
    await admin(a, 'POST', '/user/new', { user_id: 'dev', team_id: 'web', auto_create_key: false });
    const old = (
      await admin(a, 'POST', '/key/generate', {
        user_id: 'dev',
        team_id: 'web',
        max_budget: 5,
        key_alias: 'ci',
      })
    ).body;
    expect((await call(a, old.key)).status).toBe(200);
    expect((await call(b, old.key)).status).toBe(200); // b has the old secret cached now

    const regen = await admin(a, 'POST', '/key/regenerate', { key: old.key, grace_period: '24h' });
    expect(regen.status).toBe(200);
    const fresh = regen.body;
    expect(fresh.key).toMatch(/^sk-/);
    expect(fresh.key).not.toBe(old.key);
    // The same key record: its id, alias, user, team and budget stay; only the secret changes.
    expect(fresh).toMatchObject({
      token: old.token,
      key_alias: 'ci',
      user_id: 'dev',
      team_id: 'web',
      max_budget: 5,
    });
    expect(fresh.key_name).toBe(`sk-...${fresh.key.slice(-4)}`);
    expect(fresh.previous_key_valid_until).toBe('2026-04-02T10:00:00.000Z');
    const spendBefore = fresh.spend;

    for (const app of [a, b]) {
      expect((await call(app, old.key)).status).toBe(200);
      expect((await call(app, fresh.key)).status).toBe(200);
    }
    // Calls made with either secret spend on the one counter and are logged under the key's id.
    for (const app of [a, b]) await app.settled();
    const logs = (await admin(a, 'GET', `/spend/logs?api_key=${old.token}`)).body;
    expect(logs).toHaveLength(6);
    expect(new Set(logs.map((l: any) => l.api_key))).toEqual(new Set([old.token]));
    const info = await admin(a, 'GET', `/key/info?key=${encodeURIComponent(fresh.key)}`);
    expect(info.body.key).toBe(old.token);
    expect(info.body.info.spend).toBeGreaterThan(spendBefore);
    const logged = logs.reduce((sum: number, l: any) => sum + Math.round(l.spend * 1e9), 0);
    expect(Math.round(info.body.info.spend * 1e9)).toBe(logged);
    const ownSpend = await admin(a, 'GET', '/key/info', undefined, old.key); // a key reads itself in grace too
    expect(ownSpend.body.info.spend).toBe(info.body.info.spend);

    now = new Date('2026-04-02T10:00:00.000Z'); // the grace period is over
    // a changed the key itself; b may have served the old secret from a cache entry made before the
    // regeneration until the change reaches it (SQLite: polled every 250 ms).
    expectRefused(await call(a, old.key), 401);
    expectRefused(await untilRefused(() => call(b, old.key)), 401);
    for (const app of [a, b]) expect((await call(app, fresh.key)).status).toBe(200);
    expect((await admin(a, 'GET', `/key/info?key=${encodeURIComponent(old.key)}`)).status).toBe(404);
    expectRefused(await admin(a, 'GET', '/key/info', undefined, old.key), 401);

    // LiteLLM's path form, without a grace period: the replaced secret stops at once, here and on b.
    const third = await admin(a, 'POST', `/key/${encodeURIComponent(fresh.key)}/regenerate`, {});
    expect(third.status).toBe(200);
    expect(third.body.token).toBe(old.token);
    expectRefused(await call(a, fresh.key), 401);
    expectRefused(await untilRefused(() => call(b, fresh.key)), 401);
    expect((await call(b, third.body.key)).status).toBe(200);
  });

  it('expires a key by the duration /key/update sets', async () => {
    now = new Date('2026-04-01T10:00:00.000Z');
    const a = await start();
    const key = (await admin(a, 'POST', '/key/generate', {})).body;
    const updated = await admin(a, 'POST', '/key/update', { key: key.key, duration: '1h' });
    expect(updated.body.expires).toBe('2026-04-01T11:00:00.000Z');
    expect((await call(a, key.key)).status).toBe(200);
    now = new Date('2026-04-01T11:00:00.000Z');
    // LiteLLM's answer to an expired key: 400 `expired_key`, not 401.
    const expired = await call(a, key.key);
    expect(expired.status).toBe(400);
    expect(expired.body.error).toMatchObject({ type: 'expired_key', code: '400', param: null });
    expect(expired.body.error.message).toMatch(/^Authentication Error - Expired Key\./);
  });

  it('lists keys with filters and pages', async () => {
    const a = await start();
    await admin(a, 'POST', '/team/new', { team_id: 'ta' });
    await admin(a, 'POST', '/team/new', { team_id: 'tb' });
    await admin(a, 'POST', '/user/new', { user_id: 'ann', team_id: 'ta', auto_create_key: false });
    for (let i = 0; i < 5; i++)
      await admin(a, 'POST', '/key/generate', { team_id: 'ta', key_alias: `k${i}` });
    await admin(a, 'POST', '/key/generate', { team_id: 'tb' });
    await admin(a, 'POST', '/key/generate', { user_id: 'ann', team_id: 'ta' });
    const page2 = (await admin(a, 'GET', '/key/list?team_id=ta&size=2&page=2')).body;
    expect(page2).toMatchObject({ total_count: 6, current_page: 2, total_pages: 3 });
    expect(page2.keys).toHaveLength(2);
    const all = (await admin(a, 'GET', '/key/list?team_id=ta&size=100&return_full_object=true')).body.keys;
    // Keys made at the same instant list in a fixed order (by id), the same on every page.
    expect(all.map((k: any) => k.key_alias).sort()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4', null]);
    expect(page2.keys).toEqual(all.slice(2, 4).map((k: any) => k.token));
    const byAlias = (await admin(a, 'GET', '/key/list?key_alias=k3&return_full_object=true')).body;
    expect(byAlias.keys.map((k: any) => k.key_alias)).toEqual(['k3']);
    expect((await admin(a, 'GET', '/key/list?user_id=ann')).body.total_count).toBe(1);
    expect((await admin(a, 'GET', '/key/list')).body).toMatchObject({ total_count: 7, total_pages: 1 });
    const bad = await admin(a, 'GET', '/key/list?size=0');
    expect(bad.status).toBe(422);
    expect(bad.body.detail).toEqual([
      {
        type: 'greater_than_equal',
        loc: ['query', 'size'],
        msg: 'Input should be greater than or equal to 1',
        input: '0',
      },
    ]);
  });

  it('updates, lists and deletes teams, members and users; deleting one deletes its keys and keeps its logs', async () => {
    now = new Date('2026-04-01T10:00:00.000Z');
    const a = await start();
    await admin(a, 'POST', '/team/new', { team_id: 't1', team_alias: 'web', max_budget: 100 });
    await admin(a, 'POST', '/team/new', { team_id: 't2' });
    const u1 = (await admin(a, 'POST', '/user/new', { user_id: 'u1', team_id: 't1' })).body;
    await admin(a, 'POST', '/user/new', { user_id: 'u2', auto_create_key: false });

    const upd = await admin(a, 'POST', '/team/update', {
      team_id: 'web',
      team_alias: 'frontend',
      max_budget: 200,
    });
    expect(upd.status).toBe(200);
    expect(upd.body.data).toMatchObject({ team_id: 't1', team_alias: 'frontend', max_budget: 200 });
    expect(upd.body.data.members_with_roles).toEqual([{ user_id: 'u1', user_email: null, role: 'user' }]);
    expect((await admin(a, 'GET', '/team/list')).body.map((t: any) => t.team_id)).toEqual(['t1', 't2']);
    expect((await admin(a, 'GET', '/team/list?user_id=u1')).body.map((t: any) => t.team_id)).toEqual(['t1']);

    const added = await admin(a, 'POST', '/team/member_add', {
      team_id: 't2',
      member: [{ user_id: 'u2', role: 'admin' }, { user_email: 'new@acme.com' }],
      max_budget_in_team: 3,
    });
    expect(added.status).toBe(200);
    expect(added.body.updated_team_memberships).toHaveLength(2);
    expect(added.body.updated_team_memberships[0]).toEqual({
      team_id: 't2',
      user_id: 'u2',
      max_budget_in_team: 3,
      rpm_limit: null,
      tpm_limit: null,
      max_parallel_requests: null,
    });
    expect(added.body.members_with_roles).toEqual(
      expect.arrayContaining([
        { user_id: 'u2', user_email: null, role: 'admin' },
        { user_id: added.body.updated_users[1].user_id, user_email: 'new@acme.com', role: 'user' },
      ]),
    );
    expect(added.body.members_with_roles).toHaveLength(2);
    const dup = await admin(a, 'POST', '/team/member_add', { team_id: 't2', member: { user_id: 'u2' } });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe('409');
    const badRole = await admin(a, 'POST', '/team/member_add', {
      team_id: 't2',
      member: { user_id: 'u1', role: 'owner' },
    });
    expect(badRole.status).toBe(422);
    expect(badRole.body.detail[0]).toMatchObject({ type: 'literal_error', loc: ['body', 'member', 'role'] });
    expect((await admin(a, 'GET', '/team/info?team_id=t2')).body.team_info.members_with_roles).toHaveLength(
      2,
    );

    const mu = await admin(a, 'POST', '/team/member_update', {
      team_id: 't2',
      user_id: 'u2',
      role: 'user',
      max_budget_in_team: 4,
    });
    expect(mu.body).toMatchObject({
      team_id: 't2',
      user_id: 'u2',
      role: 'user',
      max_budget_in_team: 4,
      spend: 0,
    });
    const t2 = (await admin(a, 'GET', '/team/info?team_id=t2')).body;
    expect(t2.team_memberships.find((m: any) => m.user_id === 'u2')).toMatchObject({
      role: 'user',
      max_budget_in_team: 4,
    });

    const u2key = (await admin(a, 'POST', '/key/generate', { user_id: 'u2', team_id: 't2' })).body;
    expect((await call(a, u2key.key)).status).toBe(200);
    const md = await admin(a, 'POST', '/team/member_delete', { team_id: 't2', user_id: 'u2' });
    expect(md.body).toEqual({ team_id: 't2', user_id: 'u2', deleted_keys: [u2key.token] });
    expectRefused(await call(a, u2key.key), 401);
    expect((await admin(a, 'GET', '/user/info?user_id=u2')).body.user_info.teams).toEqual([]);
    expect((await admin(a, 'POST', '/team/member_delete', { team_id: 't2', user_id: 'u2' })).status).toBe(
      404,
    );

    const uu = await admin(a, 'POST', '/user/update', {
      user_id: 'u1',
      user_email: 'u1@acme.com',
      max_budget: 9,
    });
    expect(uu.body).toMatchObject({ user_id: 'u1', user_email: 'u1@acme.com', max_budget: 9, teams: ['t1'] });
    const byEmail = await admin(a, 'POST', '/user/update', {
      user_email: 'u1@acme.com',
      user_role: 'internal_user_viewer',
    });
    expect(byEmail.body).toMatchObject({ user_id: 'u1', user_role: 'internal_user_viewer' });
    const list = (await admin(a, 'GET', '/user/list?page=1&page_size=2')).body;
    expect(list).toMatchObject({ total: 3, page: 1, page_size: 2, total_pages: 2 });
    expect(list.users).toHaveLength(2);
    const rest = (await admin(a, 'GET', '/user/list?page=2&page_size=2')).body.users;
    expect([...list.users, ...rest].map((u: any) => u.user_id).sort()).toEqual(
      ['u1', 'u2', added.body.updated_users[1].user_id].sort(),
    );
    expect((await admin(a, 'GET', '/user/list?team=t1')).body.users.map((u: any) => u.user_id)).toEqual([
      'u1',
    ]);

    // A user's keys go with the user; its spend logs stay.
    expect((await call(a, u1.key)).status).toBe(200);
    const ud = await admin(a, 'POST', '/user/delete', { user_ids: ['u1'] });
    expect(ud.body).toEqual({ deleted_users: ['u1'], deleted_keys: [u1.token] });
    expectRefused(await call(a, u1.key), 401);
    expect((await admin(a, 'GET', '/user/info?user_id=u1')).status).toBe(404);
    expect((await admin(a, 'GET', '/spend/logs?user_id=u1')).body).toHaveLength(1);
    expect((await admin(a, 'POST', '/user/delete', { user_ids: ['u1'] })).status).toBe(404);

    // A team's keys go with the team; its spend logs stay; a missing id deletes nothing.
    const tkey = (await admin(a, 'POST', '/key/generate', { team_id: 't2' })).body;
    expect((await call(a, tkey.key)).status).toBe(200);
    expect((await admin(a, 'POST', '/team/delete', { team_ids: ['t2', 'nope'] })).status).toBe(404);
    expect((await call(a, tkey.key)).status).toBe(200);
    const td = await admin(a, 'POST', '/team/delete', { team_ids: ['t2'] });
    expect(td.body).toEqual({ deleted_teams: ['t2'], deleted_keys: [tkey.token] });
    expectRefused(await call(a, tkey.key), 401);
    expect((await admin(a, 'GET', '/team/info?team_id=t2')).status).toBe(404);
    expect((await admin(a, 'GET', `/spend/logs?api_key=${tkey.token}`)).body).toHaveLength(2);
    expect((await admin(a, 'GET', '/team/list')).body.map((t: any) => t.team_id)).toEqual(['t1']);
  });

  it('lets a team admin manage its own team only, a key read only itself, and refuses the rest with 401/403', async () => {
    const a = await start();
    await admin(a, 'POST', '/team/new', { team_id: 'ta' });
    await admin(a, 'POST', '/team/new', { team_id: 'tb' });
    for (const [user, team, role] of [
      ['alice', 'ta', 'admin'],
      ['bob', 'ta', 'user'],
      ['carol', 'tb', 'admin'],
    ] as const) {
      await admin(a, 'POST', '/user/new', { user_id: user, auto_create_key: false });
      await admin(a, 'POST', '/team/member_add', { team_id: team, member: { user_id: user, role } });
    }
    const keyOf = async (user: string, team: string) =>
      (await admin(a, 'POST', '/key/generate', { user_id: user, team_id: team })).body;
    await admin(a, 'POST', '/user/new', {
      user_id: 'dan',
      user_email: 'dan@acme.com',
      auto_create_key: false,
    });
    const alice = await keyOf('alice', 'ta');
    const bob = await keyOf('bob', 'ta');
    const carol = await keyOf('carol', 'tb');
    const as = (key: string, method: string, path: string, body?: unknown) =>
      admin(a, method, path, body, key);

    // The team admin manages its team: info, update, members (users the master key created), keys.
    expect((await as(alice.key, 'GET', '/team/info?team_id=ta')).status).toBe(200);
    expect(
      (await as(alice.key, 'POST', '/team/update', { team_id: 'ta', metadata: { cost_center: 7 } })).status,
    ).toBe(200);
    expect(
      (
        await as(alice.key, 'POST', '/team/member_add', {
          team_id: 'ta',
          member: { user_email: 'dan@acme.com' },
        })
      ).status,
    ).toBe(200);
    expect(
      (
        await as(alice.key, 'POST', '/team/member_update', {
          team_id: 'ta',
          user_id: 'bob',
          max_budget_in_team: 2,
        })
      ).status,
    ).toBe(200);
    const made = await as(alice.key, 'POST', '/key/generate', { team_id: 'ta', user_id: 'bob' });
    expect(made.status).toBe(200);
    expect(made.body.team_id).toBe('ta');
    expect((await as(alice.key, 'POST', '/key/block', { key: bob.token })).body.blocked).toBe(true);
    expect((await as(alice.key, 'POST', '/key/unblock', { key: bob.token })).status).toBe(200);
    expect((await as(alice.key, 'POST', '/key/update', { key: bob.token, max_budget: 1 })).status).toBe(200);
    expect((await as(alice.key, 'GET', `/key/info?key=${bob.token}`)).status).toBe(200);
    expect((await as(alice.key, 'POST', '/key/regenerate', { key: made.body.token })).status).toBe(200);
    expect((await as(alice.key, 'POST', '/key/delete', { keys: [made.body.token] })).status).toBe(200);
    const listed = (await as(alice.key, 'GET', '/key/list?return_full_object=true')).body;
    expect(new Set(listed.keys.map((k: any) => k.team_id))).toEqual(new Set(['ta']));
    expect(listed.total_count).toBe(2);
    expect((await as(alice.key, 'GET', '/spend/logs?team_id=ta')).status).toBe(200);

    // ...but not another team, keys outside its teams, or global routes: 403, and nothing changes.
    for (const [method, path, body] of [
      ['GET', '/team/info?team_id=tb'],
      ['GET', '/team/info?team_id=no-such-team'],
      ['POST', '/team/update', { team_id: 'tb', max_budget: 1000 }],
      ['POST', '/team/member_add', { team_id: 'tb', member: { user_id: 'alice' } }],
      ['POST', '/team/member_update', { team_id: 'tb', user_id: 'carol', role: 'user' }],
      ['POST', '/team/member_delete', { team_id: 'tb', user_id: 'carol' }],
      ['POST', '/key/generate', { team_id: 'tb' }],
      ['POST', '/key/generate', {}],
      ['POST', '/key/generate', { team_id: 'ta', user_id: 'carol' }],
      ['POST', '/key/update', { key: carol.token, max_budget: 1000 }],
      ['POST', '/key/block', { key: carol.token }],
      ['POST', '/key/delete', { keys: [carol.token] }],
      ['POST', '/key/regenerate', { key: carol.token }],
      ['POST', `/key/${carol.token}/regenerate`],
      ['GET', `/key/info?key=${carol.token}`],
      ['GET', '/key/list?team_id=tb'],
      ['GET', `/spend/logs?api_key=${carol.token}`],
      ['POST', '/team/new', { team_alias: 'mine' }],
      ['POST', '/team/delete', { team_ids: ['tb'] }],
      ['GET', '/team/list'],
      ['POST', '/user/new', { user_id: 'eve' }],
      ['POST', '/team/member_add', { team_id: 'ta', member: { user_email: 'eve@acme.com' } }],
      ['POST', '/user/update', { user_id: 'carol', max_budget: 0 }],
      ['POST', '/user/delete', { user_ids: ['carol'] }],
      ['GET', '/user/list'],
      ['GET', '/user/info?user_id=carol'],
      ['GET', '/spend/tags'],
      ['GET', '/global/spend/report?start_date=2026-01-01&end_date=2026-12-31'],
    ] as const) {
      expectRefused(await as(alice.key, method, path, body), 403, `${method} ${path}`);
    }
    expect((await admin(a, 'GET', '/team/info?team_id=tb')).body.team_info.max_budget).toBeNull();
    expect((await admin(a, 'GET', `/key/info?key=${carol.token}`)).body.info).toMatchObject({
      blocked: false,
      max_budget: null,
    });
    expect((await call(a, carol.key)).status).toBe(200);

    // A plain key reads its own info and spend, and nothing else.
    expect((await as(bob.key, 'GET', '/key/info')).body.key).toBe(bob.token);
    expect((await as(bob.key, 'GET', `/key/info?key=${bob.token}`)).status).toBe(200);
    expect((await call(a, bob.key)).status).toBe(200);
    const own = await as(bob.key, 'GET', '/spend/logs');
    expect(own.status).toBe(200);
    expect(own.body.map((l: any) => l.api_key)).toEqual([bob.token]);
    for (const [method, path, body] of [
      ['GET', `/key/info?key=${alice.token}`],
      ['GET', '/key/list'],
      ['GET', '/key/list?user_id=bob'],
      ['GET', '/team/info?team_id=ta'],
      ['GET', '/team/info?team_id=tb'],
      ['GET', `/spend/logs?api_key=${carol.token}`],
      ['GET', '/spend/logs?team_id=ta'],
      ['POST', '/key/generate', { team_id: 'ta' }],
      ['POST', '/key/update', { key: bob.token, max_budget: 1000 }],
      ['POST', '/team/member_add', { team_id: 'ta', member: { user_id: 'bob', role: 'admin' } }],
    ] as const) {
      expectRefused(await as(bob.key, method, path, body), 403, `${method} ${path}`);
    }
    // No credential, a wrong one, a deleted key: 401.
    expectRefused(await admin(a, 'GET', '/key/list', undefined, null), 401);
    expectRefused(await admin(a, 'GET', '/key/info', undefined, 'sk-not-a-real-key-0000000000'), 401);
    expectRefused(await admin(a, 'GET', '/key/info', undefined, 'not-even-sk'), 401);
    await admin(a, 'POST', '/key/block', { key: bob.token });
    expectRefused(await as(bob.key, 'GET', '/key/info'), 401);

    // Demoted, the former team admin loses its rights at its next call.
    await admin(a, 'POST', '/team/member_update', { team_id: 'ta', user_id: 'alice', role: 'user' });
    expectRefused(await as(alice.key, 'GET', '/team/info?team_id=ta'), 403);
    expect((await as(alice.key, 'GET', '/key/info')).status).toBe(200);
  });
});
