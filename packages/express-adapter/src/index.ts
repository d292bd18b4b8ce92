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
    // The guard reads the body only once the key in the headers is known to be good.
    const outcome = await guard.admit({
      method: req.method,
      path: req.path,
      header: (n) => req.get(n),
      readBody: () => readJsonBody(req, guard, true),
    });
    if (!outcome.ok) return send(res, outcome.response);
    const call = outcome.call;
    res.locals.spendguard = call;
    setHeaders(res, call.responseHeaders);

    // No closures or bound functions per call: the response carries its call and the functions it
    // replaced, and shared functions (below) read them from `this`.
    const held = res as GuardedResponse;
    held[GUARDED] = { call, write: res.write as Write, end: res.end as End };
    res.write = guardedWrite as Response['write'];
    res.end = guardedEnd as Response['end'];
    // One listener: a response emits 'close' after 'finish' too (cut short: 'close' alone).
    res.on('close', onClose); // emitted once; `finish` is idempotent anyway
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

const GUARDED = Symbol('spendguard.call');
type Write = (this: Response, chunk: unknown, cb?: unknown) => boolean;
type End = (this: Response, chunk?: unknown, cb?: unknown) => Response;
/** A guarded response: its call, and the `write`/`end` the guard put its own in front of. */
type GuardedResponse = Response & { [GUARDED]: { call: GuardedCall; write: Write; end: End } };

function begin(res: Response, call: GuardedCall): void {
  call.tap.begin(res.statusCode, res.getHeader('content-type') as string | undefined);
}

function guardedWrite(this: GuardedResponse, chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
  const { call, write } = this[GUARDED];
  begin(this, call);
  const out = call.tap.write(toChunk(chunk, encoding));
  const callback = typeof encoding === 'function' ? encoding : cb;
  if (out !== null) return write.call(this, out, callback);
  if (typeof callback === 'function') process.nextTick(callback as () => void); // held, as good as written
  return true;
}

function guardedEnd(this: GuardedResponse, chunk?: unknown, encoding?: unknown, cb?: unknown): Response {
  const { call, write, end } = this[GUARDED];
  begin(this, call);
  const callback = typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb;
  const out = isChunk(chunk) ? call.tap.write(toChunk(chunk, encoding)) : null;
  if (!this.headersSent && !call.tap.isStream) setHeaders(this, call.costHeaders());
  const held = call.tap.drain(); // a held JSON body, or a stream's last event: sent last
  if (held && out) write.call(this, out);
  const last = (held && out ? held : (out ?? held)) ?? undefined;
  // Where settlements commit first (SQLite), the last bytes wait for the call's.
  const settled = call.beforeLastByte();
  if (!settled) return end.call(this, last, callback);
  void settled.then(() => end.call(this, last, callback));
  return this;
}

function onClose(this: GuardedResponse): void {
  void this[GUARDED].call.finish(this.writableFinished ? undefined : ABORTED).catch(() => {});
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
): JsonBody | Promise<JsonBody> {
  if (req._body || (req.complete && !req.readable)) return { body: req.body, bytes: undefined };
  // A body that has arrived whole is read at once, without a promise.
  const read = guard.bodies.readNow(req, req.get('content-length'), limitBytes);
  return read instanceof Promise ? read.then((r) => keepBody(req, parse, r)) : keepBody(req, parse, read);
}

type JsonBody = { body: unknown; bytes: number | undefined };

function keepBody(req: BodyRequest, parse: boolean, read: { text: string; bytes: number }): JsonBody {
  req.body = parse ? parseJsonBody(read.text) : read.text;
  req._body = true;
  return { body: req.body, bytes: read.bytes };
}
