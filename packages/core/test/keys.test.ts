import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateVirtualKey, hashVirtualKey } from '../src/keys.js';

describe('virtual keys', () => {
  it('hashes a key to the SHA-256 hex of its UTF-8 bytes', () => {
    for (const key of [generateVirtualKey(), 'sk-master', 'sk-ünïcødé-🔑', '']) {
      expect(hashVirtualKey(key)).toBe(createHash('sha256').update(key, 'utf8').digest('hex'));
    }
  });

  it('generates sk- keys with 192 random bits, never the same twice', () => {
    const keys = Array.from({ length: 200 }, generateVirtualKey);
    for (const key of keys) expect(key).toMatch(/^sk-[A-Za-z0-9_-]{32}$/);
    expect(new Set(keys).size).toBe(keys.length);
  });
});
