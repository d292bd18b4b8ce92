import { readFileSync } from 'node:fs';
import { describe, expect, it, vi } from 'vitest';
import { nanoToUsd, usdToNano } from '../src/money.js';
import { PriceBook } from '../src/pricing/price-book.js';

/** `pnpm test:mutation` runs these tests once per mutant: it leaves out the slow whole-process ones. */
const IN_MUTATION_RUN = process.env.STRYKER_GROUP !== undefined;

// Expected values are worked out by hand from ../shared/data/model_prices_and_context_window.json
// (2026-07-24); each comment shows the sum in USD.

describe('money', () => {
  it('converts USD to integer nano-dollars and back', () => {
    expect(usdToNano(0.0075)).toBe(7_500_000);
    expect(usdToNano(0.000405)).toBe(405_000);
    expect(usdToNano(50.01)).toBe(50_010_000_000);
    expect(usdToNano(1e-10)).toBe(0);
    expect(nanoToUsd(7_500_000)).toBe(0.0075);
    expect(nanoToUsd(15_400_000)).toBe(0.0154);
  });
});

describe('PriceBook.cost: worked examples from the data README', () => {
  const prices = new PriceBook();

  it('gpt-4o, 1000 prompt / 500 completion = 0.0075 USD', () => {
    // 1000 x 2.5e-6 + 500 x 1e-5
    expect(prices.cost('gpt-4o', { promptTokens: 1000, completionTokens: 500 })).toEqual({
      inputNano: 2_500_000,
      cachedInputNano: 0,
      cacheWriteNano: 0,
      outputNano: 5_000_000,
      reasoningNano: 0,
      audioNano: 0,
      imageNano: 0,
      requestNano: 0,
      webSearchNano: 0,
      totalNano: 7_500_000,
      priced: true,
    });
  });

  it('gpt-4o-mini, 1000 prompt of which 600 cached / 500 completion = 0.000405 USD', () => {
    // 400 x 1.5e-7 + 600 x 7.5e-8 + 500 x 6e-7
    const cost = prices.cost('gpt-4o-mini', {
      promptTokens: 1000,
      cachedPromptTokens: 600,
      completionTokens: 500,
    });
    expect(cost).toMatchObject({
      inputNano: 60_000,
      cachedInputNano: 45_000,
      cacheWriteNano: 0,
      outputNano: 300_000,
      reasoningNano: 0,
      totalNano: 405_000,
      priced: true,
    });
    expect(nanoToUsd(cost.totalNano)).toBe(0.000405);
  });

  it('o4-mini, 2000 prompt / 3000 completion of which 2500 reasoning = 0.0154 USD (reasoning at the output price)', () => {
    // 2000 x 1.1e-6 + 3000 x 4.4e-6
    const cost = prices.cost('o4-mini', {
      promptTokens: 2000,
      completionTokens: 3000,
      reasoningTokens: 2500,
    });
    // 500 visible x 4.4e-6 = 0.0022, 2500 reasoning x 4.4e-6 = 0.011
    expect(cost).toMatchObject({
      inputNano: 2_200_000,
      outputNano: 2_200_000,
      reasoningNano: 11_000_000,
      totalNano: 15_400_000,
    });
    expect(nanoToUsd(cost.totalNano)).toBe(0.0154);
  });
});

