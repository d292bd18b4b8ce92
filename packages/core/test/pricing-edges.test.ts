// The edges of the price table reader and of usage normalisation that the worked cases of
// pricing-cases.test.ts do not reach: malformed prices, service tiers without a size tier of their own,
// `tiered_pricing` lists out of order or starting above 0, odd token counts. Each table below is made
// up for the case; every expected value is a literal worked out by hand (pico-dollars per token in
// ModelPrice, nano-dollars in a cost).
import { describe, expect, it } from 'vitest';
import { compilePrice, priceUsage, readUsd, worstCaseRates } from '../src/pricing/model-price.js';
import { normalizeUsage } from '../src/pricing/normalize-usage.js';
import { PriceBook, type TokenUsage } from '../src/pricing/price-book.js';

const book = (table: Record<string, Record<string, unknown>>) => new PriceBook({ table });
const usage = (
  promptTokens: number,
  completionTokens: number,
  more: Partial<TokenUsage> = {},
): TokenUsage => ({
  promptTokens,
  completionTokens,
  ...more,
});

describe('readUsd: a price is a non-negative finite number, or a string of one', () => {
  it.each([
    [0, 0],
    [2.5e-6, 2.5e-6],
    ['2.5e-6', 2.5e-6],
    [' 0.000001 ', 0.000001],
    ['0', 0],
    [-1e-6, undefined],
    ['-1e-6', undefined],
    [Number.NaN, undefined],
    [Number.POSITIVE_INFINITY, undefined],
    ['Infinity', undefined],
    ['', undefined],
    ['   ', undefined],
    ['cheap', undefined],
    [null, undefined],
    [true, undefined],
  ])('%j -> %j', (value, expected) => {
    expect(readUsd(value)).toBe(expected);
  });

  it('prices a table whose prices are strings, and ignores the ones that are not prices', () => {
    const prices = book({ m: { input_cost_per_token: '0.000002', output_cost_per_token: -1 } });
    expect(prices.resolve('m')).toMatchObject({ inputPico: 2_000_000, outputPico: 0 });
  });
});

describe('what an entry compiles to', () => {
  it('prices a model with an input price only, and leaves one with no price at all unpriced', () => {
    const prices = book({ embed: { input_cost_per_token: 1e-7 }, none: { mode: 'image_generation' } });
    expect(prices.cost('embed', usage(1000, 0)).totalNano).toBe(100_000); // 1000 x 1e-7
    expect(prices.resolve('none')).toBeUndefined();
  });

  it('keeps the provider and the output limit only when they are what they claim to be', () => {
    const prices = book({
      good: { input_cost_per_token: 1e-6, litellm_provider: 'acme', max_output_tokens: 4096 },
      odd: { input_cost_per_token: 1e-6, litellm_provider: 5, max_output_tokens: '4096' },
      zero: { input_cost_per_token: 1e-6, max_output_tokens: 0 },
      endless: { input_cost_per_token: 1e-6, max_output_tokens: Number.POSITIVE_INFINITY },
    });
    expect(prices.resolve('good')).toMatchObject({ provider: 'acme', maxOutputTokens: 4096 });
    for (const name of ['odd', 'zero', 'endless']) {
      expect(prices.resolve(name)?.maxOutputTokens, name).toBeUndefined();
    }
    expect(prices.resolve('odd')?.provider).toBeUndefined();
  });

  it('states the audio prices only for a model that has them', () => {
    const prices = book({
      talk: {
        input_cost_per_token: 1e-6,
        output_cost_per_token: 2e-6,
        input_cost_per_audio_token: 4e-5,
        output_cost_per_audio_token: 8e-5,
      },
      text: { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 },
    });
    expect(prices.resolve('talk')).toMatchObject({ audioInputPico: 40_000_000, audioOutputPico: 80_000_000 });
    expect(prices.resolve('text')?.audioInputPico).toBeUndefined();
    expect(prices.resolve('text')?.audioOutputPico).toBeUndefined();
  });

  it('charges image prompt tokens at the image price, else at the input price', () => {
    const prices = book({
      seeing: { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6, input_cost_per_image_token: 5e-6 },
      plain: { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 },
    });
    const withImages = usage(1000, 0, { imagePromptTokens: 400 });
    expect(prices.cost('seeing', withImages).totalNano).toBe(2_600_000); // 600 x 1e-6 + 400 x 5e-6
    expect(prices.cost('plain', withImages).totalNano).toBe(1_000_000); // 1000 x 1e-6
  });

  it("charges an image generation model's output at the image price unless the usage says it is text", () => {
    const prices = book({
      painter: { mode: 'image_generation', input_cost_per_token: 5e-6, output_cost_per_image_token: 4e-5 },
      writer: { mode: 'image_generation', output_cost_per_token: 1e-5, output_cost_per_image_token: 3e-5 },
      chat: { mode: 'chat', output_cost_per_token: 1e-5, output_cost_per_image_token: 3e-5 },
    });
    // OpenAI's Images API reports gpt-image-1's output without a split: all images.
    const images = { input_tokens: 10, output_tokens: 4160, input_tokens_details: { text_tokens: 10 } };
    expect(prices.calculateCost('painter', images).totalNano).toBe(166_450_000); // 10 x 5e-6 + 4160 x 4e-5
    expect(prices.calculateCost('writer', images).totalNano).toBe(124_800_000); // 4160 x 3e-5
    // Split: the image tokens at the image price, the rest at the text price.
    const split = { ...images, output_tokens_details: { image_tokens: 4000 } };
    expect(prices.calculateCost('writer', split).totalNano).toBe(121_600_000); // 4000 x 3e-5 + 160 x 1e-5
    // A chat model's output is text unless said otherwise.
    expect(prices.calculateCost('chat', images).totalNano).toBe(41_600_000); // 4160 x 1e-5
    // Reasoning and audio output keep their own prices; the rest of the output is images.
    const mixed = book({
      painter: {
        mode: 'image_generation',
        input_cost_per_token: 0,
        output_cost_per_image_token: 4e-5,
        output_cost_per_reasoning_token: 1e-6,
        output_cost_per_audio_token: 2e-6,
      },
    });
    const parts = usage(0, 1000, { reasoningTokens: 200, audioCompletionTokens: 100 });
    // 700 x 4e-5 + 200 x 1e-6 + 100 x 2e-6
    expect(mixed.cost('painter', parts).totalNano).toBe(28_400_000);
  });
});

