// The simulator's OpenAI web search: how many searches a request runs and what search content it bills
// (provider-billing.ts, OpenAI's published rules), the wire shapes it answers with (JSON and SSE), and
// the meter reading those shapes back (web_search_call items; a cut stream's finished ones).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResponseTap } from '../src/metering/response-meter.js';
import {
  countWebSearches,
  SIMULATED_SEARCH_CONTENT_TOKENS,
  searchContentTokens,
} from '../src/testing/provider-billing.js';
import { type Simulator, startSimulator } from '../src/testing/simulator.js';

const hello = [{ role: 'user', content: 'hello' }];

describe('OpenAI web search billing rules', () => {
  it('a chat search model or web_search_options searches once a call', () => {
    expect(countWebSearches({ model: 'gpt-4o-search-preview', messages: hello }, 'openai-chat')).toBe(1);
    expect(countWebSearches({ messages: hello, web_search_options: {} }, 'openai-chat', {}, 'gpt-4o')).toBe(
      1,
    );
    expect(countWebSearches({ model: 'gpt-4o', messages: hello }, 'openai-chat')).toBe(0);
    expect(
      countWebSearches({ model: 'gpt-4o-search-preview', messages: hello }, 'openai-chat', {
        webSearch: false,
      }),
    ).toBe(0);
  });

  it('Responses runs max_tool_calls searches (1 when unset) when it offers a search tool', () => {
    const tools = [{ type: 'web_search' }];
    expect(countWebSearches({ input: 'x', tools, max_tool_calls: 3 }, 'openai-responses')).toBe(3);
    expect(countWebSearches({ input: 'x', tools, max_tool_calls: 0 }, 'openai-responses')).toBe(0);
    expect(countWebSearches({ input: 'x', tools }, 'openai-responses')).toBe(1);
    expect(
      countWebSearches(
        { input: 'x', tools: [{ type: 'web_search_preview_2025_03_11' }] },
        'openai-responses',
      ),
    ).toBe(1);
    expect(countWebSearches({ input: 'x', tools: [{ type: 'function' }] }, 'openai-responses')).toBe(0);
  });

  it('search content: web_search at model rates (8,000 a call on the minis), preview free unless reasoning', () => {
    const search = { input: 'x', tools: [{ type: 'web_search' }] };
    const preview = { input: 'x', tools: [{ type: 'web_search_preview' }] };
    expect(SIMULATED_SEARCH_CONTENT_TOKENS).toBe(2000);
    expect(searchContentTokens(search, 'openai-responses', 'gpt-4.1', 2)).toBe(4000);
    expect(searchContentTokens(search, 'openai-responses', 'gpt-4.1-mini', 2)).toBe(16_000);
    expect(searchContentTokens(search, 'openai-responses', 'openai/gpt-4o-mini-2024-07-18', 1)).toBe(8000);
    expect(searchContentTokens(preview, 'openai-responses', 'gpt-4o', 2)).toBe(0);
    expect(searchContentTokens(preview, 'openai-responses', 'o4-mini', 2)).toBe(4000);
    expect(searchContentTokens(preview, 'openai-responses', 'gpt-5', 1)).toBe(2000);
    expect(searchContentTokens(preview, 'openai-responses', 'gpt-5-chat-latest', 1)).toBe(0);
    expect(searchContentTokens(search, 'openai-responses', 'gpt-4.1', 0)).toBe(0);
    expect(searchContentTokens({ messages: hello }, 'openai-chat', 'gpt-4o-search-preview', 1)).toBe(0);
  });
});

let simulator: Simulator;
beforeAll(async () => {
  simulator = await startSimulator();
});
afterAll(async () => {
  await simulator.close();
});

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${simulator.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { res, text: await res.text() };
}

/** What the guard's meter reads from a response body (the request could search). */
function meter(text: string, contentType: string, format: 'openai-chat' | 'openai-responses') {
  const tap = new ResponseTap(1 << 24);
  tap.hint({ format, searches: true });
  tap.begin(200, contentType);
  tap.write(Buffer.from(text));
  tap.drain();
  return tap.observe();
}

const responses = {
  model: 'gpt-4.1',
  input: 'hello',
  tools: [{ type: 'web_search' }],
  max_tool_calls: 2,
  max_output_tokens: 5,
};

describe('simulated web search on the wire', () => {
  it('Responses JSON: web_search_call items before the cited message, results in input_tokens', async () => {
    const { text } = await post('/responses', responses);
    const body = JSON.parse(text);
    expect(body.output.map((item: { type: string }) => item.type)).toEqual([
      'web_search_call',
      'web_search_call',
      'message',
    ]);
    expect(body.output[0]).toMatchObject({ status: 'completed', action: { type: 'search' } });
    expect(body.output[2].content[0].annotations[0]).toMatchObject({ type: 'url_citation' });
    // 'hello' is 8 tokens; 2 searches x 2,000 of results.
    expect(body.usage.input_tokens).toBe(4008);
    const seen = meter(text, 'application/json', 'openai-responses');
    expect(seen.webSearchCalls).toBe(2);
    expect(seen.usage?.promptTokens).toBe(4008);
  });

  it('Responses stream: each search has its events, and the completed response lists them', async () => {
    const { text } = await post('/responses', { ...responses, stream: true });
    const types = [...text.matchAll(/^event: (.+)$/gm)].map((m) => m[1]);
    expect(types.slice(2, 7)).toEqual([
      'response.output_item.added',
      'response.web_search_call.in_progress',
      'response.web_search_call.searching',
      'response.web_search_call.completed',
      'response.output_item.done',
    ]);
    expect(types.filter((t) => t === 'response.web_search_call.completed')).toHaveLength(2);
    expect(meter(text, 'text/event-stream', 'openai-responses').webSearchCalls).toBe(2);
    // Cut after the first search's output_item.done (event 7): one search seen, no usage.
    const events = text.split(/(?<=\n\n)/);
    const cut = meter(events.slice(0, 7).join(''), 'text/event-stream', 'openai-responses');
    expect(cut.usage).toBeNull();
    expect(cut.webSearchCalls).toBe(1);
  });

  it('a scripted web_search_requests sets the number of web_search_call items', async () => {
    const { text } = await post('/responses', responses, {
      'x-simulator-usage': '{"web_search_requests":3}',
    });
    expect(meter(text, 'application/json', 'openai-responses').webSearchCalls).toBe(3);
  });

  it('chat search model: url_citation annotations, JSON and in a stream delta', async () => {
    const chat = { model: 'gpt-4o-search-preview', messages: hello, max_completion_tokens: 3 };
    const json = JSON.parse((await post('/chat/completions', chat)).text);
    expect(json.choices[0].message.annotations).toEqual([
      {
        type: 'url_citation',
        url_citation: expect.objectContaining({ start_index: 0, url: expect.stringMatching(/^https:/) }),
      },
    ]);
    const { text } = await post('/chat/completions', { ...chat, stream: true });
    expect(text).toContain('"annotations":[{"type":"url_citation"');
    const plain = JSON.parse((await post('/chat/completions', { ...chat, model: 'gpt-4o' })).text);
    expect(plain.choices[0].message.annotations).toEqual([]);
  });
});
