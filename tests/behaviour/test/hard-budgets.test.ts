/**
 * Strict budgets are hard and usable: bursts end at the cap, never past it, and calls are refused only
 * when they cannot fit even after the calls in flight settle. Also: the master key is bound by the
 * end-user, tag and global budgets; unpriced models are refused; `onStorageError: 'allow'` serves only
 * keys known to be good.
 *
 * Costs are checked against hand-worked prices (gpt-4o: $2.5e-6 a prompt token, $1e-5 a completion
 * token) and the cost header of every answered call, never against the guard's own estimate.
 */
import type { SpendStorage } from '@spendguard/core';
import { MemoryStorage } from '@spendguard/core';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, MASTER, startTestApp, type TestApp } from './harness.js';

const GPT4O_IN = 2.5e-6;
const GPT4O_OUT = 1e-5;
const DEEPSEEK_IN = 2.8e-7;
const DEEPSEEK_OUT = 4.2e-7;

interface Answer {
  status: number;
  cost: number | null;
  lowered: string | null;
  body: any;
}

async function call(app: TestApp, key: string, body: Record<string, unknown>): Promise<Answer> {
  const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const cost = res.headers.get('x-litellm-response-cost');
  return {
    status: res.status,
    cost: cost === null ? null : Number(cost),
    lowered: res.headers.get('x-spendguard-output-tokens-lowered'),
    body: await res.json(),
  };
}

