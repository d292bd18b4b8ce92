// Settlements wait up to `settleBatchMs` to be written together. No call is judged, and no query
// answers, without the calls already finished: reads write them first; a reservation goes ahead of
// those that can only lower what it is judged against, and is judged again after them if refused.
import { describe, expect, it } from 'vitest';
import { createSpendGuard, MemoryStorage, type SpendStorage } from '../src/index.js';
import { manage } from './management-call.js';

/**
 * MemoryStorage that records the order of its reserve and settle calls, and the turns they came in;
 * `settles(n)` resolves once it has been asked for n settlements.
 */
function recording() {
  const storage = new MemoryStorage();
  const calls: string[] = [];
  const waiting: Array<{ n: number; resolve: () => void }> = [];
  let turn = 0;
  const tick = () => setImmediate(() => (turn += 1));
  const wrap = <K extends 'reserve' | 'settle'>(name: K) => {
    const original = storage[name].bind(storage) as (input: any) => Promise<any>;
    (storage as any)[name] = (input: any) => {
      calls.push(`${name}:${input.reservationId}@${turn}`);
      tick();
      const settled = calls.filter((c) => c.startsWith('settle')).length;
      for (const w of waiting.filter((w) => settled >= w.n)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve();
      }
      return original(input);
    };
  };
  wrap('reserve');
  wrap('settle');
  const settles = (n: number) => new Promise<void>((resolve) => waiting.push({ n, resolve }));
  return { storage: storage as SpendStorage, calls, settles };
}

const MASTER = 'sk-master-batching';
const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 };
const response = (completionTokens = 8) =>
  Buffer.from(
    JSON.stringify({
      object: 'chat.completion',
      model: 'gpt-4o-mini',
      usage: { prompt_tokens: 5, completion_tokens: completionTokens },
    }),
  );

async function setUp(
  settleBatchMs: number,
  o: { maxBudget?: number; enforcement?: 'strict' | 'shrink' | 'soft' } = {},
) {
  const { storage, calls, settles } = recording();
  const guard = createSpendGuard({ storage, masterKey: MASTER, settleBatchMs, enforcement: o.enforcement });
  const generate = { max_budget: o.maxBudget ?? 10 };
  const { key } = (await manage(guard, MASTER, 'POST', '/key/generate', generate)).body;
  const admit = (requestBody: Record<string, unknown> = body) =>
    guard.admit({
      method: 'POST',
      path: '/chat/completions',
      header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
      body: requestBody,
    });
  /** One call, answered with `completionTokens` of usage (8 is what it reserved for). */
  const call = async (completionTokens = 8) => {
    const out = await admit();
    if (!out.ok) throw new Error('refused');
    out.call.tap.begin(200, 'application/json');
    out.call.tap.write(response(completionTokens));
    out.call.tap.drain();
    void out.call.finish();
    return out.call.requestId;
  };
  const info = async () => (await manage(guard, MASTER, 'GET', `/key/info?key=${key}`)).body;
  calls.length = 0;
  return { guard, calls, call, admit, info, key, settles };
}

const turnOf = (c: string | undefined) => c!.split('@')[1];

/**
 * What one call reserves far from a cap (its cheap worst case, docs/worst-case.md), in USD: its 82 bytes
 * of JSON + 4 for its message + 16, and 8 output tokens, at gpt-4o-mini's standard rates (1.5e-7 in,
 * 6e-7 out): 102 x 1.5e-7 + 8 x 6e-7.
 */
const RESERVED_USD = 0.0000201;
/** What one call answered with 1 completion token costs: 5 x 1.5e-7 + 1 x 6e-7. */
const ONE_TOKEN_CALL_USD = 0.00000135;

