import { expect, it } from 'vitest';
import { countTextTokens, isTokenizerLoaded } from '../src/metering/token-count.js';

// Alone in its file (so in a process of its own, where nothing else counted tokens first).
it('does not load tiktoken until a count needs it', () => {
  expect(isTokenizerLoaded()).toBe(false);
  expect(countTextTokens('gpt-4o', '')).toBe(0);
  expect(isTokenizerLoaded()).toBe(false);
  expect(countTextTokens('gpt-4o', 'hello world')).toBe(2);
  expect(isTokenizerLoaded()).toBe(true);
});
