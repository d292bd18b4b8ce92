import { describe, expect, it } from 'vitest';
import {
  deferredBillingOf,
  detectEventFormat,
  detectJsonFormat,
  formatFromPath,
  MAX_KEPT_TEXT,
  modelFromPath,
  observeJson,
  StreamObserver,
} from '../src/metering/wire-formats.js';

// The wire formats read directly: which format a path or a body names, and the generated text kept
// for a local estimate, in every place each provider's documented response puts it (chat `content`,
// `refusal` and tool-call `arguments`; Responses output text, refusals and function-call arguments;
// Anthropic text, thinking and tool input; Gemini parts). Expected values are the texts written below.

describe('formats and models from a request path', () => {
  it('names the format of each endpoint, with or without /v1, a query or a trailing slash', () => {
    expect(formatFromPath('/v1/chat/completions')).toBe('openai-chat');
    expect(formatFromPath('/chat/completions/?x=1')).toBe('openai-chat');
    expect(formatFromPath('/v1/responses')).toBe('openai-responses');
    expect(formatFromPath('/openai/embeddings')).toBe('openai-embeddings');
    expect(formatFromPath('/v1/messages//')).toBe('anthropic-messages');
    expect(formatFromPath('/v1beta/models/gemini-2.0-flash:generateContent')).toBe('gemini');
    expect(formatFromPath('/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse')).toBe('gemini');
    expect(formatFromPath('/v1beta/models/gemini-2.0-flash:countTokens')).toBeNull();
    expect(formatFromPath('/v1/models')).toBeNull();
    expect(formatFromPath('')).toBeNull();
    expect(formatFromPath(undefined)).toBeNull();
  });

  it('reads the model from a Gemini URL, decoded when it is percent-encoded', () => {
    expect(modelFromPath('/v1beta/models/gemini-2.0-flash:generateContent?key=k')).toBe('gemini-2.0-flash');
    expect(modelFromPath('/v1beta/models/tuned%2Dmodel:streamGenerateContent')).toBe('tuned-model');
    expect(modelFromPath('/v1beta/models/bad%E0:generateContent')).toBe('bad%E0'); // not valid UTF-8
    expect(modelFromPath('/v1/chat/completions')).toBeNull();
    expect(modelFromPath(null)).toBeNull();
  });
});

describe('formats from a body or a first event', () => {
  it('tells the JSON formats apart by their shape, the path breaking ties', () => {
    expect(detectJsonFormat({ object: 'chat.completion' }, null)).toBe('openai-chat');
    expect(detectJsonFormat({ object: 'response' }, null)).toBe('openai-responses');
    expect(detectJsonFormat({ object: 'list', data: [] }, null)).toBe('openai-embeddings');
    expect(detectJsonFormat({ object: 'list' }, 'gemini')).toBe('gemini'); // a list without data
    expect(detectJsonFormat({ type: 'message' }, null)).toBe('anthropic-messages');
    expect(detectJsonFormat({ usageMetadata: {} }, null)).toBe('gemini');
    expect(detectJsonFormat({ candidates: [] }, null)).toBe('gemini');
    expect(detectJsonFormat({ choices: [] }, null)).toBe('openai-chat');
    expect(detectJsonFormat([{ candidates: [] }], null)).toBe('gemini');
    expect(detectJsonFormat([{ other: 1 }], 'openai-chat')).toBe('openai-chat');
    expect(detectJsonFormat({ error: { message: 'no' } }, 'anthropic-messages')).toBe('anthropic-messages');
    expect(detectJsonFormat('text', 'openai-responses')).toBe('openai-responses');
  });

  it('tells the stream formats apart by the first event', () => {
    expect(detectEventFormat(null, { type: 'response.created' }, null)).toBe('openai-responses');
    expect(detectEventFormat('response.created', {}, null)).toBe('openai-responses');
    expect(detectEventFormat('ping', {}, null)).toBe('anthropic-messages');
    expect(detectEventFormat(null, { type: 'message_start' }, null)).toBe('anthropic-messages');
    expect(detectEventFormat(null, { object: 'chat.completion.chunk' }, null)).toBe('openai-chat');
    expect(detectEventFormat(null, { choices: [] }, null)).toBe('openai-chat');
    expect(detectEventFormat(null, { candidates: [] }, null)).toBe('gemini');
    expect(detectEventFormat(null, { usageMetadata: {} }, null)).toBe('gemini');
    expect(detectEventFormat(null, { other: 1 }, 'gemini')).toBe('gemini');
    expect(detectEventFormat('message_start', 'not json', 'openai-chat')).toBe('anthropic-messages');
    expect(detectEventFormat(null, 'not json', 'openai-chat')).toBe('openai-chat');
  });
});