describe('service tiers', () => {
  const table = {
    // As gpt-5.4: a priority price, and a size tier without a priority price of its own.
    long: {
      input_cost_per_token: 1e-6,
      output_cost_per_token: 2e-6,
      input_cost_per_token_priority: 4e-6,
      input_cost_per_token_above_272k_tokens: 2e-6,
    },
    // A size tier cheaper than the base price, and no priority prices at all.
    bulk: {
      input_cost_per_token: 3e-6,
      output_cost_per_token: 1e-6,
      input_cost_per_token_above_200k_tokens: 1e-6,
    },
    // A priority input price and no priority output price: the output stays at its standard price.
    half: { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6, input_cost_per_token_priority: 3e-6 },
  };

  it('charges a long priority call no less per token than a short one', () => {
    const prices = book(table);
    // 300k x max(2e-6 above the tier, 4e-6 priority) = 1.2 USD; standard: 300k x 2e-6 = 0.6 USD.
    expect(prices.cost('long', usage(300_000, 0), { serviceTier: 'priority' }).totalNano).toBe(1_200_000_000);
    expect(prices.cost('long', usage(300_000, 0)).totalNano).toBe(600_000_000);
  });

  it('charges a priority call the standard prices of a model without priority prices, size tiers included', () => {
    const prices = book(table);
    // Above 200k: 300k x 1e-6 + 10 x 1e-6, priority or not.
    expect(prices.cost('bulk', usage(300_000, 10), { serviceTier: 'priority' }).totalNano).toBe(300_010_000);
    expect(prices.cost('bulk', usage(300_000, 10)).totalNano).toBe(300_010_000);
  });

  it('falls back to the standard price for each price the service tier does not set', () => {
    const prices = book(table);
    // 1000 x 3e-6 + 100 x 2e-6
    expect(prices.cost('half', usage(1000, 100), { serviceTier: 'priority' }).totalNano).toBe(3_200_000);
  });
});

