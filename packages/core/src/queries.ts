import { SpendGuardError } from './errors.js';
import type { SpendGuard } from './guard.js';
import { keyHashFromKeyOrHash } from './keys.js';
import { nanoToUsd } from './money.js';
import type {
  ScopeRef,
  SpendDimension,
  SpendReportFilters,
  SpendReportRow,
} from './storage/storage-contract.js';
import { utcDay } from './storage/storage-contract.js';

/** What a spend report can group by (time is `granularity`). `key` is the key's hash, `customer` the end user. */
export type SpendGroup = 'team' | 'user' | 'key' | 'model' | 'provider' | 'customer' | 'tag';

/** The time buckets of a spend report (UTC): days, ISO weeks (Monday first), calendar months, or one. */
export type SpendGranularity = 'day' | 'week' | 'month' | 'total';

/** The value each group dimension takes in a row; `null` where the call had none. */
export interface SpendGroupValues {
  team: string | null;
  user: string | null;
  key: string;
  model: string;
  provider: string | null;
  customer: string | null;
  tag: string;
}

export interface SpendTotals {
  requests: number;
  failedRequests: number;
  /** USD. */
  spend: number;
  /** The same in integer nano-dollars (1e-9 USD), exact. */
  spendNano: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

/** One row of a report: its time bucket, the values of the dimensions grouped by, and the sums. */
export type SpendReportEntry<G extends SpendGroup = SpendGroup> = {
  /**
   * The first day of the row's bucket, `YYYY-MM-DD` (a week's Monday, a month's 1st, `from` for
   * `total`). A bucket only counts the days between `from` and `to`.
   */
  period: string;
} & Pick<SpendGroupValues, G> &
  SpendTotals;

export interface SpendReportOptions<G extends SpendGroup = never> {
  /**
   * First day counted (UTC): a `YYYY-MM-DD` string or a Date (its UTC day).
   * @example from: '2026-03-01'
   */
  from: Date | string;
  /**
   * Last day counted (UTC, inclusive).
   * @example to: new Date()
   */
  to: Date | string;
  /**
   * Dimensions to break spend down by. With `tag`, a request counts once under each of its tags
   * (its spend appears under every tag it carries) and untagged requests are left out.
   * @default []
   * @example groupBy: ['team', 'model']
   */
  groupBy?: readonly G[];
  /**
   * Time buckets.
   * @default 'total'
   */
  granularity?: SpendGranularity;
  /**
   * Only count matching calls; a list matches any of its values. `key` takes the key (`sk-...`) or its
   * hash. `tags` keeps requests carrying any of them (a request carrying two counts twice unless
   * grouped by `tag`).
   * @default {}
   * @example filters: { team: 'team-id', tags: ['prod'] }
   */
  filters?: SpendReportFilterOptions;
}

export interface SpendReportFilterOptions {
  team?: string | string[];
  user?: string | string[];
  key?: string | string[];
  model?: string | string[];
  provider?: string | string[];
  customer?: string | string[];
  tags?: string[];
}

export interface SpendReport<G extends SpendGroup = SpendGroup> {
  /** `YYYY-MM-DD` */
  from: string;
  /** `YYYY-MM-DD`, inclusive */
  to: string;
  granularity: SpendGranularity;
  groupBy: G[];
  /** Sorted by period, then by each dimension in `groupBy` order (`null` first). */
  rows: SpendReportEntry<G>[];
  /** The sum of `rows` (so, when grouped or filtered by tag, a request counts once per tag). */
  totals: SpendTotals;
}

const GROUP_DIMENSIONS: Record<SpendGroup, SpendDimension> = {
  team: 'team',
  user: 'user',
  key: 'key',
  model: 'model',
  provider: 'provider',
  customer: 'customer',
  tag: 'tag',
};
const ROW_FIELDS: Record<SpendGroup, keyof SpendReportRow> = {
  team: 'teamId',
  user: 'userId',
  key: 'apiKeyHash',
  model: 'model',
  provider: 'provider',
  customer: 'endUser',
  tag: 'tag',
};
const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;
const DAY_MS = 86_400_000;

/** A report bound, as a UTC day; throws a 400-mapped error on anything else. */
export function toReportDay(value: Date | string, name: string): string {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw badRequest(`${name} is an invalid Date`, name);
    return utcDay(value);
  }
  if (typeof value !== 'string' || !DAY_RE.test(value) || utcDayOrNull(value) !== value) {
    throw badRequest(`${name} must be a date 'YYYY-MM-DD' (or a Date), got ${JSON.stringify(value)}`, name);
  }
  return value;
}

