import {
  compareSpendReportRows,
  type SpendDimension,
  type SpendLogRecord,
  type SpendReportFilters,
  type SpendReportQuery,
  type SpendReportRow,
  type SpendReportTop,
  spendReportField,
  utcDay,
} from './storage-contract.js';

/**
 * The daily rollups every backend keeps, written once here so that their answers cannot drift: one
 * row per UTC day x team x user x key x model x provider x end user (a missing value is `''`), and
 * the same again per tag. A settle adds its request to one row of the first and to one row of the
 * second per tag.
 */
export interface RollupRow {
  day: string;
  teamId: string;
  userId: string;
  apiKeyHash: string;
  model: string;
  provider: string;
  endUser: string;
  /** Set on tag rollup rows only. */
  tag?: string;
  requests: number;
  failedRequests: number;
  spendNano: number;
  promptTokens: number;
  completionTokens: number;
}

/** The rollup row (without a tag) one settled request adds, at `costNano`. */
export function rollupRowOf(log: SpendLogRecord, costNano: number): RollupRow {
  return {
    day: utcDay(log.startTime),
    teamId: log.teamId ?? '',
    userId: log.userId ?? '',
    apiKeyHash: log.apiKeyHash,
    model: log.model,
    provider: log.provider ?? '',
    endUser: log.endUser ?? '',
    requests: 1,
    failedRequests: log.status === 'failure' ? 1 : 0,
    spendNano: costNano,
    promptTokens: log.promptTokens,
    completionTokens: log.completionTokens,
  };
}

const FILTERS: Array<[keyof SpendReportFilters, keyof RollupRow]> = [
  ['teamIds', 'teamId'],
  ['userIds', 'userId'],
  ['apiKeyHashes', 'apiKeyHash'],
  ['models', 'model'],
  ['providers', 'provider'],
  ['endUsers', 'endUser'],
  ['tags', 'tag'],
];

/** Whether a report reads the tag rollup: when it groups or filters by tag. */
export function readsTagRollup(query: SpendReportQuery): boolean {
  return query.groupBy.includes('tag') || query.filters?.tags !== undefined;
}

/**
 * The rollup tables a SQL backend keeps, from the narrowest a report can read to the widest:
 * - `team`: day x team x model x provider; `team_tag`: the same per tag (about 10x fewer rows than
 *   the full rollups over a busy 90 days, where keys, users and end users multiply the groups);
 * - `key`: day x team x user x key;
 * - `spend` and `tag`: every dimension (day x team x user x key x model x provider x end user).
 * The narrow ones are sums of the wide ones (kept so by the database on every rollup write), so any
 * table with the dimensions a report needs gives the same answer.
 */
export type RollupTable = 'team' | 'team_tag' | 'key' | 'spend' | 'tag';

const FILTER_DIMENSIONS: Record<keyof SpendReportFilters, SpendDimension> = {
  teamIds: 'team',
  userIds: 'user',
  apiKeyHashes: 'key',
  models: 'model',
  providers: 'provider',
  endUsers: 'customer',
  tags: 'tag',
};
const TEAM_DIMENSIONS = new Set<SpendDimension>(['day', 'team', 'model', 'provider']);
const KEY_DIMENSIONS = new Set<SpendDimension>(['day', 'team', 'user', 'key']);

/** The narrowest rollup table that has every dimension a report groups or filters by. */
export function rollupTableFor(query: SpendReportQuery): RollupTable {
  const used = new Set<SpendDimension>(query.groupBy);
  for (const [name, values] of Object.entries(query.filters ?? {})) {
    if (values !== undefined) used.add(FILTER_DIMENSIONS[name as keyof SpendReportFilters]);
  }
  const within = (allowed: Set<SpendDimension>) => [...used].every((d) => allowed.has(d));
  if (used.has('tag')) {
    used.delete('tag');
    return within(TEAM_DIMENSIONS) ? 'team_tag' : 'tag';
  }
  if (within(TEAM_DIMENSIONS)) return 'team';
  return within(KEY_DIMENSIONS) ? 'key' : 'spend';
}

/** The column of each filter, for SQL backends: `[filter values, rollup column]` of the filters set. */
export function activeFilters(filters: SpendReportFilters = {}): Array<[string[], keyof RollupRow]> {
  return FILTERS.flatMap(([name, column]) => {
    const values = filters[name];
    return values === undefined ? [] : [[values, column] as [string[], keyof RollupRow]];
  });
}

