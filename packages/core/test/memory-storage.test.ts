import { MemoryStorage } from '@spendguard/core';
import { memoryRawReader, runStorageConformance } from '@spendguard/core/conformance';

runStorageConformance({
  name: 'memory',
  create: async () => new MemoryStorage(),
  raw: memoryRawReader,
  // A hook on the map the counters live in: the write of that scope's counter throws.
  failCounterWrites: async (storage, scope) => {
    const budgets = (storage as unknown as { budgets: Map<string, unknown> }).budgets;
    const set = budgets.set.bind(budgets);
    const failing = `${scope.kind}:${scope.id}`;
    budgets.set = (key, value) => {
      if (key === failing) throw new Error(`injected: the write of counter ${failing} failed`);
      return set(key, value);
    };
  },
});