describe.each(ADAPTERS)('hard budgets on $name', (framework) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
  });

  it('400 concurrent calls using all of max_tokens 1000 on a $1 key: spend ends in [0.97, 1.00]', async () => {
    app = await startTestApp(framework, { simulator: { latencyMs: 5 } });
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 1 })).body.key as string;
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'write' }], max_tokens: 1000 };
    const answers = await Promise.all(Array.from({ length: 400 }, () => call(app, key, body)));
    const served = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.status !== 200);
    for (const r of refused)
      expect(r.body.error, JSON.stringify(r.body)).toMatchObject({ type: 'budget_exceeded', code: '429' });
    // Each whole call: 8 prompt tokens (OpenAI's formula for one short user message) and 1,000 output.
    const whole = 8 * GPT4O_IN + 1000 * GPT4O_OUT;
    const wholeCalls = served.filter((a) => a.lowered === null);
    for (const a of wholeCalls) expect(a.cost).toBeCloseTo(whole, 12);
    // At most a few calls had their cap lowered to what was left, and each one fits below the cap.
    expect(served.length - wholeCalls.length).toBeLessThanOrEqual(3);
    await app.guard.flush();
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    const sum = served.reduce((s, a) => s + a.cost!, 0);
    expect(info.spend).toBeCloseTo(sum, 9);
    expect(info.spend).toBeLessThanOrEqual(1);
    expect(info.spend).toBeGreaterThanOrEqual(0.97);
    expect(served.length).toBeGreaterThanOrEqual(97);
  }, 120_000);

  it('300 concurrent calls without max_tokens on a $1 key whose real total is far under $1: all served', async () => {
    app = await startTestApp(framework, { simulator: { latencyMs: 5 } });
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 1 })).body.key as string;
    // Without max_tokens a gpt-4o call may write 16,384 tokens ($0.16): six such worst cases fill $1 at
    // once, yet each call really costs 8 x $2.5e-6 + 16 x $1e-5 = $0.00018 (the simulator writes 16).
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] };
    const answers = await Promise.all(Array.from({ length: 300 }, () => call(app, key, body)));
    expect(answers.filter((a) => a.status !== 200).map((a) => a.body)).toEqual([]);
    for (const a of answers) {
      expect(a.lowered).toBeNull();
      expect(a.cost).toBeCloseTo(8 * GPT4O_IN + 16 * GPT4O_OUT, 12);
    }
    await app.guard.flush();
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    expect(info.spend).toBeCloseTo(300 * (8 * GPT4O_IN + 16 * GPT4O_OUT), 9);
  }, 120_000);

  it('a call with less left than its worst case is served with its output cap lowered, and the header says so', async () => {
    app = await startTestApp(framework);
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 0.05 })).body.key as string;
    // No max_tokens: worst case 16,384 output tokens ($0.164) on a $0.05 key.
    const answer = await call(app, key, { model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] });
    expect(answer.status).toBe(200);
    const cap = Number(answer.lowered);
    // $0.05 pays for at most 5,000 output tokens, less the prompt's bound.
    expect(cap).toBeGreaterThan(4_900);
    expect(cap).toBeLessThan(5_000);
    // The provider saw the lowered cap: the simulator answers 16 tokens when none is asked, all of
    // max_completion_tokens otherwise.
    expect(answer.body.usage.completion_tokens).toBe(cap);
    expect(answer.cost).toBeCloseTo(8 * GPT4O_IN + cap * GPT4O_OUT, 12);
    expect(answer.cost!).toBeLessThanOrEqual(0.05);
    await app.guard.flush();
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body;
    expect(logs[0].metadata).toMatchObject({ output_tokens_lowered: cap });
  });

  it("a model whose API ignores max_completion_tokens (DeepSeek's) is held by max_tokens: never past the cap", async () => {
    // The simulator answers a deepseek-... model as DeepSeek's API does: max_tokens caps the output,
    // max_completion_tokens is ignored; with no cap read, 8,192 tokens (the model's maximum) come back.
    app = await startTestApp(framework, { simulator: { defaultCompletionTokens: 8192 } });
    const budget = 0.002; // deepseek-chat: $2.8e-7 a prompt token, $4.2e-7 a completion token
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: budget })).body.key as string;
    const messages = [{ role: 'user', content: 'hello' }];
    const priced = (a: Answer) =>
      a.body.usage.prompt_tokens * DEEPSEEK_IN + a.body.usage.completion_tokens * DEEPSEEK_OUT;
    // A cap in the field DeepSeek does not read bounds nothing: 8,192 tokens ($0.00344) do not fit
    // $0.002, so the guard lowers the cap, in max_tokens, which DeepSeek reads.
    const ignored = await call(app, key, { model: 'deepseek-chat', messages, max_completion_tokens: 5 });
    expect(ignored.status).toBe(200);
    const cap = Number(ignored.lowered);
    expect(cap).toBeGreaterThan(4000);
    expect(cap).toBeLessThan(4762); // $0.002 / $4.2e-7
    expect(ignored.body.usage.completion_tokens).toBe(cap);
    expect(ignored.cost).toBeCloseTo(priced(ignored), 12);
    // No cap at all: the same, and then calls until the budget is spent, none past it.
    let spent = ignored.cost!;
    for (let i = 0; i < 6; i++) {
      const a = await call(app, key, { model: 'deepseek-chat', messages });
      if (a.status !== 200) {
        expect(a.body.error).toMatchObject({ type: 'budget_exceeded' });
        break;
      }
      expect(a.body.usage.completion_tokens).toBe(Number(a.lowered));
      expect(a.cost).toBeCloseTo(priced(a), 12);
      spent += a.cost!;
    }
    expect(spent).toBeLessThanOrEqual(budget);
    expect(spent).toBeGreaterThan(0.99 * budget);
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    expect(info.spend).toBeCloseTo(spent, 12);
    expect(info.spend).toBeLessThanOrEqual(budget);
  });

  it('a Responses chain (previous_response_id) is bounded by what the guard logged of the turn it continues', async () => {
    app = await startTestApp(framework);
    // $0.15: less than gpt-4o's whole context window as input (128,000 x $2.5e-6 = $0.32), so a turn is
    // served only when its earlier turns are bounded by their logs.
    const budget = 0.15;
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: budget })).body.key as string;
    const turn = async (body: Record<string, unknown>) => {
      const res = await fetch(`${app.baseUrl}/v1/responses`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', max_output_tokens: 2000, ...body }),
      });
      const cost = res.headers.get('x-litellm-response-cost');
      return {
        status: res.status,
        cost: cost === null ? null : Number(cost),
        body: (await res.json()) as any,
      };
    };
    // A previous response the guard never saw: the whole context window, which $0.15 cannot pay for.
    const unknown = await turn({ input: 'go on', previous_response_id: 'resp_made_elsewhere' });
    expect(unknown.status).toBe(429);
    expect(unknown.body.error).toMatchObject({ type: 'budget_exceeded' });
    expect(app.simulator.requestCount).toBe(0);

    let spent = 0;
    let previous: string | null = null;
    let served = 0;
    let last: Awaited<ReturnType<typeof turn>> | null = null;
    for (let i = 0; i < 12; i++) {
      last = await turn({ input: `turn ${i}`, ...(previous ? { previous_response_id: previous } : {}) });
      if (last.status !== 200) break;
      served++;
      const usage = last.body.usage;
      // Each turn is billed its earlier turns as input (the simulator's rule, OpenAI's): the header says so.
      expect(last.cost).toBeCloseTo(usage.input_tokens * GPT4O_IN + usage.output_tokens * GPT4O_OUT, 12);
      if (previous) expect(usage.input_tokens).toBeGreaterThan(2000 * served - 2000);
      spent += last.cost!;
      previous = last.body.id;
    }
    expect(served).toBeGreaterThanOrEqual(5);
    expect(last!.status).toBe(429);
    expect(last!.body.error).toMatchObject({ type: 'budget_exceeded' });
    expect(spent).toBeLessThanOrEqual(budget);
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    expect(info.spend).toBeCloseTo(spent, 12);
    expect(info.spend).toBeLessThanOrEqual(budget);
  });

  it('refuses a background response (billed after its request answers), naming the field', async () => {
    app = await startTestApp(framework);
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 1 })).body.key as string;
    const client = new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
    const error = await client.responses
      .create({ model: 'gpt-4o', input: 'a long job', background: true })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('background');
    expect((error as Error).message).toMatch(/background response/);
    expect(app.simulator.requestCount).toBe(0);
    // Without it, the same call is served and charged.
    const served = await client.responses.create({ model: 'gpt-4o', input: 'a long job' });
    expect(served.status).toBe('completed');
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    expect(info.spend).toBeGreaterThan(0);
  });

  it('refuses a model without a price (naming it and the fix), and serves it flagged when allowed', async () => {
    app = await startTestApp(framework);
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 1 })).body.key as string;
    const body = { model: 'my-finetune-v7', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 };
    const refused = await call(app, key, body);
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ param: 'model', code: '400' });
    expect(refused.body.error.message).toMatch(/Model 'my-finetune-v7' has no price.*modelPrices/);
    expect(app.simulator.requestCount).toBe(0);
    await app.close();

    app = await startTestApp(framework, { guardOptions: { unpricedModels: 'allow' } });
    const key2 = (await admin(app, 'POST', '/key/generate', { max_budget: 1 })).body.key as string;
    const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key2}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-litellm-response-cost')).toBeNull(); // no cost is claimed
    expect(res.headers.get('x-spendguard-unpriced-model')).toBe('my-finetune-v7');
    await res.json();
    await app.guard.flush();
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key2}`)).body;
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatchObject({ spend: 0, metadata: { unpriced: true } });
  });

  it('binds the master key by end-user and tag budgets: 429 naming the end user, tag spend charged', async () => {
    app = await startTestApp(framework);
    expect(
      (await admin(app, 'POST', '/customer/new', { user_id: 'cust-7', max_budget: 0.0005 })).status,
    ).toBe(200);
    expect((await admin(app, 'POST', '/tag/new', { name: 'team-x', max_budget: 10 })).status).toBe(200);
    // Each call: 8 prompt + 20 output tokens = $0.00022; the second fits, the third cannot.
    const body = {
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 20,
      user: 'cust-7',
      tags: ['team-x'],
    };
    const first = await call(app, MASTER, body);
    const second = await call(app, MASTER, body);
    expect([first.status, second.status]).toEqual([200, 200]);
    const third = await call(app, MASTER, body);
    expect(third.status).toBe(429);
    expect(third.body.error.message).toMatch(
      /^Budget has been exceeded! EndUser=cust-7 Current cost: 0\.00044/,
    );
    await app.guard.flush();
    const tag = (await admin(app, 'POST', '/tag/info', { names: ['team-x'] })).body;
    const tagSpend = Object.values(tag as Record<string, { spend: number }>)[0]!.spend;
    expect(tagSpend).toBeCloseTo(2 * (8 * GPT4O_IN + 20 * GPT4O_OUT), 12);
    const byTag = (await admin(app, 'GET', '/spend/tags')).body as Array<{
      individual_request_tag: string;
      total_spend: number;
    }>;
    expect(byTag.find((t) => t.individual_request_tag === 'team-x')?.total_spend).toBeCloseTo(tagSpend, 12);
    const customer = (await admin(app, 'GET', '/customer/info?end_user_id=cust-7')).body;
    expect(customer.spend).toBeCloseTo(tagSpend, 12);
  });
});

/** A real store that can be made to fail every call, as an unreachable database would. */
function breakable(inner: SpendStorage): { storage: SpendStorage; down: (yes: boolean) => void } {
  let isDown = false;
  const storage = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'init' || prop === 'close') return value;
      return (...args: unknown[]) => {
        if (isDown) return Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:5432'));
        return value.apply(target, args);
      };
    },
  });
  return { storage, down: (yes) => (isDown = yes) };
}

describe.each(ADAPTERS)("onStorageError 'allow' on $name", (framework) => {
  it('serves a key seen good while storage is down; a forged key, a key spent when last seen: 503', async () => {
    const store = breakable(new MemoryStorage());
    const app = await startTestApp(framework, {
      storage: store.storage,
      guardOptions: { onStorageError: 'allow', storageTimeoutMs: 1000 },
    });
    try {
      const good = (await admin(app, 'POST', '/key/generate', { max_budget: 1 })).body.key as string;
      const spent = (await admin(app, 'POST', '/key/generate', { max_budget: 0.0003 })).body.key as string;
      const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }], max_tokens: 20 };
      expect((await call(app, good, body)).status).toBe(200);
      expect((await call(app, spent, body)).status).toBe(200); // $0.00022 of $0.0003
      await app.guard.flush();
      // Its next call does not fit: what the guard last saw of it is a spent budget.
      expect((await call(app, spent, body)).status).toBe(429);
      const client = new OpenAI({ apiKey: good, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
      await client.chat.completions.create(body as never);
      await app.guard.flush();
      store.down(true);
      expect((await call(app, good, body)).status).toBe(200);
      const forged = await call(app, 'sk-forged-forged-forged-forged', body);
      expect(forged.status).toBe(503);
      expect(forged.body.error).toMatchObject({ type: 'service_unavailable' });
      expect((await call(app, spent, body)).status).toBe(503);
      store.down(false);
    } finally {
      store.down(false);
      await app.close();
    }
  });
});