describe('size tiers', () => {
  it('reads thresholds in any order, decimal ones included, and ignores one without a valid price', () => {
    const prices = book({
      m: {
        input_cost_per_token: 1e-6,
        output_cost_per_token: 1e-6,
        input_cost_per_token_above_272k_tokens: 4e-6,
        input_cost_per_token_above_128k_tokens: 2e-6,
        'input_cost_per_token_above_1.25k_tokens': 1.5e-6,
        input_cost_per_token_above_64k_tokens: 'n/a',
        my_input_cost_per_token_above_10_tokens: 9e-6,
      },
    });
    expect(prices.cost('m', usage(1_000, 0)).totalNano).toBe(1_000_000); // 1000 x 1e-6
    expect(prices.cost('m', usage(100_000, 0)).totalNano).toBe(150_000_000); // above 1.25k: x 1.5e-6
    expect(prices.cost('m', usage(200_000, 0)).totalNano).toBe(400_000_000); // above 128k: x 2e-6
    expect(prices.cost('m', usage(300_000, 0)).totalNano).toBe(1_200_000_000); // above 272k: x 4e-6
  });

  it('keeps the prices a size tier does not change (reasoning here) above its threshold', () => {
    const prices = book({
      m: {
        input_cost_per_token: 1e-6,
        output_cost_per_token: 2e-6,
        output_cost_per_reasoning_token: 5e-6,
        input_cost_per_token_above_200k_tokens: 2e-6,
      },
    });
    // 300k x 2e-6 + 100 reasoning x 5e-6
    expect(prices.cost('m', usage(300_000, 100, { reasoningTokens: 100 })).totalNano).toBe(600_500_000);
  });

  it('reads a tiered_pricing list out of order, skipping items that are not token prices', () => {
    const prices = book({
      m: {
        input_cost_per_token: 9e-6,
        output_cost_per_token: 9e-6,
        tiered_pricing: [
          { range: [200_000, 1_000_000], input_cost_per_token: 2e-6, output_cost_per_token: 4e-6 },
          { range: [0, 200_000], input_cost_per_token: 1e-6, output_cost_per_token: 3e-6 },
          { range: ['100k', 1_000_000], input_cost_per_token: 7e-6 },
          { range: [-1, 1_000_000], input_cost_per_token: 7e-6 },
          { range: [Number.NaN, 1_000_000], input_cost_per_token: 7e-6 },
          { range: [50_000, 1_000_000], search_cost_per_query: 0.01 },
          { range: [150_000], input_cost_per_token: 'n/a', output_cost_per_token: null },
          'not a tier',
          { input_cost_per_token: 7e-6 },
        ],
      },
    });
    expect(prices.cost('m', usage(100_000, 10)).totalNano).toBe(100_030_000); // 100k x 1e-6 + 10 x 3e-6
    expect(prices.cost('m', usage(190_000, 10)).totalNano).toBe(190_030_000);
    expect(prices.cost('m', usage(300_000, 10)).totalNano).toBe(600_040_000); // 300k x 2e-6 + 10 x 4e-6
  });

  it('prices a prompt below the first listed range at the top-level prices', () => {
    const prices = book({
      m: {
        input_cost_per_token: 1e-6,
        output_cost_per_token: 1e-6,
        tiered_pricing: [
          { range: [1_000, 1_000_000], input_cost_per_token: 5e-6, output_cost_per_token: 5e-6 },
        ],
      },
    });
    expect(prices.cost('m', usage(500, 0)).totalNano).toBe(500_000); // 500 x 1e-6
    expect(prices.cost('m', usage(2_000, 0)).totalNano).toBe(10_000_000); // 2000 x 5e-6
  });
});

describe('web search prices', () => {
  const cost = (search: Record<string, unknown>, size?: 'low' | 'medium' | 'high') =>
    book({
      m: { input_cost_per_token: 0, output_cost_per_token: 0, search_context_cost_per_query: search },
    }).cost('m', usage(0, 0, { webSearchRequests: 1, ...(size ? { searchContextSize: size } : {}) }))
      .totalNano;

  it('fills the sizes a table leaves out from medium, else high, else low', () => {
    const onlyLow = { search_context_size_low: 0.01 };
    expect([cost(onlyLow, 'low'), cost(onlyLow), cost(onlyLow, 'high')]).toEqual([
      10_000_000, 10_000_000, 10_000_000,
    ]);
    const highAndLow = { search_context_size_low: 0.01, search_context_size_high: 0.03 };
    expect([cost(highAndLow, 'low'), cost(highAndLow), cost(highAndLow, 'high')]).toEqual([
      10_000_000, 30_000_000, 30_000_000,
    ]);
    const mediumOnly = { search_context_size_medium: 0.02 };
    expect([cost(mediumOnly, 'low'), cost(mediumOnly, 'high')]).toEqual([20_000_000, 20_000_000]);
  });

  it('charges nothing for searches when the table prices none', () => {
    expect(cost({})).toBe(0);
    expect(cost({ search_context_size_medium: 'free' })).toBe(0);
  });
});

describe('token counts the pricing reads', () => {
  const prices = book({ m: { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 } });

  it('rounds a fractional count up and reads a negative, infinite or missing one as 0', () => {
    expect(prices.cost('m', usage(2.5, 0)).totalNano).toBe(3_000); // 3 x 1e-6
    expect(prices.cost('m', usage(-500, 10)).totalNano).toBe(20_000);
    expect(prices.cost('m', usage(Number.POSITIVE_INFINITY, 10)).totalNano).toBe(20_000);
    expect(prices.cost('m', { promptTokens: 10 } as TokenUsage).totalNano).toBe(10_000);
    expect(prices.cost('m', usage(10, 10, { reasoningTokens: -5, cachedPromptTokens: -5 })).totalNano).toBe(
      30_000,
    );
  });

  it('charges reported audio, image and cache tokens in full, even beyond the totals', () => {
    // The prompt total is at least its parts: 100 audio + 50 image + 30 cached (all at the input price).
    expect(
      prices.cost(
        'm',
        usage(10, 0, { audioPromptTokens: 100, imagePromptTokens: 50, cachedPromptTokens: 30 }),
      ).totalNano,
    ).toBe(180_000);
    // The completion total is at least its parts: 40 reasoning + 20 audio + 10 image, at 2e-6.
    expect(
      prices.cost(
        'm',
        usage(0, 5, { reasoningTokens: 40, audioCompletionTokens: 20, imageCompletionTokens: 10 }),
      ).totalNano,
    ).toBe(140_000);
  });

  it('charges a per-call price only to a model that has one', () => {
    const withFee = book({ m: { input_cost_per_token: 1e-6, input_cost_per_request: 0.001 } });
    expect(withFee.cost('m', usage(0, 0)).totalNano).toBe(1_000_000);
    expect(prices.cost('m', usage(0, 0)).requestNano).toBe(0);
    expect(withFee.cost('m', usage(0, 0)).priced).toBe(true);
  });
});

