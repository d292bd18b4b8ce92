// One scripted sequence of requests against every adapter: the transcripts (status, x-litellm-* and
// friends, JSON or SSE bodies, with ids and timestamps normalised) must be identical. A difference
// between Express and Hono in what the guard answers, prices or records is a bug.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, MASTER, startTestApp, type TestApp } from './harness.js';

const KEY = 'sk-behaviour-alice-0000000001';
const CUT_KEY = 'sk-behaviour-cut-000000000002';
const TIGHT_KEY = 'sk-behaviour-tight-0000000003';
const BODY_LIMIT = 64 * 1024;

interface Entry {
  step: string;
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** Ids and timestamps out; everything else exactly as answered. */
function normalise(value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    if (UUID.test(value)) return '<uuid>';
    if (ISO_TIME.test(value)) return '<time>';
    if (value.startsWith('chatcmpl-')) return '<completion id>';
    return value;
  }
  if (typeof value === 'number' && key === 'created') return '<unix time>';
  if (Array.isArray(value)) return value.map((v) => normalise(v));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v, k)]));
  }
  return value;
}

/** The headers the guard is responsible for; transport headers (date, length, keep-alive) differ by server. */
function guardHeaders(headers: Headers): Record<string, string> {
  const kept: Record<string, string> = {};
  headers.forEach((value, name) => {
    if (/^(x-litellm-|x-spendguard-|x-ratelimit-|retry-after$|content-type$)/.test(name)) {
      kept[name] = name === 'x-litellm-call-id' ? (normalise(value) as string) : value;
    }
  });
  return kept;
}

