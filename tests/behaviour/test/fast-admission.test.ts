// The admin router's cheap "not mine" (mayBeAdminPath) and the fast admission path, attacked over real
// HTTP on every adapter: no management route or dashboard page may become unreachable under any base
// path or spelling the full check accepts, and no path the full check refuses may reach the router; a
// key blocked, deleted or spent on one instance is refused on another sharing the store, even with its
// secret, key and lease in memory there.
import { Agent, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createSpendGuard, MemoryStorage, type SpendGuard } from '@spendguard/core';
import { spendGuard as expressSpendGuard } from '@spendguard/express';
import { spendGuard as honoSpendGuard } from '@spendguard/hono';
import express5 from 'express';
import express4 from 'express4';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, admin, MASTER, startTestApp, type TestApp, untilRefused } from './harness.js';

/** What the app answers itself once the admin router passed a request on. */
const FELL_THROUGH = 418;
const BASES = ['', '/tenants/acme/admin'];

/**
 * An app with the admin router at the root and under a base with a parameter, then the app's own
 * answer. Each request's path below the base, as the framework hands it to the admin router, is noted
 * (by the request's `x-probe` header) for the reference check.
 */
type Mount = (guard: SpendGuard, below: Map<string, string>) => Server;

const expressMount =
  (express: typeof express5): Mount =>
  (guard, below) => {
    const mw = expressSpendGuard(guard);
    const app = express();
    const note: express5.RequestHandler = (req, _res, next) => {
      if (!below.has(String(req.headers['x-probe']))) below.set(String(req.headers['x-probe']), req.path);
      next();
    };
    app.use('/tenants/:tenant/admin', note, mw.admin);
    app.use(note, mw.admin);
    app.use((_req, res) => {
      res.status(FELL_THROUGH).send('the app');
    });
    return app.listen(0, '127.0.0.1');
  };

/** The adapter's own reading of a Hono request's path: as sent, without its query. */
function rawPath(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  if (start === -1) return '/';
  const end = url.indexOf('?', start);
  return end === -1 ? url.slice(start) : url.slice(start, end);
}

const honoMount: Mount = (guard, below) => {
  const mw = honoSpendGuard(guard);
  const app = new Hono();
  // The adapter's own cut: the request's path as sent, less the base its router was mounted at.
  const noted = (base: string) =>
    new Hono().use(async (c, next) => {
      const probe = c.req.header('x-probe') ?? '';
      if (!below.has(probe)) below.set(probe, rawPath(c.req.url).slice(base.length) || '/');
      await next();
    });
  app.route('/tenants/:tenant/admin', noted('/tenants/acme/admin'));
  app.route('/tenants/:tenant/admin', mw.admin);
  app.route('/', noted(''));
  app.route('/', mw.admin);
  app.all('*', (c) => c.text('the app', FELL_THROUGH));
  return serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
};

const MOUNTS: { name: string; mount: Mount }[] = [
  { name: 'express 5', mount: expressMount(express5) },
  { name: 'express 4', mount: expressMount(express4 as unknown as typeof express5) },
  { name: 'hono', mount: honoMount },
];

