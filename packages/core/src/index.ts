export { type AdapterOptions, resolveAdapterOptions } from './adapter-options.js';
export type { ManagementRequest } from './admin/management-api.js';
export {
  type BudgetAlertOptions,
  type BudgetAlertPayload,
  type BudgetAlerts,
  signWebhookBody,
} from './alerts/budget-alerts.js';
export { isValidBudgetDuration, nextBudgetResetAt, parseBudgetDuration } from './budget-period.js';
export type { DashboardOptions, GuardLogger, SpendGuardOptions } from './config.js';
export type { Dashboard, DashboardRequest, DashboardResponse } from './dashboard/dashboard.js';
export { KeyQueries, TeamQueries, UserQueries, type WithBudget } from './entity-queries.js';
export { ERROR_STATUS, SpendGuardError, type SpendGuardErrorCode, StorageConflictError } from './errors.js';
export {
  type AdmitOutcome,
  type CallInput,
  type CallRecord,
  GuardedCall,
  type GuardResponse,
  type KeyContext,
  SpendGuard,
} from './guard.js';
export { generateVirtualKey, hashVirtualKey } from './keys.js';
export { type TrackOptions, track } from './metering/track.js';
export type { WireFormat } from './metering/wire-formats.js';
export { nanoToUsd, usdToNano } from './money.js';
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
export { applyDueReset, expiredReservationLog, fitsBudget, withCounters } from './storage/budget-rules.js';
export { MemoryStorage } from './storage/memory-storage.js';
export {
  addRateTokens,
  decideRateBucket,
  hasRateLimits,
  type RateWindow,
  rateBucketKey,
} from './storage/rate-limit-rules.js';
export {
  activeFilters,
  aggregateRollup,
  finishSpendReport,
  type RollupRow,
  type RollupTable,
  rankedDimension,
  readsTagRollup,
  rollupColumn,
  rollupRowOf,
  rollupTableFor,
  topReportPlan,
} from './storage/spend-rollup.js';
export {
  type AlertClaim,
  assertChangeableScopes,
  type BudgetInit,
  type BudgetListQuery,
  type BudgetState,
  budgetUsedFraction,
  type CustomerRecord,
  compareBudgetUse,
  compareSpendReportRows,
  compareTagSpend,
  type DashboardSessionRecord,
  type DeletedEntity,
  type EnforcementMode,
  type EntityInsert,
  GLOBAL_SCOPE_ID,
  isOptionalScope,
  isWindowOf,
  type KeyBySecret,
  type KeyPatch,
  type KeyRecord,
  type MemberRecord,
  type MemberRole,
  memberScopeId,
  modelScopeId,
  type PendingCall,
  type RateAcquireInput,
  type RateAcquireResult,
  type RateBucket,
  type RateBucketState,
  type RateLimits,
  type RateMetric,
  type RateSettleInput,
  type RegenerateKeyInput,
  type ReserveInput,
  type ReserveResult,
  type ScopeChanges,
  type ScopeKind,
  type ScopeRef,
  type SettleInput,
  type SettleResult,
  type SpendDimension,
  type SpendLogQuery,
  type SpendLogRecord,
  type SpendReportFilters,
  type SpendReportQuery,
  type SpendReportRow,
  type SpendReportTop,
  type SpendStorage,
  type StorageCapabilities,
  scopeKey,
  scopeOfInsert,
  spendReportField,
  type TagRecord,
  type TagSpend,
  type TeamPatch,
  type TeamRecord,
  type UserPatch,
  type UserRecord,
  utcDay,
  windowScopeId,
} from './storage/storage-contract.js';
export {
  isUnreadNodeStream,
  meterResponse,
  type NodeReadable,
  parseJsonBody,
  readBodyText,
  toWebResponse,
} from './web.js';

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
