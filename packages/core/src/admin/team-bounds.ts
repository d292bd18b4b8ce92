import { SpendGuardError } from '../errors.js';
import type {
  KeyRecord,
  RateLimits,
  SpendStorage,
  TeamRecord,
  UserRecord,
} from '../storage/storage-contract.js';
import { TEMP_BASE, TEMP_EXPIRY, TEMP_INCREASE } from '../temp-budget.js';
import { type Caller, forbidden } from './caller.js';

/**
 * What binds a team admin: the budgets and limits the master key set on the team. A team admin
 * manages the team's members and keys, and their budgets, only inside them (LiteLLM's delegation
 * ceiling, bounded here by the team's own cap rather than the caller's key); the team's own budget,
 * limits, models and blocked flag, creating users and taking in another team's user stay the master
 * key's. Each check runs before anything is written, and refuses 403 naming the field.
 */

/**
 * Who blocked a key, in its metadata beside LiteLLM's temporary budget fields: `proxy_admin` (the
 * master key or the dashboard) or `team_admin`. A key the master key blocked stays blocked until the
 * master key unblocks it.
 */
export const BLOCKED_BY = 'spendguard_blocked_by';

/** Metadata fields only the guard writes (a temporary increase's state, who blocked a key). */
const SERVER_METADATA = [TEMP_INCREASE, TEMP_EXPIRY, TEMP_BASE, BLOCKED_BY] as const;

/** The team's limits that bind what a team admin sets below it (`null`: the team has none). */
export interface TeamBounds {
  teamId: string;
  /** The smallest cap of the team's `max_budget` and its budget windows, nano-USD. */
  capNano: number | null;
  limits: RateLimits | null;
  /** The team's model allow-list (empty: every model). */
  models: string[];
}

/** Reads the bounds of a team (its counter, windows and rate limits). */
export async function teamBounds(storage: SpendStorage, team: TeamRecord, now: Date): Promise<TeamBounds> {
  const scope = { kind: 'team' as const, id: team.teamId };
  const [states, windows, [limits]] = await Promise.all([
    storage.getBudgets([scope], now),
    storage.listWindows([scope], now),
    storage.getRateLimits([scope]),
  ]);
  let capNano: number | null = null;
  for (const s of [...states, ...windows]) {
    if (s.maxBudgetNano !== null && (capNano === null || s.maxBudgetNano < capNano))
      capNano = s.maxBudgetNano;
  }
  return { teamId: team.teamId, capNano, limits: limits?.limits ?? null, models: team.models };
}

/** True when the caller is bound by team bounds (a team admin; the master key never is). */
export function isBound(caller: Caller): caller is Extract<Caller, { role: 'team_admin' }> {
  return caller.role === 'team_admin';
}

/** USD as the management API stores it (see `ManagementApi.budgetInit`). */
function nano(usd: number): number {
  return Math.round(usd * 1e9);
}

/** Refuses a budget (USD) above the team's cap. `null` and absent are no cap of its own: the team's binds. */
export function assertBudgetWithin(bounds: TeamBounds, param: string, usd: number | null | undefined): void {
  if (usd === null || usd === undefined) return;
  assertCapWithin(bounds, param, nano(usd));
}

/** `assertBudgetWithin` for a cap already in nano-USD. */
export function assertCapWithin(bounds: TeamBounds, param: string, capNano: number): void {
  if (bounds.capNano === null || capNano <= bounds.capNano) return;
  throw refused(
    `${param} (${capNano / 1e9}) cannot exceed the cap of team '${bounds.teamId}' (${bounds.capNano / 1e9} USD, the smallest of its budgets); only the master key can set it higher.`,
    param,
  );
}

/** The budget fields of a key or member body: each within the team's cap. */
export function assertBudgetsWithin(
  bounds: TeamBounds,
  b: {
    max_budget?: number | null;
    max_budget_in_team?: number | null;
    budget_limits?: Array<{ max_budget: number | null }> | null;
    model_max_budget?: Record<string, number | { budget_limit?: number | null } | null> | null;
  },
): void {
  assertBudgetWithin(bounds, 'max_budget', b.max_budget);
  assertBudgetWithin(bounds, 'max_budget_in_team', b.max_budget_in_team);
  for (const w of b.budget_limits ?? []) assertBudgetWithin(bounds, 'budget_limits', w.max_budget);
  for (const [model, v] of Object.entries(b.model_max_budget ?? {})) {
    const usd = v === null ? null : typeof v === 'number' ? v : (v.budget_limit ?? null);
    assertBudgetWithin(bounds, `model_max_budget.${model}`, usd);
  }
}

/** Refuses rate limits above the team's own (a limit the team lacks binds nothing here). */
export function assertRateLimitsWithin(
  bounds: TeamBounds,
  b: {
    rpm_limit?: number | null;
    tpm_limit?: number | null;
    max_parallel_requests?: number | null;
    model_rpm_limit?: Record<string, number> | null;
    model_tpm_limit?: Record<string, number> | null;
  },
): void {
  const team = bounds.limits;
  if (!team) return;
  const check = (param: string, value: number | null | undefined, cap: number | null | undefined) => {
    if (value === null || value === undefined || cap === null || cap === undefined || value <= cap) return;
    throw refused(
      `${param} (${value}) cannot exceed the limit of team '${bounds.teamId}' (${cap}); only the master key can set it higher.`,
      param,
    );
  };
  check('rpm_limit', b.rpm_limit, team.rpmLimit);
  check('tpm_limit', b.tpm_limit, team.tpmLimit);
  check('max_parallel_requests', b.max_parallel_requests, team.maxParallelRequests);
  for (const [m, v] of Object.entries(b.model_rpm_limit ?? {})) {
    check(`model_rpm_limit.${m}`, v, team.modelRpmLimit[m] ?? team.rpmLimit);
  }
  for (const [m, v] of Object.entries(b.model_tpm_limit ?? {})) {
    check(`model_tpm_limit.${m}`, v, team.modelTpmLimit[m] ?? team.tpmLimit);
  }
}