describe('settlement batching', () => {
  it('writes the settlements that finish within the window in one turn, after it', async () => {
    const { guard, calls, call, settles: settled } = await setUp(20);
    await Promise.all([call(), call(), call()]);
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(0); // still waiting
    await settled(3); // the window's timer hands them over
    const settles = calls.filter((c) => c.startsWith('settle'));
    expect(settles).toHaveLength(3);
    expect(new Set(settles.map((c) => c.split('@')[1])).size).toBe(1); // handed over in one turn
    await guard.close();
  });

  it('lets the next reservation go ahead of a waiting settlement that cost at most what it reserved', async () => {
    const { guard, calls, call } = await setUp(1000);
    const first = await call();
    const second = await call();
    expect(calls).toEqual([
      expect.stringMatching(`^reserve:${first}@`),
      expect.stringMatching(`^reserve:${second}@`),
    ]);
    await guard.flush();
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(2);
    await guard.close();
  });

  it('writes a waiting settlement that cost more than it reserved before the next reservation, in the same turn', async () => {
    const { guard, calls, call } = await setUp(1000);
    const first = await call(5000); // the provider reported far more than max_tokens
    const second = await call();
    const [r1, s1, r2] = calls;
    expect(r1).toMatch(`reserve:${first}@`);
    expect(s1).toMatch(`settle:${first}@`);
    expect(r2).toMatch(`reserve:${second}@`);
    expect(turnOf(s1)).toBe(turnOf(r2));
    await guard.close();
  });

  it("in 'soft' mode (spend alone is judged) writes every waiting settlement before the next reservation", async () => {
    const { guard, calls, call } = await setUp(1000, { enforcement: 'soft' });
    const first = await call();
    await call();
    const [, s1, r2] = calls;
    expect(s1).toMatch(`settle:${first}@`);
    expect(r2).toMatch(/^reserve:/);
    expect(turnOf(s1)).toBe(turnOf(r2));
    await guard.close();
  });

  it('judges a refused reservation again once the waiting settlements are written, and admits it', async () => {
    const reservedUsd = RESERVED_USD;
    // Room for one and a half worst cases: the second call fits only once the first call's actual cost
    // (1 completion token, far below its worst case) has replaced that worst case.
    const { guard, calls, call, key } = await setUp(1000, { maxBudget: reservedUsd * 1.5 });
    const first = await call(1);
    const second = await call(1); // admitted: without the retry this would be a 429
    expect(calls).toEqual([
      expect.stringMatching(`^reserve:${first}@`),
      expect.stringMatching(`^reserve:${second}@`), // refused against the counters as written
      expect.stringMatching(`^settle:${first}@`),
      expect.stringMatching(`^reserve:${second}@`), // judged again after it: fits
    ]);
    const left = (await guard.budgets.remaining({ key }))!; // a read: both settlements written first
    expect(left.reserved).toBe(0);
    expect(left.spend).toBe(2 * ONE_TOKEN_CALL_USD);
    await guard.close();
  });

  it('refuses, after writing the waiting settlements, a reservation that does not fit even then', async () => {
    const reservedUsd = RESERVED_USD;

    const { guard, calls, call, admit } = await setUp(1000, { maxBudget: reservedUsd * 1.05 });
    const first = await call(8);
    // Its worst case (1,000 output tokens) fits neither before nor after the first call's settlement.
    const out = await admit({ ...body, max_tokens: 1000 });
    expect(out.ok).toBe(false);
    if (!out.ok) expect(out.response.status).toBe(429);
    expect(calls.slice(0, 3)).toEqual([
      expect.stringMatching(`^reserve:${first}@`),
      expect.stringMatching(/^reserve:/),
      expect.stringMatching(`^settle:${first}@`),
    ]);
    // Judged again after it at its worst case, then (strict) with its prompt counted: refused both times.
    const second = calls[1]!.split('@')[0];
    expect(calls.slice(3).map((c) => c.split('@')[0])).toEqual([second, second]);
    await guard.close();
  });

  it('answers management reads with the calls already finished, and writes all on close()', async () => {
    const { guard, calls, call, info } = await setUp(1000);
    await call();
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(0);
    expect((await info()).info.spend).toBe(0.00000555); // 5 x 1.5e-7 + 8 x 6e-7
    await call();
    await guard.close();
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(2);
  });

  it("lets another key's reservation go ahead of a waiting settlement of a call admitted from a lease", async () => {
    const { storage, calls } = recording();
    const at = new Date('2026-06-01T12:00:00Z'); // a still clock: one escrow window, the lease stays valid
    const guard = createSpendGuard({ storage, masterKey: MASTER, settleBatchMs: 1000, now: () => at });
    const busy = (await manage(guard, MASTER, 'POST', '/key/generate', { max_budget: 1000 })).body.key;
    const quiet = (await manage(guard, MASTER, 'POST', '/key/generate', { max_budget: 10 })).body.key;
    const call = async (key: string) => {
      const out = await guard.admit({
        method: 'POST',
        path: '/chat/completions',
        header: (n) => (n === 'authorization' ? `Bearer ${key}` : undefined),
        body,
      });
      if (!out.ok) throw new Error('refused');
      out.call.tap.begin(200, 'application/json');
      out.call.tap.write(response());
      out.call.tap.drain();
      void out.call.finish();
      return out.call.requestId;
    };
    for (let i = 0; i < 10; i++) await call(busy); // busy enough for a lease (8 calls in a window)
    await guard.flush();
    expect(guard.escrow?.size).toBe(1);
    calls.length = 0;
    const leased = await call(busy); // admitted from the lease: no reservation of its own
    const other = await call(quiet);
    // The lease holds the leased call's worst case in the store: its settlement (which costs less) waits.
    expect(calls).toEqual([expect.stringMatching(`^reserve:${other}@`)]);
    await guard.flush();
    expect(calls.slice(1)).toHaveLength(2);
    expect(calls.slice(1)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(`^settle:${other}@`),
        expect.stringMatching(`^settle:none-${leased}@`),
      ]),
    );
    await guard.close();
  });

  it('with settleBatchMs 0, writes each settlement at once', async () => {
    const { guard, calls, call } = await setUp(0);
    await call(); // its settlement is handed to storage as the call finishes, in the same turn
    expect(calls.filter((c) => c.startsWith('settle'))).toHaveLength(1);
    await guard.close();
  });
});
