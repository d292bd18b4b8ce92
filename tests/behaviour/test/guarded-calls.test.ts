import OpenAI from 'openai';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

// gpt-4o's prices in the shipped table (USD per token), written out so the test does not trust the code under test.
const GPT4O_IN = 2.5e-6;
const GPT4O_OUT = 1e-5;
const usd = (prompt: number, completion: number) =>
  Math.round((prompt * GPT4O_IN + completion * GPT4O_OUT) * 1e9) / 1e9;

describe.each(ADAPTERS)('guarded calls on $name', (framework) => {
  for (const appParsesBody of [false, true]) {
    describe(appParsesBody ? 'with the app parsing bodies first' : 'with no app body parser', () => {
      let app: TestApp;
      let key: string;
      let client: OpenAI;
      beforeEach(async () => {
        app = await startTestApp(framework, { appParsesBody });
        await admin(app, 'POST', '/team/new', { team_alias: 'frontend-team', max_budget: 1000 });
        await admin(app, 'POST', '/user/new', { user_id: 'alice', team_id: 'frontend-team' });
        key = (
          await admin(app, 'POST', '/key/generate', {
            user_id: 'alice',
            team_id: 'frontend-team',
            max_budget: 5,
          })
        ).body.key;
        client = new OpenAI({ apiKey: key, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
      });
      afterEach(async () => {
        await app.close();
      });

      it('prices a JSON call from its usage, says so in headers, and logs it with tags', async () => {
        const { data, response } = await client.chat.completions
          .create({
            model: 'gpt-4o',
            messages: [{ role: 'user', content: 'Say hello' }],
            max_tokens: 40,
            // @ts-expect-error LiteLLM's tags field is not in OpenAI's types
            tags: ['feature:chat', 'env:test'],
          })
          .withResponse();
        const cost = usd(data.usage!.prompt_tokens, data.usage!.completion_tokens);
        expect(data.usage!.completion_tokens).toBe(40);
        expect(Number(response.headers.get('x-litellm-response-cost'))).toBe(cost);
        expect(response.headers.get('x-litellm-key-spend')).toBe('0');
        expect(response.headers.get('x-litellm-key-max-budget')).toBe('5');
        const requestId = response.headers.get('x-litellm-call-id');

        await app.settled(); // waits for the settlement in flight
        const logs = await admin(app, 'GET', `/spend/logs?api_key=${key}`);
        expect(logs.status).toBe(200);
        expect(logs.body).toHaveLength(1);
        expect(logs.body[0]).toMatchObject({
          request_id: data.id, // the provider's response id, as LiteLLM keys its logs
          call_id: requestId,
          model: data.model,
          spend: cost,
          prompt_tokens: data.usage!.prompt_tokens,
          completion_tokens: 40,
          user: 'alice',
          request_tags: ['feature:chat', 'env:test'],
          status: 'success',
          metadata: { estimated: false },
        });
        const tags = await admin(app, 'GET', '/spend/tags');
        expect(tags.body).toEqual(
          expect.arrayContaining([
            { individual_request_tag: 'feature:chat', log_count: 1, total_spend: cost },
          ]),
        );
        const info = await admin(app, 'GET', `/key/info?key=${key}`);
        expect(info.body.info.spend).toBe(cost);
        const team = await admin(app, 'GET', '/team/info?team_id=frontend-team');
        expect(team.body.team_info.spend).toBe(cost);
      });

      it('prices a streamed call from its final usage chunk', async () => {
        const stream = await client.chat.completions.create({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'Stream please' }],
          max_tokens: 25,
          stream: true,
          stream_options: { include_usage: true },
        });
        let usage: OpenAI.CompletionUsage | undefined;
        let text = '';
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta?.content ?? '';
          if (chunk.usage) usage = chunk.usage;
        }
        expect(text.length).toBeGreaterThan(0);
        expect(usage?.completion_tokens).toBe(25);
        await app.settled();
        const logs = await admin(app, 'GET', `/spend/logs?api_key=${key}`);
        expect(logs.body).toHaveLength(1);
        expect(logs.body[0]).toMatchObject({
          spend: usd(usage!.prompt_tokens, 25),
          call_type: 'acompletion_stream',
          metadata: { estimated: false },
        });
      });

      it('asks for the usage of a stream whose client did not, prices it exactly, and hides it', async () => {
        const stream = await client.chat.completions.create({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'No usage please' }],
          max_tokens: 12,
          stream: true,
        });
        for await (const chunk of stream) {
          expect(chunk.choices).toHaveLength(1); // no choice-less usage chunk
          expect(chunk.usage).toBeUndefined();
        }
        await app.settled();
        const [log] = (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body;
        expect(log.metadata.estimated).toBe(false);
        expect(log.completion_tokens).toBe(12);
        expect(log.spend).toBe(usd(log.prompt_tokens, 12));
      });

      it('refuses missing, malformed, unknown and blocked keys with 401 before the route runs', async () => {
        const before = app.simulator.requestCount;
        const cases: Array<[Record<string, string>, RegExp]> = [
          [{}, /No api key passed/],
          [{ authorization: 'Basic abc' }, /Malformed API Key/],
          [{ authorization: 'Bearer not-a-virtual-key' }, /Invalid proxy server token/],
          [{ authorization: 'Bearer sk-unknownunknownunknown' }, /Invalid proxy server token/],
        ];
        for (const [headers, message] of cases) {
          const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...headers },
            body: JSON.stringify({ model: 'gpt-4o', messages: [] }),
          });
          expect(res.status).toBe(401);
          const body = await res.json();
          expect(body.error.type).toBe('auth_error');
          expect(body.error.message).toMatch(message);
        }
        const viaXApiKey = await fetch(`${app.baseUrl}/v1/models`, { headers: { 'x-api-key': key } });
        expect(viaXApiKey.status).toBe(200);
        expect(app.simulator.requestCount).toBe(before);
      });

      it('answers 400 to a malformed JSON body and to non-string tags', async () => {
        const bad = await fetch(`${app.baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body: '{"model": "gpt-4o", ',
        });
        expect(bad.status).toBe(400);
        // With the app's own parser first, its error page answers; otherwise the guard's JSON error.
        if (!appParsesBody) expect((await bad.json()).error.message).toMatch(/not valid JSON/);
        const tags = await fetch(`${app.baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body: JSON.stringify({ model: 'gpt-4o', messages: [], tags: 'prod' }),
        });
        expect(tags.status).toBe(400);
        expect((await tags.json()).error).toMatchObject({
          message: 'tags must be an array of strings',
          code: '400',
        });
      });

      it('serves while the worst case fits, then lowers the output cap to what is left, then answers 429; never overspends', async () => {
        // o1: $15 / M input, $60 / M output. At 20k output tokens a call costs ~$1.20: a $5 key takes
        // four whole, then one more with its cap lowered to what is left, then nothing.
        const tight = (
          await admin(app, 'POST', '/key/generate', {
            user_id: 'alice',
            team_id: 'frontend-team',
            max_budget: 5,
          })
        ).body.key;
        const c = new OpenAI({ apiKey: tight, baseURL: `${app.baseUrl}/v1`, maxRetries: 0 });
        const ask = (max_tokens: number) =>
          c.chat.completions
            .create({ model: 'o1', messages: [{ role: 'user', content: 'think' }], max_tokens })
            .withResponse();
        const lowered: Array<string | null> = [];
        const completions: number[] = [];
        let refused: InstanceType<typeof OpenAI.APIError> | null = null;
        for (let i = 0; i < 10 && !refused; i++) {
          try {
            const { data, response } = await ask(20_000);
            lowered.push(response.headers.get('x-spendguard-output-tokens-lowered'));
            completions.push(data.usage!.completion_tokens);
            await app.settled(); // the next call is judged against this one's settlement
          } catch (e) {
            refused = e as InstanceType<typeof OpenAI.APIError>;
          }
        }
        expect(lowered.slice(0, 4)).toEqual([null, null, null, null]);
        expect(completions.slice(0, 4)).toEqual([20_000, 20_000, 20_000, 20_000]);
        // The fifth: its cap lowered to what the last $0.1995 pays for (3,325 output tokens at most).
        expect(lowered).toHaveLength(5);
        const cap = Number(lowered[4]);
        expect(cap).toBe(completions[4]);
        expect(cap).toBeGreaterThan(3_250);
        expect(cap).toBeLessThanOrEqual(3_325);
        expect(refused?.status).toBe(429);
        expect(refused?.error).toMatchObject({ type: 'budget_exceeded', param: null, code: '429' });
        expect((refused!.error as { message: string }).message).toMatch(
          /^Budget has been exceeded! Key=sk-\.\.\.[\w-]{4} Current cost: 4\.99\d+, Max budget: 5\.0\. In flight: 0\.0; this call's worst case: 1\.2\d+ \(0\.01\d+ with its output cut to the minimum\); left once the calls in flight settle: 0\.00\d+\. Lower max_tokens/,
        );
        // A call that asks for less than the minimum cap is never lowered: refused when it cannot fit.
        await expect(ask(100)).rejects.toMatchObject({ status: 429 });
        await app.settled();
        const info = await admin(app, 'GET', `/key/info?key=${tight}`);
        expect(info.body.info.spend).toBeLessThanOrEqual(5);
        expect(info.body.info.spend).toBeGreaterThan(4.99);
        const logs = (await admin(app, 'GET', `/spend/logs?api_key=${tight}`)).body as Array<{
          spend: number;
        }>;
        expect(logs).toHaveLength(5);
        expect(logs.reduce((s, l) => s + l.spend, 0)).toBeCloseTo(info.body.info.spend, 9);
      });

      it('records a stream the client cut midway', async () => {
        await app.close();
        app = await startTestApp(framework, { appParsesBody, simulator: { chunkDelayMs: 2 } });
        key = (await admin(app, 'POST', '/key/generate', {})).body.key;
        const ac = new AbortController();
        const res = await fetch(`${app.baseUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body: JSON.stringify({
            model: 'gpt-4o',
            messages: [{ role: 'user', content: 'long' }],
            max_tokens: 5000,
            stream: true,
          }),
          signal: ac.signal,
        });
        const reader = res.body!.getReader();
        await reader.read();
        ac.abort();
        await app.settled();
        const [log] = (await admin(app, 'GET', `/spend/logs?api_key=${key}`)).body;
        expect(log.metadata.stream_cut).toBe(true);
        expect(log.metadata.estimated).toBe(true);
        expect(log.completion_tokens).toBeLessThan(5000);
      });
    });
  }
});