describe('PriceBook.cost: other providers', () => {
  const prices = new PriceBook();

  it('claude-sonnet-4-5 with cache reads and writes (anthropic)', () => {
    // 2000 x 3e-6 + 6000 x 3e-7 + 2000 x 3.75e-6 + 1000 x 1.5e-5 = 0.006 + 0.0018 + 0.0075 + 0.015 = 0.0303
    const usage = {
      promptTokens: 10_000,
      cachedPromptTokens: 6000,
      cacheWriteTokens: 2000,
      completionTokens: 1000,
    };
    expect(prices.cost('claude-sonnet-4-5', usage)).toMatchObject({
      inputNano: 6_000_000,
      cachedInputNano: 1_800_000,
      cacheWriteNano: 7_500_000,
      outputNano: 15_000_000,
      totalNano: 30_300_000,
      priced: true,
    });
    expect(prices.cost('anthropic/claude-sonnet-4-5', usage).totalNano).toBe(30_300_000);
  });

  it('claude-haiku-4-5 with cache reads and writes', () => {
    // 1000 x 1e-6 + 3000 x 1e-7 + 1000 x 1.25e-6 + 300 x 5e-6 = 0.001 + 0.0003 + 0.00125 + 0.0015 = 0.00405
    const cost = prices.cost('claude-haiku-4-5', {
      promptTokens: 5000,
      cachedPromptTokens: 3000,
      cacheWriteTokens: 1000,
      completionTokens: 300,
    });
    expect(cost.totalNano).toBe(4_050_000);
    expect(cost.cacheWriteNano).toBe(1_250_000);
  });

  it('gemini/gemini-2.5-pro with cached tokens (gemini)', () => {
    // 3000 x 1.25e-6 + 1000 x 1.25e-7 + 2000 x 1e-5 = 0.00375 + 0.000125 + 0.02 = 0.023875
    const cost = prices.cost('gemini/gemini-2.5-pro', {
      promptTokens: 4000,
      cachedPromptTokens: 1000,
      completionTokens: 2000,
    });
    expect(cost).toMatchObject({ inputNano: 3_750_000, cachedInputNano: 125_000, outputNano: 20_000_000 });
    expect(cost.totalNano).toBe(23_875_000);
  });

  it('gemini-2.5-flash prices reasoning at output_cost_per_reasoning_token (vertex)', () => {
    // 800 x 3e-7 + 200 x 3e-8 + 500 x 2.5e-6 + 300 x 2.5e-6 = 0.00024 + 0.000006 + 0.002 = 0.002246
    const cost = prices.cost('gemini-2.5-flash', {
      promptTokens: 1000,
      cachedPromptTokens: 200,
      completionTokens: 800,
      reasoningTokens: 300,
    });
    expect(cost.totalNano).toBe(2_246_000);
  });

  it('dashscope/qwen-turbo prices reasoning tokens above output tokens', () => {
    // 1000 x 5e-8 + 400 x 2e-7 + 600 x 5e-7 = 0.00005 + 0.00008 + 0.0003 = 0.00043
    const cost = prices.cost('dashscope/qwen-turbo', {
      promptTokens: 1000,
      completionTokens: 1000,
      reasoningTokens: 600,
    });
    expect(cost).toMatchObject({
      inputNano: 50_000,
      outputNano: 80_000,
      reasoningNano: 300_000,
      totalNano: 430_000,
    });
  });

  it('mistral/mistral-large-latest, cached tokens at the input price when there is no cache price', () => {
    // 1234 x 5e-7 + 567 x 1.5e-6 = 0.000617 + 0.0008505 = 0.0014675
    expect(
      prices.cost('mistral/mistral-large-latest', { promptTokens: 1234, completionTokens: 567 }).totalNano,
    ).toBe(1_467_500);
    // 600 x 5e-7 + 400 x 5e-7 (no cache_read_input_token_cost)
    expect(
      prices.cost('mistral/mistral-large-latest', {
        promptTokens: 1000,
        cachedPromptTokens: 400,
        completionTokens: 0,
      }),
    ).toMatchObject({ inputNano: 300_000, cachedInputNano: 200_000, totalNano: 500_000 });
  });

  it('deepseek/deepseek-chat: an explicit cache-write price of 0 is used, not the input price', () => {
    // 400 x 2.8e-7 + 500 x 2.8e-8 + 100 x 0 + 100 x 4.2e-7 = 0.000112 + 0.000014 + 0.000042 = 0.000168
    const cost = prices.cost('deepseek/deepseek-chat', {
      promptTokens: 1000,
      cachedPromptTokens: 500,
      cacheWriteTokens: 100,
      completionTokens: 100,
    });
    expect(cost).toMatchObject({
      inputNano: 112_000,
      cachedInputNano: 14_000,
      cacheWriteNano: 0,
      outputNano: 42_000,
    });
    expect(cost.totalNano).toBe(168_000);
  });

  it('groq/llama-3.3-70b-versatile', () => {
    // 1000 x 5.9e-7 + 1000 x 7.9e-7 = 0.00138
    expect(
      prices.cost('groq/llama-3.3-70b-versatile', { promptTokens: 1000, completionTokens: 1000 }).totalNano,
    ).toBe(1_380_000);
  });

  it('text-embedding-3-small (prompt only)', () => {
    // 12345 x 2e-8 = 0.0002469
    expect(
      prices.cost('text-embedding-3-small', { promptTokens: 12_345, completionTokens: 0 }).totalNano,
    ).toBe(246_900);
  });
});