async function readBody(res: Response): Promise<unknown> {
  const text = await res.text();
  if (!(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    return normalise(text === '' ? null : JSON.parse(text));
  }
  return text
    .split('\n\n')
    .filter((event) => event.startsWith('data: '))
    .map((event) => event.slice(6))
    .map((data) => (data === '[DONE]' ? data : normalise(JSON.parse(data))));
}

/** Runs the script against one app and returns what it answered. */
async function runScript(app: TestApp): Promise<Entry[]> {
  const transcript: Entry[] = [];
  const settle = async () => {
    await app.settled();
  };
  const send = async (step: string, method: string, path: string, auth: string | null, body?: unknown) => {
    const res = await fetch(`${app.baseUrl}${path}`, {
      method,
      headers: {
        ...(auth ? { authorization: `Bearer ${auth}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    transcript.push({
      step,
      status: res.status,
      headers: guardHeaders(res.headers),
      body: await readBody(res),
    });
    await settle();
  };
  const chat = (extra: Record<string, unknown>) => ({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'Say hello' }],
    max_tokens: 12,
    ...extra,
  });

  // The management API, its refusals included.
  await send('team', 'POST', '/team/new', MASTER, {
    team_id: 't-fe',
    team_alias: 'frontend-team',
    max_budget: 1000,
  });
  await send('user', 'POST', '/user/new', MASTER, {
    user_id: 'alice',
    team_id: 't-fe',
    auto_create_key: false,
  });
  await send('key', 'POST', '/key/generate', MASTER, {
    key: KEY,
    user_id: 'alice',
    team_id: 't-fe',
    max_budget: 5,
  });
  await send('cut key', 'POST', '/key/generate', MASTER, { key: CUT_KEY });
  await send('tight key', 'POST', '/key/generate', MASTER, { key: TIGHT_KEY, max_budget: 5 });
  await send('duplicate team', 'POST', '/team/new', MASTER, { team_id: 't-fe' });
  await send('malformed admin JSON', 'POST', '/team/new', MASTER, '{"team_alias": ');
  await send('negative budget', 'POST', '/team/new', MASTER, { team_alias: 'x', max_budget: -1 });
  await send('admin without key', 'POST', '/team/new', null, { team_alias: 'x' });
  await send('admin with a virtual key', 'POST', '/team/new', KEY, { team_alias: 'x' });
  await send('unknown key info', 'GET', '/key/info?key=sk-nosuchkeynosuchkey', MASTER);
  await send('bad spend/logs date', 'GET', '/spend/logs?start_date=yesterday', MASTER);

  // Guarded calls.
  await send('JSON call', 'POST', '/v1/chat/completions', KEY, chat({ tags: ['feature:chat', 'env:test'] }));
  await send('stream with usage', 'POST', '/v1/chat/completions', KEY, {
    ...chat({ stream: true, stream_options: { include_usage: true } }),
    tags: ['feature:chat'],
  });
  await send('stream without usage', 'POST', '/v1/chat/completions', KEY, chat({ stream: true }));
  await send('GET with no body', 'GET', '/v1/models', KEY);
  await send('no key', 'POST', '/v1/chat/completions', null, chat({}));
  await send('malformed authorization', 'POST', '/v1/chat/completions', 'not-a-virtual-key', chat({}));
  await send('unknown key', 'POST', '/v1/chat/completions', 'sk-unknownunknownunknown', chat({}));
  await send('master key on a guarded route', 'POST', '/v1/chat/completions', MASTER, chat({}));
  await send('malformed JSON', 'POST', '/v1/chat/completions', KEY, '{"model": "gpt-4o", ');
  await send('tags not an array', 'POST', '/v1/chat/completions', KEY, chat({ tags: 'prod' }));
  await send(
    'worst case over the budget',
    'POST',
    '/v1/chat/completions',
    KEY,
    // 1,000 choices of o1: even at the 256-token minimum cap they cost $15, over the $5 key.
    chat({ model: 'o1', max_tokens: 20_000, n: 1000 }),
  );
  const huge = chat({ messages: [{ role: 'user', content: 'x'.repeat(BODY_LIMIT) }] });
  await send('body over the limit', 'POST', '/v1/chat/completions', KEY, huge);

  // A stream the client cuts: how many tokens got through depends on timing, so only the shape counts.
  const ac = new AbortController();
  const cut = await fetch(`${app.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${CUT_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(chat({ max_tokens: 5000, stream: true })),
    signal: ac.signal,
  });
  // Read until a word of the answer has arrived (the first chunk can be the role's alone): the guard has
  // then metered at least one token, and the cut leaves thousands unsent (2 ms a chunk).
  const reader = cut.body!.getReader();
  const decoder = new TextDecoder();
  for (let seen = ''; !seen.includes('hello'); ) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += decoder.decode(value, { stream: true });
  }
  ac.abort();
  transcript.push({
    step: 'stream cut by the client',
    status: cut.status,
    headers: guardHeaders(cut.headers),
    body: null,
  });
  await settle();

  // Spend a $5 budget with o1 (a worst case of ~$1.20 a call): four whole calls, a fifth with its
  // output cap lowered to what is left, then refusals.
  for (let i = 0; i < 6; i++) {
    await send(`o1 call ${i + 1}`, 'POST', '/v1/chat/completions', TIGHT_KEY, {
      model: 'o1',
      messages: [{ role: 'user', content: 'think' }],
      max_tokens: 20_000,
    });
  }
  await send('a call under the minimum cap', 'POST', '/v1/chat/completions', TIGHT_KEY, {
    model: 'o1',
    messages: [{ role: 'user', content: 'x' }],
    max_tokens: 100,
  });

  // What was recorded.
  await send('spend logs', 'GET', `/spend/logs?api_key=${KEY}`, MASTER);
  await send('tight spend logs', 'GET', `/spend/logs?api_key=${TIGHT_KEY}`, MASTER);
  await send('key info', 'GET', `/key/info?key=${KEY}`, MASTER);
  await send('tight key info', 'GET', `/key/info?key=${TIGHT_KEY}`, MASTER);
  await send('own key info', 'GET', '/key/info', KEY);
  await send('spend by tag', 'GET', '/spend/tags', MASTER);
  await send('team info', 'GET', '/team/info?team_id=t-fe', MASTER);
  await send('user info', 'GET', '/user/info?user_id=alice', MASTER);
  const cutLogs = await fetch(`${app.baseUrl}/spend/logs?api_key=${CUT_KEY}`, {
    headers: { authorization: `Bearer ${MASTER}` },
  });
  const cutLog = ((await cutLogs.json()) as Array<Record<string, any>>).map((l) => ({
    call_type: l.call_type,
    status: l.status,
    model: l.model,
    cut: l.metadata.stream_cut,
    estimated: l.metadata.estimated,
    partial: l.completion_tokens > 0 && l.completion_tokens < 5000,
  }));
  transcript.push({ step: 'cut stream log', status: cutLogs.status, headers: {}, body: cutLog });
  return transcript;
}

describe('every adapter answers the same script identically', () => {
  const transcripts = new Map<string, Entry[]>();
  beforeAll(async () => {
    for (const framework of ADAPTERS) {
      const app = await startTestApp(framework, {
        bodyLimitBytes: BODY_LIMIT,
        simulator: { chunkDelayMs: 2 },
      });
      try {
        transcripts.set(framework.name, await runScript(app));
      } finally {
        await app.close();
      }
    }
  }, 120_000);
  afterAll(() => transcripts.clear());

  it('follows the expected script on the reference adapter', () => {
    const reference = transcripts.get(ADAPTERS[0]!.name)!;
    const statuses = Object.fromEntries(reference.map((e) => [e.step, e.status]));
    expect(statuses).toEqual({
      team: 200,
      user: 200,
      key: 200,
      'cut key': 200,
      'tight key': 200,
      'duplicate team': 409,
      'malformed admin JSON': 422,
      // A management body or query that fails its schema: LiteLLM's 422.
      'negative budget': 422,
      'admin without key': 401,
      'admin with a virtual key': 403,
      'unknown key info': 404,
      'bad spend/logs date': 422,
      'JSON call': 200,
      'stream with usage': 200,
      'stream without usage': 200,
      'GET with no body': 200,
      'no key': 401,
      'malformed authorization': 401,
      'unknown key': 401,
      'master key on a guarded route': 200,
      'malformed JSON': 400,
      'tags not an array': 400,
      'worst case over the budget': 429,
      'body over the limit': 413,
      'stream cut by the client': 200,
      'o1 call 1': 200,
      'o1 call 2': 200,
      'o1 call 3': 200,
      'o1 call 4': 200,
      'o1 call 5': 200,
      'o1 call 6': 429,
      'a call under the minimum cap': 429,
      'spend logs': 200,
      'tight spend logs': 200,
      'key info': 200,
      'tight key info': 200,
      'own key info': 200,
      'spend by tag': 200,
      'team info': 200,
      'user info': 200,
      'cut stream log': 200,
    });
    const entry = (step: string) => reference.find((e) => e.step === step)!;
    expect(Object.keys(entry('JSON call').headers).sort()).toEqual([
      'content-type',
      'x-litellm-call-id',
      'x-litellm-key-max-budget',
      'x-litellm-key-spend',
      'x-litellm-response-cost',
      'x-spendguard-budget-remaining',
    ]);
    expect(entry('stream with usage').headers['x-litellm-response-cost']).toBeUndefined();
    expect(entry('o1 call 5').headers['x-spendguard-output-tokens-lowered']).toMatch(/^3\d{3}$/);
    expect(entry('o1 call 6').body).toMatchObject({ error: { type: 'budget_exceeded', code: '429' } });
    expect(entry('body over the limit').body).toEqual({
      error: {
        message: `Request body is larger than ${BODY_LIMIT} bytes.`,
        type: 'invalid_request_error',
        param: null,
        code: '413',
      },
    });
    expect(entry('cut stream log').body).toEqual([
      {
        call_type: 'acompletion_stream',
        status: 'success',
        model: 'gpt-4o',
        cut: true,
        estimated: true,
        partial: true,
      },
    ]);
  });

  it.each(ADAPTERS.slice(1))('$name answers exactly as express 5', ({ name }) => {
    const reference = transcripts.get(ADAPTERS[0]!.name)!;
    const transcript = transcripts.get(name)!;
    expect(transcript.map((e) => e.step)).toEqual(reference.map((e) => e.step));
    for (const [i, entry] of transcript.entries()) expect(entry, entry.step).toEqual(reference[i]);
  });
});
