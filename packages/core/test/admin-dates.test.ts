// LiteLLM's `YYYY-MM-DD HH:MM:SS` is UTC. Date.parse reads a time without a zone in the server's own
// time zone, so this file runs in New York (each test file has its own process: pool 'forks'), where
// that reading is 4 hours off in May (EDT, UTC-4).
process.env.TZ = 'America/New_York';

import { afterAll, describe, expect, it } from 'vitest';
import { createSpendGuard, MemoryStorage } from '../src/index.js';
import { parseDateOrTime } from '../src/input-hygiene.js';
import { manage } from './management-call.js';

const MASTER = 'sk-master-admin-dates';

// 2026-05-04 00:00:00 UTC: 20,577 days after 1970-01-01 (56 years with 14 leap days = 20,454, then
// Jan 31 + Feb 28 + Mar 31 + Apr 30 = 120, plus 3), x 86,400 s = 1,777,852,800 s.
const MAY_4_MIDNIGHT = 1_777_852_800_000;
const HOUR = 3_600_000;

afterAll(() => {
  delete process.env.TZ;
});

describe('admin dates are UTC whatever the server time zone', () => {
  it('runs where local time is not UTC', () => {
    // New York in May is UTC-4: 240 minutes behind.
    expect(new Date(MAY_4_MIDNIGHT).getTimezoneOffset()).toBe(240);
  });

  it('parses LiteLLM times, ISO times and days as UTC unless they name a zone', () => {
    expect(parseDateOrTime('2026-05-04')).toBe(MAY_4_MIDNIGHT);
    expect(parseDateOrTime('2026-05-04 10:00:00')).toBe(MAY_4_MIDNIGHT + 10 * HOUR);
    expect(parseDateOrTime('2026-05-04T10:00:00')).toBe(MAY_4_MIDNIGHT + 10 * HOUR);
    expect(parseDateOrTime('2026-05-04T10:00:00Z')).toBe(MAY_4_MIDNIGHT + 10 * HOUR);
    // 10:00 at UTC-4 is 14:00 UTC.
    expect(parseDateOrTime('2026-05-04T10:00:00-04:00')).toBe(MAY_4_MIDNIGHT + 14 * HOUR);
    expect(parseDateOrTime('May 4, 2026')).toBeNaN();
  });

  it('/spend/logs finds a call by a LiteLLM time range', async () => {
    const clock = { now: MAY_4_MIDNIGHT + 10 * HOUR + 30_000 }; // 10:00:30 UTC
    const guard = createSpendGuard({
      storage: new MemoryStorage(),
      masterKey: MASTER,
      now: () => new Date(clock.now),
    });
    const { key } = (await manage(guard, MASTER, 'POST', '/key/generate', {})).body;
    const outcome = await guard.admit({
      method: 'POST',
      path: '/v1/chat/completions',
      header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
      body: { model: 'gpt-4o', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] },
    });
    if (!outcome.ok) throw new Error('refused');
    await outcome.call.track({ prompt_tokens: 10, completion_tokens: 5 }, { model: 'gpt-4o' });
    await outcome.call.finish();
    await guard.flush();
    const range = 'start_date=2026-05-04%2010:00:00&end_date=2026-05-04%2010:01:00';
    const logs = await manage(guard, MASTER, 'GET', `/spend/logs?${range}`);
    expect(logs.status).toBe(200);
    // Read as New York time the range would be 14:00 to 14:01 UTC, and the 10:00:30 call outside it.
    // The call's own row (its response not charged: $0) and the row it tracked, both at 10:00:30 UTC.
    expect(logs.body.map((l: { startTime: string }) => l.startTime)).toEqual([
      '2026-05-04T10:00:30.000Z',
      '2026-05-04T10:00:30.000Z',
    ]);
    await guard.close();
  });

  it('/key/update takes temp_budget_expiry as UTC', async () => {
    const clock = { now: MAY_4_MIDNIGHT + 13 * HOUR }; // 13:00 UTC
    const guard = createSpendGuard({
      storage: new MemoryStorage(),
      masterKey: MASTER,
      now: () => new Date(clock.now),
    });
    const { token } = (await manage(guard, MASTER, 'POST', '/key/generate', { max_budget: 10 })).body;
    // 12:00 UTC is an hour ago (read as New York time it would be 16:00 UTC, still ahead).
    const past = await manage(guard, MASTER, 'POST', '/key/update', {
      key: token,
      temp_budget_increase: 5,
      temp_budget_expiry: '2026-05-04 12:00:00',
    });
    expect(past.status).toBe(400);
    expect(past.body.error.param).toBe('temp_budget_expiry');
    const ahead = await manage(guard, MASTER, 'POST', '/key/update', {
      key: token,
      temp_budget_increase: 5,
      temp_budget_expiry: '2026-05-04 14:00:00',
    });
    expect(ahead.status).toBe(200);
    expect(ahead.body.metadata.temp_budget_expiry).toBe('2026-05-04T14:00:00.000Z');
    await guard.close();
  });
});
