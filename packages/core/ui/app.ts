// The dashboard's browser code: plain DOM, one small render helper, uPlot for charts. Every URL is
// relative to the page (`ui/`), so the dashboard works wherever the management router is mounted.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';
import { OTHER_COLOUR, seriesColour } from './chart-palette.js';
import { usd, usdExact } from './money-format.js';

type Json = Record<string, unknown>;
type Child = Node | string | number | null | undefined | false;

const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';
const main = document.getElementById('main') as HTMLElement;
let chart: uPlot | null = null;

/** Creates an element: `h('button', { type: 'button', onclick }, 'Save')`. */
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, unknown> = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener);
    else if (k === 'class') el.className = String(v);
    else if (k in el && k !== 'list') (el as unknown as Record<string, unknown>)[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

async function api<T = Json>(path: string, body?: unknown): Promise<T> {
  const res = await fetch(`api/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json', 'x-csrf-token': csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    location.href = 'login';
    throw new ApiError('Signed out', 401);
  }
  const data = (await res.json().catch(() => null)) as Json | null;
  if (!res.ok) {
    const err = (data?.error ?? {}) as { message?: string };
    // A body that fails its schema answers LiteLLM's 422: `{"detail":[{"loc":["body","max_budget"],"msg"}]}`.
    const detail = Array.isArray(data?.detail)
      ? (data.detail as Array<{ loc?: unknown[]; msg?: string }>)
      : [];
    const fields = detail.map((d) => `${(d.loc ?? []).slice(1).join('.')}: ${d.msg ?? 'invalid'}`).join('; ');
    throw new ApiError(err.message ?? (fields || `HTTP ${res.status}`), res.status);
  }
  return data as T;
}

const num = (n: number) => n.toLocaleString('en-US');
const pct = (f: number) => (Number.isFinite(f) ? `${(f * 100).toFixed(f < 0.1 ? 1 : 0)}%` : '∞');
const when = (iso: string | null) => (iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 19) : '—');
const day = (d: Date) => d.toISOString().slice(0, 10);

function errorBox(error: unknown): HTMLElement {
  return h('p', { class: 'error', role: 'alert' }, error instanceof Error ? error.message : String(error));
}

function field(label: string, input: HTMLElement): HTMLElement {
  const id = `f-${label.toLowerCase().replace(/\W+/g, '-')}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

function select(name: string, options: [string, string][], value: string): HTMLSelectElement {
  return h(
    'select',
    { name },
    options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)),
  );
}

function bar(fraction: number): HTMLElement {
  const f = Number.isFinite(fraction) ? fraction : 1;
  const cls = f >= 1 ? 'over' : f >= 0.8 ? 'near' : 'ok';
  return h(
    'div',
    {
      class: `bar ${cls}`,
      role: 'meter',
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': Math.round(f * 100),
      'aria-label': `${pct(fraction)} of budget used`,
    },
    h('span', { style: `width:${Math.min(100, f * 100)}%` }),
  );
}

/** A column head: its label, and optionally the list's sort key and right alignment for numbers. */
interface Column {
  label: string;
  sort?: string;
  num?: boolean;
}

interface Sorting {
  sort: string;
  dir: 'asc' | 'desc';
  /** Called with the column's sort key and the direction to sort it in. */
  onSort: (sort: string, dir: 'asc' | 'desc') => void;
}

function table(headers: (string | Column)[], rows: Child[][], o: { sorting?: Sorting } = {}): HTMLElement {
  const cols = headers.map((c): Column => (typeof c === 'string' ? { label: c } : c));
  const head = (c: Column) => {
    const s = o.sorting;
    if (!c.sort || !s) return h('th', { scope: 'col', class: c.num ? 'num' : undefined }, c.label);
    const active = s.sort === c.sort;
    const next = active && s.dir === 'asc' ? 'desc' : active ? 'asc' : c.num ? 'desc' : 'asc';
    return h(
      'th',
      {
        scope: 'col',
        class: c.num ? 'num' : undefined,
        'aria-sort': active ? (s.dir === 'asc' ? 'ascending' : 'descending') : 'none',
      },
      h(
        'button',
        { type: 'button', class: 'sort', onclick: () => s.onSort(c.sort!, next) },
        c.label,
        active ? (s.dir === 'asc' ? ' ▲' : ' ▼') : '',
      ),
    );
  };
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, cols.map(head))),
      h(
        'tbody',
        {},
        rows.length
          ? rows.map((r) =>
              h(
                'tr',
                {},
                r.map((c, i) => h('td', { class: cols[i]?.num ? 'num' : undefined }, c)),
              ),
            )
          : h('tr', {}, h('td', { colSpan: cols.length, class: 'empty' }, 'Nothing to show.')),
      ),
    ),
  );
}

/** "1–25 of 355" and the page buttons; `go` draws another page. */
function pager(p: { page: number; pages: number; size: number; total: number }, go: (page: number) => void) {
  const first = p.total === 0 ? 0 : (p.page - 1) * p.size + 1;
  const last = Math.min(p.total, p.page * p.size);
  const button = (label: string, page: number, disabled: boolean) =>
    h('button', { type: 'button', class: 'secondary small', disabled, onclick: () => go(page) }, label);
  return h(
    'nav',
    { class: 'pager', 'aria-label': 'Pages' },
    h('span', { class: 'count', role: 'status' }, `${num(first)}–${num(last)} of ${num(p.total)}`),
    button('« First', 1, p.page <= 1),
    button('‹ Previous', p.page - 1, p.page <= 1),
    h('span', { class: 'page-no' }, `page ${num(p.page)} of ${num(p.pages)}`),
    button('Next ›', p.page + 1, p.page >= p.pages),
    button('Last »', p.pages, p.page >= p.pages),
  );
}

