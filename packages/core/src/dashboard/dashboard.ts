import type { ManagementApi } from '../admin/management-api.js';
import type { ResolvedOptions } from '../config.js';
import { SpendGuardError } from '../errors.js';
import type { StoreReader } from '../guard-api.js';
import type { GuardLogger } from '../guard-logger.js';
import { assertQuery, assertText, dateInRange, INPUT_LIMITS } from '../input-hygiene.js';
import { keyHashFromKeyOrHash } from '../keys.js';
import { nanoToUsd } from '../money.js';
import type { GuardResponse } from '../pipeline/call-types.js';
import {
  type BudgetQueries,
  bucketStart,
  type SpendGranularity,
  type SpendGroup,
  type SpendQueries,
  toReportDay,
} from '../queries.js';
import { canonicalPath, hasControlCharacter } from '../request-path.js';
import type { ScopeKind, SpendLogQuery, SpendLogRecord, SpendStorage } from '../storage/storage-contract.js';
import { utcDay } from '../storage/storage-contract.js';
import type { StorageGate } from '../storage/storage-gate.js';
import { loadDashboardAssets } from './dashboard-assets.js';
import { entityView, logView, namesForLogs } from './dashboard-entity.js';
import { LIST_KINDS, type ListKind, listPage } from './dashboard-lists.js';
import { appPage, FAVICON_SVG, loginPage } from './dashboard-pages.js';
import {
  DashboardSessions,
  readCookie,
  SESSION_COOKIE,
  type Session,
  sessionCookie,
} from './dashboard-session.js';
import { LoginThrottle } from './login-throttle.js';

/** A request below the management router's mount, e.g. `GET /ui/api/spend`. */
export interface DashboardRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  header: (name: string) => string | null | undefined;
  /**
   * The raw body text, or a body the app's own parser already made (JSON or a form); unused when
   * `readBody` is given.
   */
  body?: string | unknown;
  /**
   * Reads the body (as `body` above), at most `limitBytes` when given; called only once the session
   * (or, for a sign-in, the throttle) let the request in.
   */
  readBody?: (limitBytes?: number) => Promise<string | unknown>;
  /** The connection itself is TLS (an `x-forwarded-proto: https` header counts too). */
  tls: boolean;
  /** The client's address, for sign-in throttling (Express: `req.ip`, so its `trust proxy` applies). */
  clientIp?: string;
}

/** What the adapter sends: any body (HTML, CSS, JS, JSON, CSV), with its headers. */
export interface DashboardResponse {
  status: number;
  headers: Record<string, string>;
  body: string | Uint8Array;
}

const DAY_MS = 86_400_000;
const warnedOfMasterPassword = new WeakSet<object>();
/** A sign-in form is a username and a password: its body is read up to this, never the general limit. */
const LOGIN_BODY_LIMIT = 16 * 1024;
const GROUPS: SpendGroup[] = ['team', 'user', 'key', 'model', 'provider', 'customer', 'tag'];
/**
 * Groupings that can have hundreds or thousands of groups: the Spend page shows their top
 * CHART_TOP_N by spend over the range plus one "other" series (a chart cannot show 200 lines, and a
 * report of one row per user per day is what made the page slow), ranked by the storage.
 */
const RANKED_GROUPS = new Set<SpendGroup>(['user', 'key', 'customer', 'tag']);
const CHART_TOP_N = 10;
/** Most logs an AND-of-tags spend query reads (the rollups cannot answer it, see `spendFromLogs`). */
const AND_TAGS_LOG_CAP = 50_000;
/** The recent window of spend logs the Models page reads latency and current load from. */
const RECENT_WINDOW_MS = 60 * 60_000;
const RECENT_LOG_CAP = 1000;

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
};

type Handler = (req: DashboardRequest, session: Session, storage: SpendStorage) => Promise<DashboardResponse>;

/**
 * The dashboard at `ui/` of the management router: a login, a single-page app (its bundle built
 * with the package) and the JSON endpoints it reads, all behind a session. Every change needs the
 * session's CSRF token. The adapters only translate requests and responses.
 */
/** What the dashboard needs of the guard (a narrow view, so that this module does not import it). */
export interface DashboardHost extends StoreReader {
  options: Pick<ResolvedOptions, 'dashboard' | 'masterKey'>;
  logger: GuardLogger;
  gate: Pick<StorageGate, 'call'>;
  spend: Pick<SpendQueries, 'report'>;
  budgets: Pick<BudgetQueries, 'overview'>;
  management: Pick<ManagementApi, 'handleAsAdmin'>;
  /** Any error as the JSON response the adapters send. */
  errorResponse(error: unknown): GuardResponse;
}

