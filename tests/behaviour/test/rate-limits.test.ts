import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const T0 = new Date('2026-03-02T10:00:00.000Z');
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

function clientFor(app: TestApp, key: string): OpenAI {
  // No retries: the client would otherwise honour retry-after and try again.
  return new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
}

function ask(client: OpenAI, model = 'gpt-4o', maxTokens = 8) {
  return client.chat.completions
    .create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: maxTokens })
    .withResponse();
}

/** A refused call as the openai client sees it. */
async function refusal(promise: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OpenAI.RateLimitError);
  return error as InstanceType<typeof OpenAI.APIError>;
}

async function keyWith(app: TestApp, body: Record<string, unknown>): Promise<string> {
  const res = await admin(app, 'POST', '/key/generate', body);
  expect(res.status).toBe(200);
  return res.body.key;
}

describe.each(ADAPTERS)('rate limits on $name', (framework) => {
  let app: TestApp;
  let clock = T0;
  afterEach(async () => {
    await app.close();
  });

  it('answers the N+1th request of a window with a 429 and its headers, and a new window re-opens it', async () => {
    clock = T0;
    app = await startTestApp(framework, { now: () => clock });
    const key = await keyWith(app, {
      key_alias: 'chat-bot',
      rpm_limit: 3,
      tpm_limit: 100_000,
      max_budget: 10,
    });
    const info = await admin(app, 'GET', `/key/info?key=${key}`);
    expect(info.body.info).toMatchObject({ rpm_limit: 3, tpm_limit: 100_000, max_parallel_requests: null });
    const client = clientFor(app, key);

    let tokens = 0;
    for (const remaining of [2, 1, 0]) {
      clock = at(10);
      const { data, response } = await ask(client);
      expect(response.headers?.get('x-ratelimit-limit-requests')).toBe('3');
      expect(response.headers?.get('x-ratelimit-remaining-requests')).toBe(String(remaining));
      expect(response.headers?.get('x-ratelimit-reset-requests')).toBe('60'); // the window began at T0 + 10 s
      expect(response.headers?.get('x-ratelimit-limit-tokens')).toBe('100000');
      // Tokens are counted when a call settles: the calls before this one.
      expect(response.headers?.get('x-ratelimit-remaining-tokens')).toBe(String(100_000 - tokens));
      expect(response.headers?.get('x-ratelimit-reset-tokens')).toBe('60');
      tokens += data.usage!.total_tokens;
      await app.settled();
    }

    clock = at(30);
    const error = await refusal(ask(client));
    expect(error.status).toBe(429);
    expect(error.headers?.get('retry-after')).toBe('40');
    expect(error.headers?.get('x-ratelimit-limit-requests')).toBe('3');
    expect(error.headers?.get('x-ratelimit-remaining-requests')).toBe('0');
    expect(error.headers?.get('x-ratelimit-reset-requests')).toBe('40');
    // LiteLLM's error shape, naming the scope and the limit.
    const raw = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(raw.status).toBe(429);
    expect(await raw.json()).toEqual({
      error: {
        message:
          'Rate limit exceeded for Key=chat-bot. Limit type: requests. Current limit: 3, Remaining: 0. Limit resets at: 2026-03-02T10:01:10.000Z',
        type: 'rate_limit_error',
        param: null,
        code: '429',
      },
    });

    // Refused calls cost nothing and were never sent to the provider.
    await app.settled();
    expect(app.simulator.requestCount).toBe(3);
    const logs = await admin(app, 'GET', `/spend/logs?api_key=${key}`);
    expect(logs.body).toHaveLength(3);
    const spent = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info.spend;
    expect(spent).toBeCloseTo(
      logs.body.reduce((sum: number, l: { spend: number }) => sum + l.spend, 0),
      9,
    );

    clock = at(70); // the window that began at T0 + 10 s is over
    const { response } = await ask(client);
    expect(response.headers?.get('x-ratelimit-remaining-requests')).toBe('2');
    expect(response.headers?.get('x-ratelimit-remaining-tokens')).toBe('100000');
    expect(response.headers?.get('x-ratelimit-reset-requests')).toBe('60');
  });

  it('refuses once the window used its tokens, counted from the calls actual usage', async () => {
    clock = T0;
    app = await startTestApp(framework, { now: () => clock });
    const key = await keyWith(app, { tpm_limit: 45 });
    const client = clientFor(app, key);
    const { data } = await ask(client, 'gpt-4o', 40);
    expect(data.usage!.total_tokens).toBeGreaterThan(45);
    await app.settled();
    const error = await refusal(ask(client));
    expect(error.message).toContain('Limit type: tokens. Current limit: 45');
    expect(error.headers?.get('x-ratelimit-limit-tokens')).toBe('45');
    expect(error.headers?.get('x-ratelimit-remaining-tokens')).toBe('0');
    expect(error.headers?.get('retry-after')).toBe('60');
    clock = at(60);
    expect((await ask(client)).response.status).toBe(200);
  });

  it('limits requests per model on a key, and other models not', async () => {
    clock = T0;
    app = await startTestApp(framework, { now: () => clock });
    const key = await keyWith(app, { key_alias: 'per-model', model_rpm_limit: { 'gpt-4o': 1 } });
    expect((await admin(app, 'GET', `/key/info?key=${key}`)).body.info.model_rpm_limit).toEqual({
      'gpt-4o': 1,
    });
    const client = clientFor(app, key);
    const first = await ask(client);
    expect(first.response.headers?.get('x-ratelimit-remaining-requests')).toBe('0');
    const error = await refusal(ask(client));
    expect(error.message).toContain(
      'Rate limit exceeded for Key=per-model model=gpt-4o. Limit type: requests.',
    );
    const other = await ask(client, 'gpt-4o-mini');
    expect(other.response.status).toBe(200);
    expect(other.response.headers?.get('x-ratelimit-limit-requests')).toBeNull();
  });

  it('applies team and user limits to every key of the team or user, naming the scope', async () => {
    clock = T0;
    app = await startTestApp(framework, { now: () => clock });
    const team = await admin(app, 'POST', '/team/new', { team_alias: 'search-team', rpm_limit: 2 });
    expect(team.body).toMatchObject({ rpm_limit: 2, tpm_limit: null });
    const user = await admin(app, 'POST', '/user/new', {
      user_id: 'bob',
      team_id: 'search-team',
      tpm_limit: 1000,
      auto_create_key: false,
    });
    expect(user.body).toMatchObject({ tpm_limit: 1000 });
    expect((await admin(app, 'GET', '/user/info?user_id=bob')).body.user_info.tpm_limit).toBe(1000);
    expect((await admin(app, 'GET', '/team/info?team_id=search-team')).body.team_info.rpm_limit).toBe(2);
    const a = clientFor(app, await keyWith(app, { user_id: 'bob', team_id: 'search-team' }));
    const b = clientFor(app, await keyWith(app, { team_id: 'search-team' }));
    const first = await ask(a);
    expect(first.response.headers?.get('x-ratelimit-remaining-requests')).toBe('1');
    expect(first.response.headers?.get('x-ratelimit-limit-tokens')).toBe('1000');
    await ask(b);
    const error = await refusal(ask(a));
    expect(error.message).toContain('Rate limit exceeded for Team=search-team. Limit type: requests.');
  });

  it('changes team and user limits with /team/update and /user/update, for keys already in use', async () => {
    clock = T0;
    app = await startTestApp(framework, { now: () => clock });
    await admin(app, 'POST', '/team/new', { team_id: 'ops', tpm_limit: 5000 });
    await admin(app, 'POST', '/user/new', { user_id: 'carol', team_id: 'ops', auto_create_key: false });
    const client = clientFor(app, await keyWith(app, { user_id: 'carol', team_id: 'ops' }));
    expect((await ask(client)).response.headers?.get('x-ratelimit-limit-requests')).toBeNull();

    // The team gets an rpm limit (its tpm limit stays); the key, cached since its first call, follows.
    const team = await admin(app, 'POST', '/team/update', { team_id: 'ops', rpm_limit: 2 });
    expect(team.status).toBe(200);
    expect(team.body.data).toMatchObject({ rpm_limit: 2, tpm_limit: 5000 });
    expect((await admin(app, 'GET', '/team/info?team_id=ops')).body.team_info).toMatchObject({
      rpm_limit: 2,
      tpm_limit: 5000,
    });
    // (The call before the update was under no rpm limit, so not counted in one.)
    expect((await ask(client)).response.headers?.get('x-ratelimit-remaining-requests')).toBe('1');
    expect((await ask(client)).response.headers?.get('x-ratelimit-remaining-requests')).toBe('0');
    expect((await refusal(ask(client))).message).toContain('Rate limit exceeded for Team=ops.');

    // null removes it; the user's own limit then applies.
    expect(
      (await admin(app, 'POST', '/team/update', { team_id: 'ops', rpm_limit: null })).body.data,
    ).toMatchObject({
      rpm_limit: null,
      tpm_limit: 5000,
    });
    const user = await admin(app, 'POST', '/user/update', { user_id: 'carol', rpm_limit: 1 });
    expect(user.status).toBe(200);
    expect(user.body).toMatchObject({ user_id: 'carol', rpm_limit: 1 });
    expect((await admin(app, 'GET', '/user/info?user_id=carol')).body.user_info.rpm_limit).toBe(1);
    clock = at(61); // a new minute: the team's window is spent, the user's is not yet used
    expect((await ask(client)).response.status).toBe(200);
    expect((await refusal(ask(client))).message).toContain('Rate limit exceeded for User=carol.');
    // An update that sets no limit leaves them; a bad one is LiteLLM's 422 and changes nothing.
    expect(
      (await admin(app, 'POST', '/user/update', { user_id: 'carol', max_budget: 3 })).body,
    ).toMatchObject({
      rpm_limit: 1,
      max_budget: 3,
    });
    for (const [path, body] of [
      ['/team/update', { team_id: 'ops', tpm_limit: -1 }],
      ['/user/update', { user_id: 'carol', max_parallel_requests: 'two' }],
    ] as const) {
      const res = await admin(app, 'POST', path, body);
      expect(res.status, path).toBe(422);
      expect(res.body.detail[0].loc, path).toEqual(['body', Object.keys(body)[1]]);
    }
    expect((await admin(app, 'GET', '/team/info?team_id=ops')).body.team_info.tpm_limit).toBe(5000);
    expect(
      (await admin(app, 'GET', '/user/info?user_id=carol')).body.user_info.max_parallel_requests,
    ).toBeNull();
  });

  it('changes limits with /key/update at once, and refuses bad limits with a 422 writing nothing', async () => {
    clock = T0;
    app = await startTestApp(framework, { now: () => clock });
    const key = await keyWith(app, {});
    const client = clientFor(app, key);
    expect((await ask(client)).response.headers?.get('x-ratelimit-limit-requests')).toBeNull();
    const updated = await admin(app, 'POST', '/key/update', { key, rpm_limit: 1, max_parallel_requests: 4 });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ rpm_limit: 1, max_parallel_requests: 4 });
    expect((await ask(client)).response.headers?.get('x-ratelimit-remaining-requests')).toBe('0');
    await refusal(ask(client));
    // Only the fields given change; null removes a limit.
    const removed = await admin(app, 'POST', '/key/update', { key, rpm_limit: null });
    expect(removed.body).toMatchObject({ rpm_limit: null, max_parallel_requests: 4 });
    expect((await ask(client)).response.status).toBe(200);

    for (const bad of [
      { rpm_limit: -1 },
      { tpm_limit: 1.5 },
      { max_parallel_requests: 'ten' },
      { model_rpm_limit: { 'gpt-4o': -2 } },
      { model_tpm_limit: ['gpt-4o'] },
    ]) {
      const before = (await admin(app, 'GET', '/key/list')).body.total_count;
      const res = await admin(app, 'POST', '/key/generate', { key_alias: 'bad', ...bad });
      expect(res.status).toBe(422);
      expect(res.body.detail[0].loc.slice(0, 2)).toEqual(['body', Object.keys(bad)[0]]);
      expect((await admin(app, 'GET', '/key/list')).body.total_count).toBe(before);
      const upd = await admin(app, 'POST', '/key/update', { key, ...bad });
      expect(upd.status).toBe(422);
      expect(upd.body.detail[0].loc.slice(0, 2)).toEqual(['body', Object.keys(bad)[0]]);
    }
    expect((await admin(app, 'GET', `/key/info?key=${key}`)).body.info).toMatchObject({
      rpm_limit: null,
      max_parallel_requests: 4,
    });
    const team = await admin(app, 'POST', '/team/new', { team_alias: 'x', rpm_limit: -5 });
    expect(team.status).toBe(422);
  });

  it('holds max_parallel_requests under 100 concurrent requests and frees the slots as calls end', async () => {
    clock = T0;
    app = await startTestApp(framework, { now: () => clock, simulator: { latencyMs: 400 } });
    const key = await keyWith(app, { max_parallel_requests: 5 });
    const client = clientFor(app, key);
    const outcomes = await Promise.all(
      Array.from({ length: 100 }, () =>
        ask(client).then(
          () => 'ok' as const,
          (e: unknown) => e,
        ),
      ),
    );
    const admitted = outcomes.filter((o) => o === 'ok').length;
    const refused = outcomes.filter((o) => o !== 'ok') as InstanceType<typeof OpenAI.APIError>[];
    // The provider never saw more than 5 calls at once, whatever the timing.
    expect(app.simulator.peakConcurrency).toBeLessThanOrEqual(5);
    expect(admitted).toBeGreaterThanOrEqual(5);
    expect(admitted + refused.length).toBe(100);
    for (const e of refused) {
      expect(e).toBeInstanceOf(OpenAI.RateLimitError);
      expect(e.message).toContain('Limit type: max_parallel_requests. Current limit: 5');
      expect(e.headers?.get('retry-after')).toBe('1');
    }
    expect(refused.length).toBeGreaterThan(0);
    // Every slot came back: five at once are admitted again.
    await app.settled();
    const again = await Promise.all(Array.from({ length: 5 }, () => ask(client)));
    expect(again.every((r) => r.response.status === 200)).toBe(true);
  });
});