/** A request with its path sent exactly as written (fetch would resolve `..` and `.` first). */
function raw(port: number, agent: Agent, method: string, path: string, probe: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent,
        headers: { authorization: 'Bearer sk-not-a-key', 'x-probe': probe },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Spellings of one route path, some of which the full check accepts and some it refuses. */
function spellings(path: string): string[] {
  const cut = path.lastIndexOf('/');
  const last = path.slice(cut + 1);
  const hex = `%${last.charCodeAt(0).toString(16).toUpperCase()}`;
  return [
    path,
    `${path}/`,
    `${path}?x=1`,
    `${path}/?x=1&y=%2F`,
    `${path}//`,
    `/x/..${path}`,
    `/x/%2e%2e${path}`,
    `${path}/.`,
    `/${path}`,
    `${path.slice(0, cut)}//${last}`,
    `${path.slice(0, cut)}%2F${last}`,
    `${path.slice(0, cut)}/${hex}${last.slice(1)}`,
    `${path.slice(0, cut)}/${last.toUpperCase()}`,
    path.toUpperCase(),
    `/v1${path}`,
  ].filter((p) => p.startsWith('/')); // a request target is a path (`%2Fmodels` is not one)
}

describe.each(MOUNTS)("the admin router's 'not mine' ($name)", ({ mount }) => {
  let guard: SpendGuard;
  let server: Server;
  let port: number;
  let probes = 0;
  const below = new Map<string, string>();
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });

  beforeAll(async () => {
    guard = createSpendGuard({
      storage: new MemoryStorage(),
      masterKey: MASTER,
      logger: { warn: () => {}, error: () => {} },
    });
    server = mount(guard, below);
    if (!server.listening) await new Promise((r) => server.once('listening', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    agent.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await guard.close();
  });

  /**
   * The reference: the full check every adapter made before the cheap one (and still makes after it),
   * `dashboard.handles` or `management.handles` on the path below the base. A request it accepts is
   * the router's (any answer but the app's); one it refuses reaches the app.
   */
  const owned = (method: string, below: string) =>
    guard.dashboard.handles(below) || guard.management.handles(method, below);

  async function check(method: string, path: string, base: string) {
    const probe = String(++probes);
    const status = await raw(port, agent, method, base + path, probe);
    // The path below the base as the framework handed it to the router (Express 4 takes a slash of
    // `base//x` into the base), else the one written.
    const seen = below.get(probe) ?? path.split('?')[0]!;
    const mine = owned(method, seen);
    const what = `${method} ${base}${path} (seen as ${seen})`;
    if (mine) expect(status, what).not.toBe(FELL_THROUGH);
    else expect(status, what).toBe(FELL_THROUGH);
    return mine;
  }

  it('reaches every management route, in every spelling the full check accepts, under every base', async () => {
    const routes = guard.management.routeAccess().map(([r]) => r.split(' ') as [string, string]);
    expect(routes.length).toBeGreaterThan(50);
    let accepted = 0;
    let refused = 0;
    for (const base of BASES) {
      for (const [method, template] of routes) {
        const path = template.replace('{key_id}', 'sk-some-key');
        const answers = await Promise.all(spellings(path).map((p) => check(method, p, base)));
        for (const a of answers) a ? accepted++ : refused++;
      }
    }
    // Both kinds were tried: the spellings that must reach the router, and those that must not.
    expect(accepted).toBeGreaterThan(routes.length * BASES.length * 4);
    expect(refused).toBeGreaterThan(routes.length * BASES.length * 4);
  });

  it("LiteLLM's key-in-path routes, HEAD and OPTIONS, the dashboard, and /v1 look-alikes", async () => {
    const paths = [
      '/key/sk-abc/regenerate',
      '/key/sk-abc/regenerate/',
      '/key/sk-abc/reset_spend?x=1',
      '/key/sk%2Dabc/regenerate',
      '/key/sk-abc%2Fregenerate',
      '/ui',
      '/ui/',
      '/ui/login',
      '/ui/keys?page=2',
      '/UI',
      '/uix',
      '/x/../ui/',
      '/%75i',
      '/chat/completions/ui',
      '/v1/ui',
      '/v1/key/generate',
      '/v1/team/new',
      '/v1/chat/completions',
      '/v1/models',
      '/models',
      '/health',
      '/health/liveliness',
      '/',
      '',
    ];
    for (const base of BASES) {
      for (const path of paths) {
        if (path === '' && base === '') continue;
        for (const method of ['GET', 'POST', 'HEAD', 'OPTIONS']) await check(method, path || '/', base);
      }
    }
    // The dashboard is the router's under every base, whatever the method.
    expect(owned('GET', '/ui/login')).toBe(true);
    expect(owned('POST', '/v1/chat/completions')).toBe(false);
  });
});

describe.each(ADAPTERS)(
  'a key changed on one instance, its secret, key and lease in memory on another ($name)',
  (framework) => {
    let a: TestApp;
    let b: TestApp;
    beforeAll(async () => {
      a = await startTestApp(framework);
      b = await startTestApp(framework, { dbPath: a.dbPath });
    });
    afterAll(async () => {
      await b.close();
      await a.close();
    });

    const chat = (app: TestApp, key: string) =>
      fetch(`${app.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 10,
        }),
      }).then(async (res) => ({ status: res.status, body: await res.text() }));

    /** 20 calls on instance b: its secret remembered, its key cached and (busy) a lease open there. */
    async function warmOnB(key: string) {
      for (let i = 0; i < 20; i++) expect((await chat(b, key)).status).toBe(200);
      await b.settled();
    }

    it('blocked on a: refused on b', async () => {
      const { body } = await admin(a, 'POST', '/key/generate', { max_budget: 100 });
      await warmOnB(body.key);
      expect((await admin(a, 'POST', '/key/block', { key: body.key })).status).toBe(200);
      expect((await chat(a, body.key)).status).toBe(401); // at once where it was blocked
      expect((await untilRefused(() => chat(b, body.key))).status).toBe(401);
    });

    it('deleted on a: refused on b', async () => {
      const { body } = await admin(a, 'POST', '/key/generate', { max_budget: 100 });
      await warmOnB(body.key);
      expect((await admin(a, 'POST', '/key/delete', { keys: [body.key] })).status).toBe(200);
      expect((await chat(a, body.key)).status).toBe(401);
      expect((await untilRefused(() => chat(b, body.key))).status).toBe(401);
    });

    it('budget lowered to its spend on a: refused on b', async () => {
      const { body } = await admin(a, 'POST', '/key/generate', { max_budget: 100 });
      await warmOnB(body.key);
      const info = await admin(a, 'GET', `/key/info?key=${body.key}`);
      const spend = info.body.info.spend as number;
      expect(spend).toBeGreaterThan(0);
      expect((await admin(a, 'POST', '/key/update', { key: body.key, max_budget: spend })).status).toBe(200);
      expect((await chat(a, body.key)).status).toBe(429);
      expect((await untilRefused(() => chat(b, body.key))).status).toBe(429);
    });
  },
);
