import { MemoryStorage } from '../storage/memory-storage.js';
import { rateBucketKey } from '../storage/rate-limit-rules.js';
import type { SpendStorage } from '../storage/storage-contract.js';
import type { RawStorageReader } from './storage-conformance.js';

/** Raw reader over MemoryStorage's private maps, for the conformance suite. */
export function memoryRawReader(storage: SpendStorage): RawStorageReader {
  if (!(storage instanceof MemoryStorage)) throw new Error('not a MemoryStorage');
  // biome-ignore lint/suspicious/noExplicitAny: reading private state is the point of a raw reader
  const inner = storage as any;
  return {
    async budgetCounter(scope) {
      const s = inner.budgets.get(`${scope.kind}:${scope.id}`);
      return s ? { spendNano: s.spendNano, reservedNano: s.reservedNano } : null;
    },
    async spendLogCount() {
      return inner.logs.size;
    },
    async openReservations() {
      return inner.reservations.size;
    },
    async rateCounter(bucket) {
      return inner.rateWindows.get(rateBucketKey(bucket))?.used ?? null;
    },
    async rateLeases() {
      let n = 0;
      for (const leases of inner.rateLeases.values()) n += leases.size;
      return n;
    },
    async dashboardSessions() {
      return inner.dashboardSessions.size;
    },
    async dumpText() {
      return JSON.stringify([...inner.keys.values(), ...inner.teams.values(), ...inner.users.values()]);
    },
  };
}
