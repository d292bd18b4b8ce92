import { SpendGuardError } from './errors.js';
import type { ResponseTap } from './metering/response-meter.js';
import type { GuardResponse } from './pipeline/call-types.js';

/** What metering a route's `Response` needs of its guarded call (a `GuardedCall`). */
export interface RespondingCall {
  readonly responseHeaders: Record<string, string>;
  readonly tap: ResponseTap;
  costHeaders(): Record<string, string>;
  finish(options?: { aborted?: boolean; urgent?: boolean }): Promise<unknown>;
  beforeLastByte(): Promise<void> | null;
}

// What every adapter shares, in web-standard terms (body streams, Response, Headers), so that no two
// adapters can read a body, answer a refusal or meter a response differently.

/**
 * Reads a request body whole as UTF-8 text, refusing it (413 PAYLOAD_TOO_LARGE) past `limitBytes`.
 * Takes a web `ReadableStream` (`request.body`) or any async iterable of bytes (a Node request, read
 * through its events: cheaper than its async iterator).
 * @example const { text, bytes } = await readBodyText(request.body, 10 * 1024 * 1024)
 */
export function readBodyText(
  source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | null | undefined,
  limitBytes: number,
  /** Told the bytes read so far before each chunk is kept; throwing stops the read with that error. */
  onBytes?: (bytesSoFar: number) => void,
): Promise<{ text: string; bytes: number; raw: Buffer }> {
  if (hasArrived(source)) {
    try {
      return Promise.resolve(readArrivedBody(source, limitBytes, onBytes));
    } catch (error) {
      return Promise.reject(error);
    }
  }
  if (source && isUnreadNodeStream(source)) return readNodeStream(source, limitBytes, onBytes);
  return readChunks(source, limitBytes, onBytes);
}

/**
 * `readBodyText` of a Node stream, through its events: one promise, settled by them, and no async
 * function around it (a Hono app's guard reads every body this way: it runs before the body is parsed).
 */
function readNodeStream(
  source: NodeReadable,
  limitBytes: number,
  onBytes: ((bytesSoFar: number) => void) | undefined,
): Promise<{ text: string; bytes: number; raw: Buffer }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const done = (error?: unknown) => {
      source.off('data', onData).off('end', done).off('error', done);
      if (error) return reject(error);
      try {
        resolve(bodyOf(chunks, bytes));
      } catch (failure) {
        reject(failure); // a body past the longest string: refused, not thrown from the 'end' event
      }
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.byteLength;
      // Stop keeping the body but never destroy the request: it drains, and the 413 reaches the client.
      try {
        if (bytes > limitBytes) throw tooLarge(limitBytes);
        onBytes?.(bytes);
      } catch (error) {
        return done(error);
      }
      chunks.push(chunk);
    };
    source.on('data', onData).on('end', done).on('error', done);
  });
}