describe('generated text of a JSON response', () => {
  it('chat completions: content, refusal and every tool call’s arguments, over all choices', () => {
    const observed = observeJson(
      {
        object: 'chat.completion',
        id: 'chatcmpl-9',
        model: 'gpt-4o',
        choices: [
          {
            message: {
              content: 'A',
              refusal: 'B',
              tool_calls: [{ function: { arguments: '{"x":1}' } }, { function: {} }, 'junk'],
            },
          },
          { message: { content: null, refusal: 'C' } },
          'junk',
        ],
      },
      null,
    );
    expect(observed).toMatchObject({
      format: 'openai-chat',
      model: 'gpt-4o',
      responseId: 'chatcmpl-9',
      usage: null,
      completionText: 'AB{"x":1}C',
    });
  });

  it('Responses: output text, refusals and function-call arguments', () => {
    const observed = observeJson(
      {
        object: 'response',
        id: 'resp_1',
        output: [
          { type: 'function_call', arguments: '{"q":"w"}' },
          { type: 'message', content: [{ text: 'hi' }, { refusal: 'no' }, { other: 1 }, 'junk'] },
          'junk',
        ],
      },
      null,
    );
    expect(observed).toMatchObject({
      format: 'openai-responses',
      responseId: 'resp_1',
      completionText: '{"q":"w"}hino',
    });
    expect(observeJson({ object: 'response', output: 'junk' }, null).completionText).toBe('');
  });

  it('Anthropic: text, thinking, and tool input as JSON', () => {
    const observed = observeJson(
      {
        type: 'message',
        id: 'msg_1',
        content: [
          { type: 'thinking', thinking: 'T' },
          { type: 'text', text: 'X' },
          { type: 'tool_use', input: { a: [1] } },
          { type: 'tool_use' },
          { type: 'image' },
          'junk',
        ],
      },
      null,
    );
    expect(observed).toMatchObject({
      format: 'anthropic-messages',
      responseId: 'msg_1',
      completionText: 'TX{"a":[1]}',
    });
  });

  it('Anthropic: a server tool call (web search) the model wrote counts as its text, its results do not', () => {
    const observed = observeJson(
      {
        type: 'message',
        id: 'msg_2',
        content: [
          { type: 'server_tool_use', id: 'srvtoolu_1', name: 'web_search', input: { query: 'q' } },
          {
            type: 'web_search_tool_result',
            tool_use_id: 'srvtoolu_1',
            content: [{ type: 'web_search_result' }],
          },
          { type: 'text', text: 'A' },
        ],
      },
      null,
    );
    expect(observed.completionText).toBe('{"query":"q"}A');
  });

  it('Gemini: the text parts of every candidate; an array of chunks is final only with a finishReason', () => {
    const chunk = (text: string, finishReason?: string) => ({
      candidates: [
        {
          content: { parts: [{ text }, { inlineData: {} }] },
          ...(finishReason === undefined ? {} : { finishReason }),
        },
        'junk',
        { content: {} },
      ],
      usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 2 },
      modelVersion: 'gemini-2.0-flash',
      responseId: 'g-1',
    });
    const single = observeJson(chunk('one'), null);
    expect(single).toMatchObject({
      format: 'gemini',
      model: 'gemini-2.0-flash',
      responseId: 'g-1',
      usageFinal: true,
      completionText: 'one',
    });
    expect(observeJson([chunk('a'), 'junk', chunk('b', 'STOP')], null)).toMatchObject({
      usageFinal: true,
      completionText: 'ab',
    });
    expect(observeJson([chunk('a'), chunk('b', '')], null)).toMatchObject({
      usageFinal: false,
      completionText: 'ab',
    });
  });

  it('an embeddings body has no response id; a body of no known format has no text', () => {
    expect(
      observeJson({ object: 'list', data: [], id: 'x', model: 'text-embedding-3-small' }, null),
    ).toMatchObject({
      format: 'openai-embeddings',
      model: 'text-embedding-3-small',
      responseId: null,
    });
    expect(observeJson({ id: 'x', model: '' }, null)).toEqual({
      format: null,
      model: null,
      responseId: null,
      usage: null,
      usageFinal: true,
      completionText: '',
      webSearchCalls: 0,
    });
  });
});

