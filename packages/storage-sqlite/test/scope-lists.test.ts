import type { BudgetState, ScopeRef } from '@spendguard/core';
import { describe, expect, it } from 'vitest';
import { parseScopes, scopesJson } from '../src/scope-lists.js';

const state = (kind: ScopeRef['kind'], id: string): BudgetState => ({
  scope: { kind, id },
  maxBudgetNano: null,
  budgetDuration: null,
  budgetResetAt: null,
  spendNano: 0,
  reservedNano: 0,
  softBudgetNano: null,
});

describe('reservation scope lists', () => {
  it('stores each list as its JSON, found again by content and order, never by identity', () => {
    const a = [state('key', 'k1'), state('user', 'u1'), state('team', 't1')];
    expect(scopesJson(a)).toBe(
      '[{"kind":"key","id":"k1"},{"kind":"user","id":"u1"},{"kind":"team","id":"t1"}]',
    );
    // Equal content from other objects: the same string; another order or id: its own.
    expect(scopesJson([state('key', 'k1'), state('user', 'u1'), state('team', 't1')])).toBe(scopesJson(a));
    expect(scopesJson([state('user', 'u1'), state('key', 'k1'), state('team', 't1')])).toBe(
      '[{"kind":"user","id":"u1"},{"kind":"key","id":"k1"},{"kind":"team","id":"t1"}]',
    );
    // Ids that would run together stay apart, whatever characters they hold.
    expect(scopesJson([state('key', 'ab'), state('user', 'c')])).toBe(
      '[{"kind":"key","id":"ab"},{"kind":"user","id":"c"}]',
    );
    expect(scopesJson([state('key', 'a'), state('user', 'bc')])).toBe(
      '[{"kind":"key","id":"a"},{"kind":"user","id":"bc"}]',
    );
    expect(scopesJson([state('key', 'a'), state('user', 'x')])).toBe(
      '[{"kind":"key","id":"a"},{"kind":"user","id":"x"}]',
    );
    for (const id of ['a\u0000user\u0000x\u0001', 'a\u0001user\u0000x', 'a 1 user 1 x', 'a user 1 x']) {
      expect(JSON.parse(scopesJson([state('key', id)]))).toEqual([{ kind: 'key', id }]);
    }
  });

  it('reads a list back as a fresh array each time, whose scope refs cannot be changed', () => {
    const json = '[{"kind":"key","id":"k1"},{"kind":"team","id":"t1"}]';
    const first: (ScopeRef | null)[] = parseScopes(json);
    first[0] = null; // settle marks the scopes it has released this way
    expect(parseScopes(json)).toEqual([
      { kind: 'key', id: 'k1' },
      { kind: 'team', id: 't1' },
    ]);
    expect(() => {
      (parseScopes(json)[0] as { id: string }).id = 'other';
    }).toThrow(TypeError);
  });

  it('stays right past its bound, for lists it has dropped and lists it has kept', () => {
    for (let i = 0; i < 3000; i++) {
      const json = scopesJson([state('key', `k${i}`), state('team', `t${i % 7}`)]);
      expect(parseScopes(json)).toEqual([
        { kind: 'key', id: `k${i}` },
        { kind: 'team', id: `t${i % 7}` },
      ]);
    }
    expect(scopesJson([state('key', 'k5')])).toBe('[{"kind":"key","id":"k5"}]');
  });
});
