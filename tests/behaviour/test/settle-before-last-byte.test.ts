/**
 * On SQLite a call's settlement is committed before its response's last byte leaves, so a call the
 * client received whole is in the store with its real cost even if the process dies the next instant
 * (docs/crash-recovery.md). Checked by order of events on every adapter, JSON and streamed: the store
 * is made slow to commit, and the client must never have the whole response before the commit. A call
 * admitted from an escrow lease is the exception: the lease covers it, and it is written in a batch.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SettleInput } from '@spendguard/core/storage';
import { sqliteStorage } from '@spendguard/storage-sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

/**
 * A real SQLite store whose settlements commit late, each noting when it committed: 30 ms late, or, given
 * `until`, only once that promise resolves (the test then decides the order instead of a delay).
 */
function slowToCommit(events: string[], until?: Promise<unknown>) {
  const storage = sqliteStorage({ path: join(mkdtempSync(join(tmpdir(), 'spendguard-last-byte-')), 's.db') });
  const settle = storage.settle.bind(storage);
  storage.settle = async (input: SettleInput) => {
    // Without `until`: only makes an answer sent before its commit show up first (a guard that did not
    // wait would let the client finish inside these 30 ms); no assertion waits on this delay.
    await (until ?? new Promise((r) => setTimeout(r, 30)));
    const result = await settle(input);
    events.push(`committed ${input.log.requestId}`);
    return result;
  };
  return storage;
}

/**
 * A real SQLite store whose settlements commit at once until `hold(until)` is called; from then on each
 * one waits for `until` first. Each notes when it committed.
 */
function commitsHeldOnDemand(events: string[]) {
  const storage = sqliteStorage({ path: join(mkdtempSync(join(tmpdir(), 'spendguard-last-byte-')), 's.db') });
  const settle = storage.settle.bind(storage);
  let held: Promise<unknown> | null = null;
  storage.settle = async (input: SettleInput) => {
    if (held) await held;
    const result = await settle(input);
    events.push(`committed ${input.log.requestId}`);
    return result;
  };
  return { storage, hold: (until: Promise<unknown>) => (held = until) };
}

function chat(app: TestApp, key: string): Promise<Response> {
  return fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 5,
    }),
  });
}

