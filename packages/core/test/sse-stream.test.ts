import { describe, expect, it } from 'vitest';
import { parseSseEvent, SseTap } from '../src/metering/sse-stream.js';
import { observeJson, type WireFormat } from '../src/metering/wire-formats.js';

// The SSE tap on hand-written wire bytes: events found across any chunk split, the usage chunk the
// guard asked for hidden byte-exactly, and every format's usage read.

const chunkJson = (fields: Record<string, unknown>, usage?: unknown) =>
  JSON.stringify({
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'gpt-4o',
    choices: [],
    ...fields,
    ...(usage === undefined ? {} : { usage }),
  });

/** A chat stream as OpenAI sends it, with or without `stream_options.include_usage`. */
function chatStream(includeUsage: boolean, lineEnd = '\n'): string {
  const usage = includeUsage ? null : undefined;
  const events = [
    chunkJson(
      { choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
      usage,
    ),
    chunkJson({ choices: [{ index: 0, delta: { content: 'Hé' }, finish_reason: null }] }, usage),
    chunkJson({ choices: [{ index: 0, delta: { content: ' llo ✓' }, finish_reason: null }] }, usage),
    chunkJson({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }, usage),
  ];
  if (includeUsage) {
    events.push(
      chunkJson(
        { choices: [] },
        {
          prompt_tokens: 9,
          completion_tokens: 3,
          total_tokens: 12,
          prompt_tokens_details: { cached_tokens: 4 },
        },
      ),
    );
  }
  events.push('[DONE]');
  return events.map((e) => `data: ${e}${lineEnd}${lineEnd}`).join('');
}

/** Feeds `bytes` in the given pieces; returns what the tap forwarded, and the tap. */
function feed(
  bytes: Buffer,
  cuts: number[],
  format: WireFormat | null,
  hide: boolean,
): { out: Buffer; tap: SseTap } {
  const tap = new SseTap(format, hide);
  const out: Buffer[] = [];
  let from = 0;
  for (const to of [...cuts, bytes.length]) {
    const sent = tap.write(bytes.subarray(from, to));
    if (sent !== null) out.push(Buffer.from(sent as Uint8Array));
    from = to;
  }
  const rest = tap.end();
  if (rest) out.push(Buffer.from(rest));
  return { out: Buffer.concat(out), tap };
}

/** Deterministic pseudo-random split points. */
function randomCuts(length: number, seed: number, count: number): number[] {
  let x = seed;
  const cuts = new Set<number>();
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    cuts.add(1 + (x % (length - 1)));
  }
  return [...cuts].sort((a, b) => a - b);
}

