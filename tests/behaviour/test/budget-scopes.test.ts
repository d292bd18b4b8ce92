import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * One scenario per optional scope (end user, tag, a key's model, the global budget): spend accrues on
 * exactly the scopes that apply, the scope that refuses is named in LiteLLM's 429, and its period
 * reset re-opens it. The clock is the guard's, moved by the test: nothing sleeps.
 */

const DAY = 86_400_000;
// A budget that takes a few small calls: each gpt-4o call below costs about $0.0002 and reserves more.
const SMALL = 0.0006;

interface Scenario {
  name: string;
  /** What the 429 names. */
  label: RegExp;
  /** Creates the scope's budget (and anything else), through the management API. */
  setup: (app: TestApp, key: string) => Promise<void>;
  /** The call's own part: body fields and headers that make the scope apply. */
  call: { body?: Record<string, unknown>; headers?: Record<string, string>; model?: string };
  /** The same call with the scope not applying (another end user, tag, model...). */
  otherCall: { body?: Record<string, unknown>; headers?: Record<string, string>; model?: string };
  /** Reads the scope's spend (USD) through the typed API. */
  spend: (app: TestApp, key: string) => Promise<number | null>;
  guardOptions?: Record<string, unknown>;
  /** A key for the call the scope does not apply to (default: the same key). */
  otherKey?: (app: TestApp) => Promise<string>;
  /** How the scope re-opens (default: its daily period ends). */
  reopen?: (app: TestApp, clock: { now: number }) => Promise<void>;
}

const SCENARIOS: Scenario[] = [
  {
    name: "team member's budget in the team (max_budget_in_team)",
    label: /User=alice in Team=frontend\b/,
    setup: async (app) => {
      // alice joined the team through /user/new; her budget in it is set with member_update.
      const r = await admin(app, 'POST', '/team/member_update', {
        team_id: 'frontend',
        user_id: 'alice',
        max_budget_in_team: SMALL,
      });
      expect(r.status).toBe(200);
    },
    call: {},
    // bob is in the same team, with no budget of his own in it.
    otherCall: {},
    otherKey: async (app) => {
      await admin(app, 'POST', '/user/new', { user_id: 'bob', team_id: 'frontend', auto_create_key: false });
      return (await admin(app, 'POST', '/key/generate', { user_id: 'bob', team_id: 'frontend' })).body.key;
    },
    // A member budget has no period of its own: it re-opens by a manual reset.
    reopen: async (app) => {
      const r = await admin(app, 'POST', '/budget/reset', {
        scope: 'member',
        team_id: 'frontend',
        user_id: 'alice',
      });
      expect(r.status).toBe(200);
    },
    spend: async (app) =>
      (await app.guard.budgets.remaining({ member: { team: 'frontend', user: 'alice' } }))?.spend ?? null,
  },
  {
    name: 'end user from the body',
    label: /EndUser=acme/,
    setup: async (app) => {
      const r = await admin(app, 'POST', '/customer/new', {
        user_id: 'acme',
        max_budget: SMALL,
        budget_duration: '1d',
      });
      expect(r.status).toBe(200);
    },
    call: { body: { user: 'acme' } },
    otherCall: { body: { user: 'globex' } },
    spend: async (app) => (await app.guard.budgets.remaining({ customer: 'acme' }))?.spend ?? null,
  },
  {
    name: 'end user on a budget tier (/budget/new, budget_id)',
    label: /EndUser=acme/,
    setup: async (app) => {
      const tier = await admin(app, 'POST', '/budget/new', {
        budget_id: 'free',
        max_budget: SMALL,
        budget_duration: '1d',
      });
      expect(tier.status).toBe(200);
      // globex is on the same tier, with its own spend: acme's calls never count there.
      for (const user_id of ['acme', 'globex']) {
        expect((await admin(app, 'POST', '/customer/new', { user_id, budget_id: 'free' })).status).toBe(200);
      }
    },
    call: { body: { user: 'acme' } },
    otherCall: { body: { user: 'globex' } },
    spend: async (app) => (await app.guard.budgets.remaining({ customer: 'acme' }))?.spend ?? null,
  },
  {
    name: 'end user from x-litellm-end-user-id',
    label: /EndUser=acme/,
    setup: async (app) => {
      await admin(app, 'POST', '/customer/new', {
        user_id: 'acme',
        max_budget: SMALL,
        budget_duration: '1d',
      });
    },
    call: { headers: { 'x-litellm-end-user-id': 'acme' } },
    otherCall: { headers: { 'x-litellm-end-user-id': 'initech' } },
    spend: async (app) => (await app.guard.budgets.remaining({ customer: 'acme' }))?.spend ?? null,
  },
  {
    name: 'tag from the body',
    label: /Tag=feature:search/,
    setup: async (app) => {
      const r = await admin(app, 'POST', '/tag/new', {
        name: 'feature:search',
        max_budget: SMALL,
        budget_duration: '1d',
      });
      expect(r.status).toBe(200);
    },
    call: { body: { tags: ['feature:search', 'env:test'] } },
    otherCall: { body: { tags: ['feature:chat'] } },
    spend: async (app) => (await app.guard.budgets.remaining({ tag: 'feature:search' }))?.spend ?? null,
  },
  {
    name: 'tag from metadata.tags',
    label: /Tag=feature:search/,
    setup: async (app) => {
      await admin(app, 'POST', '/tag/new', {
        name: 'feature:search',
        max_budget: SMALL,
        budget_duration: '1d',
      });
    },
    call: { body: { metadata: { tags: ['feature:search'] } } },
    otherCall: { body: { metadata: { tags: ['feature:chat'] } } },
    spend: async (app) => (await app.guard.budgets.remaining({ tag: 'feature:search' }))?.spend ?? null,
  },
  {
    name: 'tag from the x-litellm-tags header',
    label: /Tag=feature:search/,
    setup: async (app) => {
      await admin(app, 'POST', '/tag/new', {
        name: 'feature:search',
        max_budget: SMALL,
        budget_duration: '1d',
      });
    },
    call: { headers: { 'x-litellm-tags': 'feature:search,env:test' } },
    otherCall: { headers: { 'x-litellm-tags': 'feature:chat' } },
    spend: async (app) => (await app.guard.budgets.remaining({ tag: 'feature:search' }))?.spend ?? null,
  },
  {
    name: "a key's budget for one model (model_max_budget)",
    label: /Model=gpt-4o\b/,
    setup: async (app, key) => {
      const r = await admin(app, 'POST', '/key/update', {
        key,
        model_max_budget: { 'gpt-4o': { budget_limit: SMALL, time_period: '1d' } },
      });
      expect(r.status).toBe(200);
    },
    call: { model: 'gpt-4o' },
    otherCall: { model: 'gpt-4o-mini' },
    spend: async (app, key) =>
      (await app.guard.budgets.remaining({ keyModel: { key, model: 'gpt-4o' } }))?.spend ?? null,
  },
];

describe.each(ADAPTERS)('budget scopes on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  async function start(clock: { now: number }, guardOptions: Record<string, unknown> = {}) {
    app = await startTestApp(framework, { now: () => new Date(clock.now), guardOptions });
    await admin(app, 'POST', '/team/new', { team_id: 'frontend', max_budget: 1000 });
    await admin(app, 'POST', '/user/new', { user_id: 'alice', team_id: 'frontend' });
    const key = (
      await admin(app, 'POST', '/key/generate', { user_id: 'alice', team_id: 'frontend', max_budget: 100 })
    ).body.key;
    return { app, key: key as string };
  }

  async function chat(
    a: TestApp,
    key: string,
    part: { body?: Record<string, unknown>; headers?: Record<string, string>; model?: string },
  ) {
    const res = await fetch(`${a.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...part.headers },
      body: JSON.stringify({
        model: part.model ?? 'gpt-4o',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 10,
        ...part.body,
      }),
    });
    const body = (await res.json()) as { error?: { message: string; type: string; code: string } };
    await a.settled();
    return { status: res.status, body, headers: res.headers };
  }

  for (const s of SCENARIOS) {
    it(`${s.name}: accrues where it applies, refuses by name, re-opens at its reset`, async () => {
      const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
      const { app, key } = await start(clock, s.guardOptions);
      await s.setup(app, key);
      const otherKey = s.otherKey ? await s.otherKey(app) : key;

      // A call the scope does not apply to leaves it at zero; its spend lands on its key.
      const other = await chat(app, otherKey, s.otherCall);
      expect(other.status).toBe(200);
      expect(await s.spend(app, key)).toBe(0);
      expect((await app.guard.budgets.remaining({ key: otherKey }))!.spend).toBeGreaterThan(0);
      const keySpendAfterOther = (await app.guard.budgets.remaining({ key }))!.spend;

      // Calls it applies to accrue on it (and on the key, user and team), until it refuses.
      let served = 0;
      let refused: Awaited<ReturnType<typeof chat>> | null = null;
      for (let i = 0; i < 20 && !refused; i++) {
        const r = await chat(app, key, s.call);
        if (r.status === 200) served++;
        else refused = r;
      }
      expect(served).toBeGreaterThan(0);
      expect(refused?.status).toBe(429);
      expect(refused!.body.error!.message).toMatch(/^Budget has been exceeded! /);
      expect(refused!.body.error!.message).toMatch(s.label);
      // retry-after tells when a period budget re-opens (its daily reset, 14 h after 10:00 UTC on the
      // guard's clock); a budget without a period has none.
      expect(refused!.headers.get('retry-after')).toBe(s.reopen ? null : '50400');
      const scopeSpend = (await s.spend(app, key))!;
      expect(scopeSpend).toBeGreaterThan(0);
      expect(scopeSpend).toBeLessThanOrEqual(SMALL);
      const keySpend = (await app.guard.budgets.remaining({ key }))!.spend;
      expect(keySpend).toBeCloseTo(keySpendAfterOther + scopeSpend, 9);
      const otherKeySpend =
        otherKey === key ? 0 : (await app.guard.budgets.remaining({ key: otherKey }))!.spend;
      expect((await app.guard.budgets.remaining({ team: 'frontend' }))!.spend).toBeCloseTo(
        keySpend + otherKeySpend,
        9,
      );

      // The scope refuses; a call it does not apply to is still served.
      expect((await chat(app, otherKey, s.otherCall)).status).toBe(200);

      // Its daily period ends (or it is reset): it is open again, with its spend back at zero.
      if (s.reopen) await s.reopen(app, clock);
      else clock.now += DAY;
      expect(await s.spend(app, key)).toBe(0);
      expect((await chat(app, key, s.call)).status).toBe(200);
      expect(await s.spend(app, key)).toBeGreaterThan(0);
    });
  }

  it('the global budget counts every key, refuses as Global, and resets', async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    const { app, key } = await start(clock, { globalBudget: { maxBudget: SMALL, budgetDuration: '1d' } });
    const second = (await admin(app, 'POST', '/key/generate', { max_budget: 100 })).body.key as string;
    let refused: Awaited<ReturnType<typeof chat>> | null = null;
    const served = { first: 0, second: 0 };
    for (let i = 0; i < 20 && !refused; i++) {
      const which = i % 2 === 0 ? 'first' : 'second';
      const r = await chat(app, which === 'first' ? key : second, {});
      if (r.status === 200) served[which]++;
      else refused = r;
    }
    expect(served.first).toBeGreaterThan(0);
    expect(served.second).toBeGreaterThan(0);
    expect(refused?.status).toBe(429);
    expect(refused!.body.error!.message).toMatch(/Global=proxy/);
    const global = (await app.guard.budgets.remaining({ global: true }))!;
    const keys =
      (await app.guard.budgets.remaining({ key }))!.spend +
      (await app.guard.budgets.remaining({ key: second }))!.spend;
    expect(global.spend).toBeCloseTo(keys, 9);
    expect(global.spend).toBeLessThanOrEqual(SMALL);
    clock.now += DAY;
    expect((await chat(app, key, {})).status).toBe(200);
  });

  it("a team's cap refuses every member's keys by the team's name, while their own budgets have room", async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    const { app, key } = await start(clock);
    await admin(app, 'POST', '/team/update', {
      team_id: 'frontend',
      team_alias: 'frontend-team',
      max_budget: SMALL,
      budget_duration: '1d',
    });
    await admin(app, 'POST', '/user/new', { user_id: 'bob', team_id: 'frontend', auto_create_key: false });
    const bob = (
      await admin(app, 'POST', '/key/generate', { user_id: 'bob', team_id: 'frontend', max_budget: 100 })
    ).body.key;
    let refused: Awaited<ReturnType<typeof chat>> | null = null;
    const served = { alice: 0, bob: 0 };
    for (let i = 0; i < 20 && !refused; i++) {
      const who = i % 2 === 0 ? 'alice' : 'bob';
      const r = await chat(app, who === 'alice' ? key : bob, {});
      if (r.status === 200) served[who]++;
      else refused = r;
    }
    expect(served.alice).toBeGreaterThan(0);
    expect(served.bob).toBeGreaterThan(0);
    expect(refused?.status).toBe(429);
    expect(refused!.body.error).toMatchObject({ type: 'budget_exceeded', code: '429' });
    expect(refused!.body.error!.message).toMatch(
      /^Budget has been exceeded! Team=frontend-team Current cost: [\d.e-]+, Max budget: 0\.0006\. In flight: /,
    );
    expect(refused!.headers.get('retry-after')).toBe('50400');
    const team = (await app.guard.budgets.remaining({ team: 'frontend' }))!;
    const keys = [key, bob].map(async (k) => (await app.guard.budgets.remaining({ key: k }))!.spend);
    const [aliceSpend, bobSpend] = await Promise.all(keys);
    expect(team.spend).toBeCloseTo(aliceSpend! + bobSpend!, 9);
    expect(team.spend).toBeLessThanOrEqual(SMALL);
    expect(aliceSpend).toBeLessThan(1); // the keys' own budgets ($100) were never near
    // The team's daily period ends: both keys are served again.
    clock.now += DAY;
    expect((await chat(app, bob, {})).status).toBe(200);
  });

  it('a manual reset re-opens a spent budget at once', async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    const { app, key } = await start(clock);
    await admin(app, 'POST', '/tag/new', { name: 'batch', max_budget: SMALL });
    let status = 200;
    for (let i = 0; i < 20 && status === 200; i++)
      status = (await chat(app, key, { body: { tags: ['batch'] } })).status;
    expect(status).toBe(429);
    const reset = await admin(app, 'POST', '/budget/reset', { scope: 'tag', id: 'batch' });
    expect(reset.status).toBe(200);
    expect(reset.body).toMatchObject({ scope: 'tag', id: 'batch', spend: 0, max_budget: SMALL });
    expect((await chat(app, key, { body: { tags: ['batch'] } })).status).toBe(200);
    // The history stays: the tag's spend report still counts every call.
    const tags = await admin(app, 'GET', '/spend/tags');
    expect(
      tags.body.find((t: { individual_request_tag: string }) => t.individual_request_tag === 'batch')
        .log_count,
    ).toBeGreaterThan(1);
  });

  it('refuses a blocked end user with 400 before anything is counted, and serves it again once unblocked', async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    const { app, key } = await start(clock);
    await admin(app, 'POST', '/customer/new', { user_id: 'acme', max_budget: 5 });
    expect((await chat(app, key, { body: { user: 'acme' } })).status).toBe(200);
    const spentBefore = (await app.guard.budgets.remaining({ key }))!.spend;
    const logsBefore = (await admin(app, 'GET', '/spend/logs')).body.length;

    // 'globex' is not known yet: blocking it creates it, blocked and uncapped (as LiteLLM does).
    const blocked = await admin(app, 'POST', '/customer/block', { user_ids: ['acme', 'globex'] });
    expect(blocked).toEqual({ status: 200, body: { blocked_users: ['acme', 'globex'] } });
    expect((await admin(app, 'GET', '/customer/info?end_user_id=globex')).body).toMatchObject({
      user_id: 'globex',
      blocked: true,
      max_budget: null,
    });
    for (const part of [{ body: { user: 'acme' } }, { headers: { 'x-litellm-end-user-id': 'globex' } }]) {
      const r = await chat(app, key, part);
      const who = part.body?.user ?? part.headers?.['x-litellm-end-user-id'];
      expect(r.status).toBe(400);
      expect(r.body).toEqual({
        error: {
          message: `User blocked from making LLM API Calls. User=${who}`,
          type: 'invalid_request_error',
          param: null,
          code: '400',
        },
      });
    }
    // Nothing was reserved, charged or logged for them; other end users and calls without one are served.
    expect(await app.guard.budgets.remaining({ key })).toMatchObject({ spend: spentBefore, reserved: 0 });
    expect((await admin(app, 'GET', '/spend/logs')).body.length).toBe(logsBefore);
    expect((await chat(app, key, { body: { user: 'initech' } })).status).toBe(200);
    expect((await chat(app, key, {})).status).toBe(200);

    const unblocked = await admin(app, 'POST', '/customer/unblock', { user_ids: ['acme', 'nobody'] });
    expect(unblocked).toEqual({ status: 200, body: { unblocked_users: ['acme', 'nobody'] } });
    expect((await chat(app, key, { body: { user: 'acme' } })).status).toBe(200);
    expect((await chat(app, key, { body: { user: 'globex' } })).status).toBe(400);
    expect((await admin(app, 'GET', '/customer/info?end_user_id=nobody')).status).toBe(404);

    // Schema failures: LiteLLM's 422, FastAPI's detail naming the field.
    for (const [body, loc] of [
      [{}, ['body', 'user_ids']],
      [{ user_ids: [] }, ['body', 'user_ids']],
      [{ user_ids: 'acme' }, ['body', 'user_ids']],
      [{ user_ids: [''] }, ['body', 'user_ids', 0]],
    ] as const) {
      const r = await admin(app, 'POST', '/customer/block', body);
      expect(r.status, JSON.stringify(body)).toBe(422);
      expect(r.body.detail[0].loc).toEqual(loc);
    }
    expect((await admin(app, 'POST', '/customer/block', { user_ids: ['acme'] }, key)).status).toBe(403);
    expect((await chat(app, key, { body: { user: 'acme' } })).status).toBe(200);
  });

  it('answers the customer and tag routes in LiteLLM shapes, and refuses bad input with 4xx JSON', async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    const { app } = await start(clock);
    const created = await admin(app, 'POST', '/customer/new', {
      user_id: 'acme',
      alias: 'Acme',
      max_budget: 5,
    });
    expect(created.body).toMatchObject({
      user_id: 'acme',
      alias: 'Acme',
      spend: 0,
      litellm_budget_table: { max_budget: 5 },
    });
    expect((await admin(app, 'POST', '/customer/new', { user_id: 'acme' })).status).toBe(409);
    expect((await admin(app, 'GET', '/customer/info?end_user_id=acme')).body).toMatchObject({
      user_id: 'acme',
      max_budget: 5,
    });
    expect((await admin(app, 'GET', '/customer/info?end_user_id=nobody')).status).toBe(404);
    const updated = await admin(app, 'POST', '/customer/update', {
      user_id: 'acme',
      max_budget: 9,
      budget_duration: '7d',
    });
    expect(updated.body).toMatchObject({ max_budget: 9, budget_duration: '7d' });
    expect((await admin(app, 'POST', '/customer/delete', { user_ids: ['acme'] })).body).toEqual({
      deleted_customers: 1,
    });
    expect((await admin(app, 'GET', '/customer/info?end_user_id=acme')).status).toBe(404);

    await admin(app, 'POST', '/tag/new', { name: 'env:prod', description: 'production', max_budget: 2 });
    await admin(app, 'POST', '/tag/new', { name: 'env:dev' });
    const info = await admin(app, 'POST', '/tag/info', { names: ['env:prod'] });
    expect(info.body).toEqual({
      'env:prod': expect.objectContaining({
        name: 'env:prod',
        description: 'production',
        max_budget: 2,
        spend: 0,
      }),
    });
    expect((await admin(app, 'POST', '/tag/info', { names: ['env:prod', 'nope'] })).status).toBe(404);
    expect((await admin(app, 'GET', '/tag/list')).body.map((t: { name: string }) => t.name)).toEqual([
      'env:dev',
      'env:prod',
    ]);
    expect((await admin(app, 'POST', '/tag/update', { name: 'env:dev', max_budget: 1 })).body).toMatchObject({
      max_budget: 1,
    });
    expect((await admin(app, 'POST', '/tag/delete', { name: 'env:dev' })).status).toBe(200);
    expect((await admin(app, 'POST', '/tag/delete', { name: 'env:dev' })).status).toBe(404);

    // A schema failure is LiteLLM's 422 with the field in detail[0].loc; a handler's own rule stays 400.
    for (const [path, body, status, field] of [
      ['/customer/new', {}, 422, 'user_id'],
      ['/customer/new', { user_id: 'x', max_budget: -1 }, 422, 'max_budget'],
      ['/tag/new', { name: '' }, 422, 'name'],
      ['/tag/new', { name: 't', budget_duration: 'sometimes' }, 422, 'budget_duration'],
      ['/budget/reset', { scope: 'planet', id: 'x' }, 422, 'scope'],
      ['/budget/reset', { scope: 'tag' }, 400, 'id'],
      ['/key/generate', { model_max_budget: { 'gpt-4o': -3 } }, 422, 'model_max_budget'],
    ] as const) {
      const r = await admin(app, 'POST', path, body);
      expect(r.status, `${path} ${JSON.stringify(body)}`).toBe(status);
      if (status === 422) expect(r.body.detail[0].loc.slice(0, 2)).toEqual(['body', field]);
      else
        expect(r.body.error).toMatchObject({
          message: expect.stringMatching(/Invalid request/),
          param: field,
        });
    }
    // Not for keys: the routes are the master key's.
    const key = (await admin(app, 'POST', '/key/generate', {})).body.key;
    expect((await admin(app, 'POST', '/tag/new', { name: 'mine' }, key)).status).toBe(403);
    expect((await admin(app, 'GET', '/tag/list')).body.map((t: { name: string }) => t.name)).toEqual([
      'env:prod',
    ]);
  });
});

describe.each(ADAPTERS)('budget windows on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('a daily window beside the monthly budget refuses by its name, resets each day, and can be replaced', async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    app = await startTestApp(framework, { now: () => new Date(clock.now) });
    const created = await admin(app, 'POST', '/key/generate', {
      key_alias: 'batch-job',
      max_budget: 100,
      budget_duration: '30d',
      budget_limits: [{ budget_duration: '1d', max_budget: 0.0006 }],
    });
    expect(created.status).toBe(200);
    const key = created.body.key as string;
    const call = async () => {
      const res = await fetch(`${app!.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 10,
        }),
      });
      const body = (await res.json()) as { error?: { message: string } };
      await app!.settled();
      return { status: res.status, body };
    };
    let last = await call();
    let served = 0;
    while (last.status === 200 && served < 20) {
      served++;
      last = await call();
    }
    expect(served).toBeGreaterThan(0);
    expect(last.status).toBe(429);
    expect(last.body.error!.message).toMatch(/Key=batch-job \(1d window\)/);
    const info = await admin(app, 'GET', `/key/info?key=${key}`);
    expect(info.body.info.budget_limits).toEqual([
      expect.objectContaining({
        budget_duration: '1d',
        max_budget: 0.0006,
        budget_reset_at: '2026-05-05T00:00:00.000Z',
      }),
    ]);
    // The monthly counter saw the same spend as the window.
    expect(info.body.info.spend).toBeCloseTo(info.body.info.budget_limits[0].spend, 9);

    clock.now += 86_400_000;
    expect((await call()).status).toBe(200);

    // Replaced by a weekly window with room: the daily one is gone.
    const updated = await admin(app, 'POST', '/key/update', {
      key,
      budget_limits: [{ budget_duration: '7d', max_budget: 1 }],
    });
    expect(updated.status).toBe(200);
    expect(updated.body.budget_limits.map((w: { budget_duration: string }) => w.budget_duration)).toEqual([
      '7d',
    ]);
    for (let i = 0; i < 5; i++) expect((await call()).status).toBe(200);
    const bad = await admin(app, 'POST', '/key/update', {
      key,
      budget_limits: [
        { budget_duration: '1d', max_budget: 1 },
        { budget_duration: '1d', max_budget: 2 },
      ],
    });
    expect(bad.status).toBe(422);
    expect(bad.body.detail[0]).toMatchObject({ type: 'value_error', loc: ['body', 'budget_limits'] });
  });
});