/** An amount by the money rule, its exact value on hover. */
function money(n: number): HTMLElement {
  return h('span', { class: 'money', title: usdExact(n) }, usd(n));
}

/** A team by its alias (its id on hover), linked to its page. */
function teamLink(id: string | null, alias?: string | null): Child {
  if (!id) return '—';
  return h('a', { href: `#/team/${encodeURIComponent(id)}`, title: `team id: ${id}` }, alias || id);
}

/** A key by its alias or masked name (its hash on hover), linked to its page. */
function keyLink(hash: string, name?: string | null): Child {
  return h(
    'a',
    { href: `#/key/${encodeURIComponent(hash)}`, title: `key hash: ${hash}` },
    name || `${hash.slice(0, 10)}…`,
  );
}

/** A user by email where one is recorded, its id on hover. */
function userName(id: string | null, email?: string | null): Child {
  if (!id) return '—';
  return h('span', { title: `user id: ${id}` }, email || id);
}

function formValues(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  new FormData(form).forEach((v, k) => {
    if (typeof v === 'string' && v.trim() !== '') out[k] = v.trim();
  });
  return out;
}

// ---- Spend ----------------------------------------------------------------------------------

async function spendPage(params: URLSearchParams): Promise<void> {
  const today = new Date();
  const v = (k: string, d = '') => params.get(k) ?? d;
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Spend filters' },
    field(
      'From',
      h('input', {
        type: 'date',
        name: 'from',
        value: v('from', day(new Date(today.getTime() - 29 * 864e5))),
      }),
    ),
    field('To', h('input', { type: 'date', name: 'to', value: v('to', day(today)) })),
    field(
      'Buckets',
      select(
        'granularity',
        [
          ['day', 'Day'],
          ['week', 'Week'],
          ['month', 'Month'],
        ],
        v('granularity', 'day'),
      ),
    ),
    field(
      'Group by',
      select(
        'groupBy',
        [
          ['none', 'Nothing'],
          ['team', 'Team'],
          ['user', 'User'],
          ['key', 'Key'],
          ['model', 'Model'],
          ['provider', 'Provider'],
          ['tag', 'Tag'],
        ],
        v('groupBy', 'team'),
      ),
    ),
    field('Team', h('input', { name: 'team', value: v('team'), placeholder: 'team id' })),
    field('User', h('input', { name: 'user', value: v('user') })),
    field('Key', h('input', { name: 'key', value: v('key'), placeholder: 'sk-… or hash' })),
    field('Model', h('input', { name: 'model', value: v('model') })),
    field('Provider', h('input', { name: 'provider', value: v('provider') })),
    field(
      'Tags',
      h('input', { name: 'tags', value: v('tags'), placeholder: 'a:b AND c:d, or a,b (any)', size: 28 }),
    ),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply')),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = `#/spend?${new URLSearchParams(formValues(form))}`;
  });
  const query = new URLSearchParams(formValues(form));
  const out = h('section', { 'aria-live': 'polite' }, h('p', {}, 'Loading…'));
  main.replaceChildren(h('h1', {}, 'Spend'), form, out);
  try {
    const r = await api<SpendView>(`spend?${query}`);
    const g = r.groupBy[0];
    const label = (value: string | null) => (value === null ? '(none)' : (r.labels[value] ?? value));
    const groupLabel = (row: SpendRow) =>
      row.other ? OTHER : label(g ? ((row as unknown as Json)[g] as string | null) : null);
    const totals = h(
      'div',
      { class: 'cards' },
      card('Spend', money(r.totals.spend)),
      card('Requests', num(r.totals.requests)),
      card('Failed', num(r.totals.failedRequests)),
      card('Tokens', num(r.totals.totalTokens)),
    );
    const chartBox = h('div', {
      class: 'chart',
      id: 'spend-chart',
      role: 'img',
      'aria-label': 'Spend over time chart',
    });
    const csv = h(
      'a',
      { class: 'button secondary', href: `api/spend.csv?${query}`, download: '' },
      'Export CSV',
    );
    // Team and key groups link to their pages, their ids on hover.
    const groupCell = (row: SpendRow): Child => {
      const value = g ? ((row as unknown as Json)[g] as string | null) : null;
      if (row.other || value === null) return groupLabel(row);
      if (g === 'team') return teamLink(value, r.labels[value]);
      if (g === 'key') return keyLink(value, r.labels[value]);
      return groupLabel(row);
    };
    // Cells are made for the rows on show only: a grouping by user has hundreds of rows.
    const cells = (row: SpendRow): Child[] => [
      row.period,
      ...(g ? [groupCell(row)] : []),
      num(row.requests),
      num(row.failedRequests),
      money(row.spend),
      num(row.promptTokens),
      num(row.completionTokens),
    ];
    const heads: (string | Column)[] = [
      'Period',
      ...(g ? [g[0]!.toUpperCase() + g.slice(1)] : []),
      { label: 'Requests', num: true },
      { label: 'Failed', num: true },
      { label: 'Spend', num: true },
      { label: 'Prompt tokens', num: true },
      { label: 'Completion tokens', num: true },
    ];
    // The report comes whole (the chart needs every row); the table shows it a page at a time.
    const breakdown = h('div', { id: 'breakdown' });
    const size = BREAKDOWN_PAGE;
    const pages = Math.max(1, Math.ceil(r.rows.length / size));
    const showPage = (page: number) =>
      breakdown.replaceChildren(
        table(heads, r.rows.slice((page - 1) * size, page * size).map(cells)),
        pager({ page, pages, size, total: r.rows.length }, showPage),
      );
    showPage(1);
    out.replaceChildren(
      totals,
      r.note ? h('p', { class: r.truncated ? 'warning' : 'note' }, r.note) : '',
      chartBox,
      h('div', { class: 'row-between' }, h('h2', {}, 'Breakdown'), csv),
      breakdown,
    );
    drawSpendChart(chartBox, r, g ? groupLabel : null);
  } catch (e) {
    out.replaceChildren(errorBox(e));
  }
}