describe('SSE tap: framing', () => {
  for (const lineEnd of ['\n', '\r\n']) {
    const label = lineEnd === '\n' ? 'LF' : 'CRLF';
    it(`hides the usage chunk and the "usage":null fields, at every single split point (${label})`, () => {
      const asked = Buffer.from(chatStream(true, lineEnd));
      const expected = chatStream(false, lineEnd);
      for (let cut = 1; cut < asked.length; cut++) {
        const { out, tap } = feed(asked, [cut], 'openai-chat', true);
        expect(out.toString(), `split at ${cut}`).toBe(expected);
        expect(tap.observe().usage).toMatchObject({
          promptTokens: 9,
          completionTokens: 3,
          cachedPromptTokens: 4,
        });
      }
    });

    it(`hides it across many random splits, down to one byte per chunk (${label})`, () => {
      const asked = Buffer.from(chatStream(true, lineEnd));
      const expected = chatStream(false, lineEnd);
      for (let seed = 1; seed <= 40; seed++) {
        const { out } = feed(asked, randomCuts(asked.length, seed, seed * 3), 'openai-chat', true);
        expect(out.toString()).toBe(expected);
      }
      const everyByte = Array.from({ length: asked.length - 1 }, (_, i) => i + 1);
      expect(feed(asked, everyByte, 'openai-chat', true).out.toString()).toBe(expected);
    });

    it(`forwards every byte unchanged when not hiding, and still reads the usage (${label})`, () => {
      const bytes = Buffer.from(chatStream(true, lineEnd));
      for (let seed = 1; seed <= 20; seed++) {
        const { out, tap } = feed(bytes, randomCuts(bytes.length, seed, 7), 'openai-chat', false);
        expect(out.equals(bytes)).toBe(true);
        expect(tap.observe()).toMatchObject({ format: 'openai-chat', model: 'gpt-4o', usageFinal: true });
      }
    });
  }

  it('forwards only complete events while hiding, and the last one even without a blank line', () => {
    const tap = new SseTap('openai-chat', true);
    const first = `data: ${chunkJson({ choices: [{ index: 0, delta: { content: 'a' } }] }, null)}\n\n`;
    expect(tap.write(first.slice(0, 20))).toBeNull(); // nothing complete yet
    const sent = tap.write(`${first.slice(20)}data: [DO`);
    expect(Buffer.from(sent as Uint8Array).toString()).toBe(
      `data: ${chunkJson({ choices: [{ index: 0, delta: { content: 'a' } }] })}\n\n`,
    );
    expect(tap.write('NE]')).toBeNull();
    expect(Buffer.from(tap.end()!).toString()).toBe('data: [DONE]');
  });

  it('removes "usage": null however the JSON is spaced, and keeps a usage chunk that has choices', () => {
    const spaced =
      'data: {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"delta": {"content": "x"}}], "usage" : null}\n\n' +
      'data: {"usage": null, "id": "c", "choices": [{"delta": {"content": "y"}}]}\n\n' +
      'data: {"id": "c", "choices": [{"delta": {"content": "z"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}\n\n';
    const { out, tap } = feed(Buffer.from(spaced), [50, 51, 130], 'openai-chat', true);
    expect(out.toString()).toBe(
      'data: {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"delta": {"content": "x"}}]}\n\n' +
        'data: {"id": "c", "choices": [{"delta": {"content": "y"}}]}\n\n' +
        'data: {"id": "c", "choices": [{"delta": {"content": "z"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}\n\n',
    );
    expect(tap.observe().usage).toMatchObject({ promptTokens: 1, completionTokens: 2 });
  });

  it('passes comments and keep-alives through, and a stream of another format untouched while hiding', () => {
    const anthropic =
      ': keep-alive\n\nevent: message_start\ndata: {"type":"message_start","message":{"model":"claude-x","usage":null}}\n\n';
    const { out } = feed(Buffer.from(anthropic), [3, 40], null, true);
    expect(out.toString()).toBe(anthropic);
  });

  it('reads a large event that comes in many pieces without a line end, copying it once', () => {
    const text = 'x'.repeat(300_000);
    const completed = `event: response.completed\ndata: ${JSON.stringify({
      type: 'response.completed',
      response: {
        model: 'gpt-4.1',
        output: [{ content: [{ text }] }],
        usage: { input_tokens: 3, output_tokens: 4 },
      },
    })}\n\n`;
    const bytes = Buffer.from(`event: response.created\ndata: {"type":"response.created"}\n\n${completed}`);
    const cuts = Array.from({ length: Math.floor(bytes.length / 1000) }, (_, i) => (i + 1) * 1000);
    for (const hide of [false, true]) {
      const { out, tap } = feed(bytes, cuts, 'openai-responses', hide);
      expect(out.equals(bytes)).toBe(true);
      expect(tap.observe().usage).toMatchObject({ promptTokens: 3, completionTokens: 4 });
    }
  });

  it('stops metering, and forwards everything, when a partial event outgrows its limit', () => {
    // The limit injected (1 KiB) instead of the guard's 32 MiB (that one: 'gives up at 32 MiB ...').
    const piece = Buffer.alloc(100, 0x61); // no line end at all: not SSE
    for (const hide of [false, true]) {
      const tap = new SseTap('openai-chat', hide, 1024);
      let forwarded = 0;
      for (let i = 0; i < 12; i++) {
        const sent = tap.write(i === 0 ? Buffer.from('data: {') : piece);
        if (sent !== null) forwarded += (sent as Uint8Array).length;
      }
      forwarded += tap.end()?.length ?? 0;
      expect(forwarded).toBe(7 + 11 * piece.length);
      expect(tap.observe().usage).toBeNull();
    }
  });

  it('keeps the text of a cut stream for an estimate, reading it only when asked', () => {
    const full = Buffer.from(chatStream(false));
    const cut = full.subarray(0, full.indexOf('finish_reason":"stop') - 30); // cut inside the 4th event
    const { tap } = feed(cut, [17, 200], 'openai-chat', false);
    expect(tap.observe()).toEqual({
      format: 'openai-chat',
      model: 'gpt-4o',
      responseId: 'chatcmpl-1', // from the first event, which the cut left whole
      usage: null,
      usageFinal: false,
      completionText: 'Hé llo ✓',
      webSearchCalls: 0,
    });
  });
});

