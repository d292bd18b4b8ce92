// A JSON body is first read without its generated text (skimJsonObject); whatever the body, the tap
// must then report what parsing it whole reports: same format, model and usage, and the same text
// whenever the text is needed (no usage, or not final).
import { describe, expect, it } from 'vitest';
import { skimJsonObject } from '../src/metering/json-skim.js';
import { ResponseTap } from '../src/metering/response-meter.js';
import { observeJson, type WireFormat } from '../src/metering/wire-formats.js';

// Quotes, brackets and backslashes inside the text: escaped quotes hide a `]` that, misread, would close
// the choices early.
const text = 'He said "usage": {"prompt_tokens": 999} ] } \\ and left. "[" é ✓ 🎉 \u00e9\n\\';
const usage = {
  prompt_tokens: 11,
  completion_tokens: 16,
  total_tokens: 27,
  prompt_tokens_details: { cached_tokens: 3 },
};

const bodies: Array<[string, string, WireFormat | null]> = [
  [
    'OpenAI chat, usage then service tier and fingerprint',
    JSON.stringify({
      id: 'c1',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-4o-mini-2024-07-18',
      choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
      usage,
      service_tier: 'priority',
      system_fingerprint: 'fp_1',
    }),
    'openai-chat',
  ],
  [
    'OpenAI chat, pretty-printed, with a nested "usage" inside a choice',
    JSON.stringify(
      {
        object: 'chat.completion',
        model: 'gpt-4o',
        choices: [{ message: { content: '{"usage": 1}', usage: { prompt_tokens: 5 } } }],
        usage: { prompt_tokens: 7, completion_tokens: 2 },
      },
      null,
      2,
    ),
    'openai-chat',
  ],
  [
    'OpenAI chat without usage (the text is counted)',
    JSON.stringify({
      object: 'chat.completion',
      model: 'gpt-4o',
      choices: [{ message: { content: 'four words right here' } }],
    }),
    'openai-chat',
  ],
  [
    'OpenAI chat, usage null',
    JSON.stringify({ object: 'chat.completion', model: 'gpt-4o', choices: [], usage: null }),
    'openai-chat',
  ],
  [
    'OpenAI chat, the usage key twice (the last wins)',
    '{"object":"chat.completion","model":"gpt-4o","usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":2}}',
    'openai-chat',
  ],
  [
    'OpenAI Responses',
    JSON.stringify({
      object: 'response',
      model: 'gpt-4.1',
      output: [{ type: 'message', content: [{ type: 'output_text', text }] }],
      usage: { input_tokens: 30, output_tokens: 9, input_tokens_details: { cached_tokens: 10 } },
    }),
    'openai-responses',
  ],
  [
    'embeddings',
    JSON.stringify({
      object: 'list',
      data: [{ embedding: [0.1, -2e-3, 3] }],
      model: 'text-embedding-3-small',
      usage: { prompt_tokens: 8, total_tokens: 8 },
    }),
    'openai-embeddings',
  ],
  [
    'Anthropic message',
    JSON.stringify({
      type: 'message',
      model: 'claude-sonnet-4-5',
      content: [{ type: 'text', text }],
      usage: {
        input_tokens: 12,
        cache_read_input_tokens: 100,
        output_tokens: 5,
        server_tool_use: { web_search_requests: 2 },
      },
    }),
    'anthropic-messages',
  ],
  [
    'Gemini object',
    JSON.stringify({
      candidates: [{ content: { parts: [{ text }] }, finishReason: 'STOP' }],
      usageMetadata: { promptTokenCount: 9, candidatesTokenCount: 4, thoughtsTokenCount: 2 },
      modelVersion: 'gemini-2.5-flash',
    }),
    'gemini',
  ],
  [
    'Gemini JSON array (streamGenerateContent without alt=sse)',
    JSON.stringify([
      { candidates: [{ content: { parts: [{ text: 'a' }] } }], usageMetadata: { promptTokenCount: 9 } },
      {
        candidates: [{ content: { parts: [{ text: 'b' }] }, finishReason: 'STOP' }],
        usageMetadata: { promptTokenCount: 9, candidatesTokenCount: 2 },
      },
    ]),
    'gemini',
  ],
  [
    'code dense with escaped quotes (read whole)',
    JSON.stringify({
      object: 'chat.completion',
      model: 'gpt-4o',
      choices: [{ message: { content: 'f("a", "b");\n'.repeat(50) } }],
      usage: { prompt_tokens: 5, completion_tokens: 300 },
    }),
    'openai-chat',
  ],
  [
    'an error body',
    JSON.stringify({ error: { message: 'nope', type: 'invalid_request_error' } }),
    'openai-chat',
  ],
  ['empty object', '{}', null],
  ['whitespace around', `  \n${JSON.stringify({ object: 'chat.completion', model: 'm', usage })}\n  `, null],
  [
    'malformed inside the text',
    '{"object":"chat.completion","model":"m","choices":[{"message":{"content":"a}],"usage":{"prompt_tokens":1}}',
    null,
  ],
  ['malformed usage', '{"object":"chat.completion","model":"m","usage":{"prompt_tokens":1,}}', null],
  ['trailing garbage', `${JSON.stringify({ object: 'chat.completion', model: 'm', usage })}x`, null],
  ['not JSON', 'Internal Server Error', null],
  [
    'a __proto__ member',
    '{"__proto__":{"x":1},"object":"chat.completion","model":"m","usage":{"prompt_tokens":3}}',
    null,
  ],
];