describe('normalizeUsage edges', () => {
  it('reads non-positive and non-finite counts as 0 and leaves zero details out', () => {
    expect(
      normalizeUsage({
        prompt_tokens: 100,
        completion_tokens: Number.POSITIVE_INFINITY,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: -3 },
        completion_tokens_details: { reasoning_tokens: '7' },
      }),
    ).toEqual({ promptTokens: 100, completionTokens: 0 });
  });

  it('keeps a service tier and a search context size only when they are what they claim to be', () => {
    expect(normalizeUsage({ prompt_tokens: 1, completion_tokens: 1, service_tier: '' })).toEqual({
      promptTokens: 1,
      completionTokens: 1,
    });
    expect(normalizeUsage({ prompt_tokens: 1, completion_tokens: 1, service_tier: 'flex' })).toMatchObject({
      serviceTier: 'flex',
    });
    for (const size of ['low', 'medium', 'high'] as const) {
      expect(normalizeUsage({ prompt_tokens: 1, search_context_size: size }).searchContextSize).toBe(size);
    }
    expect(
      normalizeUsage({ prompt_tokens: 1, search_context_size: 'huge' }).searchContextSize,
    ).toBeUndefined();
    expect(normalizeUsage({ promptTokens: 1, serviceTier: 5 })).toEqual({
      promptTokens: 1,
      completionTokens: 0,
    });
  });

  it("takes Anthropic's service tier from the usage, else from the message around it", () => {
    expect(
      normalizeUsage({
        service_tier: 'priority',
        usage: { input_tokens: 1, output_tokens: 1, cache_read_input_tokens: 0 },
      }).serviceTier,
    ).toBe('priority');
    expect(
      normalizeUsage({
        service_tier: 'priority',
        usage: { input_tokens: 1, output_tokens: 1, cache_read_input_tokens: 0, service_tier: 'standard' },
      }).serviceTier,
    ).toBe('standard');
  });

  it('adds reasoning reported beside the completion only when the total says so (xAI, Perplexity)', () => {
    const beside = { prompt_tokens: 10, completion_tokens: 5, reasoning_tokens: 20, total_tokens: 35 };
    expect(normalizeUsage(beside)).toEqual({ promptTokens: 10, completionTokens: 25, reasoningTokens: 20 });
    const inside = { prompt_tokens: 10, completion_tokens: 25, reasoning_tokens: 20, total_tokens: 35 };
    expect(normalizeUsage(inside)).toEqual({ promptTokens: 10, completionTokens: 25, reasoningTokens: 20 });
    const noTotal = { prompt_tokens: 10, completion_tokens: 5, reasoning_tokens: 20 };
    expect(normalizeUsage(noTotal)).toEqual({ promptTokens: 10, completionTokens: 5, reasoningTokens: 20 });
    // A total that is neither: left as reported.
    const other = { prompt_tokens: 10, completion_tokens: 5, reasoning_tokens: 20, total_tokens: 99 };
    expect(normalizeUsage(other).completionTokens).toBe(5);
    // Without reasoning, a total above prompt + completion adds nothing.
    expect(
      normalizeUsage({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 35 }).completionTokens,
    ).toBe(5);
  });

  it('recognises each shape from either of its fields alone', () => {
    expect(normalizeUsage({ completionTokens: 4 })).toEqual({ promptTokens: 0, completionTokens: 4 });
    expect(normalizeUsage({ candidatesTokenCount: 4 })).toEqual({ promptTokens: 0, completionTokens: 4 });
    expect(normalizeUsage({ totalTokenCount: 9 })).toEqual({ promptTokens: 0, completionTokens: 9 });
    expect(normalizeUsage({ outputTokens: 4 })).toEqual({ promptTokens: 0, completionTokens: 4 });
    expect(normalizeUsage({ completion_tokens: 4 })).toEqual({ promptTokens: 0, completionTokens: 4 });
    expect(normalizeUsage({ output_tokens: 4 })).toEqual({ promptTokens: 0, completionTokens: 4 });
    expect(normalizeUsage({ output_tokens: 4, cache_creation_input_tokens: 6 })).toEqual({
      promptTokens: 6,
      completionTokens: 4,
      cacheWriteTokens: 6,
    });
    expect(normalizeUsage({ output_tokens: 4, cache_read_input_tokens: null })).toEqual({
      promptTokens: 0,
      completionTokens: 4,
    });
  });

  it('looks inside envelopes, up to three levels, and no deeper', () => {
    const usageOf = { prompt_tokens: 3, completion_tokens: 2 };
    expect(normalizeUsage({ message: { usage: usageOf } })).toEqual({ promptTokens: 3, completionTokens: 2 });
    expect(normalizeUsage({ response: { usage: usageOf } })).toEqual({
      promptTokens: 3,
      completionTokens: 2,
    });
    expect(normalizeUsage({ response: { id: 'x' } })).toEqual({ promptTokens: 0, completionTokens: 0 });
    expect(normalizeUsage({ billed_units: { input_tokens: 3, output_tokens: 2 } })).toEqual({
      promptTokens: 3,
      completionTokens: 2,
    });
    expect(normalizeUsage({ usage: { usage: { usage: usageOf } } })).toEqual({
      promptTokens: 3,
      completionTokens: 2,
    });
    expect(normalizeUsage({ usage: { usage: { usage: { usage: usageOf } } } })).toEqual({
      promptTokens: 0,
      completionTokens: 0,
    });
  });

  it("reads Gemini's audio and image completion tokens from their modality", () => {
    expect(
      normalizeUsage({
        usageMetadata: {
          promptTokenCount: 10,
          candidatesTokenCount: 30,
          candidatesTokensDetails: [
            { modality: 'AUDIO', tokenCount: 20 },
            { modality: 'IMAGE', tokenCount: 5 },
            { modality: 'TEXT', tokenCount: 5 },
          ],
        },
      }),
    ).toEqual({
      promptTokens: 10,
      completionTokens: 30,
      audioCompletionTokens: 20,
      imageCompletionTokens: 5,
    });
  });
});