export class Dashboard {
  private readonly sessions: DashboardSessions | null;
  private readonly throttle: LoginThrottle;
  private readonly ttlMs: number;
  private readonly api: Record<string, Handler>;

  constructor(private readonly guard: DashboardHost) {
    const o = guard.options.dashboard ?? {};
    this.ttlMs = o.sessionTtlMs ?? 12 * 3_600_000;
    const password = o.password ?? guard.options.masterKey;
    this.sessions = password ? new DashboardSessions(o.username ?? 'admin', password, this.ttlMs) : null;
    if (password && password === guard.options.masterKey && !warnedOfMasterPassword.has(guard.logger)) {
      warnedOfMasterPassword.add(guard.logger); // once per logger: once per process with the default one
      guard.logger.warn(
        'the dashboard password is the master key: whoever guesses it at ui/login also holds the management API. Set dashboard.password (UI_PASSWORD in the demo) to a password of its own.',
      );
    }
    this.throttle = new LoginThrottle({
      perClient: o.maxLoginFailuresPerClient ?? 5,
      overall: o.maxLoginFailures ?? 50,
      windowMs: o.loginWindowMs ?? 15 * 60_000,
    });
    this.api = {
      'GET /session': async (_r, s) => json(200, { username: s.username, csrf_token: s.csrfToken }),
      'GET /spend': async (r, _s, st) => json(200, await this.spend(r, st, { everyGroup: false })),
      // The export lists every group, not the chart's top n.
      'GET /spend.csv': async (r, _s, st) => spendCsv(await this.spend(r, st, { everyGroup: true })),
      'GET /budgets': async (r) => json(200, await this.budgets(r)),
      'POST /keys/generate': (r) => this.manage(r, '/key/generate'),
      'POST /keys/block': (r) => this.manage(r, '/key/block'),
      'POST /keys/unblock': (r) => this.manage(r, '/key/unblock'),
      'POST /keys/delete': (r) => this.manage(r, '/key/delete'),
      'POST /keys/regenerate': (r) => this.manage(r, '/key/regenerate'),
      'GET /models': async (r, _s, st) => json(200, await this.models(r, st)),
      'GET /logs': async (r, _s, st) => json(200, await this.logs(r, st)),
    };
  }

  /** True for `ui` and everything below it. */
  handles(path: string): boolean {
    const p = canonicalPath(path);
    return p === '/ui' || p.startsWith('/ui/');
  }

  async handle(req: DashboardRequest): Promise<DashboardResponse | null> {
    if (!this.handles(req.path)) return null;
    req = { ...req, path: canonicalPath(req.path) };
    try {
      return await this.route(req);
    } catch (error) {
      const answer: GuardResponse = this.guard.errorResponse(error);
      return json(answer.status, answer.body, answer.headers);
    }
  }