interface SpendRow {
  period: string;
  /** Sums the groups outside a ranked report's top n. */
  other?: true;
  requests: number;
  failedRequests: number;
  spend: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}
interface SpendView {
  from: string;
  to: string;
  granularity: string;
  groupBy: string[];
  rows: SpendRow[];
  totals: SpendRow;
  labels: Record<string, string>;
  note: string | null;
  truncated: boolean;
  top: number | null;
}

const OTHER = '(other)';
/** Rows of the Spend breakdown a page shows. */
const BREAKDOWN_PAGE = 50;
/** Lines a chart draws before the rest is summed as "other" (the server ranks as many). */
const CHART_LINES = 10;

function card(title: string, value: Child): HTMLElement {
  return h(
    'div',
    { class: 'card' },
    h('div', { class: 'card-title' }, title),
    h('div', { class: 'card-value' }, value),
  );
}

/**
 * One line per group (the CHART_LINES largest; the rest, and a ranked report's "other" rows, summed
 * as "other"), one point per time bucket.
 */
function drawSpendChart(box: HTMLElement, r: SpendView, groupLabel: ((row: SpendRow) => string) | null) {
  chart?.destroy();
  if (r.rows.length === 0) {
    box.append(h('p', { class: 'empty' }, 'No spend in this range.'));
    return;
  }
  const periods = bucketsOf(r.from, r.to, r.granularity);
  const byGroup = new Map<string, Map<string, number>>();
  const sums = new Map<string, number>();
  for (const row of r.rows) {
    const key = groupLabel ? groupLabel(row) : 'Spend';
    const m = byGroup.get(key) ?? new Map<string, number>();
    m.set(row.period, (m.get(row.period) ?? 0) + row.spend);
    byGroup.set(key, m);
    sums.set(key, (sums.get(key) ?? 0) + row.spend);
  }
  const ranked = [...sums.entries()]
    .filter(([k]) => k !== OTHER)
    .sort((a, b) => b[1] - a[1])
    .map(([k]) => k);
  const top = ranked.slice(0, CHART_LINES);
  const series: [string, number[]][] = top.map((k) => [k, periods.map((p) => byGroup.get(k)?.get(p) ?? 0)]);
  const rest = [...ranked.slice(CHART_LINES), ...(sums.has(OTHER) ? [OTHER] : [])];
  if (rest.length > 0) {
    series.push([OTHER, periods.map((p) => rest.reduce((s, k) => s + (byGroup.get(k)?.get(p) ?? 0), 0))]);
  }
  const xs = periods.map((p) => Date.parse(`${p}T00:00:00Z`) / 1000);
  const width = Math.max(320, box.clientWidth || 900);
  chart = new uPlot(
    {
      width,
      height: 280,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      series: [
        { label: 'Day' },
        ...series.map(([name], i) => ({
          label: name,
          stroke: name === OTHER ? OTHER_COLOUR : seriesColour(i),
          width: 2,
          points: { show: periods.length < 60 },
          value: (_u: uPlot, v: number | null) => (v === null ? '—' : usd(v)),
        })),
      ],
      axes: [{}, { values: (_u, vals) => vals.map((x) => usd(x)), size: 100 }],
      legend: { live: true },
    },
    [xs, ...series.map(([, ys]) => ys)],
    box,
  );
}

/** Every bucket of the range (days, Monday weeks or months), so that the chart spans the whole range. */
function bucketsOf(from: string, to: string, granularity: string): string[] {
  const start = new Date(`${from}T00:00:00Z`);
  if (granularity === 'week') start.setUTCDate(start.getUTCDate() - ((start.getUTCDay() + 6) % 7));
  if (granularity === 'month') start.setUTCDate(1);
  const out: string[] = [];
  for (const d = start; day(d) <= to && out.length < 1000; ) {
    out.push(day(d));
    if (granularity === 'month') d.setUTCMonth(d.getUTCMonth() + 1);
    else d.setUTCDate(d.getUTCDate() + (granularity === 'week' ? 7 : 1));
  }
  return out;
}

// ---- Budgets --------------------------------------------------------------------------------

async function budgetsPage(params: URLSearchParams): Promise<void> {
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Budget filters' },
    field(
      'Used at least',
      select(
        'min',
        [
          ['0', 'any'],
          ['0.5', '50%'],
          ['0.8', '80%'],
          ['1', '100% (over)'],
        ],
        params.get('min') ?? '0.8',
      ),
    ),
    field(
      'Scope',
      select(
        'kind',
        [
          ['', 'all'],
          ['team', 'Teams'],
          ['user', 'Users'],
          ['key', 'Keys'],
        ],
        params.get('kind') ?? '',
      ),
    ),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply')),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = `#/budgets?${new URLSearchParams(formValues(form))}`;
  });
  const out = h('section', {}, h('p', {}, 'Loading…'));
  main.replaceChildren(h('h1', {}, 'Budgets'), form, out);
  try {
    const q = new URLSearchParams(formValues(form));
    if (!q.has('min')) q.set('min', '0');
    const r = await api<{ from: string; to: string; entries: Json[] }>(`budgets?${q}`);
    out.replaceChildren(
      h(
        'p',
        { class: 'note' },
        `Most at risk first: spent budgets, then those that run out before they reset (soonest first), then the rest. Burn rate: average daily spend ${r.from} to ${r.to} (today so far included), from the daily rollups.`,
      ),
      table(
        [
          'Scope',
          'Name',
          'Used',
          { label: 'Spend / cap', num: true },
          { label: 'Burn per day', num: true },
          'Runs out',
          'Resets',
        ],
        r.entries.map((e) => {
          const scope = e.scope as { kind: string; id: string };
          const runOut = e.projectedRunOut as string | null;
          const name = e.name as string | null;
          return [
            scope.kind,
            scope.kind === 'team'
              ? teamLink(scope.id, name)
              : scope.kind === 'key'
                ? keyLink(scope.id, name)
                : userName(scope.id, name),
            h(
              'div',
              { class: 'budget-cell' },
              h(
                'span',
                { class: `status ${e.status}` },
                e.status === 'over' ? 'over' : e.status === 'near' ? 'near' : 'ok',
              ),
              bar(e.usedFraction as number),
            ),
            h('span', {}, money(e.spend as number), ' / ', money(e.maxBudget as number)),
            money(e.burnRatePerDay as number),
            e.status === 'over'
              ? 'spent'
              : runOut
                ? Date.parse(runOut) - Date.now() > 3650 * 864e5
                  ? 'in over 10 years'
                  : when(runOut).slice(0, 10)
                : e.resetsFirst
                  ? 'resets first'
                  : 'not at this rate',
            e.resetAt ? when(e.resetAt as string).slice(0, 16) : 'never',
          ];
        }),
      ),
    );
  } catch (e) {
    out.replaceChildren(errorBox(e));
  }
}