/**
 * Refuses key models the team's allow-list does not grant: admission reads a key's own list before
 * its team's, so a wider key list would open models the master key kept from the team.
 */
export function assertModelsWithin(
  bounds: TeamBounds,
  models: string[] | undefined,
  allows: (model: string, teamModels: string[]) => boolean,
): void {
  if (!models || bounds.models.length === 0) return;
  const outside = models.filter((m) => !allows(m, bounds.models));
  if (outside.length === 0) return;
  throw refused(
    `models ${JSON.stringify(outside)} are not among the models of team '${bounds.teamId}' (${JSON.stringify(bounds.models)}); only the master key can grant them.`,
    'models',
  );
}

/**
 * The fields of `/team/update` that are the master key's: a team admin may send them only unchanged
 * (a form sending the team back as it read it), never to change them in either direction.
 */
export function assertTeamSettingsUnchanged(
  bounds: TeamBounds & { maxNano: number | null; softNano: number | null; duration: string | null },
  team: TeamRecord,
  b: {
    max_budget?: number | null;
    soft_budget?: number | null;
    budget_duration?: string | null;
    budget_limits?: unknown;
    models?: string[];
    blocked?: boolean;
    rpm_limit?: number | null;
    tpm_limit?: number | null;
    max_parallel_requests?: number | null;
  },
): void {
  const usd = (n: number | null | undefined) => (n === null || n === undefined ? null : nano(n));
  const changed: Array<[string, boolean]> = [
    ['max_budget', b.max_budget !== undefined && usd(b.max_budget) !== bounds.maxNano],
    ['soft_budget', b.soft_budget !== undefined && usd(b.soft_budget) !== bounds.softNano],
    ['budget_duration', b.budget_duration !== undefined && b.budget_duration !== bounds.duration],
    ['budget_limits', b.budget_limits !== undefined],
    ['models', b.models !== undefined && !sameList(b.models, team.models)],
    ['blocked', b.blocked !== undefined && b.blocked !== team.blocked],
    ['rpm_limit', b.rpm_limit !== undefined && b.rpm_limit !== (bounds.limits?.rpmLimit ?? null)],
    ['tpm_limit', b.tpm_limit !== undefined && b.tpm_limit !== (bounds.limits?.tpmLimit ?? null)],
    [
      'max_parallel_requests',
      b.max_parallel_requests !== undefined &&
        b.max_parallel_requests !== (bounds.limits?.maxParallelRequests ?? null),
    ],
  ];
  const field = changed.find(([, c]) => c)?.[0];
  if (field) {
    throw refused(
      `a team admin cannot change the ${field} of team '${team.teamId}': the team's budget, limits, models and blocked flag are set by the master key.`,
      field,
    );
  }
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Refuses, for a team admin, a member who is not yet a user (only the master key creates users, so a
 * team admin cannot claim an id before it does) or who belongs to a team it does not administer
 * (taking him in would put his spend, and his personal budget, under this team's keys).
 */
export function assertMayTakeIn(
  caller: Extract<Caller, { role: 'team_admin' }>,
  ref: { user_id?: string | null; user_email?: string | null },
  user: UserRecord | null,
): void {
  if (!user) {
    throw refused(
      `user '${ref.user_id ?? ref.user_email}' does not exist, and only the master key can create users (/user/new).`,
      'member',
    );
  }
  const elsewhere = user.teams.filter((t) => !caller.teamIds.includes(t));
  if (elsewhere.length > 0) {
    throw refused(
      `user '${user.userId}' belongs to team '${elsewhere[0]}', which this key does not administer; only the master key can add him to another team.`,
      'member',
    );
  }
}

/**
 * Refuses a metadata object that changes a field only the guard writes (see `SERVER_METADATA`):
 * forged, a temporary increase's base would lift a key's cap when it ends, and a missing `BLOCKED_BY`
 * would let a team admin unblock what the master key blocked. Sent back as read, they pass.
 */
export function assertServerMetadataKept(
  metadata: Record<string, unknown> | undefined,
  current: Record<string, unknown> | null,
): void {
  if (!metadata) return;
  for (const field of SERVER_METADATA) {
    if (!(field in metadata)) continue;
    if (current && field in current && JSON.stringify(metadata[field]) === JSON.stringify(current[field])) {
      continue;
    }
    throw new SpendGuardError(
      'BAD_REQUEST',
      `Invalid request: metadata.${field} is written by spendguard itself${field === BLOCKED_BY ? ' (/key/block, /key/unblock)' : ' (temp_budget_increase, temp_budget_expiry)'}; leave it out.`,
      { param: `metadata.${field}` },
    );
  }
}

/** Who is blocking a key, as `BLOCKED_BY` records it. */
export function blockerOf(caller: Caller): 'proxy_admin' | 'team_admin' {
  return caller.role === 'proxy_admin' ? 'proxy_admin' : 'team_admin';
}

/** Refuses a team admin unblocking a key the master key blocked. */
export function assertMayUnblock(caller: Caller, key: KeyRecord): void {
  if (!isBound(caller) || !key.blocked || key.metadata[BLOCKED_BY] !== 'proxy_admin') return;
  throw refused(
    `key '${key.tokenHash}' was blocked by the master key; only the master key can unblock it.`,
    'blocked',
  );
}

function refused(message: string, param: string): SpendGuardError {
  return forbidden(message, param);
}
