import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { countChatPromptTokens, countTextTokens } from '../src/metering/token-count.js';

// That tiktoken loads only when a count needs it is checked in token-count-lazy.test.ts, a process of
// its own, so that these tests hold in any order.
describe('token counting', () => {
  it('uses o200k_base for the gpt-4o, gpt-4.1, gpt-5, o1, o3 and o4 families and cl100k_base otherwise', () => {
    const text = 'こんにちは世界、元気ですか'; // 7 tokens in o200k_base, 9 in cl100k_base
    for (const model of [
      'gpt-4o',
      'gpt-4o-mini',
      'gpt-4.1-nano',
      'gpt-5',
      'gpt-5.1-mini',
      'o1',
      'o3-mini',
      'o4-mini',
      'chatgpt-4o-latest',
      'openai/gpt-4o',
      'azure/GPT-4o',
      'ft:gpt-4o-mini-2024-07-18:org::abc',
    ]) {
      expect(countTextTokens(model, text), model).toBe(7);
    }
    for (const model of [
      'gpt-4',
      'gpt-4-turbo',
      'gpt-3.5-turbo',
      'claude-sonnet-4-5',
      'o10-fake',
      'mistral-large',
    ]) {
      expect(countTextTokens(model, text), model).toBe(9);
    }
  });

  it('counts special-token markers in user text as ordinary text instead of throwing', () => {
    expect(countTextTokens('gpt-4o', '<|endoftext|>')).toBe(7);
  });

  it("counts chat prompts by OpenAI's formula", () => {
    // 3 (priming) + [3 + user 1 + hello 1]
    expect(countChatPromptTokens('gpt-4o', [{ role: 'user', content: 'hello' }])).toBe(8);
    const messages = [
      { role: 'system', content: 'You are a helpful assistant.' }, // 3 + 1 + 6
      { role: 'user', name: 'alice', content: 'What is 2+2?' }, // 3 + 1 + (1 + 1) + 7
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Describe this' }, // 3 + 1 + 2
          { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } },
        ],
      },
    ];
    expect(countChatPromptTokens('gpt-4o', messages)).toBe(3 + 10 + 13 + 6);
  });

  it("matches the example in OpenAI's cookbook (129 tokens for gpt-4, 124 for gpt-4o)", () => {
    const messages = [
      {
        role: 'system',
        content:
          'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.',
      },
      { role: 'system', name: 'example_user', content: 'New synergies will help drive top-line growth.' },
      {
        role: 'system',
        name: 'example_assistant',
        content: 'Things working well together will increase revenue.',
      },
      {
        role: 'system',
        name: 'example_user',
        content:
          "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
      },
      {
        role: 'system',
        name: 'example_assistant',
        content: "Let's talk later when we're less busy about how to do better.",
      },
      {
        role: 'user',
        content: "This late pivot means we don't have time to boil the ocean for the client deliverable.",
      },
    ];
    expect(countChatPromptTokens('gpt-4', messages)).toBe(129);
    expect(countChatPromptTokens('gpt-4o', messages)).toBe(124);
  });

  it('counts tool calls and tool results, and tolerates odd input', () => {
    const toolCall = {
      id: 'call_1',
      type: 'function',
      function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
    };
    const withCall = countChatPromptTokens('gpt-4o', [
      { role: 'assistant', content: null, tool_calls: [toolCall] },
    ]);
    const expected =
      3 +
      3 +
      countTextTokens('gpt-4o', 'assistant') +
      countTextTokens('gpt-4o', 'get_weather') +
      countTextTokens('gpt-4o', '{"city":"Paris"}');
    expect(withCall).toBe(expected);
    expect(
      countChatPromptTokens('gpt-4o', [{ role: 'tool', tool_call_id: 'call_1', content: 'sunny' }]),
    ).toBe(
      3 + 3 + ['tool', 'call_1', 'sunny'].reduce((sum, text) => sum + countTextTokens('gpt-4o', text), 0),
    );
    expect(countChatPromptTokens('gpt-4o', [])).toBe(3);
    expect(countChatPromptTokens('gpt-4o', { role: 'user' })).toBe(3);
    expect(countChatPromptTokens('gpt-4o', undefined)).toBe(3);
    // A string is one user message (the Responses API's `input: 'hello'`).
    expect(countChatPromptTokens('gpt-4o', 'hello')).toBe(8);
    expect(countChatPromptTokens('gpt-4o', ['hello', { role: 'user', content: 'hello' }])).toBe(13);
    expect(countChatPromptTokens('gpt-4o', [null, 42])).toBe(3 + 3 + 3);
  });

  it('agrees with the simulator text: "hello" + " hello" x (n - 1) is n tokens in both encodings', () => {
    for (const n of [1, 2, 3, 16, 257, 4096]) {
      const text = `hello${' hello'.repeat(n - 1)}`;
      expect(countTextTokens('gpt-4o', text)).toBe(n);
      expect(countTextTokens('gpt-4', text)).toBe(n);
    }
  });
});

describe('importing the modules', () => {
  it('never loads tiktoken by itself, nor does importing @spendguard/core (fresh process)', () => {
    const srcUrl = new URL('../src/', import.meta.url);
    const script = `
      import { createRequire } from 'node:module';
      await import(${JSON.stringify(new URL('index.ts', srcUrl).href)});
      await import(${JSON.stringify(new URL('metering/token-count.ts', srcUrl).href)});
      await import(${JSON.stringify(new URL('pricing/price-book.ts', srcUrl).href)});
      await import(${JSON.stringify(new URL('testing/simulator.ts', srcUrl).href)});
      const cache = createRequire(import.meta.url).cache;
      console.log(JSON.stringify(Object.keys(cache).filter((path) => path.includes('tiktoken'))));
    `;
    const output = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('../../..', import.meta.url)),
      encoding: 'utf8',
    });
    expect(JSON.parse(output.trim().split('\n').at(-1) ?? 'null')).toEqual([]);
  });
});