// ---- Keys -----------------------------------------------------------------------------------

interface ListView {
  kind: string;
  q: string;
  sort: string;
  dir: 'asc' | 'desc';
  page: number;
  size: number;
  pages: number;
  total: number;
  total_unfiltered: number;
  rows: Json[];
}

/** A column of a list page: its head (with the server's sort key, if it sorts) and its cell. */
interface ListColumn extends Column {
  cell: (row: Json) => Child;
}

/**
 * One page of an entity list (`api/list/<kind>`): a search box, sortable heads, a count and a pager,
 * all kept in the hash (`#/keys?q=bot&sort=spend&dir=desc&page=2`), so a view can be linked to and the
 * browser's back button walks it.
 */
async function renderList(
  kind: string,
  params: URLSearchParams,
  box: HTMLElement,
  columns: ListColumn[],
): Promise<void> {
  const go = (changes: Record<string, string | null>) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === '') next.delete(k);
      else next.set(k, v);
    }
    const query = next.toString();
    location.hash = `#/${kind}${query ? `?${query}` : ''}`;
  };
  const search = h(
    'form',
    { class: 'filters search', role: 'search', 'aria-label': `Search ${kind}` },
    field(
      'Search',
      h('input', { name: 'q', type: 'search', value: params.get('q') ?? '', placeholder: 'name or id' }),
    ),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Search')),
  );
  search.addEventListener('submit', (e) => {
    e.preventDefault();
    go({ q: formValues(search).q ?? null, page: null });
  });
  box.replaceChildren(search, h('p', {}, 'Loading…'));
  try {
    const query = new URLSearchParams();
    for (const k of ['q', 'sort', 'dir', 'page']) if (params.get(k)) query.set(k, params.get(k)!);
    const r = await api<ListView>(`list/${kind}?${query}`);
    box.replaceChildren(
      search,
      h(
        'p',
        { class: 'note' },
        r.q
          ? `${num(r.total)} of ${num(r.total_unfiltered)} ${kind} match “${r.q}”.`
          : `${num(r.total)} ${kind}.`,
      ),
      table(
        columns,
        r.rows.map((row) => columns.map((c) => c.cell(row))),
        {
          sorting: {
            sort: r.sort,
            dir: r.dir,
            onSort: (sort, dir) => go({ sort, dir, page: null }),
          },
        },
      ),
      pager(r, (page) => go({ page: String(page) })),
    );
  } catch (e) {
    box.replaceChildren(search, errorBox(e));
  }
}

function budgetCell(row: Json): Child {
  const max = row.max_budget as number | null;
  if (max === null) return h('span', { class: 'muted' }, 'no cap');
  return h('div', { class: 'budget-cell' }, bar(row.used_fraction as number), money(max));
}

async function keysPage(params: URLSearchParams): Promise<void> {
  const notice = h('div', { 'aria-live': 'polite' });
  const gen = h(
    'form',
    { class: 'filters', 'aria-label': 'Generate a key' },
    field('Alias', h('input', { name: 'key_alias', placeholder: 'e.g. onboarding-bot' })),
    field('User id', h('input', { name: 'user_id' })),
    field('Team id', h('input', { name: 'team_id' })),
    field('Max budget (USD)', h('input', { name: 'max_budget', type: 'number', min: '0', step: 'any' })),
    field(
      'Budget period',
      select(
        'budget_duration',
        [
          ['', 'never resets'],
          ['1d', 'daily'],
          ['7d', 'weekly'],
          ['30d', '30 days'],
          ['1mo', 'monthly'],
        ],
        '',
      ),
    ),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Generate key')),
  );
  const list = h('section', { 'aria-label': 'All keys' });
  // The newest first, so a key just generated is the first row, whatever was searched or sorted.
  const newest = new URLSearchParams();
  const draw = (p: URLSearchParams): Promise<void> =>
    renderList(
      'keys',
      p,
      list,
      keyColumns(notice, () => draw(p)),
    );
  gen.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = formValues(gen);
    const body: Json = { ...v };
    if (v.max_budget) body.max_budget = Number(v.max_budget);
    try {
      const r = await api<{ key: string; key_name: string }>('keys/generate', body);
      gen.reset();
      showSecret(notice, 'New key: copy it now, it is shown only once.', r.key);
      // Back to the default view (no search, newest first) without redrawing the page, so the
      // secret stays on screen.
      if (location.hash !== '#/keys') history.replaceState(null, '', '#/keys');
      await draw(newest);
    } catch (err) {
      notice.replaceChildren(errorBox(err));
    }
  });
  main.replaceChildren(
    h('h1', {}, 'Keys'),
    h('h2', {}, 'Generate'),
    gen,
    notice,
    h('h2', {}, 'All keys'),
    list,
  );
  await draw(params);
}