describe('SSE tap: every wire format', () => {
  const responses = [
    ['response.created', { response: { model: 'gpt-4.1', usage: null, status: 'in_progress' } }],
    ['response.output_text.delta', { delta: 'Hi' }],
    ['response.output_text.delta', { delta: ' there' }],
    ['response.output_text.done', { text: 'Hi there' }],
    [
      'response.completed',
      {
        response: {
          model: 'gpt-4.1-2025-04-14',
          service_tier: 'default',
          usage: {
            input_tokens: 30,
            input_tokens_details: { cached_tokens: 10 },
            output_tokens: 20,
            output_tokens_details: { reasoning_tokens: 5 },
          },
        },
      },
    ],
  ] as const;
  const responsesBytes = responses
    .map(([type, fields]) => `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`)
    .join('');

  const anthropic = [
    [
      'message_start',
      {
        message: {
          model: 'claude-sonnet-4-5',
          usage: {
            input_tokens: 12,
            cache_read_input_tokens: 100,
            cache_creation_input_tokens: 50,
            cache_creation: { ephemeral_5m_input_tokens: 20, ephemeral_1h_input_tokens: 30 },
            output_tokens: 1,
          },
        },
      },
    ],
    ['content_block_start', { index: 0, content_block: { type: 'text', text: '' } }],
    ['ping', {}],
    ['content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Hello' } }],
    ['content_block_delta', { index: 0, delta: { type: 'text_delta', text: ' world, what usage?' } }],
    ['content_block_stop', { index: 0 }],
    ['message_delta', { delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 42 } }],
    ['message_stop', {}],
  ] as const;
  const anthropicBytes = anthropic
    .map(([type, fields]) => `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`)
    .join('');

  const gemini = [1, 2, 3].map((n) => ({
    candidates: [
      {
        content: { parts: [{ text: `part${n} ` }], role: 'model' },
        ...(n === 3 ? { finishReason: 'STOP' } : {}),
      },
    ],
    usageMetadata: {
      promptTokenCount: 40,
      candidatesTokenCount: n * 2,
      totalTokenCount: 40 + n * 2,
      ...(n === 3 ? { thoughtsTokenCount: 7, cachedContentTokenCount: 8 } : {}),
    },
    modelVersion: 'gemini-2.5-flash',
  }));
  const geminiBytes = gemini.map((c) => `data: ${JSON.stringify(c)}\r\n\r\n`).join('');

  it('reads the Responses API from response.completed', () => {
    for (const hint of ['openai-responses', null] as const) {
      const { out, tap } = feed(
        Buffer.from(responsesBytes),
        randomCuts(responsesBytes.length, 3, 9),
        hint,
        false,
      );
      expect(out.toString()).toBe(responsesBytes);
      expect(tap.observe()).toMatchObject({
        format: 'openai-responses',
        model: 'gpt-4.1-2025-04-14',
        usage: { promptTokens: 30, completionTokens: 20, cachedPromptTokens: 10, reasoningTokens: 5 },
        usageFinal: true,
      });
    }
  });

  it('reads Anthropic from message_start (input, cache) and message_delta (output, cumulative)', () => {
    const { tap } = feed(Buffer.from(anthropicBytes), randomCuts(anthropicBytes.length, 5, 11), null, false);
    expect(tap.observe()).toMatchObject({
      format: 'anthropic-messages',
      model: 'claude-sonnet-4-5',
      usage: {
        promptTokens: 162,
        completionTokens: 42,
        cachedPromptTokens: 100,
        cacheWriteTokens: 50,
        cacheWrite1hTokens: 30,
      },
      usageFinal: true,
    });
  });

  it('says an Anthropic stream cut before message_delta has only its input side, and keeps its text', () => {
    const cut = anthropicBytes.slice(0, anthropicBytes.indexOf('event: content_block_stop'));
    const { tap } = feed(Buffer.from(cut), [100], 'anthropic-messages', false);
    expect(tap.observe()).toMatchObject({
      usage: { promptTokens: 162, completionTokens: 1 },
      usageFinal: false,
      completionText: 'Hello world, what usage?',
    });
  });

  it('reads Gemini SSE (CRLF) from its last chunk, final only with a finishReason', () => {
    const { tap } = feed(Buffer.from(geminiBytes), randomCuts(geminiBytes.length, 9, 13), 'gemini', false);
    expect(tap.observe()).toMatchObject({
      format: 'gemini',
      model: 'gemini-2.5-flash',
      usage: { promptTokens: 40, completionTokens: 13, reasoningTokens: 7, cachedPromptTokens: 8 },
      usageFinal: true,
    });
    const twoChunks = geminiBytes.slice(0, geminiBytes.indexOf('data:', 10));
    const cut = feed(Buffer.from(twoChunks), [], null, false).tap.observe();
    expect(cut).toMatchObject({ usage: { promptTokens: 40, completionTokens: 2 }, usageFinal: false });
    expect(cut.completionText).toBe('part1 ');
  });
});

