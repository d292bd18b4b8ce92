import { describe, expect, it } from 'vitest';
import { isTokenizerLoaded } from '../src/metering/token-count.js';
import { meteringBench, meterThrough } from './metered-call.js';

// Records the guard must estimate (a stream cut before its usage): tiktoken loads for them, and only
// for them (metering.test.ts checks that no other record loads it). Each file runs in its own process.

const bench = meteringBench();

describe('metering streams cut before their usage', () => {
  it('estimates a stream cut before any usage, counting with tiktoken', async () => {
    const { record } = await meterThrough(
      bench,
      '/v1/responses',
      { model: 'gpt-4.1', input: 'hello there', stream: true },
      { 'x-simulator-cut-after': '6' },
    );
    expect(isTokenizerLoaded()).toBe(true);
    expect(record).toMatchObject({ model: 'gpt-4.1', estimated: true });
    expect(record.usage.completionTokens).toBe(2); // two deltas delivered: "hello", " hello"
    // 'hello there' as a user message, by OpenAI's rule: 3 + 'user' + 'hello', ' there' + 3 to prime the reply.
    expect(record.usage.promptTokens).toBe(9);
    expect(record.costNano).toBe(34_000); // 9 x 2e-6 + 2 x 8e-6
  });

  it('keeps the input Anthropic reported for a stream cut before message_delta, estimating the output', async () => {
    const { record } = await meterThrough(
      bench,
      '/v1/messages',
      { model: 'claude-sonnet-4-5', max_tokens: 500, messages: [], stream: true },
      { 'x-simulator-cut-after': '8' },
    );
    expect(record.estimated).toBe(true);
    expect(record.usage).toMatchObject({
      promptTokens: 1200,
      cachedPromptTokens: 300,
      cacheWriteTokens: 300,
      completionTokens: 5,
    });
    // 600 x 3e-6 + 300 read x 3e-7 + 200 5m-writes x 3.75e-6 + 100 1h-writes x 6e-6 + 5 x 1.5e-5
    expect(record.costNano).toBe(3_315_000);
    const [log] = await bench.storage.querySpendLogs({ requestId: record.requestId });
    expect(log!.metadata).toMatchObject({ usage_partial: true, stream_cut: true });
  });
});
