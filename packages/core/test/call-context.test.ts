import { createSpendGuard, MemoryStorage, type SpendGuard, track } from '@spendguard/core';
import { type Simulator, startSimulator } from '@spendguard/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The call context (AsyncLocalStorage) is off until something needs it: routes of an app that uses
// neither `guard.fetch` nor the module's `track()` run without it (no process-wide promise hooks on
// Node 20). This file runs in its own process, so the context starts off here; `callContext: true` is
// covered by metering.test.ts, whose guard turns it on from the start.

const MASTER = 'sk-master-call-context-test';
let storage: MemoryStorage;
let guard: SpendGuard;
let simulator: Simulator;
const warnings: string[] = [];

beforeAll(() => {
  storage = new MemoryStorage();
  guard = createSpendGuard({
    storage,
    masterKey: MASTER,
    dashboard: { password: 'a-dashboard-password' }, // not the master key: no warning about it
    logger: { warn: (m) => warnings.push(m), error: () => {} },
  });
});
beforeAll(async () => {
  simulator = await startSimulator();
});
afterAll(async () => {
  await guard.close();
  await simulator.close();
});

async function admit() {
  const outcome = await guard.admit({
    method: 'POST',
    path: '/agent',
    header: (n) => (n === 'authorization' ? `Bearer ${MASTER}` : undefined),
    body: { question: 'x' },
  });
  if (!outcome.ok) throw new Error('refused');
  return outcome.call;
}

describe('the call context', () => {
  it('is off until guard.fetch is read: a route then runs outside it, and track() says how to turn it on', async () => {
    const call = await admit();
    await call.run(async () => {
      await Promise.resolve();
      expect(() => track({ input_tokens: 10, output_tokens: 1 }, { model: 'gpt-4o' })).toThrow(
        /call context is off: pass `callContext: true`/,
      );
    });
    // The call itself still works without the context.
    const record = await call.track({ input_tokens: 10, output_tokens: 1 }, { model: 'gpt-4o' });
    expect(record.costNano).toBeGreaterThan(0);
    call.tap.drain();
    await call.finish();
  });

  it("is not needed by the call's own fetch: its upstream call is admitted, metered and linked to the call", async () => {
    const call = await admit();
    simulator.scriptNextUsage({ prompt_tokens: 1000, completion_tokens: 100 });
    const upstream = await call.run(async () => {
      await new Promise((resolve) => setTimeout(resolve, 1)); // no context would survive this here
      const res = await call.fetch(`${simulator.url}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer sk-provider' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 200,
        }),
      });
      return (await res.json()) as { usage: { prompt_tokens: number } };
    });
    expect(upstream.usage.prompt_tokens).toBe(1000);
    expect(call.fetch).toBe(call.fetch); // one function per call
    call.tap.drain();
    const own = await call.finish();
    expect(own.costNano).toBe(0); // charged through its child (the double-count rule)
    await guard.flush();
    const children = (await storage.querySpendLogs({})).filter(
      (l) => l.metadata.parent_request_id === call.requestId,
    );
    // gpt-4o at $2.50 / $10 per million: 1000 x 2,500 + 100 x 10,000 nano-dollars.
    expect(children).toHaveLength(1);
    expect(children[0]).toMatchObject({ model: 'gpt-4o', spendNano: 3_500_000, promptTokens: 1000 });
    expect(warnings).toEqual([]); // not the outside-a-request warning of guard.fetch
  });

  it('is on from the first read of guard.fetch, for the calls admitted after it', async () => {
    const fetch = guard.fetch; // as `new OpenAI({ fetch: guard.fetch })` at start-up does
    expect(typeof fetch).toBe('function');
    expect(guard.fetch).toBe(fetch); // one function, whatever the number of reads
    const call = await admit();
    const tracked = await call.run(async () => {
      await new Promise((resolve) => setTimeout(resolve, 1)); // across a timer and an await
      return track({ input_tokens: 1000, output_tokens: 100 }, { model: 'gpt-4o' });
    });
    call.tap.drain();
    const own = await call.finish();
    expect(own.costNano).toBe(0); // charged through its child (the double-count rule)
    const [child] = await storage.querySpendLogs({ requestId: tracked.requestId });
    expect(child).toMatchObject({ callType: 'track', metadata: { parent_request_id: call.requestId } });
    // Outside any guarded request: still none found, with the plain reason; guard.fetch is plain fetch.
    expect(() => track({}, { model: 'gpt-4o' })).toThrow(/run it from a route behind spendGuard\(\)/);
    expect(await (await fetch('data:text/plain,plain')).text()).toBe('plain');
    expect(warnings).toEqual([
      expect.stringMatching(/not metered \(run it from a route behind spendGuard\(\)/),
    ]);
  });
});
