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

describe.each(ADAPTERS)('key lifecycle on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });

  it('blocks, unblocks, updates, lists and deletes keys; a change reaches a second instance', async () => {
    const a = await startTestApp(framework);
    apps.push(a);
    const b = await startTestApp(framework, { dbPath: a.dbPath });
    apps.push(b);
    await admin(a, 'POST', '/user/new', { user_id: 'dev', auto_create_key: false });
    const key = (await admin(a, 'POST', '/key/generate', { user_id: 'dev', max_budget: 5 })).body;
    expect((await call(a, key.key)).status).toBe(200);
    expect((await call(b, key.key)).status).toBe(200); // b has it cached now

    const blocked = await admin(a, 'POST', '/key/block', { key: key.key });
    expect(blocked.status).toBe(200);
    expect(blocked.body).toMatchObject({ key: key.token, blocked: true });
    expect((await call(a, key.key)).status).toBe(401);
    // b trusts its cached key for keyCacheTtlMs (5 s) unless the change feed tells it first.
    const onB = await untilRefused(() => call(b, key.key));
    expect(onB.status).toBe(401);
    expect(onB.body.error.message).toMatch(/blocked/);

    expect((await admin(a, 'POST', '/key/unblock', { key: key.token })).body.blocked).toBe(false);
    // Every call b served before it heard of the block was charged: each 8 x 1.5e-7 + 5 x 6e-7.
    await b.settled();
    const served = (await admin(a, 'GET', `/spend/logs?api_key=${key.token}`)).body.length as number;
    expect(served).toBeGreaterThanOrEqual(2);
    const updated = await admin(a, 'POST', '/key/update', {
      key: key.key,
      max_budget: 7,
      key_alias: 'ci-bot',
      models: ['gpt-4o-mini'],
    });
    expect(updated.body).toMatchObject({ key_alias: 'ci-bot', max_budget: 7, models: ['gpt-4o-mini'] });
    expect(Math.round(updated.body.spend * 1e9)).toBe(served * 4_200); // spend survives an update
    expect((await call(a, key.key)).status).toBe(200);
    const wrongModel = await fetch(`${a.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}` },
      body: JSON.stringify({ model: 'gpt-4o', messages: [] }),
    });
    expect(wrongModel.status).toBe(401);

    const list = await admin(a, 'GET', '/key/list?user_id=dev');
    expect(list.body).toMatchObject({ keys: [key.token], total_count: 1 });
    const full = await admin(a, 'GET', '/key/list?user_id=dev&return_full_object=true');
    expect(full.body.keys[0]).toMatchObject({ token: key.token, key_alias: 'ci-bot' });

    const missing = await admin(a, 'POST', '/key/delete', { keys: [key.key, 'sk-doesnotexistdoesnotexist'] });
    expect(missing.status).toBe(404);
    expect((await call(a, key.key)).status).toBe(200); // nothing was deleted
    const deleted = await admin(a, 'POST', '/key/delete', { keys: [key.key] });
    expect(deleted.body).toEqual({ deleted_keys: [key.key] });
    expect((await call(a, key.key)).status).toBe(401);
    expect((await admin(a, 'GET', `/key/info?key=${key.token}`)).status).toBe(404);
    await a.settled();
    expect((await admin(a, 'GET', `/spend/logs?api_key=${key.token}`)).body).toHaveLength(served + 2);
  });

  it('answers 422 (a body that fails its schema) and 404 to bad lifecycle requests', async () => {
    const a = await startTestApp(framework);
    apps.push(a);
    const noKey = await admin(a, 'POST', '/key/block', {});
    expect(noKey.status).toBe(422);
    expect(noKey.body.detail[0]).toMatchObject({ type: 'missing', loc: ['body', 'key'] });
    expect((await admin(a, 'POST', '/key/block', { key: 'sk-nope-nope-nope-nope' })).status).toBe(404);
    expect((await admin(a, 'POST', '/key/delete', { keys: [] })).status).toBe(422);
    const key = (await admin(a, 'POST', '/key/generate', {})).body;
    const bad = await admin(a, 'POST', '/key/update', { key: key.key, max_budget: -3 });
    expect(bad.status).toBe(422);
    expect(bad.body.detail[0]).toMatchObject({
      type: 'greater_than_equal',
      loc: ['body', 'max_budget'],
      input: -3,
    });
    expect((await admin(a, 'GET', `/key/info?key=${key.key}`)).body.info.max_budget).toBeNull();
  });
});
