import type { GuardLogger, SpendGuardOptions } from './config.js';
import { SpendGuardError } from './errors.js';
import { SpendGuard } from './guard.js';
import type { SpendStorage } from './storage/storage-contract.js';

/** Options of every framework adapter's `spendGuard()`: the core's, with `storage` optional. */
export type AdapterOptions = Omit<SpendGuardOptions, 'storage'> & {
  /**
   * Where keys, budgets and spend live.
   * @default sqliteStorage() from @spendguard/storage-sqlite (an optional peer dependency: install it
   * for this default): `./spendguard.db` or `SPENDGUARD_DB`
   * @example storage: sqliteStorage({ path: './spend.db' })
   */
  storage?: SpendGuardOptions['storage'];
};

/** The package of the zero-config default storage: an optional peer of the adapters. */
export const DEFAULT_STORAGE_PACKAGE = '@spendguard/storage-sqlite';

/** What an adapter hands over to load the default: `() => import('@spendguard/storage-sqlite')`. */
export type DefaultStorageLoader = () => Promise<{ sqliteStorage(): SpendStorage }>;

/**
 * What an adapter's `spendGuard()` makes of its argument, validated at once: an existing guard as it
 * is (so several mounts share one), or a new one on the default storage when no storage is given.
 */
export function resolveAdapterOptions(
  options: AdapterOptions | SpendGuard,
  loadDefaultStorage: DefaultStorageLoader,
): { guard: SpendGuard } {
  if (options instanceof SpendGuard) return { guard: options };
  const { storage, ...rest } = options ?? {};
  const chosen = storage ?? defaultStorage(loadDefaultStorage, rest.logger ?? console);
  return { guard: new SpendGuard({ ...rest, storage: chosen }) };
}

/**
 * The default storage, loaded on first use. An app on Postgres never installs SQLite, so the package
 * may be missing: then every guarded call answers 503 with a message that names it, and the same
 * message is logged once at start-up (rather than an unhandled rejection that ends the process).
 */
function defaultStorage(load: DefaultStorageLoader, logger: GuardLogger): Promise<SpendStorage> {
  const storage = load().then(
    (m) => m.sqliteStorage(),
    (error: unknown) => {
      throw new SpendGuardError('STORAGE_UNAVAILABLE', defaultStorageProblem(error), { cause: error });
    },
  );
  storage.catch((error: Error) => logger.error(error.message));
  return storage;
}

function defaultStorageProblem(error: unknown): string {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  const missing =
    (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
    typeof message === 'string' &&
    message.includes(DEFAULT_STORAGE_PACKAGE);
  return missing
    ? `spendguard: no \`storage\` option was given and ${DEFAULT_STORAGE_PACKAGE} (the embedded default) is not ` +
        `installed. Install it (npm install ${DEFAULT_STORAGE_PACKAGE}), or pass a storage, e.g. ` +
        '`storage: pgStorage({ connectionString: process.env.DATABASE_URL })` from @spendguard/storage-pg.'
    : `spendguard: the default storage ${DEFAULT_STORAGE_PACKAGE} failed to load: ${String(message ?? error)}`;
}
