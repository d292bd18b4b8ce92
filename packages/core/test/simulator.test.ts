import { request as httpRequest } from 'node:http';
import { get_encoding } from 'tiktoken';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Simulator, startSimulator } from '../src/testing/simulator.js';

// Tokens counted with tiktoken itself (OpenAI's published encodings: cl100k_base for gpt-4, o200k_base
// for the gpt-4o and o-series families), not with the guard's token counter.
const cl100k = get_encoding('cl100k_base');
const o200k = get_encoding('o200k_base');
const tokens = (encoding: typeof cl100k, text: string) => encoding.encode_ordinary(text).length;

const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Say hello.' },
];

let simulator: Simulator;

beforeAll(async () => {
  simulator = await startSimulator();
});

afterAll(async () => {
  await simulator.close();
});

function post(
  body: unknown,
  headers: Record<string, string> = {},
  path = '/chat/completions',
): Promise<Response> {
  return fetch(`${simulator.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** The JSON payloads of an SSE body, in order; `[DONE]` kept as a string. */
function parseSse(text: string): unknown[] {
  expect(text.endsWith('\n\n')).toBe(true);
  return text
    .trim()
    .split('\n\n')
    .map((event) => {
      expect(event.startsWith('data: ')).toBe(true);
      const data = event.slice('data: '.length);
      return data === '[DONE]' ? data : JSON.parse(data);
    });
}

describe('simulator: JSON chat completions', () => {
  it("answers in OpenAI's shape with deterministic usage", async () => {
    const response = await post({ model: 'gpt-4o', messages, max_tokens: 7 });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    const body = (await response.json()) as Record<string, unknown>;
    // Prompt: 3 + [3 + system 1 + You/ are/ a/ helpful/ assistant/. 6] + [3 + user 1 + Say/ hello/. 3] = 20
    expect(body).toEqual({
      id: expect.stringMatching(/^chatcmpl-[A-Za-z0-9]{29}$/),
      object: 'chat.completion',
      created: expect.any(Number),
      model: 'gpt-4o',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: 'hello hello hello hello hello hello hello',
            refusal: null,
            annotations: [],
          },
          logprobs: null,
          finish_reason: 'length',
        },
      ],
      usage: {
        prompt_tokens: 20,
        completion_tokens: 7,
        total_tokens: 27,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
        completion_tokens_details: {
          reasoning_tokens: 0,
          audio_tokens: 0,
          accepted_prediction_tokens: 0,
          rejected_prediction_tokens: 0,
        },
      },
      service_tier: 'default',
      system_fingerprint: expect.stringMatching(/^fp_/),
    });
    expect(Math.abs((body.created as number) - Date.now() / 1000)).toBeLessThan(60);
  });

  it('uses max_completion_tokens or max_tokens, else defaultCompletionTokens; the text has that many tokens', async () => {
    const a = (await (await post({ model: 'gpt-4', messages, max_completion_tokens: 33 })).json()) as {
      usage: { completion_tokens: number; prompt_tokens: number };
      choices: Array<{ message: { content: string }; finish_reason: string }>;
    };
    expect(a.usage.completion_tokens).toBe(33);
    expect(tokens(cl100k, a.choices[0]?.message.content ?? '')).toBe(33);
    // cl100k_base splits these messages as o200k_base does: 20, as above.
    expect(a.usage.prompt_tokens).toBe(20);

    const b = (await (await post({ model: 'gpt-4o-mini', messages })).json()) as typeof a;
    expect(b.usage.completion_tokens).toBe(16);
    expect(tokens(o200k, b.choices[0]?.message.content ?? '')).toBe(16);
    expect(b.choices[0]?.finish_reason).toBe('stop');

    const c = (await (await post({ model: 'gpt-4o', messages, max_tokens: 7 })).json()) as typeof a;
    expect(c.usage.completion_tokens).toBe(7);
  });

  it("refuses max_tokens with max_completion_tokens, as OpenAI does; DeepSeek's models read max_tokens alone", async () => {
    const both = await post({ model: 'gpt-4o', messages, max_completion_tokens: 33, max_tokens: 5 });
    expect(both.status).toBe(400);
    expect(await both.json()).toEqual({
      error: {
        message: "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported.",
        type: 'invalid_request_error',
        param: 'max_tokens',
        code: 'invalid_parameter_combination',
      },
    });
    type Usage = { usage: { completion_tokens: number } };
    const ignored = (await (
      await post({ model: 'deepseek-chat', messages, max_completion_tokens: 5 })
    ).json()) as Usage;
    expect(ignored.usage.completion_tokens).toBe(16); // defaultCompletionTokens: the cap was not read
    for (const model of ['deepseek-chat', 'deepseek/deepseek-reasoner']) {
      const capped = (await (
        await post({ model, messages, max_completion_tokens: 5, max_tokens: 9 })
      ).json()) as Usage;
      expect(capped.usage.completion_tokens, model).toBe(9);
    }
  });

  it('is served on /v1/chat/completions and /chat/completions', async () => {
    const base = simulator.url.replace(/\/v1$/, '');
    for (const path of ['/v1/chat/completions', '/chat/completions']) {
      const response = await fetch(`${base}${path}`, {
        method: 'POST',
        body: JSON.stringify({ model: 'gpt-4o', messages }),
      });
      expect(response.status, path).toBe(200);
      await response.arrayBuffer();
    }
  });
});

describe('simulator: several choices (OpenAI chat `n`)', () => {
  it('generates and bills every choice in full: completion_tokens is their total', async () => {
    const response = await post({ model: 'gpt-4o', messages, max_tokens: 4, n: 3 });
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      choices: { index: number; message: { content: string }; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    // OpenAI bills the prompt once and each choice's tokens: 4 x 3 = 12 completion tokens.
    expect(body.usage).toMatchObject({ prompt_tokens: 20, completion_tokens: 12, total_tokens: 32 });
    expect(body.choices.map((c) => [c.index, c.message.content, c.finish_reason])).toEqual([
      [0, 'hello hello hello hello', 'length'],
      [1, 'hello hello hello hello', 'length'],
      [2, 'hello hello hello hello', 'length'],
    ]);
    for (const choice of body.choices) expect(tokens(o200k, choice.message.content)).toBe(4);
  });

  it('streams each choice under its own index, and the usage of all of them', async () => {
    const response = await post({
      model: 'gpt-4o',
      messages,
      max_tokens: 3,
      n: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
    const events = parseSse(await response.text());
    const text = ['', ''];
    const finished: string[] = [];
    let usage: unknown;
    for (const event of events) {
      if (event === '[DONE]') continue;
      const chunk = event as {
        choices: { index: number; delta: { content?: string }; finish_reason: string | null }[];
        usage: unknown;
      };
      for (const choice of chunk.choices) {
        text[choice.index] += choice.delta.content ?? '';
        if (choice.finish_reason) finished.push(`${choice.index}:${choice.finish_reason}`);
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toEqual(['hello hello hello', 'hello hello hello']);
    expect(finished).toEqual(['0:length', '1:length']);
    expect(usage).toMatchObject({ prompt_tokens: 20, completion_tokens: 6, total_tokens: 26 });
  });

  it('refuses an n that is no integer from 1 to 128 with a 400 naming n, as OpenAI does', async () => {
    for (const n of [0, 129, 1.5, '2']) {
      const response = await post({ model: 'gpt-4o', messages, n });
      expect(response.status).toBe(400);
      const body = (await response.json()) as { error: { param: string } };
      expect(body.error.param).toBe('n');
    }
    const one = await post({ model: 'gpt-4o', messages, max_tokens: 2, n: null });
    expect(((await one.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(2);
  });
});

describe('simulator: OpenAI Responses chains and background responses', () => {
  type Answer = {
    id: string;
    status: string;
    background: boolean;
    previous_response_id: string | null;
    output: unknown[];
    usage: { input_tokens: number; output_tokens: number } | null;
  };
  const respond = async (body: Record<string, unknown>) => {
    const res = await post({ model: 'gpt-4o', ...body }, {}, '/responses');
    return { status: res.status, body: (await res.json()) as Answer & { error?: Record<string, unknown> } };
  };

  it('bills every earlier turn of a chain (its input and its output) as input again', async () => {
    const first = (await respond({ input: 'hello', max_output_tokens: 40 })).body;
    const alone = (await respond({ input: 'more', max_output_tokens: 10 })).body;
    const second = (await respond({ input: 'more', max_output_tokens: 10, previous_response_id: first.id }))
      .body;
    expect(second.previous_response_id).toBe(first.id);
    const carried = first.usage!.input_tokens + first.usage!.output_tokens;
    expect(second.usage!.input_tokens).toBe(alone.usage!.input_tokens + carried);
    const third = (await respond({ input: 'more', max_output_tokens: 10, previous_response_id: second.id }))
      .body;
    expect(third.usage!.input_tokens).toBe(
      alone.usage!.input_tokens + second.usage!.input_tokens + second.usage!.output_tokens,
    );
  });

  it("refuses a previous response it does not hold (unknown, or not stored) with OpenAI's 400", async () => {
    const unstored = (await respond({ input: 'x', store: false })).body;
    for (const id of ['resp_nope', unstored.id]) {
      const answer = await respond({ input: 'x', previous_response_id: id });
      expect(answer.status).toBe(400);
      expect(answer.body.error).toEqual({
        message: `Previous response with id '${id}' not found.`,
        type: 'invalid_request_error',
        param: 'previous_response_id',
        code: 'previous_response_not_found',
      });
    }
  });

  it('answers a background response at once, queued, without output or usage', async () => {
    const answer = await respond({ input: 'a long job', background: true });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ status: 'queued', background: true, output: [], usage: null });
  });
});

describe("simulator: OpenAI's Images API", () => {
  it('bills each image the output tokens OpenAI publishes for its quality and size, the prompt as text', async () => {
    const res = await post(
      { model: 'gpt-image-1', prompt: 'a cat', n: 2, quality: 'medium', size: '1536x1024' },
      {},
      '/images/generations',
    );
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      data: Array<{ b64_json: string }>;
      usage: { input_tokens: number; output_tokens: number; total_tokens: number };
    };
    expect(body.data).toHaveLength(2);
    expect(Buffer.from(body.data[0]!.b64_json, 'base64').subarray(1, 4).toString()).toBe('PNG');
    expect(body.usage.output_tokens).toBe(2 * 1568);
    expect(body.usage.input_tokens).toBe(2); // 'a cat' in o200k_base
    expect(body.usage.total_tokens).toBe(2 + 2 * 1568);
    const auto = (await (
      await post({ model: 'gpt-image-1', prompt: 'x' }, {}, '/images/generations')
    ).json()) as {
      usage: { output_tokens: number };
    };
    expect(auto.usage.output_tokens).toBe(4160); // auto: high quality, 1024x1024
  });

  it('refuses what OpenAI refuses, and a stream it does not speak', async () => {
    for (const [body, param] of [
      [{ model: 'gpt-image-1' }, 'prompt'],
      [{ model: 'gpt-image-1', prompt: 'x', n: 11 }, 'n'],
      [{ model: 'gpt-image-1', prompt: 'x', size: '7x7' }, 'size'],
      [{ model: 'gpt-image-1', prompt: 'x', quality: 'constructor' }, 'size'],
      [{ model: 'gpt-image-1', prompt: 'x', stream: true }, 'stream'],
    ] as const) {
      const res = await post(body, {}, '/images/generations');
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(((await res.json()) as { error: { param: string } }).error.param).toBe(param);
    }
  });
});

describe('simulator: streaming', () => {
  it('streams SSE chunks and a usage chunk when stream_options.include_usage is set', async () => {
    const response = await post({
      model: 'gpt-4o',
      messages,
      max_tokens: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const events = parseSse(await response.text());
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1) as Array<Record<string, unknown>>;
    // role, 3 content deltas, finish, usage
    expect(chunks).toHaveLength(6);
    const [first, ...rest] = chunks;
    expect(first).toEqual({
      id: expect.stringMatching(/^chatcmpl-/),
      object: 'chat.completion.chunk',
      created: expect.any(Number),
      model: 'gpt-4o',
      service_tier: 'default',
      system_fingerprint: expect.stringMatching(/^fp_/),
      choices: [
        {
          index: 0,
          delta: { role: 'assistant', content: '', refusal: null },
          logprobs: null,
          finish_reason: null,
        },
      ],
      usage: null,
    });
    expect(new Set(chunks.map((chunk) => chunk.id)).size).toBe(1);
    const deltas = rest
      .slice(0, 3)
      .map((chunk) => (chunk.choices as Array<{ delta: { content: string } }>)[0]?.delta);
    expect(deltas).toEqual([{ content: 'hello' }, { content: ' hello' }, { content: ' hello' }]);
    expect(rest[3]?.choices).toEqual([{ index: 0, delta: {}, logprobs: null, finish_reason: 'length' }]);
    expect(rest[3]?.usage).toBeNull();
    expect(rest[4]).toMatchObject({
      choices: [],
      usage: {
        prompt_tokens: 20,
        completion_tokens: 3,
        total_tokens: 23,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 0 },
      },
    });
  });

  it('sends no usage chunk (and no usage field) without include_usage', async () => {
    const response = await post({ model: 'gpt-4o', messages, max_tokens: 2, stream: true });
    const events = parseSse(await response.text()) as Array<Record<string, unknown> | string>;
    expect(events).toHaveLength(1 + 2 + 1 + 1);
    for (const event of events.slice(0, -1)) {
      expect(event).not.toHaveProperty('usage');
      expect((event as { choices: unknown[] }).choices).toHaveLength(1);
    }
  });

  it('spaces chunks by chunkDelayMs and waits latencyMs before the first byte', async () => {
    const slow = await startSimulator({ latencyMs: 60, chunkDelayMs: 20 });
    try {
      const started = performance.now();
      const response = await fetch(`${slow.url}/chat/completions`, {
        method: 'POST',
        body: JSON.stringify({ model: 'gpt-4o', messages, max_tokens: 4, stream: true }),
      });
      const headersAt = performance.now() - started;
      expect(headersAt).toBeGreaterThanOrEqual(55);
      const reader = response.body?.getReader();
      let reads = 0;
      let text = '';
      for (;;) {
        const { done, value } = (await reader?.read()) ?? { done: true, value: undefined };
        if (done) break;
        reads++;
        text += new TextDecoder().decode(value);
      }
      const total = performance.now() - started;
      // 1 role + 4 content + 1 finish + [DONE] = 7 events, 6 gaps of 20 ms
      expect(parseSse(text)).toHaveLength(7);
      expect(total).toBeGreaterThanOrEqual(55 + 6 * 18);
      expect(reads).toBeGreaterThan(1);
    } finally {
      await slow.close();
    }
  });
});

describe('simulator: scripted usage', () => {
  it('takes usage from the x-simulator-usage header', async () => {
    const usage = { prompt_tokens: 1234, completion_tokens: 50, cached_tokens: 1000, reasoning_tokens: 40 };
    const response = await post(
      { model: 'o4-mini', messages },
      { 'x-simulator-usage': JSON.stringify(usage) },
    );
    const body = (await response.json()) as {
      usage: Record<string, unknown>;
      choices: Array<{ message: { content: string }; finish_reason: string }>;
    };
    expect(body.usage).toEqual({
      prompt_tokens: 1234,
      completion_tokens: 50,
      total_tokens: 1284,
      prompt_tokens_details: { cached_tokens: 1000, audio_tokens: 0 },
      completion_tokens_details: {
        reasoning_tokens: 40,
        audio_tokens: 0,
        accepted_prediction_tokens: 0,
        rejected_prediction_tokens: 0,
      },
    });
    // The visible text is the completion minus the reasoning.
    expect(tokens(o200k, body.choices[0]?.message.content ?? '')).toBe(10);
    expect(body.choices[0]?.finish_reason).toBe('stop');
  });

  it('uses scriptNextUsage() in FIFO order, one per call, with partial overrides', async () => {
    simulator.scriptNextUsage({ prompt_tokens: 111 });
    simulator.scriptNextUsage({ completion_tokens: 5, cached_tokens: 7 });
    const usageOf = async (response: Promise<Response>) =>
      ((await (await response).json()) as { usage: Record<string, unknown> }).usage;

    // A header-scripted call leaves the queue alone.
    expect(
      await usageOf(post({ model: 'gpt-4o', messages }, { 'x-simulator-usage': '{"prompt_tokens":1}' })),
    ).toMatchObject({ prompt_tokens: 1 });
    // A rejected call does not consume the queue either.
    expect((await post({ messages })).status).toBe(400);

    expect(await usageOf(post({ model: 'gpt-4o', messages }))).toMatchObject({
      prompt_tokens: 111,
      completion_tokens: 16,
    });
    expect(await usageOf(post({ model: 'gpt-4o', messages, max_tokens: 99 }))).toMatchObject({
      prompt_tokens: 20,
      completion_tokens: 5,
      total_tokens: 25,
      prompt_tokens_details: { cached_tokens: 7, audio_tokens: 0 },
    });
    expect(await usageOf(post({ model: 'gpt-4o', messages }))).toMatchObject({
      prompt_tokens: 20,
      completion_tokens: 16,
    });
  });

  it('scripts streamed usage too', async () => {
    simulator.scriptNextUsage({ prompt_tokens: 900, completion_tokens: 2, cached_tokens: 800 });
    const response = await post({
      model: 'gpt-4o',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const events = parseSse(await response.text()) as Array<Record<string, unknown>>;
    expect(events.at(-2)?.usage).toMatchObject({
      prompt_tokens: 900,
      completion_tokens: 2,
      prompt_tokens_details: { cached_tokens: 800 },
    });
  });

  it('rejects bad scripts', async () => {
    expect(() => simulator.scriptNextUsage({ prompt_tokens: -1 })).toThrow(
      /prompt_tokens must be a non-negative integer/,
    );
    const response = await post({ model: 'gpt-4o', messages }, { 'x-simulator-usage': 'nope' });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { message: string } }).error.message).toMatch(
      /x-simulator-usage/,
    );
  });
});

describe('simulator: errors', () => {
  it("answers bad JSON with 400 in OpenAI's error shape", async () => {
    const response = await post('{"model": "gpt-4o", ');
    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toEqual({
      error: {
        message: expect.stringContaining('We could not parse the JSON body of your request.'),
        type: 'invalid_request_error',
        param: null,
        code: null,
      },
    });
  });

  it('answers a missing model or messages with 400', async () => {
    const noModel = await post({ messages });
    expect(noModel.status).toBe(400);
    expect(await noModel.json()).toEqual({
      error: {
        message: 'you must provide a model parameter',
        type: 'invalid_request_error',
        param: null,
        code: null,
      },
    });
    const noMessages = await post({ model: 'gpt-4o' });
    expect(noMessages.status).toBe(400);
    expect(await noMessages.json()).toEqual({
      error: {
        message: "Missing required parameter: 'messages'.",
        type: 'invalid_request_error',
        param: 'messages',
        code: 'missing_required_parameter',
      },
    });
    expect((await post({ model: 'gpt-4o', messages, max_tokens: -3 })).status).toBe(400);
  });

  it('answers an unknown path with 404 JSON and a wrong method with 405', async () => {
    const response = await post({ model: 'gpt-4o', messages }, {}, '/audio/speech');
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      error: {
        message: 'Invalid URL (POST /v1/audio/speech)',
        type: 'invalid_request_error',
        param: null,
        code: null,
      },
    });
    const get = await fetch(`${simulator.url}/chat/completions`);
    expect(get.status).toBe(405);
    expect(((await get.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
  });
});

describe('simulator: connection handling', () => {
  it('keeps connections alive across requests', async () => {
    const agentSockets = new Set<unknown>();
    const { Agent } = await import('node:http');
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const url = new URL(`${simulator.url}/chat/completions`);
    const once = () =>
      new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
        const req = httpRequest(
          url,
          { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
          (res) => {
            agentSockets.add(res.socket);
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
          },
        );
        req.on('error', reject);
        req.end(JSON.stringify({ model: 'gpt-4o', messages }));
      });
    const results = [await once(), await once(), await once()];
    agent.destroy();
    expect(results.map((result) => result.status)).toEqual([200, 200, 200]);
    expect(results[0]?.connection).toBe('keep-alive');
    expect(agentSockets.size).toBe(1);
  });

  it('counts every request and closes with connections still open', async () => {
    const counted = await startSimulator();
    expect(counted.url).toBe(`http://127.0.0.1:${counted.port}/v1`);
    expect(counted.requestCount).toBe(0);
    await (await fetch(`${counted.url}/chat/completions`, { method: 'POST', body: '{}' })).arrayBuffer();
    await (await fetch(`${counted.url}/models`)).arrayBuffer();
    expect(counted.requestCount).toBe(2);
    // fetch keeps its connection alive: close() must not wait for it.
    await counted.close();
    await counted.close();
  });
});
