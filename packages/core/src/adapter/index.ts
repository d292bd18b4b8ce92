/**
 * `@spendguard/core/adapter`: the pieces a framework adapter is built from (`@spendguard/express` and
 * `@spendguard/hono` use nothing else), so that an adapter only translates its framework's request and
 * response to the core's.
 */

export { type AdapterOptions, resolveAdapterOptions } from '../adapter-options.js';
export type { ManagementRequest } from '../admin/management-types.js';
export type { Dashboard, DashboardRequest, DashboardResponse } from '../dashboard/dashboard.js';
export { ERROR_STATUS } from '../errors.js';
export type { AdmitOutcome, CallInput, GuardedCall, GuardResponse, SpendGuard } from '../guard.js';
export {
  isUnreadNodeStream,
  meterHeldResponse,
  meterResponse,
  type NodeReadable,
  parseJsonBody,
  readBodyText,
  toWebResponse,
} from '../web.js';

import type { SpendGuard } from '../guard.js';

/**
 * False only when `path` (a request path as sent, with the base path the admin router is mounted at)
 * can be neither a dashboard page (`/ui` and below) nor a management route, under any base: the
 * admin router's cheap "not mine", before it works out the base path and asks `handles`.
 */
export function mayBeAdminPath(guard: SpendGuard, path: string): boolean {
  return path.includes('/ui') || guard.management.mayHandleBelow(path);
}