/** The tap's reading of a body fed in chunks of `size` bytes. */
function tapped(body: string, hint: WireFormat | null, size: number) {
  const tap = new ResponseTap(1 << 20);
  tap.hint({ format: hint });
  tap.begin(200, 'application/json');
  const bytes = Buffer.from(body);
  for (let i = 0; i < bytes.length; i += size) tap.write(bytes.subarray(i, i + size));
  return tap.observe();
}

function wholeParse(body: string, hint: WireFormat | null) {
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(body);
  } catch {
    parsed = null;
  }
  return observeJson(parsed, hint);
}

describe('reading a JSON body without its generated text', () => {
  for (const [name, body, hint] of bodies) {
    it(`reports what parsing it whole reports: ${name}`, () => {
      const expected = wholeParse(body, hint);
      for (const size of [1 << 20, 7]) {
        const got = tapped(body, hint, size);
        expect({
          format: got.format,
          model: got.model,
          usage: got.usage,
          usageFinal: got.usageFinal,
        }).toEqual({
          format: expected.format,
          model: expected.model,
          usage: expected.usage,
          usageFinal: expected.usageFinal,
        });
        if (!expected.usage || !expected.usageFinal) expect(got.completionText).toBe(expected.completionText);
      }
    });
  }

  it('skims the members and leaves out the generated text', () => {
    const body = Buffer.from(bodies[0]![1]);
    expect(skimJsonObject(body)).toEqual({
      id: 'c1',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-4o-mini-2024-07-18',
      choices: [],
      usage,
      service_tier: 'priority',
      system_fingerprint: 'fp_1',
    });
    expect(
      skimJsonObject(Buffer.from('{"content":"long text","data":{"a":[1]},"n":-1.5e3,"ok":true}')),
    ).toEqual({
      content: '',
      data: {},
      n: -1500,
      ok: true,
    });
  });

  it('reads every well-formed object body itself (no fallback), its members as JSON.parse gives them', () => {
    const bulky = new Set(['choices', 'content', 'output', 'data', 'candidates']);
    const empty = (v: unknown) =>
      Array.isArray(v) ? [] : typeof v === 'string' ? '' : v === null ? null : {};
    let objects = 0;
    for (const [, body] of bodies) {
      let whole: unknown;
      try {
        whole = JSON.parse(body);
      } catch {
        continue;
      }
      if (typeof whole !== 'object' || whole === null || Array.isArray(whole)) continue;
      if ((body.match(/\\"/g) ?? []).length > 64) {
        expect(skimJsonObject(Buffer.from(body))).toBeNull(); // left to JSON.parse of the whole
        continue;
      }
      objects += 1;
      const expected = Object.fromEntries(
        Object.entries(whole).map(([k, v]) => [k, bulky.has(k) ? empty(v) : v]),
      );
      expect(skimJsonObject(Buffer.from(body))).toEqual(expected);
    }
    expect(objects).toBeGreaterThan(10);
  });

  it('charges the usage a body reports even when its generated text is malformed (parsing it whole finds none)', () => {
    const body = `{"object":"chat.completion","model":"gpt-4o","choices":[{"message":{"content":"raw \u0001  control"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}`;
    expect(() => JSON.parse(body)).toThrow();
    expect(tapped(body, 'openai-chat', 1 << 20).usage).toEqual({ promptTokens: 2, completionTokens: 1 });
  });

  it('reads a body spaced with CR, LF and tabs itself, and gives up at the 65th escaped quote', () => {
    expect(skimJsonObject(Buffer.from('{\r\n\t"model": "m",\r\n\t"choices": [1]\r\n}'))).toEqual({
      model: 'm',
      choices: [],
    });
    // 64 escaped quotes in the text are stepped over (MAX_ESCAPED_QUOTES); a 65th leaves it to JSON.parse.
    const body = (quotes: number) =>
      `{"choices":[{"message":{"content":"${'\\"'.repeat(quotes)}"}}],"usage":{"prompt_tokens":1}}`;
    expect(JSON.parse(body(64)).choices[0].message.content).toBe('"'.repeat(64));
    expect(skimJsonObject(Buffer.from(body(64)))).toEqual({ choices: [], usage: { prompt_tokens: 1 } });
    expect(skimJsonObject(Buffer.from(body(65)))).toBeNull();
  });

  it('answers null, not a throw or undefined, when the small rest is not valid JSON', () => {
    // The skim steps over `nul` and `tru` as literals; JSON.parse of the rest then refuses them.
    expect(skimJsonObject(Buffer.from('{"usage": nul}'))).toBeNull();
    expect(skimJsonObject(Buffer.from('{"a": tru, "choices": []}'))).toBeNull();
  });

  it('gives up (null) on what is not one well-formed JSON object where it reads', () => {
    for (const body of [
      '[]',
      '"text"',
      '',
      '{',
      '{"a":1',
      '{"a" 1}',
      '{"a":1,}',
      '{"a":"\\"}',
      '{"choices":[1}',
      '{"a":{"b":1',
      '{} {}',
    ]) {
      expect(skimJsonObject(Buffer.from(body))).toBeNull();
    }
  });
});
