import type {
  SpendDimension,
  SpendLogRecord,
  SpendReportFilters,
  SpendReportQuery,
  SpendReportRow,
} from '../storage/storage-contract.js';

/** A settled call as the reference sees it: its log and what it was charged. */
export interface ReferenceCall {
  log: SpendLogRecord;
  costNano: number;
}

/** Where each dimension's value is in a log, and the report row field it goes to. */
const DIMENSIONS: Record<
  SpendDimension,
  { field: keyof SpendReportRow; of: (l: SpendLogRecord) => string | null }
> = {
  day: { field: 'day', of: (l) => l.startTime.toISOString().slice(0, 10) },
  team: { field: 'teamId', of: (l) => l.teamId },
  user: { field: 'userId', of: (l) => l.userId },
  key: { field: 'apiKeyHash', of: (l) => l.apiKeyHash },
  model: { field: 'model', of: (l) => l.model },
  provider: { field: 'provider', of: (l) => l.provider },
  customer: { field: 'endUser', of: (l) => l.endUser },
  tag: { field: 'tag', of: () => null }, // set per tag below
};

const FILTERED: Record<keyof SpendReportFilters, SpendDimension> = {
  teamIds: 'team',
  userIds: 'user',
  apiKeyHashes: 'key',
  models: 'model',
  providers: 'provider',
  endUsers: 'customer',
  tags: 'tag',
};

/**
 * A spend report computed straight from the calls' logs by the contract's rules, written apart from
 * the rollups that every backend (and MemoryStorage's own report) is built on, so that the conformance
 * suite does not check a report against the code that made it. Rows come in no particular order.
 *
 * The rules: a call counts on its UTC day, within `fromDay`..`toDay`; a report that groups or filters by
 * tag counts a call once per tag it carries (per matching tag when filtered), and leaves out untagged
 * calls; each filter keeps the calls whose value is in its list; with `top`, the ranked dimension keeps
 * its `n` values with the most spend over the whole report (ties in code-unit order of the value, a
 * missing one as ''), and every other value's rows are summed per remaining group into `other` rows.
 */
export function referenceReport(calls: ReferenceCall[], query: SpendReportQuery): SpendReportRow[] {
  const byTag = query.groupBy.includes('tag') || query.filters?.tags !== undefined;
  const entries: Array<{ values: Map<SpendDimension, string | null>; call: ReferenceCall }> = [];
  for (const call of calls) {
    const day = DIMENSIONS.day.of(call.log)!;
    if (day < query.fromDay || day > query.toDay) continue;
    const tags: Array<string | null> = byTag ? call.log.tags : [null];
    for (const tag of tags) {
      const values = new Map<SpendDimension, string | null>();
      for (const d of Object.keys(DIMENSIONS) as SpendDimension[]) values.set(d, DIMENSIONS[d].of(call.log));
      values.set('tag', tag);
      const kept = Object.entries(query.filters ?? {}).every(([name, list]) => {
        if (list === undefined) return true;
        const value = values.get(FILTERED[name as keyof SpendReportFilters]);
        return value !== null && value !== undefined && (list as string[]).includes(value);
      });
      if (kept) entries.push({ values, call });
    }
  }

  let top: Set<string | null> | null = null;
  const ranked = query.top ? query.groupBy.find((d) => d !== 'day')! : null;
  if (query.top && ranked) {
    const spend = new Map<string | null, number>();
    for (const e of entries) {
      const v = e.values.get(ranked)!;
      spend.set(v, (spend.get(v) ?? 0) + e.call.costNano);
    }
    const order = [...spend].sort(([a, x], [b, y]) => y - x || ((a ?? '') < (b ?? '') ? -1 : 1));
    top = new Set(order.slice(0, query.top.n).map(([v]) => v));
  }

  const groups = new Map<string, SpendReportRow>();
  for (const { values, call } of entries) {
    const other = top !== null && !top.has(values.get(ranked!)!);
    const row: Record<string, unknown> = {};
    for (const d of query.groupBy) row[DIMENSIONS[d].field] = other && d === ranked ? null : values.get(d);
    if (other) row.other = true;
    const id = JSON.stringify(row);
    const sums = groups.get(id) ?? {
      ...(row as Partial<SpendReportRow>),
      requests: 0,
      failedRequests: 0,
      spendNano: 0,
      promptTokens: 0,
      completionTokens: 0,
    };
    sums.requests += 1;
    sums.failedRequests += call.log.status === 'failure' ? 1 : 0;
    sums.spendNano += call.costNano;
    sums.promptTokens += call.log.promptTokens;
    sums.completionTokens += call.log.completionTokens;
    groups.set(id, sums);
  }
  return [...groups.values()];
}

/** Rows in one canonical order, to compare a backend's report with the reference whatever their order. */
export function canonicalRows(rows: SpendReportRow[]): SpendReportRow[] {
  return rows
    .map((row) => [JSON.stringify(Object.entries(row).sort(([a], [b]) => (a < b ? -1 : 1))), row] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, row]) => row);
}