function showSecret(box: HTMLElement, message: string, secret: string): void {
  const code = h('code', { class: 'secret', 'data-testid': 'new-key' }, secret);
  box.replaceChildren(
    h(
      'div',
      { class: 'secret-box', role: 'status' },
      h('p', {}, message),
      code,
      h(
        'button',
        { type: 'button', class: 'secondary', onclick: () => void navigator.clipboard?.writeText(secret) },
        'Copy',
      ),
      h('button', { type: 'button', class: 'secondary', onclick: () => box.replaceChildren() }, 'Done'),
    ),
  );
}

function keyColumns(notice: HTMLElement, redraw: () => Promise<void>): ListColumn[] {
  const act = (label: string, path: string, body: Json, confirmText?: string) =>
    h(
      'button',
      {
        type: 'button',
        class: 'small secondary',
        onclick: async () => {
          if (confirmText && !confirm(confirmText)) return;
          try {
            const res = await api<Json>(path, body);
            if (typeof res.key === 'string' && res.key.startsWith('sk-') && path === 'keys/regenerate') {
              showSecret(notice, 'Rotated: the new key is shown only once.', res.key);
            } else notice.replaceChildren(h('p', { class: 'note', role: 'status' }, `${label}: done.`));
            await redraw();
          } catch (err) {
            notice.replaceChildren(errorBox(err));
          }
        },
      },
      label,
    );
  const name = (k: Json) => (k.key_alias as string | null) ?? (k.key_name as string);
  return [
    { label: 'Key', sort: 'name', cell: (k) => keyLink(k.token as string, name(k)) },
    {
      label: 'Owner',
      sort: 'user',
      cell: (k) => userName(k.user_id as string | null),
    },
    {
      label: 'Team',
      sort: 'team',
      cell: (k) => teamLink(k.team_id as string | null, k.team_alias as string | null),
    },
    { label: 'Budget', sort: 'budget', cell: budgetCell },
    { label: 'Spend', sort: 'spend', num: true, cell: (k) => money(k.spend as number) },
    { label: 'Last used', cell: (k) => (k.last_used_day as string | null) ?? 'not in a year' },
    {
      label: 'State',
      cell: (k) =>
        k.blocked
          ? h('span', { class: 'status over' }, 'blocked')
          : h('span', { class: 'status ok' }, 'active'),
    },
    { label: 'Created', sort: 'created', cell: (k) => (k.created_at as string).slice(0, 10) },
    {
      label: 'Actions',
      cell: (k) => {
        const token = k.token as string;
        return h(
          'div',
          { class: 'row-actions', 'aria-label': `Actions for ${name(k)}` },
          k.blocked
            ? act('Unblock', 'keys/unblock', { key: token })
            : act('Block', 'keys/block', { key: token }),
          act(
            'Rotate',
            'keys/regenerate',
            { key: token, grace_period: '24h' },
            `Rotate ${name(k)}? The old key keeps working for 24 h.`,
          ),
          act(
            'Delete',
            'keys/delete',
            { keys: [token] },
            `Delete ${name(k)}? Calls with it will be refused.`,
          ),
        );
      },
    },
  ];
}

// ---- Teams, users, customers, tags ------------------------------------------------------------

const LIST_COLUMNS: Record<string, ListColumn[]> = {
  teams: [
    {
      label: 'Team',
      sort: 'name',
      cell: (t) => teamLink(t.team_id as string, t.team_alias as string | null),
    },
    { label: 'Keys', sort: 'keys', num: true, cell: (t) => num(t.keys as number) },
    { label: 'Budget', sort: 'budget', cell: budgetCell },
    { label: 'Spend', sort: 'spend', num: true, cell: (t) => money(t.spend as number) },
    { label: 'Resets', cell: (t) => when(t.budget_reset_at as string | null).slice(0, 16) },
    {
      label: 'State',
      cell: (t) =>
        t.blocked
          ? h('span', { class: 'status over' }, 'blocked')
          : h('span', { class: 'status ok' }, 'active'),
    },
    { label: 'Created', sort: 'created', cell: (t) => (t.created_at as string).slice(0, 10) },
  ],
  users: [
    { label: 'User', sort: 'name', cell: (u) => u.user_id as string },
    { label: 'Email', sort: 'email', cell: (u) => (u.user_email as string | null) ?? '—' },
    { label: 'Role', sort: 'role', cell: (u) => u.user_role as string },
    {
      label: 'Teams',
      cell: (u) => {
        const teams = u.teams as { team_id: string; team_alias: string | null }[];
        if (teams.length === 0) return '—';
        return h(
          'span',
          {},
          teams.flatMap((t, i) => [i ? ', ' : '', teamLink(t.team_id, t.team_alias)]),
        );
      },
    },
    { label: 'Budget', sort: 'budget', cell: budgetCell },
    { label: 'Spend', sort: 'spend', num: true, cell: (u) => money(u.spend as number) },
    { label: 'Created', sort: 'created', cell: (u) => (u.created_at as string).slice(0, 10) },
  ],
  customers: [
    { label: 'Customer', sort: 'name', cell: (c) => c.user_id as string },
    { label: 'Alias', sort: 'alias', cell: (c) => (c.alias as string | null) ?? '—' },
    { label: 'Budget', sort: 'budget', cell: budgetCell },
    { label: 'Spend', sort: 'spend', num: true, cell: (c) => money(c.spend as number) },
    {
      label: 'State',
      cell: (c) =>
        c.blocked
          ? h('span', { class: 'status over' }, 'blocked')
          : h('span', { class: 'status ok' }, 'active'),
    },
    { label: 'Created', sort: 'created', cell: (c) => (c.created_at as string).slice(0, 10) },
  ],
  tags: [
    { label: 'Tag', sort: 'name', cell: (t) => t.name as string },
    { label: 'Description', cell: (t) => (t.description as string | null) ?? '—' },
    { label: 'Budget', sort: 'budget', cell: budgetCell },
    { label: 'Spend', sort: 'spend', num: true, cell: (t) => money(t.spend as number) },
    { label: 'Created', sort: 'created', cell: (t) => (t.created_at as string).slice(0, 10) },
  ],
};