// Cases added from the mutation run's survivors (mutation/survivors/): each kills a change to the
// table reader or to the pricing arithmetic that every earlier case let through.
describe('more edges of the table reader', () => {
  it('reads a size threshold without "k" as tokens, and only a whole key of that name', () => {
    const prices = book({
      m: {
        input_cost_per_token: 1e-6,
        input_cost_per_token_above_100_tokens: 2e-6, // above 100 tokens (not 100k)
        xinput_cost_per_token_above_10_tokens: 9e-6, // not the field: a prefix
        input_cost_per_token_above_20_tokens_batches: 9e-6, // not the field: a suffix
      },
    });
    expect(prices.cost('m', usage(100, 0)).totalNano).toBe(100_000); // 100 x 1e-6
    expect(prices.cost('m', usage(101, 0)).totalNano).toBe(202_000); // 101 x 2e-6
    expect(prices.cost('m', usage(50, 0)).totalNano).toBe(50_000); // 50 x 1e-6: no 10- or 20-token tier
  });

  it('a size tier cheaper than the base price applies as it is on standard and flex', () => {
    const prices = book({
      bulk: {
        input_cost_per_token: 3e-6,
        output_cost_per_token: 1e-6,
        input_cost_per_token_above_1k_tokens: 1e-6,
      },
    });
    expect(prices.cost('bulk', usage(2000, 0)).totalNano).toBe(2_000_000); // 2000 x 1e-6
    expect(prices.cost('bulk', usage(2000, 0), { serviceTier: 'flex' }).totalNano).toBe(2_000_000);
  });

  it('a tiered_pricing item skips a bad range and an item without token prices; a missing price is the top-level one', () => {
    const prices = book({
      m: {
        input_cost_per_token: 5e-6,
        output_cost_per_token: 7e-6,
        tiered_pricing: [
          { range: [-1, 10], input_cost_per_token: 9e-6, output_cost_per_token: 9e-6 },
          { range: ['0', 10], input_cost_per_token: 9e-6, output_cost_per_token: 9e-6 },
          { range: [Number.NaN, 10], input_cost_per_token: 9e-6, output_cost_per_token: 9e-6 },
          { range: [0, 1000], input_cost_per_token: 1e-6 }, // output: the top-level 7e-6
          { range: [1000, 5000], output_cost_per_token: 3e-6 }, // input: the top-level 5e-6
          { range: [500, 600], search_cost_per_query: 0.01 }, // no token price: not a size tier
        ],
      },
    });
    // 0 prompt tokens: the first range's card (from 0): 1000 x 7e-6 of output.
    expect(prices.cost('m', usage(0, 1000)).totalNano).toBe(7_000_000);
    // 550 prompt tokens: still the [0, 1000) card: 550 x 1e-6.
    expect(prices.cost('m', usage(550, 0)).totalNano).toBe(550_000);
    // 2000 prompt tokens: the [1000, 5000) card: 2000 x 5e-6 + 1000 x 3e-6.
    expect(prices.cost('m', usage(2000, 1000)).totalNano).toBe(13_000_000);
    expect(prices.resolve('m')).toMatchObject({ inputPico: 1_000_000, outputPico: 7_000_000 });
  });

  it('prices a model with an output price only, or a per-call price only', () => {
    const prices = book({ out: { output_cost_per_token: 2e-6 }, call: { input_cost_per_request: 0.004 } });
    expect(prices.cost('out', usage(1000, 500)).totalNano).toBe(1_000_000); // 500 x 2e-6
    expect(prices.cost('call', usage(1000, 500)).totalNano).toBe(4_000_000); // one call at 0.004 USD
  });

  it('batch prices: the table own, else half the standard ones', () => {
    const prices = book({
      own: {
        input_cost_per_token: 2e-6,
        output_cost_per_token: 8e-6,
        input_cost_per_token_batches: 0.4e-6,
        output_cost_per_token_batches: 3e-6,
      },
      half: { input_cost_per_token: 2e-6, output_cost_per_token: 8e-6 },
    });
    expect(prices.cost('own', usage(1000, 100), { batch: true }).totalNano).toBe(700_000); // 400_000 + 300_000
    expect(prices.cost('half', usage(1000, 100), { batch: true }).totalNano).toBe(1_400_000); // 1_000_000 + 400_000
  });

  it('states a mode, a cache price and an input limit only when the table gives them as they are', () => {
    const prices = book({
      plain: { input_cost_per_token: 1e-6, mode: 5, max_input_tokens: 0 },
      minus: { input_cost_per_token: 1e-6, max_input_tokens: -10 },
      text: { input_cost_per_token: 1e-6, max_input_tokens: '128000' },
      endless: { input_cost_per_token: 1e-6, max_input_tokens: Number.POSITIVE_INFINITY },
      good: { input_cost_per_token: 1e-6, mode: 'chat', max_input_tokens: 128_000 },
    });
    const plain = prices.resolve('plain')!;
    expect(plain.mode).toBeUndefined();
    expect(plain.cacheReadPico).toBeUndefined();
    for (const name of ['plain', 'minus', 'text', 'endless']) {
      expect(prices.resolve(name)?.maxInputTokens, name).toBeUndefined();
    }
    expect(prices.resolve('good')).toMatchObject({ mode: 'chat', maxInputTokens: 128_000 });
  });

  it('a negative or NaN token count is charged as none', () => {
    // A cache price of its own: a negative cached count would move tokens between two prices.
    const prices = book({
      m: { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6, cache_read_input_token_cost: 1e-7 },
    });
    expect(
      prices.cost('m', usage(1000, 100, { cachedPromptTokens: -400, reasoningTokens: Number.NaN })).totalNano,
    ).toBe(1_200_000); // 1000 x 1e-6 + 100 x 2e-6
  });

  it('a flex call above a size tier whose price the flex base lacks: the tier price', () => {
    const prices = book({
      m: {
        input_cost_per_token: 1e-6,
        input_cost_per_token_flex: 0.5e-6,
        input_cost_per_token_above_1k_tokens: 2e-6,
        output_cost_per_token_above_1k_tokens: 4e-6, // no output price below the tier
      },
    });
    // max(2e-6 tier, 0.5e-6 flex base) x 2000 + 4e-6 x 100 = 4,000,000 + 400,000 nano
    expect(prices.cost('m', usage(2000, 100), { serviceTier: 'flex' }).totalNano).toBe(4_400_000);
  });

  it('web searches on a model with no search price cost nothing (and do not throw)', () => {
    const prices = book({ m: { input_cost_per_token: 1e-6 } });
    expect(prices.cost('m', usage(10, 0, { webSearchRequests: 3 }))).toMatchObject({
      webSearchNano: 0,
      totalNano: 10_000,
    });
  });

  it('past 2^53 pico-dollars the total is rounded from the exact sum, not from a float', () => {
    // 3e9 x 3,333,333 pico + 1 x 499 pico = 9,999,999,000,000,499 pico: 9,999,999,000,000 nano once
    // rounded (.499). In float the sum is 9,999,999,000,000,500 (the nearest double), which rounds up.
    const prices = book({ m: { input_cost_per_token: 3.333333e-6, output_cost_per_token: 4.99e-10 } });
    expect(prices.cost('m', usage(3e9, 1))).toMatchObject({ totalNano: 9_999_999_000_000, priced: true });
  });
});

