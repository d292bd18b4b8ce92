import { Readable } from 'node:stream';
import type { SpendGuard } from '@spendguard/core';
import {
  type AdapterOptions,
  type GuardedCall,
  type GuardResponse,
  mayBeAdminPath,
  parseJsonBody,
  resolveAdapterOptions,
} from '@spendguard/core/adapter';
import type { NextFunction, Request, RequestHandler, Response } from 'express';

export type { SpendGuard } from '@spendguard/core';

/** Options of {@link spendGuard}: the core's, with `storage` optional (embedded SQLite by default). */
export type ExpressSpendGuardOptions = AdapterOptions;

export interface SpendGuardMiddleware extends RequestHandler {
  /** The framework-neutral guard behind this middleware (queries, `close()`). */
  readonly guard: SpendGuard;
  /** The LiteLLM-compatible management API; mount it where admins reach it: `app.use(mw.admin)`. */
  readonly admin: RequestHandler;
  /** Prometheus' `/metrics` (with the `metrics` option): `app.get('/metrics', mw.metrics)`. */
  readonly metrics: RequestHandler;
}

type BodyRequest = Request & { _body?: boolean };

/**
 * Guards the routes it is mounted in front of: every call needs a virtual key, is checked against
 * its budgets before the route runs (429 when spent), and is metered, priced and recorded from
 * what the route answers (JSON or SSE).
 * @example app.use('/v1', spendGuard())
 */
export function spendGuard(options: ExpressSpendGuardOptions | SpendGuard = {}): SpendGuardMiddleware {
  const { guard } = resolveAdapterOptions(options, () => import('@spendguard/storage-sqlite'));

  const spendGuardMiddleware = async function spendGuardMiddleware(
    req: BodyRequest,
    res: Response,
    next: NextFunction,
  ) {
    // The guard reads the body only once the key in the headers is known to be good. Headers are read
    // from Node's record, taken once: Express's request has its prototype set per request, so each
    // `req.get()` (a method call, then the `headers` getter) takes V8's slow paths on it.
    const headers = req.headers;
    const outcome = await guard.admit({
      method: req.method,
      path: req.path,
      header: (n) => headerOf(headers, n),
      readBody: () => readJsonBody(req, guard, true, undefined, headers['content-length']),
    });
    if (!outcome.ok) return send(res, outcome.response);
    const call = outcome.call;
    res.locals.spendguard = call;
    setHeaders(res, call.responseHeaders);

    // Two properties added to the response, `write` and `end`, and nothing else: V8 caches no shape
    // transitions after Object.setPrototypeOf (Express's per request), so every property added to a
    // response builds a hidden class of its own (about 1.7 µs each, and old-generation garbage), where
    // a small closure costs next to nothing.
    const write = res.write as Write;
    const end = res.end as End;
    res.write = function spendGuardWrite(this: Response, chunk: unknown, encoding?: unknown, cb?: unknown) {
      return meterWrite(this, call, write, chunk, encoding, cb);
    } as Response['write'];
    res.end = function spendGuardEnd(this: Response, chunk?: unknown, encoding?: unknown, cb?: unknown) {
      return meterEnd(this, call, write, end, chunk, encoding, cb);
    } as Response['end'];
    // One listener: a response emits 'close' after 'finish' too (cut short: 'close' alone); emitted
    // once, and `finish` is idempotent anyway.
    res.on('close', () => onClose(res, call));
    // The route runs in the call's context (guard.fetch, track()); `req.body` is the object the guard
    // may have rewritten in place (a streamed chat completion asked for its usage). A body the guard took
    // whole from the stream's buffer leaves the stream's 'end' to a later tick: body-parser 2
    // (express.json() in a route after the guard) skips only an ended request, and would otherwise
    // read an empty stream and answer 400, so the route waits for that 'end'.
    if (req._body && req.complete && req.readable) req.once('end', () => call.run(() => next()));
    else call.run(() => next());
  };

  // Most requests are not the admin router's: passed on at once, without a promise of its own.
  const admin: RequestHandler = function spendGuardAdmin(req: BodyRequest, res, next) {
    if (!mayBeAdminPath(guard, req.path)) return next();
    return answerAdmin(req, res, next);
  };

  const answerAdmin = async (req: BodyRequest, res: Response, next: NextFunction) => {
    try {
      const dashboard = guard.dashboard.handles(req.path);
      if (!dashboard && !guard.management.handles(req.method, req.path)) return next();
      const query = new URLSearchParams(req.originalUrl.split('?')[1] ?? '');
      // Read only after the core has checked the credential (or, for a sign-in, its throttle).
      const readBody = async (limit?: number) => (await readJsonBody(req, guard, false, limit)).body;
      if (dashboard) {
        const page = await guard.dashboard.handle({
          method: req.method,
          path: req.path,
          query,
          header: (n) => req.get(n),
          readBody,
          tls: req.secure,
          clientIp: req.ip ?? req.socket.remoteAddress,
        });
        if (page) return void res.status(page.status).set(page.headers).end(page.body);
      }
      const answer = await guard.management.handle({
        method: req.method,
        path: req.path,
        query,
        header: (n) => req.get(n),
        readBody,
      });
      if (answer) send(res, answer);
      else next();
    } catch (error) {
      // Never Express's HTML error page: whatever failed, the answer is JSON.
      if (!res.headersSent) send(res, guard.errorResponse(error));
      else res.destroy();
    }
  };

  const metrics: RequestHandler = async function spendGuardMetrics(_req, res) {
    const out = await guard.metrics.scrape();
    res.status(out.status).type(out.contentType).send(out.body);
  };

  return Object.assign(spendGuardMiddleware as RequestHandler, { guard, admin, metrics });
}

