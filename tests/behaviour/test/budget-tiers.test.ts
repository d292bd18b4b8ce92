import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * LiteLLM's budget objects (`/budget/*`) linked by end users (`budget_id`): a tier of limits, each
 * linked end user spending against its own counter under them, a change to the tier reaching every one
 * at once. Costs are hand-worked (gpt-4o: $2.5e-6 a prompt token, $1e-5 a completion token; one short
 * user message is 8 prompt tokens, and the simulator writes all of `max_tokens`), never the guard's own.
 */

const GPT4O_IN = 2.5e-6;
const GPT4O_OUT = 1e-5;
/** One call below: 8 prompt tokens and 10 completion tokens, $0.00012. */
const ONE_CALL = 8 * GPT4O_IN + 10 * GPT4O_OUT;

async function chat(app: TestApp, key: string, user: string) {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-4o',
      user,
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 10,
    }),
  });
  const cost = res.headers.get('x-litellm-response-cost');
  const body = (await res.json()) as { error?: { message: string; type: string; param: string | null } };
  await app.settled();
  return { status: res.status, cost: cost === null ? null : Number(cost), body };
}

describe.each(ADAPTERS)('budget tiers on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it("a tier's limits reach every linked end user, each on its own spend; changing the tier changes them all at once", async () => {
    app = await startTestApp(framework);
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key as string;
    const tier = await admin(app, 'POST', '/budget/new', { budget_id: 'free', max_budget: 0.001 });
    expect(tier.status).toBe(200);
    expect(tier.body).toMatchObject({
      budget_id: 'free',
      max_budget: 0.001,
      soft_budget: null,
      rpm_limit: null,
      tpm_limit: null,
      max_parallel_requests: null,
      budget_duration: null,
    });
    for (const user_id of ['acme', 'globex']) {
      const c = await admin(app, 'POST', '/customer/new', { user_id, budget_id: 'free' });
      expect(c.status).toBe(200);
      expect(c.body).toMatchObject({
        user_id,
        budget_id: 'free',
        max_budget: 0.001,
        spend: 0,
        litellm_budget_table: { budget_id: 'free', max_budget: 0.001 },
      });
    }
    const first = await chat(app, key, 'acme');
    expect(first.status).toBe(200);
    expect(first.cost).toBeCloseTo(ONE_CALL, 12);

    // The tier lowered below what acme spent: acme is over on its own spend; globex, which spent
    // nothing, now has only $0.0001 too, less than this call's worst case.
    const lowered = await admin(app, 'POST', '/budget/update', { budget_id: 'free', max_budget: 0.0001 });
    expect(lowered.status).toBe(200);
    expect(lowered.body).toMatchObject({ budget_id: 'free', max_budget: 0.0001 });
    const calls = app.simulator.requestCount;
    const refused = await chat(app, key, 'acme');
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ type: 'budget_exceeded', code: '429' });
    expect(refused.body.error!.message).toMatch(
      /^Budget has been exceeded! EndUser=acme Current cost: 0\.00012, Max budget: 0\.0001\b/,
    );
    expect(app.simulator.requestCount).toBe(calls);
    const globex = await chat(app, key, 'globex');
    expect(globex.status).toBe(429);
    expect(globex.body.error!.message).toMatch(
      /^Budget has been exceeded! EndUser=globex Current cost: 0\.0, Max budget: 0\.0001\b/,
    );
    const acme = (await admin(app, 'GET', '/customer/info?end_user_id=acme')).body;
    expect(acme).toMatchObject({
      budget_id: 'free',
      max_budget: 0.0001,
      litellm_budget_table: { max_budget: 0.0001 },
    });
    expect(acme.spend).toBeCloseTo(ONE_CALL, 12);

    // Raised again: both are served again, acme on the same spend.
    expect((await admin(app, 'POST', '/budget/update', { budget_id: 'free', max_budget: 1 })).status).toBe(
      200,
    );
    expect((await chat(app, key, 'acme')).status).toBe(200);
    expect((await chat(app, key, 'globex')).status).toBe(200);
    const after = (await admin(app, 'GET', '/customer/info?end_user_id=acme')).body;
    expect(after.spend).toBeCloseTo(2 * ONE_CALL, 12);
    expect((await admin(app, 'GET', '/budget/list')).body).toMatchObject([
      { budget_id: 'free', max_budget: 1 },
    ]);
    expect((await admin(app, 'POST', '/budget/info', { budgets: ['free', 'nope'] })).body).toMatchObject([
      { budget_id: 'free' },
    ]);
  });

  it('a key on a tier (/key/generate budget_id) spends under its limits: 429 by the key, the tier raised reaches it at once', async () => {
    app = await startTestApp(framework);
    expect((await admin(app, 'POST', '/budget/new', { budget_id: 'keys', max_budget: 0.0002 })).status).toBe(
      200,
    );
    const made = await admin(app, 'POST', '/key/generate', { key_alias: 'tiered', budget_id: 'keys' });
    expect(made.status, JSON.stringify(made.body)).toBe(200);
    expect(made.body).toMatchObject({ budget_id: 'keys', max_budget: 0.0002, spend: 0 });
    const key = made.body.key as string;
    // $0.0002 takes one call ($0.00012); the second's worst case does not fit in the $0.00008 left.
    const first = await chat(app, key, 'acme');
    expect(first).toMatchObject({ status: 200, cost: ONE_CALL });
    const refused = await chat(app, key, 'acme');
    expect(refused.status).toBe(429);
    expect(refused.body.error!.message).toMatch(
      /^Budget has been exceeded! Key=tiered Current cost: 0\.00012, Max budget: 0\.0002\./,
    );
    // The tier raised: the key is under the new limit at its next call.
    expect(
      (await admin(app, 'POST', '/budget/update', { budget_id: 'keys', max_budget: 0.001 })).status,
    ).toBe(200);
    expect(await chat(app, key, 'acme')).toMatchObject({ status: 200, cost: ONE_CALL });
    expect((await admin(app, 'GET', `/key/info?key=${key}`)).body.info).toMatchObject({
      budget_id: 'keys',
      max_budget: 0.001,
      spend: 2 * ONE_CALL,
    });
    // A tier a key links to is not deleted; limits of the key's own beside budget_id are refused.
    const del = await admin(app, 'POST', '/budget/delete', { id: 'keys' });
    expect(del.status).toBe(400);
    expect(del.body.error).toMatchObject({ param: 'id' });
    const both = await admin(app, 'POST', '/key/update', { key, max_budget: 5 });
    expect(both.status).toBe(400);
    expect(both.body.error).toMatchObject({ param: 'max_budget' });
    const regen = await admin(app, 'POST', '/key/regenerate', { key, tpm_limit: 5 });
    expect(regen.status).toBe(400);
    expect(regen.body.error).toMatchObject({ param: 'tpm_limit' });
    const missing = await admin(app, 'POST', '/key/generate', { budget_id: 'nope' });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toMatchObject({ param: 'budget_id' });
    // A team admin may not put a key on a tier (the master key sets a tier's limits).
    await admin(app, 'POST', '/team/new', { team_id: 'web' });
    await admin(app, 'POST', '/user/new', { user_id: 'ann', team_id: 'web', auto_create_key: false });
    await admin(app, 'POST', '/team/member_update', { team_id: 'web', user_id: 'ann', role: 'admin' });
    const annKey = (await admin(app, 'POST', '/key/generate', { user_id: 'ann', team_id: 'web' })).body.key;
    const byAdmin = await admin(app, 'POST', '/key/generate', { team_id: 'web', budget_id: 'keys' }, annKey);
    expect(byAdmin.status).toBe(403);
    expect(byAdmin.body.error).toMatchObject({ param: 'budget_id' });
    // LiteLLM's users and teams take no budget_id: refused naming it.
    const user = await admin(app, 'POST', '/user/new', { user_id: 'u', budget_id: 'keys' });
    expect(user.status).toBe(400);
    expect(user.body.error).toMatchObject({ param: 'budget_id' });
    // Unlinked, the key keeps the tier's limits as its own; the tier can go.
    expect((await admin(app, 'POST', '/key/update', { key, budget_id: null })).body).toMatchObject({
      budget_id: null,
      max_budget: 0.001,
    });
    expect((await admin(app, 'POST', '/budget/delete', { id: 'keys' })).status).toBe(200);
  });

  it("a tier's rate limits apply per end user, and reach them at once when the tier changes", async () => {
    app = await startTestApp(framework, { now: () => new Date('2026-05-04T10:00:00Z') });
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key as string;
    await admin(app, 'POST', '/budget/new', { budget_id: 'slow', rpm_limit: 1 });
    await admin(app, 'POST', '/customer/new', { user_id: 'acme', budget_id: 'slow' });
    await admin(app, 'POST', '/customer/new', { user_id: 'globex', budget_id: 'slow' });
    expect((await chat(app, key, 'acme')).status).toBe(200);
    const limited = await chat(app, key, 'acme');
    expect(limited.status).toBe(429);
    expect(limited.body.error!.message).toMatch(/EndUser=acme/);
    expect((await chat(app, key, 'globex')).status).toBe(200);
    await admin(app, 'POST', '/budget/update', { budget_id: 'slow', rpm_limit: 2 });
    expect((await chat(app, key, 'acme')).status).toBe(200);
    expect((await chat(app, key, 'acme')).status).toBe(429);
  });

  it('refuses bad input naming the field, writes nothing of it, and deletes a tier only once nothing links to it', async () => {
    app = await startTestApp(framework);
    expect((await admin(app, 'POST', '/budget/new', { budget_id: 'free', max_budget: 1 })).status).toBe(200);
    const refusals: Array<[string, unknown, number, string | null, RegExp]> = [
      ['/budget/new', { budget_id: 'free' }, 400, 'budget_id', /already exists/],
      // A schema failure: LiteLLM's 422, pydantic's message in detail.
      ['/budget/new', { budget_id: 'x', max_budget: -1 }, 422, 'max_budget', /greater than or equal to 0/],
      [
        '/budget/new',
        { budget_id: 'x', model_max_budget: { 'gpt-4o': 1 } },
        400,
        'model_max_budget',
        /not supported/,
      ],
      [
        '/budget/new',
        { budget_id: 'x', budget_reset_at: '2026-01-01' },
        400,
        'budget_reset_at',
        /not supported/,
      ],
      ['/budget/new', { budget_id: 'x', max_budgte: 1 }, 400, 'max_budgte', /not a field/],
      ['/budget/update', { max_budget: 2 }, 400, 'budget_id', /budget_id is required/],
      ['/budget/update', { budget_id: 'nope', max_budget: 2 }, 404, 'budget_id', /Budget not found/],
      ['/budget/info', { budgets: [] }, 400, 'budgets', /Specify list/],
      ['/budget/delete', { id: 'nope' }, 404, 'id', /Budget not found/],
      ['/customer/new', { user_id: 'c', budget_id: 'nope' }, 400, 'budget_id', /Budget not found/],
      [
        '/customer/new',
        { user_id: 'c', budget_id: 'free', max_budget: 5 },
        400,
        'max_budget',
        /either budget_id/,
      ],
      [
        '/key/generate',
        { budget_id: 'free', rpm_limit: 5 },
        400,
        'rpm_limit',
        /either budget_id or rpm_limit/,
      ],
      ['/key/generate', { budget_id: 'nope' }, 400, 'budget_id', /Budget not found/],
      ['/team/new', { budget_id: 'free' }, 400, 'budget_id', /users and teams take no budget_id/],
    ];
    for (const [path, body, status, param, message] of refusals) {
      const r = await admin(app, 'POST', path, body);
      expect([path, r.status], JSON.stringify(r.body)).toEqual([path, status]);
      if (status === 422) {
        expect(r.body.detail[0].loc).toEqual(['body', param]);
        expect(r.body.detail[0].msg).toMatch(message);
        continue;
      }
      expect(r.body.error.param).toBe(param);
      expect(r.body.error.message).toMatch(message);
    }
    expect((await admin(app, 'GET', '/customer/info?end_user_id=c')).status).toBe(404);
    expect((await admin(app, 'GET', '/budget/list')).body.map((b: any) => b.budget_id)).toEqual(['free']);
    // Only the master key manages budgets.
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key as string;
    expect((await admin(app, 'POST', '/budget/new', { budget_id: 'y' }, key)).status).toBe(403);
    expect((await admin(app, 'GET', '/budget/list', undefined, key)).status).toBe(403);

    // Linked: its own limits are refused while it stays linked; the tier cannot be deleted under it.
    await admin(app, 'POST', '/customer/new', { user_id: 'c', budget_id: 'free' });
    const own = await admin(app, 'POST', '/customer/update', { user_id: 'c', max_budget: 5 });
    expect(own.status).toBe(400);
    expect(own.body.error).toMatchObject({ param: 'max_budget' });
    expect(own.body.error.message).toMatch(/spends under budget 'free'/);
    const linked = await admin(app, 'POST', '/budget/delete', { id: 'free' });
    expect(linked.status).toBe(400);
    expect(linked.body.error.message).toMatch(/still the budget of 1 end user/);
    expect((await admin(app, 'POST', '/budget/info', { budgets: ['free'] })).body).toHaveLength(1);
    // Unlinked (with a budget of its own in the same call): then the tier goes.
    const unlinked = await admin(app, 'POST', '/customer/update', {
      user_id: 'c',
      budget_id: null,
      max_budget: 5,
    });
    expect(unlinked.status).toBe(200);
    expect(unlinked.body).toMatchObject({ budget_id: null, max_budget: 5 });
    const deleted = await admin(app, 'POST', '/budget/delete', { id: 'free' });
    expect(deleted.status).toBe(200);
    expect(deleted.body).toMatchObject({ budget_id: 'free', max_budget: 1 });
    expect((await admin(app, 'GET', '/budget/list')).body).toEqual([]);
    expect((await admin(app, 'GET', '/budget/settings?budget_id=free')).body).toHaveLength(6);
  });

  it('defaultEndUserBudgetId: an end user first seen on a call joins the tier; while the tier is missing, the call is refused', async () => {
    app = await startTestApp(framework, { guardOptions: { defaultEndUserBudgetId: 'free-tier' } });
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key as string;
    const missing = await chat(app, key, 'newbie');
    expect(missing.status).toBe(500);
    expect(missing.body.error!.message).toMatch(/defaultEndUserBudgetId 'free-tier' names no budget/);
    expect(app.simulator.requestCount).toBe(0);
    expect((await admin(app, 'GET', '/customer/info?end_user_id=newbie')).status).toBe(404);

    await admin(app, 'POST', '/budget/new', { budget_id: 'free-tier', max_budget: 0.0002 });
    expect((await chat(app, key, 'newbie')).status).toBe(200);
    const newbie = (await admin(app, 'GET', '/customer/info?end_user_id=newbie')).body;
    expect(newbie).toMatchObject({ budget_id: 'free-tier', max_budget: 0.0002 });
    expect(newbie.spend).toBeCloseTo(ONE_CALL, 12);
    // The tier lowered below that spend: the next call is refused on the default tier's cap.
    await admin(app, 'POST', '/budget/update', { budget_id: 'free-tier', max_budget: 0.0001 });
    const over = await chat(app, key, 'newbie');
    expect(over.status).toBe(429);
    expect(over.body.error!.message).toMatch(/EndUser=newbie Current cost: 0\.00012, Max budget: 0\.0001\b/);
    // /customer/new without limits of its own joins it too; with limits of its own it does not.
    expect((await admin(app, 'POST', '/customer/new', { user_id: 'plain' })).body).toMatchObject({
      budget_id: 'free-tier',
    });
    expect(
      (await admin(app, 'POST', '/customer/new', { user_id: 'paid', max_budget: 10 })).body,
    ).toMatchObject({
      budget_id: null,
      max_budget: 10,
    });
  });
});