describe('PriceBook.resolve', () => {
  it('returns integer pico-dollar prices and the table facts', () => {
    expect(new PriceBook().resolve('gpt-4o')).toEqual({
      model: 'gpt-4o',
      provider: 'openai',
      mode: 'chat',
      inputPico: 2_500_000,
      outputPico: 10_000_000,
      cacheReadPico: 1_250_000,
      maxOutputTokens: 16_384,
      maxInputTokens: 128_000,
      // the dearest prompt and completion token: priority input 4.25e-6, priority output 1.7e-5
      maxInputPico: 4_250_000,
      maxOutputPico: 17_000_000,
    });
    expect(new PriceBook().resolve('claude-sonnet-4-5')).toMatchObject({
      cacheReadPico: 300_000,
      cacheWritePico: 3_750_000,
    });
    expect(new PriceBook().resolve('gemini-2.5-flash')?.reasoningPico).toBe(2_500_000);
  });

  it('strips provider prefixes, one segment at a time, when the full name has no price', () => {
    const prices = new PriceBook();
    expect(prices.resolve('openai/gpt-4o')).toMatchObject({ model: 'gpt-4o', provider: 'openai' });
    expect(prices.resolve('some-gateway/openai/gpt-4o')).toMatchObject({ model: 'gpt-4o' });
    // A prefixed name that the table knows keeps its own entry.
    expect(prices.resolve('openrouter/openai/gpt-4o')).toMatchObject({
      model: 'openrouter/openai/gpt-4o',
      provider: 'openrouter',
    });
    expect(prices.resolve('vertex_ai/gemini-2.5-pro')).toMatchObject({
      model: 'gemini-2.5-pro',
      provider: 'vertex_ai-language-models',
    });
  });

  it('falls back to a case-insensitive match', () => {
    const prices = new PriceBook();
    expect(prices.resolve('GPT-4o')?.model).toBe('gpt-4o');
    expect(prices.resolve('OpenAI/GPT-4O-mini')?.model).toBe('gpt-4o-mini');
    expect(prices.resolve('together_ai/baai/bge-base-en-v1.5')?.inputPico).toBe(8000);
  });

  it('caches lookups: the same frozen object comes back', () => {
    const prices = new PriceBook();
    const first = prices.resolve('openai/gpt-4o');
    expect(prices.resolve('openai/gpt-4o')).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
  });

  it('never treats the documentation entries as models', () => {
    const prices = new PriceBook();
    expect(prices.resolve('sample_spec')).toBeUndefined();
    expect(prices.resolve('fallback_generalizations')).toBeUndefined();
    const table = {
      sample_spec: { input_cost_per_token: 0, output_cost_per_token: 0 },
      'real-model': { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 },
    };
    expect(new PriceBook({ table }).resolve('sample_spec')).toBeUndefined();
    // A table of documentation only prices nothing: refused rather than silently pricing every call at 0.
    expect(() => new PriceBook({ table: { sample_spec: table.sample_spec } })).toThrow(/prices no model/);
  });
});

describe('PriceBook: unpriced models', () => {
  it('costs 0, priced:false, and reports each name once per PriceBook', () => {
    const onUnpriced = vi.fn();
    const prices = new PriceBook({ onUnpriced });
    const usage = { promptTokens: 1000, completionTokens: 500 };
    const zero = {
      inputNano: 0,
      cachedInputNano: 0,
      cacheWriteNano: 0,
      outputNano: 0,
      reasoningNano: 0,
      audioNano: 0,
      imageNano: 0,
      requestNano: 0,
      webSearchNano: 0,
      totalNano: 0,
      priced: false,
    };
    expect(prices.cost('no-such-model', usage)).toEqual(zero);
    expect(prices.cost('no-such-model', usage)).toEqual(zero);
    expect(onUnpriced).toHaveBeenCalledTimes(1);
    expect(onUnpriced).toHaveBeenCalledWith('no-such-model');
    prices.cost('another/unknown', usage);
    expect(onUnpriced).toHaveBeenCalledTimes(2);
    expect(onUnpriced).toHaveBeenLastCalledWith('another/unknown');

    const other = vi.fn();
    new PriceBook({ onUnpriced: other }).cost('no-such-model', usage);
    expect(other).toHaveBeenCalledTimes(1);
  });

  it('resolve() alone does not report', () => {
    const onUnpriced = vi.fn();
    expect(new PriceBook({ onUnpriced }).resolve('no-such-model')).toBeUndefined();
    expect(onUnpriced).not.toHaveBeenCalled();
  });
});

