/**
 * OpenAI web search through the official client, on every adapter: the searches a response reports are
 * priced (Responses `web_search_call` items; a chat search model's one search a call), the worst case
 * bounds them before the call runs, and a Responses web search tool without `max_tool_calls` is refused
 * with a 400 naming it (nothing else bounds how many searches it runs). The simulator bills by OpenAI's
 * rules with its own code (docs/simulator.md); every expected cost is worked by hand below.
 */
import OpenAI from 'openai';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, keySpend, keyWithClient, startTestApp, type TestApp } from './harness.js';

// gpt-4.1: $2e-6 input, $8e-6 output; OpenAI's `web_search` tool $0.01 a call, `web_search_preview` on a
// non-reasoning model $0.025 a call (the table has no search price for gpt-4.1).
// The prompt 'hello' as one Responses message: 3 + role 1 + 'hello' 1 + priming 3 = 8 tokens.
// Two searches add 2 x 2,000 search content tokens (the simulator's stand-in) to the input.
// 4,008 x 2e-6 + 20 x 8e-6 + 2 x 0.01 = 0.008016 + 0.00016 + 0.02
const RESPONSES_COST = 0.028176;
// web_search_preview on gpt-4.1: its search content is free (not in input_tokens), the call $0.025.
// 8 x 2e-6 + 20 x 8e-6 + 2 x 0.025 = 0.000016 + 0.00016 + 0.05
const PREVIEW_COST = 0.050176;
// gpt-4o-search-preview at the high context size: $0.05 a search (the table's
// search_context_cost_per_query), one a call; 'hello' as a chat message is 8 tokens.
// 8 x 2.5e-6 + 20 x 1e-5 + 0.05 = 0.00002 + 0.0002 + 0.05
const CHAT_COST = 0.05022;

const responsesBody = {
  model: 'gpt-4.1',
  input: 'hello',
  tools: [{ type: 'web_search' as const }],
  max_tool_calls: 2,
  max_output_tokens: 20,
};
const chatBody = {
  model: 'gpt-4o-search-preview',
  messages: [{ role: 'user' as const, content: 'hello' }],
  web_search_options: { search_context_size: 'high' as const },
  max_completion_tokens: 20,
};

