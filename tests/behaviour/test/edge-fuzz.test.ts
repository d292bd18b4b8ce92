/**
 * Fuzzing the edge: random requests (method, path with malformed escapes, query, credentials, headers,
 * body) against the management API, the dashboard and the guarded routes, on both adapters and both
 * stores (a SQLite file, Postgres). Properties: never a 5xx, never a dropped connection or a logged
 * internal error, and a refused request (4xx) leaves the store exactly as it was (a raw dump of every
 * table before and after). Fixed seed, bounded runs; the figures are printed at the end.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SpendStorage } from '@spendguard/core';
import { pgRawReader, pgStorage } from '@spendguard/storage-pg';
import { sqliteRawReader, sqliteStorage } from '@spendguard/storage-sqlite';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { sharedPostgres } from '../../multi-instance/test/postgres.js';
import { ADAPTERS, admin, MASTER, startTestApp, type TestApp } from './harness.js';

const SEED = 20_261_204;
const RUNS = 250;
const T0 = new Date('2026-03-10T12:00:00.000Z');
const DASHBOARD_PASSWORD = 'fuzz-dashboard-password';

// DATABASE_URL or the local server, else a throwaway one; in CI a missing server fails, never skips.
const server = await sharedPostgres();
const url = server.url;
const pool = new pg.Pool({ connectionString: url, max: 2 });
const schemas: string[] = [];
afterAll(async () => {
  for (const name of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
  await pool.end();
  await server.close();
});

const STORES = [
  {
    name: 'sqlite',
    open(): { storage: SpendStorage; dump: () => Promise<string> } {
      const storage = sqliteStorage({
        path: join(mkdtempSync(join(tmpdir(), 'spendguard-fuzz-')), 'spend.db'),
      });
      return { storage, dump: () => sqliteRawReader(storage).dumpText() };
    },
  },
  {
    name: 'postgres',
    open(): { storage: SpendStorage; dump: () => Promise<string> } {
      const schema = `sg_fuzz_${randomBytes(6).toString('hex')}`;
      schemas.push(schema);
      const storage = pgStorage({ connectionString: url, schema });
      return { storage, dump: () => pgRawReader(storage).dumpText() };
    },
  },
];

const ROUTES = [
  'POST /team/new',
  'POST /user/new',
  'POST /key/generate',
  'GET /key/info',
  'GET /team/info',
  'GET /user/info',
  'GET /spend/logs',
  'GET /spend/tags',
  'POST /key/update',
  'POST /key/block',
  'POST /key/unblock',
  'POST /key/delete',
  'POST /key/regenerate',
  'GET /key/list',
  'POST /team/update',
  'POST /team/delete',
  'GET /team/list',
  'POST /team/member_add',
  'POST /team/member_update',
  'POST /team/member_delete',
  'POST /user/update',
  'POST /user/delete',
  'GET /user/list',
  'GET /global/spend/report',
  'GET /user/daily/activity',
  'GET /team/daily/activity',
  'POST /customer/new',
  'GET /customer/info',
  'POST /customer/update',
  'POST /customer/block',
  'POST /tag/new',
  'POST /tag/info',
  'GET /tag/list',
  'POST /tag/update',
  'POST /budget/reset',
  'POST /ui/login',
  'POST /ui/logout',
  'GET /ui/api/session',
  'GET /ui/api/spend',
  'GET /ui/api/budgets',
  'GET /ui/api/keys',
  'POST /ui/api/keys/generate',
  'POST /ui/api/keys/block',
  'GET /ui/api/logs',
  'GET /ui/api/models',
  'POST /v1/chat/completions',
  'POST /v1/embeddings',
  'POST /v1/messages',
  'POST /v1/responses',
  'POST /v1beta/models/gemini-2.0-flash:generateContent',
];

/** What the generators may name: ids that exist, so that some requests reach their handlers. */
interface Known {
  key: string;
  keyHash: string;
  adminKey: string;
  cookie: string;
  csrf: string;
}