describe('PriceBook: overrides and tables', () => {
  it('an override replaces the given fields and keeps the rest of the entry', () => {
    const prices = new PriceBook({ overrides: { 'gpt-4o': { input_cost_per_token: 0.000005 } } });
    // 1000 x 5e-6 + 500 x 1e-5 = 0.01
    expect(prices.cost('gpt-4o', { promptTokens: 1000, completionTokens: 500 })).toMatchObject({
      inputNano: 5_000_000,
      outputNano: 5_000_000,
      totalNano: 10_000_000,
    });
    expect(prices.resolve('gpt-4o')).toMatchObject({ cacheReadPico: 1_250_000, provider: 'openai' });
    // Names resolve like model names do.
    expect(prices.cost('openai/gpt-4o', { promptTokens: 1000, completionTokens: 0 }).totalNano).toBe(
      5_000_000,
    );
    // Other PriceBooks are unaffected.
    expect(new PriceBook().cost('gpt-4o', { promptTokens: 1000, completionTokens: 500 }).totalNano).toBe(
      7_500_000,
    );
  });

  it('an override can add a model the table lacks', () => {
    const prices = new PriceBook({
      overrides: { 'My-Finetune': { input_cost_per_token: 0.000003, output_cost_per_token: 0.000012 } },
    });
    // 100 x 3e-6 + 10 x 1.2e-5 = 0.00042
    expect(prices.cost('my-finetune', { promptTokens: 100, completionTokens: 10 }).totalNano).toBe(420_000);
    expect(prices.resolve('My-Finetune')?.provider).toBeUndefined();
  });

  it('rejects invalid overrides with a message that says how to fix them', () => {
    expect(() => new PriceBook({ overrides: { 'gpt-4o': { input_cost_per_token: -1 } } })).toThrow(
      /overrides\["gpt-4o"\]\.input_cost_per_token must be a non-negative finite number \(USD per token/,
    );
    expect(
      () => new PriceBook({ overrides: { x: { output_cost_per_token: '0.00001' as unknown as number } } }),
    ).toThrow(/output_cost_per_token/);
    expect(() => new PriceBook({ overrides: { x: null as never } })).toThrow(
      /must be an object in LiteLLM's format/,
    );
  });

  it('a LiteLLM-format table replaces the bundled snapshot', () => {
    const prices = new PriceBook({
      table: {
        'my-model': {
          input_cost_per_token: 0.000001,
          output_cost_per_token: 0.000002,
          litellm_provider: 'custom',
        },
        'Bad-Entry': 'not an object',
      },
    });
    expect(prices.cost('my-model', { promptTokens: 1000, completionTokens: 1000 }).totalNano).toBe(3_000_000);
    expect(prices.resolve('MY-MODEL')?.provider).toBe('custom');
    expect(prices.resolve('gpt-4o')).toBeUndefined();
    expect(prices.resolve('bad-entry')).toBeUndefined();
  });
});

describe('PriceBook.cost: arithmetic', () => {
  it('rounds each line to the nano-dollar, and the total once from the pico-dollar sum', () => {
    const prices = new PriceBook({
      overrides: { tiny: { input_cost_per_token: 5e-10, output_cost_per_token: 5e-10 } },
    });
    // 500 pico + 500 pico: each line rounds to 1 nano, the 1000 pico total to 1 nano.
    expect(prices.cost('tiny', { promptTokens: 1, completionTokens: 1 })).toEqual({
      inputNano: 1,
      cachedInputNano: 0,
      cacheWriteNano: 0,
      outputNano: 1,
      reasoningNano: 0,
      audioNano: 0,
      imageNano: 0,
      requestNano: 0,
      webSearchNano: 0,
      totalNano: 1,
      priced: true,
    });
  });

  it('stays exact past 2^53 pico-dollars', () => {
    const prices = new PriceBook({
      overrides: { huge: { input_cost_per_token: 0.123456789012, output_cost_per_token: 0 } },
    });
    // 100_003 x 123_456_789_012 pico = 12_346_049_271_567_036 pico
    expect(prices.cost('huge', { promptTokens: 100_003, completionTokens: 0 }).totalNano).toBe(
      12_346_049_271_567,
    );
  });

  it('charges reported cache and reasoning tokens in full, even beyond the totals', () => {
    const prices = new PriceBook();
    // 300 x 7.5e-8 (cached, more than the prompt) + 0 uncached; 50 reasoning x 6e-7, 0 visible output
    expect(
      prices.cost('gpt-4o-mini', {
        promptTokens: 100,
        cachedPromptTokens: 300,
        completionTokens: 10,
        reasoningTokens: 50,
      }),
    ).toMatchObject({
      inputNano: 0,
      cachedInputNano: 22_500,
      outputNano: 0,
      reasoningNano: 30_000,
      totalNano: 52_500,
    });
  });

  it('reads bad token counts as 0 and fractions upward', () => {
    const prices = new PriceBook();
    expect(prices.cost('gpt-4o', { promptTokens: -5, completionTokens: Number.NaN }).totalNano).toBe(0);
    // 2 x 2.5e-6
    expect(prices.cost('gpt-4o', { promptTokens: 1.2, completionTokens: 0 }).totalNano).toBe(5000);
  });
});

// LiteLLM's price table as the snapshot was built from it (a copy of ../shared/data's, MIT licensed).
const sourcePath = new URL('./fixtures/model_prices_and_context_window.json', import.meta.url);

describe('the bundled snapshot', () => {
  const source = JSON.parse(readFileSync(sourcePath, 'utf8')) as Record<string, Record<string, unknown>>;

  // Left out of `pnpm test:mutation` (STRYKER_GROUP set): seconds for every mutant it would cover.
  it.skipIf(IN_MUTATION_RUN)('prices every model exactly as the source table does, under every rule', () => {
    const fromSnapshot = new PriceBook();
    const fromSource = new PriceBook({ table: source });
    // A call that touches every line of the bill, small and past every prompt-size tier.
    const usages = [1000, 300_000].map((prompt) => ({
      promptTokens: prompt,
      cachedPromptTokens: 400,
      cacheWriteTokens: 200,
      cacheWrite1hTokens: 50,
      audioPromptTokens: 30,
      imagePromptTokens: 20,
      completionTokens: 900,
      reasoningTokens: 300,
      audioCompletionTokens: 40,
      imageCompletionTokens: 10,
      webSearchRequests: 1,
    }));
    const optionSets = [
      undefined,
      { serviceTier: 'priority' },
      { serviceTier: 'flex' },
      { batch: true },
      { searchContextSize: 'high' as const },
    ];
    let priced = 0;
    for (const [name, entry] of Object.entries(source)) {
      if (name === 'sample_spec' || name === 'fallback_generalizations') continue;
      const price = fromSnapshot.resolve(name);
      expect(price, name).toEqual(fromSource.resolve(name));
      if (!price) continue;
      if (price.model === name) priced++;
      // Only an entry with no price at all (github_copilot/gemini-2.5-pro) is priced as another name.
      else
        expect(
          Object.keys(entry).filter((field) => field.includes('cost')),
          name,
        ).toEqual([]);
      for (const usage of usages) {
        for (const options of optionSets) {
          expect(fromSnapshot.cost(name, usage, options), name).toEqual(
            fromSource.cost(name, usage, options),
          );
        }
      }
    }
    // Every entry with a per-token price (2521 at the top level, 18 in token `tiered_pricing` lists) or a
    // per-call price; the others are priced per image, second, character or query.
    expect(priced).toBe(2539);
  });

  it('keeps every entry with a price of any kind', () => {
    const snapshot = JSON.parse(
      readFileSync(new URL('../src/pricing/snapshot.json', import.meta.url), 'utf8'),
    ) as { models: Record<string, unknown> };
    const withAnyPrice = Object.entries(source).filter(
      ([name, entry]) =>
        name !== 'sample_spec' &&
        Object.keys(entry).some((field) => field.includes('cost') || field === 'tiered_pricing'),
    );
    expect(Object.keys(snapshot.models).sort()).toEqual(withAnyPrice.map(([name]) => name).sort());
  });
});