function utcDayOrNull(day: string): string | null {
  const ms = Date.parse(`${day}T00:00:00.000Z`);
  return Number.isNaN(ms) ? null : utcDay(new Date(ms));
}

function badRequest(message: string, param: string): SpendGuardError {
  return new SpendGuardError('BAD_REQUEST', message, { param });
}

/** The first day of the bucket `day` falls in. */
export function bucketStart(day: string, granularity: SpendGranularity, from: string): string {
  if (granularity === 'day') return day;
  if (granularity === 'month') return `${day.slice(0, 7)}-01`;
  if (granularity === 'total') return from;
  const ms = Date.parse(`${day}T00:00:00.000Z`);
  const weekday = (new Date(ms).getUTCDay() + 6) % 7; // Monday = 0, as 7d budgets reset
  return utcDay(new Date(ms - weekday * DAY_MS));
}

function emptyTotals(): SpendTotals {
  return {
    requests: 0,
    failedRequests: 0,
    spend: 0,
    spendNano: 0,
    promptTokens: 0,
    completionTokens: 0,
    totalTokens: 0,
  };
}

function addTo(totals: SpendTotals, row: SpendReportRow): void {
  totals.requests += row.requests;
  totals.failedRequests += row.failedRequests;
  totals.spendNano += row.spendNano;
  totals.spend = nanoToUsd(totals.spendNano);
  totals.promptTokens += row.promptTokens;
  totals.completionTokens += row.completionTokens;
  totals.totalTokens += row.promptTokens + row.completionTokens;
}

function list(value: string | string[] | undefined, map: (v: string) => string = (v) => v) {
  if (value === undefined) return undefined;
  return (Array.isArray(value) ? value : [value]).map(map);
}

/**
 * Spend reports from the daily rollups (never a scan of the spend logs): `guard.spend`.
 * @example
 * const { rows } = await guard.spend.report({ from: '2026-03-01', to: '2026-03-31', groupBy: ['team', 'model'], granularity: 'week' });
 */
export class SpendQueries {
  constructor(private readonly guard: SpendGuard) {}

  /**
   * Spend over the UTC days `from..to`, per time bucket and group, in USD (and exact nano-dollars).
   * Throws a `SpendGuardError` (`BAD_REQUEST`) on invalid options, `STORAGE_UNAVAILABLE` when storage
   * does not answer.
   */
  async report<const G extends SpendGroup = never>(options: SpendReportOptions<G>): Promise<SpendReport<G>> {
    const from = toReportDay(options.from, 'from');
    const to = toReportDay(options.to, 'to');
    if (from > to) throw badRequest(`from (${from}) is after to (${to})`, 'from');
    const granularity = options.granularity ?? 'total';
    if (!['day', 'week', 'month', 'total'].includes(granularity)) {
      throw badRequest("granularity must be 'day', 'week', 'month' or 'total'", 'granularity');
    }
    const groupBy = [...new Set(options.groupBy ?? [])] as G[];
    for (const g of groupBy) {
      if (!(g in GROUP_DIMENSIONS)) {
        throw badRequest(`groupBy: unknown dimension ${JSON.stringify(g)}`, 'groupBy');
      }
    }
    const f = options.filters ?? {};
    const filters: SpendReportFilters = {
      teamIds: list(f.team),
      userIds: list(f.user),
      apiKeyHashes: list(f.key, keyHashFromKeyOrHash),
      models: list(f.model),
      providers: list(f.provider),
      endUsers: list(f.customer),
      tags: f.tags ? [...f.tags] : undefined,
    };
    const dimensions: SpendDimension[] = [
      ...(granularity === 'total' ? [] : (['day'] as const)),
      ...groupBy.map((g) => GROUP_DIMENSIONS[g]),
    ];
    const stored = await this.guard.gate.call('spend report', (s) =>
      s.spendReport({ fromDay: from, toDay: to, groupBy: dimensions, filters }),
    );

    // Days are re-bucketed here: rows arrive sorted by day first, so buckets stay in order. By day or
    // in total every stored row is a bucket of its own; only weeks and months merge rows.
    const merge = granularity === 'week' || granularity === 'month';
    const rows = new Map<string, SpendReportEntry<G>>();
    const sorted: SpendReportEntry<G>[] = [];
    const totals = emptyTotals();
    for (const row of stored) {
      const period = bucketStart(row.day ?? from, granularity, from);
      const values = groupBy.map((g) => row[ROW_FIELDS[g]] as string | null);
      const id = merge ? JSON.stringify([period, ...values]) : '';
      let entry = merge ? rows.get(id) : undefined;
      if (!entry) {
        const group = Object.fromEntries(groupBy.map((g, i) => [g, values[i]]));
        entry = { period, ...group, ...emptyTotals() } as SpendReportEntry<G>;
        if (merge) rows.set(id, entry);
        sorted.push(entry);
      }
      addTo(entry, row);
      addTo(totals, row);
    }
    if (granularity === 'week' || granularity === 'month') {
      // A week or month mixes days, so the storage order by day is not the order by group: sort again.
      sorted.sort((a, b) => compareEntries(a, b, groupBy));
    }
    return { from, to, granularity, groupBy, rows: sorted, totals };
  }
}

