import { SpendGuardError } from './errors.js';
import type { StoreReader } from './guard-api.js';
import { assertDate } from './input-hygiene.js';
import { keyHashFromKeyOrHash } from './keys.js';
import { nanoToUsd } from './money.js';
import type {
  BudgetState,
  KeyRecord,
  ScopeKind,
  ScopeRef,
  SpendDimension,
  SpendReportFilters,
  SpendReportRow,
} from './storage/storage-contract.js';
import { GLOBAL_SCOPE_ID, memberScopeId, modelScopeId, utcDay } from './storage/storage-contract.js';

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
  /**
   * Only in a `top` report: this row sums the groups outside the top n (its group value is `null`).
   */
  other?: true;
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
  /**
   * Keep only the `n` groups with the most spend over the whole range, and sum every other group into
   * rows marked `other: true` (one per time bucket), so a chart of a dimension with many groups (users,
   * keys, customers, tags) draws n lines plus "other" while the totals stay exact. Answered by the
   * storage in one ranked query. Needs exactly one `groupBy` dimension.
   * @default undefined (every group)
   * @example top: { by: 'spend', n: 10 }
   */
  top?: { by?: 'spend'; n: number };
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
  /**
   * Sorted by period, then by each dimension in `groupBy` order (`null` first); in a `top` report a
   * period's `other` row comes last.
   */
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
    assertDate(value, name);
    return utcDay(value);
  }
  if (typeof value !== 'string' || !DAY_RE.test(value) || utcDayOrNull(value) !== value) {
    throw badRequest(`${name} must be a date 'YYYY-MM-DD' (or a Date), got ${JSON.stringify(value)}`, name);
  }
  assertDate(new Date(`${value}T00:00:00.000Z`), name);
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
  constructor(private readonly guard: StoreReader) {}

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
    const top = options.top;
    if (top !== undefined) {
      if (top === null || typeof top !== 'object' || (top.by !== undefined && top.by !== 'spend')) {
        throw badRequest("top must be { by: 'spend', n }", 'top');
      }
      if (!Number.isSafeInteger(top.n) || top.n < 1 || top.n > 1000) {
        throw badRequest('top.n must be a whole number from 1 to 1000', 'top');
      }
      if (groupBy.length !== 1) throw badRequest('top needs exactly one groupBy dimension', 'top');
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
    const stored = await this.guard.read('spend report', (s) =>
      s.spendReport({
        fromDay: from,
        toDay: to,
        groupBy: dimensions,
        filters,
        ...(top ? { top: { n: top.n } } : {}),
      }),
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
      const id = merge ? JSON.stringify([period, row.other ?? false, ...values]) : '';
      let entry = merge ? rows.get(id) : undefined;
      if (!entry) {
        const group = Object.fromEntries(groupBy.map((g, i) => [g, values[i]]));
        entry = {
          period,
          ...group,
          ...(row.other ? { other: true } : {}),
          ...emptyTotals(),
        } as SpendReportEntry<G>;
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
  if (a.other !== b.other) return a.other ? 1 : -1;
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
export type BudgetScope =
  | { key: string }
  | { user: string }
  | { team: string }
  /** A user's budget within a team (`max_budget_in_team`). */
  | { member: { team: string; user: string } }
  /** An end user (LiteLLM's customer). */
  | { customer: string }
  | { tag: string }
  /** A key's budget for one model (`model_max_budget`). */
  | { keyModel: { key: string; model: string } }
  | { global: true };

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

/** A budget counter in USD, as the typed queries answer it. */
export function toBudgetRemaining(state: BudgetState): BudgetRemaining {
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

/**
 * Budget look-ups: `guard.budgets`.
 * @example
 * const left = await guard.budgets.remaining({ team: 'frontend-team' });
 */
export class BudgetQueries {
  constructor(private readonly guard: StoreReader) {}

  /** The budget of one scope, as it stands now; `null` when there is no such scope. */
  async remaining(which: BudgetScope): Promise<BudgetRemaining | null> {
    const now = this.guard.now();
    const state = await this.guard.read('budget look-up', async (storage) => {
      let scope: ScopeRef;
      if ('key' in which) scope = { kind: 'key', id: keyHashFromKeyOrHash(which.key) };
      else if ('user' in which) scope = { kind: 'user', id: which.user };
      else if ('team' in which) {
        scope = { kind: 'team', id: which.team };
        if (!(await storage.getTeam(which.team))) {
          const byAlias = await storage.findTeamsByAlias(which.team);
          if (byAlias.length === 1) scope = { kind: 'team', id: byAlias[0]!.teamId };
        }
      } else if ('member' in which) {
        scope = { kind: 'member', id: memberScopeId(which.member.team, which.member.user) };
      } else if ('customer' in which) scope = { kind: 'customer', id: which.customer };
      else if ('tag' in which) scope = { kind: 'tag', id: which.tag };
      else if ('keyModel' in which) {
        const hash = keyHashFromKeyOrHash(which.keyModel.key);
        scope = { kind: 'model', id: modelScopeId(hash, which.keyModel.model) };
      } else if ('global' in which) scope = { kind: 'global', id: GLOBAL_SCOPE_ID };
      else
        throw badRequest(
          'pass { key }, { user }, { team }, { member }, { customer }, { tag }, { keyModel } or { global }',
          'scope',
        );
      const [found] = await storage.getBudgets([scope], now);
      return found ?? null;
    });
    return state ? toBudgetRemaining(state) : null;
  }

  /**
   * Every capped scope near or over its cap, with its burn rate (from the daily rollups) and the date
   * it runs out at that rate.
   * @example const { entries } = await guard.budgets.overview({ minUsedFraction: 0.8 })
   */
  overview(options: BudgetOverviewOptions = {}): Promise<BudgetOverview> {
    return budgetOverview(this.guard, options);
  }
}

/** Options of `guard.budgets.overview`. */
export interface BudgetOverviewOptions {
  /**
   * Only scopes that have spent at least this fraction of their cap (0.8: 80 % and over).
   * @default 0.8
   */
  minUsedFraction?: number;
  /** Only these kinds of scope. @default ['team', 'user', 'key'] */
  kinds?: ScopeKind[];
  /** At most this many scopes, most used first. @default 100 */
  limit?: number;
  /**
   * The burn rate is the average daily spend over this many UTC days up to now (today counts as the
   * part of it that has passed), read from the daily rollups.
   * @default 7
   */
  burnDays?: number;
}

/** One scope of the budgets overview, in USD. */
export interface BudgetOverviewEntry extends BudgetRemaining {
  /** A team's alias, a key's alias or masked name; `null` where there is none. */
  name: string | null;
  /** `spend / maxBudget` (1 and more: at or over the cap). */
  usedFraction: number;
  status: 'over' | 'near' | 'ok';
  /** Average spend per day over the burn window, USD. */
  burnRatePerDay: number;
  /**
   * When the remaining budget runs out at that rate: `now` when already spent, `null` when nothing is
   * being spent or the period resets first (see `resetsFirst`).
   */
  projectedRunOut: Date | null;
  /** The budget period resets before it would run out. */
  resetsFirst: boolean;
}

export interface BudgetOverview {
  /** Burn window, UTC days, inclusive. */
  from: string;
  to: string;
  entries: BudgetOverviewEntry[];
}

/** Above this many keys in the budgets overview, their names come from one read of the key list. */
const KEY_LOOKUPS_MAX = 25;

/** Budget overview: scopes near or over their caps, their burn rate and projected run-out. */
export async function budgetOverview(
  guard: StoreReader,
  options: BudgetOverviewOptions = {},
): Promise<BudgetOverview> {
  const now = guard.now();
  const min = options.minUsedFraction ?? 0.8;
  const burnDays = options.burnDays ?? 7;
  if (!(min >= 0) || !Number.isFinite(min))
    throw badRequest('minUsedFraction must be a number >= 0', 'minUsedFraction');
  if (!Number.isSafeInteger(burnDays) || burnDays < 1 || burnDays > 366) {
    throw badRequest('burnDays must be a whole number of days, 1 to 366', 'burnDays');
  }
  const to = utcDay(now);
  const from = utcDay(new Date(now.getTime() - (burnDays - 1) * DAY_MS));
  // Days in the window: the full days before today plus the elapsed part of today.
  const elapsedDays = burnDays - 1 + (now.getTime() - Date.parse(`${to}T00:00:00.000Z`)) / DAY_MS;
  const { states, names, burn } = await guard.read('budgets overview', async (storage) => {
    const states = await storage.listBudgets(
      { minUsedFraction: min, kinds: options.kinds, limit: options.limit },
      now,
    );
    const ids = (kind: ScopeKind) => states.filter((s) => s.scope.kind === kind).map((s) => s.scope.id);
    const burn = new Map<string, number>();
    const dims: [ScopeKind, SpendDimension, keyof SpendReportFilters, keyof SpendReportRow][] = [
      ['team', 'team', 'teamIds', 'teamId'],
      ['user', 'user', 'userIds', 'userId'],
      ['key', 'key', 'apiKeyHashes', 'apiKeyHash'],
    ];
    // One rollup query per kind of scope listed: O(days x scopes), never the logs. These reads and
    // the name look-ups below are independent, so they are issued together (a pool serves them in
    // parallel, instead of one round trip after another).
    const burnReads = dims.map(async ([kind, dim, filter, field]) => {
      const list = ids(kind);
      if (list.length === 0) return;
      const rows = await storage.spendReport({
        fromDay: from,
        toDay: to,
        groupBy: [dim],
        filters: { [filter]: list },
      });
      for (const r of rows) burn.set(`${kind}:${r[field] as string}`, r.spendNano);
    });
    const names = new Map<string, string | null>();
    const keyName = (k: KeyRecord | null | undefined) => (k ? (k.keyAlias ?? k.keyName) : null);
    const keyIds = ids('key');
    // Many keys: one read of the key list beats a look-up per key (132 keys: ~200 ms of Postgres
    // round trips on a busy 2-core machine, against ~10 ms for the list of 353).
    const manyKeys = keyIds.length > KEY_LOOKUPS_MAX;
    const nameReads = states.map(async (s) => {
      if (s.scope.kind === 'team')
        names.set(`team:${s.scope.id}`, (await storage.getTeam(s.scope.id))?.teamAlias ?? null);
      if (s.scope.kind === 'key' && !manyKeys)
        names.set(`key:${s.scope.id}`, keyName(await storage.getKey(s.scope.id)));
    });
    const keyList = manyKeys
      ? storage.listKeys({}).then((keys) => {
          const wanted = new Set(keyIds);
          for (const k of keys) if (wanted.has(k.tokenHash)) names.set(`key:${k.tokenHash}`, keyName(k));
        })
      : undefined;
    await Promise.all([...burnReads, ...nameReads, keyList]);
    return { states, names, burn };
  });
  const entries = states.map((state) => {
    const id = `${state.scope.kind}:${state.scope.id}`;
    return budgetEntry(state, names.get(id) ?? null, burn.get(id) ?? 0, elapsedDays, now);
  });
  return { from, to, entries };
}

/**
 * One scope's budget entry: its used fraction, status, burn rate (`burnNano` spent over `elapsedDays`)
 * and the date it runs out at that rate. Pure: the budgets overview and the dashboard's team and key
 * pages share it.
 */
export function budgetEntry(
  state: BudgetState,
  name: string | null,
  burnNano: number,
  elapsedDays: number,
  now: Date,
): BudgetOverviewEntry {
  const max = state.maxBudgetNano ?? 0;
  const usedFraction = max > 0 ? state.spendNano / max : Number.POSITIVE_INFINITY;
  const burnNanoPerDay = burnNano / elapsedDays;
  const left = max - state.spendNano - state.reservedNano;
  let projectedRunOut: Date | null = null;
  let resetsFirst = false;
  if (left <= 0) projectedRunOut = now;
  else if (burnNanoPerDay > 0) {
    const at = new Date(now.getTime() + (left / burnNanoPerDay) * DAY_MS);
    if (state.budgetResetAt && state.budgetResetAt.getTime() <= at.getTime()) resetsFirst = true;
    else projectedRunOut = at;
  }
  return {
    scope: state.scope,
    name,
    maxBudget: nanoToUsd(max),
    softBudget: state.softBudgetNano === null ? null : nanoToUsd(state.softBudgetNano),
    spend: nanoToUsd(state.spendNano),
    reserved: nanoToUsd(state.reservedNano),
    remaining: nanoToUsd(Math.max(0, left)),
    budgetDuration: state.budgetDuration,
    resetAt: state.budgetResetAt,
    usedFraction,
    status: state.spendNano >= max ? 'over' : usedFraction >= 0.8 ? 'near' : 'ok',
    burnRatePerDay: nanoToUsd(Math.round(burnNanoPerDay)),
    projectedRunOut,
    resetsFirst,
  };
}