describe.each(ADAPTERS)('team member rate limits on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it("a member's rpm_limit in the team refuses that member only, with LiteLLM's headers", async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    app = await startTestApp(framework, { now: () => new Date(clock.now) });
    await admin(app, 'POST', '/team/new', { team_id: 'frontend' });
    const added = await admin(app, 'POST', '/team/member_add', {
      team_id: 'frontend',
      member: [{ user_id: 'alice' }, { user_id: 'bob' }],
    });
    expect(added.status).toBe(200);
    const limited = await admin(app, 'POST', '/team/member_update', {
      team_id: 'frontend',
      user_id: 'alice',
      rpm_limit: 2,
    });
    expect(limited.status).toBe(200);
    expect(limited.body).toMatchObject({ user_id: 'alice', rpm_limit: 2 });
    const keyOf = async (user: string) =>
      (await admin(app!, 'POST', '/key/generate', { user_id: user, team_id: 'frontend' })).body.key as string;
    const alice = await keyOf('alice');
    const bob = await keyOf('bob');
    const call = async (key: string) => {
      const res = await fetch(`${app!.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }),
      });
      const body = (await res.json()) as { error?: { message: string } };
      await app!.settled();
      return { status: res.status, body, headers: res.headers };
    };
    expect((await call(alice)).status).toBe(200);
    const second = await call(alice);
    expect(second.status).toBe(200);
    expect(second.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    const third = await call(alice);
    expect(third.status).toBe(429);
    expect(third.body.error!.message).toMatch(/User=alice in Team=frontend/);
    // The window began with alice's first call, on a clock that has not moved: 60 s left.
    expect(third.headers.get('retry-after')).toBe('60');
    // bob, in the same team, has no limit of his own.
    for (let i = 0; i < 3; i++) expect((await call(bob)).status).toBe(200);
    // The next minute's window re-opens alice's.
    clock.now += 61_000;
    expect((await call(alice)).status).toBe(200);
  });
});

describe.each(ADAPTERS)('temporary budget increase on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('raises a spent key until its expiry, then the first call after it finds the old cap back', async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    app = await startTestApp(framework, { now: () => new Date(clock.now) });
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 0.0006 })).body.key as string;
    const call = async () => {
      const res = await fetch(`${app!.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 10,
        }),
      });
      const body = (await res.json()) as { error?: { message: string } };
      await app!.settled();
      return { status: res.status, body };
    };
    let status = 200;
    for (let i = 0; i < 20 && status === 200; i++) status = (await call()).status;
    expect(status).toBe(429);

    // Bad input changes nothing.
    // The pairing and the expiry's time are the handler's rules (400); a value the schema refuses is 422.
    for (const [body, status] of [
      [{ key, temp_budget_increase: 1 }, 400],
      [{ key, temp_budget_increase: 1, temp_budget_expiry: '2026-05-04T09:00:00Z' }, 400],
      [{ key, temp_budget_increase: -1, temp_budget_expiry: '2026-05-04T11:00:00Z' }, 422],
      [{ key, temp_budget_increase: 1, temp_budget_expiry: 'tomorrow' }, 422],
    ] as const) {
      const r = await admin(app, 'POST', '/key/update', body);
      expect(r.status, JSON.stringify(body)).toBe(status);
    }
    expect((await admin(app, 'GET', `/key/info?key=${key}`)).body.info.max_budget).toBe(0.0006);

    const raised = await admin(app, 'POST', '/key/update', {
      key,
      temp_budget_increase: 0.001,
      temp_budget_expiry: '2026-05-04T11:00:00Z',
    });
    expect(raised.status).toBe(200);
    expect(raised.body).toMatchObject({
      max_budget: 0.0016,
      metadata: { temp_budget_increase: 0.001, temp_budget_expiry: '2026-05-04T11:00:00.000Z' },
    });
    let served = 0;
    while (served < 20 && (await call()).status === 200) served++;
    expect(served).toBeGreaterThan(0);

    // Past the expiry: the first call finds the cap back at 0.0006 (spent), and is refused.
    clock.now = Date.parse('2026-05-04T11:00:01Z');
    const after = await call();
    expect(after.status).toBe(429);
    expect(after.body.error!.message).toMatch(/Max budget: 0\.0006/);
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    expect(info.max_budget).toBe(0.0006);
    expect(info.metadata).not.toHaveProperty('temp_budget_increase');
  });
});

