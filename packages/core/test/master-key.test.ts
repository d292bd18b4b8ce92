import { describe, expect, it } from 'vitest';
import { resolveOptions, weakMasterKey } from '../src/config.js';
import { MemoryStorage } from '../src/storage/memory-storage.js';

function warnings(masterKey: string): string[] {
  const seen: string[] = [];
  const options = resolveOptions({
    storage: new MemoryStorage(),
    masterKey,
    logger: { warn: (m) => seen.push(m), error: () => {} },
  });
  expect(options.masterKey).toBe(masterKey);
  return seen;
}

describe('master key', () => {
  it("takes LiteLLM's docs' sk-1234, with one loud warning naming it as an example value", () => {
    const seen = warnings('sk-1234');
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatch(/^WARNING: the master key is 'sk-1234', an example value from the docs/);
  });

  it('warns of a short key and of none that looks random', () => {
    expect(warnings('sk-abcdefg')[0]).toMatch(/10 characters long: short enough to guess/);
    expect(warnings('sk-7fQ2pLx9Vb3mZr8TnK4wYc6D')).toEqual([]);
    expect(weakMasterKey('SK-MASTER')).toMatch(/example value/);
  });

  it('refuses an empty master key when the guard is created', () => {
    expect(() => resolveOptions({ storage: new MemoryStorage(), masterKey: '' })).toThrow(
      /masterKey: must not be empty/,
    );
  });
});