describe('SSE tap: Gemini usage, from the last chunk that reports it', () => {
  // Every chunk below reports 10 prompt tokens; the output tokens tell which chunk was read.
  const text = (t: string, candidates?: number) =>
    JSON.stringify({
      candidates: [{ content: { parts: [{ text: t }], role: 'model' } }],
      ...(candidates === undefined
        ? {}
        : { usageMetadata: { promptTokenCount: 10, candidatesTokenCount: candidates } }),
      modelVersion: 'gemini-2.5-flash',
    });
  // Gemini's function-call `args` is a JSON object, not a string: its keys are bare bytes in the event,
  // so a chunk can hold `"usageMetadata"` with no usage of its own.
  const call = JSON.stringify({
    candidates: [
      {
        content: {
          parts: [{ functionCall: { name: 'log', args: { usageMetadata: 'none' } } }],
          role: 'model',
        },
      },
    ],
    modelVersion: 'gemini-2.5-flash',
  });
  const ev = (json: string) => `data: ${json}\r\n\r\n`;

  it('reads past a later chunk whose function call has an argument named usageMetadata', () => {
    const { tap } = feed(Buffer.from(ev(text('a', 1)) + ev(text('b', 3)) + ev(call)), [], 'gemini', false);
    expect(tap.observe().usage).toMatchObject({ promptTokens: 10, completionTokens: 3 });
  });

  it('reads the last usage also when its chunk holds a function call argument named usage', () => {
    // The last chunk reports 7 output tokens and calls a function whose `args` has a key `usage` with an
    // object value: bytes `"usage":{` that an OpenAI stream's usage would have. Read as such, that chunk
    // would be taken at once and the earlier chunk's usage (2) read after it from the kept ones.
    const last = JSON.stringify({
      candidates: [
        {
          content: {
            parts: [{ functionCall: { name: 'log', args: { usage: { tokens: 1 } } } }],
            role: 'model',
          },
        },
      ],
      usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 7 },
      modelVersion: 'gemini-2.5-flash',
    });
    const { tap } = feed(Buffer.from(ev(text('a', 1)) + ev(text('b', 2)) + ev(last)), [], 'gemini', false);
    expect(tap.observe().usage).toMatchObject({ promptTokens: 10, completionTokens: 7 });
  });

  it('reads the first chunk when no later one reports usage, past a last chunk cut in its usage', () => {
    // The cut chunk holds `"usageMetadata"` but is no JSON: nothing is read from it.
    const cut = `data: ${text('c', 9).slice(0, -40)}`;
    expect(cut).toContain('"usageMetadata"');
    const { tap } = feed(Buffer.from(ev(text('a', 1)) + ev(text('b')) + cut), [], 'gemini', false);
    expect(tap.observe()).toMatchObject({
      usage: { promptTokens: 10, completionTokens: 1 },
      usageFinal: false,
      completionText: 'ab',
    });
  });

  it('reads the chunks set aside past 256 KiB before letting them go, and the first one kept after', () => {
    // Chunk 2 (300 KiB of text) takes the kept bytes past 256 KiB: the chunks are read and let go.
    // Then chunk 3 (5 output tokens) is the first one kept again, and the call chunk the last.
    const big = text('x'.repeat(300 * 1024), 2);
    const after = feed(
      Buffer.from(ev(text('a', 1)) + ev(big) + ev(text('c', 5)) + ev(call)),
      [],
      'gemini',
      false,
    );
    expect(after.tap.observe().usage).toMatchObject({ promptTokens: 10, completionTokens: 5 });
    // Without chunk 3, chunk 2 (let go at 256 KiB) is the last one that reported usage.
    const before = feed(Buffer.from(ev(text('a', 1)) + ev(big) + ev(call)), [], 'gemini', false);
    expect(before.tap.observe().usage).toMatchObject({ promptTokens: 10, completionTokens: 2 });
  });
});

describe('JSON bodies: every wire format', () => {
  it('detects the format from the body, and reads model, usage and text', () => {
    expect(
      observeJson(
        {
          object: 'chat.completion',
          model: 'gpt-4o',
          choices: [{ message: { content: 'hi' } }],
          usage: { prompt_tokens: 3, completion_tokens: 1 },
        },
        null,
      ),
    ).toMatchObject({
      format: 'openai-chat',
      model: 'gpt-4o',
      usage: { promptTokens: 3, completionTokens: 1 },
    });
    expect(
      observeJson(
        {
          object: 'list',
          data: [{ object: 'embedding' }],
          model: 'text-embedding-3-small',
          usage: { prompt_tokens: 8, total_tokens: 8 },
        },
        null,
      ),
    ).toMatchObject({ format: 'openai-embeddings', usage: { promptTokens: 8, completionTokens: 0 } });
    expect(
      observeJson(
        {
          object: 'response',
          model: 'o4-mini',
          output: [{ type: 'message', content: [{ type: 'output_text', text: 'ok' }] }],
          usage: { input_tokens: 5, output_tokens: 9, output_tokens_details: { reasoning_tokens: 6 } },
        },
        null,
      ),
    ).toMatchObject({
      format: 'openai-responses',
      usage: { promptTokens: 5, completionTokens: 9, reasoningTokens: 6 },
      completionText: 'ok',
    });
    expect(
      observeJson(
        {
          type: 'message',
          model: 'claude-haiku-4-5',
          content: [{ type: 'text', text: 'yo' }],
          usage: { input_tokens: 5, cache_read_input_tokens: 10, output_tokens: 2 },
        },
        null,
      ),
    ).toMatchObject({
      format: 'anthropic-messages',
      usage: { promptTokens: 15, completionTokens: 2, cachedPromptTokens: 10 },
      completionText: 'yo',
    });
    expect(
      observeJson(
        {
          candidates: [{ content: { parts: [{ text: 'g' }] }, finishReason: 'STOP' }],
          usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 2, thoughtsTokenCount: 3 },
          modelVersion: 'gemini-2.0-flash',
        },
        null,
      ),
    ).toMatchObject({
      format: 'gemini',
      model: 'gemini-2.0-flash',
      usage: { promptTokens: 4, completionTokens: 5 },
    });
  });

  it('falls back on the request path for a body that does not say (an error)', () => {
    expect(observeJson({ error: { message: 'no' } }, 'anthropic-messages')).toMatchObject({
      format: 'anthropic-messages',
      usage: null,
    });
  });
});