describe('rate limits shared by two instances on one SQLite file', () => {
  const [framework] = ADAPTERS;
  let a: TestApp;
  let b: TestApp;
  afterEach(async () => {
    await a.close();
    await b.close();
  });

  it('counts requests and parallel calls of both instances against one limit', async () => {
    let clock = T0;
    a = await startTestApp(framework!, { now: () => clock, simulator: { latencyMs: 300 } });
    b = await startTestApp(framework!, { now: () => clock, dbPath: a.dbPath });
    const key = await keyWith(a, { key_alias: 'shared', rpm_limit: 4, max_parallel_requests: 2 });
    const onA = clientFor(a, key);
    const onB = clientFor(b, key);

    // Two calls in flight on A hold both parallel slots: B is refused until they end.
    const inFlight = [ask(onA), ask(onA)];
    while (a.simulator.requestCount < 2) await new Promise((r) => setImmediate(r));
    const parallel = await refusal(ask(onB));
    expect(parallel.message).toContain(
      'Rate limit exceeded for Key=shared. Limit type: max_parallel_requests.',
    );
    await Promise.all(inFlight);
    await a.settled();

    // Two requests counted on A; the refused one counted nowhere (a refusal is all or none).
    expect((await ask(onB)).response.headers?.get('x-ratelimit-remaining-requests')).toBe('1');
    expect((await ask(onA)).response.headers?.get('x-ratelimit-remaining-requests')).toBe('0');
    const error = await refusal(ask(onA));
    expect(error.message).toContain('Limit type: requests. Current limit: 4');
    await refusal(ask(onB));

    clock = at(60);
    expect((await ask(onA)).response.headers?.get('x-ratelimit-remaining-requests')).toBe('3');
    expect((await ask(onB)).response.headers?.get('x-ratelimit-remaining-requests')).toBe('2');
  });
});
