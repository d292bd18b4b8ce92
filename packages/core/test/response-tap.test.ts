// The response tap reads a held JSON body one of two ways: parsed whole when it is small (up to 1 KB),
// skimmed without its generated text when it is larger. Either way it must report the same usage,
// model, id and format; and the meter reads each request path's wire format once per path.
import { describe, expect, it } from 'vitest';
import { ResponseTap } from '../src/metering/response-meter.js';
import { pathFormat } from '../src/metering/track.js';
import type { WireFormat } from '../src/metering/wire-formats.js';

/** The tap's reading of `body` written in chunks of `size` bytes. */
function tapped(body: string, hint: WireFormat | null, size = 1 << 20) {
  const tap = new ResponseTap(1 << 20);
  tap.hint({ format: hint });
  tap.begin(200, 'application/json');
  const bytes = Buffer.from(body);
  for (let i = 0; i < bytes.length; i += size) expect(tap.write(bytes.subarray(i, i + size))).toBeNull();
  const observed = tap.observe();
  // The body goes out unchanged after it was read.
  expect(Buffer.from(tap.drain()!).toString('utf8')).toBe(body);
  return observed;
}

function chat(text: string): string {
  return JSON.stringify({
    id: 'chatcmpl-7',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-4o-mini-2024-07-18',
    choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
    usage: {
      prompt_tokens: 14,
      completion_tokens: 6,
      total_tokens: 20,
      prompt_tokens_details: { cached_tokens: 4 },
    },
  });
}

describe('reading a held JSON body, small or large', () => {
  const short = 'Budgets keep spending honest.';
  const long = 'Budgets keep spending honest. '.repeat(60);

  it('reads the same usage, model and id from a 300-byte and a 2 KB chat completion', () => {
    expect(Buffer.byteLength(chat(short))).toBeLessThan(1024);
    expect(Buffer.byteLength(chat(long))).toBeGreaterThan(2048);
    for (const body of [chat(short), chat(long)]) {
      for (const size of [1 << 20, 50]) {
        const got = tapped(body, 'openai-chat', size);
        expect({
          format: got.format,
          model: got.model,
          responseId: got.responseId,
          usage: got.usage,
          usageFinal: got.usageFinal,
        }).toEqual({
          format: 'openai-chat',
          model: 'gpt-4o-mini-2024-07-18',
          responseId: 'chatcmpl-7',
          usage: { promptTokens: 14, completionTokens: 6, cachedPromptTokens: 4 },
          usageFinal: true,
        });
      }
    }
  });

  it('keeps the text of a small body without usage, to count it', () => {
    const body = JSON.stringify({
      object: 'chat.completion',
      model: 'gpt-4o',
      choices: [{ message: { content: 'four words right here' } }],
    });
    const got = tapped(body, 'openai-chat');
    expect(got.usage).toBeNull();
    expect(got.completionText).toBe('four words right here');
  });

  it('still charges the usage of a small body whose text is malformed (JSON.parse rejects it)', () => {
    const body = `{"object":"chat.completion","model":"gpt-4o","choices":[{"message":{"content":"raw \u0001 control"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}`;
    expect(() => JSON.parse(body)).toThrow();
    expect(tapped(body, 'openai-chat').usage).toEqual({ promptTokens: 2, completionTokens: 1 });
  });

  it('counts the web searches of a small Responses body', () => {
    const body = JSON.stringify({
      id: 'resp_1',
      object: 'response',
      model: 'gpt-4.1',
      output: [
        { type: 'web_search_call', id: 'ws_1', status: 'completed' },
        { type: 'web_search_call', id: 'ws_2', status: 'completed' },
        { type: 'message', content: [{ type: 'output_text', text: 'Found it.' }] },
      ],
      usage: { input_tokens: 30, output_tokens: 9 },
    });
    const tap = new ResponseTap(1 << 20);
    tap.hint({ format: 'openai-responses', searches: true });
    tap.begin(200, 'application/json');
    tap.write(Buffer.from(body));
    const got = tap.observe();
    expect(got.webSearchCalls).toBe(2);
    expect(got.usage).toEqual({ promptTokens: 30, completionTokens: 9 });
  });
});

describe('a body written as one string', () => {
  /** The tap's reading of `body` written as it is (a string), and the bytes it then sends. */
  function tappedText(body: string) {
    const tap = new ResponseTap(1 << 20);
    tap.hint({ format: 'openai-chat' });
    tap.begin(200, 'application/json');
    expect(tap.write(body)).toBeNull();
    const observed = tap.observe();
    return { observed, sent: Buffer.from(tap.drain()!) };
  }

  it('is read as its bytes are, and sent as them, small or large', () => {
    const texts = ['Budgets keep spending honest.', 'Des budgets honnêtes, 予算 😀', '予算 😀 '.repeat(200)];
    for (const text of texts) {
      const body = chat(text);
      const { observed, sent } = tappedText(body);
      expect(sent.equals(Buffer.from(body))).toBe(true);
      expect(observed).toEqual(tapped(body, 'openai-chat'));
      // A large body is skimmed, without its text (its usage is final).
      expect(observed.completionText).toBe(Buffer.byteLength(body) <= 1024 ? text : '');
    }
  });

  it('with a lone surrogate, is read as the client gets it (U+FFFD), not as the route wrote it', () => {
    const route =
      '{"object":"chat.completion","model":"gpt-4o","choices":[{"message":{"content":"cut \ud83d here"}}]}';
    expect(Buffer.from(route).toString('utf8')).not.toBe(route); // what goes out is not what was written
    const { observed, sent } = tappedText(route);
    expect(sent.equals(Buffer.from(route))).toBe(true);
    expect(observed.completionText).toBe('cut \ufffd here');
  });
});

describe('pathFormat', () => {
  it('reads the wire format of a path, whatever its query, the same on every call', () => {
    for (let round = 0; round < 2; round++) {
      expect(pathFormat('/v1/chat/completions')).toBe('openai-chat');
      expect(pathFormat('/v1/chat/completions?x=1')).toBe('openai-chat');
      expect(pathFormat('/v1/responses/')).toBe('openai-responses');
      expect(pathFormat('/v1/embeddings')).toBe('openai-embeddings');
      expect(pathFormat('/v1/messages?beta=true')).toBe('anthropic-messages');
      expect(pathFormat('/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=k')).toBe(
        'gemini',
      );
      expect(pathFormat('/v1/models')).toBeNull();
      expect(pathFormat('')).toBeNull();
    }
  });
});
