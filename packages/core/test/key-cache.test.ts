// The key cache: concurrent misses on one key share one load, and a load that raced an invalidation
// is not cached.
import { describe, expect, it } from 'vitest';
import { createSpendGuard, MemoryStorage } from '../src/index.js';
import { manage } from './management-call.js';

const MASTER = 'sk-master-key-cache';

async function setUp() {
  const storage = new MemoryStorage();
  let lookups = 0;
  const find = storage.findKeyBySecret.bind(storage);
  storage.findKeyBySecret = (...args) => {
    lookups += 1;
    return find(...args);
  };
  const guard = createSpendGuard({ storage, masterKey: MASTER });
  const admin = (path: string, json: unknown) => manage(guard, MASTER, 'POST', path, json);
  const { key } = (await admin('/key/generate', { max_budget: 10 })).body as { key: string };
  const admit = () =>
    guard.admit({
      method: 'POST',
      path: '/chat/completions',
      header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
      body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 },
    });
  return { guard, admin, key, admit, lookups: () => lookups };
}

describe('the key cache', () => {
  it('loads a key once for all the calls that miss it at the same time', async () => {
    const { guard, admit, lookups } = await setUp();
    const before = lookups();
    const outcomes = await Promise.all(Array.from({ length: 20 }, admit));
    expect(outcomes.every((o) => o.ok)).toBe(true);
    expect(lookups() - before).toBe(1);
    await guard.close();
  });

  it('does not cache a load that an invalidation overtook', async () => {
    const { guard, admin, key, admit } = await setUp();
    const first = admit(); // loads the key
    await admin('/key/block', { key }); // invalidates while (or after) that load runs
    await first.catch(() => {});
    const after = await admit();
    expect(after.ok).toBe(false);
    if (!after.ok) expect(after.response.status).toBe(401);
    await guard.close();
  });
});