  private async route(req: DashboardRequest): Promise<DashboardResponse> {
    const method = req.method.toUpperCase();
    const sub = req.path.slice('/ui'.length);
    // `ui` without its slash: send the browser into the folder so relative URLs resolve below it.
    if (sub === '') return redirect('ui/');
    if (!this.sessions) {
      return json(
        503,
        new SpendGuardError(
          'BAD_REQUEST',
          'The dashboard needs a password: set the dashboard.password option (UI_PASSWORD in the demo) or a master key.',
        ).toJSON(),
      );
    }
    const now = this.guard.now();
    const sessions = this.sessions;
    const cookie = readCookie(req.header('cookie'), SESSION_COOKIE);
    // From the cookie alone, before any body is read: storage errors answer 503, never "signed out".
    const session = cookie
      ? await this.guard.gate.call('dashboard session', (st) => sessions.verify(st, cookie, now))
      : null;
    const secure = req.tls || (req.header('x-forwarded-proto') ?? '').split(',')[0]?.trim() === 'https';

    // The icon carries nothing a session guards; served to the sign-in page too.
    if (method === 'GET' && (sub === '/favicon.svg' || sub === '/favicon.ico')) {
      return {
        status: 200,
        headers: { ...SECURITY_HEADERS, 'content-type': 'image/svg+xml', 'cache-control': 'max-age=86400' },
        body: FAVICON_SVG,
      };
    }
    if (sub === '/login') {
      if (method === 'GET') return session ? redirect('./') : html(200, loginPage(null));
      if (method === 'POST') return this.login(req, secure, now);
    }
    if (!session) {
      // Pages send the browser to the login; everything else answers 401 JSON.
      if (method === 'GET' && sub === '/') return redirect('login');
      return json(401, unauthorized().toJSON());
    }
    if (method !== 'GET' && method !== 'HEAD') {
      if (req.readBody) req = { ...req, body: await req.readBody() };
      const form = method === 'POST' ? formOf(req) : {};
      const token =
        req.header('x-csrf-token') ?? (typeof form.csrf_token === 'string' ? form.csrf_token : null);
      if (!this.sessions.checkCsrf(session, token)) {
        return json(403, {
          error: {
            message:
              'Missing or invalid CSRF token: send the x-csrf-token header the dashboard page carries.',
            type: 'auth_error',
            param: 'csrf_token',
            code: '403',
          },
        });
      }
    }
    if (sub === '/logout' && method === 'POST') {
      await this.guard.gate.call('dashboard logout', (st) => sessions.revoke(st, session));
      return redirect('login', { 'set-cookie': sessionCookie('', 0, secure) });
    }
    if (sub === '/' && method === 'GET') {
      const { version } = await loadDashboardAssets();
      return html(200, appPage(session.username, session.csrfToken, version));
    }
    if (method === 'GET' && (sub === '/assets/app.js' || sub === '/assets/app.css')) {
      const assets = await loadDashboardAssets();
      const name = sub === '/assets/app.js' ? 'app.js' : 'app.css';
      const type = name === 'app.js' ? 'text/javascript; charset=utf-8' : 'text/css; charset=utf-8';
      // The bundle is code, the same for everyone, and holds no data: asked for by its current
      // version, the browser keeps it (private: shared caches still never store what a session got).
      const cache =
        req.query.get('v') === assets.version ? 'private, max-age=31536000, immutable' : 'no-store';
      return {
        status: 200,
        headers: { ...SECURITY_HEADERS, 'content-type': type, 'cache-control': cache },
        body: assets[name],
      };
    }
    if (sub.startsWith('/api/')) {
      const rest = sub.slice('/api'.length);
      assertQuery(req.query); // its values reach storage as filters
      if (method === 'GET' && rest.startsWith('/logs/')) {
        const id = decodeParam(rest.slice('/logs/'.length), 'request_id');
        assertText(id, 'request_id', INPUT_LIMITS.nameLength);
        return this.guard.read('dashboard log detail', (st) => this.logDetail(id, st));
      }
      const list = /^\/list\/([a-z]+)$/.exec(rest);
      if (method === 'GET' && list && (LIST_KINDS as readonly string[]).includes(list[1]!)) {
        const kind = list[1] as ListKind;
        return this.guard.read(`dashboard ${kind} list`, async (st) =>
          json(200, await listPage(kind, req.query, st, this.guard.now())),
        );
      }
      const entity = /^\/(team|key)\/(.+)$/.exec(rest);
      if (method === 'GET' && entity) {
        const kind = entity[1] as 'team' | 'key';
        const id = decodeParam(entity[2]!, kind === 'team' ? 'team_id' : 'key');
        assertText(id, kind === 'team' ? 'team_id' : 'key', INPUT_LIMITS.nameLength);
        const extra = [...req.query.keys()][0];
        if (extra !== undefined)
          throw badRequest(`unknown query parameter ${extra}: this page takes none`, extra);
        return this.guard.read(`dashboard ${kind} page`, async (st) => {
          const view = await entityView(kind, id, st, this.guard.now());
          if (!view) return json(404, new SpendGuardError('NOT_FOUND', `No ${kind} ${id}`).toJSON());
          return json(200, view);
        });
      }
      const handler = this.api[`${method} ${rest}`];
      if (handler) return this.guard.read(`dashboard ${method} ${rest}`, (st) => handler(req, session, st));
    }
    return json(404, new SpendGuardError('NOT_FOUND', `No dashboard route ${method} ${req.path}`).toJSON());
  }