// Edges the mutation run found untested (mutation/survivors/, metering): each test names what it holds,
// with its expected bytes or values worked by hand from the SSE format (WHATWG HTML, "Server-sent
// events": lines end in LF or CRLF, a blank line ends an event, `data:` lines join with LF, one space
// after the colon is dropped, a line starting with `:` is a comment) and the providers' documented events.
describe('SSE tap: edges', () => {
  const sent = (value: Uint8Array | string | null) =>
    value === null ? null : Buffer.from(value as Uint8Array).toString();
  const first = `data: ${chunkJson({ choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] })}\n\n`;
  const usageOnly = chunkJson({ choices: [] }, { prompt_tokens: 5, completion_tokens: 6 });

  it('parses an event as the SSE format says: fields, comments, joined data, CRLF or LF', () => {
    // CRLF lines; `data:` without its space; `data:  two` keeps one of its two spaces; a comment after
    // the event line is no event name; an `id:` line is neither.
    expect(
      parseSseEvent(
        Buffer.from('event:message_start\r\n: comment\r\ndata:{"a":1}\r\ndata:  two\r\nid: 7\r\n\r\n'),
      ),
    ).toEqual({ event: 'message_start', data: '{"a":1}\n two' });
    // LF lines; an empty `data:` line adds an empty line; the event name is trimmed.
    expect(parseSseEvent(Buffer.from('event: ping \ndata: x\ndata:\ndata: y\n\n'))).toEqual({
      event: 'ping',
      data: 'x\n\ny',
    });
    expect(parseSseEvent(Buffer.from('data: [DONE]'))).toEqual({ event: null, data: '[DONE]' });
    expect(parseSseEvent(Buffer.from(': keep-alive\n\n'))).toEqual({ event: null, data: null });
  });

  it('removes "usage":null after a tab, or as the first member with spaces, or as the only one', () => {
    const events = [
      'data: {"id":"c","choices":[{"delta":{"content":"x"}}],"usage":\tnull}\n\n',
      'data: {"usage" : null , "id":"c","choices":[{"delta":{"content":"y"}}]}\n\n',
      'data: {"usage":null}\n\n',
    ];
    const { out } = feed(Buffer.from(first + events.join('')), [], 'openai-chat', true);
    expect(out.toString()).toBe(
      `${first}data: {"id":"c","choices":[{"delta":{"content":"x"}}]}\n\n` +
        'data: {"id":"c","choices":[{"delta":{"content":"y"}}]}\n\n' +
        'data: {}\n\n',
    );
  });

  it('removes "usage":null from a first event that follows a keep-alive in the same write', () => {
    const withNull = `data: ${chunkJson({ choices: [{ index: 0, delta: { content: 'a' } }] }, null)}\n\n`;
    const without = `data: ${chunkJson({ choices: [{ index: 0, delta: { content: 'a' } }] })}\n\n`;
    const tap = new SseTap('openai-chat', true);
    expect(sent(tap.write(`: keep-alive\n\n${withNull}`))).toBe(`: keep-alive\n\n${without}`);
  });

  it('reads an event whose data lines are split by a one-character comment line', () => {
    // The usage chunk's JSON over two `data:` lines, a bare `:` comment between them: one event.
    const split = 'data: {"choices":[],\n:\ndata: "usage":{"prompt_tokens":5,"completion_tokens":6}}\n\n';
    const { tap } = feed(Buffer.from(first + split), [], 'openai-chat', false);
    expect(tap.observe().usage).toMatchObject({ promptTokens: 5, completionTokens: 6 });
  });

  it('sends nothing for a write that holds only the hidden usage chunk', () => {
    const tap = new SseTap('openai-chat', true);
    expect(sent(tap.write(first))).toBe(first);
    expect(tap.write(`data: ${usageOnly}\n\n`)).toBeNull();
    expect(tap.end()).toBeNull(); // nothing left over after a blank line
  });

  it('at the end, hides a last usage chunk or its "usage":null even without a blank line after it', () => {
    const a = new SseTap('openai-chat', true);
    expect(sent(a.write(`${first}data: ${usageOnly}`))).toBe(first);
    expect(a.end()).toBeNull();
    expect(a.observe().usage).toMatchObject({ promptTokens: 5, completionTokens: 6 });

    const b = new SseTap('openai-chat', true);
    expect(sent(b.write(first))).toBe(first);
    expect(b.write('data: {"id":"c","choices":[{"delta":{"content":"z"}}],"usage":null}')).toBeNull();
    expect(sent(b.end())).toBe('data: {"id":"c","choices":[{"delta":{"content":"z"}}]}');
  });

  it('returns nothing at the end when not hiding (the bytes were sent), and passes writes after it', () => {
    const tap = new SseTap('openai-chat', false);
    const partial = `${first}data: [DONE]`;
    expect(tap.write(partial)).toBe(partial);
    expect(tap.end()).toBeNull();
    const hiding = new SseTap('openai-chat', true);
    expect(sent(hiding.write(first))).toBe(first);
    expect(hiding.end()).toBeNull();
    const late = 'data: {"id":"c","choices":[],"usage":null'; // partial, would be held while metering
    expect(hiding.write(late)).toBe(late);
  });

  it('leaves the text unread when the stream reported its final usage', () => {
    const { tap } = feed(Buffer.from(chatStream(true)), [100], 'openai-chat', false);
    expect(tap.observe()).toMatchObject({ usageFinal: true, completionText: '' });
  });

  it('reads kept events into text once they pass 256 KiB, and only then', () => {
    // Each content event is exactly 1024 bytes, its text "a". The first event is read at once (not
    // kept); events 2, 3, ... are kept: after event 257, 256 x 1024 = 262144 bytes, not over the
    // limit; event 258 makes 263168 > 262144, so events 1 to 258 are read: 258 x "a". Events 259 to
    // 300 stay unread, since the stream then reports its usage.
    const head = 'data: {"id":"';
    const tailText = '","choices":[{"delta":{"content":"a"}}]}\n\n';
    const event = `${head}${'i'.repeat(1024 - head.length - tailText.length)}${tailText}`;
    expect(Buffer.byteLength(event)).toBe(1024);
    const bytes = Buffer.from(`${event.repeat(300)}data: ${usageOnly}\n\n`);
    const { tap } = feed(bytes, [], 'openai-chat', false);
    expect(tap.observe()).toMatchObject({
      usage: { promptTokens: 5, completionTokens: 6 },
      usageFinal: true,
      completionText: 'a'.repeat(258),
    });
  });

  it('reads Gemini usage from the last chunk that has it, not from a later chunk without it', () => {
    const chunk = (text: string, candidates?: number) =>
      JSON.stringify({
        candidates: [{ content: { parts: [{ text }], role: 'model' } }],
        ...(candidates === undefined
          ? {}
          : { usageMetadata: { promptTokenCount: 10, candidatesTokenCount: candidates } }),
        modelVersion: 'gemini-2.5-flash',
      });
    // Each write starts at an event; the last chunk (no usageMetadata) ends with or without a blank line.
    for (const end of ['\r\n\r\n', '']) {
      const tap = new SseTap('gemini', false);
      tap.write(`data: ${chunk('a', 1)}\r\n\r\n`);
      tap.write(`data: ${chunk('b', 2)}\r\n\r\ndata: ${chunk('c', 3)}\r\n\r\n`);
      tap.write(`data: ${chunk('d')}${end}`);
      expect(tap.observe().usage).toMatchObject({ promptTokens: 10, completionTokens: 3 });
    }
  });

  it('detects the format from the first data event, not from a keep-alive before it', () => {
    const chunk = JSON.stringify({
      candidates: [{ content: { parts: [{ text: 'hi' }] }, finishReason: 'STOP' }],
      usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 2 },
      modelVersion: 'gemini-2.0-flash',
    });
    const { tap } = feed(
      Buffer.from(`: keep-alive\n\ndata: ${chunk}\n\ndata: ${chunk}\n\n`),
      [],
      null,
      false,
    );
    expect(tap.observe()).toMatchObject({
      format: 'gemini',
      usage: { promptTokens: 4, completionTokens: 2 },
      usageFinal: true,
    });
  });

  it('keeps the format of the first event when a later one (an Anthropic error) says nothing', () => {
    const bytes =
      'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":7,"output_tokens":1}}}\n\n' +
      'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n';
    const { tap } = feed(Buffer.from(bytes), [], null, false);
    expect(tap.observe()).toMatchObject({
      format: 'anthropic-messages',
      usage: { promptTokens: 7, completionTokens: 1 },
      usageFinal: false,
    });
  });

  it('gives up at 32 MiB of partial event exactly, forwarding what it held and all after', () => {
    // The guard's own limit (the tests below inject a smaller one: 32 MiB buffers made every mutant
    // of the tap cost seconds in the mutation runs).
    const MiB = 1 << 20;
    const tap = new SseTap('openai-chat', true);
    expect(tap.write('data: {')).toBeNull();
    // (Compared as booleans and lengths: vitest printing a 32 MiB buffer in a failure takes minutes.)
    const first32 = tap.write(Buffer.alloc(32 * MiB - 7, 0x61)); // 7 + 32 MiB - 7 = 32 MiB: not over
    expect(first32 === null, 'held at 32 MiB').toBe(true);
    const held = tap.write('a') as Uint8Array | null; // 32 MiB + 1: over
    expect(held?.length).toBe(32 * MiB + 1);
    expect(Buffer.from(held!.subarray(0, 8)).toString()).toBe('data: {a');
    const after = `\n\ndata: ${usageOnly}\n\n`;
    expect(tap.write(after)).toBe(after); // no longer metered: not hidden
    expect(tap.observe().usage).toBeNull();
  });

  it('gives up at its limit exactly, in pieces without a line end', () => {
    const tap = new SseTap('openai-chat', true, 1024);
    expect(tap.write('data: {')).toBeNull();
    for (let i = 0; i < 7; i++) expect(tap.write(Buffer.alloc(128, 0x61))).toBeNull();
    expect(tap.write(Buffer.alloc(128 - 7, 0x61))).toBeNull(); // 7 + 7 x 128 + 121 = 1024: not over
    const held = tap.write('a') as Uint8Array; // 1025: over
    expect(held.length).toBe(1025);
    expect(Buffer.from(held.subarray(0, 8)).toString()).toBe('data: {a');
    const after = `\n\ndata: ${usageOnly}\n\n`;
    expect(tap.write(after)).toBe(after);
    expect(tap.observe().usage).toBeNull();
  });

  it('holds a partial event of exactly its limit after complete events in the same write, gives up past it', () => {
    const tap = new SseTap('openai-chat', true, 1024);
    // The write ends with a partial event of 7 + (1024 - 7) = 1024 bytes: not over, held.
    const head = Buffer.concat([Buffer.from(`${first}data: {`), Buffer.alloc(1024 - 7, 0x61)]);
    expect(sent(tap.write(head))).toBe(first);
    const held = tap.write('a') as Uint8Array; // 1025: over
    expect(held.length).toBe(1025);
    expect(Buffer.from(held.subarray(0, 8)).toString()).toBe('data: {a');
  });

  it('gives up on a partial event over its limit that follows complete events in the same write', () => {
    const chunkWithNull = `data: ${chunkJson({ choices: [{ index: 0, delta: { content: 'a' } }] }, null)}\n\n`;
    const giant = Buffer.concat([Buffer.from(`${chunkWithNull}data: {`), Buffer.alloc(1024, 0x61)]);
    const after = `\n\ndata: ${usageOnly}\n\n`;
    for (const hide of [true, false]) {
      const tap = new SseTap('openai-chat', hide, 1024);
      const out = Buffer.from(tap.write(giant) as Uint8Array);
      // Hiding: the complete event without its `,"usage":null`, then the held bytes, all at once.
      const expectedHead = hide
        ? `data: ${chunkJson({ choices: [{ index: 0, delta: { content: 'a' } }] })}\n\ndata: {aaa`
        : `${chunkWithNull}data: {aaa`;
      expect(out.length).toBe(expectedHead.length - 3 + 1024);
      expect(out.subarray(0, expectedHead.length).toString()).toBe(expectedHead);
      expect(tap.write(after)).toBe(after);
      expect(tap.observe().usage).toBeNull();
    }
  });

  it('counts a partial event from its own start, not from the start of the write', () => {
    // 1.5 KiB of comment, complete, then a short partial usage chunk: the partial event is far under
    // the 1 KiB limit, so it is read at the end.
    const bytes = Buffer.concat([
      Buffer.from(': '),
      Buffer.alloc(1536, 0x61),
      Buffer.from(`\n\ndata: ${usageOnly}`),
    ]);
    const tap = new SseTap('openai-chat', false, 1024);
    tap.write(bytes);
    expect(tap.observe().usage).toMatchObject({ promptTokens: 5, completionTokens: 6 });
  });

  it('removes the "usage":null member, not a delta whose text is "usage"', () => {
    // The same bytes `"usage"` first as the text of the delta, then as the member: only the member goes,
    // in the first event (parsed) and in a later one (found by the byte search).
    const withNull =
      'data: {"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":"usage"}}],"usage":null}\n\n';
    const without =
      'data: {"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":"usage"}}]}\n\n';
    const tap = new SseTap('openai-chat', true);
    expect(sent(tap.write(withNull))).toBe(without);
    expect(sent(tap.write(withNull))).toBe(without);
    expect(sent(tap.write(`data: {"choices":[{"delta":{"content":"usage"}}],"usage":{"x":1}}\n\n`))).toBe(
      'data: {"choices":[{"delta":{"content":"usage"}}],"usage":{"x":1}}\n\n',
    );
  });

  it('does not hold events back behind a line that starts with a lone CR', () => {
    // "\n\r" then a byte other than LF is no blank line (the tap reads LF and CRLF line ends): the
    // event goes on to the next blank line and is sent with the write that completes it.
    const odd = 'data: {"id":"c","choices":[{"delta":{"content":"b"}}]}\n\r: note\n\n';
    const tap = new SseTap('openai-chat', true);
    expect(sent(tap.write(first + odd))).toBe(first + odd);
    expect(tap.end()).toBeNull();
  });

  it('forwards a first event that is not JSON as it came, "usage":null and all', () => {
    // Nothing parsed, nothing edited: an upstream's malformed or cut event reaches the client unchanged.
    const broken = 'data: {"id":"c","choices":[],"usage":null,\n\n';
    const tap = new SseTap('openai-chat', true);
    expect(sent(tap.write(broken))).toBe(broken);
  });

  it('forwards views of the written memory, not copies, when it hides nothing', () => {
    // The tap sits on every streamed token: while hiding, the complete events of a write with nothing
    // to hide are sent as a view of that write's own memory, and a last event without a blank line is
    // sent by end() as a view of the write that brought it (copies are made only to join or to cut).
    const second = 'data: {"id":"c","choices":[{"delta":{"content":"b"}}]}\n\n';
    const last = 'data: {"id":"c","choices":[{"delta":{"content":"c"}}]}';
    const isViewOf = (sent: Uint8Array | string | null, written: Uint8Array) =>
      sent instanceof Uint8Array &&
      sent.buffer === written.buffer &&
      sent.byteOffset === written.byteOffset &&
      sent.byteLength === written.byteLength;
    // A plain Uint8Array and a Buffer, each with memory of its own (not Node's shared pool).
    for (const wrap of [
      (t: string) => new Uint8Array(Buffer.from(t)),
      (t: string) => Buffer.from(new Uint8Array(Buffer.from(t)).buffer),
    ]) {
      const tap = new SseTap('openai-chat', true);
      const events = wrap(first + second);
      expect(isViewOf(tap.write(events), events)).toBe(true);
      const partial = wrap(last);
      expect(tap.write(partial)).toBeNull(); // held: it may still get a `"usage":null`
      expect(isViewOf(tap.end(), partial)).toBe(true);
      expect(sent(tap.end())).toBeNull();
    }
  });

  it('forwards an event whose first member name starts with n unchanged, at the start of a write or at the end', () => {
    // No `"usage"` in it: nothing to hide, whatever byte follows where a search would have stopped.
    const odd = 'data: {"n":1,"choices":[{"delta":{"content":"b"}}]}\n\n';
    const tap = new SseTap('openai-chat', true);
    expect(sent(tap.write(first))).toBe(first);
    expect(sent(tap.write(odd))).toBe(odd);
    expect(tap.write(odd.trimEnd())).toBeNull();
    expect(sent(tap.end())).toBe(odd.trimEnd());
  });

  it('forwards a first event with an id line whole when it has no "usage" member', () => {
    // SSE's `id:` field before the data; the event holds no `"usage"` at all.
    const withId = `id: xyn\n${first}`;
    const tap = new SseTap('openai-chat', true);
    expect(sent(tap.write(withId))).toBe(withId);
  });
});

