/**
 * Key regeneration with a grace period on two instances sharing one Postgres schema: the replaced
 * secret reaches the other instance's key cache through LISTEN/NOTIFY, and the grace deadline is
 * checked against each instance's (controllable) clock at every call.
 */
import { randomBytes } from 'node:crypto';
import { pgStorage } from '@spendguard/storage-pg';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { sharedPostgres } from '../../multi-instance/test/postgres.js';
import { ADAPTERS, admin, startTestApp, type TestApp, untilRefused } from './harness.js';

// DATABASE_URL or the local server, else a throwaway one; in CI a missing server fails, never skips.
const server = await sharedPostgres();
const url = server.url;
const pool = new pg.Pool({ connectionString: url, max: 2 });
const schemas: string[] = [];
afterAll(async () => {
  await pool.end();
  await server.close();
});

async function call(app: TestApp, key: string): Promise<number> {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 5,
    }),
  });
  await res.arrayBuffer();
  return res.status;
}

describe.each(ADAPTERS)('key regeneration on Postgres, two instances, on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
    for (const name of schemas.splice(0)) await pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
  });

  it('serves both secrets during the grace period on both instances, on one budget; only the new one after', async () => {
    const schema = `sg_regen_${randomBytes(6).toString('hex')}`;
    schemas.push(schema);
    let now = new Date('2026-05-01T08:00:00.000Z');
    const start = async () => {
      const app = await startTestApp(framework, {
        now: () => now,
        storage: pgStorage({ connectionString: url, schema }),
      });
      apps.push(app);
      return app;
    };
    const a = await start();
    const b = await start();
    await admin(a, 'POST', '/team/new', { team_id: 'ops', max_budget: 50 });
    const old = (await admin(a, 'POST', '/key/generate', { team_id: 'ops', max_budget: 5 })).body;
    expect(await call(a, old.key)).toBe(200);
    expect(await call(b, old.key)).toBe(200); // cached on b

    const fresh = (await admin(a, 'POST', '/key/regenerate', { key: old.token, grace_period: '1h' })).body;
    expect(fresh.token).toBe(old.token);
    for (const app of [a, b]) {
      expect(await call(app, old.key)).toBe(200);
      expect(await call(app, fresh.key)).toBe(200);
    }
    // Settlements are written after each response: wait for all six (log and counter go together).
    for (const app of [a, b]) await app.settled();
    const logs = (await admin(b, 'GET', `/spend/logs?api_key=${old.token}`)).body;
    expect(logs).toHaveLength(6);
    const info = (await admin(b, 'GET', `/key/info?key=${old.token}`)).body.info;
    // One counter for every call, whichever secret it came with.
    const logged = logs.reduce((sum: number, l: any) => sum + Math.round(l.spend * 1e9), 0);
    expect(Math.round(info.spend * 1e9)).toBe(logged);

    now = new Date('2026-05-01T09:00:00.000Z');
    expect(await call(a, old.key)).toBe(401);
    // b may still hold the secret as cached before the regeneration reached it (then without a grace
    // deadline): it refuses once the notification arrives.
    expect((await untilRefused(async () => ({ status: await call(b, old.key) }))).status).toBe(401);
    expect(await call(a, fresh.key)).toBe(200);
    expect(await call(b, fresh.key)).toBe(200);
  });
});
