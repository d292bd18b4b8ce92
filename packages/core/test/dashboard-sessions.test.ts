import { createHash } from 'node:crypto';
import { createSpendGuard, MemoryStorage } from '@spendguard/core';
import { describe, expect, it } from 'vitest';
import { DashboardSessions } from '../src/dashboard/dashboard-session.js';
import { LoginThrottle } from '../src/dashboard/login-throttle.js';

const T0 = new Date('2026-03-10T12:00:00.000Z');
const at = (ms: number) => new Date(T0.getTime() + ms);

describe('dashboard sessions', () => {
  const sessions = new DashboardSessions('admin', 'correct-horse-battery', 60_000);

  it('accepts a cookie while its stored session lives: not expired, not logged out', async () => {
    const storage = new MemoryStorage();
    const { cookieValue, session } = await sessions.create(storage, T0);
    expect(await sessions.verify(storage, cookieValue, at(1_000))).toEqual(session);
    expect(await sessions.verify(storage, cookieValue, at(60_000))).toBeNull(); // expired
    expect(await sessions.verify(storage, 'garbage', at(1_000))).toBeNull();
    // Its last character changed (base64url: 'A' and 'E' differ in data bits, not only in the two unused
    // ones a decoder ignores; one of them is always a change, where 'A' alone matched 1 cookie in 16).
    const tampered = `${cookieValue.slice(0, -1)}${cookieValue.endsWith('A') ? 'E' : 'A'}`;
    expect(await sessions.verify(storage, tampered, at(1_000))).toBeNull();
    // Another process (same credentials, same store) accepts it: nothing lives in this object.
    const other = new DashboardSessions('admin', 'correct-horse-battery', 60_000);
    expect(await other.verify(storage, cookieValue, at(1_000))).toEqual(session);
    await other.revoke(storage, session);
    expect(await sessions.verify(storage, cookieValue, at(1_000))).toBeNull();
  });

  it('keeps only the hash of the id: the cookie is 256 random bits, nothing derived from the password', async () => {
    const storage = new MemoryStorage();
    const { cookieValue, session } = await sessions.create(storage, T0);
    expect(cookieValue).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(cookieValue, 'base64url')).toHaveLength(32);
    expect(session.idHash).toBe(createHash('sha256').update(cookieValue).digest('hex'));
    const stored = await storage.getDashboardSession(session.idHash, T0);
    expect(JSON.stringify(stored)).not.toContain(cookieValue);
    expect(JSON.stringify(stored)).not.toContain('correct-horse-battery');
  });

  it('ends every session when the username or password changes', async () => {
    const storage = new MemoryStorage();
    const { cookieValue } = await sessions.create(storage, T0);
    const newPassword = new DashboardSessions('admin', 'another-password', 60_000);
    expect(await newPassword.verify(storage, cookieValue, at(1))).toBeNull();
    const newUser = new DashboardSessions('root', 'correct-horse-battery', 60_000);
    expect(await newUser.verify(storage, cookieValue, at(1))).toBeNull();
    // The length-prefixed MAC input: 'admin' + 'x...' is not 'adminx' + '...'.
    const shifted = new DashboardSessions('adminc', 'orrect-horse-battery', 60_000);
    expect(await shifted.verify(storage, cookieValue, at(1))).toBeNull();
  });

  it('binds the CSRF token to one session and checks credentials exactly', async () => {
    const storage = new MemoryStorage();
    const one = (await sessions.create(storage, T0)).session;
    const two = (await sessions.create(storage, T0)).session;
    expect(one.csrfToken).not.toBe(two.csrfToken);
    expect(sessions.checkCsrf(one, one.csrfToken)).toBe(true);
    expect(sessions.checkCsrf(one, two.csrfToken)).toBe(false);
    expect(sessions.checkCsrf(one, null)).toBe(false);
    expect(sessions.checkCredentials('admin', 'correct-horse-battery')).toBe(true);
    expect(sessions.checkCredentials('admin', 'correct-horse-batter')).toBe(false);
    expect(sessions.checkCredentials('admin', 'correct-horse-batteryy')).toBe(false);
    expect(sessions.checkCredentials('Admin', 'correct-horse-battery')).toBe(false);
    expect(sessions.checkCredentials('', '')).toBe(false);
  });
});

describe('sign-in throttling', () => {
  it('refuses a client past its failures in the window until the oldest leaves it', () => {
    const t = new LoginThrottle({ perClient: 3, overall: 100, windowMs: 60_000 });
    expect(t.begin('1.2.3.4', 0)).toBe(0);
    expect(t.begin('1.2.3.4', 10_000)).toBe(0);
    expect(t.begin('1.2.3.4', 20_000)).toBe(0);
    // The first failure (at 0) leaves the window at 60 s: 30.5 s from 29.5 s, rounded up.
    expect(t.begin('1.2.3.4', 29_500)).toBe(31);
    expect(t.begin('5.6.7.8', 29_500)).toBe(0); // another client is not held up
    expect(t.begin('1.2.3.4', 60_000)).toBe(0);
    expect(t.begin('1.2.3.4', 60_001)).toBe(10);
  });

  it('counts an attempt from the moment it is let in, so concurrent attempts cannot all pass', () => {
    const t = new LoginThrottle({ perClient: 2, overall: 100, windowMs: 60_000 });
    const admitted = Array.from({ length: 10 }, () => t.begin('1.2.3.4', 1_000)).filter((w) => w === 0);
    expect(admitted).toHaveLength(2);
  });

  it('forgets a client’s failures once it signs in, but not the overall count', () => {
    const t = new LoginThrottle({ perClient: 3, overall: 4, windowMs: 60_000 });
    t.begin('a', 0);
    t.begin('a', 1);
    expect(t.begin('a', 2)).toBe(0);
    t.succeeded('a', 2);
    expect(t.begin('a', 3)).toBe(0); // its two failures are forgotten
    expect(t.begin('b', 4)).toBe(0);
    // Overall: the failures at 0, 1, 3 and 4 (the success at 2 no longer counts): full until 0 leaves.
    expect(t.begin('c', 5)).toBe(60);
  });
});

describe('the dashboard password', () => {
  it('is warned about at start when it is the master key, once per logger', async () => {
    const warnings: string[] = [];
    const logger = { warn: (m: string) => warnings.push(m), error() {} };
    const make = (dashboard?: { password: string }) =>
      createSpendGuard({ storage: new MemoryStorage(), masterKey: 'sk-master-key-1', dashboard, logger });
    await make({ password: 'its-own-password' }).close();
    expect(warnings).toEqual([]);
    await make().close(); // no dashboard password: the master key is the password
    expect(warnings).toEqual([expect.stringMatching(/^the dashboard password is the master key/)]);
    await make({ password: 'sk-master-key-1' }).close();
    expect(warnings).toHaveLength(1);
    const second: string[] = [];
    await createSpendGuard({
      storage: new MemoryStorage(),
      masterKey: 'sk-master-key-1',
      dashboard: { password: 'sk-master-key-1' },
      logger: { warn: (m) => second.push(m), error() {} },
    }).close();
    expect(second).toHaveLength(1);
  });
});