const LIST_TITLES: Record<string, string> = {
  teams: 'Teams',
  users: 'Users',
  customers: 'Customers',
  tags: 'Tags',
};

async function entityListPage(kind: string, params: URLSearchParams): Promise<void> {
  const box = h('section', {});
  const note =
    kind === 'customers' || kind === 'tags'
      ? h(
          'p',
          { class: 'note' },
          `Spend here is the ${kind === 'tags' ? 'tag' : 'customer'}'s budget counter, kept only where a budget was set; the Spend page has every call by ${kind === 'tags' ? 'tag' : 'end user'}.`,
        )
      : null;
  main.replaceChildren(h('h1', {}, LIST_TITLES[kind]!), note ?? '', box);
  await renderList(kind, params, box, LIST_COLUMNS[kind]!);
}

// ---- Models ---------------------------------------------------------------------------------

async function modelsPage(): Promise<void> {
  const out = h('section', {}, h('p', {}, 'Loading…'));
  main.replaceChildren(h('h1', {}, 'Models'), out);
  try {
    const r = await api<{
      days: number;
      recent_window_minutes: number;
      recent_sample: number;
      recent_sample_capped: boolean;
      limits_note: string;
      models: Json[];
    }>('models');
    const ms = (v: unknown) => (v === null ? '—' : `${num(v as number)} ms`);
    out.replaceChildren(
      h(
        'p',
        { class: 'note' },
        `Requests, errors and tokens: the last ${r.days} days (daily rollups). Latency, health, RPM and TPM: the ${num(r.recent_sample)} most recent calls of the last ${r.recent_window_minutes} minutes${r.recent_sample_capped ? ' (capped)' : ''}. ${r.limits_note}`,
      ),
      table(
        [
          'Model',
          'Health',
          'Requests',
          'Error rate',
          'p50',
          'p95',
          'Prompt tokens',
          'Completion tokens',
          'Spend',
          'RPM',
          'TPM',
        ],
        r.models.map((m) => [
          m.model as string,
          h(
            'span',
            {
              class: `status ${m.health === 'healthy' ? 'ok' : m.health === 'idle' ? 'idle' : m.health === 'degraded' ? 'near' : 'over'}`,
            },
            m.health as string,
          ),
          num(m.requests as number),
          pct(m.error_rate as number),
          ms(m.latency_p50_ms),
          ms(m.latency_p95_ms),
          num(m.prompt_tokens as number),
          num(m.completion_tokens as number),
          usd(m.spend as number),
          num(m.rpm as number),
          num(m.tpm as number),
        ]),
      ),
    );
  } catch (e) {
    out.replaceChildren(errorBox(e));
  }
}

// ---- Logs -----------------------------------------------------------------------------------

async function logsPage(params: URLSearchParams): Promise<void> {
  const v = (k: string) => params.get(k) ?? '';
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Log filters' },
    field('Key', h('input', { name: 'key', value: v('key'), placeholder: 'sk-… or hash' })),
    field('Team', h('input', { name: 'team', value: v('team') })),
    field('User', h('input', { name: 'user', value: v('user') })),
    field('Model', h('input', { name: 'model', value: v('model') })),
    field('Tag', h('input', { name: 'tag', value: v('tag'), placeholder: 'a:b AND c:d' })),
    field(
      'Status',
      select(
        'status',
        [
          ['', 'any'],
          ['success', 'success'],
          ['failure', 'failure'],
        ],
        v('status'),
      ),
    ),
    field('From', h('input', { type: 'date', name: 'from', value: v('from') })),
    field('To', h('input', { type: 'date', name: 'to', value: v('to') })),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply')),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = `#/logs?${new URLSearchParams(formValues(form))}`;
  });
  const out = h('section', {}, h('p', {}, 'Loading…'));
  main.replaceChildren(h('h1', {}, 'Logs'), form, out);
  try {
    const r = await api<{ logs: Json[]; next: string | null }>(`logs?${params}`);
    const next = r.next ? new URLSearchParams(params) : null;
    next?.set('before', r.next!);
    out.replaceChildren(
      logTable(r.logs),
      h(
        'div',
        { class: 'pager' },
        params.has('before') ? h('a', { class: 'button secondary', href: '#/logs' }, 'Newest') : null,
        next ? h('a', { class: 'button secondary', href: `#/logs?${next}` }, 'Older →') : null,
      ),
    );
  } catch (e) {
    out.replaceChildren(errorBox(e));
  }
}

/** Calls, newest first, with the names of their team, key and user (ids on hover). */
function logTable(logs: Json[]): HTMLElement {
  return table(
    [
      'Time (UTC)',
      'Model',
      'Team',
      'Key',
      'User',
      'Tags',
      'Status',
      { label: 'Tokens', num: true },
      { label: 'Cost', num: true },
      { label: 'Latency', num: true },
      '',
    ],
    logs.map((l) => [
      when(l.startTime as string),
      l.model as string,
      teamLink(l.team_id as string | null, l.team_alias as string | null),
      keyLink(l.api_key as string, l.key_alias as string | null),
      userName(l.user as string | null, l.user_email as string | null),
      h('span', { class: 'tags' }, (l.request_tags as string[]).join(', ') || '—'),
      h('span', { class: `status ${l.status === 'success' ? 'ok' : 'over'}` }, l.status as string),
      num(l.total_tokens as number),
      h(
        'span',
        {},
        money(l.spend as number),
        l.estimated
          ? h(
              'abbr',
              {
                class: 'est',
                title: 'estimated: the provider reported no usage, tokens were counted locally',
              },
              ' est.',
            )
          : null,
      ),
      `${num(l.latency_ms as number)} ms`,
      h('a', { href: `#/logs/${encodeURIComponent(l.request_id as string)}`, class: 'nowrap' }, 'Details'),
    ]),
  );
}

