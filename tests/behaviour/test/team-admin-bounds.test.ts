/**
 * A team admin is bound by what the master key set above it (docs/access-control.md): each attack
 * of issue 17 refused with a 403 naming the field, nothing changed by it, and the same route allowed
 * within the bounds. On every adapter.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const chat = JSON.stringify({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: 'hi' }],
  max_tokens: 5,
});

async function call(app: TestApp, key: string): Promise<number> {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: chat,
  });
  await res.arrayBuffer();
  return res.status;
}

type Req = readonly [method: 'GET' | 'POST', path: string, body?: unknown];

describe.each(ADAPTERS)('a team admin within the bounds set above it, on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });

  /**
   * Team ta (cap $100 with a $60 daily window, rpm 100, tpm 10000, 10 in parallel, two models) with
   * alice (admin) and bob; team tb (cap $50) with carol (admin) and dave (personal budget $5); erin in
   * no team. Every user has a key in its team.
   */
  async function world() {
    const app = await startTestApp(framework);
    apps.push(app);
    const m = (method: string, path: string, body?: unknown) => admin(app, method, path, body);
    await m('POST', '/team/new', {
      team_id: 'ta',
      max_budget: 100,
      budget_limits: [{ budget_duration: '1d', max_budget: 60 }],
      rpm_limit: 100,
      tpm_limit: 10_000,
      max_parallel_requests: 10,
      models: ['gpt-4o-mini', 'gpt-4o'],
    });
    await m('POST', '/team/new', { team_id: 'tb', max_budget: 50 });
    for (const [user, team, role, personal] of [
      ['alice', 'ta', 'admin', null],
      ['bob', 'ta', 'user', null],
      ['carol', 'tb', 'admin', null],
      ['dave', 'tb', 'user', 5],
    ] as const) {
      await m('POST', '/user/new', { user_id: user, auto_create_key: false, max_budget: personal });
      await m('POST', '/team/member_add', { team_id: team, member: { user_id: user, role } });
    }
    await m('POST', '/user/new', { user_id: 'erin', auto_create_key: false });
    const keyOf = async (user: string, team: string) =>
      (await m('POST', '/key/generate', { user_id: user, team_id: team, max_budget: 10 })).body;
    const keys = {
      alice: await keyOf('alice', 'ta'),
      bob: await keyOf('bob', 'ta'),
      carol: await keyOf('carol', 'tb'),
      dave: await keyOf('dave', 'tb'),
    };
    const as = (key: string, [method, path, body]: Req) => admin(app, method, path, body, key);
    // What the master key sees of both teams and every user: a refused request must change none of it.
    const snapshot = async () => ({
      ta: (await m('GET', '/team/info?team_id=ta')).body,
      tb: (await m('GET', '/team/info?team_id=tb')).body,
      users: (await m('GET', '/user/list?page_size=100')).body,
      keys: await Promise.all(
        Object.values(keys).map(async (k) => (await m('GET', `/key/info?key=${k.token}`)).body),
      ),
    });
    return { app, m, keys, as, snapshot };
  }

  const future = '2099-01-01T00:00:00.000Z';

  it('refuses, naming the field, what would raise what the master key set, and changes nothing', async () => {
    const { app, m, keys, as, snapshot } = await world();
    await m('POST', '/key/block', { key: keys.bob.token }); // blocked by the master key
    const before = await snapshot();
    const refusals: Array<[what: string, req: Req, param: string]> = [
      [
        'raise the team budget',
        ['POST', '/team/update', { team_id: 'ta', max_budget: 9_000_000 }],
        'max_budget',
      ],
      ['lower it too', ['POST', '/team/update', { team_id: 'ta', max_budget: 1 }], 'max_budget'],
      ['its soft budget', ['POST', '/team/update', { team_id: 'ta', soft_budget: 10 }], 'soft_budget'],
      ['its period', ['POST', '/team/update', { team_id: 'ta', budget_duration: '1d' }], 'budget_duration'],
      [
        'its windows',
        [
          'POST',
          '/team/update',
          { team_id: 'ta', budget_limits: [{ budget_duration: '1d', max_budget: 1e6 }] },
        ],
        'budget_limits',
      ],
      ['its rpm', ['POST', '/team/update', { team_id: 'ta', rpm_limit: 1_000_000 }], 'rpm_limit'],
      ['its tpm', ['POST', '/team/update', { team_id: 'ta', tpm_limit: null }], 'tpm_limit'],
      [
        'its parallel limit',
        ['POST', '/team/update', { team_id: 'ta', max_parallel_requests: 99 }],
        'max_parallel_requests',
      ],
      ['its models', ['POST', '/team/update', { team_id: 'ta', models: ['*'] }], 'models'],
      ['its blocked flag', ['POST', '/team/update', { team_id: 'ta', blocked: true }], 'blocked'],
      [
        'raise her own key',
        ['POST', '/key/update', { key: keys.alice.token, max_budget: 500 }],
        'max_budget',
      ],
      [
        'past the daily window',
        ['POST', '/key/update', { key: keys.alice.token, max_budget: 61 }],
        'max_budget',
      ],
      [
        'by a temporary increase',
        [
          'POST',
          '/key/update',
          { key: keys.alice.token, temp_budget_increase: 90.5, temp_budget_expiry: future },
        ],
        'temp_budget_increase',
      ],
      [
        'a key window',
        [
          'POST',
          '/key/update',
          { key: keys.alice.token, budget_limits: [{ budget_duration: '1h', max_budget: 61 }] },
        ],
        'budget_limits',
      ],
      [
        'a model budget',
        ['POST', '/key/update', { key: keys.alice.token, model_max_budget: { 'gpt-4o': 1000 } }],
        'model_max_budget.gpt-4o',
      ],
      ['a key rpm', ['POST', '/key/update', { key: keys.alice.token, rpm_limit: 101 }], 'rpm_limit'],
      [
        'a key model tpm',
        ['POST', '/key/update', { key: keys.alice.token, model_tpm_limit: { 'gpt-4o': 10_001 } }],
        'model_tpm_limit.gpt-4o',
      ],
      [
        'a model the team lacks',
        ['POST', '/key/update', { key: keys.alice.token, models: ['gpt-5'] }],
        'models',
      ],
      ['every model', ['POST', '/key/update', { key: keys.alice.token, models: ['*'] }], 'models'],
      [
        'a new key over the cap',
        ['POST', '/key/generate', { team_id: 'ta', max_budget: 100.01 }],
        'max_budget',
      ],
      [
        'a new key over the rate',
        ['POST', '/key/generate', { team_id: 'ta', max_parallel_requests: 11 }],
        'max_parallel_requests',
      ],
      [
        'regenerated over the cap',
        ['POST', '/key/regenerate', { key: keys.alice.token, max_budget: 101 }],
        'max_budget',
      ],
      [
        'raise max_budget_in_team',
        ['POST', '/team/member_update', { team_id: 'ta', user_id: 'bob', max_budget_in_team: 1000 }],
        'max_budget_in_team',
      ],
      [
        'a member over the rate',
        ['POST', '/team/member_update', { team_id: 'ta', user_id: 'bob', rpm_limit: 1000 }],
        'rpm_limit',
      ],
      [
        'add a member over the cap',
        ['POST', '/team/member_add', { team_id: 'ta', member: { user_id: 'erin' }, max_budget_in_team: 101 }],
        'max_budget_in_team',
      ],
      ['unblock what the master key blocked', ['POST', '/key/unblock', { key: keys.bob.token }], 'blocked'],
      ['through /key/update', ['POST', '/key/update', { key: keys.bob.token, blocked: false }], 'blocked'],
      [
        'pull in a user of team tb',
        ['POST', '/team/member_add', { team_id: 'ta', member: { user_id: 'dave' } }],
        'member',
      ],
      [
        'among others',
        ['POST', '/team/member_add', { team_id: 'ta', member: [{ user_id: 'erin' }, { user_id: 'carol' }] }],
        'member',
      ],
      [
        'claim a user id',
        ['POST', '/team/member_add', { team_id: 'ta', member: { user_id: 'ghost' } }],
        'member',
      ],
      [
        'create a user by email',
        ['POST', '/team/member_add', { team_id: 'ta', member: { user_email: 'new@acme.com' } }],
        'member',
      ],
      [
        "mint a key on tb's user",
        ['POST', '/key/generate', { team_id: 'ta', user_id: 'dave', max_budget: 1 }],
        'user_id',
      ],
    ];
    for (const [what, req, param] of refusals) {
      const res = await as(keys.alice.key, req);
      expect(res.status, what).toBe(403);
      expect(res.body.error, what).toMatchObject({ type: 'auth_error', code: '403', param });
    }
    // Blocking a key again keeps the master key's block.
    expect((await as(keys.alice.key, ['POST', '/key/block', { key: keys.bob.token }])).status).toBe(200);
    expect((await as(keys.alice.key, ['POST', '/key/unblock', { key: keys.bob.token }])).status).toBe(403);
    // Not a team admin: refused before any of that.
    expect(
      (await as(keys.dave.key, ['POST', '/key/update', { key: keys.dave.token, max_budget: 1 }])).status,
    ).toBe(403);
    expect(await snapshot()).toEqual(before);
    expect(await call(app, keys.bob.key)).toBe(401);
    // New metadata (allowed) does not drop who blocked the key.
    for (const req of [
      ['POST', '/key/update', { key: keys.bob.token, metadata: {} }],
      ['POST', '/key/regenerate', { key: keys.bob.token, metadata: { note: 'x' } }],
    ] as const) {
      expect((await as(keys.alice.key, req)).status, req[1]).toBe(200);
      expect((await as(keys.alice.key, ['POST', '/key/unblock', { key: keys.bob.token }])).status).toBe(403);
    }
    // The id alice tried to claim is still the master key's to create; dave still spends on his own.
    expect((await m('POST', '/user/new', { user_id: 'ghost', auto_create_key: false })).status).toBe(200);
    expect(await call(app, keys.dave.key)).toBe(200);
  });

  it("refuses, for anyone, metadata that forges spendguard's own fields", async () => {
    const { keys, as, m } = await world();
    for (const [metadata, param] of [
      [
        { spendguard_base_max_budget: 9_000_000, temp_budget_increase: 1, temp_budget_expiry: future },
        'temp_budget_increase',
      ],
      [{ spendguard_blocked_by: 'team_admin' }, 'spendguard_blocked_by'],
    ] as const) {
      const forged = await as(keys.alice.key, ['POST', '/key/update', { key: keys.bob.token, metadata }]);
      expect(forged.status).toBe(400);
      expect(forged.body.error.param).toBe(`metadata.${param}`);
      const byMaster = await m('POST', '/key/generate', { team_id: 'ta', metadata });
      expect(byMaster.status).toBe(400);
      expect(byMaster.body.error.param).toBe(`metadata.${param}`);
    }
    // A running increase's fields sent back as read pass, and the increase stays.
    await m('POST', '/key/update', {
      key: keys.bob.token,
      temp_budget_increase: 5,
      temp_budget_expiry: future,
    });
    const info = (await m('GET', `/key/info?key=${keys.bob.token}`)).body.info;
    expect(info.max_budget).toBe(15);
    const resent = await as(keys.alice.key, [
      'POST',
      '/key/update',
      { key: keys.bob.token, metadata: { ...info.metadata, note: 'x' } },
    ]);
    expect(resent.status).toBe(200);
    expect(resent.body).toMatchObject({ max_budget: 15, metadata: { ...info.metadata, note: 'x' } });
  });

  it('allows what a team admin is for: its members, keys and their budgets within the team', async () => {
    const { app, m, keys, as } = await world();
    const ok = async (req: Req) => {
      const res = await as(keys.alice.key, req);
      expect(res.status, `${req[0]} ${req[1]}: ${JSON.stringify(res.body)}`).toBe(200);
      return res.body;
    };
    // The team's alias and metadata; its budget and limits sent back unchanged.
    expect(
      await ok(['POST', '/team/update', { team_id: 'ta', team_alias: 'web', metadata: { cost_center: 7 } }]),
    ).toMatchObject({ data: { team_alias: 'web', max_budget: 100, rpm_limit: 100 } });
    await ok([
      'POST',
      '/team/update',
      { team_id: 'ta', max_budget: 100, rpm_limit: 100, models: ['gpt-4o-mini', 'gpt-4o'], blocked: false },
    ]);
    // Keys, up to the team cap and limits, on the team's models; her own key too.
    const made = await ok([
      'POST',
      '/key/generate',
      {
        team_id: 'ta',
        user_id: 'bob',
        max_budget: 60,
        rpm_limit: 100,
        models: ['gpt-4o-mini'],
        budget_limits: [{ budget_duration: '1h', max_budget: 60 }],
        model_max_budget: { 'gpt-4o-mini': 60 },
      },
    ]);
    expect(made).toMatchObject({ team_id: 'ta', user_id: 'bob', max_budget: 60 });
    expect(await call(app, made.key)).toBe(200);
    expect(await ok(['POST', '/key/update', { key: keys.alice.token, max_budget: 60 }])).toMatchObject({
      max_budget: 60,
    });
    await ok(['POST', '/key/update', { key: keys.alice.token, max_budget: null }]); // the team's cap binds it
    await ok([
      'POST',
      '/key/update',
      { key: made.token, temp_budget_increase: 5, temp_budget_expiry: future, max_budget: 55 },
    ]);
    await ok(['POST', '/key/regenerate', { key: made.token, max_budget: 20 }]);
    // Members: an existing user in no team, with a budget and limits within the team's.
    const added = await ok([
      'POST',
      '/team/member_add',
      {
        team_id: 'ta',
        member: { user_id: 'erin', role: 'admin' },
        max_budget_in_team: 60,
        tpm_limit: 10_000,
      },
    ]);
    expect(added.updated_team_memberships[0]).toMatchObject({ user_id: 'erin', max_budget_in_team: 60 });
    await ok([
      'POST',
      '/team/member_update',
      { team_id: 'ta', user_id: 'bob', max_budget_in_team: 10, rpm_limit: 5 },
    ]);
    // Blocks it set, it lifts; a key the master key blocked and then unblocked is its own again.
    await ok(['POST', '/key/block', { key: keys.bob.token }]);
    expect(await call(app, keys.bob.key)).toBe(401);
    await ok(['POST', '/key/unblock', { key: keys.bob.token }]);
    expect(await call(app, keys.bob.key)).toBe(200);
    await m('POST', '/key/block', { key: keys.bob.token });
    await m('POST', '/key/unblock', { key: keys.bob.token });
    await ok(['POST', '/key/update', { key: keys.bob.token, blocked: true }]);
    await ok(['POST', '/key/update', { key: keys.bob.token, blocked: false }]);
    expect(await call(app, keys.bob.key)).toBe(200);
    // A team with no cap binds no key budget; the master key is never bound.
    await m('POST', '/team/new', { team_id: 'tc' });
    await m('POST', '/team/member_add', { team_id: 'tc', member: { user_id: 'alice', role: 'admin' } });
    await ok(['POST', '/key/generate', { team_id: 'tc', max_budget: 9_000_000 }]);
    expect((await m('POST', '/key/update', { key: keys.alice.token, max_budget: 9_000_000 })).status).toBe(
      200,
    );
    expect((await m('POST', '/team/member_add', { team_id: 'ta', member: { user_id: 'dave' } })).status).toBe(
      200,
    );
    await ok(['POST', '/team/member_delete', { team_id: 'ta', user_id: 'dave' }]);
  });
});
