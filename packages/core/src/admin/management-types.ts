// The management API as its route modules see it (types only): they import these, not the
// `ManagementApi` class's module, which imports them, so that there is no import cycle.
import type * as z from 'zod';
import type { ManagementHost } from '../guard-api.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import type {
  BudgetInit,
  BudgetState,
  KeyRecord,
  ScopeRef,
  SpendStorage,
  TeamRecord,
} from '../storage/storage-contract.js';
import type { Caller } from './caller.js';

/** A management API request, in framework-neutral terms. */
export interface ManagementRequest {
  method: string;
  /** The path below where the management API is mounted, e.g. `/key/generate`. */
  path: string;
  query: URLSearchParams;
  header: (name: string) => string | null | undefined;
  /**
   * The raw body text (read as JSON whatever the Content-Type), or a body the app already parsed;
   * unused when `readBody` is given.
   */
  body?: string | unknown;
  /** Reads the body (as `body` above); called only once the caller's credential is checked. */
  readBody?: () => Promise<string | unknown>;
}

/**
 * What the route modules (budget, scope, team and user, LiteLLM, spend-log pages) use of the
 * management API; the `ManagementApi` class in management-api.ts is one.
 */
export interface ManagementApi {
  now(): Date;
  parseBody<T extends z.ZodType>(req: ManagementRequest, schema: T): z.infer<T>;
  parseQuery<T extends z.ZodType>(req: ManagementRequest, schema: T): z.infer<T>;
  /** Drops an end user's cached rate limits on this instance. */
  forgetCustomer(endUserId: string): void;
  /** Drops every end user's cached rate limits on this instance. */
  forgetAllCustomers(): void;
  /** Drops every cached key on this instance (after a budget tier that keys may link to changed). */
  forgetAllKeys(): void;
  /** The `defaultEndUserBudgetId` option, or `null`. */
  defaultEndUserBudgetId(): string | null;
  setSpendAlone(
    storage: SpendStorage,
    scope: ScopeRef,
    b: { spend?: number } & Record<string, unknown>,
    idFields: string[],
  ): Promise<BudgetState | null>;
  budgetInit(
    maxBudget: number | null | undefined,
    duration: string | null | undefined,
    softBudget?: number | null,
  ): BudgetInit;
  readonly guardInstance: ManagementHost;
  resolveTeam(storage: SpendStorage, idOrAlias: string, param?: string): Promise<TeamRecord>;
  /** A key by its hash or secret (404 when none), checked to be the caller's to manage. */
  keyFor(storage: SpendStorage, caller: Caller, ref: string, what: string): Promise<KeyRecord>;
  /** A key by its hash or secret, or `null`. */
  findKey(storage: SpendStorage, ref: string): Promise<KeyRecord | null>;
  /** A key's JSON with its budget, rate limits and budget windows. */
  keyInfoJson(storage: SpendStorage, key: KeyRecord): Promise<Record<string, unknown>>;
  spendLogReader(
    q: { api_key?: string; team_id?: string },
    caller: Caller,
    storage: SpendStorage,
  ): Promise<{ apiKeyHash: string | undefined; teamId: string | undefined }>;
}

/** A management route's handler; `pathKey` is the `{key}` of `/key/{key}/...` routes. */
export type Handler = (
  req: ManagementRequest,
  caller: Caller,
  storage: SpendStorage,
  pathKey?: string,
) => Promise<GuardResponse>;
