// The dearest rates a call can be billed at (worstCaseRates in src/pricing/model-price.ts), from a table
// entry made up for the test. Rates are pico-dollars per token: $1e-6 a token is 1,000,000. Every
// expected value is picked by hand from the entry below by the documented rule: the prompt-size tiers
// the prompt bound can reach, the service tier the request names, cache writes only when the request
// marks content for caching, audio output only when it asks for it, reasoning at the dearer of the two.
import { describe, expect, it } from 'vitest';
import { type BillingShape, compilePrice, worstCaseRates } from '../src/pricing/model-price.js';

const entry = {
  input_cost_per_token: 1e-6,
  output_cost_per_token: 4e-6,
  cache_read_input_token_cost: 0.1e-6,
  cache_creation_input_token_cost: 1.25e-6,
  cache_creation_input_token_cost_above_1hr: 2.5e-6,
  output_cost_per_reasoning_token: 5e-6,
  input_cost_per_audio_token: 1.5e-6,
  output_cost_per_audio_token: 8e-6,
  input_cost_per_token_above_128k_tokens: 2e-6,
  output_cost_per_token_above_128k_tokens: 6e-6,
  input_cost_per_token_above_1000k_tokens: 3e-6,
  input_cost_per_token_priority: 1.5e-6,
  output_cost_per_token_priority: 7e-6,
  input_cost_per_token_flex: 0.5e-6,
  output_cost_per_token_flex: 2e-6,
  input_cost_per_request: 0.01,
  search_context_cost_per_query: {
    search_context_size_low: 0.03,
    search_context_size_medium: 0.01,
    search_context_size_high: 0.02,
  },
};
const compiled = compilePrice('made-up', entry)!;
const rates = (shape: Partial<BillingShape>) =>
  worstCaseRates(compiled, { promptTokens: 1000, cacheWrites: false, audioOutput: false, ...shape });

/** The per-call part of every answer for this entry: $0.01 a request; the dearest search is "low", $0.03. */
const PER_CALL = { request: 10_000_000_000, webSearch: 30_000_000_000 };

describe('worstCaseRates', () => {
  it('a short standard call: input, audio input, and the dearer of output and reasoning', () => {
    expect(rates({})).toEqual({ input: 1_000_000, audioInput: 1_500_000, output: 5_000_000, ...PER_CALL });
    // A service tier the table does not price is billed at the standard prices.
    expect(rates({ serviceTier: 'scale' })).toEqual(rates({}));
  });

  it('the base prices apply to a prompt of no tokens too', () => {
    expect(rates({ promptTokens: 0 })).toEqual(rates({}));
  });

  it('every prompt-size tier the prompt bound passes, not the ones above it', () => {
    // Exactly 128k is not above 128k.
    expect(rates({ promptTokens: 128_000 })).toEqual(rates({}));
    // Above 128k: that tier's input and output (its cache and reasoning prices are the base ones).
    expect(rates({ promptTokens: 128_001 })).toEqual({
      input: 2_000_000,
      audioInput: 2_000_000,
      output: 6_000_000,
      ...PER_CALL,
    });
    // Above 1M: $3e-6 input; output stays at the 128k tier's $6e-6.
    expect(rates({ promptTokens: 1_000_001 })).toEqual({
      input: 3_000_000,
      audioInput: 3_000_000,
      output: 6_000_000,
      ...PER_CALL,
    });
  });

  it('cache-write prices (the 1-hour one is dearest) only when the request marks content for caching', () => {
    expect(rates({ cacheWrites: true })).toEqual({
      input: 2_500_000,
      audioInput: 2_500_000,
      output: 5_000_000,
      ...PER_CALL,
    });
  });

  it('audio output prices only when the request asks for audio', () => {
    expect(rates({ audioOutput: true })).toEqual({
      input: 1_000_000,
      audioInput: 1_500_000,
      output: 8_000_000,
      ...PER_CALL,
    });
  });

  it('the service tier the request names', () => {
    expect(rates({ serviceTier: 'priority' })).toEqual({
      input: 1_500_000,
      audioInput: 1_500_000,
      output: 7_000_000,
      ...PER_CALL,
    });
    // Above 128k on priority: the standard tier's $2e-6 input (no priority price of its own) and the
    // priority base output ($7e-6, dearer than the tier's $6e-6).
    expect(rates({ serviceTier: 'priority', promptTokens: 200_000 })).toEqual({
      input: 2_000_000,
      audioInput: 2_000_000,
      output: 7_000_000,
      ...PER_CALL,
    });
    // Flex: its $0.5e-6 input; output at the plain reasoning price $5e-6 (flex has none of its own).
    expect(rates({ serviceTier: 'flex' })).toEqual({
      input: 500_000,
      audioInput: 1_500_000,
      output: 5_000_000,
      ...PER_CALL,
    });
  });

  it('no per-call or search price: both 0', () => {
    const plain = compilePrice('plain', { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 })!;
    expect(
      worstCaseRates(plain, {
        promptTokens: 10,
        cacheWrites: true,
        audioOutput: true,
        serviceTier: 'priority',
      }),
    ).toEqual({ input: 1_000_000, audioInput: 1_000_000, output: 2_000_000, request: 0, webSearch: 0 });
  });
});
