import { describe, expect, it } from 'vitest';
import { candidateNames, withoutDateSuffix } from '../src/pricing/model-names.js';
import { PriceBook } from '../src/pricing/price-book.js';

describe('model names', () => {
  it('strips a trailing release date in the shapes providers use', () => {
    expect(withoutDateSuffix('gpt-4o-2031-01-01')).toBe('gpt-4o');
    expect(withoutDateSuffix('claude-sonnet-4-5-20990101')).toBe('claude-sonnet-4-5');
    expect(withoutDateSuffix('vertex_ai/claude-sonnet-4-5@20990101')).toBe('vertex_ai/claude-sonnet-4-5');
    expect(withoutDateSuffix('gpt-4o')).toBeUndefined();
    expect(withoutDateSuffix('gpt-4-0613')).toBeUndefined(); // not a date we can tell from a version
    expect(withoutDateSuffix('openai/-2031-01-01')).toBeUndefined();
  });

  it('tries the name, its prefix-stripped forms, then the same undated', () => {
    expect(candidateNames('openrouter/openai/gpt-4o-2031-01-01')).toEqual([
      'openrouter/openai/gpt-4o-2031-01-01',
      'openai/gpt-4o-2031-01-01',
      'gpt-4o-2031-01-01',
      'openrouter/openai/gpt-4o',
      'openai/gpt-4o',
      'gpt-4o',
    ]);
  });
});

describe('PriceBook name resolution', () => {
  const prices = new PriceBook();

  it('a dated name the table knows keeps its own entry; an unknown one falls back', () => {
    expect(prices.resolve('gpt-4o-2024-08-06')?.model).toBe('gpt-4o-2024-08-06');
    expect(prices.resolve('gpt-4o-2031-01-01')?.model).toBe('gpt-4o');
    expect(prices.resolve('openai/gpt-4o-2031-01-01')?.model).toBe('gpt-4o');
    expect(prices.resolve('claude-sonnet-4-5-20990101')?.model).toBe('claude-sonnet-4-5');
    expect(prices.resolve('no-such-model-2031-01-01')).toBeUndefined();
  });

  it('an entry the table prices only per image is unpriced, not priced as a look-alike', () => {
    // azure/low/1024-x-1024/gpt-image-1 is priced per pixel; gpt-image-1 per token.
    expect(prices.resolve('azure/low/1024-x-1024/gpt-image-1')).toBeUndefined();
    expect(prices.resolve('gpt-image-1')).toBeDefined();
  });

  it('an entry without any price is read as absent, as in the snapshot', () => {
    const table = {
      'gpt-4o': { input_cost_per_token: 2.5e-6, output_cost_per_token: 1e-5 },
      'copilot/gpt-4o': { litellm_provider: 'copilot', mode: 'chat' },
    };
    expect(new PriceBook({ table }).resolve('copilot/gpt-4o')?.model).toBe('gpt-4o');
  });

  it('a tiered-pricing entry resolves with its first tier as the base price', () => {
    expect(prices.resolve('dashscope/qwen3-coder-plus')).toMatchObject({
      inputPico: 1_000_000,
      outputPico: 5_000_000,
      cacheReadPico: 100_000,
      // dearest tier: 6e-6 input, 6e-5 output
      maxInputPico: 6_000_000,
      maxOutputPico: 60_000_000,
    });
  });

  it('exposes upper bounds over tiers, service tiers and cache writes', () => {
    expect(prices.resolve('claude-sonnet-4-5')).toMatchObject({
      cacheWrite1hPico: 6_000_000,
      // 1-hour write above 200k: 1.2e-5; output above 200k: 2.25e-5
      maxInputPico: 12_000_000,
      maxOutputPico: 22_500_000,
    });
    expect(prices.resolve('perplexity/pplx-70b-online')?.requestPico).toBe(5_000_000_000);
  });
});

describe('PriceBook aliases', () => {
  it('resolve case-insensitively, through prefixes, and chain', () => {
    const prices = new PriceBook({
      aliases: {
        'My-Deployment': 'gpt-4o',
        fast: 'my-deployment',
        'house/claude': 'claude-haiku-4-5-20990101',
      },
    });
    expect(prices.resolve('my-deployment')?.model).toBe('gpt-4o');
    expect(prices.resolve('azure/my-deployment')?.model).toBe('gpt-4o');
    expect(prices.resolve('fast')?.model).toBe('gpt-4o');
    expect(prices.resolve('house/claude')?.model).toBe('claude-haiku-4-5');
  });

  it('an alias to an unknown model is unpriced', () => {
    expect(new PriceBook({ aliases: { x: 'no-such-model' } }).resolve('x')).toBeUndefined();
  });

  it('are validated with messages that say how to fix them', () => {
    expect(() => new PriceBook({ aliases: { a: 'b', b: 'A' } })).toThrow(/aliases form a cycle/);
    expect(() => new PriceBook({ aliases: { a: '' } })).toThrow(
      /aliases\["a"\] must be the name of a priced model/,
    );
    expect(
      () =>
        new PriceBook({
          aliases: { mine: 'gpt-4o' },
          overrides: { mine: { input_cost_per_token: 1e-6 } },
        }),
    ).toThrow(/both an alias and an override/);
  });
});

describe('PriceBook overrides in LiteLLM format', () => {
  it('accept any LiteLLM price field, tiers included', () => {
    const prices = new PriceBook({
      overrides: {
        'house-tiered': {
          litellm_provider: 'house',
          tiered_pricing: [
            { range: [0, 1000], input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 },
            { range: [1000, 10_000], input_cost_per_token: 2e-6, output_cost_per_token: 4e-6 },
          ],
        },
        'gpt-4o': { input_cost_per_token_priority: 1e-5 },
      },
    });
    // 1001 x 2e-6 + 10 x 4e-6 = 0.002002 + 0.00004
    expect(prices.cost('house-tiered', { promptTokens: 1001, completionTokens: 10 }).totalNano).toBe(
      2_042_000,
    );
    // 1000 x 1e-5 (override) + 500 x 1.7e-5 (table's priority output)
    expect(
      prices.cost('gpt-4o', { promptTokens: 1000, completionTokens: 500 }, { serviceTier: 'priority' })
        .totalNano,
    ).toBe(18_500_000);
  });

  it('reject prices of the wrong type, naming the field', () => {
    expect(() => new PriceBook({ overrides: { x: { input_cost_per_token_priority: -1 } } })).toThrow(
      /overrides\["x"\]\.input_cost_per_token_priority must be a non-negative finite number/,
    );
    expect(
      () => new PriceBook({ overrides: { x: { tiered_pricing: [{ input_cost_per_token: 1 }] as never } } }),
    ).toThrow(/tiered_pricing must be a list like/);
    expect(
      () =>
        new PriceBook({
          overrides: { x: { search_context_cost_per_query: { search_context_size_low: 'a' as never } } },
        }),
    ).toThrow(/search_context_cost_per_query\.search_context_size_low/);
  });
});