describe('generated text of stream events set aside', () => {
  it('chat: every choice’s delta content, refusal and tool-call arguments', () => {
    const o = new StreamObserver('openai-chat');
    o.onText(null, {
      choices: [
        { delta: { content: 'a', tool_calls: [{ function: { arguments: '{' } }] } },
        { delta: { refusal: 'r' } },
      ],
    });
    o.onText(null, { choices: 'junk' });
    o.onText(null, 'junk');
    expect(o.text).toBe('a{r');
  });

  it('Anthropic: text, tool-input JSON and thinking deltas of content_block_delta events only', () => {
    const o = new StreamObserver('anthropic-messages');
    o.onText(null, { type: 'content_block_delta', delta: { text: 'a' } });
    o.onText('content_block_delta', { delta: { partial_json: '{"k"' } });
    o.onText(null, { type: 'content_block_delta', delta: { thinking: 't' } });
    o.onText(null, { type: 'content_block_delta', delta: { signature: 's' } });
    o.onText(null, { type: 'message_delta', delta: { text: 'no' } });
    o.onText(null, { type: 'content_block_delta', delta: 'junk' });
    expect(o.text).toBe('a{"k"t');
  });

  it('Responses: output text, refusal and function-call argument deltas only', () => {
    const o = new StreamObserver('openai-responses');
    o.onText(null, { type: 'response.output_text.delta', delta: 'a' });
    o.onText(null, { type: 'response.refusal.delta', delta: 'b' });
    o.onText('response.function_call_arguments.delta', { delta: 'c' });
    o.onText(null, { type: 'response.output_text.done', delta: 'no' });
    o.onText(null, { type: 'response.output_text.delta', delta: 7 });
    expect(o.text).toBe('abc');
  });

  it('Gemini: the text parts; nothing more once the kept text reaches its cap', () => {
    const o = new StreamObserver('gemini');
    o.onText(null, { candidates: [{ content: { parts: [{ text: 'x'.repeat(MAX_KEPT_TEXT - 1) }] } }] });
    o.onText(null, { candidates: [{ content: { parts: [{ text: 'yz' }] } }] }); // under the cap: kept whole
    o.onText(null, { candidates: [{ content: { parts: [{ text: 'more' }] } }] }); // at the cap: dropped
    expect(o.text.length).toBe(MAX_KEPT_TEXT + 1);
    expect(o.text.endsWith('xyz')).toBe(true);
  });
});

describe('usage of stream events', () => {
  it('Anthropic: message_start’s usage, then message_delta’s fields replacing it, nulls ignored', () => {
    const o = new StreamObserver('anthropic-messages');
    o.onPayload(null, {
      type: 'message_start',
      message: { id: 'msg_1', model: 'claude-sonnet-4-5', usage: { input_tokens: 10, output_tokens: 1 } },
    });
    expect(o.result()).toMatchObject({ usage: { promptTokens: 10, completionTokens: 1 }, usageFinal: false });
    o.onPayload('message_delta', { usage: { output_tokens: 7, input_tokens: null } });
    expect(o.result()).toMatchObject({ usage: { promptTokens: 10, completionTokens: 7 }, usageFinal: true });
    expect([o.model, o.responseId]).toEqual(['claude-sonnet-4-5', 'msg_1']);
  });

  it('chat: the usage-only chunk is told apart from a content chunk that carries usage', () => {
    const o = new StreamObserver('openai-chat');
    expect(
      o.onPayload(null, {
        id: 'c1',
        model: 'gpt-4o',
        choices: [{ delta: {} }],
        usage: { prompt_tokens: 1, completion_tokens: 1 },
      }),
    ).toBeNull();
    expect(
      o.onPayload(null, { id: 'c2', choices: [], usage: { prompt_tokens: 4, completion_tokens: 2 } }),
    ).toBe('usage-only');
    expect(o.onPayload(null, { choices: [], usage: null })).toBeNull();
    expect(o.result()).toMatchObject({ usage: { promptTokens: 4, completionTokens: 2 }, usageFinal: true });
    expect([o.model, o.responseId]).toEqual(['gpt-4o', 'c1']);
  });

  it('a stream of no known format reads nothing', () => {
    const o = new StreamObserver(null);
    expect(o.onPayload(null, { usage: { prompt_tokens: 1 } })).toBeNull();
    o.onText(null, { choices: [{ delta: { content: 'a' } }] });
    expect(o.result()).toEqual({ usage: null, usageFinal: false });
    expect(o.text).toBe('');
  });
});

