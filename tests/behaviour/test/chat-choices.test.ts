/**
 * OpenAI chat's `n` through the official client, on every adapter: OpenAI generates and bills each of
 * the `n` choices in full, so the worst case counts `n` completions before the call runs, the spend is
 * the reported usage (all choices), and a stream cut before its usage is estimated from every choice's
 * text, not the first one's. The simulator bills `n` by OpenAI's rules with its own code
 * (docs/simulator.md); every expected cost is worked by hand below.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, keySpend, keyWithClient, startTestApp, type TestApp } from './harness.js';

// gpt-4o-mini: $1.5e-7 an input token, $6e-7 an output token. 'hello' as one chat message:
// 3 + role 1 + 'hello' 1 + priming 3 = 8 prompt tokens, billed once whatever `n`.
// n = 3, max_tokens = 10: 30 completion tokens. 8 x 1.5e-7 + 30 x 6e-7 = 0.0000012 + 0.000018
const THREE_CHOICES_COST = 0.0000192;
const body = {
  model: 'gpt-4o-mini',
  messages: [{ role: 'user' as const, content: 'hello' }],
  max_tokens: 10,
  n: 3,
};

describe.each(ADAPTERS)('OpenAI chat with n choices on $name', (framework) => {
  let app: TestApp;
  beforeEach(async () => {
    app = await startTestApp(framework);
  });
  afterEach(async () => {
    await app.close();
  });

  it('every choice is charged, JSON and streamed', async () => {
    const { key, client } = await keyWithClient(app, 10);
    const completion = await client.chat.completions.create(body);
    expect(completion.choices).toHaveLength(3);
    expect(completion.usage?.completion_tokens).toBe(30);
    expect(await keySpend(app, key)).toBeCloseTo(THREE_CHOICES_COST, 12);

    const stream = await client.chat.completions.create({ ...body, stream: true });
    const seen = new Set<number>();
    for await (const chunk of stream) for (const choice of chunk.choices) seen.add(choice.index);
    expect([...seen].sort()).toEqual([0, 1, 2]);
    expect(await keySpend(app, key)).toBeCloseTo(2 * THREE_CHOICES_COST, 12);
  });

  it('a stream cut before its usage is estimated from the text of every choice', async () => {
    const { key, client } = await keyWithClient(app, 10);
    // Events: 3 role chunks, then 30 content chunks in turn over the choices: cut after 3 + 12 = 15,
    // so 4 words of each choice arrived (12 completion tokens) and no usage.
    app.simulator.cutNextStream(15);
    const stream = await client.chat.completions.create({ ...body, stream: true });
    await expect(async () => {
      for await (const _chunk of stream) {
        // read until the cut
      }
    }).rejects.toThrow();
    await app.settled();
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body as Array<Record<string, any>>;
    expect(logs).toHaveLength(1);
    expect(logs[0]!.completion_tokens).toBe(12);
    expect(logs[0]!.spend).toBeCloseTo(logs[0]!.prompt_tokens * 1.5e-7 + 12 * 6e-7, 12);
  });

  it('the worst case counts n completions: the cap a call is given to fit its budget is shared by n', async () => {
    // A $0.001 key and max_tokens 1,000 with n = 3: three full completions (3 x 1,000 x 6e-7 = $0.0018)
    // do not fit, so the guard lowers max_tokens until they do (docs/budgets.md). Per choice at most
    // (0.001 - 8 x 1.5e-7) / (3 x 6e-7) = 554.9 tokens: 554 or fewer (the guard bounds the prompt at
    // least at its real 8 tokens). Were `n` ignored, each choice would get its full 1,000.
    const { key, client } = await keyWithClient(app, 0.001);
    const completion = await client.chat.completions.create({ ...body, max_tokens: 1000 });
    expect(completion.choices).toHaveLength(3);
    const perChoice = (completion.usage?.completion_tokens ?? 0) / 3;
    expect(perChoice).toBeLessThanOrEqual(554);
    expect(perChoice, 'lowered to fit, not to nothing').toBeGreaterThan(500);
    for (const choice of completion.choices) expect(choice.finish_reason).toBe('length');
    const spend = await keySpend(app, key);
    expect(spend).toBeCloseTo(8 * 1.5e-7 + 3 * perChoice * 6e-7, 12);
    expect(spend).toBeLessThanOrEqual(0.001);
  });
});