describe('more edges of usage normalisation', () => {
  it('leaves out the optional counts that are zero', () => {
    expect(
      normalizeUsage({
        prompt_tokens: 10,
        completion_tokens: 5,
        prompt_tokens_details: { cached_tokens: 0 },
      }),
    ).toStrictEqual({ promptTokens: 10, completionTokens: 5 });
  });

  it('reads a negative count as none', () => {
    expect(normalizeUsage({ prompt_tokens: -10, completion_tokens: 5 })).toStrictEqual({
      promptTokens: 0,
      completionTokens: 5,
    });
  });

  it("reads an envelope's own counts when its message carries no usage", () => {
    expect(
      normalizeUsage({ message: { role: 'assistant' }, prompt_tokens: 7, completion_tokens: 3 }),
    ).toStrictEqual({ promptTokens: 7, completionTokens: 3 });
  });

  it('reads at most three envelopes deep', () => {
    const inner = { prompt_tokens: 7, completion_tokens: 3 };
    expect(normalizeUsage({ usage: { usage: { usage: inner } } })).toStrictEqual({
      promptTokens: 7,
      completionTokens: 3,
    });
    expect(normalizeUsage({ usage: { usage: { usage: { usage: inner } } } })).toStrictEqual({
      promptTokens: 0,
      completionTokens: 0,
    });
    expect(normalizeUsage({ message: { usage: { usage: { usage: inner } } } })).toStrictEqual({
      promptTokens: 0,
      completionTokens: 0,
    });
    expect(
      normalizeUsage({ billed_units: { billed_units: { billed_units: { billed_units: inner } } } }),
    ).toStrictEqual({
      promptTokens: 0,
      completionTokens: 0,
    });
  });

  it('an Anthropic cache field set to null does not make a Responses usage an Anthropic one', () => {
    // Responses: input_tokens include the cached ones. Read as Anthropic, the 40 would not be cached.
    expect(
      normalizeUsage({
        input_tokens: 100,
        output_tokens: 10,
        cache_read_input_tokens: null,
        input_tokens_details: { cached_tokens: 40 },
      }),
    ).toMatchObject({ promptTokens: 100, completionTokens: 10, cachedPromptTokens: 40 });
  });
});