// Edges the mutation run found untested (mutation/survivors/, metering): bodies and events that lack a
// field the documented shape has (an error, a safety-blocked Gemini candidate, a cut stream), each
// with the value worked by hand from the shape written here.
describe('wire formats: missing and odd fields', () => {
  it('names no format for a path past the Gemini method, or a shapeless event', () => {
    expect(formatFromPath('/v1beta/models/gemini-2.0-flash:generateContent/extra')).toBeNull();
    expect(modelFromPath('/v1beta/models/gemini-2.0-flash:generateContentx')).toBeNull();
    expect(detectEventFormat(null, { id: 'x' }, null)).toBeNull();
  });

  it('a JSON chat body: a model that is not a string is none, null choices and messages add no text', () => {
    expect(
      observeJson(
        {
          object: 'chat.completion',
          model: 42,
          choices: [null, { message: null }, { message: { content: 'ok' } }],
        },
        null,
      ),
    ).toMatchObject({ format: 'openai-chat', model: null, completionText: 'ok' });
    // The path says chat, the body (an error) has no choices.
    expect(observeJson({ error: { message: 'no' } }, 'openai-chat')).toMatchObject({ completionText: '' });
  });

  it('JSON Responses and Anthropic bodies: no output, null items and blocks add no text', () => {
    expect(observeJson({ object: 'response', model: 'o4-mini' }, null)).toMatchObject({
      format: 'openai-responses',
      completionText: '',
    });
    expect(
      observeJson(
        { object: 'response', output: [null, { content: [{ type: 'output_text', text: 'r' }] }] },
        null,
      ),
    ).toMatchObject({ completionText: 'r' });
    expect(
      observeJson({ type: 'message', content: [null, { type: 'text', text: 'yo' }] }, null),
    ).toMatchObject({
      format: 'anthropic-messages',
      completionText: 'yo',
    });
    // A `content` array on a body of no known format is not Anthropic text.
    expect(observeJson({ content: [{ type: 'text', text: 'x' }] }, null)).toMatchObject({
      format: null,
      completionText: '',
    });
  });

  it('JSON Gemini: a chunk without candidates, a safety-blocked candidate, a null chunk, a chunk without usage', () => {
    expect(
      observeJson({ usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 0 } }, null),
    ).toMatchObject({
      format: 'gemini',
      usage: { promptTokens: 3, completionTokens: 0 },
      completionText: '',
    });
    expect(
      observeJson({ candidates: [{ finishReason: 'SAFETY' }], usageMetadata: { promptTokenCount: 3 } }, null),
    ).toMatchObject({ completionText: '' });
    // An array of chunks: usage from the first (the last that has it), the model from the last, and
    // no finishReason anywhere: not final.
    const chunks = [
      {
        candidates: [{ content: { parts: [{ text: 'a' }] } }],
        usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 1 },
      },
      null,
      { modelVersion: 'gemini-2.5-pro' },
    ];
    expect(observeJson(chunks, null)).toMatchObject({
      format: 'gemini',
      model: 'gemini-2.5-pro',
      usage: { promptTokens: 3, completionTokens: 1 },
      usageFinal: false,
      completionText: 'a',
    });
  });

  it('stream events: a null payload, an Anthropic message_start without message, a message_delta without usage', () => {
    const chat = new StreamObserver('openai-chat');
    expect(chat.onPayload(null, null)).toBeNull();
    expect(chat.result()).toEqual({ usage: null, usageFinal: false });
    const anthropic = new StreamObserver('anthropic-messages');
    expect(anthropic.onPayload('message_start', { type: 'message_start' })).toBeNull();
    anthropic.onPayload('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' } });
    expect(anthropic.result()).toEqual({ usage: null, usageFinal: false });
  });

  it('stream events: Responses and Gemini response ids, and no usage before it is reported', () => {
    const responses = new StreamObserver('openai-responses');
    responses.onPayload('response.created', {
      type: 'response.created',
      response: { id: 'resp_1', model: 'gpt-4.1', status: 'in_progress', usage: null },
    });
    expect(responses.responseId).toBe('resp_1');
    expect(responses.result()).toEqual({ usage: null, usageFinal: false });
    const gemini = new StreamObserver('gemini');
    gemini.onPayload(null, { candidates: [{ content: { parts: [{ text: 'g' }] } }], responseId: 'gem-1' });
    expect(gemini.responseId).toBe('gem-1');
    expect(gemini.result()).toEqual({ usage: null, usageFinal: false });
  });

  it('stream text: chunks without choices or with null ones, and nothing past the cap reached exactly', () => {
    const chat = new StreamObserver('openai-chat');
    chat.onText(null, { id: 'c' });
    chat.onText(null, { choices: [null, { delta: { content: 'a' } }] });
    expect(chat.text).toBe('a');
    const full = new StreamObserver('openai-chat');
    full.onText(null, { choices: [{ delta: { content: 'x'.repeat(MAX_KEPT_TEXT) } }] });
    full.onText(null, { choices: [{ delta: { content: 'y' } }] });
    expect(full.text.length).toBe(MAX_KEPT_TEXT);
  });
});