/** `readBodyText` of a web `ReadableStream` or an async iterable of bytes. */
async function readChunks(
  source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | null | undefined,
  limitBytes: number,
  onBytes: ((bytesSoFar: number) => void) | undefined,
): Promise<{ text: string; bytes: number; raw: Buffer }> {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  if (source) {
    const reader = 'getReader' in source ? source.getReader() : null;
    const iterator = reader ? null : (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
    try {
      for (;;) {
        const chunk = reader ? await reader.read() : await iterator!.next();
        if (chunk.done) break;
        bytes += chunk.value.byteLength;
        // Stop reading but never destroy the request: the server drains it, and the 413 reaches the client.
        if (bytes > limitBytes) throw tooLarge(limitBytes);
        onBytes?.(bytes);
        chunks.push(chunk.value);
      }
    } finally {
      reader?.releaseLock();
    }
  }
  return bodyOf(chunks, bytes);
}

function bodyOf(chunks: Uint8Array[], bytes: number): { text: string; bytes: number; raw: Buffer } {
  const raw = chunks.length === 1 && Buffer.isBuffer(chunks[0]) ? chunks[0] : Buffer.concat(chunks);
  return { text: raw.toString('utf8'), bytes, raw };
}

function tooLarge(limitBytes: number): SpendGuardError {
  return new SpendGuardError('PAYLOAD_TOO_LARGE', `Request body is larger than ${limitBytes} bytes.`);
}

/**
 * A Node request whose whole body has arrived and waits in the stream's buffer (a small request,
 * read after its headers were handled): `readArrivedBody` takes it at once.
 */
export function hasArrived(
  source: unknown,
): source is NodeReadable & AsyncIterable<Uint8Array> & { read(): Buffer | null } {
  return isUnreadNodeStream(source) && source.complete === true && typeof source.read === 'function';
}

/**
 * `readBodyText` of a body that has arrived whole (`hasArrived`), without flowing mode, listeners or
 * a promise to wait on; past the limit the rest stays unread, and the server drains it.
 */
export function readArrivedBody(
  source: { read(): Buffer | null },
  limitBytes: number,
  onBytes?: (bytesSoFar: number) => void,
): { text: string; bytes: number; raw: Buffer } {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for (let chunk = source.read(); chunk !== null; chunk = source.read()) {
    bytes += chunk.byteLength;
    if (bytes > limitBytes) throw tooLarge(limitBytes);
    onBytes?.(bytes);
    chunks.push(chunk);
  }
  const raw = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  return { text: raw.toString('utf8'), bytes, raw };
}

/** What `readBodyText` uses of a Node stream. */
export interface NodeReadable {
  on(event: string, listener: (...args: never[]) => void): NodeReadable;
  off(event: string, listener: (...args: never[]) => void): NodeReadable;
  readableEncoding: string | null;
  /** An `IncomingMessage` whose body has arrived whole (`complete`) is read from its buffer at once. */
  complete?: boolean;
  read?(): Buffer | null;
}

/** A Node stream (an `IncomingMessage`, say) that nobody has read from, nor set to text. */
export function isUnreadNodeStream(source: unknown): source is NodeReadable & AsyncIterable<Uint8Array> {
  const s = source as
    | (Partial<NodeReadable> & { readableFlowing?: boolean | null; readableDidRead?: boolean })
    | null;
  return (
    typeof s?.on === 'function' &&
    typeof s.off === 'function' &&
    s.readableEncoding === null &&
    s.readableFlowing === null &&
    s.readableDidRead === false
  );
}

/**
 * A guarded call's body as JSON, whatever its Content-Type (curl's `-d` sends form-encoded);
 * `undefined` when empty. Throws INVALID_JSON (400) otherwise.
 */
export function parseJsonBody(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SpendGuardError('INVALID_JSON', `Request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** A response the guard answers itself (a refusal, a management answer) as a web `Response`. */
export function toWebResponse(answer: GuardResponse): Response {
  // A streamed answer (a spend-log export) carries its own content type.
  if (answer.body instanceof ReadableStream) {
    return new Response(answer.body, { status: answer.status, headers: answer.headers });
  }
  const headers = new Headers(answer.headers);
  headers.set('content-type', 'application/json; charset=utf-8');
  return new Response(JSON.stringify(answer.body), { status: answer.status, headers });
}

/**
 * Meters the `Response` a guarded route returned and gives back the one to send, with the call's
 * headers. SSE streams pass through chunk by chunk, never buffered, and the call is settled at their
 * end (before the stream closes where settlements commit first), or as cut when the client cancels. A JSON body is held (up to `maxMeteredBodyBytes`) so that
 * its cost goes into `x-litellm-response-cost`; anything else, or past the cap, streams on.
 * @example return meterResponse(call, await route(request))
 */
export async function meterResponse(
  call: RespondingCall,
  response: Response,
  held?: string | Uint8Array | null,
): Promise<Response> {
  const headers = new Headers(response.headers);
  for (const [name, value] of Object.entries(call.responseHeaders)) {
    if (!headers.has(name)) headers.set(name, value); // the route may set its own
  }
  const init = { status: response.status, statusText: held == null ? response.statusText : '', headers };
  call.tap.begin(response.status, headers.get('content-type'));
  if (held != null && !call.tap.isStream) return meterHeldBody(call, init, held);
  const reader = response.body?.getReader();
  if (reader && call.tap.isStream) return new Response(meteredStream(call, reader), init);
  try {
    for (let chunk = await reader?.read(); chunk && !chunk.done; chunk = await reader!.read()) {
      const pass = call.tap.write(chunk.value);
      if (pass !== null) return new Response(meteredStream(call, reader!, bytesOf(pass)), init);
    }
  } catch (error) {
    settle(call, true); // the route's body failed before it was complete: charge what came
    throw error;
  }
  for (const [name, value] of Object.entries(call.costHeaders())) headers.set(name, value);
  const body = call.tap.drain() as Uint8Array<ArrayBuffer> | null;
  await settleBeforeLastByte(call);
  return new Response(body, init);
}

/**
 * A body the adapter holds whole (`held`: @hono/node-server keeps what `c.body()` / `c.json()` were
 * given, and reading `response.body` would build a native Response and a stream just to read it back):
 * the same metering as a body read chunk by chunk, in one chunk.
 */
async function meterHeldBody(
  call: RespondingCall,
  init: { status: number; statusText: string; headers: Headers },
  held: string | Uint8Array,
): Promise<Response> {
  const pass = call.tap.write(held);
  if (pass === null) {
    for (const [name, value] of Object.entries(call.costHeaders())) init.headers.set(name, value);
  }
  // Past the metering cap the tap gives everything back (`pass`); else the JSON body it held.
  const body = (pass === null ? call.tap.drain() : bytesOf(pass)) as Uint8Array<ArrayBuffer> | null;
  await settleBeforeLastByte(call);
  return new Response(body, init);
}

/**
 * `meterResponse` for a body held whole whose headers are a plain record (what @hono/node-server's
 * lightweight Response keeps for `c.body()` / `c.json()`): the same metering, settlement and headers,
 * as a plain record again, so that no web `Headers` is built to read them nor to write them out.
 * `null` when the content type says the body is a stream (SSE): meter the Response with `meterResponse`.
 */
export function meterHeldResponse(
  call: RespondingCall,
  status: number,
  headers: Readonly<Record<string, string>>,
  held: string | Uint8Array,
): Promise<{ headers: Record<string, string>; body: Uint8Array | null } | null> {
  try {
    return meterHeld(call, status, headers, held);
  } catch (error) {
    return Promise.reject(error);
  }
}

// `meterHeldResponse` without an async function of its own: the settlement's promise is the only
// one waited on (one promise fewer to resolve per call, and one fewer for `settleBeforeLastByte`).
function meterHeld(
  call: RespondingCall,
  status: number,
  headers: Readonly<Record<string, string>>,
  held: string | Uint8Array,
): Promise<{ headers: Record<string, string>; body: Uint8Array | null } | null> {
  const out: Record<string, string> = {};
  // The route's header names lower-cased (they match whatever their case): a few, so an array.
  const names: string[] = [];
  let contentType: string | null = null;
  for (const name in headers) {
    const lower = name.toLowerCase();
    out[name] = headers[name]!;
    names.push(lower);
    if (lower === 'content-type') contentType = headers[name]!;
  }
  call.tap.begin(status, contentType);
  if (call.tap.isStream) return Promise.resolve(null);
  for (const name in call.responseHeaders) {
    if (!names.includes(name)) out[name] = call.responseHeaders[name]!; // the route may set its own
  }
  const pass = call.tap.write(held);
  if (pass === null) {
    const cost = call.costHeaders();
    for (const name in cost) {
      if (names.includes(name)) {
        for (const own in out) if (own.toLowerCase() === name) delete out[own];
      }
      out[name] = cost[name]!;
    }
  }
  // Past the metering cap the tap gives everything back (`pass`); else the JSON body it held.
  const metered = { headers: out, body: pass === null ? call.tap.drain() : bytesOf(pass) };
  const settled = call.beforeLastByte();
  if (settled) return settled.then(() => metered);
  settle(call, false);
  return Promise.resolve(metered);
}

/** The rest of a body, read only as fast as the client takes it, each chunk through the call's tap. */
function meteredStream(
  call: RespondingCall,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  first?: Uint8Array,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(
    {
      start(out) {
        if (first) out.enqueue(first);
      },
      async pull(out) {
        // Loop until there is something to send: the tap may hold a partial SSE event, or hide one.
        for (;;) {
          let chunk: ReadableStreamReadResult<Uint8Array>;
          try {
            chunk = await reader.read();
          } catch (error) {
            settle(call, true); // the route's stream failed midway: charge what passed
            throw error;
          }
          if (chunk.done) {
            const rest = call.tap.drain();
            await settleBeforeLastByte(call);
            if (rest) out.enqueue(rest);
            out.close();
            return;
          }
          const pass = call.tap.write(chunk.value);
          if (pass !== null) return out.enqueue(bytesOf(pass));
        }
      },
      cancel(reason) {
        settle(call, true);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

function bytesOf(chunk: Uint8Array | string): Uint8Array {
  return typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
}

/** Settlement failures are logged and counted by the guard; the response has gone out already. */
function settle(call: RespondingCall, aborted: boolean): void {
  call.finish({ aborted }).catch(() => {});
}

/**
 * A complete body's settlement: written before its last bytes go where settlements commit first
 * (SQLite: a call answered whole survives this process's crash with its real cost), else after.
 */
async function settleBeforeLastByte(call: RespondingCall): Promise<void> {
  const settled = call.beforeLastByte();
  if (settled) await settled;
  else settle(call, false);
}