  private async login(req: DashboardRequest, secure: boolean, now: Date): Promise<DashboardResponse> {
    // Login has no session yet to bind a token to; refuse a form posted from another origin instead.
    const origin = req.header('origin');
    const host = req.header('x-forwarded-host') ?? req.header('host');
    if (origin && origin !== 'null' && host && originHost(origin) !== host) {
      return signInRefused(req, 'FORBIDDEN', 'This sign-in form was posted from another site.');
    }
    // Throttled before the body is read or the password looked at: a refused guess costs nothing.
    const client = req.clientIp || 'unknown';
    const nowMs = now.getTime();
    const retryAfter = this.throttle.begin(client, nowMs);
    if (retryAfter > 0) {
      return signInRefused(req, 'RATE_LIMITED', `Too many failed sign-ins; try again in ${retryAfter} s.`, {
        'retry-after': String(retryAfter),
      });
    }
    if (req.readBody) req = { ...req, body: await req.readBody(LOGIN_BODY_LIMIT) };
    const form = formOf(req);
    const username = typeof form.username === 'string' ? form.username : '';
    const password = typeof form.password === 'string' ? form.password : '';
    if (!this.sessions!.checkCredentials(username, password)) {
      return signInRefused(req, 'INVALID_MASTER_KEY', 'Wrong username or password.');
    }
    this.throttle.succeeded(client, nowMs);
    const sessions = this.sessions!;
    const { cookieValue } = await this.guard.gate.call('dashboard sign-in', (st) => sessions.create(st, now));
    return redirect('./', {
      'set-cookie': sessionCookie(cookieValue, Math.floor(this.ttlMs / 1000), secure),
    });
  }

  /** A management route as the admin (the session stands in for the master key); LiteLLM's answer as is. */
  private async manage(req: DashboardRequest, path: string): Promise<DashboardResponse> {
    const answer = await this.guard.management.handleAsAdmin({
      method: 'POST',
      path,
      query: new URLSearchParams(),
      header: (n) => (n.toLowerCase() === 'content-type' ? 'application/json' : null),
      body: req.body,
    });
    if (!answer) {
      return json(
        404,
        new SpendGuardError(
          'NOT_FOUND',
          `POST ${path} is not available: this deployment's management API has no such route.`,
        ).toJSON(),
      );
    }
    return json(answer.status, answer.body, answer.headers);
  }