/** Printable Latin-1 (what Node lets into a header value), with a bias to the troublesome. */
const headerText = fc.oneof(
  fc.string({
    unit: fc.constantFrom(...'\t !"#%&\'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~\u0080\u00a0\u00ff'.split('')),
  }),
  fc.constantFrom(
    '',
    ' ',
    'Bearer',
    'Bearer ',
    'Bearer sk-',
    'sk-',
    '%ZZ',
    '\u00ff\u00fe',
    'null',
    'a'.repeat(600),
  ),
);
const escapes = fc.constantFrom(
  '%ZZ',
  '%',
  '%E0%A4',
  '%00',
  '%2F',
  '%2e%2e',
  '..',
  '%F0%9F%98%80',
  '%C0%AF',
  '%25',
  '',
);
const segment = fc.oneof(
  fc.string({ unit: fc.constantFrom(..."abcAZ09-_.~!$&'()*+,;=:@".split('')), maxLength: 12 }),
  escapes,
);
const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '\ud800',
    'gpt-4o-mini',
    '1d',
    '30d',
    'monthly',
    '2026-03-10',
    'admin',
    'user',
  ),
);
const number = fc.oneof(
  fc.integer({ min: -10, max: 1000 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(0, -0, 1e300, -1e300, 1e-300, 2 ** 53, 0.1),
);

/** Every byte of the UTF-8 form as %XX, unreserved ones as they are (never throws, unlike encodeURIComponent). */
function percentEncode(s: string): string {
  let out = '';
  for (const b of Buffer.from(s)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-_.~]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function arbitraries(known: Known) {
  const id = fc.oneof(text, fc.constantFrom(known.key, known.keyHash, 'fz-team', 'fz-user', 'fz-alias'));
  const scalar = fc.oneof(id, number, fc.boolean(), fc.constant(null));
  const value = fc.oneof(
    { weight: 4, arbitrary: scalar },
    { weight: 1, arbitrary: fc.array(scalar, { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 3 }) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  );
  const fieldNames = fc.constantFrom(
    'team_id',
    'team_alias',
    'user_id',
    'user_email',
    'user_role',
    'key',
    'keys',
    'key_alias',
    'models',
    'tags',
    'metadata',
    'max_budget',
    'soft_budget',
    'budget_duration',
    'duration',
    'blocked',
    'rpm_limit',
    'tpm_limit',
    'max_parallel_requests',
    'model_max_budget',
    'budget_limits',
    'member',
    'role',
    'max_budget_in_team',
    'temp_budget_increase',
    'temp_budget_expiry',
    'grace_period',
    'user_ids',
    'team_ids',
    'end_user_id',
    'alias',
    'name',
    'names',
    'description',
    'model',
    'messages',
    'max_tokens',
    'max_output_tokens',
    'stream',
    'stream_options',
    'input',
    'user',
    'n',
    'contents',
    'generationConfig',
    'username',
    'password',
    'csrf_token',
  );
  const object = fc.dictionary(fieldNames, value, { maxKeys: 6 });
  // A body close to a valid one, so that some requests pass validation and change state.
  const chat = fc.record(
    {
      model: fc.oneof(fc.constantFrom('gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku-latest', 'o1'), text),
      messages: fc.oneof(
        fc.constant([{ role: 'user', content: 'hi' }]),
        fc.array(fc.record({ role: fc.constantFrom('user', 'system', 'x'), content: value }), {
          maxLength: 3,
        }),
        value,
      ),
      max_tokens: fc.oneof(fc.integer({ min: 1, max: 20 }), number),
      tags: fc.oneof(fc.array(text, { maxLength: 3 }), value),
      user: text,
      stream: fc.boolean(),
    },
    { requiredKeys: ['model'] },
  );
  const body = fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 4, arbitrary: object.map((o) => JSON.stringify(o)) },
    { weight: 3, arbitrary: chat.map((o) => JSON.stringify(o)) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)) },
    { weight: 1, arbitrary: object.map((o) => JSON.stringify(o).slice(0, -1)) }, // truncated
    { weight: 1, arbitrary: fc.string({ maxLength: 60 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b)) },
    {
      weight: 1,
      arbitrary: object.map((o) =>
        new URLSearchParams(
          Object.entries(o).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
        ).toString(),
      ),
    },
  );
  const route = fc.constantFrom(...ROUTES).map((r) => {
    const [method, path] = r.split(' ') as [string, string];
    return { method, path };
  });
  const path = fc.oneof(
    { weight: 5, arbitrary: route.map((r) => r.path) },
    { weight: 2, arbitrary: fc.tuple(route, segment).map(([r, s]) => `${r.path}/${s}`) },
    {
      weight: 2,
      arbitrary: fc.tuple(route, escapes).map(([r, e]) => r.path.replace(/\/([^/]*)$/, `/$1${e}`)),
    },
    {
      weight: 2,
      arbitrary: fc.oneof(segment, id.map(percentEncode)).map((s) => `/key/${s}/regenerate`),
    },
    { weight: 1, arbitrary: segment.map((s) => `/ui/api/logs/${s}`) },
    { weight: 1, arbitrary: fc.array(segment, { minLength: 1, maxLength: 3 }).map((s) => `/${s.join('/')}`) },
  );
  const queryName = fc.oneof(
    fc.constantFrom(
      'key',
      'team_id',
      'user_id',
      'api_key',
      'start_date',
      'end_date',
      'request_id',
      'page',
      'size',
      'groupBy',
      'granularity',
      'from',
      'to',
      'min',
      'kind',
      'days',
      'status',
      'before',
      'tags',
      'return_full_object',
      'end_user_id',
      'model',
      'limit',
    ),
    segment,
  );
  const query = fc.array(
    fc.tuple(queryName, fc.oneof(segment, id.map(percentEncode), escapes)).map(([k, v]) => `${k}=${v}`),
    { maxLength: 4 },
  );
  const credential = fc.oneof(
    fc.constant<Record<string, string>>({}),
    fc.constant({ authorization: `Bearer ${MASTER}` }),
    fc.constant({ authorization: `Bearer ${known.key}` }),
    fc.constant({ authorization: `Bearer ${known.adminKey}` }),
    fc.constant({ 'x-api-key': known.key }),
    fc.constant({ cookie: known.cookie, 'x-csrf-token': known.csrf }),
    fc.constant({ cookie: known.cookie }),
    headerText.map((v) => ({ authorization: v })),
    headerText.map((v) => ({ authorization: `Bearer ${v}` })),
    headerText.map((v) => ({ cookie: `spendguard_session=${v}` })),
  );
  const extraHeader = fc.oneof(
    headerText.map((v) => ({ 'content-type': v })),
    fc.constantFrom(
      { 'content-type': 'application/json' },
      { 'content-type': 'application/x-www-form-urlencoded' },
      { accept: 'text/html' },
    ),
    headerText.map((v) => ({ 'x-litellm-tags': v })),
    headerText.map((v) => ({ 'x-litellm-end-user-id': v })),
    headerText.map((v) => ({ origin: v })),
    headerText.map((v) => ({ 'x-forwarded-proto': v })),
    headerText.map((v) => ({ 'x-csrf-token': v })),
    headerText.map((v) => ({ 'api-key': v })),
  );
  // Hostile: any method, mangled paths, garbage credentials and headers.
  const hostile = fc.record({
    method: fc.oneof(
      { weight: 6, arbitrary: route.map((r) => r.method) },
      fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'),
    ),
    path,
    query,
    headers: fc
      .tuple(credential, fc.array(extraHeader, { maxLength: 3 }))
      .map(([c, more]) => Object.assign({}, ...more, c)),
    body,
  });
  // Targeted: a real route with a credential that opens it, and a body shaped for it, so that many
  // requests reach the handlers (and some pass validation and change state).
  const valid = fc.oneof(
    { weight: 3, arbitrary: fc.constant({ authorization: `Bearer ${MASTER}` }) },
    { weight: 2, arbitrary: fc.constant({ authorization: `Bearer ${known.key}` }) },
    { weight: 2, arbitrary: fc.constant({ authorization: `Bearer ${known.adminKey}` }) },
    { weight: 2, arbitrary: fc.constant({ cookie: known.cookie, 'x-csrf-token': known.csrf }) },
    { weight: 1, arbitrary: fc.constant({ 'x-api-key': known.key }) },
  );
  const targeted = route.chain((r) =>
    fc.record({
      method: fc.constant(r.method),
      // The routes with an id in the path get ids of every kind there, malformed escapes included.
      path:
        r.path === '/key/regenerate'
          ? fc.oneof(
              fc.constant(r.path),
              fc.oneof(escapes, segment, id.map(percentEncode)).map((k) => `/key/${k}/regenerate`),
            )
          : r.path === '/ui/api/logs'
            ? fc.oneof(
                fc.constant(r.path),
                fc.oneof(escapes, segment).map((k) => `/ui/api/logs/${k}`),
              )
            : fc.constant(r.path),
      query: r.method === 'GET' ? query : fc.constant<string[]>([]),
      headers: fc
        .tuple(valid, fc.array(extraHeader, { maxLength: 1 }))
        .map(([c, more]) => Object.assign({ 'content-type': 'application/json' }, ...more, c)),
      body:
        r.method === 'GET'
          ? fc.constant(undefined)
          : (r.path.startsWith('/v1') ? chat : object).map((o) => JSON.stringify(o)),
    }),
  );
  // Guarded calls that mostly pass: what the guard reserves, meters and settles.
  const guarded = fc.record({
    method: fc.constant('POST'),
    path: fc.constantFrom(
      ...ROUTES.filter((r) => r.startsWith('POST /v1')).map((r) => r.slice('POST '.length)),
    ),
    query: fc.constant<string[]>([]),
    headers: fc
      .tuple(valid, fc.array(extraHeader, { maxLength: 1 }))
      .map(([c, more]) => Object.assign({ 'content-type': 'application/json' }, ...more, c)),
    body: fc
      .record({
        model: fc.constantFrom('gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku-latest', 'text-embedding-3-small'),
        messages: fc.constant([{ role: 'user', content: 'hi' }]),
        input: fc.constant('hi'),
        max_tokens: fc.integer({ min: 1, max: 20 }),
        tags: fc.array(fc.string({ maxLength: 8 }), { maxLength: 2 }),
        stream: fc.boolean(),
      })
      .map((o) => JSON.stringify(o)),
  });
  // Ids in the path, with a credential that gets past authentication to where they are decoded.
  const pathIds = fc.record({
    method: fc.constantFrom('POST', 'GET'),
    path: fc
      .tuple(
        fc.constantFrom('/key/%s/regenerate', '/ui/api/logs/%s'),
        fc.oneof(escapes, segment, id.map(percentEncode)),
      )
      .map(([template, k]) => template.replace('%s', k)),
    query: fc.constant<string[]>([]),
    headers: valid.map((c) => ({ 'content-type': 'application/json', ...c })),
    body: fc.option(
      object.map((o) => JSON.stringify(o)),
      { nil: undefined },
    ),
  });
  return fc.oneof(
    { weight: 3, arbitrary: targeted },
    { weight: 1, arbitrary: pathIds },
    { weight: 1, arbitrary: guarded },
    { weight: 2, arbitrary: hostile },
  );
}

