import type { SpendGuardOptions } from './config.js';
import { SpendGuard } from './guard.js';

/** Options of every framework adapter's `spendGuard()`: the core's, with `storage` optional. */
export type AdapterOptions = Omit<SpendGuardOptions, 'storage'> & {
  /**
   * Where keys, budgets and spend live.
   * @default sqliteStorage() from @spendguard/storage-sqlite: `./spendguard.db` or `SPENDGUARD_DB`
   * @example storage: sqliteStorage({ path: './spend.db' })
   */
  storage?: SpendGuardOptions['storage'];
};

/**
 * What an adapter's `spendGuard()` makes of its argument, validated at once: an existing guard as it
 * is (so several mounts share one, with its body limits), or a new one on `defaultStorage()` when no
 * storage is given.
 */
export function resolveAdapterOptions(
  options: AdapterOptions | SpendGuard,
  defaultStorage: () => SpendGuardOptions['storage'],
): { guard: SpendGuard } {
  if (options instanceof SpendGuard) return { guard: options };
  const { storage, ...rest } = options ?? {};
  return { guard: new SpendGuard({ ...rest, storage: storage ?? defaultStorage() }) };
}