  /**
   * The Spend page: a report from the rollups (for a grouping with many groups, its top n and
   * "other", unless `everyGroup`), or from the logs for an AND of tags.
   */
  private async spend(req: DashboardRequest, storage: SpendStorage, o: { everyGroup: boolean }) {
    const q = req.query;
    const now = this.guard.now();
    const to = toReportDay(q.get('to') || utcDay(now), 'to');
    const from = toReportDay(
      q.get('from') || utcDay(new Date(Date.parse(`${to}T00:00:00Z`) - 29 * DAY_MS)),
      'from',
    );
    if (from > to) throw badRequest('from must not be after to', 'from');
    const granularity = (q.get('granularity') || 'day') as SpendGranularity;
    if (!['day', 'week', 'month', 'total'].includes(granularity)) {
      throw badRequest("granularity must be 'day', 'week', 'month' or 'total'", 'granularity');
    }
    const groupParam = q.get('groupBy') || '';
    const groupBy = groupParam === '' || groupParam === 'none' ? [] : [groupParam as SpendGroup];
    if (groupBy[0] && !GROUPS.includes(groupBy[0]))
      throw badRequest(`groupBy: unknown ${groupParam}`, 'groupBy');
    const filters = {
      team: listParam(q, 'team'),
      user: listParam(q, 'user'),
      key: listParam(q, 'key'),
      model: listParam(q, 'model'),
      provider: listParam(q, 'provider'),
    };
    const tagExpr = (q.get('tags') ?? '').trim();
    const allTags = tagExpr
      .split(/\s+AND\s+/i)
      .map((t) => t.trim())
      .filter(Boolean);
    let report: SpendView;
    if (allTags.length > 1) {
      report = await spendFromLogs(storage, { from, to, granularity, groupBy, filters, allTags });
    } else {
      const anyTags = tagExpr
        ? tagExpr
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean)
        : undefined;
      const top = groupBy[0] && RANKED_GROUPS.has(groupBy[0]) && !o.everyGroup ? CHART_TOP_N : null;
      const r = await this.guard.spend.report({
        from,
        to,
        granularity,
        groupBy,
        filters: { ...filters, tags: anyTags },
        ...(top ? { top: { by: 'spend' as const, n: top } } : {}),
      });
      const notes = [
        top && r.rows.some((row) => row.other)
          ? `The ${top} ${groupBy[0]}s with the most spend from ${from} to ${to}; every other ${groupBy[0]} is summed as "other" (Export CSV lists them all).`
          : null,
        groupBy[0] === 'tag' || anyTags
          ? 'From the daily tag rollups: a request counts once under each tag it carries; untagged requests are not shown.'
          : null,
      ].filter(Boolean);
      report = {
        ...r,
        source: 'rollups',
        truncated: false,
        top,
        note: notes.length ? notes.join(' ') : null,
      };
    }
    return { ...report, labels: await labelsFor(storage, report) };
  }

  private async budgets(req: DashboardRequest) {
    const q = req.query;
    const min = q.get('min');
    const kind = q.get('kind');
    if (kind && !['team', 'user', 'key'].includes(kind))
      throw badRequest("kind must be 'team', 'user' or 'key'", 'kind');
    const minUsedFraction = min === null || min === '' ? 0.8 : Number(min);
    if (!Number.isFinite(minUsedFraction) || minUsedFraction < 0)
      throw badRequest('min must be a number >= 0', 'min');
    const overview = await this.guard.budgets.overview({
      minUsedFraction,
      kinds: kind ? [kind as ScopeKind] : undefined,
      limit: 200,
    });
    return { ...overview, entries: [...overview.entries].sort(byRisk) };
  }

  /** The Models page: totals from the rollups, latency and current load from the recent logs. */
  private async models(req: DashboardRequest, storage: SpendStorage) {
    const days = Number(req.query.get('days') || 7);
    if (!Number.isSafeInteger(days) || days < 1 || days > 366)
      throw badRequest('days must be 1 to 366', 'days');
    const now = this.guard.now();
    const report = await this.guard.spend.report({
      from: new Date(now.getTime() - (days - 1) * DAY_MS),
      to: now,
      groupBy: ['model'],
    });
    const recent = await storage.querySpendLogs({
      startTime: new Date(now.getTime() - RECENT_WINDOW_MS),
      limit: RECENT_LOG_CAP,
    });
    const byModel = new Map<string, SpendLogRecord[]>();
    for (const log of recent) byModel.set(log.model, [...(byModel.get(log.model) ?? []), log]);
    const names = new Set([...report.rows.map((r) => r.model), ...byModel.keys()]);
    const minuteAgo = now.getTime() - 60_000;
    const models = [...names].sort().map((model) => {
      const total = report.rows.find((r) => r.model === model);
      const logs = byModel.get(model) ?? [];
      const latencies = logs.map((l) => l.endTime.getTime() - l.startTime.getTime()).sort((a, b) => a - b);
      const failures = logs.filter((l) => l.status === 'failure').length;
      const lastMinute = logs.filter((l) => l.startTime.getTime() >= minuteAgo);
      const recentErrorRate = logs.length ? failures / logs.length : null;
      return {
        model,
        requests: total?.requests ?? 0,
        failed_requests: total?.failedRequests ?? 0,
        error_rate: total?.requests ? total.failedRequests / total.requests : 0,
        prompt_tokens: total?.promptTokens ?? 0,
        completion_tokens: total?.completionTokens ?? 0,
        spend: total?.spend ?? 0,
        recent_requests: logs.length,
        recent_error_rate: recentErrorRate,
        latency_p50_ms: percentile(latencies, 0.5),
        latency_p95_ms: percentile(latencies, 0.95),
        rpm: lastMinute.length,
        tpm: lastMinute.reduce((n, l) => n + l.totalTokens, 0),
        health:
          recentErrorRate === null
            ? 'idle'
            : recentErrorRate >= 0.5 && failures >= 2
              ? 'down'
              : recentErrorRate >= 0.1
                ? 'degraded'
                : 'healthy',
      };
    });
    return {
      days,
      recent_window_minutes: RECENT_WINDOW_MS / 60_000,
      recent_sample: recent.length,
      recent_sample_capped: recent.length >= RECENT_LOG_CAP,
      limits_note:
        'RPM and TPM are the calls and tokens of the last minute, over every key. Per-model limits are set per key (model_rpm_limit, model_tpm_limit) and enforced when a call is admitted; there is no limit for a model as a whole to compare against.',
      models,
    };
  }

  private async logs(req: DashboardRequest, storage: SpendStorage) {
    const q = req.query;
    const query: SpendLogQuery = { limit: Math.min(Math.max(Number(q.get('limit') || 50), 1), 200) };
    const key = q.get('key');
    if (key) query.apiKeyHash = keyHashFromKeyOrHash(key);
    if (q.get('team')) query.teamId = q.get('team')!;
    if (q.get('user')) query.userId = q.get('user')!;
    if (q.get('model')) query.model = q.get('model')!;
    const status = q.get('status');
    if (status) {
      if (status !== 'success' && status !== 'failure')
        throw badRequest("status must be 'success' or 'failure'", 'status');
      query.status = status;
    }
    const tags = (q.get('tag') ?? '')
      .split(/\s+AND\s+|,/i)
      .map((t) => t.trim())
      .filter(Boolean);
    if (tags.length) query.tags = tags;
    if (q.get('from')) query.startTime = new Date(`${toReportDay(q.get('from')!, 'from')}T00:00:00.000Z`);
    if (q.get('to'))
      query.endTime = new Date(Date.parse(`${toReportDay(q.get('to')!, 'to')}T00:00:00.000Z`) + DAY_MS);
    const before = q.get('before');
    if (before) {
      const bar = before.indexOf('|');
      const startTime = new Date(before.slice(0, bar));
      if (bar === -1 || !dateInRange(startTime.getTime()))
        throw badRequest('before must be a cursor from a previous page', 'before');
      query.before = { startTime, requestId: before.slice(bar + 1) };
    }
    const logs = await storage.querySpendLogs(query);
    const last = logs.at(-1);
    const names = await namesForLogs(storage, logs);
    return {
      logs: logs.map((l) => logView(l, names)),
      next: logs.length === query.limit && last ? `${last.startTime.toISOString()}|${last.requestId}` : null,
    };
  }

  private async logDetail(requestId: string, storage: SpendStorage): Promise<DashboardResponse> {
    const [log] = await storage.querySpendLogs({ requestId, limit: 1 });
    if (!log) return json(404, new SpendGuardError('NOT_FOUND', `No spend log ${requestId}`).toJSON());
    const names = await namesForLogs(storage, [log]);
    return json(200, {
      ...logView(log, names),
      prompt: null,
      response: null,
      bodies_note:
        'spendguard does not store prompt or response bodies today: only usage, cost and attribution are recorded.',
    });
  }
}

