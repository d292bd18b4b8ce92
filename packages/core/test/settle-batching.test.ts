// Settlements wait up to `settleBatchMs` to be written together; anything that reads or reserves
// writes them first, so no call is judged, and no query answers, without the calls already finished.
import { describe, expect, it } from 'vitest';
import { createSpendGuard, MemoryStorage, type SpendStorage } from '../src/index.js';
import { manage } from './management-call.js';

/** MemoryStorage that records the order of its reserve and settle calls, and the turns they came in. */
function recording() {
  const storage = new MemoryStorage();
  const calls: string[] = [];
  let turn = 0;
  const tick = () => setImmediate(() => (turn += 1));
  const wrap = <K extends 'reserve' | 'settle'>(name: K) => {
    const original = storage[name].bind(storage) as (input: any) => Promise<any>;
    (storage as any)[name] = (input: any) => {
      calls.push(`${name}:${input.reservationId}@${turn}`);
      tick();
      return original(input);
    };
  };
  wrap('reserve');
  wrap('settle');
  return { storage: storage as SpendStorage, calls };
}

const MASTER = 'sk-master-batching';
const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 };
const response = Buffer.from(
  JSON.stringify({
    object: 'chat.completion',
    model: 'gpt-4o-mini',
    usage: { prompt_tokens: 5, completion_tokens: 8 },
  }),
);

async function setUp(settleBatchMs: number) {
  const { storage, calls } = recording();
  const guard = createSpendGuard({ storage, masterKey: MASTER, settleBatchMs });
  const { key } = (await manage(guard, MASTER, 'POST', '/key/generate', { max_budget: 10 })).body;
  const call = async () => {
    const out = await guard.admit({
      method: 'POST',
      path: '/chat/completions',
      header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
      body,
    });
    if (!out.ok) throw new Error('refused');
    out.call.tap.begin(200, 'application/json');
    out.call.tap.write(response);
    out.call.tap.drain();
    void out.call.finish();
    return out.call.requestId;
  };
  const info = async () => (await manage(guard, MASTER, 'GET', `/key/info?key=${key}`)).body;
  calls.length = 0;
  return { guard, calls, call, info };
}

describe('settlement batching', () => {
  it('writes the settlements that finish within the window in one turn, after it', async () => {
    const { guard, calls, call } = await setUp(20);
    await Promise.all([call(), call(), call()]);
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(0); // still waiting
    await new Promise((r) => setTimeout(r, 500));
    const settles = calls.filter((c) => c.startsWith('settle'));
    expect(settles).toHaveLength(3);
    expect(new Set(settles.map((c) => c.split('@')[1])).size).toBe(1); // handed over in one turn
    await guard.close();
  });

  it('writes waiting settlements before the next reservation, in the same turn', async () => {
    const { guard, calls, call } = await setUp(1000);
    await call();
    await call();
    const [r1, s1, r2] = calls;
    expect(r1).toMatch(/^reserve:/);
    expect(s1).toMatch(/^settle:/);
    expect(r2).toMatch(/^reserve:/);
    expect(s1!.split('@')[1]).toBe(r2!.split('@')[1]);
    await guard.close();
  });

  it('answers management reads with the calls already finished, and writes all on close()', async () => {
    const { guard, calls, call, info } = await setUp(1000);
    await call();
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(0);
    expect((await info()).info.spend).toBeGreaterThan(0);
    await call();
    await guard.close();
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(2);
  });

  it('with settleBatchMs 0, writes each settlement at once', async () => {
    const { guard, calls, call } = await setUp(0);
    await call();
    await new Promise((r) => setImmediate(r));
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(1);
    await guard.close();
  });
});