/** A spend report computed in memory from rollup rows (the reference the SQL backends must match). */
export function aggregateRollup(rows: Iterable<RollupRow>, query: SpendReportQuery): SpendReportRow[] {
  const filters = activeFilters(query.filters);
  const columns = query.groupBy.map(rollupColumn);
  const matching: RollupRow[] = [];
  for (const row of rows) {
    if (row.day < query.fromDay || row.day > query.toDay) continue;
    if (filters.every(([values, column]) => values.includes(row[column] as string))) matching.push(row);
  }
  // A top report: the ranked column's value outside the top n becomes null (how SQL backends mark it).
  const ranked = query.top ? rollupColumn(rankedDimension(query)) : undefined;
  const top = ranked ? topValues(matching, ranked, query.top!.n) : undefined;
  const groups = new Map<string, SpendReportRow>();
  for (const row of matching) {
    const values = columns.map((column) =>
      column === ranked && !top!.has(row[column] as string) ? null : (row[column] as string),
    );
    const id = values.map((v) => (v === null ? '\u0001' : v)).join('\u0000');
    let group = groups.get(id);
    if (!group) {
      group = { requests: 0, failedRequests: 0, spendNano: 0, promptTokens: 0, completionTokens: 0 };
      query.groupBy.forEach((dimension, i) => {
        (group as unknown as Record<string, unknown>)[spendReportField(dimension)] = values[i];
      });
      groups.set(id, group);
    }
    group.requests += row.requests;
    group.failedRequests += row.failedRequests;
    group.spendNano += row.spendNano;
    group.promptTokens += row.promptTokens;
    group.completionTokens += row.completionTokens;
  }
  return finishSpendReport([...groups.values()], query.groupBy, query.top);
}

/**
 * The dimension a `top` report ranks: its one grouped dimension besides `day`. Throws on a query
 * that has none or several (core's `guard.spend.report` refuses those with a 400 first).
 */
export function rankedDimension(query: SpendReportQuery): SpendDimension {
  const ranked = query.groupBy.filter((d) => d !== 'day');
  if (ranked.length !== 1 || ranked[0] === undefined) {
    throw new Error(`a top-n spend report groups by exactly one dimension besides day, got ${query.groupBy}`);
  }
  if (!Number.isSafeInteger(query.top?.n) || (query.top?.n ?? 0) < 1) {
    throw new Error(`top.n must be a whole number >= 1, got ${query.top?.n}`);
  }
  return ranked[0];
}

/**
 * How a SQL backend answers a `top` report, in one statement either way:
 * - `group-first`: group the rollup rows as the plain report would, then rank those groups and sum
 *   them again. Cheap where grouping collapses many rollup rows (a tag or customer report reads a
 *   table that also splits by team, model and provider: 10-30 rows per group and day);
 * - `rank-first`: rank the ranked column's totals over the range in a subquery, then read the rollup
 *   once more, summing every row outside the top n as "other". Cheaper on the key rollup (day x team
 *   x user x key), where a report by key or user collapses hardly any rows, so grouping first would
 *   only add a pass over as many groups.
 * Measured on 1,000,000 seeded calls (bench/dashboard.ts).
 */
export function topReportPlan(query: SpendReportQuery): 'group-first' | 'rank-first' {
  return rollupTableFor(query) === 'key' ? 'rank-first' : 'group-first';
}

/** The `n` values of `column` with the most spend over `rows`; ties by value in code-unit order. */
function topValues(rows: RollupRow[], column: keyof RollupRow, n: number): Set<string> {
  const spend = new Map<string, number>();
  for (const row of rows) {
    const value = row[column] as string;
    spend.set(value, (spend.get(value) ?? 0) + row.spendNano);
  }
  const ranked = [...spend.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return new Set(ranked.slice(0, n).map(([value]) => value));
}

const NULLABLE = new Set<keyof SpendReportRow>(['teamId', 'userId', 'provider', 'endUser']);

/**
 * The last step of every backend's `spendReport`: with `top`, a row whose ranked dimension is `null`
 * is marked `other`; `''` (how the rollups store a missing team, user, provider or end user) becomes
 * `null`; rows are sorted in `compareSpendReportRows` order.
 */
export function finishSpendReport(
  rows: SpendReportRow[],
  groupBy: SpendDimension[],
  top?: SpendReportTop,
): SpendReportRow[] {
  const fields = groupBy.map(spendReportField).filter((f) => NULLABLE.has(f));
  if (top) {
    // The rollups store a missing value as '', never NULL: a NULL in the ranked column is `other`.
    const ranked = spendReportField(groupBy.find((d) => d !== 'day')!);
    for (const row of rows) if (row[ranked] === null) row.other = true;
  }
  for (const row of rows) {
    for (const field of fields)
      if (row[field] === '') (row as unknown as Record<string, unknown>)[field] = null;
  }
  return rows.sort(compareSpendReportRows(groupBy));
}

/** The rollup column of a dimension (`team` -> `teamId`, `customer` -> `endUser`). */
export function rollupColumn(dimension: SpendDimension): keyof RollupRow {
  return spendReportField(dimension) as keyof RollupRow;
}