function compareEntries<G extends SpendGroup>(a: SpendReportEntry<G>, b: SpendReportEntry<G>, groupBy: G[]) {
  if (a.period !== b.period) return a.period < b.period ? -1 : 1;
  for (const g of groupBy) {
    const x = (a as Record<string, unknown>)[g] as string | null;
    const y = (b as Record<string, unknown>)[g] as string | null;
    if (x === y) continue;
    if (x === null) return -1;
    if (y === null) return 1;
    return x < y ? -1 : 1;
  }
  return 0;
}

/** Which budget to read: a key (the key itself or its hash), a user id, or a team id (or its unique alias). */
export type BudgetScope = { key: string } | { user: string } | { team: string };

/** A scope's budget as it stands now, in USD. */
export interface BudgetRemaining {
  scope: ScopeRef;
  /** `null`: no cap (spend is still tracked). */
  maxBudget: number | null;
  softBudget: number | null;
  /** Spend in the current period. */
  spend: number;
  /** Held by calls in flight. */
  reserved: number;
  /** `maxBudget - spend - reserved`, never below 0; `null` without a cap. */
  remaining: number | null;
  budgetDuration: string | null;
  /** When the period resets (`null`: never). */
  resetAt: Date | null;
}

/**
 * Budget look-ups: `guard.budgets`.
 * @example
 * const left = await guard.budgets.remaining({ team: 'frontend-team' });
 */
export class BudgetQueries {
  constructor(private readonly guard: SpendGuard) {}

  /** The budget of one key, user or team, as it stands now; `null` when there is no such scope. */
  async remaining(which: BudgetScope): Promise<BudgetRemaining | null> {
    const now = this.guard.now();
    const state = await this.guard.gate.call('budget look-up', async (storage) => {
      let scope: ScopeRef;
      if ('key' in which) scope = { kind: 'key', id: keyHashFromKeyOrHash(which.key) };
      else if ('user' in which) scope = { kind: 'user', id: which.user };
      else if ('team' in which) {
        scope = { kind: 'team', id: which.team };
        if (!(await storage.getTeam(which.team))) {
          const byAlias = await storage.findTeamsByAlias(which.team);
          if (byAlias.length === 1) scope = { kind: 'team', id: byAlias[0]!.teamId };
        }
      } else throw badRequest('pass { key }, { user } or { team }', 'scope');
      const [found] = await storage.getBudgets([scope], now);
      return found ?? null;
    });
    if (!state) return null;
    const max = state.maxBudgetNano;
    return {
      scope: state.scope,
      maxBudget: max === null ? null : nanoToUsd(max),
      softBudget: state.softBudgetNano === null ? null : nanoToUsd(state.softBudgetNano),
      spend: nanoToUsd(state.spendNano),
      reserved: nanoToUsd(state.reservedNano),
      remaining: max === null ? null : nanoToUsd(Math.max(0, max - state.spendNano - state.reservedNano)),
      budgetDuration: state.budgetDuration,
      resetAt: state.budgetResetAt,
    };
  }
}
