/**
 * Gemini requests written with the REST API's snake_case field names, and grounded with Google Search,
 * hold a strict cap on every adapter. The simulator bills each candidate and reports each candidate's
 * grounding queries (docs/simulator.md); the guard prices a grounded prompt at the price table's
 * `search_context_cost_per_query` ($0.035 on gemini-2.5-flash, billed per prompt).
 *
 * Before the guard read `generation_config.candidate_count` and grounding, a call asking 4 candidates
 * was bounded as 1 and its search fee as 0: ten grounded calls on a $0.20 key spent $0.36.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, startTestApp, type TestApp } from './harness.js';

const PATH = '/v1beta/models/gemini-2.5-flash:generateContent';

async function call(app: TestApp, key: string, body: unknown) {
  const res = await fetch(`${app.baseUrl}${PATH}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { res, body: await res.json() };
}

describe.each(ADAPTERS)('Gemini snake_case fields and grounding on $name', (framework) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });

  it('grounded calls asking 4 candidates stay under the cap, each priced with its search fee', async () => {
    const app = await startTestApp(framework);
    apps.push(app);
    const cap = 0.2;
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: cap })).body.key as string;
    const body = {
      contents: [{ role: 'user', parts: [{ text: 'what happened today?' }] }],
      tools: [{ google_search: {} }],
      generation_config: { candidate_count: 4, max_output_tokens: 100 },
    };
    const answers = await Promise.all(Array.from({ length: 10 }, () => call(app, key, body)));
    await app.settled();
    const served = answers.filter((a) => a.res.status === 200);
    for (const a of answers) {
      if (a.res.status !== 200) expect(a.body.error.type).toBe('budget_exceeded');
    }
    expect(served.length, 'some calls fit').toBeGreaterThan(0);
    expect(served.length, 'not every call fits').toBeLessThan(answers.length);
    for (const a of served) {
      expect(a.body.candidates).toHaveLength(4);
      // Prompt: 'what happened today?' 20 chars = 5 + '[{"google_search":{}}]' 22 chars = 6 -> 11 x $3e-7;
      // 4 candidates x 100 tokens x $2.5e-6 = $0.001; one grounded prompt $0.035.
      expect(Number(a.res.headers.get('x-litellm-response-cost'))).toBeCloseTo(0.0360033, 9);
    }
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    expect(info.spend).toBeCloseTo(served.length * 0.0360033, 9);
    expect(info.spend, 'spend <= cap').toBeLessThanOrEqual(cap);
  }, 60_000);

  it('a grounded call streamed as SSE is charged its search fee too', async () => {
    const app = await startTestApp(framework);
    apps.push(app);
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: 1 })).body.key as string;
    const res = await fetch(`${app.baseUrl}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        contents: [{ role: 'user', parts: [{ text: 'what happened today?' }] }],
        tools: [{ googleSearch: {} }],
        generationConfig: { candidateCount: 2, maxOutputTokens: 10 },
      }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('webSearchQueries');
    await app.settled();
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    // Prompt: 5 + '[{"googleSearch":{}}]' 21 chars = 6 -> 11 x $3e-7; 2 x 10 x $2.5e-6; $0.035 once.
    expect(info.spend).toBeCloseTo(0.0350533, 9);
  }, 60_000);

  it('a cap lowered to fit is written as generation_config.max_output_tokens, once', async () => {
    const app = await startTestApp(framework);
    apps.push(app);
    const cap = 0.2;
    const key = (await admin(app, 'POST', '/key/generate', { max_budget: cap })).body.key as string;
    // 4 x 60,000 tokens x $2.5e-6 = $0.60 cannot fit $0.20; about 20,000 tokens a candidate can.
    const { res, body } = await call(app, key, {
      contents: [{ role: 'user', parts: [{ text: 'write a long story' }] }],
      generation_config: { candidate_count: 4, max_output_tokens: 60_000 },
    });
    // The simulator refuses a body with both generationConfig and generation_config, as Google does.
    expect(res.status, JSON.stringify(body)).toBe(200);
    const lowered = Number(res.headers.get('x-spendguard-output-tokens-lowered'));
    expect(lowered).toBeGreaterThan(256);
    expect(lowered).toBeLessThan(20_000);
    expect(body.usageMetadata.candidatesTokenCount).toBe(4 * lowered);
    await app.settled();
    const info = (await admin(app, 'GET', `/key/info?key=${key}`)).body.info;
    expect(info.spend).toBeGreaterThan(0.19);
    expect(info.spend, 'spend <= cap').toBeLessThanOrEqual(cap);
  }, 60_000);
});