describe('SSE tap: OpenAI Responses web searches in a cut stream', () => {
  const event = (payload: Record<string, unknown>) =>
    `event: ${payload.type}\ndata: ${JSON.stringify(payload)}\n\n`;
  const search = (id: string) =>
    event({ type: 'response.output_item.done', item: { type: 'web_search_call', id, status: 'completed' } });
  const delta = (text: string) => event({ type: 'response.output_text.delta', delta: text });

  it('counts the searches finished before the cut, even past the text it keeps', () => {
    const long = 'x'.repeat(600 * 1024);
    const stream = Buffer.from(
      event({ type: 'response.created', response: { model: 'gpt-4.1', usage: null } }) +
        search('ws_1') +
        delta(long) +
        delta(long) + // the kept text is full (1 MiB) here
        search('ws_2') +
        delta('more') +
        search('ws_3'),
    );
    const { tap } = feed(stream, [1000, 700_000], 'openai-responses', false);
    const seen = tap.observe();
    expect(seen.usage).toBeNull();
    expect(seen.webSearchCalls).toBe(3);
    expect(seen.completionText.length).toBeGreaterThanOrEqual(1024 * 1024);
    // A chat stream past the cap reads nothing more.
    const chat = new SseTap('openai-chat', false);
    chat.write(Buffer.from(`data: {"object":"chat.completion.chunk","model":"gpt-4o","choices":[]}\n\n`));
    expect(chat.observe().webSearchCalls).toBe(0);
  });

  it('counts a search past the text it keeps whose query is "usage" (an event the tap parsed)', () => {
    // The bytes `"usage"` (here the search's query) make the tap parse an event instead of keeping its
    // bytes; past the 1 MiB of kept text it must still count as a finished search. The stream then
    // fails (`usage` null): no final count, so the 2 searches finished before the cut are billed.
    const long = 'x'.repeat(600 * 1024);
    const usageQuery = event({
      type: 'response.output_item.done',
      item: {
        type: 'web_search_call',
        id: 'ws_2',
        status: 'completed',
        action: { type: 'search', query: 'usage' },
      },
    });
    expect(usageQuery).toContain('"query":"usage"');
    const stream = Buffer.from(
      event({ type: 'response.created', response: { model: 'gpt-4.1', usage: null } }) +
        search('ws_1') +
        delta(long) +
        delta(long) + // the kept text is full (1 MiB) here
        usageQuery +
        event({ type: 'response.failed', response: { model: 'gpt-4.1', status: 'failed', usage: null } }),
    );
    const { tap } = feed(stream, [], 'openai-responses', false);
    const seen = tap.observe();
    expect(seen.usage).toBeNull();
    expect(seen.webSearchCalls).toBe(2);
  });
});