describe('OpenAI Responses web searches', () => {
  const search = (status = 'completed') => ({ type: 'web_search_call', id: 'ws_1', status });
  const message = { type: 'message', content: [{ type: 'output_text', text: 'hi' }] };
  const usage = { input_tokens: 10, output_tokens: 2 };

  it('counts the web_search_call items of a JSON response, 0 in other formats', () => {
    const body = {
      object: 'response',
      output: [search(), message, search(), { type: 'file_search_call' }],
      usage,
    };
    expect(observeJson(body, null).webSearchCalls).toBe(2);
    expect(observeJson({ ...body, output: [message] }, null).webSearchCalls).toBe(0);
    expect(observeJson({ ...body, output: 'odd' }, null).webSearchCalls).toBe(0);
    // A chat completion with the same field is not read for searches.
    expect(
      observeJson({ object: 'chat.completion', choices: [], output: [search()], usage }, null).webSearchCalls,
    ).toBe(0);
  });

  it('a stream: the completed response counts; else the items seen done', () => {
    const done = (item: unknown) => ({ type: 'response.output_item.done', item });
    const final = new StreamObserver('openai-responses');
    final.onText(null, done(search()));
    final.onText(null, done(message));
    expect(final.webSearchCalls).toBe(1);
    final.onPayload(null, {
      type: 'response.completed',
      response: { output: [search(), search(), search(), message], usage },
    });
    expect(final.webSearchCalls).toBe(3);
    const cut = new StreamObserver('openai-responses');
    cut.onText(null, done(search()));
    cut.onText('response.output_item.done', { item: search() });
    cut.onText(null, { type: 'response.output_item.added', item: search('in_progress') });
    cut.onText(null, done('odd'));
    expect(cut.webSearchCalls).toBe(2);
    // An event without usage does not stand for the final response.
    cut.onPayload(null, { type: 'response.created', response: { output: [] } });
    expect(cut.webSearchCalls).toBe(2);
  });

  it('a stream: a done event without its item counts nothing, and only a Responses stream counts', () => {
    // An upstream's malformed event (no `item`) is read as no search, without failing the meter.
    const cut = new StreamObserver('openai-responses');
    cut.onText(null, { type: 'response.output_item.done' });
    cut.onText('response.output_item.done', { item: null });
    expect(cut.webSearchCalls).toBe(0);
    // The same event in a stream of another format is not a Responses search item.
    for (const format of ['openai-chat', 'anthropic-messages', 'gemini'] as const) {
      const other = new StreamObserver(format);
      other.onText(null, { type: 'response.output_item.done', item: search() });
      expect(other.webSearchCalls).toBe(0);
    }
  });
});

describe('deferredBillingOf: work a POST starts and the provider bills later', () => {
  it.each([
    ['POST', '/v1/batches', 'a batch'],
    ['post', '/batches/', 'a batch'],
    ['POST', '/v1/batches//', 'a batch'],
    ['POST', '/v1beta/models/gemini-2.5-flash:batchGenerateContentX', null],
    ['POST', '/v1/batches?after=x', 'a batch'],
    ['POST', '/v1/my_batches', null],
    ['POST', '/v1/batches/x', null],
    ['POST', '/v1/messages/batches?beta=true', 'a batch'],
    ['POST', '/v1/fine_tuning/jobs', 'a fine-tuning job'],
    ['POST', '/v1beta/models/gemini-2.5-flash:batchGenerateContent', 'a batch'],
    ['POST', '/v1beta/models/text-embedding-004:asyncBatchEmbedContent', 'a batch'],
    ['GET', '/v1/batches', null],
    ['POST', '/v1/batches/batch_1/cancel', null],
    ['POST', '/v1/chat/completions', null],
    ['POST', '/v1beta/models/gemini-2.5-flash:generateContent', null],
    ['POST', undefined, null],
  ])('%s %s: %s', (method, path, what) => {
    expect(deferredBillingOf(method, path)).toBe(what);
  });
});
