// The shapes a guarded call passes between the pipeline's stages (types only, so that every stage,
// the adapters' helpers and the management side can name them without importing the guard).
import type { TokenUsage } from '../pricing/normalize-usage.js';
import type { RateAdmission } from '../rate-limits.js';
import type {
  BudgetState,
  KeyRecord,
  RateLimits,
  ScopeRef,
  TeamRecord,
  UserRecord,
} from '../storage/storage-contract.js';

/** A guarded call as the adapters describe it, in framework-neutral terms. */
export interface CallInput {
  method: string;
  path: string;
  /** Reads a request header (case-insensitive). */
  header: (name: string) => string | null | undefined;
  /** The parsed JSON body, or `undefined` when the request had none (unused when `readBody` is given). */
  body?: unknown;
  /** Size of the raw body in bytes, when the adapter read it (saves re-serialising). */
  bodyBytes?: number;
  /**
   * Reads and parses the body; called only once the key in the headers is known to be usable, so
   * that an unauthenticated body is never read (see `guard.bodies`). A body that has arrived whole
   * may be answered at once, without a promise.
   */
  readBody?: () => { body: unknown; bytes?: number } | Promise<{ body: unknown; bytes?: number }>;
}

/** A response the guard answers itself (a refusal), in framework-neutral terms. */
export interface GuardResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** What is known about the caller once its key is resolved. */
export interface KeyContext {
  key: KeyRecord;
  user: UserRecord | null;
  team: TeamRecord | null;
  /** The scopes this key spends against, key first. */
  scopes: ScopeRef[];
  /**
   * Scopes charged when a call settles but never checked at admission: on a team key, the user's
   * personal budget (and its windows). LiteLLM applies only the team's budgets to a team key, yet
   * still adds its spend to the user.
   */
  countedOnly: ScopeRef[];
  /** `Key=sk-...abcd`, `User=alice`, `Team=frontend-team`: how a 429 names each scope. */
  labels: Map<string, string>;
  /** The rate limits of the scopes that have any (of any scope kind), checked at every admission. */
  rateLimits: Array<{ scope: ScopeRef; limits: RateLimits }>;
  /** Set when the secret presented was replaced by `/key/regenerate`: it works until then. */
  secretValidUntil: Date | null;
}

/** The finished record of one guarded call (also what the spend log stores). */
export interface CallRecord {
  requestId: string;
  model: string;
  costUsd: number;
  costNano: number;
  usage: TokenUsage;
  estimated: boolean;
  status: 'success' | 'failure';
  httpStatus: number;
  tags: string[];
}

/** One admitted call's facts, from admission to settlement. */
export interface CallState {
  requestId: string;
  startTime: Date;
  model: string;
  tags: string[];
  endUser: string | null;
  body: Record<string, unknown>;
  keyHash: string;
  ctx: KeyContext | null;
  reservationId: string | null;
  /** What the reservation holds (0 without one). */
  reservedNano: number;
  scopes: ScopeRef[];
  states: BudgetState[];
  /** The rate-limit buckets the call was counted on, `null` when none applies. */
  rate: RateAdmission | null;
  /** The output cap admission lowered the request to, so that its worst case fits; `null`: not lowered. */
  outputLowered: number | null;
  /** The model has no price (served under `unpricedModels: 'allow'`): recorded at $0, flagged. */
  unpriced: boolean;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
