import type { SpendGuard } from '@spendguard/core';
import {
  type AdapterOptions,
  type GuardedCall,
  isUnreadNodeStream,
  meterResponse,
  parseJsonBody,
  readBodyText,
  resolveAdapterOptions,
  toWebResponse,
} from '@spendguard/core/adapter';
import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { basePath } from 'hono/route';

export type { SpendGuard } from '@spendguard/core';

/** Options of {@link spendGuard}: the core's, with `storage` optional (embedded SQLite by default). */
export type HonoSpendGuardOptions = AdapterOptions;

/** What the middleware sets on the context: `c.get('spendguard')` is the call being guarded. */
export type SpendGuardVariables = {
  /** The admitted call: `requestId`, and `key` (the key, its user and team) for a virtual key. */
  spendguard: GuardedCall;
};

/** The app's `Env` for typed `c.get('spendguard')`: `new Hono<SpendGuardEnv>()`. */
export type SpendGuardEnv = { Variables: SpendGuardVariables };

export interface SpendGuardMiddleware extends MiddlewareHandler<SpendGuardEnv> {
  /** The framework-neutral guard behind this middleware (queries, `close()`). */
  readonly guard: SpendGuard;
  /** The LiteLLM-compatible management API, for any base path: `app.route('/', mw.admin)`. */
  readonly admin: Hono;
}

/**
 * Guards the routes it is mounted in front of: every call needs a virtual key, is checked against
 * its budgets before the route runs (429 when spent), and is metered, priced and recorded from
 * the Response the route returns (JSON or SSE).
 * @example app.use('/v1/*', spendGuard())
 */
export function spendGuard(options: HonoSpendGuardOptions | SpendGuard = {}): SpendGuardMiddleware {
  const { guard, bodyLimitBytes: limit } = resolveAdapterOptions(
    options,
    () => import('@spendguard/storage-sqlite'),
  );

  const middleware: MiddlewareHandler<SpendGuardEnv> = async function spendGuard(c, next) {
    let body: unknown;
    let bodyBytes: number | undefined;
    try {
      const read = await readBody(c, limit);
      body = parseJsonBody(read.text);
      bodyBytes = read.bytes;
    } catch (error) {
      return toWebResponse(guard.errorResponse(error));
    }
    const outcome = await guard.admit({
      method: c.req.method,
      path: c.req.path,
      header: (n) => c.req.header(n),
      body,
      bodyBytes,
    });
    if (!outcome.ok) return toWebResponse(outcome.response);
    const call = outcome.call;
    c.set('spendguard', call);
    if (call.rewrittenBody !== null) {
      // The guard rewrote the body (a streamed chat completion asked for its usage): the route reads this one.
      const headers = new Headers(c.req.raw.headers);
      headers.delete('content-length');
      c.req.raw = new Request(c.req.raw, { headers, body: call.rewrittenBody });
      c.req.bodyCache = {};
    }
    await call.run(() => next()); // in the call's context: guard.fetch and track() attribute to it
    c.res = await meterResponse(call, c.res);
  };

  const admin = new Hono().use(async function spendGuardAdmin(c, next) {
    const base = basePath(c).replace(/\/$/, '');
    const path = c.req.path.slice(base.length) || '/';
    const dashboard = guard.dashboard.handles(path);
    if (!dashboard && !guard.management.handles(c.req.method, path)) return next();
    try {
      if (dashboard) {
        const url = new URL(c.req.url);
        const page = await guard.dashboard.handle({
          method: c.req.method,
          path,
          query: url.searchParams,
          header: (n) => c.req.header(n),
          body: (await readBody(c, limit)).text,
          tls: url.protocol === 'https:',
        });
        if (page) return new Response(page.body as BodyInit, { status: page.status, headers: page.headers });
      }
      const answer = await guard.management.handle({
        method: c.req.method,
        path,
        query: new URL(c.req.url).searchParams,
        header: (n) => c.req.header(n),
        body: (await readBody(c, limit)).text,
      });
      return answer ? toWebResponse(answer) : next();
    } catch (error) {
      return toWebResponse(guard.errorResponse(error));
    }
  });

  return Object.assign(middleware, { guard, admin });
}

/**
 * The body as text, read here up to the limit and put back for the route (as Hono's own bodyLimit
 * does), so that `c.req.json()` and `c.req.raw` still work there. One the app read first comes
 * from Hono's body cache.
 */
async function readBody(c: Context, limit: number): Promise<{ text: string; bytes: number | undefined }> {
  if (c.req.raw.bodyUsed) return { text: await c.req.text(), bytes: undefined };
  // @hono/node-server passes the Node request as c.env.incoming, and serves a request's body from
  // its `rawBody` when it carries one (as on Cloud Functions): the route's c.req.json() and
  // c.req.raw.body read the bytes read here, and no web Request is built for them.
  const incoming = (c.env as { incoming?: { rawBody?: Buffer } } | undefined)?.incoming;
  if (isUnreadNodeStream(incoming) && incoming.rawBody === undefined) {
    const read = await readBodyText(incoming, limit);
    incoming.rawBody = read.raw;
    return read;
  }
  const read = await readBodyText(c.req.raw.body, limit);
  if (c.req.raw.body) c.req.raw = new Request(c.req.raw, { body: read.text });
  return read;
}