const ABORTED = { aborted: true } as const;

type Write = (this: Response, chunk: unknown, cb?: unknown) => boolean;
type End = (this: Response, chunk?: unknown, cb?: unknown) => Response;

function begin(res: Response, call: GuardedCall): void {
  call.tap.begin(res.statusCode, res.getHeader('content-type') as string | undefined);
}

/** `res.write` of a guarded call: the chunk through the call's tap, then on to the `write` it replaced. */
function meterWrite(
  res: Response,
  call: GuardedCall,
  write: Write,
  chunk: unknown,
  encoding?: unknown,
  cb?: unknown,
): boolean {
  begin(res, call);
  const out = call.tap.write(toChunk(chunk, encoding));
  const callback = typeof encoding === 'function' ? encoding : cb;
  if (out !== null) return write.call(res, out, callback);
  if (typeof callback === 'function') process.nextTick(callback as () => void); // held, as good as written
  return true;
}

/** `res.end` of a guarded call: the cost headers and what the tap held, after the call's settlement. */
function meterEnd(
  res: Response,
  call: GuardedCall,
  write: Write,
  end: End,
  chunk?: unknown,
  encoding?: unknown,
  cb?: unknown,
): Response {
  begin(res, call);
  const callback = typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb;
  const out = isChunk(chunk) ? call.tap.write(toChunk(chunk, encoding)) : null;
  if (!res.headersSent && !call.tap.isStream) setHeaders(res, call.costHeaders());
  const held = call.tap.drain(); // a held JSON body, or a stream's last event: sent last
  if (held && out) write.call(res, out);
  const last = (held && out ? held : (out ?? held)) ?? undefined;
  // Where settlements commit first (SQLite), the last bytes wait for the call's.
  const settled = call.beforeLastByte();
  if (!settled) return end.call(res, last, callback);
  void settled.then(() => end.call(res, last, callback));
  return res;
}

function onClose(res: Response, call: GuardedCall): void {
  void call.finish(res.writableFinished ? undefined : ABORTED).catch(() => {});
}

/**
 * A request header as `req.get()` reads it (names match whatever their case; `Referer` and `Referrer`
 * are one header), from Node's record of them.
 */
function headerOf(headers: Request['headers'], name: string): string | undefined {
  const lower = name.toLowerCase();
  if (lower === 'referer' || lower === 'referrer')
    return (headers.referrer as string | undefined) || headers.referer;
  const value = headers[lower];
  return Array.isArray(value) ? value.join(', ') : value;
}

function setHeaders(res: Response, headers: Record<string, string>): void {
  for (const name in headers) res.setHeader(name, headers[name]!);
}

function isChunk(chunk: unknown): chunk is string | Uint8Array {
  return typeof chunk === 'string' || chunk instanceof Uint8Array;
}

function toChunk(chunk: unknown, encoding: unknown): Uint8Array | string {
  if (typeof chunk === 'string')
    return typeof encoding === 'string' ? Buffer.from(chunk, encoding as BufferEncoding) : chunk;
  return chunk as Uint8Array;
}

function send(res: Response, answer: GuardResponse): void {
  res.status(answer.status).set(answer.headers);
  if (!(answer.body instanceof ReadableStream)) return void res.json(answer.body);
  // A streamed answer (a spend-log export): piped as it is read, stopped when the client goes.
  const body = Readable.fromWeb(answer.body as import('node:stream/web').ReadableStream);
  res.on('close', () => body.destroy());
  body.on('error', () => res.destroy());
  body.pipe(res);
}

/**
 * The request body as JSON, whatever its Content-Type (curl's `-d` sends form-encoded). When the
 * app's own parser ran first its result is used; otherwise the stream is read here and marked as
 * parsed so that a body parser mounted later skips it.
 */
function readJsonBody(
  req: BodyRequest,
  guard: SpendGuard,
  parse: boolean,
  limitBytes?: number,
  contentLength: string | undefined = req.get('content-length'),
): JsonBody | Promise<JsonBody> {
  if (req._body || (req.complete && !req.readable)) return { body: req.body, bytes: undefined };
  // A body that has arrived whole is read at once, without a promise.
  const read = guard.bodies.readNow(req, contentLength, limitBytes);
  return read instanceof Promise ? read.then((r) => keepBody(req, parse, r)) : keepBody(req, parse, read);
}

type JsonBody = { body: unknown; bytes: number | undefined };

function keepBody(req: BodyRequest, parse: boolean, read: { text: string; bytes: number }): JsonBody {
  req.body = parse ? parseJsonBody(read.text) : read.text;
  req._body = true;
  return { body: req.body, bytes: read.bytes };
}
