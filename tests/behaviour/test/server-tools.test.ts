/**
 * Server-side tools the provider runs and bills beyond anything the request caps (OpenAI's file search,
 * code interpreter, image generation and remote MCP tools; Anthropic's code execution, MCP connector and
 * a web fetch without limits; Gemini's code execution, URL context and Maps grounding): a strict budget
 * cannot bound them, so strict mode refuses such a call with a 400 naming the field, before the route
 * runs; `shrink` serves it. Anthropic's web fetch with `max_uses` and `max_content_tokens` is bounded by
 * them (each fetch adds at most `max_content_tokens` of input) and served.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, keySpend, keyWithClient, startTestApp, type TestApp } from './harness.js';

const fileSearch = {
  model: 'gpt-4.1',
  input: 'what does the handbook say?',
  tools: [{ type: 'file_search' as const, vector_store_ids: ['vs_1'] }],
  max_output_tokens: 20,
};

describe.each(ADAPTERS)('server-side tools on $name', (framework) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
  });

  it("strict: OpenAI's file search is refused with a 400 naming the tool, and the route never runs", async () => {
    app = await startTestApp(framework);
    const { key, client } = await keyWithClient(app, 10);
    const error = await client.responses.create(fileSearch).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    const body = (error as InstanceType<typeof OpenAI.BadRequestError>).error as {
      param: string;
      message: string;
    };
    expect(body.param).toBe('tools[0].type');
    expect(body.message).toContain("OpenAI's file search");
    expect(body.message).toContain("'shrink'");
    expect(app.simulator.requestCount, 'the route never ran').toBe(0);
    expect(await keySpend(app, key)).toBe(0);
  });

  it('shrink: the same call is served and charged its tokens', async () => {
    app = await startTestApp(framework, { guardOptions: { enforcement: 'shrink' } });
    const { key, client } = await keyWithClient(app, 10);
    const answer = await client.responses.create(fileSearch);
    expect(answer.usage?.output_tokens).toBe(20);
    expect(await keySpend(app, key)).toBeGreaterThan(0);
  });

  it("strict: Anthropic's web fetch needs both limits; with them it is bounded by max_uses x max_content_tokens", async () => {
    app = await startTestApp(framework);
    const made = await admin(app, 'POST', '/key/generate', { max_budget: 0.1 });
    const key = made.body.key as string;
    const anthropic = new Anthropic({ apiKey: key, baseURL: app.baseUrl, maxRetries: 0 });
    const call = (tool: Record<string, unknown>) =>
      anthropic.messages
        .create({
          model: 'claude-sonnet-4-5',
          max_tokens: 100,
          messages: [{ role: 'user', content: 'read https://example.com' }],
          tools: [{ type: 'web_fetch_20250910', name: 'web_fetch', ...tool } as never],
        })
        .catch((e: unknown) => e);

    const unlimited = await call({ max_uses: 2 });
    expect(unlimited).toBeInstanceOf(Anthropic.BadRequestError);
    const refusal = (unlimited as InstanceType<typeof Anthropic.BadRequestError>).error as {
      error: { message: string; param?: string };
    };
    expect(JSON.stringify(refusal)).toContain('tools[0].max_content_tokens');
    expect(app.simulator.requestCount).toBe(0);

    // 2 fetches of up to 50,000 tokens at $3e-6: $0.30 of input, more than the key's $0.10.
    const tooMuch = await call({ max_uses: 2, max_content_tokens: 50_000 });
    expect(tooMuch).toBeInstanceOf(Anthropic.RateLimitError);
    expect(JSON.stringify((tooMuch as InstanceType<typeof Anthropic.RateLimitError>).error)).toContain(
      'budget',
    );
    expect(app.simulator.requestCount).toBe(0);

    // 2 x 1,000 tokens: $0.006 of input, with room to spare.
    const served = await call({ max_uses: 2, max_content_tokens: 1000 });
    expect(served).toMatchObject({ type: 'message', role: 'assistant' });
    expect(await keySpend(app, key)).toBeGreaterThan(0);
  });
});

/**
 * OpenAI's Images API (gpt-image-1: $5e-6 a text input token, $4e-5 an image output token), through the
 * official client: each image is billed the output tokens OpenAI publishes for its quality and size
 * (the simulator's table, docs/simulator.md), charged at the image price, and bounded before the call.
 */
describe.each(ADAPTERS)('image generation on $name', (framework) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
  });

  it('charges the image output tokens at the image price, and holds a strict budget to its images', async () => {
    app = await startTestApp(framework);
    const { key, client } = await keyWithClient(app, 0.9);
    const pair = {
      model: 'gpt-image-1',
      prompt: 'a lighthouse',
      n: 2,
      quality: 'high',
      size: '1024x1536',
    } as const;
    const { data, response } = await client.images.generate(pair).withResponse();
    expect(data.data).toHaveLength(2);
    const usage = data.usage!;
    expect(usage.output_tokens).toBe(2 * 6240);
    const cost = usage.input_tokens * 5e-6 + usage.output_tokens * 4e-5; // about $0.4992
    expect(Number(response.headers.get('x-litellm-response-cost'))).toBeCloseTo(cost, 9);
    expect(await keySpend(app, key)).toBeCloseTo(cost, 9);

    // About $0.40 left: a second pair ($0.4992) cannot fit, and no cap of the request could lower it.
    const refused = await client.images.generate(pair).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect(await keySpend(app, key)).toBeCloseTo(cost, 9);
    // One low-quality square image (272 tokens, about $0.011) fits.
    const small = await client.images.generate({ ...pair, n: 1, quality: 'low', size: '1024x1024' });
    expect(small.usage?.output_tokens).toBe(272);
    const spent = await keySpend(app, key);
    expect(spent).toBeCloseTo(cost + small.usage!.input_tokens * 5e-6 + 272 * 4e-5, 9);
    expect(spent).toBeLessThanOrEqual(0.9);
  });
});

describe.each(ADAPTERS)('work billed after the request answers, on $name', (framework) => {
  let app: TestApp;
  afterEach(async () => {
    await app.close();
  });

  it.each(['strict', 'soft'] as const)(
    '%s: a batch or a fine-tuning job is refused with a 400 saying why',
    async (enforcement) => {
      app = await startTestApp(framework, { guardOptions: { enforcement } });
      const { key, client } = await keyWithClient(app, 10);
      const batch = await client.batches
        .create({ input_file_id: 'file-abc', endpoint: '/v1/chat/completions', completion_window: '24h' })
        .catch((e: unknown) => e);
      expect(batch).toBeInstanceOf(OpenAI.BadRequestError);
      expect((batch as Error).message).toContain('a batch, which the provider runs and bills after');
      const job = await client.fineTuning.jobs
        .create({ model: 'gpt-4o-mini', training_file: 'file-abc' })
        .catch((e: unknown) => e);
      expect(job).toBeInstanceOf(OpenAI.BadRequestError);
      expect((job as Error).message).toContain('a fine-tuning job');
      const anthropic = await fetch(`${app.baseUrl}/v1/messages/batches`, {
        method: 'POST',
        headers: { 'x-api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ requests: [] }),
      });
      expect(anthropic.status).toBe(400);
      expect(((await anthropic.json()) as { error: { message: string } }).error.message).toContain('a batch');
      expect(app.simulator.requestCount).toBe(0);
      expect(await keySpend(app, key)).toBe(0);
    },
  );
});
