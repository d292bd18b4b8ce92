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
  /**
   * Largest request body the guard reads, in bytes; larger ones get a 413.
   * @default 10485760 (10 MiB)
   * @example bodyLimitBytes: 2 * 1024 * 1024
   */
  bodyLimitBytes?: number;
};

const DEFAULT_BODY_LIMIT = 10 * 1024 * 1024;

/**
 * What an adapter's `spendGuard()` makes of its argument, validated at once: an existing guard as it
 * is (so several mounts share one), or a new one on `defaultStorage()` when no storage is given.
 */
export function resolveAdapterOptions(
  options: AdapterOptions | SpendGuard,
  defaultStorage: () => SpendGuardOptions['storage'],
): { guard: SpendGuard; bodyLimitBytes: number } {
  if (options instanceof SpendGuard) return { guard: options, bodyLimitBytes: DEFAULT_BODY_LIMIT };
  const { bodyLimitBytes = DEFAULT_BODY_LIMIT, storage, ...rest } = options ?? {};
  if (!Number.isSafeInteger(bodyLimitBytes) || bodyLimitBytes <= 0) {
    throw new TypeError(
      `spendguard: invalid options\n  - bodyLimitBytes: must be a positive whole number of bytes (got ${String(bodyLimitBytes)}), e.g. 10 * 1024 * 1024`,
    );
  }
  return { guard: new SpendGuard({ ...rest, storage: storage ?? defaultStorage() }), bodyLimitBytes };
}
