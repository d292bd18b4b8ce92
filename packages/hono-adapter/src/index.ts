import { isUtf8 } from 'node:buffer';
import type { IncomingMessage } from 'node:http';
import type { SpendGuard } from '@spendguard/core';
import {
  type AdapterOptions,
  type GuardedCall,
  isUnreadNodeStream,
  mayBeAdminPath,
  meterHeldResponse,
  meterResponse,
  parseJsonBody,
  resolveAdapterOptions,
  toWebResponse,
} from '@spendguard/core/adapter';
import { type Context, type Handler, Hono, type MiddlewareHandler, type Next } from 'hono';
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
  /** Prometheus' `/metrics` (with the `metrics` option): `app.get('/metrics', mw.metrics)`. */
  readonly metrics: Handler;
}

/**
 * Guards the routes it is mounted in front of: every call needs a virtual key, is checked against
 * its budgets before the route runs (429 when spent), and is metered, priced and recorded from
 * the Response the route returns (JSON or SSE).
 * @example app.use('/v1/*', spendGuard())
 */
export function spendGuard(options: HonoSpendGuardOptions | SpendGuard = {}): SpendGuardMiddleware {
  const { guard } = resolveAdapterOptions(options, () => import('@spendguard/storage-sqlite'));

  const middleware: MiddlewareHandler<SpendGuardEnv> = async function spendGuard(c, next) {
    // The guard reads the body only once the key in the headers is known to be good.
    const outcome = await guard.admit({
      method: c.req.method,
      path: rawPath(c.req.url),
      header: (n) => c.req.header(n),
      readBody: () => readBody(c, guard, undefined, parsed),
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
    await call.run(next); // in the call's context: guard.fetch and track() attribute to it
    const held = heldResponse(c.res);
    // A body held whole with plain headers is metered as it is, and answered the same way.
    const plain = held?.headers && (await meterHeldResponse(call, held.status, held.headers, held.body));
    // Carries every header of the route's response.
    const metered = plain
      ? new Response(plain.body as Uint8Array<ArrayBuffer> | null, {
          status: held!.status,
          headers: plain.headers,
        })
      : await meterResponse(call, c.res, held?.body);
    // Cleared first: setting c.res over a response rebuilds the new one from its `body` stream to copy
    // the old one's headers in (already there), which turns a held JSON body into a stream to pipe.
    c.res = undefined;
    c.res = metered;
  };

  // Most requests are not the admin router's: passed on at once, without a promise of its own.
  const admin = new Hono().use(function spendGuardAdmin(c, next) {
    const full = rawPath(c.req.url);
    return mayBeAdminPath(guard, full) ? answerAdmin(c, next, full) : next();
  });

  async function answerAdmin(c: Context, next: Next, full: string) {
    try {
      const base = basePath(c).replace(/\/$/, '');
      const path = full.slice(base.length) || '/';
      const dashboard = guard.dashboard.handles(path);
      if (!dashboard && !guard.management.handles(c.req.method, path)) return next();
      const url = new URL(c.req.url);
      // Read only after the core has checked the credential (or, for a sign-in, its throttle).
      const readBodyText = async (limit?: number) => readBody(c, guard, limit, textOf);
      if (dashboard) {
        const page = await guard.dashboard.handle({
          method: c.req.method,
          path,
          query: url.searchParams,
          header: (n) => c.req.header(n),
          readBody: readBodyText,
          tls: url.protocol === 'https:',
          clientIp: (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket?.remoteAddress,
        });
        if (page) return new Response(page.body as BodyInit, { status: page.status, headers: page.headers });
      }
      const answer = await guard.management.handle({
        method: c.req.method,
        path,
        query: url.searchParams,
        header: (n) => c.req.header(n),
        readBody: readBodyText,
      });
      return answer ? toWebResponse(answer) : next();
    } catch (error) {
      return toWebResponse(guard.errorResponse(error));
    }
  }

  const metrics: Handler = async function spendGuardMetrics() {
    const out = await guard.metrics.scrape();
    return new Response(out.body, { status: out.status, headers: { 'content-type': out.contentType } });
  };

  return Object.assign(middleware, { guard, admin, metrics });
}

/**
 * The body @hono/node-server's lightweight Response holds as given (what `c.body()` / `c.json()` got:
 * a string or bytes), read without building the native Response it would otherwise make to serve
 * `response.body`, with its status, and its headers when they too are held as a plain record of
 * strings (else `headers` is `null`: read them from the Response); `null` for any other Response (a
 * stream, or another runtime's), read as a stream.
 */
function heldResponse(
  response: Response,
): { status: number; body: string | Uint8Array; headers: Record<string, string> | null } | null {
  const key = cacheSymbol ?? findCacheSymbol(response);
  if (!key) return null;
  const cache = (response as unknown as Record<symbol, unknown>)[key];
  if (!Array.isArray(cache)) return null;
  const [status, body, headers] = cache as [unknown, unknown, unknown];
  if (typeof body !== 'string' && !(body instanceof Uint8Array)) return null;
  if (typeof status !== 'number') return null;
  return { status, body, headers: plainHeaders(headers) };
}

/**
 * Headers held as a plain object of strings (no `Headers`, no arrays of values), else `null` (none
 * given included: the Response then has a default content type, read from it as usual).
 */
function plainHeaders(headers: unknown): Record<string, string> | null {
  if (typeof headers !== 'object' || headers === null || Object.getPrototypeOf(headers) !== Object.prototype)
    return null;
  const record = headers as Record<string, unknown>;
  for (const name in record) if (typeof record[name] !== 'string') return null;
  return record as Record<string, string>;
}

let cacheSymbol: symbol | undefined;
function findCacheSymbol(response: Response): symbol | undefined {
  for (const s of Object.getOwnPropertySymbols(response)) {
    if (s.description === 'cache') {
      cacheSymbol = s;
      return s;
    }
  }
  return undefined;
}

/**
 * The path as sent, escapes and all (as Express's `req.path`): `c.req.path` has some escapes decoded
 * (`%5C` to `\`), and the core must see the same path whichever adapter it runs behind.
 */
function rawPath(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  if (start === -1) return '/';
  const end = url.indexOf('?', start);
  return end === -1 ? url.slice(start) : url.slice(start, end);
}

/**
 * The body as text, read here up to the limit and put back for the route (as Hono's own bodyLimit
 * does), so that `c.req.json()` and `c.req.raw` still work there. One the app read first comes
 * from Hono's body cache.
 */
function parsed(read: BodyText): { body: unknown; bytes: number | undefined } {
  return { body: parseJsonBody(read.text), bytes: read.bytes };
}

function textOf(read: BodyText): string {
  return read.text;
}

type BodyText = { text: string; bytes: number | undefined };

/** Reads the body and hands it to `use`, in the same step (no promise of its own for `use`). */
function readBody<T>(
  c: Context,
  guard: SpendGuard,
  limitBytes: number | undefined,
  use: (read: BodyText) => T,
): T | Promise<T> {
  if (c.req.raw.bodyUsed) return c.req.text().then((text) => use({ text, bytes: undefined }));
  const contentLength = c.req.header('content-length');
  // @hono/node-server passes the Node request as c.env.incoming, and serves a request's body from
  // its `rawBody` when it carries one (as on Cloud Functions): the route's c.req.json() and
  // c.req.raw.body read the bytes read here, and no web Request is built for them.
  const incoming = (c.env as { incoming?: { rawBody?: Buffer } } | undefined)?.incoming;
  if (isUnreadNodeStream(incoming) && incoming.rawBody === undefined) {
    // A body that has arrived whole is read at once, without a promise.
    const read = guard.bodies.readNow(incoming, contentLength, limitBytes);
    if (!(read instanceof Promise)) return use(keepRead(c, incoming, read));
    return read.then((r) => use(keepRead(c, incoming, r)));
  }
  return guard.bodies.read(c.req.raw.body, contentLength, limitBytes).then((read) => {
    if (c.req.raw.body) c.req.raw = new Request(c.req.raw, { body: read.text });
    return use(read);
  });
}

/**
 * Keeps what the guard read for the route: the bytes as the request's `rawBody` (`c.req.raw.body`,
 * `c.req.arrayBuffer()`), and the text in Hono's body cache, so that `c.req.json()` and `c.req.text()`
 * parse it without building the web Request @hono/node-server would otherwise make to read it (as
 * Hono's own validator keeps what it read there). Not a text that starts with a byte order mark: the
 * web Request's `text()` drops that mark, the bytes' UTF-8 decoding keeps it; nor bytes that are not
 * UTF-8: Hono answers `c.req.arrayBuffer()` from a cached text when one is there, and the text holds
 * replacement characters where the bytes were not UTF-8.
 */
function keepRead(
  c: Context,
  incoming: { rawBody?: Buffer },
  read: { text: string; bytes: number; raw: Buffer },
): BodyText {
  incoming.rawBody = read.raw;
  // Hono keeps promises there (its `json()` is `text` cached, then parsed), though typed as values.
  const cache = c.req.bodyCache as { text?: Promise<string> };
  if (cache.text === undefined && read.text.charCodeAt(0) !== 0xfeff && isUtf8(read.raw))
    cache.text = Promise.resolve(read.text);
  return read;
}