type BudgetEntry = Awaited<ReturnType<BudgetQueries['overview']>>['entries'][number];

/**
 * The budgets page's order, most at risk first: spent budgets (most over first), then those that run
 * out before they reset (soonest first), then the rest (most used first); ties by kind and id.
 */
export function byRisk(a: BudgetEntry, b: BudgetEntry): number {
  const rank = (e: BudgetEntry) => (e.status === 'over' ? 0 : e.projectedRunOut ? 1 : 2);
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (ra === 1) {
    const d = a.projectedRunOut!.getTime() - b.projectedRunOut!.getTime();
    if (d !== 0) return d;
  } else if (a.usedFraction !== b.usedFraction) {
    return a.usedFraction === b.usedFraction ? 0 : a.usedFraction > b.usedFraction ? -1 : 1;
  }
  const x = `${a.scope.kind}:${a.scope.id}`;
  const y = `${b.scope.kind}:${b.scope.id}`;
  return x < y ? -1 : x > y ? 1 : 0;
}

type SpendView = Awaited<ReturnType<SpendQueries['report']>> & {
  source: 'rollups' | 'logs';
  truncated: boolean;
  /** The chart's top n, when the report ranks its groups; `null`: every group. */
  top: number | null;
  note: string | null;
};

/**
 * Spend of requests carrying every one of `allTags`. The tag rollup holds one row per (request's) tag,
 * so it cannot tell which requests carried two tags together: this reads the spend logs instead, up
 * to AND_TAGS_LOG_CAP of them, newest first, and says so when it stopped early.
 */