type FuzzRequest = {
  method: string;
  path: string;
  query: string[];
  headers: Record<string, string>;
  body: string | Buffer | undefined;
};

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function send(
  app: TestApp,
  r: FuzzRequest,
): Promise<{ status: number; body: string; callId: string | undefined }> {
  const { port } = new URL(app.baseUrl);
  const path = r.query.length ? `${r.path}?${r.query.join('&')}` : r.path;
  return new Promise((resolve, reject) => {
    // An explicit length: Node sends a GET's or DELETE's body unframed otherwise (the server then
    // reads it as a second, malformed request and answers that with its own 400).
    const headers =
      r.body === undefined ? r.headers : { ...r.headers, 'content-length': Buffer.byteLength(r.body) };
    const req = request({ host: '127.0.0.1', port, method: r.method, path, headers, agent });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: text,
          callId: res.headers['x-litellm-call-id'] as string | undefined,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(r.body);
  });
}

/** Signs in to the dashboard (for a cookie and its CSRF token the fuzz may use). */
async function signIn(app: TestApp): Promise<{ cookie: string; csrf: string }> {
  const res = await fetch(`${app.baseUrl}/ui/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username: 'admin', password: DASHBOARD_PASSWORD }),
  });
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0]!;
  const page = await (await fetch(`${app.baseUrl}/ui/`, { headers: { cookie } })).text();
  return { cookie, csrf: /name="csrf-token" content="([^"]+)"/.exec(page)![1]! };
}

const figures: string[] = [];
/** Each run's statuses in order, by store then adapter: both adapters must answer alike. */
const sequences = new Map<string, Map<string, number[]>>();
afterAll(() => {
  console.log(`edge fuzz (seed ${SEED}):\n${figures.join('\n')}`);
});

const FRAMEWORKS = ADAPTERS.filter((a) => a.name !== 'express 4'); // Express 5 and Hono: both adapters

describe.each(FRAMEWORKS)('fuzzing the edge on $name', (framework) => {
  it.each(STORES)(
    '$name store: no 5xx, no crash, a refused request changes nothing stored',
    async (store) => {
      const { storage, dump } = store.open();
      const errors: string[] = [];
      const app = await startTestApp(framework, {
        storage,
        now: () => T0,
        guardOptions: {
          reservationSweepMs: 0,
          // Heartbeats write on a timer, not per request: off, so that the raw dumps compare requests only.
          heartbeatGraceMs: 0,
          dashboard: {
            password: DASHBOARD_PASSWORD,
            maxLoginFailuresPerClient: 1000,
            maxLoginFailures: 1000,
          },
          logger: {
            warn() {},
            error: (m: string, e?: unknown) =>
              errors.push(`${m} ${e instanceof Error ? e.stack : String(e ?? '')}`),
          },
        },
      });
      try {
        await admin(app, 'POST', '/team/new', { team_id: 'fz-team', team_alias: 'fz-alias', max_budget: 5 });
        await admin(app, 'POST', '/user/new', {
          user_id: 'fz-user',
          team_id: 'fz-team',
          auto_create_key: false,
        });
        await admin(app, 'POST', '/team/member_update', {
          team_id: 'fz-team',
          user_id: 'fz-user',
          role: 'admin',
        });
        const adminKey = (
          await admin(app, 'POST', '/key/generate', { user_id: 'fz-user', team_id: 'fz-team' })
        ).body.key;
        const k = (await admin(app, 'POST', '/key/generate', { team_id: 'fz-team', max_budget: 1 })).body;
        const known: Known = { key: k.key, keyHash: k.token, adminKey, ...(await signIn(app)) };

        const statuses = new Map<number, number>();
        const sequence: number[] = [];
        if (!sequences.has(store.name)) sequences.set(store.name, new Map());
        sequences.get(store.name)!.set(framework.name, sequence);
        let refusedChecked = 0;
        let admitted = 0;
        await app.guard.flush();
        let before = await dump();
        await fc.assert(
          fc.asyncProperty(arbitraries(known), async (r) => {
            const res = await send(app, r);
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
            sequence.push(res.status);
            expect(res.status, res.body).toBeLessThan(500);
            if (res.callId) {
              // Admitted by the guard (whatever the app's route then answered): it is settled once the
              // response has gone, which may be after the client read it. Wait for its spend log.
              admitted += 1;
              await vi.waitFor(
                async () => expect(await storage.querySpendLogs({ requestId: res.callId })).toHaveLength(1),
                { timeout: 10_000, interval: 5 },
              );
            }
            await app.guard.flush();
            const after = await dump();
            if (res.status >= 400 && !res.callId) {
              // Refused by the guard, the management API or the dashboard: nothing may have changed.
              expect(after, `${res.status} ${res.body}`).toBe(before);
              refusedChecked += 1;
            }
            before = after;
            expect(errors).toEqual([]);
          }),
          { seed: SEED, numRuns: RUNS, endOnFailure: true },
        );
        const byStatus = [...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`);
        figures.push(
          `  ${framework.name} / ${store.name}: ${RUNS} requests (${admitted} admitted to a guarded route, ${refusedChecked} refused with the store unchanged); statuses ${byStatus.join(', ')}`,
        );
      } finally {
        await app.close();
      }
    },
    120_000,
  );
});

describe('both adapters', () => {
  it.each(STORES)('answered the same fuzz requests with the same statuses on the $name store', (store) => {
    const runs = sequences.get(store.name);
    expect([...(runs?.keys() ?? [])]).toEqual(FRAMEWORKS.map((f) => f.name));
    const [first, ...rest] = [...runs!.values()];
    for (const other of rest) expect(other).toEqual(first);
  });
});
