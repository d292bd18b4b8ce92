import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import OpenAI from 'openai';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const betterSqlite = createRequire(import.meta.resolve('@spendguard/storage-sqlite')).resolve(
  'better-sqlite3',
);

/**
 * A real storage fault: another process takes SQLite's write lock and holds it. Every guarded write
 * then fails with SQLITE_BUSY after the (short) busy timeout, exactly as when another instance
 * hangs mid-transaction. Resolves once the lock is held; `release()` ends the holder.
 */
async function holdWriteLock(dbPath: string): Promise<{ release: () => Promise<void> }> {
  const script = `
    const Database = require(${JSON.stringify(betterSqlite)});
    const db = new Database(${JSON.stringify(dbPath)});
    db.exec('BEGIN IMMEDIATE');
    process.stdout.write('locked\\n');
    process.stdin.on('data', () => { db.exec('ROLLBACK'); db.close(); process.exit(0); });
  `;
  const child: ChildProcess = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`lock holder exited ${code}`)));
  });
  return {
    release: async () => {
      child.stdin!.write('x');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

const chat = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 10 };

describe.each(ADAPTERS)('storage faults on $name', (framework) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
  });

  async function setup(onStorageError: 'deny' | 'allow') {
    app = await startTestApp(framework, {
      busyTimeoutMs: 20,
      guardOptions: { onStorageError, storageTimeoutMs: 1000 },
    });
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 10 })).body.key as string;
    const client = new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
    await client.chat.completions.create(chat); // the key is now known (and cached)
    await app.settled();
    return { key, client };
  }

  it('deny: answers 503 with a JSON error while storage is down, and recovers without a restart', async () => {
    const { client } = await setup('deny');
    const before = app.simulator.requestCount;
    const lock = await holdWriteLock(app.dbPath);
    const refused = await client.chat.completions.create(chat).catch((e) => e);
    expect(refused).toBeInstanceOf(OpenAI.APIError);
    expect(refused.status).toBe(503);
    expect(refused.error).toMatchObject({ type: 'service_unavailable', code: '503' });
    expect(app.simulator.requestCount).toBe(before); // the route never ran
    // The key was cached: the one storage call that failed is the reservation.
    expect(app.guard.stats().storageErrors).toBe(1);
    await lock.release();
    const ok = await client.chat.completions.create(chat);
    expect(ok.usage?.completion_tokens).toBe(10);
  });

  it('allow: serves while storage is down and writes that spend once it is back', async () => {
    const { key, client } = await setup('allow');
    const lock = await holdWriteLock(app.dbPath);
    const served = await client.chat.completions.create(chat);
    expect(served.usage?.completion_tokens).toBe(10);
    await app.settled();
    expect(app.guard.stats().pendingSettlements).toBe(1);
    await lock.release();
    // The gate retries on its own backoff timer (100 ms, doubling while storage fails): wait for it.
    await vi.waitFor(() => expect(app.guard.stats().pendingSettlements).toBe(0), {
      timeout: 20_000,
      interval: 20,
    });
    expect(app.guard.stats()).toMatchObject({
      pendingSettlements: 0,
      settlementsRecovered: 1,
      settlementsDropped: 0,
    });
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body as Array<{
      prompt_tokens: number;
      completion_tokens: number;
      spend: number;
    }>;
    expect(logs).toHaveLength(2);
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    // Each call as the simulator reported it, at gpt-4o-mini's 1.5e-7 per input and 6e-7 per output token.
    const nano = (usd: number) => Math.round(usd * 1e9);
    const priced = logs.map((l) => l.prompt_tokens * 150 + l.completion_tokens * 600);
    expect(logs.map((l) => nano(l.spend))).toEqual(priced);
    expect(nano(info.spend)).toBe(priced[0]! + priced[1]!);
  });
});
