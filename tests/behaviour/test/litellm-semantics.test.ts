import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/** Issue 16's "semantics that differ": one test each, LiteLLM's answer expected. */

async function chat(app: TestApp, key: string, model = 'gpt-4o'): Promise<{ status: number; body: any }> {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
  });
  return { status: res.status, body: await res.json() };
}

describe.each(ADAPTERS)("LiteLLM's semantics on $name", (framework) => {
  let app: TestApp;
  let now = new Date('2026-04-01T10:00:00.000Z');
  beforeEach(async () => {
    now = new Date('2026-04-01T10:00:00.000Z');
    app = await startTestApp(framework, { now: () => now });
  });
  afterEach(async () => {
    await app.close();
  });

  it('an expired key is 400 expired_key', async () => {
    const key = (await admin(app, 'POST', '/key/generate', { duration: '1h' })).body.key;
    now = new Date('2026-04-01T11:00:00.000Z');
    const r = await chat(app, key);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ type: 'expired_key', code: '400' });
  });

  it('a model the key may not use is 401 key_model_access_denied, param model', async () => {
    const key = (await admin(app, 'POST', '/key/generate', { models: ['gpt-4o-mini'] })).body.key;
    const r = await chat(app, key);
    expect(r.status).toBe(401);
    expect(r.body.error).toMatchObject({ type: 'key_model_access_denied', param: 'model', code: '401' });
    expect((await chat(app, key, 'gpt-4o-mini')).status).toBe(200);
  });

  it('not found is 404 not_found_error', async () => {
    const r = await admin(app, 'GET', '/customer/info?end_user_id=nobody');
    expect(r.status).toBe(404);
    expect(r.body.error).toMatchObject({ type: 'not_found_error', code: '404' });
  });

  it('takes numeric strings in number fields, as pydantic does, and refuses other strings with a 422 naming the field', async () => {
    const r = await admin(app, 'POST', '/key/generate', {
      max_budget: '12.5',
      rpm_limit: '60',
      soft_budget: '',
    });
    // LiteLLM's 422: soft_budget takes no empty string (only max_budget's "" is none).
    expect(r.status, JSON.stringify(r.body)).toBe(422);
    expect(r.body.detail).toEqual([
      {
        type: 'float_parsing',
        loc: ['body', 'soft_budget'],
        msg: 'Input should be a valid number, unable to parse string as a number',
        input: '',
      },
    ]);
    const ok = await admin(app, 'POST', '/key/generate', { max_budget: '12.5', rpm_limit: '60' });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ max_budget: 12.5, rpm_limit: 60 });
    // LiteLLM's own rule: an empty max_budget is none.
    expect((await admin(app, 'POST', '/key/generate', { max_budget: '' })).body.max_budget).toBeNull();
    const bad = await admin(app, 'POST', '/team/new', { max_budget: 'ten' });
    expect(bad.status).toBe(422);
    expect(bad.body.detail[0]).toMatchObject({
      type: 'float_parsing',
      loc: ['body', 'max_budget'],
      input: 'ten',
    });
    // Not a finite number: refused, never an endless budget.
    const huge = await admin(app, 'POST', '/team/new', { max_budget: '1e400' });
    expect(huge.status).toBe(422);
    expect(huge.body.detail[0]).toMatchObject({ loc: ['body', 'max_budget'], input: '1e400' });
  });

  it("does not apply a user's personal budget to their team keys, yet counts the team keys' spend on the user", async () => {
    expect((await admin(app, 'POST', '/team/new', { team_id: 'frontend' })).status).toBe(200);
    // $0.000001 cannot pay for any gpt-4o call: a scope that applies refuses it.
    const user = await admin(app, 'POST', '/user/new', {
      user_id: 'alice',
      team_id: 'frontend',
      max_budget: 0.000001,
      auto_create_key: false,
    });
    expect(user.status).toBe(200);
    const teamKey = (await admin(app, 'POST', '/key/generate', { user_id: 'alice', team_id: 'frontend' }))
      .body.key;
    // No team_id: a personal key, though alice is in exactly one team (LiteLLM's rule).
    const personal0 = await admin(app, 'POST', '/key/generate', { user_id: 'alice' });
    expect(personal0.body).toMatchObject({ user_id: 'alice', team_id: null });
    const personalKey = personal0.body.key;

    const personal = await chat(app, personalKey);
    expect(personal.status).toBe(429);
    expect(personal.body.error.message).toMatch(
      /^Budget has been exceeded! User=alice Current cost: 0\.0, Max budget: 0\.000001\./,
    );

    const team = await chat(app, teamKey);
    expect(team.status, JSON.stringify(team.body)).toBe(200);
    await app.settled();
    const logs = (await admin(app, 'GET', '/spend/logs?user_id=alice&summarize=false')).body;
    expect(logs).toHaveLength(1);
    expect(logs[0].spend).toBeGreaterThan(0);
    // The user's counter took the team key's call (LiteLLM adds it to the user's spend too).
    const info = (await admin(app, 'GET', '/user/info?user_id=alice')).body;
    expect(info.user_info.spend).toBe(logs[0].spend);
  });

  it('gives an end user first seen on a call the default end-user budget; /customer/new ones keep theirs', async () => {
    await app.close();
    app = await startTestApp(framework, {
      now: () => now,
      guardOptions: { defaultEndUserBudget: { maxBudget: 0.000001, budgetDuration: '1d' } },
    });
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key;
    await admin(app, 'POST', '/customer/new', { user_id: 'known' });
    const body = { model: 'gpt-4o', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] };
    const call = (user: string) =>
      fetch(`${app.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, user }),
      });
    const refused = await call('new-one');
    expect(refused.status).toBe(429);
    expect((await refused.json()).error.message).toMatch(/EndUser=new-one|Customer=new-one|new-one/);
    expect((await admin(app, 'GET', '/customer/info?end_user_id=new-one')).body).toMatchObject({
      user_id: 'new-one',
      max_budget: 0.000001,
      budget_duration: '1d',
      budget_reset_at: '2026-04-02T00:00:00.000Z',
    });
    const served = await call('known');
    expect(served.status).toBe(200);
    await served.arrayBuffer();
  });
});
