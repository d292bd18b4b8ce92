import { MemoryStorage } from '@spendguard/core';
import { memoryRawReader, runStorageConformance } from '@spendguard/core/conformance';

runStorageConformance({
  name: 'memory',
  create: async () => new MemoryStorage(),
  raw: memoryRawReader,
});