describe.each(ADAPTERS)('settlement before the last byte, on $name', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  for (const stream of [false, true]) {
    it(`${stream ? 'streamed' : 'JSON'}: the client has the whole response only after its spend is committed`, async () => {
      const events: string[] = [];
      app = await startTestApp(framework, { storage: slowToCommit(events) });
      const { key } = (await admin(app, 'POST', '/key/generate', { max_budget: 10 })).body;
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'gpt-4o-mini',
            messages: [{ role: 'user', content: 'hi' }],
            max_tokens: 5,
            stream,
          }),
        });
        expect(res.status).toBe(200);
        const id = res.headers.get('x-litellm-call-id');
        await res.text();
        events.push(`received ${id}`);
        expect(events.slice(-2)).toEqual([`committed ${id}`, `received ${id}`]);
      }
      // And it is there, at its real cost (not an estimate), as soon as the client has it.
      const logs = (await admin(app, 'GET', '/spend/logs')).body;
      expect(logs).toHaveLength(3);
      for (const log of logs) expect(log.metadata).not.toHaveProperty('expired_reservation');
      expect(app.guard.settlesBeforeLastByte).toBe(true);
    });
  }

  /**
   * An app on a store whose commits can be held (`hold`), a key with room for leases, and a still
   * clock: every call falls in one escrow window, and the lease it opens stays valid. Its storage
   * timeout is longer than the test's: a response that waited for a held commit never comes.
   */
  async function leasingApp(events: string[], owner: { user?: Record<string, unknown> } = {}) {
    const { storage, hold } = commitsHeldOnDemand(events);
    const at = new Date('2026-06-01T12:00:00Z');
    app = await startTestApp(framework, {
      storage,
      now: () => at,
      guardOptions: { storageTimeoutMs: 600_000 },
    });
    if (!owner.user) {
      const { key } = (await admin(app, 'POST', '/key/generate', { max_budget: 1000 })).body;
      return { app, hold, key: key as string };
    }
    // A team key owned by a user (LiteLLM's usual setup): it spends under the team's budgets, and its
    // calls count on the user's counter too without being held to the user's budget.
    await admin(app, 'POST', '/team/new', { team_id: 'lease-team', max_budget: 1000 });
    await admin(app, 'POST', '/user/new', { user_id: 'lease-user', team_id: 'lease-team', ...owner.user });
    const { key } = (
      await admin(app, 'POST', '/key/generate', {
        user_id: 'lease-user',
        team_id: 'lease-team',
        max_budget: 1000,
      })
    ).body;
    return { app, hold, key: key as string };
  }

  /** Calls with reservations of their own until the key is busy enough for a lease (8 calls). */
  async function untilLeased(app: TestApp, key: string): Promise<void> {
    for (let i = 0; i < 10; i++) {
      const res = await chat(app, key);
      expect(res.status).toBe(200);
      await res.text();
    }
    expect(app.guard.escrow?.size).toBe(1);
  }

  /** Calls until the key is busy enough for a lease; then one whose commit waits for its client. */
  async function leasedCallWithCommitHeld(
    events: string[],
    app: TestApp,
    hold: (until: Promise<unknown>) => void,
    key: string,
  ): Promise<string> {
    await untilLeased(app, key);
    let received!: () => void;
    hold(new Promise<void>((resolve) => (received = resolve)));
    const res = await chat(app, key);
    expect(res.status).toBe(200);
    const id = res.headers.get('x-litellm-call-id')!;
    await res.text();
    events.push(`received ${id}`);
    received();
    return id;
  }

  it("a team key's call admitted from a lease does not wait for its commit either, and counts on its user", async () => {
    // The lease holds the key and the team; a dead holder's lease is charged to the user its
    // attribution names as well (storage conformance), so the user's counter is covered without a
    // commit of this call's own.
    const events: string[] = [];
    const { app, hold, key } = await leasingApp(events, { user: { max_budget: 1000 } });
    // A guard that held this response until its commit would never answer (the test times out).
    const id = await leasedCallWithCommitHeld(events, app, hold, key);
    const logs = (await admin(app, 'GET', '/spend/logs')).body as Array<{ call_id: string; spend: number }>;
    const spent = logs.reduce((sum, l) => sum + l.spend, 0);
    expect(logs).toHaveLength(11);
    expect(logs.map((l) => l.call_id)).toContain(id);
    expect(events.indexOf(`committed ${id}`)).toBeGreaterThan(events.indexOf(`received ${id}`));
    // Every call, the leased ones included, counted on the user's counter as on the team's.
    const user = (await admin(app, 'GET', '/user/info?user_id=lease-user')).body;
    const team = (await admin(app, 'GET', '/team/info?team_id=lease-team')).body;
    expect(spent).toBeGreaterThan(0);
    expect(user.user_info.spend).toBeCloseTo(spent, 12);
    expect(team.team_info.spend).toBeCloseTo(spent, 12);
    expect(app.guard.stats()).toMatchObject({ storageErrors: 0, settleFailures: 0 });
  });

  it("a team key whose user has a budget window of its own still waits for the commit: the lease's charge would miss the window", async () => {
    const events: string[] = [];
    const { app, hold, key } = await leasingApp(events, {
      user: { budget_limits: [{ budget_duration: '1d', max_budget: 1000 }] },
    });
    await untilLeased(app, key);
    // The commit is held until the test lets it go; the client has its response only after it.
    let release!: () => void;
    hold(new Promise<void>((resolve) => (release = resolve)));
    let done = false;
    const pending = chat(app, key).then(async (res) => {
      const id = res.headers.get('x-litellm-call-id')!;
      await res.text();
      done = true;
      events.push(`received ${id}`);
      return id;
    });
    await new Promise((r) => setTimeout(r, 200)); // time enough for an answer that did not wait
    const answeredFirst = done;
    release();
    expect(answeredFirst).toBe(false);
    const id = await pending;
    expect(events.indexOf(`committed ${id}`)).toBeGreaterThanOrEqual(0);
    expect(events.indexOf(`committed ${id}`)).toBeLessThan(events.indexOf(`received ${id}`));
  });

  it('a call admitted from a lease does not wait for its commit, and is written with the next batch', async () => {
    const events: string[] = [];
    const { app, hold, key } = await leasingApp(events);
    // Calls with a reservation of their own until the key is busy enough for a lease (8 calls).
    for (let i = 0; i < 10; i++) {
      const res = await chat(app, key);
      expect(res.status).toBe(200);
      await res.text();
    }
    expect(app.guard.escrow?.size).toBe(1); // the key's lease is open
    // From now on the commit waits for the client to have the whole response: a guard that held a
    // leased call's response until its commit would never answer (the test times out).
    let received!: () => void;
    hold(new Promise<void>((resolve) => (received = resolve)));
    const res = await chat(app, key);
    expect(res.status).toBe(200);
    const id = res.headers.get('x-litellm-call-id');
    await res.text();
    events.push(`received ${id}`);
    received();
    // A read through the guard writes what waits first: the call is in the spend log at once.
    const logs = (await admin(app, 'GET', '/spend/logs')).body as Array<{ call_id: string }>;
    expect(logs.map((l) => l.call_id)).toContain(id);
    expect(app.guard.stats()).toMatchObject({ storageErrors: 0, settleFailures: 0 });
    // (the calls before it admitted from the lease may be committed in the same batch)
    expect(events.indexOf(`received ${id}`)).toBeGreaterThanOrEqual(0);
    expect(events.indexOf(`committed ${id}`)).toBeGreaterThan(events.indexOf(`received ${id}`));
  });

  it('a route whose upstream calls (its own fetch) were all admitted from a lease does not wait for a commit', async () => {
    const events: string[] = [];
    const { app, hold, key } = await leasingApp(events);
    const agent = (steps: number) =>
      fetch(`${app.baseUrl}/app/agent-own`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ steps, max_tokens: 5 }),
      });
    // Upstream calls with reservations of their own until the key is busy enough for a lease.
    for (let i = 0; i < 6; i++) {
      const res = await agent(2);
      expect(res.status).toBe(200);
      await res.text();
    }
    expect(app.guard.escrow?.size).toBe(1);
    // From now on a commit waits for the client to have the whole response: a guard that held this
    // response until a commit (the request's or its upstream calls') would never answer.
    let received!: () => void;
    hold(new Promise<void>((resolve) => (received = resolve)));
    const res = await agent(2);
    expect(res.status).toBe(200);
    const id = res.headers.get('x-litellm-call-id');
    expect(await res.json()).toEqual({ completed: 2 });
    events.push(`received ${id}`);
    received();
    // Written with the next batch: the request's $0 row and its two upstream calls, at their cost.
    const logs = (await admin(app, 'GET', '/spend/logs')).body as Array<{
      call_id: string;
      spend: number;
      metadata: Record<string, unknown>;
    }>;
    const request = logs.find((l) => l.call_id === id);
    expect(request?.spend).toBe(0);
    const upstream = logs.filter((l) => l.metadata.parent_request_id === id);
    expect(upstream).toHaveLength(2);
    for (const l of upstream) expect(l.spend).toBeGreaterThan(0);
    expect(events.indexOf(`committed ${id}`)).toBeGreaterThan(events.indexOf(`received ${id}`));
    expect(app.guard.stats()).toMatchObject({ storageErrors: 0, settleFailures: 0 });
  });

  it('without leases (escrow: false) such a route answers only after its commits', async () => {
    const events: string[] = [];
    app = await startTestApp(framework, {
      storage: slowToCommit(events),
      guardOptions: { escrow: false },
    });
    const { key } = (await admin(app, 'POST', '/key/generate', { max_budget: 10 })).body;
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${app.baseUrl}/app/agent-own`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ steps: 2, max_tokens: 5 }),
      });
      expect(res.status).toBe(200);
      const id = res.headers.get('x-litellm-call-id');
      await res.text();
      events.push(`received ${id}`);
      expect(events.slice(-2)).toEqual([`committed ${id}`, `received ${id}`]);
    }
  });

  it('off when asked (settleBeforeLastByte: false): the response does not wait for the commit', async () => {
    const events: string[] = [];
    // The commit waits for the client to have the whole response: a guard that held the response
    // until the commit would never answer (the test times out).
    let received!: () => void;
    const clientHasIt = new Promise<void>((resolve) => {
      received = resolve;
    });
    app = await startTestApp(framework, {
      storage: slowToCommit(events, clientHasIt),
      guardOptions: { settleBeforeLastByte: false },
    });
    const { key } = (await admin(app, 'POST', '/key/generate', { max_budget: 10 })).body;
    const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 5,
      }),
    });
    const id = res.headers.get('x-litellm-call-id');
    await res.text();
    events.push(`received ${id}`);
    received();
    expect(app.guard.settlesBeforeLastByte).toBe(false);
    await app.guard.flush();
    expect(events).toEqual([`received ${id}`, `committed ${id}`]);
  });
});