// The web search fees of pricing by each provider's rule, on entries made up for the case (the
// model names matter: OpenAI's preview fee depends on them). Google: grounding with Google Search is
// billed once per grounded prompt (Gemini 2.x, LiteLLM's `per_prompt`), or per search query where the
// table says `web_search_billing_unit: per_query` (Gemini 3), at the table's search price, else
// LiteLLM's default of $35 per 1,000. OpenAI, where the table has no search price: $10 per 1,000
// `web_search` calls, and $25 per 1,000 `web_search_preview` calls except on reasoning models ($10).
describe('web search fees by provider', () => {
  const searches = (n: number, more: Partial<TokenUsage> = {}) =>
    usage(0, 0, { webSearchRequests: n, ...more });
  const fee = (model: string, entry: Record<string, unknown>, n: number, more: Partial<TokenUsage> = {}) =>
    priceUsage(compilePrice(model, { input_cost_per_token: 1e-6, ...entry })!, searches(n, more))
      .webSearchNano;

  it('Gemini 2.x: one $0.035 fee per grounded prompt, however many queries it ran', () => {
    const gemini = { litellm_provider: 'gemini' };
    expect(
      compilePrice('gemini/g', { input_cost_per_token: 1e-6, ...gemini })!.price.webSearchBillingUnit,
    ).toBe('per_prompt');
    expect(fee('gemini/g', gemini, 3)).toBe(35_000_000);
    expect(fee('gemini/g', gemini, 1)).toBe(35_000_000);
    expect(fee('gemini/g', gemini, 0)).toBe(0);
    // Vertex AI's Gemini, under either provider name (a `vertex_ai` model only when it is a Gemini one).
    expect(fee('g', { litellm_provider: 'vertex_ai-language-models' }, 4)).toBe(35_000_000);
    expect(fee('vertex_ai/GEMINI-2.0-pro', { litellm_provider: 'vertex_ai' }, 4)).toBe(35_000_000);
    // A billing unit that is not `per_query` is per prompt; the table's price replaces the default.
    expect(fee('gemini/g', { ...gemini, web_search_billing_unit: 'PER_QUERY' }, 3)).toBe(35_000_000);
    const priced = { ...gemini, search_context_cost_per_query: { search_context_size_medium: 0.02 } };
    expect(fee('gemini/g', priced, 3)).toBe(20_000_000);
  });

  it('Gemini 3 (per_query): each search query, at the table price or the default', () => {
    const perQuery = { litellm_provider: 'gemini', web_search_billing_unit: 'per_query' };
    expect(
      compilePrice('gemini/g3', { input_cost_per_token: 1e-6, ...perQuery })!.price.webSearchBillingUnit,
    ).toBe('per_query');
    // 3 x $0.014, and 3 x $0.035 without a price in the table.
    const priced = { ...perQuery, search_context_cost_per_query: { search_context_size_medium: 0.014 } };
    expect(fee('gemini/g3', priced, 3)).toBe(42_000_000);
    expect(fee('gemini/g3', perQuery, 3)).toBe(105_000_000);
  });

  it("other providers' models are charged each search at their table price, and Gemini's unit never applies", () => {
    const price = { search_context_cost_per_query: { search_context_size_medium: 0.01 } };
    // Claude on Vertex: billed by Anthropic's rule (each search), not Google's.
    for (const [model, provider] of [
      ['vertex_ai/claude-sonnet', 'vertex_ai'],
      ['claude-sonnet', 'anthropic'],
      ['gemini-lookalike', 'openrouter'],
    ] as const) {
      const entry = { litellm_provider: provider, web_search_billing_unit: 'per_prompt', ...price };
      // Absent, as ModelPrice documents it, not present and undefined.
      expect(
        'webSearchBillingUnit' in compilePrice(model, { input_cost_per_token: 1e-6, ...entry })!.price,
        model,
      ).toBe(false);
      expect(fee(model, entry, 3), model).toBe(30_000_000); // 3 x $0.01
      // No price of its own and not Google's, not OpenAI's: no fee.
      expect(fee(model, { litellm_provider: provider }, 3), model).toBe(0);
    }
  });

  it('OpenAI without a table price: $0.01 a call, $0.025 a preview call except on reasoning models', () => {
    const openai = { litellm_provider: 'openai' };
    const preview = { webSearchTool: 'web_search_preview' } as const;
    // Non-reasoning models: the preview fee; `web_search` and chat search: $0.01.
    for (const model of ['gpt-4.1', 'openai/gpt-5-chat-latest', 'my-o3', 'omni-1', 'ft:gpt-4o:o3']) {
      expect(fee(model, openai, 2, preview), model).toBe(50_000_000);
      expect(fee(model, openai, 2, { webSearchTool: 'web_search' }), model).toBe(20_000_000);
      expect(fee(model, openai, 2, { webSearchTool: 'chat' }), model).toBe(20_000_000);
      expect(fee(model, openai, 2), model).toBe(20_000_000);
    }
    // Reasoning models (o-series, gpt-5 but its chat variants), by the name after the last `/`, any case.
    for (const model of [
      'o3',
      'openai/O4-mini',
      'azure/openai/o1',
      'gpt-5',
      'GPT-5-mini',
      'gpt-5-nano-2025',
    ]) {
      expect(fee(model, openai, 2, preview), model).toBe(20_000_000);
    }
    // A table price wins over OpenAI's fees, whatever the tool; another provider gets no OpenAI fee.
    const priced = { ...openai, search_context_cost_per_query: { search_context_size_medium: 0.03 } };
    expect(fee('gpt-4.1', priced, 2, preview)).toBe(60_000_000);
    expect(fee('gpt-4.1', { litellm_provider: 'azure' }, 2, preview)).toBe(0);
  });

  it('worstCaseRates: the dearest fee one search can cost', () => {
    const shape = { promptTokens: 10, cacheWrites: false, audioOutput: false };
    const rates = (model: string, entry: Record<string, unknown>) =>
      worstCaseRates(compilePrice(model, { input_cost_per_token: 1e-6, ...entry })!, shape).webSearch;
    // OpenAI: the preview fee ($0.025) on a non-reasoning model, $0.01 on a reasoning one (pico-dollars).
    expect(rates('gpt-4.1', { litellm_provider: 'openai' })).toBe(25_000_000_000);
    expect(rates('o3', { litellm_provider: 'openai' })).toBe(10_000_000_000);
    // Gemini's default fee; none for a model without a search price.
    expect(rates('gemini/g', { litellm_provider: 'gemini' })).toBe(35_000_000_000);
    expect(rates('m', { litellm_provider: 'mistral' })).toBe(0);
  });
});