async function spendFromLogs(
  storage: SpendStorage,
  o: {
    from: string;
    to: string;
    granularity: SpendGranularity;
    groupBy: SpendGroup[];
    filters: Record<'team' | 'user' | 'key' | 'model' | 'provider', string[] | undefined>;
    allTags: string[];
  },
): Promise<SpendView> {
  const keys = o.filters.key?.map(keyHashFromKeyOrHash);
  const base: SpendLogQuery = {
    tags: o.allTags,
    startTime: new Date(`${o.from}T00:00:00.000Z`),
    endTime: new Date(Date.parse(`${o.to}T00:00:00.000Z`) + DAY_MS),
    limit: 1000,
    // A single value narrows the indexed read; lists are checked below.
    apiKeyHash: keys?.length === 1 ? keys[0] : undefined,
    teamId: o.filters.team?.length === 1 ? o.filters.team[0] : undefined,
    userId: o.filters.user?.length === 1 ? o.filters.user[0] : undefined,
    model: o.filters.model?.length === 1 ? o.filters.model[0] : undefined,
  };
  const keep = (l: SpendLogRecord) =>
    (!o.filters.team || o.filters.team.includes(l.teamId ?? '')) &&
    (!o.filters.user || o.filters.user.includes(l.userId ?? '')) &&
    (!keys || keys.includes(l.apiKeyHash)) &&
    (!o.filters.model || o.filters.model.includes(l.model)) &&
    (!o.filters.provider || o.filters.provider.includes(l.provider ?? ''));
  const g = o.groupBy[0];
  const rows = new Map<string, Record<string, unknown> & Totals>();
  const totals = emptyTotals();
  let read = 0;
  let truncated = false;
  let before: SpendLogQuery['before'];
  for (;;) {
    const page = await storage.querySpendLogs({ ...base, before });
    for (const l of page) {
      if (!keep(l)) continue;
      const period = bucketStart(utcDay(l.startTime), o.granularity, o.from);
      const values: (string | null)[] = g ? groupValues(l, g) : [null];
      for (const value of values) {
        const id = JSON.stringify([period, value]);
        let row = rows.get(id);
        if (!row) {
          row = { period, ...(g ? { [g]: value } : {}), ...emptyTotals() };
          rows.set(id, row);
        }
        add(row, l);
      }
      add(totals, l);
    }
    read += page.length;
    const last = page.at(-1);
    if (page.length < 1000 || !last) break;
    if (read >= AND_TAGS_LOG_CAP) {
      truncated = true;
      break;
    }
    before = { startTime: last.startTime, requestId: last.requestId };
  }
  const sorted = [...rows.values()].sort((a, b) => {
    if (a.period !== b.period) return (a.period as string) < (b.period as string) ? -1 : 1;
    const x = g ? (a[g] as string | null) : null;
    const y = g ? (b[g] as string | null) : null;
    if (x === y) return 0;
    if (x === null) return -1;
    if (y === null) return 1;
    return x < y ? -1 : 1;
  });
  return {
    from: o.from,
    to: o.to,
    granularity: o.granularity,
    groupBy: o.groupBy,
    rows: sorted as unknown as SpendView['rows'],
    totals,
    source: 'logs',
    truncated,
    top: null,
    note: `The daily rollups keep spend per single tag, so they cannot tell which requests carried ${o.allTags.join(' AND ')} together: these sums are counted from the spend logs (${read} read${truncated ? `; stopped at ${AND_TAGS_LOG_CAP}, so older requests in the range are missing` : ''}).`,
  };
}

type Totals = ReturnType<typeof emptyTotals>;