/** A name with its id beside it, for detail views. */
function withId(name: Child, id: string): HTMLElement {
  return h('span', {}, name, ' ', h('code', { class: 'id' }, id));
}

async function logDetailPage(id: string): Promise<void> {
  main.replaceChildren(h('h1', {}, 'Call'), h('p', {}, 'Loading…'));
  try {
    const l = await api<Json>(`logs/${encodeURIComponent(id)}`);
    const md = l.metadata as Json;
    const rows: [string, Child][] = [
      ['Request id', l.request_id as string],
      ['Call type', l.call_type as string],
      ['Model', l.model as string],
      ['Provider', (l.custom_llm_provider as string | null) ?? '—'],
      ['Key', withId(keyLink(l.api_key as string, l.key_alias as string | null), l.api_key as string)],
      [
        'Team',
        l.team_id
          ? withId(teamLink(l.team_id as string, l.team_alias as string | null), l.team_id as string)
          : '—',
      ],
      [
        'User',
        l.user ? withId(userName(l.user as string, l.user_email as string | null), l.user as string) : '—',
      ],
      ['End user', (l.end_user as string | null) ?? '—'],
      ['Tags', (l.request_tags as string[]).join(', ') || '—'],
      ['Status', `${l.status as string} (HTTP ${md.http_status as number})`],
      ['Started', when(l.startTime as string)],
      ['Latency', `${num(l.latency_ms as number)} ms`],
      [
        'Tokens',
        `${num(l.prompt_tokens as number)} prompt + ${num(l.completion_tokens as number)} completion`,
      ],
      [
        'Cost',
        `${usd(l.spend as number)} (exactly ${usdExact(l.spend as number)})${l.estimated ? ', estimated: tokens counted locally' : ''}`,
      ],
    ];
    main.replaceChildren(
      h('p', {}, h('a', { href: '#/logs' }, '← All logs')),
      h('h1', {}, 'Call ', h('code', {}, l.request_id as string)),
      h(
        'dl',
        { class: 'detail' },
        rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
      ),
      h('h2', {}, 'Prompt and response'),
      h('p', { class: 'note' }, l.bodies_note as string),
    );
  } catch (e) {
    main.replaceChildren(h('p', {}, h('a', { href: '#/logs' }, '← All logs')), errorBox(e));
  }
}

// ---- A team's or a key's page ----------------------------------------------------------------

interface EntityView {
  kind: 'team' | 'key';
  name: string;
  record: Json;
  keys?: Json[];
  spend: number;
  budget: (Json & { usedFraction: number; status: string }) | null;
  limits: Json;
  from: string;
  to: string;
  daily: { day: string; spend: number; requests: number }[];
  top_models: { model: string; spend: number; requests: number; tokens: number }[];
  recent: Json[];
}