describe('Gemini grounding queries in a response', () => {
  const body = (candidates: unknown) => ({
    candidates,
    usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 20 },
  });

  it('counts the non-blank string queries of every candidate, in either spelling', () => {
    expect(
      normalizeUsage(
        body([
          { groundingMetadata: { webSearchQueries: ['a', ' ', '', 7, null, 'b'] } },
          null,
          'candidate',
          { grounding_metadata: { web_search_queries: ['c'] } },
          { groundingMetadata: { webSearchQueries: 'not a list' } },
          { groundingMetadata: {} },
          { groundingMetadata: 'not an object', grounding_metadata: { web_search_queries: ['d'] } },
          {},
        ]),
      ),
    ).toStrictEqual({ promptTokens: 10, completionTokens: 20, webSearchRequests: 4 });
  });

  it('counts none without candidates, or from a bare usageMetadata', () => {
    expect(normalizeUsage(body({ 0: { groundingMetadata: { webSearchQueries: ['a'] } } }))).toStrictEqual({
      promptTokens: 10,
      completionTokens: 20,
    });
    expect(normalizeUsage(body([]))).toStrictEqual({ promptTokens: 10, completionTokens: 20 });
    expect(
      normalizeUsage({
        promptTokenCount: 10,
        candidatesTokenCount: 20,
        candidates: [{ groundingMetadata: { webSearchQueries: ['a'] } }],
      }),
    ).toStrictEqual({ promptTokens: 10, completionTokens: 20 });
  });
});
