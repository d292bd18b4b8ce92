/**
 * `spendLogRetentionDays`: the prune deletes the old spend logs and nothing else; the daily rollups,
 * so the typed reports (what the dashboard draws) and `/global/spend/report`, are unchanged. The clock
 * is the guard's, moved by the test. gpt-4o: 1000 prompt + 200 completion tokens = $0.0045 a call, four calls $0.018.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const DAY = 86_400_000;

describe.each(ADAPTERS)('spend-log retention ($name)', (framework) => {
  let app: TestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('prunes the logs past the retention; rollups and dashboard totals are unchanged', async () => {
    const clock = { now: Date.parse('2026-03-02T12:00:00.000Z') };
    app = await startTestApp(framework, {
      now: () => new Date(clock.now),
      guardOptions: { spendLogRetentionDays: 7 },
    });
    const key = (await admin(app, 'POST', '/key/generate', { key_alias: 'kept' })).body;
    const call = async () => {
      app!.simulator.scriptNextUsage({ prompt_tokens: 1000, completion_tokens: 200 });
      const res = await fetch(`${app!.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 300,
        }),
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    };
    await call(); // 2 March
    await call(); // 2 March
    clock.now += 4 * DAY;
    await call(); // 6 March: within 7 days of 12 March, kept
    clock.now += 6 * DAY;
    await call(); // 12 March
    await app.settled();

    const report = () =>
      app!.guard.spend.report({ from: '2026-03-01', to: '2026-03-31', groupBy: ['key'], granularity: 'day' });
    const globalReport = () =>
      admin(app!, 'GET', '/global/spend/report?start_date=2026-03-01&end_date=2026-03-31&group_by=api_key');
    const before = { typed: await report(), global: (await globalReport()).body };
    expect(before.typed.totals.spend).toBeCloseTo(0.018, 12);
    expect(before.typed.totals.requests).toBe(4);
    expect((await admin(app, 'GET', `/spend/logs?api_key=${key.token}`)).body).toHaveLength(4);

    // 12 March minus 7 days is 5 March: the two calls of 2 March go.
    expect(await app.guard.retention.prune()).toBe(2);
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key.token}`)).body;
    expect(logs.map((l: { startTime: string }) => l.startTime.slice(0, 10))).toEqual([
      '2026-03-12',
      '2026-03-06',
    ]);
    expect(await report()).toEqual(before.typed);
    expect((await globalReport()).body).toEqual(before.global);
    expect(await app.guard.retention.prune()).toBe(0);
  });
});
