import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BudgetAlertPayload } from '@spendguard/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const SECRET = 'whsec-test-0123456789abcdef';

interface Delivery {
  at: number;
  headers: IncomingHttpHeaders;
  raw: string;
  body: BudgetAlertPayload;
  status: number;
}

/** A real webhook receiver on loopback; `respond` picks the status of each delivery (1-based count). */
async function startReceiver(respond: (d: Delivery, n: number) => number | Promise<number> = () => 200) {
  const deliveries: Delivery[] = [];
  const waiting: Array<{ n: number; resolve: () => void }> = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (raw += chunk));
    req.on('end', async () => {
      const d: Delivery = { at: Date.now(), headers: req.headers, raw, body: JSON.parse(raw), status: 0 };
      deliveries.push(d);
      for (const w of waiting.filter((w) => deliveries.length >= w.n)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve();
      }
      d.status = await respond(d, deliveries.length);
      res.writeHead(d.status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/spend`,
    deliveries,
    /** Resolves once `n` deliveries have arrived (whatever the receiver answers them). */
    received: (n: number) =>
      new Promise<void>((resolve) => {
        if (deliveries.length >= n) resolve();
        else waiting.push({ n, resolve });
      }),
    /** Deliveries the receiver accepted. */
    accepted: () => deliveries.filter((d) => d.status >= 200 && d.status < 300),
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}
type Receiver = Awaited<ReturnType<typeof startReceiver>>;

/** What a receiver does: recompute the HMAC over the raw body and compare in constant time. */
function signatureValid(d: Delivery): boolean {
  const expected = Buffer.from(`sha256=${createHmac('sha256', SECRET).update(d.raw).digest('hex')}`);
  const given = Buffer.from(String(d.headers['x-spendguard-signature'] ?? ''));
  return given.length === expected.length && timingSafeEqual(given, expected);
}

describe.each(ADAPTERS)('budget alert webhooks on $name', (framework) => {
  const apps: TestApp[] = [];
  const receivers: Receiver[] = [];
  let clock = new Date('2026-03-02T10:00:00.000Z');
  const errors: string[] = [];
  // Every test starts from the same time, whichever ran before it (one moves the clock a day on).
  beforeEach(() => {
    clock = new Date('2026-03-02T10:00:00.000Z');
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    for (const r of receivers.splice(0)) await r.close();
    errors.length = 0;
  });

  async function setup(
    receiver: Receiver,
    options: { dbPath?: string; thresholds?: number[]; guardOptions?: Record<string, unknown> } = {},
  ) {
    const app = await startTestApp(framework, {
      now: () => clock,
      dbPath: options.dbPath,
      guardOptions: {
        // Alerts watch spend, so let calls go past the caps instead of refusing them.
        enforcement: 'soft',
        alerts: {
          webhookUrl: receiver.url,
          secret: SECRET,
          retries: 3,
          retryDelayMs: 30,
          ...(options.thresholds ? { thresholds: options.thresholds } : {}),
        },
        logger: { warn: () => {}, error: (m) => errors.push(m) },
        ...options.guardOptions,
      },
    });
    apps.push(app);
    return app;
  }
  async function receiver(respond?: Parameters<typeof startReceiver>[0]) {
    const r = await startReceiver(respond);
    receivers.push(r);
    return r;
  }

  /** One call costing exactly `completionTokens` x $0.00001 (gpt-4o output), settled, its alerts sent. */
  async function spend(
    app: TestApp,
    key: string,
    completionTokens: number,
    extra: Record<string, unknown> = {},
  ) {
    app.simulator.scriptNextUsage({ prompt_tokens: 0, completion_tokens: completionTokens });
    const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], ...extra }),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    await app.settled();
    await app.guard.alerts!.flush();
  }
  const thresholdsOf = (ds: Delivery[]) => ds.map((d) => d.body.threshold);

  it('sends each threshold once, signed; one call crossing 50 % and 80 % sends both, lowest first', async () => {
    const hooks = await receiver();
    const app = await setup(hooks);
    const created = await admin(app, 'POST', '/key/generate', { max_budget: 0.01, key_alias: 'alerts-key' });
    const key = created.body.key;

    await spend(app, key, 300); // 30 %
    expect(hooks.deliveries).toHaveLength(0);
    await spend(app, key, 550); // 85 %: past 50 and 80 at once
    expect(thresholdsOf(hooks.deliveries)).toEqual([50, 80]);
    await spend(app, key, 50); // 90 %
    await spend(app, key, 40); // 94 %
    expect(thresholdsOf(hooks.deliveries)).toEqual([50, 80]);
    await spend(app, key, 60); // 100 %: 95 and 100 (and the budget is spent: the next call gets a 429)
    expect(thresholdsOf(hooks.deliveries)).toEqual([50, 80, 95, 100]);

    for (const d of hooks.deliveries) {
      expect(signatureValid(d)).toBe(true);
      expect(d.headers['content-type']).toBe('application/json');
      expect(d.headers['x-spendguard-timestamp']).toBe(
        String(Math.floor(Date.parse(d.body.timestamp) / 1000)),
      );
      expect(d.headers['x-spendguard-event-id']).toBe(d.body.event_id);
    }
    const [fifty, eighty, , hundred] = hooks.deliveries.map((d) => d.body);
    expect(fifty).toMatchObject({
      event: 'threshold_crossed',
      event_group: 'key',
      scope: { kind: 'key', id: created.body.token, alias: 'alerts-key' },
      threshold: 50,
      threshold_spend: 0.005,
      spend: 0.0085,
      max_budget: 0.01,
      soft_budget: null,
      budget_duration: null,
      budget_reset_at: null,
      token: created.body.token,
      key_alias: 'alerts-key',
      timestamp: clock.toISOString(),
    });
    expect(fifty!.event_message).toMatch(/Key=alerts-key reached 50% of its budget/);
    expect(eighty).toMatchObject({ event: 'threshold_crossed', threshold: 80, spend: 0.0085 });
    expect(hundred).toMatchObject({ event: 'budget_crossed', threshold: 100, spend: 0.01 });
    expect(new Set(hooks.deliveries.map((d) => d.body.event_id)).size).toBe(4);
    // A tampered body no longer matches its signature.
    expect(
      signatureValid({ ...hooks.deliveries[0]!, raw: hooks.deliveries[0]!.raw.replace('50', '51') }),
    ).toBe(false);
  });

  it('retries a failing receiver with backoff, the same signed event each time, off the request path', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    // Fails the first two deliveries; holds the third until the test lets it go.
    const hooks = await receiver(async (_d, n) => {
      if (n <= 2) return 500;
      await held;
      return 204;
    });
    const app = await setup(hooks, { thresholds: [50] });
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 0.01 })).body.key;

    app.simulator.scriptNextUsage({ prompt_tokens: 0, completion_tokens: 600 });
    const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    await app.settled();
    // The call is answered and settled while the alert is still being delivered: the third attempt is
    // held by the receiver until now.
    await hooks.received(3);
    expect(hooks.accepted()).toHaveLength(0);
    release();
    await app.guard.alerts!.flush();

    expect(hooks.deliveries.map((d) => d.status)).toEqual([500, 500, 204]);
    expect(hooks.deliveries.map((d) => d.headers['x-spendguard-delivery-attempt'])).toEqual(['1', '2', '3']);
    expect(new Set(hooks.deliveries.map((d) => d.raw)).size).toBe(1);
    expect(hooks.deliveries.every(signatureValid)).toBe(true);
    const [a, b, c] = hooks.deliveries.map((d) => d.at);
    expect(b! - a!).toBeGreaterThanOrEqual(25); // 30 ms, then 60 ms
    expect(c! - b!).toBeGreaterThanOrEqual(55);
    expect(hooks.accepted()).toHaveLength(1);
    expect(errors).toEqual([]);
  });

  it('gives up after its retries, logs it, and never fails the call', async () => {
    const hooks = await receiver(() => 503);
    const app = await setup(hooks, { thresholds: [50] });
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 0.01 })).body.key;
    await spend(app, key, 700);
    expect(hooks.deliveries).toHaveLength(4); // 1 + 3 retries
    expect(app.guard.alerts!.failedDeliveries).toBe(1);
    expect(errors.join('\n')).toMatch(/could not deliver budget alert threshold_crossed .* \(HTTP 503\)/);
    await spend(app, key, 100); // claimed once: not sent again
    expect(hooks.deliveries).toHaveLength(4);
  });

  it('fires the thresholds again in the next budget period (controllable clock)', async () => {
    const hooks = await receiver();
    const app = await setup(hooks, { thresholds: [50, 100] });
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 0.01, budget_duration: '1d' })).body
      .key;
    await spend(app, key, 600);
    await spend(app, key, 100);
    expect(thresholdsOf(hooks.deliveries)).toEqual([50]);
    expect(hooks.deliveries[0]!.body.budget_reset_at).toBe('2026-03-03T00:00:00.000Z');

    clock = new Date('2026-03-03T00:00:05.000Z'); // the budget reset at midnight
    await spend(app, key, 400); // 40 % of the new period
    expect(thresholdsOf(hooks.deliveries)).toEqual([50]);
    await spend(app, key, 700); // 110 %
    expect(thresholdsOf(hooks.deliveries)).toEqual([50, 50, 100]);
    expect(hooks.deliveries.slice(1).map((d) => d.body.budget_reset_at)).toEqual([
      '2026-03-04T00:00:00.000Z',
      '2026-03-04T00:00:00.000Z',
    ]);
    expect(hooks.deliveries[1]!.body.spend).toBe(0.011);
    expect(hooks.deliveries[0]!.body.event_id).not.toBe(hooks.deliveries[1]!.body.event_id);
  });

  it('alerts on soft_budget for teams, users and keys, once each', async () => {
    const hooks = await receiver();
    const app = await setup(hooks);
    const team = await admin(app, 'POST', '/team/new', { team_alias: 'soft-team', soft_budget: 0.002 });
    expect(team.body.soft_budget).toBe(0.002);
    await admin(app, 'POST', '/user/new', {
      user_id: 'sam',
      team_id: 'soft-team',
      soft_budget: 0.005,
      max_budget: 1,
      auto_create_key: false,
    });
    const key = (
      await admin(app, 'POST', '/key/generate', { user_id: 'sam', team_id: 'soft-team', soft_budget: 0.01 })
    ).body.key;
    await spend(app, key, 300); // $0.003: past the team's soft budget
    await spend(app, key, 100);
    expect(hooks.deliveries.map((d) => [d.body.event, d.body.event_group])).toEqual([
      ['soft_budget_crossed', 'team'],
    ]);
    expect(hooks.deliveries[0]!.body).toMatchObject({
      scope: { kind: 'team', id: team.body.team_id, alias: 'soft-team' },
      threshold: null,
      threshold_spend: 0.002,
      soft_budget: 0.002,
      max_budget: null,
      team_alias: 'soft-team',
      user_id: 'sam',
    });
    await spend(app, key, 200); // $0.006: the user's
    // /key/update moves the key's soft budget below its spend: the next call alerts.
    await admin(app, 'POST', '/key/update', { key, soft_budget: 0.0065 });
    await spend(app, key, 50);
    expect(hooks.deliveries.map((d) => d.body.event_group)).toEqual(['team', 'user', 'key']);
    expect(hooks.deliveries.every(signatureValid)).toBe(true);
  });

  it('alerts on member, end-user, tag, model, global and window budgets, each naming its scope', async () => {
    const hooks = await receiver();
    const app = await setup(hooks, {
      thresholds: [50],
      guardOptions: { globalBudget: { maxBudget: 0.01, budgetDuration: '1d' } },
    });
    await admin(app, 'POST', '/team/new', { team_id: 'web' });
    await admin(app, 'POST', '/user/new', { user_id: 'ann', team_id: 'web', auto_create_key: false });
    await admin(app, 'POST', '/team/member_update', {
      team_id: 'web',
      user_id: 'ann',
      max_budget_in_team: 0.01,
    });
    await admin(app, 'POST', '/customer/new', { user_id: 'acme', max_budget: 0.01 });
    await admin(app, 'POST', '/tag/new', { name: 'feature:x', max_budget: 0.01 });
    const created = await admin(app, 'POST', '/key/generate', {
      user_id: 'ann',
      team_id: 'web',
      max_budget: 10,
      model_max_budget: { 'gpt-4o': 0.01 },
      budget_limits: [{ budget_duration: '1d', max_budget: 0.01 }],
    });
    expect(created.status).toBe(200);
    const token = created.body.token as string;
    // $0.006: 60 % of each $0.01 budget, 0.06 % of the key's own $10.
    await spend(app, created.body.key, 600, { user: 'acme', tags: ['feature:x'] });
    const byGroup = Object.fromEntries(hooks.deliveries.map((d) => [d.body.event_group, d.body]));
    expect(Object.keys(byGroup).sort()).toEqual(['customer', 'global', 'member', 'model', 'tag', 'window']);
    expect(hooks.deliveries).toHaveLength(6);
    const expected = {
      member: 'web:ann',
      customer: 'acme',
      tag: 'feature:x',
      model: `${token}:gpt-4o`,
      global: 'global',
      window: `key:${token}@1d`,
    };
    for (const [kind, id] of Object.entries(expected)) {
      expect(byGroup[kind], kind).toMatchObject({
        event: 'threshold_crossed',
        scope: { kind, id },
        threshold: 50,
        threshold_spend: 0.005,
        spend: 0.006,
        max_budget: 0.01,
        token,
        customer_id: 'acme',
      });
    }
    expect(hooks.deliveries.every(signatureValid)).toBe(true);
  });

  it('sends each alert once when two instances share the store and cross thresholds concurrently', async () => {
    const hooks = await receiver();
    const thresholds = [10, 25, 50];
    const a = await setup(hooks, { thresholds });
    const b = await setup(hooks, { dbPath: a.dbPath, thresholds });
    // 12 calls of about $0.00102 each: about 61 % of $0.02.
    const key = (await admin(a, 'POST', '/key/generate', { max_budget: 0.02 })).body.key;
    for (const app of [a, b])
      for (let i = 0; i < 6; i++) app.simulator.scriptNextUsage({ completion_tokens: 100 });
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        fetch(`${(i % 2 ? a : b).baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
        }).then((r) => r.arrayBuffer()),
      ),
    );
    for (const app of [a, b]) await app.settled();
    // Both instances now see every threshold as due; a settle on each asks again.
    for (const app of [a, b]) await spend(app, key, 1);
    for (const app of [a, b]) await app.guard.alerts!.flush();
    expect(thresholdsOf(hooks.deliveries).sort((x, y) => x! - y!)).toEqual([10, 25, 50]);
  });
});