async function entityPage(kind: 'team' | 'key', id: string): Promise<void> {
  const back =
    kind === 'team' ? h('a', { href: '#/teams' }, '← All teams') : h('a', { href: '#/keys' }, '← All keys');
  main.replaceChildren(h('p', {}, back), h('p', {}, 'Loading…'));
  try {
    const v = await api<EntityView>(`${kind}/${encodeURIComponent(id)}`);
    const rec = v.record;
    const b = v.budget;
    const runOut = b ? runOutText(b) : 'no cap';
    const idText = kind === 'team' ? (rec.team_id as string) : (rec.token as string);
    const facts: [string, Child][] =
      kind === 'team'
        ? [
            ['Team id', h('code', { class: 'id' }, idText)],
            ['Models', (rec.models as string[]).join(', ') || 'all'],
            ['State', rec.blocked ? 'blocked' : 'active'],
            ['Created', when(rec.created_at as string)],
          ]
        : [
            ['Key hash', h('code', { class: 'id' }, idText)],
            [
              'Team',
              rec.team_id
                ? withId(
                    teamLink(rec.team_id as string, rec.team_alias as string | null),
                    rec.team_id as string,
                  )
                : '—',
            ],
            [
              'Owner',
              rec.user_id
                ? withId(
                    userName(rec.user_id as string, rec.user_email as string | null),
                    rec.user_id as string,
                  )
                : '—',
            ],
            ['Models', (rec.models as string[]).join(', ') || 'all'],
            ['Tags', (rec.tags as string[]).join(', ') || '—'],
            ['State', rec.blocked ? 'blocked' : 'active'],
            ['Expires', when(rec.expires as string | null)],
            ['Created', when(rec.created_at as string)],
          ];
    const limit = (label: string, value: unknown): [string, Child] => [
      label,
      value === null ? 'none' : num(value as number),
    ];
    const modelLimits = (m: unknown) =>
      Object.entries(m as Record<string, number>)
        .map(([model, n]) => `${model}: ${num(n)}`)
        .join(', ') || 'none';
    const limits: [string, Child][] = [
      [
        'Budget',
        b
          ? `${usd(b.maxBudget as number)}${b.budgetDuration ? ` per ${b.budgetDuration}` : ''}${b.resetAt ? `, resets ${when(b.resetAt as string).slice(0, 16)}` : ''}`
          : 'no cap',
      ],
      limit('Requests per minute', v.limits.rpm_limit),
      limit('Tokens per minute', v.limits.tpm_limit),
      limit('Parallel requests', v.limits.max_parallel_requests),
      ['Per-model RPM', modelLimits(v.limits.model_rpm_limit)],
      ['Per-model TPM', modelLimits(v.limits.model_tpm_limit)],
    ];
    const chartBox = h('div', {
      class: 'chart',
      id: 'entity-chart',
      role: 'img',
      'aria-label': 'Spend per day chart',
    });
    main.replaceChildren(
      h('p', {}, back),
      h('h1', {}, `${kind === 'team' ? 'Team' : 'Key'} `, h('span', { title: idText }, v.name)),
      h(
        'div',
        { class: 'cards' },
        card('Spend this period', money(v.spend)),
        card(
          'Budget used',
          b ? h('div', { class: 'budget-cell' }, pct(b.usedFraction), bar(b.usedFraction)) : 'no cap',
        ),
        card(
          `Burn per day (${b ? (b.burn_days as number) : 7} d)`,
          b ? money(b.burnRatePerDay as number) : '—',
        ),
        card('Runs out', runOut),
      ),
      h('h2', {}, `Spend per day, ${v.from} to ${v.to}`),
      chartBox,
      h(
        'div',
        { class: 'split' },
        h(
          'section',
          {},
          h('h2', {}, 'Top models (30 days)'),
          table(
            [
              'Model',
              { label: 'Requests', num: true },
              { label: 'Tokens', num: true },
              { label: 'Spend', num: true },
            ],
            v.top_models.map((m) => [m.model, num(m.requests), num(m.tokens), money(m.spend)]),
          ),
        ),
        h(
          'section',
          {},
          h('h2', {}, 'Limits'),
          h(
            'dl',
            { class: 'detail', 'aria-label': 'Limits' },
            limits.flatMap(([k, x]) => [h('dt', {}, k), h('dd', {}, x)]),
          ),
          h('h2', {}, 'Details'),
          h(
            'dl',
            { class: 'detail' },
            facts.flatMap(([k, x]) => [h('dt', {}, k), h('dd', {}, x)]),
          ),
        ),
      ),
      ...(v.keys
        ? [
            h('h2', {}, `Keys (${num(v.keys.length)})`),
            h(
              'p',
              { class: 'key-links' },
              v.keys.length
                ? v.keys.flatMap((k, i) => [
                    i ? ', ' : '',
                    keyLink(k.token as string, (k.key_alias as string | null) ?? (k.key_name as string)),
                  ])
                : 'none',
            ),
          ]
        : []),
      h('h2', {}, 'Recent calls'),
      logTable(v.recent),
      h(
        'p',
        {},
        h('a', { href: `#/logs?${new URLSearchParams({ [kind]: idText })}` }, `All calls of this ${kind} →`),
      ),
    );
    drawDailyChart(chartBox, v);
  } catch (e) {
    main.replaceChildren(h('p', {}, back), errorBox(e));
  }
}

function runOutText(b: Json): string {
  if (b.status === 'over') return 'spent';
  const at = b.projectedRunOut as string | null;
  if (at) return Date.parse(at) - Date.now() > 3650 * 864e5 ? 'in over 10 years' : when(at).slice(0, 10);
  return b.resetsFirst ? 'resets first' : 'not at this rate';
}

/** Spend per day (every day of the range, 0 where nothing was spent) and, with a cap, the cap's line. */
function drawDailyChart(box: HTMLElement, v: EntityView): void {
  chart?.destroy();
  const days = bucketsOf(v.from, v.to, 'day');
  const byDay = new Map(v.daily.map((d) => [d.day, d.spend]));
  const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  chart = new uPlot(
    {
      width: Math.max(320, box.clientWidth - 24 || 900),
      height: 220,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      series: [
        { label: 'Day' },
        {
          label: 'Spend',
          stroke: seriesColour(0),
          fill: `${seriesColour(0)}33`,
          width: 2,
          value: (_u: uPlot, x: number | null) => (x === null ? '—' : usd(x)),
        },
      ],
      axes: [{}, { values: (_u, vals) => vals.map((x) => usd(x)), size: 90 }],
    },
    [xs, days.map((d) => byDay.get(d) ?? 0)],
    box,
  );
}

// ---- Router ---------------------------------------------------------------------------------

async function route(): Promise<void> {
  const raw = location.hash.replace(/^#\/?/, '') || 'spend';
  const [path = 'spend', query = ''] = raw.split('?');
  const params = new URLSearchParams(query);
  const [section = 'spend', id] = path.split('/');
  const current = section === 'team' ? 'teams' : section === 'key' ? 'keys' : section;
  for (const a of Array.from(document.querySelectorAll<HTMLAnchorElement>('header nav a'))) {
    if (a.dataset.section === current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  chart?.destroy();
  chart = null;
  if (section === 'budgets') await budgetsPage(params);
  else if (section === 'keys') await keysPage(params);
  else if (section in LIST_TITLES) await entityListPage(section, params);
  else if ((section === 'team' || section === 'key') && id) await entityPage(section, decodeURIComponent(id));
  else if (section === 'models') await modelsPage();
  else if (section === 'logs' && id) await logDetailPage(decodeURIComponent(id));
  else if (section === 'logs') await logsPage(params);
  else await spendPage(params);
  // A new section: keyboard and screen-reader users continue from its content, not the nav link.
  if (lastSection !== null && lastSection !== section) main.focus({ preventScroll: true });
  lastSection = section;
  // When the page was drawn, in ms since navigation began (the browser tests report it, see docs).
  document.body.dataset.readyMs = String(Math.round(performance.now()));
  document.body.dataset.ready = section;
}

let lastSection: string | null = null;

window.addEventListener('hashchange', () => void route());
void route();