describe.each(ADAPTERS)('end-user rate limits on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it("an end user's rpm_limit refuses that end user only, from any key, and a window later re-opens", async () => {
    const clock = { now: Date.parse('2026-05-04T10:00:00Z') };
    app = await startTestApp(framework, { now: () => new Date(clock.now) });
    const created = await admin(app, 'POST', '/customer/new', { user_id: 'acme', rpm_limit: 2 });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ user_id: 'acme', rpm_limit: 2, tpm_limit: null });
    const k1 = (await admin(app, 'POST', '/key/generate', {})).body.key as string;
    const k2 = (await admin(app, 'POST', '/key/generate', {})).body.key as string;
    const call = async (key: string, user: string) => {
      const res = await fetch(`${app!.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          user,
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 5,
        }),
      });
      const body = (await res.json()) as { error?: { message: string } };
      await app!.settled();
      return { status: res.status, body };
    };
    expect((await call(k1, 'acme')).status).toBe(200);
    expect((await call(k2, 'acme')).status).toBe(200);
    const third = await call(k1, 'acme');
    expect(third.status).toBe(429);
    expect(third.body.error!.message).toMatch(/EndUser=acme/);
    expect((await call(k1, 'globex')).status).toBe(200);
    // Raised through /customer/update: this instance sees it at once.
    const raised = await admin(app, 'POST', '/customer/update', { user_id: 'acme', rpm_limit: 3 });
    expect(raised.body).toMatchObject({ rpm_limit: 3 });
    expect((await call(k2, 'acme')).status).toBe(200);
    expect((await call(k2, 'acme')).status).toBe(429);
    clock.now += 61_000;
    expect((await call(k2, 'acme')).status).toBe(200);
    expect((await admin(app, 'GET', '/customer/info?end_user_id=acme')).body).toMatchObject({ rpm_limit: 3 });
  });
});

describe.each(ADAPTERS)('model access on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('admits the models of the key (else its team), wildcards and aliases; refuses others with 401 before reserving', async () => {
    app = await startTestApp(framework, {
      guardOptions: { modelAliases: { 'prod-fast': 'gpt-4o-mini' } },
    });
    await admin(app, 'POST', '/team/new', { team_id: 'anthropic-only', models: ['anthropic/*'] });
    const own = (
      await admin(app, 'POST', '/key/generate', { models: ['gpt-4o', 'prod-fast'], max_budget: 1 })
    ).body.key as string;
    const teams = (await admin(app, 'POST', '/key/generate', { team_id: 'anthropic-only' })).body
      .key as string;
    const call = async (key: string, model: string) => {
      const res = await fetch(`${app!.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }),
      });
      const body = (await res.json()) as { error?: { message: string; type: string } };
      await app!.settled();
      return { status: res.status, body };
    };
    expect((await call(own, 'gpt-4o')).status).toBe(200);
    // The alias in the list admits its target, and the alias itself.
    expect((await call(own, 'gpt-4o-mini')).status).toBe(200);
    expect((await call(own, 'prod-fast')).status).toBe(200);
    const spent = (await app.guard.budgets.remaining({ key: own }))!;
    const refused = await call(own, 'o3');
    expect(refused.status).toBe(401);
    expect(refused.body.error!.message).toMatch(/key not allowed to access model.*Tried to access o3/);
    // Refused before any cost was reserved or charged.
    expect(await app.guard.budgets.remaining({ key: own })).toMatchObject({
      spend: spent.spend,
      reserved: 0,
    });
    // The team's list, with a provider wildcard, applies to a key without its own.
    expect((await call(teams, 'anthropic/claude-haiku-4-5')).status).toBe(200);
    expect((await call(teams, 'gpt-4o')).status).toBe(401);
  });
});
