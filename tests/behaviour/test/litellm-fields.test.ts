import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * Issue 16: no LiteLLM field is accepted and dropped. Each field the issue found dropped either acts
 * (shown by what it does) or is refused with a 400 naming it; LiteLLM's do-nothing defaults pass.
 */

async function chat(
  app: TestApp,
  key: string,
  body: Record<string, unknown> = {},
): Promise<{ status: number; body: any }> {
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
  return { status: res.status, body: await res.json() };
}

function expectRefused(r: { status: number; body: any }, param: string, why: RegExp): void {
  expect(r.status).toBe(400);
  expect(r.body.error.param).toBe(param);
  expect(r.body.error.type).toBe('invalid_request_error');
  expect(r.body.error.message).toMatch(why);
}

describe.each(ADAPTERS)('LiteLLM request fields on $name', (framework) => {
  let app: TestApp;
  beforeEach(async () => {
    app = await startTestApp(framework);
  });
  afterEach(async () => {
    await app.close();
  });

  it('refuses a field no route takes (a typo) with 400 naming it, and writes nothing', async () => {
    const r = await admin(app, 'POST', '/key/generate', { key_alias: 'typo', max_budgt: 5 });
    expectRefused(r, 'max_budgt', /max_budgt is not a field this route takes; it takes .*max_budget/);
    expect((await admin(app, 'GET', '/key/list')).body.total_count).toBe(0);
    const nested = await admin(app, 'POST', '/key/generate', {
      budget_limits: [{ budget_duration: '1d', max_budget: 1, reset: true }],
    });
    expect(nested.status).toBe(400);
    expect(nested.body.error.message).toMatch(/budget_limits\.0/);
    expect((await admin(app, 'GET', '/key/list')).body.total_count).toBe(0);
  });

  it("accepts LiteLLM's do-nothing defaults, as LiteLLM's clients send them", async () => {
    const r = await admin(app, 'POST', '/key/generate', {
      key_alias: 'from-the-sdk',
      spend: 0,
      allowed_cache_controls: [],
      config: {},
      permissions: {},
      aliases: {},
      guardrails: null,
      key_type: 'default',
      send_invite_email: false,
      auto_rotate: false,
      organization_id: null,
    });
    expect(r.status).toBe(200);
    expect(r.body.key_alias).toBe('from-the-sdk');
    const team = await admin(app, 'POST', '/team/new', {
      team_alias: 't',
      admins: [],
      members: [],
      tags: [],
    });
    expect(team.status).toBe(200);
  });

  it('refuses each field it cannot act on with 400 naming it and why', async () => {
    await admin(app, 'POST', '/team/new', { team_id: 'eng' });
    const cases: Array<[string, unknown, string, RegExp]> = [
      ['/key/generate', { budget_id: 'tier-1' }, 'budget_id', /Budget not found/],
      ['/user/new', { user_id: 'u', budget_id: 'tier-1' }, 'budget_id', /users and teams take no budget_id/],
      ['/team/new', { budget_id: 'tier-1' }, 'budget_id', /users and teams take no budget_id/],
      // On end users budget_id is taken (budget-tiers.test.ts); one that does not exist is refused.
      ['/customer/new', { user_id: 'c', budget_id: 'tier-1' }, 'budget_id', /Budget not found/],
      ['/key/generate', { permissions: { get_spend_routes: true } }, 'permissions', /take no permissions/],
      ['/customer/new', { user_id: 'c', allowed_model_region: 'eu' }, 'allowed_model_region', /region/],
      ['/customer/new', { user_id: 'c', default_model: 'gpt-4o' }, 'default_model', /default model/],
      ['/tag/new', { name: 'prod', models: ['gpt-4o'] }, 'models', /routes nothing/],
      ['/key/generate', { key_type: 'llm_api' }, 'key_type', /one kind of key/],
      ['/team/update', { team_id: 'eng', tags: ['a'] }, 'tags', /team tags/],
      ['/key/regenerate', { key: 'sk-nope', spend: 3 }, 'spend', /alone/],
    ];
    for (const [path, body, param, why] of cases) {
      expectRefused(await admin(app, 'POST', path, body), param, why);
    }
    // Nothing of them was written.
    expect((await admin(app, 'GET', '/key/list')).body.total_count).toBe(0);
    expect((await admin(app, 'GET', '/customer/info?end_user_id=c')).status).toBe(404);
    expect((await admin(app, 'GET', '/user/info?user_id=u')).status).toBe(404);
    const summarize = await admin(app, 'GET', '/spend/logs?summarize=true');
    expectRefused(summarize, 'summarize', /needs start_date and end_date/);
    expect((await admin(app, 'GET', '/spend/logs?summarize=false')).status).toBe(200);
    expectRefused(await admin(app, 'GET', '/spend/logs?summarise=true'), 'summarise', /not a field/);
  });

  it('members_with_roles on /team/new makes them members (users created when new), in one write', async () => {
    await admin(app, 'POST', '/user/new', { user_id: 'alice', auto_create_key: false });
    const r = await admin(app, 'POST', '/team/new', {
      team_id: 'eng',
      members_with_roles: [
        { user_id: 'alice', role: 'admin' },
        { user_email: 'bob@acme.com', role: 'user' },
      ],
    });
    expect(r.status).toBe(200);
    expect(r.body.members_with_roles).toEqual([
      { user_id: 'alice', user_email: null, role: 'admin' },
      { user_id: expect.any(String), user_email: 'bob@acme.com', role: 'user' },
    ]);
    const info = await admin(app, 'GET', '/team/info?team_id=eng');
    expect(info.body.team_info.members_with_roles).toHaveLength(2);
    expect((await admin(app, 'GET', '/user/info?user_id=alice')).body.user_info.teams).toEqual(['eng']);
    // alice is the team's admin now: her key manages the team.
    const aliceKey = (await admin(app, 'POST', '/key/generate', { user_id: 'alice', team_id: 'eng' })).body
      .key;
    expect((await admin(app, 'GET', '/team/info?team_id=eng', undefined, aliceKey)).status).toBe(200);

    // A member named twice, or a member with an unknown field: 400, and no team.
    const twice = await admin(app, 'POST', '/team/new', {
      team_id: 'ops',
      members_with_roles: [
        { user_id: 'carol', role: 'user' },
        { user_id: 'carol', role: 'admin' },
      ],
    });
    expectRefused(twice, 'members_with_roles', /twice/);
    const odd = await admin(app, 'POST', '/team/new', {
      team_id: 'ops',
      members_with_roles: [{ user_id: 'carol', role: 'user', budget: 3 }],
    });
    expect(odd.status).toBe(400);
    expect((await admin(app, 'GET', '/team/info?team_id=ops')).status).toBe(404);
    expect((await admin(app, 'GET', '/user/info?user_id=carol')).status).toBe(404);
  });

  it('blocked: true on /customer/new blocks the end user; /customer/update unblocks it', async () => {
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key;
    const created = await admin(app, 'POST', '/customer/new', { user_id: 'acme', blocked: true });
    expect(created.status).toBe(200);
    expect(created.body.blocked).toBe(true);
    const refused = await chat(app, key, { user: 'acme' });
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toBe('User blocked from making LLM API Calls. User=acme');
    expect((await admin(app, 'POST', '/customer/update', { user_id: 'acme', blocked: false })).status).toBe(
      200,
    );
    expect((await chat(app, key, { user: 'acme' })).status).toBe(200);
  });

  it("model_rpm_limit on a team limits the team's calls to that model", async () => {
    const team = await admin(app, 'POST', '/team/new', { team_id: 'eng', model_rpm_limit: { 'gpt-4o': 1 } });
    expect(team.status).toBe(200);
    expect(team.body.model_rpm_limit).toEqual({ 'gpt-4o': 1 });
    const a = (await admin(app, 'POST', '/key/generate', { team_id: 'eng' })).body.key;
    const b = (await admin(app, 'POST', '/key/generate', { team_id: 'eng' })).body.key;
    expect((await chat(app, a)).status).toBe(200);
    // The second key of the same team shares the team's one call a minute to gpt-4o.
    const second = await chat(app, b);
    expect(second.status).toBe(429);
    expect((await chat(app, b, { model: 'gpt-4o-mini' })).status).toBe(200);
    const updated = await admin(app, 'POST', '/team/update', {
      team_id: 'eng',
      model_tpm_limit: { 'gpt-4o': 5 },
    });
    expect(updated.body.data.model_tpm_limit).toEqual({ 'gpt-4o': 5 });
    expect(updated.body.data.model_rpm_limit).toEqual({ 'gpt-4o': 1 });
  });

  it("metadata.tags on a key are applied to the key's calls, like its tags", async () => {
    const key = (await admin(app, 'POST', '/key/generate', { metadata: { tags: ['project:alpha'] } })).body
      .key;
    expect((await chat(app, key)).status).toBe(200);
    const [log] = (await admin(app, 'GET', '/spend/logs')).body;
    expect(log.request_tags).toEqual(['project:alpha']);
    const bad = await admin(app, 'POST', '/key/generate', { metadata: { tags: 'project:alpha' } });
    expect(bad.status).toBe(422);
    expect(bad.body.detail[0]).toMatchObject({ type: 'value_error', loc: ['body', 'metadata'] });
    expect(bad.body.detail[0].msg).toMatch(/tags must be an array of strings/);
  });

  it('spend on /key/update and /user/update sets the spend, alone', async () => {
    await admin(app, 'POST', '/user/new', { user_id: 'alice', auto_create_key: false });
    const key = (await admin(app, 'POST', '/key/generate', { user_id: 'alice', max_budget: 10 })).body;
    const set = await admin(app, 'POST', '/key/update', { key: key.key, spend: 2.5 });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ key: key.token, spend: 2.5, max_budget: 10 });
    expect((await app.guard.budgets.remaining({ key: key.key }))?.spend).toBe(2.5);
    const mixed = await admin(app, 'POST', '/key/update', { key: key.key, spend: 0, max_budget: 20 });
    expectRefused(mixed, 'spend', /send max_budget in another call/);
    expect((await admin(app, 'GET', `/key/info?key=${key.token}`)).body.info).toMatchObject({
      spend: 2.5,
      max_budget: 10,
    });
    // A team admin may not lift its team's keys under their caps by lowering their spend.
    await admin(app, 'POST', '/team/new', { team_id: 'eng' });
    await admin(app, 'POST', '/team/member_add', {
      team_id: 'eng',
      member: { user_id: 'alice', role: 'admin' },
    });
    const teamKey = (await admin(app, 'POST', '/key/generate', { team_id: 'eng', max_budget: 1 })).body;
    await admin(app, 'POST', '/key/update', { key: teamKey.key, spend: 0.5 });
    const adminKey = (await admin(app, 'POST', '/key/generate', { user_id: 'alice', team_id: 'eng' })).body
      .key;
    const lifted = await admin(app, 'POST', '/key/update', { key: teamKey.key, spend: 0 }, adminKey);
    expect(lifted.status).toBe(403);
    expect(lifted.body.error.param).toBe('spend');
    expect((await app.guard.budgets.remaining({ key: teamKey.key }))?.spend).toBe(0.5);
    const user = await admin(app, 'POST', '/user/update', { user_id: 'alice', spend: 1 });
    expect(user.status).toBe(200);
    expect(user.body).toMatchObject({ user_id: 'alice', spend: 1 });
    expect((await app.guard.budgets.remaining({ user: 'alice' }))?.spend).toBe(1);
  });

  it('spend_logs_metadata (key and call) and litellm_session_id land on the spend log', async () => {
    const key = (
      await admin(app, 'POST', '/key/generate', {
        metadata: { spend_logs_metadata: { cost_center: 'c-1', env: 'prod' } },
      })
    ).body.key;
    const r = await chat(app, key, {
      litellm_session_id: 'session-42',
      metadata: { spend_logs_metadata: { env: 'staging', ticket: 7 } },
    });
    expect(r.status).toBe(200);
    const [log] = (await admin(app, 'GET', '/spend/logs')).body;
    expect(log.session_id).toBe('session-42');
    expect(log.metadata.spend_logs_metadata).toEqual({ cost_center: 'c-1', env: 'staging', ticket: 7 });
    expect(log).toMatchObject({ model_group: 'gpt-4o', cache_hit: 'False', api_base: null });
  });
});