function emptyTotals() {
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

function add(t: Totals, l: SpendLogRecord) {
  t.requests += 1;
  if (l.status === 'failure') t.failedRequests += 1;
  t.spendNano += l.spendNano;
  t.spend = nanoToUsd(t.spendNano);
  t.promptTokens += l.promptTokens;
  t.completionTokens += l.completionTokens;
  t.totalTokens += l.promptTokens + l.completionTokens;
}

function groupValues(l: SpendLogRecord, g: SpendGroup): (string | null)[] {
  switch (g) {
    case 'team':
      return [l.teamId];
    case 'user':
      return [l.userId];
    case 'key':
      return [l.apiKeyHash];
    case 'model':
      return [l.model];
    case 'provider':
      return [l.provider];
    case 'customer':
      return [l.endUser];
    case 'tag':
      return l.tags;
  }
}

/** Display names for the team ids and key hashes a report shows. */
async function labelsFor(storage: SpendStorage, report: SpendView): Promise<Record<string, string>> {
  const labels: Record<string, string> = {};
  const g = report.groupBy[0];
  if (g !== 'team' && g !== 'key') return labels;
  const ids = new Set(report.rows.map((r) => (r as unknown as Record<string, unknown>)[g] as string | null));
  // Independent look-ups, issued together (a pool serves them in parallel).
  await Promise.all(
    [...ids].map(async (id) => {
      if (!id) return;
      if (g === 'team') {
        const team = await storage.getTeam(id);
        if (team?.teamAlias) labels[id] = team.teamAlias;
      } else {
        const key = await storage.getKey(id);
        if (key) labels[id] = key.keyAlias ?? key.keyName;
      }
    }),
  );
  return labels;
}

function spendCsv(report: SpendView & { labels: Record<string, string> }): DashboardResponse {
  const g = report.groupBy[0];
  const header = [
    'period',
    ...(g ? [g] : []),
    'requests',
    'failed_requests',
    'spend_usd',
    'prompt_tokens',
    'completion_tokens',
  ];
  const lines = [header.join(',')];
  for (const r of report.rows as unknown as Record<string, unknown>[]) {
    const group = g ? (r[g] as string | null) : undefined;
    const label = group && report.labels[group] ? `${report.labels[group]} (${group})` : (group ?? '');
    lines.push(
      [
        r.period,
        ...(g ? [label] : []),
        r.requests,
        r.failedRequests,
        r.spend,
        r.promptTokens,
        r.completionTokens,
      ]
        .map(csvCell)
        .join(','),
    );
  }
  return {
    status: 200,
    headers: {
      ...SECURITY_HEADERS,
      'content-type': 'text/csv; charset=utf-8',
      'content-disposition': `attachment; filename="spend-${report.from}-to-${report.to}.csv"`,
    },
    body: `${lines.join('\r\n')}\r\n`,
  };
}

/** RFC 4180 quoting, and a leading quote on anything a spreadsheet would run as a formula. */
function csvCell(value: unknown): string {
  let s = value === null || value === undefined ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(s) && typeof value === 'string') s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

function listParam(q: URLSearchParams, name: string): string[] | undefined {
  const values = q
    .getAll(name)
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter(Boolean);
  return values.length ? values : undefined;
}

/** A login or logout form, urlencoded or JSON, or what the app's own body parser made of it. */
function formOf(req: DashboardRequest): Record<string, unknown> {
  const body = req.body;
  if (body && typeof body === 'object' && !(body instanceof Uint8Array))
    return body as Record<string, unknown>;
  if (typeof body !== 'string' || body.trim() === '') return {};
  if ((req.header('content-type') ?? '').includes('json') || body.trimStart().startsWith('{')) {
    try {
      const parsed: unknown = JSON.parse(body);
      return parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  }
  return Object.fromEntries(new URLSearchParams(body));
}

/** The host of an `Origin` header; `null` when it is not a URL (then it matches no host). */
function originHost(origin: string): string | null {
  return URL.canParse(origin) ? new URL(origin).host : null;
}

/** A percent-encoded path segment, decoded; a malformed escape or a control character is the caller's 400. */
function decodeParam(raw: string, param: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw badRequest(`${param} in the path is not valid percent-encoding (e.g. %ZZ)`, param);
  }
  if (hasControlCharacter(value)) throw badRequest(`${param} must not hold control characters`, param);
  return value;
}

/**
 * A refused sign-in (401, 403, 429): the sign-in page with the message for a browser's form (it
 * accepts HTML), LiteLLM's JSON error for any other client.
 */
function signInRefused(
  req: DashboardRequest,
  code: 'INVALID_MASTER_KEY' | 'FORBIDDEN' | 'RATE_LIMITED',
  message: string,
  headers: Record<string, string> = {},
): DashboardResponse {
  const error = new SpendGuardError(code, message, { headers });
  if (!(req.header('accept') ?? '').includes('text/html')) return json(error.status, error.toJSON(), headers);
  const page = html(error.status, loginPage(message));
  return { ...page, headers: { ...page.headers, ...headers } };
}

function unauthorized(): SpendGuardError {
  return new SpendGuardError('MISSING_KEY', 'Not signed in to the dashboard: log in at ui/login.');
}

function badRequest(message: string, param: string): SpendGuardError {
  return new SpendGuardError('BAD_REQUEST', message, { param });
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): DashboardResponse {
  return {
    status,
    headers: { ...SECURITY_HEADERS, ...headers, 'content-type': 'application/json; charset=utf-8' },
    body: JSON.stringify(body),
  };
}

function html(status: number, body: string): DashboardResponse {
  return { status, headers: { ...SECURITY_HEADERS, 'content-type': 'text/html; charset=utf-8' }, body };
}

function redirect(location: string, headers: Record<string, string> = {}): DashboardResponse {
  return { status: 303, headers: { ...SECURITY_HEADERS, ...headers, location }, body: '' };
}
