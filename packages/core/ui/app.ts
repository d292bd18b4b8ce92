// The dashboard's browser code: plain DOM, one small render helper, uPlot for charts. Every URL is
// relative to the page (`ui/`), so the dashboard works wherever the management router is mounted.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';

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
    throw new ApiError(err.message ?? `HTTP ${res.status}`, res.status);
  }
  return data as T;
}

function usd(n: number): string {
  if (n === 0) return '$0';
  if (Math.abs(n) >= 100) return `$${n.toLocaleString('en-US', { maximumFractionDigits: 0 })}`;
  if (Math.abs(n) >= 0.01) return `$${n.toFixed(2)}`;
  // Sub-cent amounts (one call of a small model) keep three significant digits.
  return `$${n.toFixed(Math.min(9, 2 - Math.floor(Math.log10(Math.abs(n)))))}`;
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

function table(headers: string[], rows: Child[][], caption?: string): HTMLElement {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      caption ? h('caption', {}, caption) : null,
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          headers.map((x) => h('th', { scope: 'col' }, x)),
        ),
      ),
      h(
        'tbody',
        {},
        rows.length
          ? rows.map((r) =>
              h(
                'tr',
                {},
                r.map((c) => h('td', {}, c)),
              ),
            )
          : h('tr', {}, h('td', { colSpan: headers.length, class: 'empty' }, 'Nothing to show.')),
      ),
    ),
  );
}

function formValues(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  new FormData(form).forEach((v, k) => {
    if (typeof v === 'string' && v.trim() !== '') out[k] = v.trim();
  });
  return out;
}

// ---- Spend ----------------------------------------------------------------------------------

