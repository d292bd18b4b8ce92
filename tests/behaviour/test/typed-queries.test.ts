import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

describe.each(ADAPTERS)('typed queries on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('guard.keys, guard.teams and guard.users answer what the management API answers', async () => {
    app = await startTestApp(framework);
    await admin(app, 'POST', '/team/new', { team_id: 't-1', team_alias: 'frontend', max_budget: 50 });
    await admin(app, 'POST', '/team/new', { team_id: 't-2', team_alias: 'backend' });
    await admin(app, 'POST', '/user/new', {
      user_id: 'alice',
      team_id: 't-1',
      max_budget: 20,
      auto_create_key: false,
    });
    const key = (
      await admin(app, 'POST', '/key/generate', {
        user_id: 'alice',
        team_id: 't-1',
        key_alias: 'chat',
        max_budget: 5,
      })
    ).body.key as string;
    const other = (await admin(app, 'POST', '/key/generate', { team_id: 't-2' })).body.key as string;
    const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 }),
    });
    expect(res.status).toBe(200);
    await res.text();
    await app.settled();

    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    const byKey = await app.guard.keys.get(key);
    expect(byKey).toMatchObject({ tokenHash: info.token, keyAlias: 'chat', userId: 'alice', teamId: 't-1' });
    expect(byKey!.budget).toMatchObject({ maxBudget: 5, spend: info.spend });
    expect(info.spend).toBeGreaterThan(0);
    expect((await app.guard.keys.get(info.token))!.tokenHash).toBe(info.token);
    expect(await app.guard.keys.get('sk-nobody-has-this-key-0000')).toBeNull();

    const teamKeys = await app.guard.keys.list({ teamId: 't-1' });
    expect(teamKeys.map((k) => k.keyAlias)).toEqual(['chat']);
    expect((await app.guard.keys.list()).length).toBe(2);
    expect((await app.guard.keys.list({ teamId: 't-2' }))[0]!.tokenHash).not.toBe(info.token);
    expect(other).toMatch(/^sk-/);

    const team = await app.guard.teams.get('frontend');
    expect(team).toMatchObject({ teamId: 't-1', teamAlias: 'frontend' });
    expect(team!.budget).toMatchObject({ maxBudget: 50, spend: info.spend });
    expect((await app.guard.teams.list()).map((t) => t.teamId)).toEqual(['t-1', 't-2']);
    expect((await app.guard.teams.list({ userId: 'alice' })).map((t) => t.teamId)).toEqual(['t-1']);
    expect(await app.guard.teams.get('nope')).toBeNull();

    const alice = await app.guard.users.get('alice');
    expect(alice).toMatchObject({ userId: 'alice', teams: ['t-1'] });
    expect(alice!.budget).toMatchObject({ maxBudget: 20, spend: info.spend });
    expect((await app.guard.users.list({ teamId: 't-1' })).map((u) => u.userId)).toEqual(['alice']);
    expect(await app.guard.users.list({ teamId: 't-2' })).toEqual([]);
    expect(await app.guard.users.get('nobody')).toBeNull();
  });
});
