// What the modules around the pipeline need of the guard, as narrow interfaces (types only). The
// management API, the typed queries and the budget alerts depend on these, never on the `SpendGuard`
// class, so that `guard.ts` can import them without an import cycle (`pnpm check:cycles`).
// The dashboard's view (`DashboardHost`) lives in dashboard/dashboard.ts, as it names the queries'
// and the management API's own types; the observers' (`ObservedGuard`) in observability/observers.ts.
import type { ResolvedOptions } from './config.js';
import type { GuardLogger } from './guard-logger.js';
import type { GuardResponse, KeyContext } from './pipeline/call-types.js';
import type { PriceBook } from './pricing/price-book.js';
import type { SpendStorage } from './storage/storage-contract.js';
import type { StorageGate } from './storage/storage-gate.js';

/** Reads the store once the settlements already handed over are written (read your writes). */
export interface StoreReader {
  now(): Date;
  read<T>(what: string, fn: (storage: SpendStorage) => Promise<T>): Promise<T>;
}

/** What the budget alerts need of the guard: claims in storage, and names for a key's payload. */
export interface AlertsHost {
  logger: GuardLogger;
  gate: Pick<StorageGate, 'call'>;
  describeKey(tokenHash: string): Promise<Pick<KeyContext, 'key' | 'user' | 'team'> | null>;
}

/** What LiteLLM's management API needs of the guard: storage, key checks and cache invalidation. */
export interface ManagementHost extends StoreReader {
  options: Pick<
    ResolvedOptions,
    'masterKey' | 'globalBudget' | 'defaultEndUserBudgetId' | 'models' | 'modelAliases' | 'serveModelList'
  >;
  prices: PriceBook;
  gate: Pick<StorageGate, 'call'>;
  /** Any error as the JSON response the adapters send. */
  errorResponse(error: unknown): GuardResponse;
  isMasterKey(presented: string | null): boolean;
  resolveKey(secretHash: string): Promise<KeyContext | null>;
  assertKeyUsable(ctx: KeyContext, now: Date): void;
  keyAllowsModel(model: string, keyModels: string[], teamModels: string[]): boolean;
  teamAllowsModel(model: string, teamModels: string[]): boolean;
  invalidateKey(tokenHash: string): void;
  invalidateAllKeys(): void;
  invalidateCustomer(endUserId: string): void;
  invalidateAllCustomers(): void;
}