const PALETTE = [
  '#2f5bd3',
  '#e0702b',
  '#2a9d6f',
  '#b8398f',
  '#7a5cd6',
  '#c9a227',
  '#2396b5',
  '#d2453b',
  '#6b7a8f',
];

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
      card('Spend', usd(r.totals.spend)),
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
    const rows = r.rows.map((row) => [
      row.period,
      ...(g ? [groupLabel(row)] : []),
      num(row.requests),
      num(row.failedRequests),
      usd(row.spend),
      num(row.promptTokens),
      num(row.completionTokens),
    ]);
    out.replaceChildren(
      totals,
      r.note ? h('p', { class: r.truncated ? 'warning' : 'note' }, r.note) : '',
      chartBox,
      h('div', { class: 'row-between' }, h('h2', {}, 'Breakdown'), csv),
      table(
        [
          'Period',
          ...(g ? [g[0]!.toUpperCase() + g.slice(1)] : []),
          'Requests',
          'Failed',
          'Spend',
          'Prompt tokens',
          'Completion tokens',
        ],
        rows,
      ),
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
/** Lines a chart draws before the rest is summed as "other" (the server ranks as many). */
const CHART_LINES = 10;

function card(title: string, value: string): HTMLElement {
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
          stroke: PALETTE[i % PALETTE.length],
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
        `Burn rate: average daily spend ${r.from} to ${r.to} (today so far included), from the daily rollups.`,
      ),
      table(
        ['Scope', 'Name', 'Used', '', 'Spend / cap', 'Burn per day', 'Runs out', 'Resets'],
        r.entries.map((e) => {
          const scope = e.scope as { kind: string; id: string };
          const runOut = e.projectedRunOut as string | null;
          return [
            `${scope.kind} ${scope.kind === 'key' ? `${scope.id.slice(0, 10)}…` : scope.id}`,
            (e.name as string | null) ?? '—',
            h(
              'span',
              { class: `status ${e.status}` },
              e.status === 'over' ? 'over' : e.status === 'near' ? 'near' : 'ok',
            ),
            bar(e.usedFraction as number),
            `${usd(e.spend as number)} / ${usd(e.maxBudget as number)}`,
            usd(e.burnRatePerDay as number),
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

async function keysPage(): Promise<void> {
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
  gen.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = formValues(gen);
    const body: Json = { ...v };
    if (v.max_budget) body.max_budget = Number(v.max_budget);
    try {
      const r = await api<{ key: string; key_name: string }>('keys/generate', body);
      gen.reset();
      showSecret(notice, 'New key: copy it now, it is shown only once.', r.key);
      await renderKeys(list, notice);
    } catch (err) {
      notice.replaceChildren(errorBox(err));
    }
  });
  const list = h('section', {}, h('p', {}, 'Loading…'));
  main.replaceChildren(
    h('h1', {}, 'Keys'),
    h('h2', {}, 'Generate'),
    gen,
    notice,
    h('h2', {}, 'All keys'),
    list,
  );
  await renderKeys(list, notice);
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

async function renderKeys(list: HTMLElement, notice: HTMLElement): Promise<void> {
  try {
    const r = await api<{ keys: Json[] }>('keys');
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
              await renderKeys(list, notice);
            } catch (err) {
              notice.replaceChildren(errorBox(err));
            }
          },
        },
        label,
      );
    list.replaceChildren(
      table(
        ['Key', 'Owner', 'Team', 'Budget', 'Spend', 'Last used', 'State', 'Actions'],
        r.keys.map((k) => {
          const token = k.token as string;
          const max = k.max_budget as number | null;
          const spend = k.spend as number;
          const name = (k.key_alias as string | null) ?? (k.key_name as string);
          return [
            h('span', { title: token }, name),
            (k.user_id as string | null) ?? '—',
            (k.team_id as string | null) ?? '—',
            max === null
              ? 'no cap'
              : h(
                  'div',
                  { class: 'budget-cell' },
                  bar(max > 0 ? spend / max : Number.POSITIVE_INFINITY),
                  usd(max),
                ),
            usd(spend),
            when(k.last_used as string | null),
            k.blocked
              ? h('span', { class: 'status over' }, 'blocked')
              : h('span', { class: 'status ok' }, 'active'),
            h(
              'div',
              { class: 'row-actions', 'aria-label': `Actions for ${name}` },
              k.blocked
                ? act('Unblock', 'keys/unblock', { key: token })
                : act('Block', 'keys/block', { key: token }),
              act(
                'Rotate',
                'keys/regenerate',
                { key: token, grace_period: '24h' },
                `Rotate ${name}? The old key keeps working for 24 h.`,
              ),
              act(
                'Delete',
                'keys/delete',
                { keys: [token] },
                `Delete ${name}? Calls with it will be refused.`,
              ),
            ),
          ];
        }),
      ),
    );
  } catch (e) {
    list.replaceChildren(errorBox(e));
  }
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
      table(
        ['Time (UTC)', 'Model', 'Team', 'User', 'Tags', 'Status', 'Tokens', 'Cost', 'Latency', ''],
        r.logs.map((l) => [
          when(l.startTime as string),
          l.model as string,
          (l.team_id as string | null) ?? '—',
          (l.user as string | null) ?? '—',
          (l.request_tags as string[]).join(', ') || '—',
          h('span', { class: `status ${l.status === 'success' ? 'ok' : 'over'}` }, l.status as string),
          num(l.total_tokens as number),
          h(
            'span',
            {},
            usd(l.spend as number),
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
          h('a', { href: `#/logs/${encodeURIComponent(l.request_id as string)}` }, 'Details'),
        ]),
      ),
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
      ['Key', (l.key_name as string | null) ?? (l.api_key as string)],
      ['Team', (l.team_id as string | null) ?? '—'],
      ['User', (l.user as string | null) ?? '—'],
      ['End user', (l.end_user as string | null) ?? '—'],
      ['Tags', (l.request_tags as string[]).join(', ') || '—'],
      ['Status', `${l.status as string} (HTTP ${md.http_status as number})`],
      ['Started', when(l.startTime as string)],
      ['Latency', `${num(l.latency_ms as number)} ms`],
      [
        'Tokens',
        `${num(l.prompt_tokens as number)} prompt + ${num(l.completion_tokens as number)} completion`,
      ],
      ['Cost', `${usd(l.spend as number)}${l.estimated ? ' (estimated: tokens counted locally)' : ''}`],
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

// ---- Router ---------------------------------------------------------------------------------

async function route(): Promise<void> {
  const raw = location.hash.replace(/^#\/?/, '') || 'spend';
  const [path = 'spend', query = ''] = raw.split('?');
  const params = new URLSearchParams(query);
  const [section = 'spend', id] = path.split('/');
  for (const a of Array.from(document.querySelectorAll<HTMLAnchorElement>('nav a'))) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  chart?.destroy();
  chart = null;
  if (section === 'budgets') await budgetsPage(params);
  else if (section === 'keys') await keysPage();
  else if (section === 'models') await modelsPage();
  else if (section === 'logs' && id) await logDetailPage(decodeURIComponent(id));
  else if (section === 'logs') await logsPage(params);
  else await spendPage(params);
  // A new section: keyboard and screen-reader users continue from its content, not the nav link.
  if (lastSection !== null && lastSection !== section) main.focus({ preventScroll: true });
  lastSection = section;
  document.body.dataset.ready = section;
}

let lastSection: string | null = null;

window.addEventListener('hashchange', () => void route());
void route();
