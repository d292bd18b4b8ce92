/**
 * `@spendguard/core`: what an app author uses. Adapter authors import from `@spendguard/core/adapter`,
 * storage authors from `@spendguard/core/storage` (and test with `@spendguard/core/conformance`); the
 * simulated provider is `@spendguard/core/testing`.
 */
export type { AdapterOptions } from './adapter-options.js';
export {
  SPEND_EXPORT_COLUMNS,
  type SpendExportFormat,
  spendLogLines as exportSpendLogs,
} from './admin/spend-export.js';
export {
  type BudgetAlertOptions,
  type BudgetAlertPayload,
  signWebhookBody,
} from './alerts/budget-alerts.js';
export { isValidBudgetDuration, nextBudgetResetAt, parseBudgetDuration } from './budget-period.js';
export type { DashboardOptions, GuardLogger, SpendGuardOptions } from './config.js';
export type { KeyQueries, TeamQueries, UserQueries, WithBudget } from './entity-queries.js';
export { SpendGuardError, type SpendGuardErrorCode } from './errors.js';
export {
  type CallRecord,
  type GuardedCall,
  type KeyContext,
  SpendGuard,
} from './guard.js';
export { generateVirtualKey, hashVirtualKey } from './keys.js';
export { type TrackOptions, track } from './metering/track.js';
export type { WireFormat } from './metering/wire-formats.js';
export { nanoToUsd, usdToNano } from './money.js';
export type { CallEvent, RefusalEvent } from './observability/call-events.js';
export type { TracingOptions } from './observability/otel-tracing.js';
export type { MetricsEndpoint, MetricsOptions, MetricsRegistry } from './observability/prometheus-metrics.js';
export {
  type CostBreakdown,
  type CostBreakdownNano,
  type CostOptions,
  calculateCost,
  type ModelPrice,
  type ModelPriceOverride,
  normalizeUsage,
  PriceBook,
  type PriceBookOptions,
  type TokenUsage,
} from './pricing/price-book.js';
export type {
  BudgetOverview,
  BudgetOverviewEntry,
  BudgetOverviewOptions,
  BudgetQueries,
  BudgetRemaining,
  BudgetScope,
  SpendGranularity,
  SpendGroup,
  SpendGroupValues,
  SpendQueries,
  SpendReport,
  SpendReportEntry,
  SpendReportFilterOptions,
  SpendReportOptions,
  SpendTotals,
} from './queries.js';
export { MemoryStorage } from './storage/memory-storage.js';
export type {
  EnforcementMode,
  KeyRecord,
  SpendLogRecord,
  SpendStorage,
  StorageCapabilities,
  TeamRecord,
  UserRecord,
} from './storage/storage-contract.js';

import type { SpendGuardOptions } from './config.js';
import { SpendGuard } from './guard.js';

/**
 * Creates the framework-neutral guard. Adapters (`@spendguard/express`, `@spendguard/hono`) wrap it;
 * use it directly to share one guard between several mounts.
 * @example const guard = createSpendGuard({ storage: sqliteStorage(), masterKey: process.env.MASTER_KEY })
 */
export function createSpendGuard(options: SpendGuardOptions): SpendGuard {
  return new SpendGuard(options);
}