describe.each(ADAPTERS)('OpenAI web search on $name', (framework) => {
  let app: TestApp;
  beforeEach(async () => {
    app = await startTestApp(framework);
  });
  afterEach(async () => {
    await app.close();
  });

  it('a Responses call is charged for each web_search_call it reports, JSON and streamed', async () => {
    const { key, client } = await keyWithClient(app, 10);
    const { data, response } = await client.responses.create(responsesBody).withResponse();
    expect(data.output.filter((item) => item.type === 'web_search_call')).toHaveLength(2);
    expect(data.usage?.input_tokens).toBe(4008);
    expect(Number(response.headers.get('x-litellm-response-cost'))).toBeCloseTo(RESPONSES_COST, 9);
    expect(await keySpend(app, key)).toBeCloseTo(RESPONSES_COST, 9);

    const stream = await client.responses.create({ ...responsesBody, stream: true });
    let searches = 0;
    for await (const event of stream) {
      if (event.type === 'response.output_item.done' && event.item.type === 'web_search_call') searches++;
    }
    expect(searches).toBe(2);
    expect(await keySpend(app, key)).toBeCloseTo(2 * RESPONSES_COST, 9);
  });

  it('web_search_preview on a non-reasoning model: $0.025 a call, its search content free', async () => {
    const { key, client } = await keyWithClient(app, 10);
    const data = await client.responses.create({ ...responsesBody, tools: [{ type: 'web_search_preview' }] });
    expect(data.usage?.input_tokens).toBe(8);
    expect(await keySpend(app, key)).toBeCloseTo(PREVIEW_COST, 9);
  });

  it('a chat search model is charged one search a call at its context size, JSON and streamed', async () => {
    const { key, client } = await keyWithClient(app, 10);
    const completion = await client.chat.completions.create(chatBody);
    expect(completion.choices[0]?.message.annotations?.[0]?.type).toBe('url_citation');
    expect(await keySpend(app, key)).toBeCloseTo(CHAT_COST, 9);
    const stream = await client.chat.completions.create({ ...chatBody, stream: true });
    for await (const _chunk of stream) {
      // drained
    }
    expect(await keySpend(app, key)).toBeCloseTo(2 * CHAT_COST, 9);
  });

  it("a search model called by the route's own OpenAI client (guard.fetch) is charged its search", async () => {
    const { key } = await keyWithClient(app, 10);
    const res = await fetch(`${app.baseUrl}/app/ask`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-search-preview', question: 'hello' }),
    });
    expect(res.status).toBe(200);
    // No web_search_options: the medium context size, $0.035. 8 x 2.5e-6 + 30 x 1e-5 + 0.035
    expect(await keySpend(app, key)).toBeCloseTo(0.03532, 9);
  });

  it('a Responses stream cut after its first search is charged that search', async () => {
    const { key, client } = await keyWithClient(app, 10);
    // Events: created, in_progress, then 5 for the first search (its output_item.done is the 7th).
    app.simulator.cutNextStream(7);
    const stream = await client.responses.create({ ...responsesBody, stream: true });
    await expect(async () => {
      for await (const _event of stream) {
        // read until the cut
      }
    }).rejects.toThrow();
    await app.settled();
    const logs = (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body as Array<Record<string, any>>;
    expect(logs).toHaveLength(1);
    const log = logs[0]!;
    // Estimated tokens (no usage arrived) at gpt-4.1's rates, plus the one search seen: $0.01.
    const tokens = log.prompt_tokens * 2e-6 + log.completion_tokens * 8e-6;
    expect(log.spend).toBeCloseTo(tokens + 0.01, 9);
    expect(log.prompt_tokens).toBeGreaterThan(0);
  });

  it('a budget holds: calls that could search are admitted only while their searches fit', async () => {
    // The bound of one call: 2 searches x ($0.025 + 10,000 x $2e-6) = $0.09, plus its text and output:
    // a $0.25 key serves calls while $0.09-odd is left, each spending $0.028176.
    const { key, client } = await keyWithClient(app, 0.25);
    let served = 0;
    for (;;) {
      try {
        await client.responses.create(responsesBody);
        served++;
      } catch (error) {
        expect(error).toBeInstanceOf(OpenAI.RateLimitError);
        expect((error as InstanceType<typeof OpenAI.RateLimitError>).error).toMatchObject({
          type: 'budget_exceeded',
        });
        break;
      }
      await app.settled();
      expect(served, 'the cap must refuse before 10 calls').toBeLessThan(10);
    }
    const spend = await keySpend(app, key);
    // 0.25 - 5 x 0.028176 = 0.10912 still fits a $0.09 bound, 0.25 - 6 x 0.028176 = 0.080944 does not.
    expect(served).toBe(6);
    expect(spend).toBeCloseTo(6 * RESPONSES_COST, 9);
    expect(spend).toBeLessThanOrEqual(0.25);
  });

  it('a Responses web search tool without max_tool_calls is refused with a 400 naming it', async () => {
    const { key, client } = await keyWithClient(app, 10);
    const before = app.simulator.requestCount;
    const { max_tool_calls: _unset, ...unbounded } = responsesBody;
    const error = await client.responses.create(unbounded).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    const body = (error as InstanceType<typeof OpenAI.BadRequestError>).error as {
      param: string;
      message: string;
    };
    expect(body.param).toBe('max_tool_calls');
    expect(body.message).toContain('max_tool_calls');
    expect(app.simulator.requestCount, 'the route never ran').toBe(before);
    expect(await keySpend(app, key)).toBe(0);
  });
});
